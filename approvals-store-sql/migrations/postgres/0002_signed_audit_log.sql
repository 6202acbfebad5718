-- The audit trail becomes the signed Merkle log of approvals-audit: one log line per row, in
-- order (RFC 6962 leaf hashes, the entry hash chain and C2SP signed checkpoints, exactly as in
-- a log file; see approvals_audit::log::db). `line` is verified; the other columns serve
-- queries and are checked against it.
CREATE TABLE approval_audit_log (
    line_no    BIGINT      NOT NULL PRIMARY KEY,
    seq        BIGINT      UNIQUE,
    at         TIMESTAMPTZ NOT NULL,
    request_id TEXT,
    event      TEXT,
    line       TEXT        NOT NULL
);

CREATE INDEX approval_audit_log_by_request ON approval_audit_log (request_id, line_no);

CREATE FUNCTION approval_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval_audit_log is append-only';
END;
$$;

CREATE TRIGGER approval_audit_log_no_change BEFORE UPDATE OR DELETE ON approval_audit_log
    FOR EACH ROW EXECUTE FUNCTION approval_audit_log_append_only();

CREATE TRIGGER approval_audit_log_no_truncate BEFORE TRUNCATE ON approval_audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION approval_audit_log_append_only();

-- The old hash-chained table keeps its rows, unchanged and still verifiable, but takes no
-- new ones: the first entry of the new log records its head (event `legacy_audit_chain`).
CREATE FUNCTION approval_audit_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval_audit is closed: audit events go to approval_audit_log';
END;
$$;

CREATE TRIGGER approval_audit_closed BEFORE INSERT ON approval_audit
    FOR EACH ROW EXECUTE FUNCTION approval_audit_closed();
