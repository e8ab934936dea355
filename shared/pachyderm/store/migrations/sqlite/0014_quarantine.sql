-- Poison commands: see the PostgreSQL migration of the same number. Ids are
-- 16-byte blobs and times sortable UTC text, as everywhere in this schema.
CREATE TABLE IF NOT EXISTS command_attempts (
    entity_id   BLOB    NOT NULL,
    command_id  TEXT    NOT NULL,
    attempts    INTEGER NOT NULL,
    last_at     TEXT    NOT NULL,
    PRIMARY KEY (entity_id, command_id)
);

CREATE TABLE IF NOT EXISTS quarantine (
    entity_id       BLOB    NOT NULL,
    command_id      TEXT    NOT NULL,
    entity_type     TEXT    NOT NULL,
    partition       INTEGER NOT NULL,
    policy          TEXT    NOT NULL CHECK (policy IN ('park', 'skip')),
    status          TEXT    NOT NULL
                    CHECK (status IN ('quarantined', 'resuming', 'skipping', 'skipped')),
    attempts        INTEGER NOT NULL,
    reason          TEXT    NOT NULL,
    message         BLOB    NOT NULL,
    quarantined_at  TEXT    NOT NULL,
    decided_at      TEXT,
    PRIMARY KEY (entity_id, command_id)
);
CREATE INDEX IF NOT EXISTS quarantine_partition ON quarantine (partition);

CREATE TABLE IF NOT EXISTS parked_commands (
    position    INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id   BLOB    NOT NULL,
    command_id  TEXT    NOT NULL,
    message     BLOB    NOT NULL,
    parked_at   TEXT    NOT NULL,
    UNIQUE (entity_id, command_id)
);
CREATE INDEX IF NOT EXISTS parked_commands_entity ON parked_commands (entity_id, position);
