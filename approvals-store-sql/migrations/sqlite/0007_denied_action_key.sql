-- For a denied request, its action key (approvals_core::ActionRequest::action_key: what would
-- run and for whom, hex), NULL for every other state. A submit under a rule with
-- cooldown_after_denial lists the denials of the same action through the partial index
-- below, newest first, so the check costs the same however many requests were ever denied.
-- Computed in Rust: denied rows stored before this migration are filled when the store
-- migrates, found through the second partial index, which stays empty once they are.
ALTER TABLE approval_requests ADD COLUMN denied_action_key TEXT;

CREATE INDEX approval_requests_denied_action ON approval_requests (denied_action_key, created_at)
 WHERE denied_action_key IS NOT NULL;

CREATE INDEX approval_requests_denied_action_missing ON approval_requests (id)
 WHERE state = 'denied' AND denied_action_key IS NULL;
