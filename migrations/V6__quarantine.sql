-- Rows of accepted events that PostgreSQL refused even alone. The edge checks
-- every value it accepts against what PostgreSQL stores, so this should stay
-- empty; if it does not, nothing that got a 202 disappears silently: the row
-- is kept here, as the COPY text line it was, with PostgreSQL's reason, and
-- its neighbours in the same request are stored as usual. The owner sees
-- them at GET /api/apps/{app}/quarantine; /health/ready counts them.
CREATE TABLE quarantined_rows (
    -- The ingest stream entry (one request) and the row's place in it: a
    -- reclaimed entry settled again quarantines nothing twice.
    entry_id       text        NOT NULL,
    line           integer     NOT NULL,
    -- NULL when the row is too damaged to name its app.
    app_id         uuid        REFERENCES apps (id) ON DELETE CASCADE,
    row_text       bytea       NOT NULL,
    reason         text        NOT NULL,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, line)
);
CREATE INDEX idx_quarantined_rows_app ON quarantined_rows (app_id, quarantined_at DESC, entry_id, line);
