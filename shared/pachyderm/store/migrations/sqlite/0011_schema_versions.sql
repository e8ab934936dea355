-- Schema evolution: each event keeps the version of its type it was written
-- with (events written before are at 1), each snapshot the fingerprint of the
-- code that wrote it (NULL before: read as version 1 of the state and fold).
-- See the PostgreSQL migration of the same number.
ALTER TABLE events ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 1
    CHECK (schema_version >= 1);
ALTER TABLE snapshots ADD COLUMN fingerprint TEXT;
