-- Retention: see the PostgreSQL migration of the same number. Command ids and
-- published outbox rows are pruned oldest first in small batches through these
-- indexes; SQLite reuses the freed pages itself (no vacuum needed for that).
CREATE INDEX IF NOT EXISTS commands_recorded ON commands (recorded_at);

CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at)
    WHERE published_at IS NOT NULL;
