-- Whether the request's decision was persisted but is not yet in the audit trail
-- (RequestRecord::audit_pending), as a column so that sweeps find unaudited denials without
-- reading every decided request. The record's JSON stays authoritative: the gate re-checks it.
ALTER TABLE approval_requests ADD COLUMN audit_pending INTEGER NOT NULL DEFAULT 0;

UPDATE approval_requests
   SET audit_pending = 1
 WHERE json_extract(record, '$.audit_pending') = 1;

CREATE INDEX approval_requests_audit_pending ON approval_requests (audit_pending, state);
