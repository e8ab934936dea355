-- Durable timers: one row per pending timer, keyed by its entity and key, found
-- by the owner of its partition through (partition, fire_at). Never one record
-- per entity type: a million timers are a million small rows, each written in
-- the transaction of the command that scheduled it.
--
-- due_at: when it falls due (a fire never commits before it, by this server's
-- clock). fire_at: when the next try is; later than due_at only after failed
-- tries (attempts). schedule_id: which scheduling of the key this is, so that
-- the fire of a replaced timer is told apart from its replacement. payload: the
-- timer as the runtime encoded it; the store never reads it.
CREATE TABLE timers (
    entity_id    uuid        NOT NULL,
    timer_key    text        NOT NULL,
    entity_type  text        NOT NULL,
    partition    int         NOT NULL,
    due_at       timestamptz NOT NULL,
    fire_at      timestamptz NOT NULL,
    schedule_id  text        NOT NULL,
    payload      bytea       NOT NULL,
    attempts     int         NOT NULL DEFAULT 0,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, timer_key)
);

CREATE INDEX timers_due ON timers (partition, fire_at);

-- A queue: rows come and go. Vacuum it by the count of dead rows, not by a
-- share of the table (the default, 20%), or a million timers pending far ahead
-- would let the dead rows of fired ones pile up at the front of the index
-- that every read of the firing loop walks.
ALTER TABLE timers SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000);

-- pachyderm_commit for a batch that writes or fires timers (any other batch
-- calls pachyderm_commit or pachyderm_commit_traced and pays nothing for them).
--
-- r_*: the timers the batch fires, one per firing change (r_changes: the
-- change's position in the batch, from 1). w_*: the timer writes, in order
-- (w_changes likewise; w_payloads NULL: delete the key). w_partitions: where
-- each put is fired from. f_traces: as pachyderm_commit_traced (may be NULL).
--
-- A firing change commits only if its timer is still pending as it was fired
-- (same schedule and due time) and due by now(); else it is refused before
-- anything is decided (as a conflict to pachyderm_commit, so that the entity's
-- later changes in the batch are refused too), and its outcome is 'g'. The
-- entity rows are locked first, in entity id order as every batch locks them:
-- every writer of an entity's timers holds its entity's lock, so the check
-- cannot race a cancel or a replacement. The timer writes of the committed
-- changes then apply as one upsert and one delete: per key, the last write of
-- the batch is what stands.
CREATE FUNCTION pachyderm_commit_timed(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    expected bigint[] := c_expected;
    gone int[];
    outcomes text[];
    versions bigint[];
    replies bytea[];
BEGIN
    IF coalesce(cardinality(r_changes), 0) > 0 THEN
        PERFORM 1 FROM entities l WHERE l.entity_id = ANY (c_entity_ids)
          ORDER BY l.entity_id FOR UPDATE;
        SELECT array_agg(r.c) INTO gone
          FROM unnest(r_changes, r_keys, r_schedule_ids, r_due) AS r(c, k, s, d)
         WHERE NOT EXISTS (
               SELECT 1 FROM timers t
                WHERE t.entity_id = c_entity_ids[r.c] AND t.timer_key = r.k
                  AND t.schedule_id = r.s AND t.due_at = r.d AND t.due_at <= now());
        FOR i IN 1 .. coalesce(cardinality(gone), 0) LOOP
            expected[gone[i]] := -1;  -- no entity is at version -1: refused
        END LOOP;
    END IF;

    SELECT array_agg(p.outcome ORDER BY p.n), array_agg(p.version ORDER BY p.n),
           array_agg(p.reply ORDER BY p.n)
      INTO outcomes, versions, replies
      FROM pachyderm_commit(
               c_entity_ids, c_types, expected, c_command_ids, c_replies, c_event_counts,
               c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads)
           WITH ORDINALITY AS p(outcome, version, reply, n);

    IF f_traces IS NOT NULL THEN
        UPDATE outbox o SET trace_context = t.trace
          FROM unnest(f_ids, f_traces) AS t(effect_id, trace)
         WHERE o.effect_id = t.effect_id AND t.trace IS NOT NULL
           AND o.trace_context IS NULL AND o.published_at IS NULL;
    END IF;

    FOR i IN 1 .. coalesce(cardinality(gone), 0) LOOP
        IF outcomes[gone[i]] = 'x' THEN
            outcomes[gone[i]] := 'g';
        END IF;
    END LOOP;

    IF coalesce(cardinality(w_changes), 0) > 0 THEN
        WITH last AS (
            SELECT DISTINCT ON (c_entity_ids[w.c], w.k)
                   c_entity_ids[w.c] AS entity_id, c_types[w.c] AS entity_type,
                   w.k, w.p, w.d, w.s, w.payload
              FROM unnest(w_changes, w_keys, w_partitions, w_due, w_schedule_ids, w_payloads)
                   WITH ORDINALITY AS w(c, k, p, d, s, payload, n)
             WHERE outcomes[w.c] = 'c'
             ORDER BY c_entity_ids[w.c], w.k, w.n DESC
        ), removed AS (
            DELETE FROM timers t USING last
             WHERE last.payload IS NULL
               AND t.entity_id = last.entity_id AND t.timer_key = last.k
        )
        INSERT INTO timers AS t (entity_id, timer_key, entity_type, partition, due_at, fire_at,
                                 schedule_id, payload)
        SELECT last.entity_id, last.k, last.entity_type, last.p, last.d, last.d, last.s,
               last.payload
          FROM last WHERE last.payload IS NOT NULL
            ON CONFLICT (entity_id, timer_key) DO UPDATE
               SET entity_type = excluded.entity_type, partition = excluded.partition,
                   due_at = excluded.due_at, fire_at = excluded.fire_at,
                   schedule_id = excluded.schedule_id, payload = excluded.payload,
                   attempts = 0, scheduled_at = now();
    END IF;

    RETURN QUERY SELECT outcomes[c], versions[c], replies[c]
                   FROM generate_series(1, coalesce(cardinality(c_entity_ids), 0)) AS c;
END;
$$;
