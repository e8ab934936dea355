-- One process per worker id: each run of a worker holds its id's row with a
-- random instance token (a UUID as text). Embedded mode does not use the table
-- yet; the twin keeps both backends at the same schema version.

ALTER TABLE workers ADD COLUMN instance TEXT;
