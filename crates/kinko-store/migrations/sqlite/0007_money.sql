-- Money movement (issue 5): charges from linked bank accounts, and the movements a wallet's
-- owner sees in their history. The ledger holds the money; these hold what it was for.

-- One row per charge, created (and its limits counted) before the ledger or the bank is
-- touched; its id is the ledger transfer id and the bank's Idempotency-Key.
CREATE TABLE money_charges (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    link_id BLOB NOT NULL,
    bank_code TEXT NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected', 'voided')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX money_charges_key ON money_charges (user_id, idempotency_key);
CREATE INDEX money_charges_user ON money_charges (user_id, created_at);
CREATE INDEX money_charges_link ON money_charges (link_id, created_at);
CREATE INDEX money_charges_status ON money_charges (status, created_at);
-- What the owner sees: one row per movement, kept in step with its source.
CREATE TABLE money_movements (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    kind TEXT NOT NULL CHECK (kind IN ('charge', 'withdrawal', 'payment', 'refund', 'transfer_in', 'transfer_out')),
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    status TEXT NOT NULL,
    counterparty TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX money_movements_user ON money_movements (user_id, created_at, id);
