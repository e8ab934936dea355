-- Per-effect retry in the outbox: an effect whose publish failed is tried again
-- after a back-off of its own, and the sweep moves on past it meanwhile, so one
-- effect that keeps failing never holds up the effects behind it.
-- attempts: failed publishes so far; retry_at: not before (NULL: at once).

ALTER TABLE outbox
    ADD COLUMN attempts integer     NOT NULL DEFAULT 0,
    ADD COLUMN retry_at timestamptz;
