-- Listing the entities of a type by id, a page at a time: see the PostgreSQL
-- migration of the same number (and no index on updated_at, on purpose).
CREATE INDEX IF NOT EXISTS entities_by_type ON entities (entity_type, entity_id);
