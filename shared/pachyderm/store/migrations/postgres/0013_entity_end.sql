-- Entity end of life (see pachyderm._ending and store/_postgres_erasure.py).
--
-- ended: NULL while the entity lives; 'ended' once its handler ended it (its
-- final state is its snapshot, its version stays the last one); 'erased' once
-- an operator erased it: a tombstone that keeps only the id and type, so that
-- the id cannot silently start a fresh history. ended_at: when; ended_version:
-- the version it had then. An erased entity's row is at version -2, which no
-- change ever expects (readers are told -1; -1 is what pachyderm_commit_timed
-- gives a fire whose timer is gone): the version check that every commit makes
-- under the row's lock refuses them all, even one decided on a state cached
-- before the erasure. No
-- index covers the new columns but entities_ended, whose columns commits never
-- change (so commits stay HOT updates).
ALTER TABLE entities ADD COLUMN ended text CHECK (ended IN ('ended', 'erased'));
ALTER TABLE entities ADD COLUMN ended_at timestamptz;
ALTER TABLE entities ADD COLUMN ended_version bigint;
-- NOT VALID: every stored row is at 0 or more; no need to read them all again.
ALTER TABLE entities DROP CONSTRAINT entities_version_check,
    ADD CONSTRAINT entities_version_check CHECK (version >= -2) NOT VALID;

-- The ended entities, for pruning their histories (store/_postgres_erasure.py).
-- Commits never change ended or ended_at, so they stay HOT updates.
CREATE INDEX entities_ended ON entities (ended_at, entity_id) WHERE ended = 'ended';

-- pachyderm_commit_versioned (0011), and around it:
--
-- 1. Every change to an ended or erased entity is refused: outcome 'n' (ended)
--    or 'e' (erased), at the stored version (-2 when erased). The rows are read
--    first, without a lock (a second lock statement before pachyderm_commit's
--    own would take locks out of the one global order once rows appear between
--    them, and deadlock): an entity found ended gets an expected version no
--    entity has. One that ends or is erased between that read and the commit's
--    lock is refused by the version check all the same: an ending change has
--    events (the runtime refuses an End without one), so it moves the version
--    past every state decided before it, and an erasure sets it to -2.
--    A change whose command id is recorded is still a duplicate ('d'): a
--    command applied before the end gets its own reply.
-- 2. c_ends (NULL: no change ends its entity, the common case): a committed
--    change marked true ends its entity; its pending timers are deleted (they
--    could only fire commands the entity refuses). Its snapshot, the final
--    state, comes with it as any snapshot does.
-- 3. A change that writes nothing but its reply (no events, effects, timer
--    writes, fire or end: a rejection, or a command that changed nothing) to an
--    entity with no row, where every change of the batch to that entity is of
--    that kind, creates no row: its command id and reply are recorded at
--    version 0 and nothing else, so a rejected first command does not claim the
--    id for a type. The reply lives in commands, which the duplicate check reads
--    whether the entity has a row or not. Two such commits of one command id
--    race on the commands key: ON CONFLICT DO NOTHING waits for the other and
--    the loser answers with the winner's reply, as a duplicate.
--    Consistency: such a change was decided on the entity's initial state; it
--    wrote nothing, so it is ordered before any concurrent first commit.
-- outcome as pachyderm_commit_versioned, plus 'n' ended and 'e' erased.
CREATE FUNCTION pachyderm_commit_ending(
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
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    changes int := coalesce(cardinality(c_entity_ids), 0);
    expected bigint[] := c_expected;
    stored_ids uuid[];
    stored_ends text[];
    -- Per change: 'n'/'e' when its entity is ended or erased, 'r' when row-less.
    marks text[] := '{}';
    touches boolean;
    outcomes text[];
    versions bigint[];
    replies bytea[];
    any_marked boolean := false;
    winner_version bigint;
    winner_reply bytea;
    i int;
    j int;
    k int;
    m int;
BEGIN
    SELECT array_agg(s.entity_id), array_agg(s.ended) INTO stored_ids, stored_ends
      FROM entities s WHERE s.entity_id = ANY (c_entity_ids);

    -- Per run of changes to one entity (the changes come sorted by entity id): whether
    -- any writes more than its reply, then each change's mark. Array work, no SQL.
    i := 1;
    WHILE i <= changes LOOP
        j := i;
        touches := false;
        WHILE j <= changes AND c_entity_ids[j] = c_entity_ids[i] LOOP
            touches := touches OR c_expected[j] <> 0 OR c_event_counts[j] > 0
                       OR c_effect_counts[j] > 0 OR coalesce(c_ends[j], false)
                       OR j = ANY (coalesce(w_changes, '{}'))
                       OR j = ANY (coalesce(r_changes, '{}'));
            j := j + 1;
        END LOOP;
        k := array_position(stored_ids, c_entity_ids[i]);
        FOR m IN i .. j - 1 LOOP
            marks[m] := NULL;
            IF k IS NOT NULL AND stored_ends[k] IS NOT NULL THEN
                marks[m] := CASE WHEN stored_ends[k] = 'erased' THEN 'e' ELSE 'n' END;
            ELSIF k IS NULL AND NOT touches THEN
                marks[m] := 'r';
            END IF;
            IF marks[m] IS NOT NULL THEN
                expected[m] := -3;  -- no entity is at version -3: refused, nothing written
                any_marked := true;
            END IF;
        END LOOP;
        i := j;
    END LOOP;

    SELECT array_agg(p.outcome ORDER BY p.n), array_agg(p.version ORDER BY p.n),
           array_agg(p.reply ORDER BY p.n)
      INTO outcomes, versions, replies
      FROM pachyderm_commit_versioned(
               c_entity_ids, c_types, expected, c_command_ids, c_replies, c_event_counts,
               c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations,
               f_payloads, f_traces, r_changes, r_keys, r_schedule_ids, r_due,
               w_changes, w_keys, w_partitions, w_due, w_schedule_ids, w_payloads,
               c_partitions, e_versions, c_fingerprints)
           WITH ORDINALITY AS p(outcome, version, reply, n);

    FOR i IN 1 .. changes LOOP
        IF outcomes[i] = 'x' AND marks[i] IN ('n', 'e') THEN
            outcomes[i] := marks[i];
        ELSIF outcomes[i] = 'x' AND versions[i] = -2 THEN
            -- Erased between the read and the commit's lock: refused by its version.
            outcomes[i] := 'e';
        END IF;
    END LOOP;

    IF any_marked THEN
        -- Row-less changes not found recorded: record their replies now.
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
        -- 'w': another transaction recorded the command id first; answer with its reply.
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

    IF c_ends IS NOT NULL THEN
        UPDATE entities e SET ended = 'ended', ended_at = now(), ended_version = versions[c]
          FROM generate_series(1, changes) AS c
         WHERE c_ends[c] AND outcomes[c] = 'c' AND e.entity_id = c_entity_ids[c];
        DELETE FROM timers t
         USING generate_series(1, changes) AS c
         WHERE c_ends[c] AND outcomes[c] = 'c' AND t.entity_id = c_entity_ids[c];
    END IF;

    RETURN QUERY SELECT outcomes[c], versions[c], replies[c]
                   FROM generate_series(1, changes) AS c;
END;
$$;
