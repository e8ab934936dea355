-- Projections: one cursor per (projection, partition). See the PostgreSQL
-- migration of the same number; SQLite runs at-least-once projections only.
-- Times are ISO 8601 text in UTC.
CREATE TABLE projection_cursors (
    projection TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    position   INTEGER NOT NULL DEFAULT 0 CHECK (position >= 0),
    paused     INTEGER NOT NULL DEFAULT 0,
    rebuilding INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (projection, partition)
) WITHOUT ROWID;

ALTER TABLE workers ADD COLUMN fleet TEXT NOT NULL DEFAULT 'worker';
