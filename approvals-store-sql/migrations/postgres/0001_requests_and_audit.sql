-- Approval requests: the full RequestRecord as JSON text (kept byte for byte), plus the
-- columns that list, filter and compare-and-set need.
CREATE TABLE approval_requests (
    id              UUID        NOT NULL PRIMARY KEY,
    version         BIGINT      NOT NULL,
    state           TEXT        NOT NULL,
    kind            TEXT        NOT NULL,
    environment     TEXT,
    initiator_id    TEXT,
    idempotency_key TEXT        UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    record          TEXT        NOT NULL
);

CREATE INDEX approval_requests_by_created ON approval_requests (created_at DESC, id DESC);
CREATE INDEX approval_requests_by_state ON approval_requests (state, created_at DESC);

-- The audit trail: append-only, hash-chained.
-- hash = SHA-256(prev_hash || event_json), prev_hash of seq 1 = 32 zero bytes; both hex.
CREATE TABLE approval_audit (
    seq        BIGINT      NOT NULL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    request_id UUID        NOT NULL,
    event      TEXT        NOT NULL,
    prev_hash  TEXT        NOT NULL,
    hash       TEXT        NOT NULL,
    event_json TEXT        NOT NULL
);

CREATE INDEX approval_audit_by_request ON approval_audit (request_id, seq);

CREATE FUNCTION approval_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval_audit is append-only';
END;
$$;

CREATE TRIGGER approval_audit_no_change BEFORE UPDATE OR DELETE ON approval_audit
    FOR EACH ROW EXECUTE FUNCTION approval_audit_append_only();

CREATE TRIGGER approval_audit_no_truncate BEFORE TRUNCATE ON approval_audit
    FOR EACH STATEMENT EXECUTE FUNCTION approval_audit_append_only();
