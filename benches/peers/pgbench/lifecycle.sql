-- The writes of one submit -> approve -> execute lifecycle as the PostgreSQL store makes them,
-- with nothing else: the request row inserted and compare-and-set three times (each rewriting
-- the row and its indexed columns), and the seven audit rows, in four transactions. Record and
-- line sizes are those of the store_sql bench's lifecycle (read from its tables). No reads, no
-- hash chain, no table lock, no notification, no barrier query: a ceiling for any store on
-- this schema. Run by ./run.
BEGIN;
INSERT INTO approval_requests (id, version, state, kind, environment, initiator_id, idempotency_key,
    created_at, expires_at, record, audit_pending, initiator_key, due_at, denied_action_key)
  VALUES (gen_random_uuid(), 1, 'pending', 'data.export', NULL, 'billing-agent', NULL,
    now(), now() + interval '1 hour', repeat('r', 701), false, 'billing-agent',
    now() + interval '1 hour', NULL)
  RETURNING id \gset
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), :id, 'requested', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n FROM generate_series(1, 2)) s;
COMMIT;
BEGIN;
UPDATE approval_requests SET version = version + 1, state = 'approved', kind = 'data.export',
    environment = NULL, initiator_id = 'billing-agent', idempotency_key = NULL,
    created_at = created_at, expires_at = expires_at, record = repeat('a', 905),
    audit_pending = false, initiator_key = 'billing-agent', due_at = now() + interval '1 hour',
    denied_action_key = NULL
  WHERE id = :id AND version = 1 AND state = ANY('{pending}');
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), :id, 'reviewed', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n FROM generate_series(1, 2)) s;
COMMIT;
BEGIN;
UPDATE approval_requests SET version = version + 1, state = 'executing', kind = 'data.export',
    environment = NULL, initiator_id = 'billing-agent', idempotency_key = NULL,
    created_at = created_at, expires_at = expires_at, record = repeat('e', 950),
    audit_pending = false, initiator_key = 'billing-agent', due_at = now() + interval '1 hour',
    denied_action_key = NULL
  WHERE id = :id AND version = 2 AND state = ANY('{approved}');
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), :id, 'grant_consumed', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n FROM generate_series(1, 1)) s;
COMMIT;
BEGIN;
UPDATE approval_requests SET version = version + 1, state = 'executed', kind = 'data.export',
    environment = NULL, initiator_id = 'billing-agent', idempotency_key = NULL,
    created_at = created_at, expires_at = expires_at, record = repeat('x', 1012),
    audit_pending = false, initiator_key = 'billing-agent', due_at = NULL,
    denied_action_key = NULL
  WHERE id = :id AND version = 3 AND state = ANY('{executing}');
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), :id, 'executed', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n FROM generate_series(1, 2)) s;
COMMIT;
