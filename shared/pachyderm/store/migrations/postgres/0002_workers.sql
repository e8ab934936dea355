-- Fleet membership: one row per worker, its heartbeat renewed as a lease.
-- A worker is live while heartbeat_at is recent by the database's clock, so the
-- workers' own clocks never need to agree.

CREATE TABLE workers (
    worker_id    text        PRIMARY KEY,
    info         text        NOT NULL DEFAULT '',  -- host, pid...: for operators
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
