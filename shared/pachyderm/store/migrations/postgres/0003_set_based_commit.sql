-- pachyderm_commit, set-based: a handful of statements per batch instead of
-- about six per change. The loop of 0001 ran its SQL statements once per
-- change, each paying a statement's start-up; here every statement works on
-- the whole batch, and the only per-change work is a loop over arrays that
-- runs no SQL. Same signature, same result, same semantics:
--
-- Changes arrive as parallel arrays (one element per change; events and
-- effects flattened, counted per change), sorted by entity id with each
-- entity's changes in batch order (other input is refused with an error).
-- Each change is a compare-and-set on entities.version: it commits when the
-- entity is of its type and at its expected version once the earlier
-- committed changes of the same entity in the batch have applied (expecting 0
-- of an entity with no row creates it; a row at version 0 of the same type is
-- at version 0). A change whose command id is already recorded for its
-- entity, in the table or by an earlier change of the batch, is a duplicate.
-- A refused change writes nothing and does not abort the transaction, so the
-- rest still commit; the entity's later changes in the batch are refused too
-- (they were computed on state that did not happen). A committed change
-- writes its events (versions expected + 1 on), its command id and reply,
-- its effects to the outbox and its snapshot (only over an older one).
-- outcome: 'c' committed (version: the new version), 'd' duplicate command id
-- (the stored version and reply), 'x' conflict (the entity's version after
-- this batch's committed changes to it; 0 if it has no row).
--
-- Concurrency (READ COMMITTED; overlapping workers may commit changes to the
-- same entities at once):
-- 1. The existing rows are locked first, in entity id order, the order every
--    batch locks in, so two batches wait for each other but never deadlock.
--    After waiting, FOR UPDATE returns the row as the other transaction left it.
-- 2. The command ids are read in a later statement than the lock, so they
--    include those of every transaction the lock waited for. (0001 read them
--    before waiting: a concurrent commit of the same command id that made no
--    event then failed the whole batch with a unique violation.)
-- 3. Absent entities are created by INSERT ... ON CONFLICT DO NOTHING, which
--    waits for a concurrent creator's transaction; if that one committed, the
--    row is not ours, and the changes meant to create it are refused (a
--    conflict, at the version the creator left): never a unique violation.
-- Every write after that touches only rows this transaction locked or created.
-- Nothing goes through temporary tables (they cost catalog writes and are
-- session state): the steps hand each other arrays.
CREATE OR REPLACE FUNCTION pachyderm_commit(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[]
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
                RAISE EXCEPTION 'pachyderm_commit: changes must be sorted by entity id';
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
        INSERT INTO events (entity_id, version, name, data, command_id)
        SELECT c_entity_ids[c], c_expected[c] + k, e_names[events_before[c] + k],
               e_data[events_before[c] + k], c_command_ids[c]
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
        INSERT INTO snapshots AS s (entity_id, version, state)
        SELECT DISTINCT ON (c_entity_ids[c]) c_entity_ids[c], versions[c], c_snapshots[c]
          FROM generate_series(1, changes) AS c
         WHERE outcomes[c] = 'c' AND c_snapshots[c] IS NOT NULL
         ORDER BY c_entity_ids[c], versions[c] DESC, c
            ON CONFLICT (entity_id) DO UPDATE
               SET version = excluded.version, state = excluded.state, taken_at = now()
             WHERE s.version < excluded.version;
    END IF;

    -- One scan of a series: the rows come out in its order.
    RETURN QUERY SELECT outcomes[c], versions[c], replies[c] FROM generate_series(1, changes) AS c;
END;
$$;
