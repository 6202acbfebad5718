-- The writes of 64 lifecycles at once, each step one set-based statement for all 64 requests
-- (the most a writer could batch: the insert, three compare-and-sets and the seven audit rows
-- of each request, in four transactions). Record and line sizes as in lifecycle.sql. pgbench's
-- tps times 64 is lifecycles/s. Run by `SCRIPT=lifecycle_batched_64.sql CLIENTS=2 ./run`.
\set base random(1, 1000000000000000)
BEGIN;
INSERT INTO approval_requests (id, version, state, kind, environment, initiator_id, idempotency_key,
    created_at, expires_at, record, audit_pending, initiator_key, due_at, denied_action_key)
  SELECT md5(:base || '-' || g)::uuid, 1, 'pending', 'data.export', NULL, 'billing-agent', NULL,
    now(), now() + interval '1 hour', repeat('r', 701), false, 'billing-agent',
    now() + interval '1 hour', NULL FROM generate_series(1, 64) g;
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), id, 'requested', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n, md5(:base || '-' || g) AS id FROM generate_series(1, 64) g, generate_series(1, 2)) s;
COMMIT;
BEGIN;
UPDATE approval_requests r SET version = version + 1, state = 'approved', record = repeat('a', 905), due_at = now() + interval '1 hour'
  WHERE id IN (SELECT md5(:base || '-' || g)::uuid FROM generate_series(1, 64) g) AND version = 1 AND state = ANY('{pending}');
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), id, 'reviewed', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n, md5(:base || '-' || g) AS id FROM generate_series(1, 64) g, generate_series(1, 2)) s;
COMMIT;
BEGIN;
UPDATE approval_requests r SET version = version + 1, state = 'executing', record = repeat('e', 950)
  WHERE id IN (SELECT md5(:base || '-' || g)::uuid FROM generate_series(1, 64) g) AND version = 2 AND state = ANY('{approved}');
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), id, 'grant_consumed', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n, md5(:base || '-' || g) AS id FROM generate_series(1, 64) g) s;
COMMIT;
BEGIN;
UPDATE approval_requests r SET version = version + 1, state = 'executed', record = repeat('x', 1012), due_at = NULL
  WHERE id IN (SELECT md5(:base || '-' || g)::uuid FROM generate_series(1, 64) g) AND version = 3 AND state = ANY('{executing}');
INSERT INTO approval_audit_log (line_no, seq, at, request_id, event, line)
  SELECT n, n, now(), id, 'executed', repeat('l', 560)
    FROM (SELECT nextval('line_no') AS n, md5(:base || '-' || g) AS id FROM generate_series(1, 64) g, generate_series(1, 2)) s;
COMMIT;
