-- Apps of a user. The ingest key is shown once and stored only as a SHA-256
-- hash (256 random bits: a keyed hash would add nothing).
CREATE TABLE apps (
    id              uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    retention_days  integer     NOT NULL CHECK (retention_days BETWEEN 1 AND 365),
    ingest_key_hash bytea       NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_apps_user ON apps (user_id, created_at);
