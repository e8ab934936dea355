-- Poison commands (see pachyderm.worker's quarantine and store/_quarantine.py).
--
-- command_attempts: how many times the broker handed a command to a worker
-- again (AMQP redelivered) without it being answered. Only redeliveries are
-- counted: a first delivery costs nothing here, and one that crashed or hung
-- its worker comes back redelivered, so the count is on record before the
-- handler runs again. A command answered at last has its row deleted.
CREATE TABLE IF NOT EXISTS command_attempts (
    entity_id   uuid        NOT NULL,
    command_id  text        NOT NULL,
    attempts    int         NOT NULL,
    last_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, command_id)
);

-- quarantine: a command that used up its attempts, kept whole (message: the
-- AMQP message as the worker received it) until an operator resumes or skips
-- it. policy 'park' holds the entity's later commands in parked_commands;
-- 'skip' lets them through. status: quarantined (waiting for an operator),
-- resuming / skipping (an operator decided; the partition's owner carries it
-- out), skipped (done: a copy of the command is answered quarantined). A
-- resumed command's row is deleted once it ran.
CREATE TABLE IF NOT EXISTS quarantine (
    entity_id       uuid        NOT NULL,
    command_id      text        NOT NULL,
    entity_type     text        NOT NULL,
    partition       int         NOT NULL,
    policy          text        NOT NULL CHECK (policy IN ('park', 'skip')),
    status          text        NOT NULL
                    CHECK (status IN ('quarantined', 'resuming', 'skipping', 'skipped')),
    attempts        int         NOT NULL,
    reason          text        NOT NULL,
    message         bytea       NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    PRIMARY KEY (entity_id, command_id)
);
-- Each owner reads its partitions' rows when it starts and then every second.
CREATE INDEX IF NOT EXISTS quarantine_partition ON quarantine (partition);

-- parked_commands: the later commands of a parked entity, in arrival order
-- (position), acknowledged to the broker once stored here and run in that
-- order when the entity is released. A caller's retry of a parked command
-- replaces its message (the newest reply address) and keeps its place.
CREATE TABLE IF NOT EXISTS parked_commands (
    position    bigserial   PRIMARY KEY,
    entity_id   uuid        NOT NULL,
    command_id  text        NOT NULL,
    message     bytea       NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entity_id, command_id)
);
CREATE INDEX IF NOT EXISTS parked_commands_entity ON parked_commands (entity_id, position);
