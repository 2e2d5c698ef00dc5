-- Four eyes on credits (issue 12): a credit above the solo threshold waits for a second
-- operator. SQLite cannot change a CHECK in place: the table is made again with its rows.
CREATE TABLE money_credits_new (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    operator_id BLOB NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('awaiting_approval', 'pending', 'posted', 'rejected')),
    created_at INTEGER NOT NULL,
    -- The second operator who approved or rejected it, never the proposer.
    decided_by BLOB,
    decided_at INTEGER,
    decision_reason TEXT,
    CHECK (decided_by IS NULL OR decided_by <> operator_id)
);
INSERT INTO money_credits_new (id, user_id, operator_id, amount_yen, reason, idempotency_key,
    request_hash, status, created_at)
SELECT id, user_id, operator_id, amount_yen, reason, idempotency_key, request_hash, status,
    created_at
FROM money_credits;
DROP TABLE money_credits;
ALTER TABLE money_credits_new RENAME TO money_credits;
CREATE UNIQUE INDEX money_credits_key ON money_credits (operator_id, idempotency_key);
-- What one operator credited alone in the last day (the solo threshold is a sum).
CREATE INDEX money_credits_by_operator ON money_credits (operator_id, created_at);
