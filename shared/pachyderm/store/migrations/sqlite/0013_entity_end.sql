-- Entity end of life, as PostgreSQL's 0013: ended is NULL while the entity
-- lives, 'ended' once its handler ended it, 'erased' once an operator erased it
-- (a tombstone keeping the id and type); ended_at: when; ended_version: the
-- version it had then. Unlike PostgreSQL's, an erased entity keeps its version
-- (SQLite cannot change the CHECK on it): readers see -1 all the same, and
-- commits, which hold the write lock, read ended before anything else. The
-- commit rules are in store/_sqlite.py's _commit and store/_sqlite_erasure.py.
ALTER TABLE entities ADD COLUMN ended TEXT CHECK (ended IN ('ended', 'erased'));
ALTER TABLE entities ADD COLUMN ended_at TEXT;
ALTER TABLE entities ADD COLUMN ended_version INTEGER;
