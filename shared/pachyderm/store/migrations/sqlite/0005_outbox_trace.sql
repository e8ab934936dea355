-- The trace context of the command that made an effect (W3C trace context
-- headers as a JSON object), so that an effect published by the sweep after a
-- crash continues its command's trace. NULL: the command was not traced.

ALTER TABLE outbox ADD COLUMN trace_context TEXT;
