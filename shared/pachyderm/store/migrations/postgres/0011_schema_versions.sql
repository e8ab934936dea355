-- Schema evolution: each event keeps the version of its type it was written
-- with, each snapshot the fingerprint of the code that wrote it (the state
-- type's and the fold's versions), so that newer code upcasts old events on
-- read and ignores a snapshot it would misread.
--
-- A constant default adds the column without rewriting the table; every event
-- written before this migration is at version 1, every snapshot has no
-- fingerprint (which the runtime reads as version 1 of both).
ALTER TABLE events ADD COLUMN schema_version int NOT NULL DEFAULT 1
    CHECK (schema_version >= 1);
ALTER TABLE snapshots ADD COLUMN fingerprint text;

-- pachyderm_commit_logged, then the schema versions of the events it
-- committed and the snapshots with their fingerprints. e_versions: one per
-- event, in e_names' order; NULL when every event is at version 1 (the common
-- case: then nothing more is written); an event of another version is written
-- as 1 and then set (a second write, only for evolved types). c_fingerprints:
-- one per change (NULL where none), or NULL. The snapshots are written here,
-- not by pachyderm_commit (it gets none), so that each is written once with
-- its fingerprint: per entity its newest committed one, replacing only an
-- older stored one, as pachyderm_commit (0003) would.
-- Every batch commits through this function from migration 0011 on.
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
    events_before int[] := '{}';
    seen int := 0;
    any_snapshots boolean := false;
    i int;
BEGIN
    SELECT array_agg(p.outcome ORDER BY p.n), array_agg(p.version ORDER BY p.n),
           array_agg(p.reply ORDER BY p.n)
      INTO outcomes, versions, replies
      FROM pachyderm_commit_logged(
               c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
               c_effect_counts, NULL, e_names, e_data, f_ids, f_destinations,
               f_payloads, f_traces, r_changes, r_keys, r_schedule_ids, r_due,
               w_changes, w_keys, w_partitions, w_due, w_schedule_ids, w_payloads,
               c_partitions)
           WITH ORDINALITY AS p(outcome, version, reply, n);

    IF e_versions IS NOT NULL THEN
        FOR i IN 1 .. changes LOOP
            events_before[i] := seen;
            seen := seen + c_event_counts[i];
        END LOOP;
        -- A committed change's events are at versions[c] - count + 1 .. versions[c].
        UPDATE events e SET schema_version = v.schema_version
          FROM (SELECT c_entity_ids[c] AS entity_id,
                       versions[c] - c_event_counts[c] + k AS version,
                       e_versions[events_before[c] + k] AS schema_version
                  FROM generate_series(1, changes) AS c
                 CROSS JOIN generate_series(1, c_event_counts[c]) AS k
                 WHERE outcomes[c] = 'c') v
         WHERE e.entity_id = v.entity_id AND e.version = v.version AND v.schema_version <> 1;
    END IF;

    FOR i IN 1 .. changes LOOP
        any_snapshots := any_snapshots OR (outcomes[i] = 'c' AND c_snapshots[i] IS NOT NULL);
    END LOOP;
    IF any_snapshots THEN
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

    RETURN QUERY SELECT outcomes[c], versions[c], replies[c]
                   FROM generate_series(1, changes) AS c;
END;
$$;
