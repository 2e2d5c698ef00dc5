//! The PostgreSQL store, for production and for more than one `kinko serve` process.
//!
//! Correctness never rests on one process's memory: every batch first bumps the sequence row
//! of `ledger_meta` under a row lock, so writers in different processes take turns, and a
//! writer that finds the sequence moved by someone else drops its cached balances and reads
//! them afresh inside the locked transaction. The database's CHECK constraints enforce the
//! account flags as a second line. `synchronous_commit` is set on at connect time.

use std::collections::HashMap;
use std::sync::Mutex;

use kinko_ledger::invariants::{AccountAudit, InvariantViolation, evaluate};
use kinko_ledger::store::{HISTORY_LIMIT_MAX, HistoryCursor, HistoryPage, HistoryQuery};
use kinko_ledger::{
    Account, AccountFlags, AccountId, BatchStart, InvariantReport, LedgerReader, LedgerStore,
    PendingState, StoreError, Transfer, TransferFlags, TransferId, WriteSet,
};
use postgres::{Client, NoTls, Row};
use uuid::Uuid;

use crate::migrations;

fn fail(error: postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db_error) => StoreError::new(format!(
            "postgres: {} ({})",
            db_error.message(),
            db_error.code().code()
        )),
        None => StoreError::new(format!("postgres: {error}")),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::new(format!("postgres: stored {what} is out of range"))
}

/// Connects with the settings every Kinko connection must have.
pub fn connect(url: &str) -> Result<Client, StoreError> {
    let mut client = Client::connect(url, NoTls).map_err(fail)?;
    // Durability is written here, not left to the server's defaults.
    client
        .batch_execute(
            "SET synchronous_commit = on;
             SET statement_timeout = '60s';
             SET lock_timeout = '30s';",
        )
        .map_err(fail)?;
    Ok(client)
}

pub fn migrate(url: &str) -> Result<Vec<&'static str>, StoreError> {
    let mut client = connect(url)?;
    let mut transaction = client.transaction().map_err(fail)?;
    // Two processes starting at once: the second waits here, then finds nothing to do.
    transaction
        .batch_execute(
            "SELECT pg_advisory_xact_lock(4695313);
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version TEXT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );",
        )
        .map_err(fail)?;
    let mut applied = Vec::new();
    for (version, sql) in migrations::POSTGRES {
        let done = transaction
            .query_opt(
                "SELECT version FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .map_err(fail)?;
        if done.is_none() {
            transaction.batch_execute(sql).map_err(fail)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .map_err(fail)?;
            applied.push(*version);
        }
    }
    transaction.commit().map_err(fail)?;
    Ok(applied)
}

fn uuid_of(raw: u128) -> Uuid {
    Uuid::from_u128(raw)
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::new("value exceeds the store's range"))
}

fn to_i32(value: u32) -> Result<i32, StoreError> {
    i32::try_from(value).map_err(|_| StoreError::new("value exceeds the store's range"))
}

fn get_u64(row: &Row, index: usize) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(index).map_err(fail)?;
    u64::try_from(value).map_err(|_| corrupt("amount"))
}

fn get_u32(row: &Row, index: usize) -> Result<u32, StoreError> {
    let value: i32 = row.try_get(index).map_err(fail)?;
    u32::try_from(value).map_err(|_| corrupt("number"))
}

fn get_u16(row: &Row, index: usize) -> Result<u16, StoreError> {
    let value: i32 = row.try_get(index).map_err(fail)?;
    u16::try_from(value).map_err(|_| corrupt("code"))
}

fn get_account_id(row: &Row, index: usize) -> Result<AccountId, StoreError> {
    let id: Uuid = row.try_get(index).map_err(fail)?;
    AccountId::from_u128(id.as_u128()).map_err(|_| corrupt("account id"))
}

fn get_transfer_id(row: &Row, index: usize) -> Result<TransferId, StoreError> {
    let id: Uuid = row.try_get(index).map_err(fail)?;
    TransferId::from_u128(id.as_u128()).map_err(|_| corrupt("transfer id"))
}

const ACCOUNT_COLUMNS: &str = "id, ledger, code, flags, debits_pending, debits_posted, \
     credits_pending, credits_posted, timestamp, transfer_last";

fn get_optional_transfer_id(row: &Row, index: usize) -> Result<Option<TransferId>, StoreError> {
    let id: Option<Uuid> = row.try_get(index).map_err(fail)?;
    id.map(|id| TransferId::from_u128(id.as_u128()).map_err(|_| corrupt("transfer id")))
        .transpose()
}

fn account_from_row(row: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        id: get_account_id(row, 0)?,
        ledger: get_u32(row, 1)?,
        code: get_u16(row, 2)?,
        flags: AccountFlags::from_bits(get_u16(row, 3)?),
        debits_pending: get_u64(row, 4)?,
        debits_posted: get_u64(row, 5)?,
        credits_pending: get_u64(row, 6)?,
        credits_posted: get_u64(row, 7)?,
        timestamp: get_u64(row, 8)?,
        transfer_last: get_optional_transfer_id(row, 9)?,
    })
}

const TRANSFER_COLUMNS: &str = "id, debit_account_id, credit_account_id, amount, pending_id, \
     ledger, code, flags, timeout_s, timestamp";

fn transfer_from_row(row: &Row) -> Result<Transfer, StoreError> {
    let timeout_s: i64 = row.try_get(8).map_err(fail)?;
    Ok(Transfer {
        id: get_transfer_id(row, 0)?,
        debit_account_id: get_account_id(row, 1)?,
        credit_account_id: get_account_id(row, 2)?,
        amount: get_u64(row, 3)?,
        pending_id: get_optional_transfer_id(row, 4)?,
        ledger: get_u32(row, 5)?,
        code: get_u16(row, 6)?,
        flags: TransferFlags::from_bits(get_u16(row, 7)?),
        timeout_s: u32::try_from(timeout_s).map_err(|_| corrupt("timeout"))?,
        timestamp: get_u64(row, 9)?,
    })
}

/// The ledger writer's connection. Each batch is one transaction; rows go in as arrays
/// (`UNNEST`), so a batch costs a handful of round trips whatever its size.
pub struct PostgresLedgerStore {
    client: Client,
    url: String,
}

impl PostgresLedgerStore {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: connect(url)?,
            url: url.to_owned(),
        })
    }

    fn write(&mut self, writes: &WriteSet) -> Result<(), StoreError> {
        let client = &mut self.client;
        if !writes.accounts_created.is_empty() {
            let accounts = &writes.accounts_created;
            let ids: Vec<Uuid> = accounts.iter().map(|a| uuid_of(a.id.as_u128())).collect();
            let ledgers = accounts
                .iter()
                .map(|a| to_i32(a.ledger))
                .collect::<Result<Vec<i32>, _>>()?;
            let codes: Vec<i32> = accounts.iter().map(|a| i32::from(a.code)).collect();
            let flags: Vec<i32> = accounts.iter().map(|a| i32::from(a.flags.bits())).collect();
            let balances = balance_columns(accounts)?;
            let timestamps = accounts
                .iter()
                .map(|a| to_i64(a.timestamp))
                .collect::<Result<Vec<i64>, _>>()?;
            let heads = history_heads(accounts);
            client
                .execute(
                    "INSERT INTO ledger_accounts (id, ledger, code, flags, debits_pending,
                        debits_posted, credits_pending, credits_posted, timestamp, transfer_last)
                     SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::int[],
                        $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                        $10::uuid[])",
                    &[
                        &ids,
                        &ledgers,
                        &codes,
                        &flags,
                        &balances[0],
                        &balances[1],
                        &balances[2],
                        &balances[3],
                        &timestamps,
                        &heads,
                    ],
                )
                .map_err(fail)?;
        }
        if !writes.transfers_created.is_empty() {
            let transfers = &writes.transfers_created;
            let ids: Vec<Uuid> = transfers.iter().map(|t| uuid_of(t.id.as_u128())).collect();
            let debits: Vec<Uuid> = transfers
                .iter()
                .map(|t| uuid_of(t.debit_account_id.as_u128()))
                .collect();
            let credits: Vec<Uuid> = transfers
                .iter()
                .map(|t| uuid_of(t.credit_account_id.as_u128()))
                .collect();
            let amounts = transfers
                .iter()
                .map(|t| to_i64(t.amount))
                .collect::<Result<Vec<i64>, _>>()?;
            let pending_ids: Vec<Option<Uuid>> = transfers
                .iter()
                .map(|t| t.pending_id.map(|id| uuid_of(id.as_u128())))
                .collect();
            let ledgers = transfers
                .iter()
                .map(|t| to_i32(t.ledger))
                .collect::<Result<Vec<i32>, _>>()?;
            let codes: Vec<i32> = transfers.iter().map(|t| i32::from(t.code)).collect();
            let flags: Vec<i32> = transfers
                .iter()
                .map(|t| i32::from(t.flags.bits()))
                .collect();
            let timeouts: Vec<i64> = transfers.iter().map(|t| i64::from(t.timeout_s)).collect();
            let timestamps = transfers
                .iter()
                .map(|t| to_i64(t.timestamp))
                .collect::<Result<Vec<i64>, _>>()?;
            client
                .execute(
                    "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id,
                        amount, pending_id, ledger, code, flags, timeout_s, timestamp)
                     SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[],
                        $5::uuid[], $6::int[], $7::int[], $8::int[], $9::bigint[], $10::bigint[])",
                    &[
                        &ids,
                        &debits,
                        &credits,
                        &amounts,
                        &pending_ids,
                        &ledgers,
                        &codes,
                        &flags,
                        &timeouts,
                        &timestamps,
                    ],
                )
                .map_err(fail)?;
        }
        if !writes.accounts_updated.is_empty() {
            let accounts = &writes.accounts_updated;
            let ids: Vec<Uuid> = accounts.iter().map(|a| uuid_of(a.id.as_u128())).collect();
            let balances = balance_columns(accounts)?;
            let heads = history_heads(accounts);
            let updated = client
                .execute(
                    "UPDATE ledger_accounts AS a SET debits_pending = u.debits_pending,
                        debits_posted = u.debits_posted, credits_pending = u.credits_pending,
                        credits_posted = u.credits_posted, transfer_last = u.transfer_last
                     FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[],
                        $5::bigint[], $6::uuid[])
                        AS u(id, debits_pending, debits_posted, credits_pending, credits_posted,
                             transfer_last)
                     WHERE a.id = u.id",
                    &[
                        &ids,
                        &balances[0],
                        &balances[1],
                        &balances[2],
                        &balances[3],
                        &heads,
                    ],
                )
                .map_err(fail)?;
            if updated != accounts.len() as u64 {
                return Err(StoreError::new(format!(
                    "postgres: updated {updated} of {} accounts",
                    accounts.len()
                )));
            }
        }
        if !writes.pending_inserted.is_empty() {
            let ids: Vec<Uuid> = writes
                .pending_inserted
                .iter()
                .map(|(id, _)| uuid_of(id.as_u128()))
                .collect();
            let expiries = writes
                .pending_inserted
                .iter()
                .map(|(_, expires_at)| expires_at.map(to_i64).transpose())
                .collect::<Result<Vec<Option<i64>>, _>>()?;
            client
                .execute(
                    "INSERT INTO ledger_pending (id, state, expires_at)
                     SELECT id, 1, expires_at FROM UNNEST($1::uuid[], $2::bigint[])
                        AS p(id, expires_at)",
                    &[&ids, &expiries],
                )
                .map_err(fail)?;
        }
        if !writes.pending_resolved.is_empty() {
            let ids: Vec<Uuid> = writes
                .pending_resolved
                .iter()
                .map(|(id, _)| uuid_of(id.as_u128()))
                .collect();
            let states: Vec<i16> = writes
                .pending_resolved
                .iter()
                .map(|(_, state)| state.as_i16())
                .collect();
            client
                .execute(
                    "UPDATE ledger_pending AS p SET state = u.state
                     FROM UNNEST($1::uuid[], $2::smallint[]) AS u(id, state) WHERE p.id = u.id",
                    &[&ids, &states],
                )
                .map_err(fail)?;
        }
        if !writes.transfers_failed.is_empty() {
            let ids: Vec<Uuid> = writes
                .transfers_failed
                .iter()
                .map(|(id, _)| uuid_of(id.as_u128()))
                .collect();
            let results: Vec<&str> = writes
                .transfers_failed
                .iter()
                .map(|(_, result)| result.name())
                .collect();
            client
                .execute(
                    "INSERT INTO ledger_failed_transfers (id, result, timestamp)
                     SELECT id, result, $3 FROM UNNEST($1::uuid[], $2::text[]) AS f(id, result)
                     ON CONFLICT (id) DO NOTHING",
                    &[&ids, &results, &to_i64(writes.timestamp_last)?],
                )
                .map_err(fail)?;
        }
        client
            .execute(
                "UPDATE ledger_meta SET timestamp_last = GREATEST(timestamp_last, $1)
                 WHERE singleton = 1",
                &[&to_i64(writes.timestamp_last)?],
            )
            .map_err(fail)?;
        Ok(())
    }
}

fn history_heads(accounts: &[Account]) -> Vec<Option<Uuid>> {
    accounts
        .iter()
        .map(|account| account.transfer_last.map(|id| uuid_of(id.as_u128())))
        .collect()
}

fn balance_columns(accounts: &[Account]) -> Result<[Vec<i64>; 4], StoreError> {
    let mut columns: [Vec<i64>; 4] = Default::default();
    for account in accounts {
        columns[0].push(to_i64(account.debits_pending)?);
        columns[1].push(to_i64(account.debits_posted)?);
        columns[2].push(to_i64(account.credits_pending)?);
        columns[3].push(to_i64(account.credits_posted)?);
    }
    Ok(columns)
}

impl LedgerStore for PostgresLedgerStore {
    fn begin_batch(&mut self) -> Result<BatchStart, StoreError> {
        // A restarted server or a dropped connection: reconnect rather than fail forever.
        if self.client.is_closed() {
            self.client = connect(&self.url)?;
        }
        self.client.batch_execute("BEGIN").map_err(fail)?;
        // The row lock taken here is held until commit: writers take turns.
        let row = self
            .client
            .query_one(
                "UPDATE ledger_meta SET sequence = sequence + 1 WHERE singleton = 1
                 RETURNING sequence - 1, timestamp_last",
                &[],
            )
            .map_err(fail)?;
        Ok(BatchStart {
            sequence_before: get_u64(&row, 0)?,
            timestamp_last: get_u64(&row, 1)?,
        })
    }

    fn load_accounts(
        &mut self,
        ids: &[AccountId],
        into: &mut Vec<Account>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<Uuid> = ids.iter().map(|id| uuid_of(id.as_u128())).collect();
        let rows = self
            .client
            .query(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ANY($1)"),
                &[&keys],
            )
            .map_err(fail)?;
        for row in &rows {
            into.push(account_from_row(row)?);
        }
        Ok(())
    }

    fn load_transfers(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<Transfer>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<Uuid> = ids.iter().map(|id| uuid_of(id.as_u128())).collect();
        let rows = self
            .client
            .query(
                &format!("SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ANY($1)"),
                &[&keys],
            )
            .map_err(fail)?;
        for row in &rows {
            into.push(transfer_from_row(row)?);
        }
        Ok(())
    }

    fn load_failed_transfers(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<TransferId>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<Uuid> = ids.iter().map(|id| uuid_of(id.as_u128())).collect();
        let rows = self
            .client
            .query(
                "SELECT id FROM ledger_failed_transfers WHERE id = ANY($1)",
                &[&keys],
            )
            .map_err(fail)?;
        for row in &rows {
            into.push(get_transfer_id(row, 0)?);
        }
        Ok(())
    }

    fn load_pending_states(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<(TransferId, PendingState)>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<Uuid> = ids.iter().map(|id| uuid_of(id.as_u128())).collect();
        let rows = self
            .client
            .query(
                "SELECT id, state FROM ledger_pending WHERE id = ANY($1)",
                &[&keys],
            )
            .map_err(fail)?;
        for row in &rows {
            let raw: i16 = row.try_get(1).map_err(fail)?;
            let state = PendingState::from_i16(raw).ok_or_else(|| corrupt("pending state"))?;
            into.push((get_transfer_id(row, 0)?, state));
        }
        Ok(())
    }

    fn load_expired_pending(
        &mut self,
        now_ns: u64,
        limit: usize,
        into: &mut Vec<Transfer>,
    ) -> Result<(), StoreError> {
        let rows = self
            .client
            .query(
                "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id,
                        t.ledger, t.code, t.flags, t.timeout_s, t.timestamp
                 FROM ledger_pending p JOIN ledger_transfers t ON t.id = p.id
                 WHERE p.state = 1 AND p.expires_at IS NOT NULL AND p.expires_at <= $1
                 ORDER BY p.expires_at LIMIT $2",
                &[&to_i64(now_ns)?, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .map_err(fail)?;
        for row in &rows {
            into.push(transfer_from_row(row)?);
        }
        Ok(())
    }

    fn commit_batch(&mut self, writes: &WriteSet) -> Result<(), StoreError> {
        self.write(writes)?;
        self.client.batch_execute("COMMIT").map_err(fail)
    }

    fn rollback_batch(&mut self) {
        if let Err(error) = self.client.batch_execute("ROLLBACK") {
            tracing::error!(error = %error, "postgres rollback failed");
        }
    }
}

/// Reads on their own connection.
pub struct PostgresLedgerReader {
    client: Mutex<Client>,
    url: String,
}

impl PostgresLedgerReader {
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: Mutex::new(connect(url)?),
            url: url.to_owned(),
        })
    }

    fn with<T>(
        &self,
        read: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self
            .client
            .lock()
            .map_err(|_| StoreError::new("reader connection poisoned"))?;
        if client.is_closed() {
            *client = connect(&self.url)?;
        }
        read(&mut client)
    }
}

fn sums_by(
    client: &mut impl postgres::GenericClient,
    sql: &str,
) -> Result<HashMap<u128, u64>, StoreError> {
    let rows = client.query(sql, &[]).map_err(fail)?;
    rows.iter()
        .map(|row| {
            let id: Uuid = row.try_get(0).map_err(fail)?;
            Ok((id.as_u128(), get_u64(row, 1)?))
        })
        .collect()
}

impl LedgerReader for PostgresLedgerReader {
    fn lookup_accounts(&self, ids: &[AccountId]) -> Result<Vec<Account>, StoreError> {
        let keys: Vec<Uuid> = ids.iter().map(|id| uuid_of(id.as_u128())).collect();
        self.with(|client| {
            let rows = client
                .query(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ANY($1)"),
                    &[&keys],
                )
                .map_err(fail)?;
            let mut found: HashMap<AccountId, Account> = HashMap::new();
            for row in &rows {
                let account = account_from_row(row)?;
                found.insert(account.id, account);
            }
            // Same order as asked, like the SQLite store.
            Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
        })
    }

    fn lookup_transfers(&self, ids: &[TransferId]) -> Result<Vec<Transfer>, StoreError> {
        let keys: Vec<Uuid> = ids.iter().map(|id| uuid_of(id.as_u128())).collect();
        self.with(|client| {
            let rows = client
                .query(
                    &format!("SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ANY($1)"),
                    &[&keys],
                )
                .map_err(fail)?;
            let mut found: HashMap<TransferId, Transfer> = HashMap::new();
            for row in &rows {
                let transfer = transfer_from_row(row)?;
                found.insert(transfer.id, transfer);
            }
            Ok(ids.iter().filter_map(|id| found.get(id).copied()).collect())
        })
    }

    /// Newest first from the (account, timestamp) indexes.
    fn account_history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let limit = query.limit.clamp(1, HISTORY_LIMIT_MAX);
        let upper = match query.before {
            Some(cursor) => cursor.timestamp.min(query.to_ns),
            None => query.to_ns,
        };
        let (lower, upper) = (
            to_i64(query.from_ns.min(i64::MAX as u64))?,
            to_i64(upper.min(i64::MAX as u64))?,
        );
        let account = uuid_of(query.account_id.as_u128());
        let mut transfers = self.with(|client| {
            let rows = client
                .query(
                    &format!(
                        "(SELECT {TRANSFER_COLUMNS} FROM ledger_transfers
                           WHERE debit_account_id = $1 AND timestamp >= $2 AND timestamp < $3
                           ORDER BY timestamp DESC LIMIT $4)
                         UNION ALL
                         (SELECT {TRANSFER_COLUMNS} FROM ledger_transfers
                           WHERE credit_account_id = $1 AND timestamp >= $2 AND timestamp < $3
                           ORDER BY timestamp DESC LIMIT $4)
                         ORDER BY timestamp DESC LIMIT $4"
                    ),
                    &[&account, &lower, &upper, &(i64::from(limit) + 1)],
                )
                .map_err(fail)?;
            rows.iter()
                .map(transfer_from_row)
                .collect::<Result<Vec<_>, _>>()
        })?;
        // One extra row was fetched to learn whether another page follows.
        let more = transfers.len() > limit as usize;
        transfers.truncate(limit as usize);
        Ok(HistoryPage {
            next: if more {
                transfers.last().map(|last| HistoryCursor {
                    transfer_id: last.id,
                    timestamp: last.timestamp,
                })
            } else {
                None
            },
            transfers,
        })
    }

    fn check_invariants(&self) -> Result<InvariantReport, StoreError> {
        self.with(|client| {
            // One snapshot for every query, so a concurrent batch cannot look like a breach.
            let mut transaction = client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(fail)?;
            let rows = transaction
                .query(
                    &format!("SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts"),
                    &[],
                )
                .map_err(fail)?;
            let accounts = rows
                .iter()
                .map(account_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let posted = TransferFlags::PENDING.bits() | TransferFlags::VOID_PENDING.bits();
            let debits_posted = sums_by(
                &mut transaction,
                &format!(
                    "SELECT debit_account_id, SUM(amount)::bigint FROM ledger_transfers
                     WHERE flags & {posted} = 0 GROUP BY debit_account_id"
                ),
            )?;
            let credits_posted = sums_by(
                &mut transaction,
                &format!(
                    "SELECT credit_account_id, SUM(amount)::bigint FROM ledger_transfers
                     WHERE flags & {posted} = 0 GROUP BY credit_account_id"
                ),
            )?;
            let open = "FROM ledger_transfers t JOIN ledger_pending p ON p.id = t.id
                        WHERE p.state = 1";
            let debits_open = sums_by(
                &mut transaction,
                &format!("SELECT t.debit_account_id, SUM(t.amount)::bigint {open} GROUP BY 1"),
            )?;
            let credits_open = sums_by(
                &mut transaction,
                &format!("SELECT t.credit_account_id, SUM(t.amount)::bigint {open} GROUP BY 1"),
            )?;
            let audits: Vec<AccountAudit> = accounts
                .into_iter()
                .map(|account| {
                    let key = account.id.as_u128();
                    AccountAudit {
                        account,
                        debits_posted_in_log: debits_posted.get(&key).copied().unwrap_or(0),
                        credits_posted_in_log: credits_posted.get(&key).copied().unwrap_or(0),
                        debits_pending_open: debits_open.get(&key).copied().unwrap_or(0),
                        credits_pending_open: credits_open.get(&key).copied().unwrap_or(0),
                    }
                })
                .collect();
            let mut structure = Vec::new();
            for (sql, detail) in STRUCTURE_CHECKS {
                for row in transaction.query(*sql, &[]).map_err(fail)? {
                    structure.push(InvariantViolation::Structure {
                        transfer_id: get_transfer_id(&row, 0)?,
                        detail: (*detail).to_owned(),
                    });
                }
            }
            let count = transaction
                .query_one("SELECT COUNT(*) FROM ledger_transfers", &[])
                .map_err(fail)?;
            let transfers = get_u64(&count, 0)?;
            transaction.commit().map_err(fail)?;
            Ok(evaluate(&audits, structure, transfers))
        })
    }
}

const STRUCTURE_CHECKS: &[(&str, &str)] = &[
    (
        "SELECT t.id FROM ledger_transfers t LEFT JOIN ledger_transfers p ON p.id = t.pending_id
         WHERE t.pending_id IS NOT NULL AND (p.id IS NULL OR p.flags & 2 = 0)",
        "resolves a transfer that is not a stored pending transfer",
    ),
    (
        "SELECT pending_id FROM ledger_transfers WHERE pending_id IS NOT NULL
         GROUP BY pending_id HAVING COUNT(*) > 1",
        "pending transfer resolved more than once",
    ),
    (
        "SELECT t.id FROM ledger_transfers t LEFT JOIN ledger_pending p ON p.id = t.id
         WHERE t.flags & 2 <> 0 AND p.id IS NULL",
        "pending transfer without a pending state",
    ),
    (
        "SELECT p.id FROM ledger_pending p LEFT JOIN ledger_transfers r ON r.pending_id = p.id
         WHERE (p.state = 2 AND (r.id IS NULL OR r.flags & 4 = 0))
            OR (p.state = 3 AND (r.id IS NULL OR r.flags & 8 = 0))
            OR (p.state IN (1, 4) AND r.id IS NOT NULL)",
        "pending state disagrees with the transfers that resolve it",
    ),
];

/// Test support: a fresh, empty database per test on the server at `admin_url`.
pub mod testing {
    use super::*;

    /// Creates a database with a unique name and returns its URL.
    pub fn fresh_database(admin_url: &str) -> Result<String, StoreError> {
        let mut admin = Client::connect(admin_url, NoTls).map_err(fail)?;
        let name = format!("kinko_test_{}", Uuid::now_v7().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(fail)?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .ok_or_else(|| StoreError::new("admin URL has no database path"))?;
        let (_, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
        Ok(if query.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{query}")
        })
    }

    /// Drops a database [`fresh_database`] made, ending its sessions first (PostgreSQL 13+).
    pub fn drop_database(admin_url: &str, database_url: &str) -> Result<(), StoreError> {
        let name = database_url
            .rsplit_once('/')
            .map(|(_, rest)| rest.split('?').next().unwrap_or(rest))
            .filter(|name| {
                name.starts_with("kinko_test_")
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .ok_or_else(|| StoreError::new("not a test database made by fresh_database"))?;
        let mut admin = Client::connect(admin_url, NoTls).map_err(fail)?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .map_err(fail)
    }
}
