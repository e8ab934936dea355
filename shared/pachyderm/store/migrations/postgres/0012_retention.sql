-- Retention: command ids are kept for a window (PACHYDERM_COMMAND_RETENTION,
-- default 7 days) and published outbox rows for another
-- (PACHYDERM_OUTBOX_RETENTION, default 1 day); a pruner deletes what is older,
-- oldest first, in small batches (see pachyderm.worker's pruning and
-- store/_postgres_retention.py).
--
-- Why batched deletes by an index on the time, not a table partitioned by time
-- whose old partitions are dropped whole:
--
-- * A partitioned table's primary key must include the partition key. The
--   commands key would become (entity_id, command_id, recorded_at): unique per
--   partition only, so the database would no longer refuse a second row for
--   one command id. Every commit function (0003, 0008, 0011) looks a command
--   id up by (entity_id, command_id) alone: without recorded_at no partition
--   is pruned from that lookup, and every command of every batch would probe
--   one index per partition (8 or more for a week of daily ones) on the hot
--   path. The commit SQL would have to change to avoid it.
-- * Partitioning an existing table means copying it into a new one under an
--   exclusive lock, and creating each future partition ahead of time: a
--   maintenance job that, once missed, fails every commit (or fills a default
--   partition that then blocks creating the missed one).
--
-- Batched deletes keep the commit SQL and its key as they are. Each batch takes
-- a bounded number of the oldest rows (ORDER BY the time LIMIT n, through the
-- indexes below), locks them with SKIP LOCKED (it never waits for a commit, and
-- two pruners never delete the same rows) and commits at once: row locks on at
-- most n rows, held for milliseconds, and nothing a commit waits for (a commit
-- inserts new command ids and never touches old ones). The space of deleted
-- rows is reused by new ones once vacuumed, so the table stays at about a
-- window's worth of rows: autovacuum is told to come every 2% of the table in
-- dead rows (default 20%), enough to keep bloat small without vacuuming the
-- whole index for every few thousand rows.
--
-- The index costs one more B-tree insert per command, at its right edge (the
-- time only grows). On a large existing table, build it CONCURRENTLY by hand
-- before upgrading (the same statements with CONCURRENTLY, outside a
-- transaction): this migration, which runs in one, then finds it and skips the
-- build, which would otherwise hold off commits while it runs.
CREATE INDEX IF NOT EXISTS commands_recorded ON commands (recorded_at);

-- Only published rows are ever pruned: the sweep's own index (outbox_unpublished)
-- stays as it is. Setting published_at already makes that update non-HOT (it
-- is in outbox_unpublished's predicate), so this index adds one insert to it.
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at)
    WHERE published_at IS NOT NULL;

ALTER TABLE commands SET (autovacuum_vacuum_scale_factor = 0.02,
                          autovacuum_vacuum_threshold = 10000);
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.02,
                        autovacuum_vacuum_threshold = 10000);
