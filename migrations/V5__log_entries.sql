-- Every accepted event with its verdict. Partitioned by day on received_at so
-- retention drops whole partitions instead of deleting rows. The worker
-- creates partitions ahead of time (lvd_ensure_log_partitions); the default
-- partition only catches rows no daily partition covers, so an insert never
-- fails for want of one.
CREATE TABLE log_entries (
    id           uuid        NOT NULL,
    app_id       uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event        text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('valid', 'invalid', 'unplanned')),
    errors       jsonb       NOT NULL DEFAULT '[]',
    properties   jsonb       NOT NULL,
    context      jsonb,
    "timestamp"  timestamptz,
    received_at  timestamptz NOT NULL,
    rule_version integer,
    message_id   text,
    -- The id makes redelivered rows idempotent (ON CONFLICT DO NOTHING);
    -- a partitioned table's keys must include the partition column.
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);

-- Listing an app's events newest first (the keyset), by event, and the
-- invalid ones (the dashboard's tail).
CREATE INDEX idx_log_entries_app_time ON log_entries (app_id, received_at DESC, id DESC);
CREATE INDEX idx_log_entries_app_event ON log_entries (app_id, event, received_at DESC);
CREATE INDEX idx_log_entries_invalid ON log_entries (app_id, received_at DESC, id DESC) WHERE status = 'invalid';

CREATE TABLE log_entries_default PARTITION OF log_entries DEFAULT;

-- Creates the daily partitions from yesterday to `days_ahead` days from now.
-- Returns how many it created. A day whose rows already sit in the default
-- partition is skipped with a notice rather than failing the rest.
CREATE FUNCTION lvd_ensure_log_partitions(days_ahead integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date;
    name text;
    created integer := 0;
BEGIN
    FOR i IN -1 .. days_ahead LOOP
        day := (now() AT TIME ZONE 'UTC')::date + i;
        name := format('log_entries_p%s', to_char(day, 'YYYYMMDD'));
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF log_entries FOR VALUES FROM (%L) TO (%L)',
                    name, day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            EXCEPTION WHEN check_violation OR duplicate_table THEN
                RAISE NOTICE 'partition % not created: %', name, SQLERRM;
            END;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Drops the daily partitions that end more than `keep_days` days ago.
CREATE FUNCTION lvd_drop_log_partitions(keep_days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'log_entries'::regclass
          AND c.relname ~ '^log_entries_p[0-9]{8}$'
          AND to_date(substr(c.relname, 14), 'YYYYMMDD') + 1
              < (now() AT TIME ZONE 'UTC')::date - keep_days
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

SELECT lvd_ensure_log_partitions(7);
