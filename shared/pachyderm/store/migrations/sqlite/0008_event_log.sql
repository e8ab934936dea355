-- The event log: every committed event at a gap-free position within its
-- partition, in commit order (commits hold SQLite's write lock from their
-- start, so positions are given out in commit order). See the PostgreSQL
-- migration of the same number. Events committed before it are not in the log.

CREATE TABLE log_heads (
    partition INTEGER PRIMARY KEY,
    position  INTEGER NOT NULL CHECK (position >= 0)
);

CREATE TABLE event_log (
    partition INTEGER NOT NULL,
    position  INTEGER NOT NULL CHECK (position >= 1),
    entity_id BLOB    NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (partition, position)
) WITHOUT ROWID;
