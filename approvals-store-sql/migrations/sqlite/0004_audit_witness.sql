-- The audit log's witness (invariant 12): the latest signed checkpoint, kept apart from the log
-- table, so that verification notices rows cut from the end of the log together with their
-- checkpoints. One row (id 1): the checkpoint note exactly as in its checkpoint line, and its
-- tree size. The writer replaces it in the same transaction as the checkpoint row it copies,
-- and only forward; `approvals audit verify --db` compares the log with it by default.
CREATE TABLE approval_audit_witness (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    size       INTEGER NOT NULL CHECK (size >= 0),
    note       TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

CREATE TRIGGER approval_audit_witness_forward BEFORE UPDATE ON approval_audit_witness
WHEN NEW.size < OLD.size
BEGIN
    SELECT RAISE(ABORT, 'approval_audit_witness only moves forward');
END;

CREATE TRIGGER approval_audit_witness_no_delete BEFORE DELETE ON approval_audit_witness
BEGIN
    SELECT RAISE(ABORT, 'approval_audit_witness cannot be deleted');
END;

-- A log written before this migration: its last checkpoint becomes the witness.
INSERT INTO approval_audit_witness (id, size, note, updated_at)
SELECT 1,
       (SELECT COUNT(*) FROM approval_audit_log e
         WHERE e.seq IS NOT NULL AND e.line_no < c.line_no),
       json_extract(c.line, '$.checkpoint'),
       c.at
  FROM approval_audit_log c
 WHERE c.seq IS NULL
 ORDER BY c.line_no DESC
 LIMIT 1;
