-- Entities, their histories, snapshots, command ids and the effect outbox.
-- Runs with search_path set to the namespace's schema.

CREATE TABLE entities (
    entity_id   uuid        PRIMARY KEY,
    entity_type text        NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    entity_id   uuid        NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    name        text        NOT NULL,
    data        bytea       NOT NULL,
    command_id  text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, version)
);

CREATE TABLE snapshots (
    entity_id   uuid        PRIMARY KEY,
    version     bigint      NOT NULL CHECK (version >= 1),
    state       bytea       NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now()
);

-- A command id is scoped to its entity: a publisher reusing another entity's
-- command id must never be handed that entity's reply.
CREATE TABLE commands (
    entity_id   uuid        NOT NULL,
    command_id  text        NOT NULL,
    version     bigint      NOT NULL,
    reply       bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, command_id)
);

CREATE TABLE outbox (
    position     bigserial   PRIMARY KEY,
    effect_id    uuid        NOT NULL UNIQUE,
    entity_id    uuid        NOT NULL,
    command_id   text        NOT NULL,
    destination  text        NOT NULL,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE INDEX outbox_unpublished ON outbox (position) WHERE published_at IS NULL;

-- One round trip commits a whole batch. Changes arrive as parallel arrays (one
-- element per change; events and effects flattened, counted per change) and
-- are applied in order, so later changes to an entity see earlier ones. Each
-- change is a compare-and-set on entities.version: a stale or duplicate change
-- writes nothing and does not abort the transaction, so the rest still commit.
-- Once a change to an entity is refused, the entity's later changes in the
-- batch are refused too: they were computed on state that did not happen.
-- outcome: 'c' committed, 'd' duplicate command id, 'x' conflict.
CREATE FUNCTION pachyderm_commit(
    c_entity_ids uuid[], c_types text[], c_expected bigint[], c_command_ids text[],
    c_replies bytea[], c_event_counts int[], c_effect_counts int[], c_snapshots bytea[],
    e_names text[], e_data bytea[],
    f_ids uuid[], f_destinations text[], f_payloads bytea[]
) RETURNS TABLE (outcome text, version bigint, reply bytea)
LANGUAGE plpgsql AS $$
DECLARE
    i int;
    event_base int := 0;
    effect_base int := 0;
    new_version bigint;
    stored record;
    refused uuid[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(c_entity_ids, 1), 0) LOOP
        new_version := c_expected[i] + c_event_counts[i];
        reply := NULL;
        IF c_entity_ids[i] = ANY(refused) THEN
            outcome := 'x';
        ELSE
            SELECT c.version, c.reply INTO stored FROM commands c
             WHERE c.entity_id = c_entity_ids[i] AND c.command_id = c_command_ids[i];
            IF FOUND THEN
                outcome := 'd'; version := stored.version; reply := stored.reply;
            ELSIF c_expected[i] = 0 THEN
                INSERT INTO entities AS e (entity_id, entity_type, version)
                VALUES (c_entity_ids[i], c_types[i], new_version)
                ON CONFLICT (entity_id) DO UPDATE
                   SET version = excluded.version, updated_at = now()
                 WHERE e.version = 0 AND e.entity_type = excluded.entity_type;
                outcome := CASE WHEN FOUND THEN 'c' ELSE 'x' END;
            ELSE
                UPDATE entities e SET version = new_version, updated_at = now()
                 WHERE e.entity_id = c_entity_ids[i] AND e.version = c_expected[i]
                   AND e.entity_type = c_types[i];
                outcome := CASE WHEN FOUND THEN 'c' ELSE 'x' END;
            END IF;
        END IF;
        IF outcome = 'c' THEN
            INSERT INTO events (entity_id, version, name, data, command_id)
            SELECT c_entity_ids[i], c_expected[i] + k, e_names[event_base + k],
                   e_data[event_base + k], c_command_ids[i]
              FROM generate_series(1, c_event_counts[i]) AS k;
            INSERT INTO commands (entity_id, command_id, version, reply)
            VALUES (c_entity_ids[i], c_command_ids[i], new_version, c_replies[i]);
            INSERT INTO outbox (effect_id, entity_id, command_id, destination, payload)
            SELECT f_ids[effect_base + k], c_entity_ids[i], c_command_ids[i],
                   f_destinations[effect_base + k], f_payloads[effect_base + k]
              FROM generate_series(1, c_effect_counts[i]) AS k;
            IF c_snapshots[i] IS NOT NULL THEN
                INSERT INTO snapshots AS s (entity_id, version, state)
                VALUES (c_entity_ids[i], new_version, c_snapshots[i])
                ON CONFLICT (entity_id) DO UPDATE
                   SET version = excluded.version, state = excluded.state, taken_at = now()
                 WHERE s.version < excluded.version;
            END IF;
            version := new_version;
        ELSE
            refused := refused || c_entity_ids[i];
            IF outcome = 'x' THEN
                SELECT coalesce(max(e.version), 0) INTO version
                  FROM entities e WHERE e.entity_id = c_entity_ids[i];
            END IF;
        END IF;
        event_base := event_base + c_event_counts[i];
        effect_base := effect_base + c_effect_counts[i];
        RETURN NEXT;
    END LOOP;
END;
$$;
