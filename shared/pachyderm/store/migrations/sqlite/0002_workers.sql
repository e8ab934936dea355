-- Fleet membership: one row per worker, its heartbeat renewed as a lease.
-- Embedded mode runs a single worker and does not use it yet; the twin keeps
-- both backends at the same schema version. Times are ISO 8601 text in UTC.

CREATE TABLE workers (
    worker_id    TEXT PRIMARY KEY,
    info         TEXT NOT NULL DEFAULT '',  -- host, pid...: for operators
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
) WITHOUT ROWID;
