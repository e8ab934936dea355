-- A fence at commit for parked entities (issue 16): pachyderm_commit_fenced, the
-- commit of pachyderm_commit_batch (0016) refused as a whole when it would commit
-- a change to an entity parked behind a quarantined command.
--
-- Why: a partition's quarantine is read by its owner every second and when it
-- starts consuming. A partition's former owner (still consuming while it moves)
-- or a second consumer of its queue decides on its own, older view: it could
-- apply an entity's later command, or fire its timer, after the new owner parked
-- the entity. The store is the one place both see alike.
--
-- An entity is parked while a row of its quarantine has policy 'park' and status
-- quarantined, resuming or skipping, or skipped with commands still parked
-- behind it (pachyderm.worker's _View, the same rule). A change to it is fenced
-- unless it runs the command being resumed, or one parked behind it while no
-- command of the entity waits for an operator (status quarantined): the release,
-- which the owner runs before anything newer, and only then.
--
-- Ordering: pachyderm_commit_batch locks the batch's entity rows; the check
-- below is a statement after it, with a snapshot of its own (this function is
-- volatile, in READ COMMITTED), so it sees every quarantine row committed before
-- the locks were granted; the quarantine's insert locks the same rows first
-- (store/_postgres_quarantine.py), so a park after that waits for this commit.
-- (An entity with no row yet has nothing to lock: a park and the entity's first
-- commit racing may both land.)
--
-- Outcome: SQLSTATE PX001, its DETAIL the fenced changes' positions in the batch
-- (1-based, comma-separated); nothing of the batch is written and the caller
-- commits the rest again without them. The common case, no quarantine row for
-- any of the batch's entities, costs one index probe.
--
-- pachyderm_commit_batch stays as it is: a worker of the previous release, during
-- its rolling upgrade, still calls it (unfenced, as before).
CREATE FUNCTION pachyderm_commit_fenced(
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
AS $$
DECLARE
    fenced int[];
BEGIN
    RETURN QUERY SELECT * FROM pachyderm_commit_batch(
        c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
        c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads,
        f_traces, r_changes, r_keys, r_schedule_ids, r_due, w_changes, w_keys, w_partitions,
        w_due, w_schedule_ids, w_payloads, c_partitions, e_versions, c_fingerprints, c_ends);

    IF EXISTS (SELECT 1 FROM quarantine q WHERE q.entity_id = ANY (c_entity_ids)) THEN
        SELECT array_agg(c ORDER BY c) INTO fenced
          FROM generate_series(1, coalesce(cardinality(c_entity_ids), 0)) AS c
         WHERE EXISTS (
                 SELECT 1 FROM quarantine q
                  WHERE q.entity_id = c_entity_ids[c] AND q.policy = 'park'
                    AND (q.status IN ('quarantined', 'resuming', 'skipping')
                         OR (q.status = 'skipped' AND EXISTS (
                                 SELECT 1 FROM parked_commands k
                                  WHERE k.entity_id = q.entity_id))))
           AND NOT EXISTS (
                 SELECT 1 FROM quarantine q
                  WHERE q.entity_id = c_entity_ids[c] AND q.command_id = c_command_ids[c]
                    AND q.status = 'resuming')
           AND NOT (
                 EXISTS (
                     SELECT 1 FROM parked_commands k
                      WHERE k.entity_id = c_entity_ids[c] AND k.command_id = c_command_ids[c])
                 AND NOT EXISTS (
                     SELECT 1 FROM quarantine q
                      WHERE q.entity_id = c_entity_ids[c] AND q.policy = 'park'
                        AND q.status = 'quarantined'));
        IF fenced IS NOT NULL THEN
            RAISE EXCEPTION 'pachyderm: changes to parked entities'
                  USING ERRCODE = 'PX001', DETAIL = array_to_string(fenced, ',');
        END IF;
    END IF;
END;
$$;
