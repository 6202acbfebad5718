-- When a sweep has to look at the request again (approvals_core::lifecycle::next_due:
-- expiry, escalation, grant lapse, or the recovery of an unaudited decision); NULL when
-- nothing will fall due by itself. A sweep reads only the rows with due_at at or before now,
-- through the partial index below, instead of every open request. Computed in Rust: rows
-- stored before this migration are filled when the store migrates (open and unaudited rows
-- only; the others stay NULL, which is right for them).
ALTER TABLE approval_requests ADD COLUMN due_at TIMESTAMPTZ;

CREATE INDEX approval_requests_due ON approval_requests (due_at) WHERE due_at IS NOT NULL;
