-- One process per worker id. Each run of a worker draws a random instance token
-- and holds its id's row with it: it joins only if the row is free, its own, or
-- its lease has lapsed (heartbeat older than dead_after), renews only its own,
-- and deletes only its own when it leaves. A second live process under the same
-- id is refused instead of sharing, and then deleting, the first one's row.
-- NULL: a row written before this migration, held until its lease lapses.

ALTER TABLE workers ADD COLUMN instance uuid;
