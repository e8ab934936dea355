-- Per-effect retry in the outbox: an effect whose publish failed is tried again
-- after a back-off of its own, and the sweep moves on past it meanwhile, so one
-- effect that keeps failing never holds up the effects behind it.
-- attempts: failed publishes so far; retry_at: not before (NULL: at once), ISO 8601 UTC.

ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN retry_at TEXT;
