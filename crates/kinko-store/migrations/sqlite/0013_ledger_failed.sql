-- Transfer ids that failed for a reason that could pass later (exceeds_credits,
-- debit_account_not_found, …): such an id can never post afterwards (TigerBeetle's
-- id_already_failed), so a replay or a reconciler resubmitting it after a top-up is refused
-- as the first attempt was. `result` is the name of the first failure.
CREATE TABLE ledger_failed_transfers (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    result TEXT NOT NULL,
    timestamp INTEGER NOT NULL
) WITHOUT ROWID;
