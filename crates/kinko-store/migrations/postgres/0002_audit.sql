-- The audit log: append-only and hash-chained. Each entry's hash covers its own fields and the
-- previous entry's hash, so a modified, inserted or deleted entry breaks the chain from there
-- on (`kinko audit verify`). audit_head names the newest entry: deleting the tail shows too.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    at_ms BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    previous_hash BYTEA NOT NULL CHECK (length(previous_hash) = 32),
    hash BYTEA NOT NULL CHECK (length(hash) = 32)
);
CREATE TABLE audit_head (
    singleton BIGINT PRIMARY KEY CHECK (singleton = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (singleton, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
-- Append-only: the database itself refuses updates and deletes.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
