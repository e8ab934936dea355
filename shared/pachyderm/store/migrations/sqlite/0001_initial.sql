-- Entities, their histories, snapshots, command ids and the effect outbox.
-- UUIDs are stored as 16-byte blobs; times as ISO 8601 text in UTC.

CREATE TABLE entities (
    entity_id   BLOB    PRIMARY KEY,
    entity_type TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 0),
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    entity_id   BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    name        TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    command_id  TEXT,
    recorded_at TEXT    NOT NULL,
    PRIMARY KEY (entity_id, version)
) WITHOUT ROWID;

CREATE TABLE snapshots (
    entity_id   BLOB    PRIMARY KEY,
    version     INTEGER NOT NULL CHECK (version >= 1),
    state       BLOB    NOT NULL,
    taken_at    TEXT    NOT NULL
) WITHOUT ROWID;

-- A command id is scoped to its entity: a publisher reusing another entity's
-- command id must never be handed that entity's reply.
CREATE TABLE commands (
    entity_id   BLOB    NOT NULL,
    command_id  TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    reply       BLOB    NOT NULL,
    recorded_at TEXT    NOT NULL,
    PRIMARY KEY (entity_id, command_id)
) WITHOUT ROWID;

CREATE TABLE outbox (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    effect_id    BLOB    NOT NULL UNIQUE,
    entity_id    BLOB    NOT NULL,
    command_id   TEXT    NOT NULL,
    destination  TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    created_at   TEXT    NOT NULL,
    published_at TEXT
);

CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;
