-- Alerts: conditions on an app's live figures, evaluated by the worker, and
-- the notifications each change of state owes.
--
-- Exactly once, across any number of workers: a worker evaluates an alert
-- while holding its row lock (FOR UPDATE SKIP LOCKED), and records a change
-- of state, the new state on the alert and the notifications the change
-- owes (the outbox) in that one transaction. Notifications are then sent
-- from the outbox, each under its own row lock, and marked sent: a worker
-- that dies after deciding leaves them pending for another to send.
CREATE TABLE alerts (
    id             uuid             PRIMARY KEY,
    user_id        uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    app_id         uuid             NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    kind           text             NOT NULL CHECK (kind IN ('violation_rate', 'volume_drop', 'event_missing', 'new_unplanned')),
    event          text,
    threshold      double precision NOT NULL,
    window_secs    integer          NOT NULL CHECK (window_secs IN (300, 900, 3600)),
    min_events     bigint           NOT NULL CHECK (min_events >= 0),
    email          boolean          NOT NULL,
    webhook_url    text,
    -- The key webhooks are signed with: the worker must be able to use it,
    -- so it cannot be hashed; it is shown once and never read back by the API.
    webhook_secret text,
    enabled        boolean          NOT NULL DEFAULT true,
    state          text             NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'firing')),
    -- The figure of the last evaluation, and when it was taken.
    value          double precision,
    evaluated_at   timestamptz,
    -- When a worker should next evaluate it.
    due_at         timestamptz      NOT NULL DEFAULT now(),
    created_at     timestamptz      NOT NULL DEFAULT now(),
    updated_at     timestamptz      NOT NULL DEFAULT now(),
    CHECK ((webhook_url IS NULL) = (webhook_secret IS NULL)),
    CHECK (kind <> 'event_missing' OR event IS NOT NULL)
);
CREATE INDEX idx_alerts_app ON alerts (app_id, id);
CREATE INDEX idx_alerts_due ON alerts (due_at) WHERE enabled;

-- Each change of an alert's state: its history, newest first by id (UUIDv7).
CREATE TABLE alert_changes (
    id        uuid             PRIMARY KEY,
    alert_id  uuid             NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    state     text             NOT NULL CHECK (state IN ('firing', 'resolved')),
    at        timestamptz      NOT NULL DEFAULT now(),
    value     double precision NOT NULL,
    threshold double precision NOT NULL,
    -- new_unplanned: the names that arrived.
    events    jsonb
);
CREATE INDEX idx_alert_changes_alert ON alert_changes (alert_id, id DESC);

-- The outbox: one row per notification a change owes, sent by a worker.
CREATE TABLE alert_notifications (
    id          uuid        PRIMARY KEY,
    change_id   uuid        NOT NULL REFERENCES alert_changes (id) ON DELETE CASCADE,
    channel     text        NOT NULL CHECK (channel IN ('email', 'webhook')),
    status      text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts    integer     NOT NULL DEFAULT 0,
    due_at      timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    last_status integer,
    last_error  text
);
CREATE INDEX idx_alert_notifications_due ON alert_notifications (due_at) WHERE status = 'pending';
CREATE INDEX idx_alert_notifications_change ON alert_notifications (change_id);

-- Every webhook delivery attempt, with what came back.
CREATE TABLE alert_deliveries (
    notification_id uuid        NOT NULL REFERENCES alert_notifications (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    http_status     integer,
    error           text,
    PRIMARY KEY (notification_id, attempt)
);

-- The event names an app has sent, for new_unplanned: kept only for apps
-- with such an alert, at most a bounded number per app (lvd::alerts).
CREATE TABLE app_event_names (
    app_id     uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name       text        NOT NULL,
    -- Whether it was unplanned when first seen.
    unplanned  boolean     NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, name)
);
