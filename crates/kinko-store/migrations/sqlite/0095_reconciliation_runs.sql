-- Three-way reconciliation (issue 10 item 6): each run of `kinko reconcile` or of the
-- scheduled one in `kinko serve`, with what it compared and what disagreed. Operators read
-- the newest at GET /api/v1/operator/reconciliation; each mismatch also opens a case.
CREATE TABLE reconciliation_runs (
    id BLOB PRIMARY KEY NOT NULL,
    ran_at INTEGER NOT NULL,
    -- The Japan-time days judged, comma-separated YYYY-MM-DD.
    days TEXT NOT NULL,
    -- 1: against the bank's statements too; 0: rows against the ledger only.
    with_bank INTEGER NOT NULL CHECK (with_bank IN (0, 1)),
    rows_checked INTEGER NOT NULL,
    bank_entries_checked INTEGER NOT NULL,
    in_doubt INTEGER NOT NULL,
    mismatch_count INTEGER NOT NULL,
    -- JSON: mismatches per kind.
    counts TEXT NOT NULL,
    -- JSON: the first 1,000 mismatches.
    mismatches TEXT NOT NULL
);
CREATE INDEX reconciliation_runs_by_time ON reconciliation_runs (ran_at);
