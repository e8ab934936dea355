-- The trace context of the command that made an effect (W3C trace context
-- headers as a JSON object), so that an effect published by the sweep after a
-- crash continues its command's trace as the one published right after the
-- commit does. NULL: the command was not traced.

ALTER TABLE outbox ADD COLUMN trace_context text;

-- pachyderm_commit, then the trace context of each effect written (f_traces,
-- one per effect, in f_ids' order; NULL where there is none). A separate
-- function, called only when some effect has a trace context: a batch that is
-- not traced pays nothing for it. It updates only rows the commit just wrote
-- (unpublished, without a trace context), in the same transaction.
CREATE FUNCTION pachyderm_commit_traced(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[], f_traces text[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY SELECT * FROM pachyderm_commit(
        c_entity_ids, c_types, c_expected, c_command_ids, c_replies, c_event_counts,
        c_effect_counts, c_snapshots, e_names, e_data, f_ids, f_destinations, f_payloads);
    UPDATE outbox o SET trace_context = t.trace
      FROM unnest(f_ids, f_traces) AS t(effect_id, trace)
     WHERE o.effect_id = t.effect_id AND t.trace IS NOT NULL
       AND o.trace_context IS NULL AND o.published_at IS NULL;
END;
$$;
