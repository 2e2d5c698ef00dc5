-- Disputes, holds and refunds to victims (issue 12 items 2 and 3).

-- A dispute: a wallet owner's "I didn't do this" on a movement of their history, or a bank's
-- fraud report contained for a holder who may never have used Kinko. Each has one case.
CREATE TABLE money_disputes (
    id BLOB PRIMARY KEY NOT NULL,
    case_id BLOB NOT NULL REFERENCES cases (id),
    -- The wallet whose movement is disputed, or the wallet that charged the reported account.
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    origin TEXT NOT NULL CHECK (origin IN ('user', 'bank_report')),
    -- The disputed movement (origin 'user').
    movement_id BLOB,
    -- The bank's alert contained (origin 'bank_report').
    alert_id BLOB,
    -- The charge whose debit is to be made good, when the money came from a bank account.
    charge_id BLOB,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    created_at INTEGER NOT NULL
);
-- Disputing the same movement twice, or containing one report twice, finds the first.
CREATE UNIQUE INDEX money_disputes_movement ON money_disputes (user_id, movement_id);
CREATE UNIQUE INDEX money_disputes_alert ON money_disputes (alert_id);

-- What a wallet still held of disputed money, held for a case: a pending ledger transfer
-- wallet -> the case's holds account whose id is the hold's id. Released = voided; returned =
-- posted (the money is then in the case's holds account, for the victim's refund).
CREATE TABLE money_holds (
    id BLOB PRIMARY KEY NOT NULL,
    case_id BLOB NOT NULL REFERENCES cases (id),
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    -- P2P hops from the disputed wallet (0 = that wallet itself).
    depth INTEGER NOT NULL CHECK (depth >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'held', 'not_held', 'released', 'returned')),
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX money_holds_case_user ON money_holds (case_id, user_id);
CREATE INDEX money_holds_status ON money_holds (status, created_at);

-- A refund to the victim's bank account (the account a charge debited), from the case's
-- recovered funds first, then from the compensation account; two-phase against the bank.
CREATE TABLE money_victim_refunds (
    id BLOB PRIMARY KEY NOT NULL,
    case_id BLOB NOT NULL REFERENCES cases (id),
    charge_id BLOB NOT NULL,
    bank_code TEXT NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    -- Set once, when the money starts to move: what the recovered funds pay, and the rest.
    from_holds_yen INTEGER CHECK (from_holds_yen IS NULL OR from_holds_yen >= 0),
    from_compensation_yen INTEGER CHECK (from_compensation_yen IS NULL OR from_compensation_yen >= 0),
    status TEXT NOT NULL CHECK (status IN ('awaiting_approval', 'approved', 'pending', 'posted', 'rejected', 'voided')),
    failure TEXT,
    reason TEXT NOT NULL,
    proposed_by BLOB NOT NULL,
    decided_by BLOB,
    decided_at INTEGER,
    decision_reason TEXT,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    bank_not_after INTEGER,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER,
    CHECK (decided_by IS NULL OR decided_by <> proposed_by),
    CHECK (from_holds_yen IS NULL OR from_holds_yen + from_compensation_yen = amount_yen)
);
CREATE UNIQUE INDEX money_victim_refunds_key ON money_victim_refunds (proposed_by, idempotency_key);
-- One refund of a case in flight at a time: the recovered funds are split once.
CREATE UNIQUE INDEX money_victim_refunds_open ON money_victim_refunds (case_id)
    WHERE status IN ('awaiting_approval', 'approved', 'pending');
CREATE INDEX money_victim_refunds_status ON money_victim_refunds (status, created_at);
