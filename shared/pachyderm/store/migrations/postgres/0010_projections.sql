-- Projections: one cursor per (projection, partition), the last log position
-- the projection applied. An exactly-once projection advances its cursor in the
-- transaction that writes its read model, only from the position it read
-- (locked FOR UPDATE first): two runners of one cursor never both advance it.
-- paused: the runners leave it be; rebuilding: the next runner of the
-- projection clears the read model and resets all its cursors to 0, in one
-- transaction, then clears the flag.
CREATE TABLE projection_cursors (
    projection text        NOT NULL,
    partition  int         NOT NULL,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    paused     boolean     NOT NULL DEFAULT false,
    rebuilding boolean     NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, partition)
);

-- Membership groups: projection processes spread partitions among themselves,
-- apart from the workers (a row written before this migration is a worker's).
ALTER TABLE workers ADD COLUMN fleet text NOT NULL DEFAULT 'worker';
