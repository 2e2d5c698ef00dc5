-- Disputes, holds and refunds to victims (issue 12 items 2 and 3).

-- A dispute: a wallet owner's "I didn't do this" on a movement of their history, or a bank's
-- fraud report contained for a holder who may never have used Kinko. Each has one case.
CREATE TABLE money_disputes (
    id UUID PRIMARY KEY NOT NULL,
    case_id UUID NOT NULL REFERENCES cases (id),
    -- The wallet whose movement is disputed, or the wallet that charged the reported account.
    user_id UUID NOT NULL REFERENCES identity_users (id),
    origin TEXT NOT NULL CHECK (origin IN ('user', 'bank_report')),
    -- The disputed movement (origin 'user').
    movement_id UUID,
    -- The bank's alert contained (origin 'bank_report').
    alert_id UUID,
    -- The charge whose debit is to be made good, when the money came from a bank account.
    charge_id UUID,
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    created_at BIGINT NOT NULL
);
-- Disputing the same movement twice, or containing one report twice, finds the first.
CREATE UNIQUE INDEX money_disputes_movement ON money_disputes (user_id, movement_id);
CREATE UNIQUE INDEX money_disputes_alert ON money_disputes (alert_id);

-- What a wallet still held of disputed money, held for a case: a pending ledger transfer
-- wallet -> the case's holds account whose id is the hold's id. Released = voided; returned =
-- posted (the money is then in the case's holds account, for the victim's refund).
CREATE TABLE money_holds (
    id UUID PRIMARY KEY NOT NULL,
    case_id UUID NOT NULL REFERENCES cases (id),
    user_id UUID NOT NULL REFERENCES identity_users (id),
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    -- P2P hops from the disputed wallet (0 = that wallet itself).
    depth BIGINT NOT NULL CHECK (depth >= 0),
    status TEXT NOT NULL CHECK (status IN ('pending', 'held', 'not_held', 'released', 'returned')),
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX money_holds_case_user ON money_holds (case_id, user_id);
CREATE INDEX money_holds_status ON money_holds (status, created_at);

-- A refund to the victim's bank account (the account a charge debited), from the case's
-- recovered funds first, then from the compensation account; two-phase against the bank.
CREATE TABLE money_victim_refunds (
    id UUID PRIMARY KEY NOT NULL,
    case_id UUID NOT NULL REFERENCES cases (id),
    charge_id UUID NOT NULL,
    bank_code TEXT NOT NULL,
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    -- Set once, when the money starts to move: what the recovered funds pay, and the rest.
    from_holds_yen BIGINT CHECK (from_holds_yen IS NULL OR from_holds_yen >= 0),
    from_compensation_yen BIGINT CHECK (from_compensation_yen IS NULL OR from_compensation_yen >= 0),
    status TEXT NOT NULL CHECK (status IN ('awaiting_approval', 'approved', 'pending', 'posted', 'rejected', 'voided')),
    failure TEXT,
    reason TEXT NOT NULL,
    proposed_by UUID NOT NULL,
    decided_by UUID,
    decided_at BIGINT,
    decision_reason TEXT,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    bank_not_after BIGINT,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT,
    CHECK (decided_by IS NULL OR decided_by <> proposed_by),
    CHECK (from_holds_yen IS NULL OR from_holds_yen + from_compensation_yen = amount_yen)
);
CREATE UNIQUE INDEX money_victim_refunds_key ON money_victim_refunds (proposed_by, idempotency_key);
-- One refund of a case in flight at a time: the recovered funds are split once.
CREATE UNIQUE INDEX money_victim_refunds_open ON money_victim_refunds (case_id)
    WHERE status IN ('awaiting_approval', 'approved', 'pending');
CREATE INDEX money_victim_refunds_status ON money_victim_refunds (status, created_at);
