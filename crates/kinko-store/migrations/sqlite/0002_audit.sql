-- The audit log: append-only and hash-chained. Each entry's hash covers its own fields and the
-- previous entry's hash, so a modified, inserted or deleted entry breaks the chain from there
-- on (`kinko audit verify`). audit_head names the newest entry: deleting the tail shows too.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    at_ms INTEGER NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    previous_hash BLOB NOT NULL CHECK (length(previous_hash) = 32),
    hash BLOB NOT NULL CHECK (length(hash) = 32)
);
CREATE TABLE audit_head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
-- The head before the first entry: sequence 0 and an all-zero hash.
INSERT INTO audit_head (singleton, seq, hash) VALUES (1, 0, zeroblob(32));
-- Append-only: the database itself refuses updates and deletes.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
