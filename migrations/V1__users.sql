-- Accounts. Emails are stored normalised (trimmed, lower-cased) by the app,
-- so a plain unique index is the case-insensitive uniqueness the contract asks for.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX idx_user_email ON users (email);
CREATE INDEX idx_user_active ON users (is_active);
