-- One commit function for every batch: pachyderm_commit_batch, the work of
-- pachyderm_commit_ending (0013/0015) and the three functions it calls through
-- (pachyderm_commit_versioned, _versioned_timed and _versioned_core of 0011) in
-- one PL/pgSQL body, with the same arguments, outcomes and writes.
--
-- Why: each layer was a call of its own with its own plan_cache_mode setting,
-- and each read the batch's entity rows again (0013 without a lock, 0011's timed
-- layer and its core each with one). A one-change commit spent about half its
-- time in the layers rather than the writes (issue 18's profile). Here the rows
-- are read and locked once, in the one global order (entity id), with their end
-- of life; everything else is decided on that read.
--
-- Differences that are not behaviour: an effect's trace context is written by
-- the outbox INSERT instead of an UPDATE after it; an entity ended or erased is
-- seen under the lock, so 0013's "erased between the read and the lock" case
-- cannot arise (a row at version -2 is answered 'e' all the same).
--
-- The old functions stay: a worker of the previous release, during its rolling
-- upgrade, still calls pachyderm_commit_ending.
--
-- Outcomes, per change, in the order given (changes sorted by entity id):
--   'c' committed; 'd' a duplicate (its command id is recorded: the recorded
--   version and reply); 'x' refused by the version check (the stored version);
--   'g' a timer fire whose timer is gone (cancelled, replaced, or fired);
--   'n' the entity has ended; 'e' the entity was erased.
CREATE FUNCTION pachyderm_commit_batch(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[],
    c_partitions int[],
    e_versions int[], c_fingerprints text[],
    c_ends boolean[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE plpgsql
-- Plan each statement once per session: for small batches a custom plan always
-- looks cheaper, and planning would cost more than all the rest.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    changes int := coalesce(cardinality(c_entity_ids), 0);
    -- The existing rows of the batch's entities, locked, sorted by entity id.
    locked_ids uuid[];
    locked_types text[];
    locked_versions bigint[];
    locked_ends text[];
    locked_count int;
    next_locked int := 1;
    -- Per change: the version and reply recorded for its command id, if any.
    recorded_versions bigint[];
    recorded_replies bytea[];
    -- Per change: whether it writes or fires a timer; whether the timer it
    -- fires is gone; 'n'/'e' when its entity is ended or erased, 'r' when the
    -- entity has no row and no change of the batch to it writes more than a reply.
    timed boolean[] := array_fill(false, ARRAY[changes]);
    gone boolean[] := array_fill(false, ARRAY[changes]);
    marks text[] := array_fill(NULL::text, ARRAY[changes]);
    -- Per change: the result, and how many events and effects come before its own.
    outcomes text[] := array_fill(NULL::text, ARRAY[changes]);
    versions bigint[] := array_fill(NULL::bigint, ARRAY[changes]);
    replies bytea[] := array_fill(NULL::bytea, ARRAY[changes]);
    events_before int[] := array_fill(0, ARRAY[changes]);
    effects_before int[] := array_fill(0, ARRAY[changes]);
    -- Per entity that a change commits to: its version after the batch.
    create_ids uuid[] := '{}';
    create_types text[] := '{}';
    create_versions bigint[] := '{}';
    update_ids uuid[] := '{}';
    update_types text[] := '{}';
    update_versions bigint[] := '{}';
    -- Which writes have anything to do.
    any_committed boolean := false;
    any_events boolean := false;
    any_effects boolean := false;
    any_snapshots boolean := false;
    any_recorded_only boolean := false;
    any_ends boolean := false;
    -- The loop's state: the chain of changes to the entity at hand (i .. last),
    -- and that entity as the chain has left it so far.
    i int;
    j int;
    last int;
    stored boolean;
    stored_end text;
    touches boolean;
    expected bigint;
    chain_type text;
    chain_version bigint;
    refused boolean;
    chain_commands text[];
    earlier int;
    events_seen int := 0;
    effects_seen int := 0;
    -- Entities some other transaction created first.
    created uuid[];
    lost_ids uuid[];
    lost_versions bigint[];
    -- The partitions whose logs grow, by how much, and where each change's events go.
    parts int[] := '{}';
    taken bigint[] := '{}';
    heads bigint[];
    firsts bigint[] := array_fill(NULL::bigint, ARRAY[changes]);
    -- A command id recorded first by another transaction: its version and reply.
    winner_version bigint;
    winner_reply bytea;
BEGIN
    IF changes = 0 THEN
        RETURN;
    END IF;

    -- 1. Lock the existing rows, in one global order. (Columns are qualified
    -- throughout: "version" and "reply" are also the names of output columns.)
    SELECT array_agg(e.entity_id ORDER BY e.entity_id),
           array_agg(e.entity_type ORDER BY e.entity_id),
           array_agg(e.version ORDER BY e.entity_id),
           array_agg(e.ended ORDER BY e.entity_id)
      INTO locked_ids, locked_types, locked_versions, locked_ends
      FROM (SELECT l.entity_id, l.entity_type, l.version, l.ended FROM entities l
             WHERE l.entity_id = ANY (c_entity_ids)
             ORDER BY l.entity_id
               FOR UPDATE) e;
    locked_count := coalesce(cardinality(locked_ids), 0);

    -- 2. Timers: which changes write or fire one, and which fire a timer that is
    -- gone (read under the entities' locks, which every change to a timer holds).
    FOREACH i IN ARRAY coalesce(w_changes, '{}') LOOP
        timed[i] := true;
    END LOOP;
    IF coalesce(cardinality(r_changes), 0) > 0 THEN
        FOREACH i IN ARRAY r_changes LOOP
            timed[i] := true;
        END LOOP;
        FOR i IN
            SELECT r.c FROM unnest(r_changes, r_keys, r_schedule_ids, r_due) AS r(c, k, s, d)
             WHERE NOT EXISTS (
                   SELECT 1 FROM timers t
                    WHERE t.entity_id = c_entity_ids[r.c] AND t.timer_key = r.k
                      AND t.schedule_id = r.s AND t.due_at = r.d AND t.due_at <= now())
        LOOP
            gone[i] := true;
        END LOOP;
    END IF;

    -- 3. The command ids already recorded: one primary-key probe per change
    -- (LATERAL ... LIMIT: never a join against the whole table, however small
    -- the planner thinks it is).
    SELECT array_agg(d.version ORDER BY c), array_agg(d.reply ORDER BY c)
      INTO recorded_versions, recorded_replies
      FROM generate_series(1, changes) AS c
      LEFT JOIN LATERAL (
            SELECT r.version, r.reply FROM commands r
             WHERE r.entity_id = c_entity_ids[c] AND r.command_id = c_command_ids[c]
             LIMIT 1) d ON true;

    -- 4. Decide every change, one chain (an entity's consecutive changes) at a
    -- time: plain array work, no SQL. A chain's first refusal refuses the rest.
    i := 1;
    WHILE i <= changes LOOP
        IF i > 1 AND c_entity_ids[i] < c_entity_ids[i - 1] THEN
            RAISE EXCEPTION 'pachyderm_commit_batch: changes must be sorted by entity id';
        END IF;
        -- The locked rows are sorted the same way: walk them alongside.
        WHILE next_locked <= locked_count AND locked_ids[next_locked] < c_entity_ids[i] LOOP
            next_locked := next_locked + 1;
        END LOOP;
        stored := next_locked <= locked_count AND locked_ids[next_locked] = c_entity_ids[i];
        last := i;
        touches := false;
        WHILE last <= changes AND c_entity_ids[last] = c_entity_ids[i] LOOP
            touches := touches OR c_expected[last] <> 0 OR c_event_counts[last] > 0
                       OR c_effect_counts[last] > 0 OR coalesce(c_ends[last], false)
                       OR timed[last];
            last := last + 1;
        END LOOP;
        last := last - 1;
        IF stored THEN
            chain_type := locked_types[next_locked];
            chain_version := locked_versions[next_locked];
            stored_end := locked_ends[next_locked];
        ELSE
            -- Created, if at all, with the type of its first change.
            chain_type := c_types[i];
            chain_version := 0;
            stored_end := NULL;
        END IF;
        refused := false;
        chain_commands := '{}';

        FOR j IN i .. last LOOP
            IF stored_end IS NOT NULL THEN
                marks[j] := CASE WHEN stored_end = 'erased' THEN 'e' ELSE 'n' END;
            ELSIF NOT stored AND NOT touches THEN
                marks[j] := 'r';
            END IF;
            expected := CASE WHEN gone[j] THEN -1
                             WHEN marks[j] IS NOT NULL THEN -3  -- no entity is at -3
                             ELSE c_expected[j] END;
            events_before[j] := events_seen;
            effects_before[j] := effects_seen;
            events_seen := events_seen + c_event_counts[j];
            effects_seen := effects_seen + c_effect_counts[j];
            IF refused THEN
                outcomes[j] := 'x';
                versions[j] := chain_version;
            ELSIF recorded_versions[j] IS NOT NULL THEN
                outcomes[j] := 'd';
                versions[j] := recorded_versions[j];
                replies[j] := recorded_replies[j];
                refused := true;
            ELSIF c_command_ids[j] = ANY (chain_commands) THEN
                -- Recorded by an earlier change of this chain, which committed
                -- (as all before a refusal did): answer with that change.
                earlier := i - 1 + array_position(chain_commands, c_command_ids[j]);
                outcomes[j] := 'd';
                versions[j] := versions[earlier];
                replies[j] := c_replies[earlier];
                refused := true;
            ELSIF c_types[j] <> chain_type OR expected <> chain_version THEN
                outcomes[j] := 'x';
                versions[j] := chain_version;
                refused := true;
            ELSE
                chain_version := expected + c_event_counts[j];
                outcomes[j] := 'c';
                versions[j] := chain_version;
                chain_commands := chain_commands || c_command_ids[j];
                any_committed := true;
                any_events := any_events OR c_event_counts[j] > 0;
                any_effects := any_effects OR c_effect_counts[j] > 0;
                any_snapshots := any_snapshots OR c_snapshots[j] IS NOT NULL;
                any_ends := any_ends OR coalesce(c_ends[j], false);
            END IF;
            -- Why a refusal was refused: a gone timer first, then the entity's end.
            IF outcomes[j] = 'x' THEN
                IF gone[j] THEN
                    outcomes[j] := 'g';
                ELSIF marks[j] IN ('n', 'e') THEN
                    outcomes[j] := marks[j];
                ELSIF versions[j] = -2 THEN
                    outcomes[j] := 'e';
                ELSIF marks[j] = 'r' THEN
                    any_recorded_only := true;
                END IF;
            END IF;
        END LOOP;

        -- The chain's entity ends at chain_version.
        IF cardinality(chain_commands) > 0 THEN
            IF stored THEN
                update_ids := update_ids || c_entity_ids[i];
                update_types := update_types || chain_type;
                update_versions := update_versions || chain_version;
            ELSE
                create_ids := create_ids || c_entity_ids[i];
                create_types := create_types || chain_type;
                create_versions := create_versions || chain_version;
            END IF;
        END IF;
        i := last + 1;
    END LOOP;

    -- 5. Create the absent entities, at their version after the batch, in the
    -- same global order.
    IF cardinality(create_ids) > 0 THEN
        WITH inserted AS (
            INSERT INTO entities AS e (entity_id, entity_type, version)
            SELECT create_ids[n], create_types[n], create_versions[n]
              FROM generate_series(1, cardinality(create_ids)) AS n
             ORDER BY create_ids[n]
                ON CONFLICT (entity_id) DO NOTHING
            RETURNING e.entity_id
        )
        SELECT array_agg(ins.entity_id) INTO created FROM inserted ins;

        IF coalesce(cardinality(created), 0) < cardinality(create_ids) THEN
            -- Rare: another transaction created some of them first (and DO
            -- NOTHING waited for it to commit, so this statement sees the row).
            -- Refuse every change to them, at the version it left.
            SELECT array_agg(e.entity_id), array_agg(e.version)
              INTO lost_ids, lost_versions
              FROM entities e
             WHERE e.entity_id = ANY (create_ids)
               AND e.entity_id <> ALL (coalesce(created, '{}'));
            FOR i IN 1 .. changes LOOP
                IF c_entity_ids[i] = ANY (lost_ids) THEN
                    outcomes[i] := CASE WHEN gone[i] THEN 'g' ELSE 'x' END;
                    versions[i] := lost_versions[array_position(lost_ids, c_entity_ids[i])];
                    replies[i] := NULL;
                END IF;
            END LOOP;
            any_committed := 'c' = ANY (outcomes);
        END IF;
    END IF;

    -- 6. Move the existing entities to their version after the batch. An
    -- upsert, though every row exists (and is locked): it finds each row by
    -- a primary-key probe whatever the planner thinks of the table's size.
    IF cardinality(update_ids) > 0 THEN
        INSERT INTO entities AS e (entity_id, entity_type, version)
        SELECT update_ids[u], update_types[u], update_versions[u]
          FROM generate_series(1, cardinality(update_ids)) AS u
            ON CONFLICT (entity_id) DO UPDATE
               SET version = excluded.version, updated_at = now();
    END IF;

    -- 7. What the committed changes write.
    IF any_events THEN
        INSERT INTO events (entity_id, version, name, data, command_id, schema_version)
        SELECT c_entity_ids[c], c_expected[c] + k, e_names[events_before[c] + k],
               e_data[events_before[c] + k], c_command_ids[c],
               coalesce(e_versions[events_before[c] + k], 1)
          FROM generate_series(1, changes) AS c
         CROSS JOIN generate_series(1, c_event_counts[c]) AS k
         WHERE outcomes[c] = 'c';
    END IF;

    IF any_committed THEN
        INSERT INTO commands (entity_id, command_id, version, reply)
        SELECT c_entity_ids[c], c_command_ids[c], versions[c], c_replies[c]
          FROM generate_series(1, changes) AS c
         WHERE outcomes[c] = 'c';
    END IF;

    IF any_effects THEN
        -- In batch order: outbox positions keep the order effects were made in.
        INSERT INTO outbox (effect_id, entity_id, command_id, destination, payload,
                            trace_context)
        SELECT f_ids[effects_before[c] + k], c_entity_ids[c], c_command_ids[c],
               f_destinations[effects_before[c] + k], f_payloads[effects_before[c] + k],
               f_traces[effects_before[c] + k]
          FROM generate_series(1, changes) AS c
         CROSS JOIN generate_series(1, c_effect_counts[c]) AS k
         WHERE outcomes[c] = 'c'
         ORDER BY c, k;
    END IF;

    IF any_snapshots THEN
        -- One row per entity (an upsert may not touch a row twice): its newest
        -- committed snapshot, the first of equals, as one upsert after another
        -- would leave it. It replaces only an older stored one.
        INSERT INTO snapshots AS s (entity_id, version, state, fingerprint)
        SELECT DISTINCT ON (c_entity_ids[c]) c_entity_ids[c], versions[c], c_snapshots[c],
               c_fingerprints[c]
          FROM generate_series(1, changes) AS c
         WHERE outcomes[c] = 'c' AND c_snapshots[c] IS NOT NULL
         ORDER BY c_entity_ids[c], versions[c] DESC, c
            ON CONFLICT (entity_id) DO UPDATE
               SET version = excluded.version, state = excluded.state, taken_at = now(),
                   fingerprint = excluded.fingerprint
             WHERE s.version < excluded.version;
    END IF;

    IF any_committed AND coalesce(cardinality(w_changes), 0) > 0 THEN
        -- Each (entity, key)'s last write of the batch wins; NULL payload: cancel.
        WITH last_writes AS (
            SELECT DISTINCT ON (c_entity_ids[w.c], w.k)
                   c_entity_ids[w.c] AS entity_id, c_types[w.c] AS entity_type,
                   w.k, w.p, w.d, w.s, w.payload
              FROM unnest(w_changes, w_keys, w_partitions, w_due, w_schedule_ids, w_payloads)
                   WITH ORDINALITY AS w(c, k, p, d, s, payload, n)
             WHERE outcomes[w.c] = 'c'
             ORDER BY c_entity_ids[w.c], w.k, w.n DESC
        ), removed AS (
            DELETE FROM timers t USING last_writes lw
             WHERE lw.payload IS NULL
               AND t.entity_id = lw.entity_id AND t.timer_key = lw.k
        )
        INSERT INTO timers AS t (entity_id, timer_key, entity_type, partition, due_at, fire_at,
                                 schedule_id, payload)
        SELECT lw.entity_id, lw.k, lw.entity_type, lw.p, lw.d, lw.d, lw.s, lw.payload
          FROM last_writes lw WHERE lw.payload IS NOT NULL
            ON CONFLICT (entity_id, timer_key) DO UPDATE
               SET entity_type = excluded.entity_type, partition = excluded.partition,
                   due_at = excluded.due_at, fire_at = excluded.fire_at,
                   schedule_id = excluded.schedule_id, payload = excluded.payload,
                   attempts = 0, scheduled_at = now();
    END IF;

    -- 8. The log: each partition's head moves on by the events its changes add;
    -- a change's events take consecutive positions, in batch order.
    IF any_events THEN
        FOR i IN 1 .. changes LOOP
            IF outcomes[i] = 'c' AND c_event_counts[i] > 0 THEN
                j := array_position(parts, c_partitions[i]);
                IF j IS NULL THEN
                    parts := parts || c_partitions[i];
                    taken := taken || c_event_counts[i]::bigint;
                ELSE
                    taken[j] := taken[j] + c_event_counts[i];
                END IF;
            END IF;
        END LOOP;
    END IF;
    IF cardinality(parts) > 0 THEN
        WITH moved AS (
            INSERT INTO log_heads AS h (partition, position)
            SELECT u.p, u.t FROM unnest(parts, taken) AS u(p, t) ORDER BY u.p
                ON CONFLICT (partition) DO UPDATE SET position = h.position + excluded.position
            RETURNING h.partition, h.position
        )
        SELECT array_agg(m.position - u.t ORDER BY u.n) INTO heads
          FROM unnest(parts, taken) WITH ORDINALITY AS u(p, t, n)
          JOIN moved m ON m.partition = u.p;
        FOR i IN 1 .. changes LOOP
            IF outcomes[i] = 'c' AND c_event_counts[i] > 0 THEN
                j := array_position(parts, c_partitions[i]);
                firsts[i] := heads[j] + 1;
                heads[j] := heads[j] + c_event_counts[i];
            END IF;
        END LOOP;
        INSERT INTO event_log (partition, position, entity_id, version)
        SELECT c_partitions[c], firsts[c] + k - 1, c_entity_ids[c],
               versions[c] - c_event_counts[c] + k
          FROM generate_series(1, changes) AS c
         CROSS JOIN generate_series(1, c_event_counts[c]) AS k
         WHERE outcomes[c] = 'c';
    END IF;

    -- 9. Changes that write nothing but their reply to an entity with no row
    -- (0013): their command ids and replies are recorded at version 0, and no
    -- row is created. Two commits of one command id race on the commands key:
    -- the loser answers with the winner's reply, as a duplicate.
    IF any_recorded_only THEN
        WITH recorded AS (
            INSERT INTO commands AS r (entity_id, command_id, version, reply)
            SELECT c_entity_ids[c], c_command_ids[c], 0, c_replies[c]
              FROM generate_series(1, changes) AS c
             WHERE marks[c] = 'r' AND outcomes[c] = 'x'
             ORDER BY c_entity_ids[c], c_command_ids[c]
                ON CONFLICT (entity_id, command_id) DO NOTHING
            RETURNING r.entity_id, r.command_id
        )
        SELECT array_agg(CASE WHEN marks[c] = 'r' AND outcomes[c] = 'x'
                              THEN CASE WHEN EXISTS (
                                       SELECT 1 FROM recorded d
                                        WHERE d.entity_id = c_entity_ids[c]
                                          AND d.command_id = c_command_ids[c])
                                   THEN 'c' ELSE 'w' END
                              ELSE outcomes[c] END ORDER BY c)
          INTO outcomes
          FROM generate_series(1, changes) AS c;
        FOR i IN 1 .. changes LOOP
            IF outcomes[i] = 'c' AND marks[i] = 'r' THEN
                versions[i] := 0;
            ELSIF outcomes[i] = 'w' THEN
                SELECT r.version, r.reply INTO winner_version, winner_reply
                  FROM commands r
                 WHERE r.entity_id = c_entity_ids[i] AND r.command_id = c_command_ids[i];
                outcomes[i] := 'd';
                versions[i] := winner_version;
                replies[i] := winner_reply;
            END IF;
        END LOOP;
    END IF;

    -- 10. Changes that end their entity: the row keeps its last version and
    -- says when it ended; its pending timers could only fire refused commands.
    IF any_ends THEN
        UPDATE entities e SET ended = 'ended', ended_at = now(), ended_version = versions[c]
          FROM generate_series(1, changes) AS c
         WHERE c_ends[c] AND outcomes[c] = 'c' AND e.entity_id = c_entity_ids[c];
        DELETE FROM timers t
         USING generate_series(1, changes) AS c
         WHERE c_ends[c] AND outcomes[c] = 'c' AND t.entity_id = c_entity_ids[c];
    END IF;

    -- One scan of a series: the rows come out in its order.
    RETURN QUERY SELECT outcomes[c], versions[c], replies[c] FROM generate_series(1, changes) AS c;
END;
$$;
