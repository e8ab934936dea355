-- pachyderm_commit_ending (0013) again, with its per-batch work linear in the batch.
--
-- 0013 looked up, for every run of changes to one entity, the entity's stored row
-- with array_position over all the rows found (one scan of them per entity) and,
-- for every change, whether it writes or fires a timer with = ANY over all the
-- batch's timer writes and fires (one scan of them per change): quadratic in the
-- batch. A group commit of 1,000 timer fires (each change one fire and one timer
-- write) spent most of its time there. Now the stored rows come aligned with the
-- changes (one index probe each, in the order of the changes), and the changes
-- that write or fire timers are marked once in a boolean array. Behaviour is
-- 0013's exactly: the same marks, the same outcomes, the same writes.
CREATE OR REPLACE FUNCTION pachyderm_commit_ending(
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
    -- Per change: whether its entity has a row, and the row's ended.
    stored boolean[];
    stored_ends text[];
    -- Per change: whether it writes or fires a timer.
    timed boolean[] := array_fill(false, ARRAY[changes]);
    -- Per change: 'n'/'e' when its entity is ended or erased, 'r' when row-less.
    marks text[] := array_fill(NULL::text, ARRAY[changes]);
    touches boolean;
    outcomes text[];
    versions bigint[];
    replies bytea[];
    any_marked boolean := false;
    winner_version bigint;
    winner_reply bytea;
    i int;
    j int;
    m int;
BEGIN
    SELECT array_agg(s.entity_id IS NOT NULL ORDER BY c.n), array_agg(s.ended ORDER BY c.n)
      INTO stored, stored_ends
      FROM unnest(c_entity_ids) WITH ORDINALITY AS c(entity_id, n)
      LEFT JOIN entities s ON s.entity_id = c.entity_id;
    FOREACH i IN ARRAY coalesce(w_changes, '{}') LOOP
        timed[i] := true;
    END LOOP;
    FOREACH i IN ARRAY coalesce(r_changes, '{}') LOOP
        timed[i] := true;
    END LOOP;

    -- Per run of changes to one entity (the changes come sorted by entity id): whether
    -- any writes more than its reply, then each change's mark. Array work, no SQL.
    i := 1;
    WHILE i <= changes LOOP
        j := i;
        touches := false;
        WHILE j <= changes AND c_entity_ids[j] = c_entity_ids[i] LOOP
            touches := touches OR c_expected[j] <> 0 OR c_event_counts[j] > 0
                       OR c_effect_counts[j] > 0 OR coalesce(c_ends[j], false) OR timed[j];
            j := j + 1;
        END LOOP;
        FOR m IN i .. j - 1 LOOP
            IF stored[i] AND stored_ends[i] IS NOT NULL THEN
                marks[m] := CASE WHEN stored_ends[i] = 'erased' THEN 'e' ELSE 'n' END;
            ELSIF NOT stored[i] AND NOT touches THEN
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
