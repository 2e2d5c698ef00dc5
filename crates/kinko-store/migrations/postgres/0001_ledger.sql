-- The ledger: accounts, immutable transfers, and the state of pending transfers.
-- Kept to SQL that PostgreSQL-compatible distributed engines accept.

CREATE TABLE ledger_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    -- Bumped by every batch under a row lock: writers in different processes take turns, and
    -- one that sees another's bump re-reads its cache.
    sequence BIGINT NOT NULL,
    timestamp_last BIGINT NOT NULL
);
INSERT INTO ledger_meta (singleton, sequence, timestamp_last) VALUES (1, 0, 0);

CREATE TABLE ledger_accounts (
    id UUID PRIMARY KEY,
    ledger INTEGER NOT NULL CHECK (ledger > 0),
    code INTEGER NOT NULL CHECK (code > 0),
    flags INTEGER NOT NULL,
    debits_pending BIGINT NOT NULL CHECK (debits_pending >= 0),
    debits_posted BIGINT NOT NULL CHECK (debits_posted >= 0),
    credits_pending BIGINT NOT NULL CHECK (credits_pending >= 0),
    credits_posted BIGINT NOT NULL CHECK (credits_posted >= 0),
    timestamp BIGINT NOT NULL,
    -- Head of the account's history (newest transfer); PostgreSQL serves history from the
    -- (account, timestamp) indexes below, but keeps the head so accounts read the same.
    transfer_last UUID,
    -- The flags are enforced by the database too: a bug above cannot overdraw a wallet.
    CHECK ((flags & 2) = 0 OR debits_pending::NUMERIC + debits_posted <= credits_posted),
    CHECK ((flags & 4) = 0 OR credits_pending::NUMERIC + credits_posted <= debits_posted)
);

CREATE TABLE ledger_transfers (
    id UUID PRIMARY KEY,
    debit_account_id UUID NOT NULL,
    credit_account_id UUID NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    pending_id UUID,
    ledger INTEGER NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    timeout_s BIGINT NOT NULL,
    timestamp BIGINT NOT NULL
);
CREATE INDEX ledger_transfers_debit_history ON ledger_transfers (debit_account_id, timestamp);
CREATE INDEX ledger_transfers_credit_history ON ledger_transfers (credit_account_id, timestamp);
CREATE INDEX ledger_transfers_resolving ON ledger_transfers (pending_id) WHERE pending_id IS NOT NULL;

CREATE TABLE ledger_pending (
    id UUID PRIMARY KEY,
    -- 1 pending, 2 posted, 3 voided, 4 expired.
    state SMALLINT NOT NULL CHECK (state BETWEEN 1 AND 4),
    expires_at BIGINT
);
CREATE INDEX ledger_pending_expiry ON ledger_pending (expires_at) WHERE state = 1 AND expires_at IS NOT NULL;
