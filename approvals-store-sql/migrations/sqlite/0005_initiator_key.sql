-- The initiator's identity key (approvals_core::identity::identity_key: case, width,
-- invisible characters and look-alike letters folded away), which the initiator filter of
-- Store::list compares, so it agrees with the memory store for every spelling of an id. The
-- key is computed in Rust, not SQL: rows stored before this migration are filled from
-- initiator_id (whose key is the initiator's) when the store migrates, found through the
-- partial index below, which stays empty once they are.
ALTER TABLE approval_requests ADD COLUMN initiator_key TEXT;

CREATE INDEX approval_requests_initiator_key_missing ON approval_requests (id)
 WHERE initiator_key IS NULL AND initiator_id IS NOT NULL;
