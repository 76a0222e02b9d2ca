-- Background jobs (reports and exports) and the files they produce.
--
-- The row is the truth about a job; the Redis queue only carries its id to a
-- worker. A worker produces the file inside one transaction that also marks
-- the job done, holding the row's lock throughout: a worker that dies rolls
-- back (no partial file, the job is produced again by whoever reclaims it),
-- and two workers can never both produce it.
CREATE TABLE jobs (
    id          uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    app_id      uuid        NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    kind        text        NOT NULL CHECK (kind IN ('report', 'export')),
    format      text        NOT NULL CHECK (format IN ('json', 'csv', 'html', 'ndjson')),
    -- What was asked: from, to, status, event, notify.
    params      jsonb       NOT NULL,
    status      text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    -- The user's place among their unfinished jobs (0 .. cap-1); the partial
    -- unique index below makes the per-user cap hold under any concurrency.
    slot        integer,
    -- Starts so far (a worker that dies mid-job counts one).
    attempts    integer     NOT NULL DEFAULT 0,
    error       text,
    -- How long the file is kept once done (the job_file_days variable when
    -- the job was created).
    keep_days   integer     NOT NULL CHECK (keep_days BETWEEN 1 AND 365),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- When the job last went onto the queue; a job queued for long without
    -- being taken is queued again (a crash between insert and enqueue).
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    file_bytes  bigint,
    file_parts  integer,
    expires_at  timestamptz,
    notified_at timestamptz,
    CHECK ((status IN ('queued', 'running')) = (slot IS NOT NULL))
);
CREATE UNIQUE INDEX idx_jobs_active_slot ON jobs (user_id, slot) WHERE status IN ('queued', 'running');
CREATE INDEX idx_jobs_unfinished ON jobs (enqueued_at) WHERE status IN ('queued', 'running');
CREATE INDEX idx_jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX idx_jobs_app ON jobs (app_id);

-- A finished job's file, in parts of at most 1 MiB, served by any runtime
-- instance (components cannot see a worker's disk). Parts are compressed by
-- PostgreSQL with lz4 as they are stored.
CREATE TABLE job_files (
    job_id uuid    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    part   integer NOT NULL CHECK (part >= 0),
    data   bytea   NOT NULL,
    PRIMARY KEY (job_id, part)
);
ALTER TABLE job_files ALTER COLUMN data SET COMPRESSION lz4;
