-- The one-change commit (issue 18): the common batch, one change to an existing
-- entity that adds events and nothing else, commits through one plain statement
-- (store/_postgres_one_change.py) instead of pachyderm_commit_fenced, whose
-- PL/pgSQL body costs about as much again as the writes themselves. Anything that
-- statement does not commit (a version or type mismatch, a recorded command id, an
-- ended or erased entity, a missing log head, a quarantine row) goes through
-- pachyderm_commit_fenced as before, which decides and answers it.
--
-- Why a column: the fence (0017) reads the quarantine after taking the entity's
-- lock, in a statement of its own. One statement has one snapshot, taken before it
-- waits for the lock: a quarantine row committed while it waited is invisible to
-- it. The row's own columns are not: READ COMMITTED re-checks the locked row's
-- newest version against the statement's WHERE. So every quarantine row marks its
-- entity's row (the trigger below, whatever release inserts the row, in the
-- quarantine's transaction, which holds the entity's lock already), and the
-- one-change statement refuses a marked entity as well as one with a quarantine
-- row in its snapshot. The mark stays: an entity once quarantined commits through
-- the fenced function from then on, which decides its fence on every commit.
ALTER TABLE entities ADD COLUMN fenced boolean NOT NULL DEFAULT false;

UPDATE entities e SET fenced = true
 WHERE EXISTS (SELECT 1 FROM quarantine q WHERE q.entity_id = e.entity_id);

CREATE FUNCTION pachyderm_mark_fenced() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE entities SET fenced = true WHERE entity_id = NEW.entity_id AND NOT fenced;
    RETURN NULL;
END;
$$;

CREATE TRIGGER quarantine_marks_entity AFTER INSERT ON quarantine
    FOR EACH ROW EXECUTE FUNCTION pachyderm_mark_fenced();
