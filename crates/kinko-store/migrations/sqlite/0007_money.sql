-- Money movement (issue 5): charges from linked bank accounts, and the movements a wallet's
-- owner sees in their history. The ledger holds the money; these hold what it was for.

-- One row per charge (bank → wallet) or withdrawal (wallet → bank), created (and a charge's
-- limits counted) before the ledger or the bank is touched; its id is the pending ledger
-- transfer's id and the bank's Idempotency-Key.
CREATE TABLE money_bank_transfers (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    link_id BLOB NOT NULL,
    bank_code TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('charge', 'withdrawal')),
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected', 'voided')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX money_bank_transfers_key ON money_bank_transfers (user_id, idempotency_key);
CREATE INDEX money_bank_transfers_user ON money_bank_transfers (user_id, created_at);
CREATE INDEX money_bank_transfers_link ON money_bank_transfers (link_id, created_at);
CREATE INDEX money_bank_transfers_status ON money_bank_transfers (status, created_at);
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
