-- The event log: every committed event at a gap-free position within its
-- partition, in commit order.
--
-- A global sequence would skip events that commit out of order (a reader
-- past position n never sees a smaller n committed later). Each partition has
-- one writer at a time instead, and its head (the last position given out)
-- is a row of log_heads that the committing transaction locks and holds until
-- it commits: positions are given out in commit order, and a rolled-back
-- transaction gives back the positions it took. Should two writers ever
-- commit to one partition at once (a hand-over), they queue on that row.
--
-- event_log is narrow (the events stay where they are): (partition, position)
-- -> (entity_id, version). Events committed before this migration are not in
-- the log.
CREATE TABLE log_heads (
    partition int    PRIMARY KEY,
    position  bigint NOT NULL CHECK (position >= 0)
);

CREATE TABLE event_log (
    partition int    NOT NULL,
    position  bigint NOT NULL CHECK (position >= 1),
    entity_id uuid   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (partition, position)
);

-- pachyderm_commit (or, for a batch that writes or fires timers or keeps
-- trace contexts, pachyderm_commit_timed), then the log: the committed
-- changes' events, by change (c_partitions: the partition each change came
-- from), in batch order. Heads are locked in partition order, after every
-- entity lock the batch takes, as every batch takes them: two batches never
-- deadlock on them. The per-change work is a loop over arrays that runs no SQL.
CREATE FUNCTION pachyderm_commit_logged(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[],
    r_changes int[], r_keys text[], r_schedule_ids text[], r_due timestamptz[],
    w_changes int[], w_keys text[], w_partitions int[], w_due timestamptz[],
    w_schedule_ids text[], w_payloads bytea[],
    c_partitions int[]
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
          FROM pachyderm_commit(
                   c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
                   c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations,
                   f_payloads)
               WITH ORDINALITY AS p(outcome, version, reply, n);
    ELSE
        SELECT array_agg(p.outcome ORDER BY p.n), array_agg(p.version ORDER BY p.n),
               array_agg(p.reply ORDER BY p.n)
          INTO outcomes, versions, replies
          FROM pachyderm_commit_timed(
                   c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
                   c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations,
                   f_payloads, f_traces, r_changes, r_keys, r_schedule_ids, r_due,
                   w_changes, w_keys, w_partitions, w_due, w_schedule_ids, w_payloads)
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
