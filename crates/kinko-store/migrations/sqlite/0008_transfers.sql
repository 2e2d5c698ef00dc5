-- Person-to-person transfers by handle (issue 5).

-- A wallet's public handle: what another user types to send it money.
CREATE TABLE money_handles (
    user_id BLOB PRIMARY KEY NOT NULL REFERENCES identity_users (id),
    handle TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX money_handles_handle ON money_handles (handle);
-- One row per transfer, written before the ledger is asked; its id is the ledger transfer id.
CREATE TABLE money_transfers (
    id BLOB PRIMARY KEY NOT NULL,
    from_user BLOB NOT NULL REFERENCES identity_users (id),
    to_user BLOB NOT NULL REFERENCES identity_users (id),
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    note TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX money_transfers_key ON money_transfers (from_user, idempotency_key);
CREATE INDEX money_transfers_status ON money_transfers (status, created_at);
