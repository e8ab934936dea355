-- Durable timers: one row per pending timer, keyed by its entity and key, found
-- by the owner of its partition through (partition, fire_at). Times are
-- fixed-width ISO 8601 text in UTC, so the text sorts like the time it shows.
-- (See the PostgreSQL migration of the same number for what each column means.)

CREATE TABLE timers (
    entity_id    BLOB    NOT NULL,
    timer_key    TEXT    NOT NULL,
    entity_type  TEXT    NOT NULL,
    partition    INTEGER NOT NULL,
    due_at       TEXT    NOT NULL,
    fire_at      TEXT    NOT NULL,
    schedule_id  TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    scheduled_at TEXT    NOT NULL,
    PRIMARY KEY (entity_id, timer_key)
) WITHOUT ROWID;

CREATE INDEX timers_due ON timers (partition, fire_at);
