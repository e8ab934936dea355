-- Listing the entities of a type by id, a page at a time (keyset: after an id).
-- Neither column ever changes once a row is written, so commits, which update
-- version and updated_at, stay HOT updates: no index entry is written for them.
-- No index on updated_at, on purpose: every commit would then write one (see
-- pachyderm.store._postgres_listing). A migration runs in a transaction, so
-- this cannot be built CONCURRENTLY: on a large existing table it holds off
-- commits while it builds (build it by hand, CONCURRENTLY, first if that matters;
-- IF NOT EXISTS then keeps this one from building it twice).
CREATE INDEX IF NOT EXISTS entities_by_type ON entities (entity_type, entity_id);
