-- Tracking-plan rules: one JSON Schema per app and event, versioned. Every PUT
-- adds a version; events record the version they were checked against, so
-- versions are never reused, not even after the rule is deleted and created
-- again (a delete marks every version of the event).
CREATE TABLE validation_rules (
    app_id      uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event       text        NOT NULL,
    version     integer     NOT NULL CHECK (version > 0),
    schema      jsonb       NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    PRIMARY KEY (app_id, event, version)
);
CREATE INDEX idx_validation_rules_app ON validation_rules (app_id);
