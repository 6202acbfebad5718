-- Whether the request's decision was persisted but is not yet in the audit trail
-- (RequestRecord::audit_pending), as a column so that sweeps find unaudited denials without
-- reading every decided request. The record's JSON stays authoritative: the gate re-checks it.
ALTER TABLE approval_requests ADD COLUMN audit_pending BOOLEAN NOT NULL DEFAULT false;

UPDATE approval_requests
   SET audit_pending = true
 WHERE (record::jsonb ->> 'audit_pending') = 'true';

CREATE INDEX approval_requests_audit_pending ON approval_requests (audit_pending, state);
