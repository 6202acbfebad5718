-- Approval requests: the full RequestRecord as JSON, plus the columns that list, filter and
-- compare-and-set need. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE approval_requests (
    id              TEXT    NOT NULL PRIMARY KEY,
    version         INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    environment     TEXT,
    initiator_id    TEXT,
    idempotency_key TEXT    UNIQUE,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    record          TEXT    NOT NULL
) STRICT;

CREATE INDEX approval_requests_by_created ON approval_requests (created_at DESC, id DESC);
CREATE INDEX approval_requests_by_state ON approval_requests (state, created_at DESC);

-- The audit trail: append-only, hash-chained.
-- hash = SHA-256(prev_hash || event_json), prev_hash of seq 1 = 32 zero bytes; both hex.
CREATE TABLE approval_audit (
    seq        INTEGER NOT NULL PRIMARY KEY,
    at         TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL,
    event_json TEXT    NOT NULL
) STRICT;

CREATE INDEX approval_audit_by_request ON approval_audit (request_id, seq);

CREATE TRIGGER approval_audit_no_update BEFORE UPDATE ON approval_audit
BEGIN
    SELECT RAISE(ABORT, 'approval_audit is append-only');
END;

CREATE TRIGGER approval_audit_no_delete BEFORE DELETE ON approval_audit
BEGIN
    SELECT RAISE(ABORT, 'approval_audit is append-only');
END;
