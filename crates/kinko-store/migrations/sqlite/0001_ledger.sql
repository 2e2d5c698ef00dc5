-- The ledger: accounts, immutable transfers, and the state of pending transfers.
-- Ids are 16-byte big-endian UUIDv7 blobs, so they sort by creation time.

CREATE TABLE ledger_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    -- Bumped by every batch; a writer that sees another's bump re-reads its cache.
    sequence INTEGER NOT NULL,
    timestamp_last INTEGER NOT NULL
);
INSERT INTO ledger_meta (singleton, sequence, timestamp_last) VALUES (1, 0, 0);

CREATE TABLE ledger_accounts (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    ledger INTEGER NOT NULL CHECK (ledger > 0),
    code INTEGER NOT NULL CHECK (code > 0),
    flags INTEGER NOT NULL,
    debits_pending INTEGER NOT NULL CHECK (debits_pending >= 0),
    debits_posted INTEGER NOT NULL CHECK (debits_posted >= 0),
    credits_pending INTEGER NOT NULL CHECK (credits_pending >= 0),
    credits_posted INTEGER NOT NULL CHECK (credits_posted >= 0),
    timestamp INTEGER NOT NULL,
    -- Head of the account's history (newest transfer); see ledger_transfers.
    transfer_last BLOB,
    -- The flags are enforced by the database too: a bug above cannot overdraw a wallet.
    CHECK ((flags & 2) = 0 OR debits_pending + debits_posted <= credits_posted),
    CHECK ((flags & 4) = 0 OR credits_pending + credits_posted <= debits_posted)
) WITHOUT ROWID;

-- Keyed by id only: time-ordered ids append at the end of the one B-tree. Each transfer
-- points to the previous transfer of its debit and of its credit account, so an account's
-- history is a linked list from ledger_accounts.transfer_last, newest first. Secondary
-- (account, time) indexes would cost two random B-tree inserts per transfer, which halved
-- throughput in `kinko bench ledger` (docs/ARCHITECTURE.md, "History without an index").
CREATE TABLE ledger_transfers (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    debit_account_id BLOB NOT NULL,
    credit_account_id BLOB NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    pending_id BLOB,
    ledger INTEGER NOT NULL,
    code INTEGER NOT NULL,
    flags INTEGER NOT NULL,
    timeout_s INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    debit_previous BLOB,
    credit_previous BLOB
) WITHOUT ROWID;
CREATE INDEX ledger_transfers_resolving ON ledger_transfers (pending_id) WHERE pending_id IS NOT NULL;

CREATE TABLE ledger_pending (
    id BLOB PRIMARY KEY NOT NULL,
    -- 1 pending, 2 posted, 3 voided, 4 expired.
    state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 4),
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX ledger_pending_expiry ON ledger_pending (expires_at) WHERE state = 1 AND expires_at IS NOT NULL;
