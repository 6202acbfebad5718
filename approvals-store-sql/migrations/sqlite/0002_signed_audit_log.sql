-- The audit trail becomes the signed Merkle log of approvals-audit: one log line per row, in
-- order (RFC 6962 leaf hashes, the entry hash chain and C2SP signed checkpoints, exactly as in
-- a log file; see approvals_audit::log::db). `line` is verified; the other columns serve
-- queries and are checked against it.
CREATE TABLE approval_audit_log (
    line_no    INTEGER NOT NULL PRIMARY KEY,
    seq        INTEGER UNIQUE,
    at         TEXT    NOT NULL,
    request_id TEXT,
    event      TEXT,
    line       TEXT    NOT NULL
) STRICT;

CREATE INDEX approval_audit_log_by_request ON approval_audit_log (request_id, line_no);

CREATE TRIGGER approval_audit_log_no_update BEFORE UPDATE ON approval_audit_log
BEGIN
    SELECT RAISE(ABORT, 'approval_audit_log is append-only');
END;

CREATE TRIGGER approval_audit_log_no_delete BEFORE DELETE ON approval_audit_log
BEGIN
    SELECT RAISE(ABORT, 'approval_audit_log is append-only');
END;

-- The old hash-chained table keeps its rows, unchanged and still verifiable, but takes no
-- new ones: the first entry of the new log records its head (event `legacy_audit_chain`).
CREATE TRIGGER approval_audit_closed BEFORE INSERT ON approval_audit
BEGIN
    SELECT RAISE(ABORT, 'approval_audit is closed: audit events go to approval_audit_log');
END;
