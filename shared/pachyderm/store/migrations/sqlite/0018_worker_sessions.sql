-- PostgreSQL's 0018 records each worker's backend process id, so that a worker
-- whose process died is seen dead before its lease lapses. Embedded mode does
-- not use the workers table; the twin keeps both backends at the same schema
-- version.

ALTER TABLE workers ADD COLUMN session_pid INTEGER;
