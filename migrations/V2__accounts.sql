-- One-time codes, bound to a purpose. Only a keyed hash of each code is kept.
CREATE TABLE one_time_codes (
    id          uuid        PRIMARY KEY,
    email       text        NOT NULL,
    purpose     text        NOT NULL CHECK (purpose IN ('verify', 'reset')),
    code_hash   bytea       NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_otp_email ON one_time_codes (email);
CREATE INDEX idx_otp_created ON one_time_codes (created_at);

-- Refresh tokens, stored as SHA-256 hashes, grouped in families: every
-- rotation adds a token to its family; presenting a rotated one revokes it all.
CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid        NOT NULL,
    token_hash  bytea       NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_refresh_family ON refresh_tokens (family_id);
CREATE INDEX idx_refresh_user ON refresh_tokens (user_id);
