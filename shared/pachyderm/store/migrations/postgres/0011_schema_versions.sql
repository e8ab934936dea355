-- Schema evolution: each event keeps the version of its type it was written
-- with, each snapshot the fingerprint of the code that took it (the state
-- type's and the fold's versions), so that newer code upcasts old events on
-- read and ignores a snapshot it would misread.
--
-- A constant default adds the column without rewriting the table; every event
-- written before this migration is at version 1, every snapshot has no
-- fingerprint (which the runtime reads as version 1 of both).
ALTER TABLE events ADD COLUMN schema_version int NOT NULL DEFAULT 1
    CHECK (schema_version >= 1);
ALTER TABLE snapshots ADD COLUMN fingerprint text;

-- The commit functions again, each taking two arrays more and writing them in
-- the statements that write the rows (never a second write of a row):
-- e_versions, one schema version per event in e_names' order (NULL, or a NULL
-- element: 1); c_fingerprints, one per change (NULL, or a NULL element: none).
-- pachyderm_commit_versioned_core is pachyderm_commit (0003),
-- pachyderm_commit_versioned_timed is pachyderm_commit_timed (0007) and
-- pachyderm_commit_versioned is pachyderm_commit_logged (0008), otherwise
-- unchanged; every batch commits through pachyderm_commit_versioned from this
-- migration on. The old names stay, as wrappers that write neither (a worker
-- of the previous release, during its rolling upgrade, still calls them; a
-- snapshot it writes has no fingerprint, as it had none).

-- pachyderm_commit (0003), with e_versions and c_fingerprints.
CREATE FUNCTION pachyderm_commit_versioned_core(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[],
    e_versions int[], c_fingerprints text[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE plpgsql
-- Plan each statement once per session. By default PL/pgSQL replans a
-- statement on every call while a plan for its actual arrays looks cheaper
-- than a generic one, which for small batches it always does: planning would
-- cost more than all the rest.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    changes int := coalesce(cardinality(c_entity_ids), 0);
    -- The existing rows of the batch's entities, locked, by entity id.
    locked_ids uuid[];
    locked_types text[];
    locked_versions bigint[];
    -- Per change: the version and reply recorded for its command id, if any.
    recorded_versions bigint[];
    recorded_replies bytea[];
    -- Per change: the result.
    outcomes text[] := '{}';
    versions bigint[] := '{}';
    replies bytea[] := '{}';
    -- Per change: how many events and effects come before its own.
    events_before int[] := '{}';
    effects_before int[] := '{}';
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
    -- The loop's state: the chain of changes to the entity at hand, and
    -- that entity as the chain has left it so far.
    i int;
    locked_count int;
    next_locked int := 1;
    stored boolean;
    chain_type text;
    chain_version bigint;
    refused boolean;
    chain_start int;
    chain_commands text[];
    earlier int;
    events_seen int := 0;
    effects_seen int := 0;
    -- Entities some other transaction created first.
    created uuid[];
    lost_ids uuid[];
    lost_versions bigint[];
BEGIN
    -- 1. Lock the existing rows, in one global order. (Columns are qualified
    -- throughout: "version" and "reply" are also the names of output columns.)
    SELECT array_agg(e.entity_id ORDER BY e.entity_id),
           array_agg(e.entity_type ORDER BY e.entity_id),
           array_agg(e.version ORDER BY e.entity_id)
      INTO locked_ids, locked_types, locked_versions
      FROM (SELECT l.entity_id, l.entity_type, l.version FROM entities l
             WHERE l.entity_id = ANY (c_entity_ids)
             ORDER BY l.entity_id
               FOR UPDATE) e;
    locked_count := coalesce(cardinality(locked_ids), 0);

    -- 2. The command ids already recorded: one primary-key probe per change
    -- (LATERAL ... LIMIT: never a join against the whole table, however small
    -- the planner thinks it is). Statements address the changes by position,
    -- c in 1 .. changes, into the arrays (expanded arrays: constant time).
    SELECT array_agg(d.version ORDER BY c), array_agg(d.reply ORDER BY c)
      INTO recorded_versions, recorded_replies
      FROM generate_series(1, changes) AS c
      LEFT JOIN LATERAL (
            SELECT r.version, r.reply FROM commands r
             WHERE r.entity_id = c_entity_ids[c] AND r.command_id = c_command_ids[c]
             LIMIT 1) d ON true;

    -- 3. Decide every change, in order: plain array work, no SQL. An entity's
    -- changes are consecutive; a chain whose first refusal refuses the rest.
    FOR i IN 1 .. changes LOOP
        IF i = 1 OR c_entity_ids[i] <> c_entity_ids[i - 1] THEN
            IF i > 1 AND c_entity_ids[i] < c_entity_ids[i - 1] THEN
                RAISE EXCEPTION 'pachyderm_commit_versioned_core: changes must be sorted by entity id';
            END IF;
            -- The locked rows are sorted the same way: walk them alongside.
            WHILE next_locked <= locked_count AND locked_ids[next_locked] < c_entity_ids[i] LOOP
                next_locked := next_locked + 1;
            END LOOP;
            stored := next_locked <= locked_count AND locked_ids[next_locked] = c_entity_ids[i];
            IF stored THEN
                chain_type := locked_types[next_locked];
                chain_version := locked_versions[next_locked];
            ELSE
                -- Created, if at all, with the type of its first change.
                chain_type := c_types[i];
                chain_version := 0;
            END IF;
            refused := false;
            chain_start := i;
            chain_commands := '{}';
        END IF;

        events_before[i] := events_seen;
        effects_before[i] := effects_seen;
        events_seen := events_seen + c_event_counts[i];
        effects_seen := effects_seen + c_effect_counts[i];
        replies[i] := NULL;
        IF refused THEN
            outcomes[i] := 'x';
            versions[i] := chain_version;
        ELSIF recorded_versions[i] IS NOT NULL THEN
            outcomes[i] := 'd';
            versions[i] := recorded_versions[i];
            replies[i] := recorded_replies[i];
            refused := true;
        ELSIF c_command_ids[i] = ANY (chain_commands) THEN
            -- Recorded by an earlier change of this chain, which committed
            -- (as all before a refusal did): answer with that change.
            earlier := chain_start - 1 + array_position(chain_commands, c_command_ids[i]);
            outcomes[i] := 'd';
            versions[i] := versions[earlier];
            replies[i] := c_replies[earlier];
            refused := true;
        ELSIF c_types[i] <> chain_type OR c_expected[i] <> chain_version THEN
            outcomes[i] := 'x';
            versions[i] := chain_version;
            refused := true;
        ELSE
            chain_version := c_expected[i] + c_event_counts[i];
            outcomes[i] := 'c';
            versions[i] := chain_version;
            chain_commands := chain_commands || c_command_ids[i];
            any_committed := true;
            any_events := any_events OR c_event_counts[i] > 0;
            any_effects := any_effects OR c_effect_counts[i] > 0;
            any_snapshots := any_snapshots OR c_snapshots[i] IS NOT NULL;
        END IF;

        -- The chain's last change: its entity ends at chain_version.
        IF cardinality(chain_commands) > 0
           AND (i = changes OR c_entity_ids[i + 1] <> c_entity_ids[i]) THEN
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
    END LOOP;

    -- 4. Create the absent entities, at their version after the batch, in the
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
                    outcomes[i] := 'x';
                    versions[i] := lost_versions[array_position(lost_ids, c_entity_ids[i])];
                    replies[i] := NULL;
                END IF;
            END LOOP;
            any_committed := 'c' = ANY (outcomes);
        END IF;
    END IF;

    -- 5. Move the existing entities to their version after the batch. An
    -- upsert, though every row exists (and is locked): it finds each row by
    -- a primary-key probe whatever the planner thinks of the table's size.
    IF cardinality(update_ids) > 0 THEN
        INSERT INTO entities AS e (entity_id, entity_type, version)
        SELECT update_ids[u], update_types[u], update_versions[u]
          FROM generate_series(1, cardinality(update_ids)) AS u
            ON CONFLICT (entity_id) DO UPDATE
               SET version = excluded.version, updated_at = now();
    END IF;

    -- 6. What the committed changes write.
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
        INSERT INTO outbox (effect_id, entity_id, command_id, destination, payload)
        SELECT f_ids[effects_before[c] + k], c_entity_ids[c], c_command_ids[c],
               f_destinations[effects_before[c] + k], f_payloads[effects_before[c] + k]
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

    -- One scan of a series: the rows come out in its order.
    RETURN QUERY SELECT outcomes[c], versions[c], replies[c] FROM generate_series(1, changes) AS c;
END;
$$;

-- pachyderm_commit_timed (0007), calling the core above.
CREATE FUNCTION pachyderm_commit_versioned_timed(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[],
    e_versions int[], c_fingerprints text[]
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
      FROM pachyderm_commit_versioned_core(
               c_entity_ids, c_types, expected, c_command_ids, c_replies, c_event_counts,
               c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads,
               e_versions, c_fingerprints)
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

-- pachyderm_commit_logged (0008), calling the two above.
CREATE FUNCTION pachyderm_commit_versioned(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[],
    c_partitions int[],
    e_versions int[], c_fingerprints text[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    changes int := coalesce(cardinality(c_entity_ids), 0);
    outcomes text[];
    versions bigint[];
    replies bytea[];
    -- The partitions whose logs grow, how much, and where each change's events go.
    parts int[] := '{}';
    taken bigint[] := '{}';
    heads bigint[];
    firsts bigint[] := '{}';
    i int;
    j int;
BEGIN
    IF f_traces IS NULL AND coalesce(cardinality(r_changes), 0) = 0
       AND coalesce(cardinality(w_changes), 0) = 0 THEN
        SELECT array_agg(p.outcome ORDER BY p.n), array_agg(p.version ORDER BY p.n),
               array_agg(p.reply ORDER BY p.n)
          INTO outcomes, versions, replies
          FROM pachyderm_commit_versioned_core(
                   c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
                   c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations,
                   f_payloads, e_versions, c_fingerprints)
               WITH ORDINALITY AS p(outcome, version, reply, n);
    ELSE
        SELECT array_agg(p.outcome ORDER BY p.n), array_agg(p.version ORDER BY p.n),
               array_agg(p.reply ORDER BY p.n)
          INTO outcomes, versions, replies
          FROM pachyderm_commit_versioned_timed(
                   c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
                   c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations,
                   f_payloads, f_traces, r_changes, r_keys, r_schedule_ids, r_due,
                   w_changes, w_keys, w_partitions, w_due, w_schedule_ids, w_payloads,
                   e_versions, c_fingerprints)
               WITH ORDINALITY AS p(outcome, version, reply, n);
    END IF;

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

    IF cardinality(parts) > 0 THEN
        -- Each head moves on by what its partition takes; heads: where each was.
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

    RETURN QUERY SELECT outcomes[c], versions[c], replies[c]
                   FROM generate_series(1, changes) AS c;
END;
$$;

-- The previous release's entry points, as thin wrappers: no schema versions
-- (every event at 1), no fingerprints.
CREATE OR REPLACE FUNCTION pachyderm_commit(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE sql
AS $$
    SELECT * FROM pachyderm_commit_versioned_core(
        c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
        c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads,
        NULL, NULL);
$$;

CREATE OR REPLACE FUNCTION pachyderm_commit_timed(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE sql
AS $$
    SELECT * FROM pachyderm_commit_versioned_timed(
        c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
        c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads,
        f_traces, r_changes, r_keys, r_schedule_ids, r_due, w_changes, w_keys, w_partitions,
        w_due, w_schedule_ids, w_payloads, NULL, NULL);
$$;

CREATE OR REPLACE FUNCTION pachyderm_commit_logged(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[],
    c_partitions int[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE sql
AS $$
    SELECT * FROM pachyderm_commit_versioned(
        c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
        c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads,
        f_traces, r_changes, r_keys, r_schedule_ids, r_due, w_changes, w_keys, w_partitions,
        w_due, w_schedule_ids, w_payloads, c_partitions, NULL, NULL);
$$;
