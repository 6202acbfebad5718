-- The audit log's witness (invariant 12): the latest signed checkpoint, kept apart from the log
-- table, so that verification notices rows cut from the end of the log together with their
-- checkpoints. One row (id 1): the checkpoint note exactly as in its checkpoint line, and its
-- tree size. The writer replaces it in the same transaction as the checkpoint row it copies,
-- and only forward; `approvals audit verify --db` compares the log with it by default.
CREATE TABLE approval_audit_witness (
    id         SMALLINT    NOT NULL PRIMARY KEY CHECK (id = 1),
    size       BIGINT      NOT NULL CHECK (size >= 0),
    note       TEXT        NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE FUNCTION approval_audit_witness_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.size >= OLD.size THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'approval_audit_witness only moves forward';
END;
$$;

CREATE TRIGGER approval_audit_witness_forward BEFORE UPDATE OR DELETE ON approval_audit_witness
    FOR EACH ROW EXECUTE FUNCTION approval_audit_witness_forward();

CREATE TRIGGER approval_audit_witness_no_truncate BEFORE TRUNCATE ON approval_audit_witness
    FOR EACH STATEMENT EXECUTE FUNCTION approval_audit_witness_forward();

-- A log written before this migration: its last checkpoint becomes the witness.
INSERT INTO approval_audit_witness (id, size, note, updated_at)
SELECT 1,
       (SELECT COUNT(*) FROM approval_audit_log e
         WHERE e.seq IS NOT NULL AND e.line_no < c.line_no),
       (c.line::jsonb) ->> 'checkpoint',
       c.at
  FROM approval_audit_log c
 WHERE c.seq IS NULL
 ORDER BY c.line_no DESC
 LIMIT 1;
