-- What `lvd-worker import-sqlite` brought from the old Flask application's
-- SQLite database: which of our rows each legacy user, app and rule became,
-- and per legacy app the last legacy event stored. Each is written in the
-- transaction that writes the rows it names, so a second run, or a run after
-- a crash, skips exactly what is already here.
CREATE TABLE legacy_ids (
    kind      text    NOT NULL CHECK (kind IN ('user', 'app', 'rule')),
    legacy_id bigint  NOT NULL,
    -- The user or app; for a rule, its app (with `version`).
    id        uuid    NOT NULL,
    version   integer,
    PRIMARY KEY (kind, legacy_id)
);

CREATE TABLE legacy_event_marks (
    legacy_app_id bigint      PRIMARY KEY,
    last_id       bigint      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Creates the daily partitions of log_entries from `first_day` to `last_day`
-- (UTC days). Returns how many it created. A day whose rows already sit in
-- the default partition is skipped with a notice rather than failing the
-- rest. The import creates the past days it needs with it; the days ahead
-- go through it too.
CREATE FUNCTION lvd_ensure_log_partitions_between(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    name text;
    created integer := 0;
BEGIN
    WHILE day <= last_day LOOP
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
        day := day + 1;
    END LOOP;
    RETURN created;
END $$;

CREATE OR REPLACE FUNCTION lvd_ensure_log_partitions(days_ahead integer) RETURNS integer
LANGUAGE sql AS $$
    SELECT lvd_ensure_log_partitions_between((now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + days_ahead)
$$;
