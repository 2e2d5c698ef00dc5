//! The embedded SQLite store: WAL with `synchronous=FULL`, so an acknowledged batch survives
//! kill -9 and power loss. One writer connection (the ledger writer thread) and a separate
//! reader connection; WAL lets readers run while the writer commits.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use kinko_ledger::invariants::{AccountAudit, InvariantViolation, evaluate};
use kinko_ledger::store::{
    HISTORY_LIMIT_MAX, HISTORY_SCAN_MAX, HistoryCursor, HistoryPage, HistoryQuery,
};
use kinko_ledger::{
    Account, AccountFlags, AccountId, BatchStart, InvariantReport, LedgerReader, LedgerStore,
    PendingState, StoreError, Transfer, TransferFlags, TransferId, WriteSet,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::StoreLocation;
use crate::migrations;

fn fail(error: rusqlite::Error) -> StoreError {
    StoreError::new(format!("sqlite: {error}"))
}

pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join(StoreLocation::SQLITE_FILE)
}

/// Opens (creating if needed) the database in `data_dir` with the durability settings every
/// connection must have.
/// Called by SQLite while another connection holds the write lock; `true` tries again. A
/// commit holds the lock for well under a millisecond, but SQLite's own handler sleeps 1 ms
/// and more, which caps a busy database at about a thousand handoffs a second and adds
/// milliseconds to every contended request. So: short sleeps first, then 1 ms, for about
/// 10 s in all (as the former `busy_timeout`), then `SQLITE_BUSY`.
fn wait_for_lock(attempt: i32) -> bool {
    let sleep_us = match attempt {
        0..=19 => 50,
        20..=99 => 200,
        _ => 1_000,
    };
    std::thread::sleep(Duration::from_micros(sleep_us));
    attempt < 10_100
}

pub fn connect(data_dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|error| {
        StoreError::new(format!("cannot create {}: {error}", data_dir.display()))
    })?;
    let mut connection = Connection::open(database_path(data_dir)).map_err(fail)?;
    connection.busy_handler(Some(wait_for_lock)).map_err(fail)?;
    // The domain stores run a few hundred distinct statements through one pool; rusqlite's
    // default of 16 cached statements would re-parse most of them on every request.
    connection.set_prepared_statement_cache_capacity(512);
    // The query planner stability guarantee: a cached statement keeps its plan whatever values
    // are bound. Without it, a parameter compared where a partial index's WHERE has a constant
    // (`status = $2` against `WHERE status = 'active'`) makes SQLite re-prepare the statement
    // every time that parameter's value changes — a tenth of the payment path's CPU.
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(fail)?;
    // Durability is written here, not left to defaults: WAL + FULL fsyncs the WAL on commit.
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -262144;
             PRAGMA wal_autocheckpoint = 16384;",
        )
        .map_err(fail)?;
    Ok(connection)
}

pub fn migrate(data_dir: &Path) -> Result<Vec<&'static str>, StoreError> {
    let mut connection = connect(data_dir)?;
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    transaction
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version TEXT PRIMARY KEY NOT NULL,
                applied_at_ms INTEGER NOT NULL
            )",
        )
        .map_err(fail)?;
    let mut applied = Vec::new();
    for (version, sql) in migrations::SQLITE {
        let done: Option<String> = transaction
            .query_row(
                "SELECT version FROM schema_migrations WHERE version = ?1",
                [version],
                |row| row.get(0),
            )
            .optional()
            .map_err(fail)?;
        if done.is_none() {
            transaction.execute_batch(sql).map_err(fail)?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, applied_at_ms)
                     VALUES (?1, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
                    [version],
                )
                .map_err(fail)?;
            applied.push(*version);
        }
    }
    transaction.commit().map_err(fail)?;
    Ok(applied)
}

fn id_bytes(raw: u128) -> [u8; 16] {
    raw.to_be_bytes()
}

fn read_u128(row: &Row<'_>, index: usize) -> rusqlite::Result<u128> {
    let bytes: [u8; 16] = row.get(index)?;
    Ok(u128::from_be_bytes(bytes))
}

fn read_u64(row: &Row<'_>, index: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(index)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(index, value))
}

fn invalid_id(index: usize) -> rusqlite::Error {
    rusqlite::Error::IntegralValueOutOfRange(index, 0)
}

fn read_account_id(row: &Row<'_>, index: usize) -> rusqlite::Result<AccountId> {
    AccountId::from_u128(read_u128(row, index)?).map_err(|_| invalid_id(index))
}

fn read_transfer_id(row: &Row<'_>, index: usize) -> rusqlite::Result<TransferId> {
    TransferId::from_u128(read_u128(row, index)?).map_err(|_| invalid_id(index))
}

const ACCOUNT_COLUMNS: &str = "id, ledger, code, flags, debits_pending, debits_posted, \
     credits_pending, credits_posted, timestamp, transfer_last";

fn read_optional_transfer_id(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<TransferId>> {
    let bytes: Option<[u8; 16]> = row.get(index)?;
    bytes
        .map(|bytes| {
            TransferId::from_u128(u128::from_be_bytes(bytes)).map_err(|_| invalid_id(index))
        })
        .transpose()
}

fn account_from_row(row: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: read_account_id(row, 0)?,
        ledger: row.get(1)?,
        code: row.get(2)?,
        flags: AccountFlags::from_bits(row.get(3)?),
        debits_pending: read_u64(row, 4)?,
        debits_posted: read_u64(row, 5)?,
        credits_pending: read_u64(row, 6)?,
        credits_posted: read_u64(row, 7)?,
        timestamp: read_u64(row, 8)?,
        transfer_last: read_optional_transfer_id(row, 9)?,
    })
}

const TRANSFER_COLUMNS: &str = "id, debit_account_id, credit_account_id, amount, pending_id, \
     ledger, code, flags, timeout_s, timestamp";

fn transfer_from_row(row: &Row<'_>) -> rusqlite::Result<Transfer> {
    Ok(Transfer {
        id: read_transfer_id(row, 0)?,
        debit_account_id: read_account_id(row, 1)?,
        credit_account_id: read_account_id(row, 2)?,
        amount: read_u64(row, 3)?,
        pending_id: read_optional_transfer_id(row, 4)?,
        ledger: row.get(5)?,
        code: row.get(6)?,
        flags: TransferFlags::from_bits(row.get(7)?),
        timeout_s: row.get(8)?,
        timestamp: read_u64(row, 9)?,
    })
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::new("value exceeds the store's range"))
}

/// How long a writer waits for its turn before giving up (as SQLite's busy timeout would).
const WRITE_GATE_WAIT: Duration = Duration::from_secs(10);

/// One writer at a time per database in this process. SQLite allows one writer anyway; in
/// the gate, writers queue parked by the kernel and are woken in turn, instead of polling
/// SQLite's file lock through the busy handler (which cost a payment some 17 sleeps and 18
/// lock attempts under load). Other processes still meet SQLite's own lock.
pub struct WriteGate {
    busy: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

/// A turn at writing; the next writer goes when it is dropped.
pub struct WritePermit {
    gate: std::sync::Arc<WriteGate>,
}

impl Drop for WritePermit {
    fn drop(&mut self) {
        let mut busy = self
            .gate
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *busy = false;
        self.gate.freed.notify_one();
    }
}

/// The gate of the database in `data_dir` (one per directory, for the whole process).
pub fn write_gate(data_dir: &Path) -> std::sync::Arc<WriteGate> {
    static GATES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<WriteGate>>>,
    > = std::sync::OnceLock::new();
    let gates = GATES.get_or_init(Default::default);
    let mut gates = gates
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    std::sync::Arc::clone(gates.entry(data_dir.to_path_buf()).or_insert_with(|| {
        std::sync::Arc::new(WriteGate {
            busy: std::sync::Mutex::new(false),
            freed: std::sync::Condvar::new(),
        })
    }))
}

impl WriteGate {
    /// Waits for this process's turn to write (at most 10 s, then an error, never a hang).
    pub fn enter(self: &std::sync::Arc<Self>) -> Result<WritePermit, StoreError> {
        let busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut busy, timeout) = self
            .freed
            .wait_timeout_while(busy, WRITE_GATE_WAIT, |busy| *busy)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timeout.timed_out() && *busy {
            return Err(StoreError::new(
                "sqlite: waited 10 s for another writer in this process",
            ));
        }
        *busy = true;
        Ok(WritePermit {
            gate: std::sync::Arc::clone(self),
        })
    }
}

/// The ledger writer's connection.
pub struct SqliteLedgerStore {
    connection: Connection,
    gate: std::sync::Arc<WriteGate>,
    /// Held from `begin_batch` to the commit or rollback.
    permit: Option<WritePermit>,
}

impl SqliteLedgerStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            connection: connect(data_dir)?,
            gate: write_gate(data_dir),
            permit: None,
        })
    }

    fn write(&self, writes: &WriteSet) -> rusqlite::Result<()> {
        let connection = &self.connection;
        if !writes.accounts_created.is_empty() {
            let mut insert = connection.prepare_cached(
                "INSERT INTO ledger_accounts (id, ledger, code, flags, debits_pending,
                    debits_posted, credits_pending, credits_posted, timestamp, transfer_last)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for account in &writes.accounts_created {
                insert.execute(params![
                    id_bytes(account.id.as_u128()),
                    account.ledger,
                    account.code,
                    account.flags.bits(),
                    account.debits_pending as i64,
                    account.debits_posted as i64,
                    account.credits_pending as i64,
                    account.credits_posted as i64,
                    account.timestamp as i64,
                    account.transfer_last.map(|id| id_bytes(id.as_u128())),
                ])?;
            }
        }
        if !writes.transfers_created.is_empty() {
            let mut insert = connection.prepare_cached(
                "INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, amount,
                    pending_id, ledger, code, flags, timeout_s, timestamp, debit_previous,
                    credit_previous)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for (transfer, links) in writes.transfers_created.iter().zip(&writes.transfer_links) {
                insert.execute(params![
                    id_bytes(transfer.id.as_u128()),
                    id_bytes(transfer.debit_account_id.as_u128()),
                    id_bytes(transfer.credit_account_id.as_u128()),
                    transfer.amount as i64,
                    transfer.pending_id.map(|id| id_bytes(id.as_u128())),
                    transfer.ledger,
                    transfer.code,
                    transfer.flags.bits(),
                    transfer.timeout_s,
                    transfer.timestamp as i64,
                    links.debit_previous.map(|id| id_bytes(id.as_u128())),
                    links.credit_previous.map(|id| id_bytes(id.as_u128())),
                ])?;
            }
        }
        if !writes.accounts_updated.is_empty() {
            let mut update = connection.prepare_cached(
                "UPDATE ledger_accounts SET debits_pending = ?2, debits_posted = ?3,
                    credits_pending = ?4, credits_posted = ?5, transfer_last = ?6
                 WHERE id = ?1",
            )?;
            for account in &writes.accounts_updated {
                let changed = update.execute(params![
                    id_bytes(account.id.as_u128()),
                    account.debits_pending as i64,
                    account.debits_posted as i64,
                    account.credits_pending as i64,
                    account.credits_posted as i64,
                    account.transfer_last.map(|id| id_bytes(id.as_u128())),
                ])?;
                if changed != 1 {
                    return Err(rusqlite::Error::StatementChangedRows(changed));
                }
            }
        }
        if !writes.pending_inserted.is_empty() {
            let mut insert = connection.prepare_cached(
                "INSERT INTO ledger_pending (id, state, expires_at) VALUES (?1, 1, ?2)",
            )?;
            for (id, expires_at) in &writes.pending_inserted {
                insert.execute(params![
                    id_bytes(id.as_u128()),
                    expires_at.map(|value| value as i64)
                ])?;
            }
        }
        if !writes.pending_resolved.is_empty() {
            let mut update =
                connection.prepare_cached("UPDATE ledger_pending SET state = ?2 WHERE id = ?1")?;
            for (id, state) in &writes.pending_resolved {
                update.execute(params![id_bytes(id.as_u128()), state.as_i16()])?;
            }
        }
        if !writes.transfers_failed.is_empty() {
            let mut insert = connection.prepare_cached(
                "INSERT INTO ledger_failed_transfers (id, result, timestamp) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
            )?;
            for (id, result) in &writes.transfers_failed {
                insert.execute(params![
                    id_bytes(id.as_u128()),
                    result.name(),
                    writes.timestamp_last as i64
                ])?;
            }
        }
        connection
            .prepare_cached(
                "UPDATE ledger_meta SET timestamp_last = max(timestamp_last, ?1) WHERE singleton = 1",
            )?
            .execute([writes.timestamp_last as i64])?;
        Ok(())
    }
}

impl LedgerStore for SqliteLedgerStore {
    fn begin_batch(&mut self) -> Result<BatchStart, StoreError> {
        self.permit = Some(self.gate.enter()?);
        // IMMEDIATE takes the write lock now, so no other process writes until we commit.
        if let Err(error) = self.connection.execute_batch("BEGIN IMMEDIATE") {
            self.permit = None;
            return Err(fail(error));
        }
        let (sequence_before, timestamp_last): (i64, i64) = self
            .connection
            .prepare_cached(
                "UPDATE ledger_meta SET sequence = sequence + 1 WHERE singleton = 1
                 RETURNING sequence - 1, timestamp_last",
            )
            .map_err(fail)?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(fail)?;
        Ok(BatchStart {
            sequence_before: u64::try_from(sequence_before).unwrap_or(0),
            timestamp_last: u64::try_from(timestamp_last).unwrap_or(0),
        })
    }

    fn load_accounts(
        &mut self,
        ids: &[AccountId],
        into: &mut Vec<Account>,
    ) -> Result<(), StoreError> {
        let mut select = self
            .connection
            .prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ?1"
            ))
            .map_err(fail)?;
        for id in ids {
            if let Some(account) = select
                .query_row([id_bytes(id.as_u128())], account_from_row)
                .optional()
                .map_err(fail)?
            {
                into.push(account);
            }
        }
        Ok(())
    }

    fn load_transfers(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<Transfer>,
    ) -> Result<(), StoreError> {
        let mut select = self
            .connection
            .prepare_cached(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ?1"
            ))
            .map_err(fail)?;
        for id in ids {
            if let Some(transfer) = select
                .query_row([id_bytes(id.as_u128())], transfer_from_row)
                .optional()
                .map_err(fail)?
            {
                into.push(transfer);
            }
        }
        Ok(())
    }

    fn load_failed_transfers(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<TransferId>,
    ) -> Result<(), StoreError> {
        let mut select = self
            .connection
            .prepare_cached("SELECT 1 FROM ledger_failed_transfers WHERE id = ?1")
            .map_err(fail)?;
        for id in ids {
            if select.exists([id_bytes(id.as_u128())]).map_err(fail)? {
                into.push(*id);
            }
        }
        Ok(())
    }

    fn load_pending_states(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<(TransferId, PendingState)>,
    ) -> Result<(), StoreError> {
        let mut select = self
            .connection
            .prepare_cached("SELECT state FROM ledger_pending WHERE id = ?1")
            .map_err(fail)?;
        for id in ids {
            let state: Option<i16> = select
                .query_row([id_bytes(id.as_u128())], |row| row.get(0))
                .optional()
                .map_err(fail)?;
            if let Some(raw) = state {
                let state = PendingState::from_i16(raw)
                    .ok_or_else(|| StoreError::new(format!("unknown pending state {raw}")))?;
                into.push((*id, state));
            }
        }
        Ok(())
    }

    fn load_expired_pending(
        &mut self,
        now_ns: u64,
        limit: usize,
        into: &mut Vec<Transfer>,
    ) -> Result<(), StoreError> {
        let mut select = self
            .connection
            .prepare_cached(
                "SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.pending_id,
                        t.ledger, t.code, t.flags, t.timeout_s, t.timestamp
                 FROM ledger_pending p JOIN ledger_transfers t ON t.id = p.id
                 WHERE p.state = 1 AND p.expires_at IS NOT NULL AND p.expires_at <= ?1
                 ORDER BY p.expires_at LIMIT ?2",
            )
            .map_err(fail)?;
        let rows = select
            .query_map(
                params![to_i64(now_ns)?, i64::try_from(limit).unwrap_or(i64::MAX)],
                transfer_from_row,
            )
            .map_err(fail)?;
        for row in rows {
            into.push(row.map_err(fail)?);
        }
        Ok(())
    }

    fn commit_batch(&mut self, writes: &WriteSet) -> Result<(), StoreError> {
        self.write(writes).map_err(fail)?;
        let committed = self.connection.execute_batch("COMMIT").map_err(fail);
        if committed.is_ok() {
            self.permit = None;
        }
        // On failure the writer rolls back, which ends the turn.
        committed
    }

    fn rollback_batch(&mut self) {
        if !self.connection.is_autocommit()
            && let Err(error) = self.connection.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %error, "sqlite rollback failed");
        }
        self.permit = None;
    }
}

/// Reads on their own connection, so they never wait for the writer's batch.
pub struct SqliteLedgerReader {
    connection: Mutex<Connection>,
}

impl SqliteLedgerReader {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Mutex::new(connect(data_dir)?),
        })
    }

    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let connection = self
            .connection
            .lock()
            .map_err(|_| StoreError::new("reader connection poisoned"))?;
        read(&connection).map_err(fail)
    }
}

fn sums_by(
    connection: &Connection,
    sql: &str,
) -> rusqlite::Result<std::collections::HashMap<u128, u64>> {
    let mut statement = connection.prepare(sql)?;
    let rows = statement.query_map([], |row| Ok((read_u128(row, 0)?, read_u64(row, 1)?)))?;
    rows.collect()
}

impl LedgerReader for SqliteLedgerReader {
    fn lookup_accounts(&self, ids: &[AccountId]) -> Result<Vec<Account>, StoreError> {
        self.with(|connection| {
            let mut select = connection.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts WHERE id = ?1"
            ))?;
            let mut accounts = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(account) = select
                    .query_row([id_bytes(id.as_u128())], account_from_row)
                    .optional()?
                {
                    accounts.push(account);
                }
            }
            Ok(accounts)
        })
    }

    fn lookup_transfers(&self, ids: &[TransferId]) -> Result<Vec<Transfer>, StoreError> {
        self.with(|connection| {
            let mut select = connection.prepare_cached(&format!(
                "SELECT {TRANSFER_COLUMNS} FROM ledger_transfers WHERE id = ?1"
            ))?;
            let mut transfers = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(transfer) = select
                    .query_row([id_bytes(id.as_u128())], transfer_from_row)
                    .optional()?
                {
                    transfers.push(transfer);
                }
            }
            Ok(transfers)
        })
    }

    /// Walks the account's linked list from its newest transfer (or from the cursor) towards
    /// older ones; each step is one primary-key lookup.
    fn account_history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let limit = query.limit.clamp(1, HISTORY_LIMIT_MAX) as usize;
        let account = query.account_id;
        self.with(|connection| {
            let mut select = connection.prepare_cached(&format!(
                "SELECT {TRANSFER_COLUMNS}, debit_previous, credit_previous
                 FROM ledger_transfers WHERE id = ?1"
            ))?;
            // A transfer with the account's link to the one before it.
            let mut fetch = |id: TransferId| {
                select.query_row([id_bytes(id.as_u128())], |row| {
                    let transfer = transfer_from_row(row)?;
                    let previous = if transfer.debit_account_id == account {
                        read_optional_transfer_id(row, 10)?
                    } else {
                        read_optional_transfer_id(row, 11)?
                    };
                    Ok((transfer, previous))
                })
            };
            let mut next = match query.before {
                Some(cursor) => fetch(cursor.transfer_id)
                    .optional()?
                    .and_then(|(_, previous)| previous),
                None => connection
                    .prepare_cached("SELECT transfer_last FROM ledger_accounts WHERE id = ?1")?
                    .query_row([id_bytes(account.as_u128())], |row| {
                        read_optional_transfer_id(row, 0)
                    })
                    .optional()?
                    .flatten(),
            };
            let mut page = HistoryPage {
                transfers: Vec::with_capacity(limit),
                next: None,
            };
            let mut last_visited = None;
            let mut scanned = 0;
            while let Some(id) = next {
                if page.transfers.len() == limit || scanned == HISTORY_SCAN_MAX {
                    page.next = last_visited;
                    break;
                }
                let (transfer, previous) = fetch(id)?;
                scanned += 1;
                if transfer.timestamp < query.from_ns {
                    break;
                }
                if transfer.timestamp < query.to_ns {
                    page.transfers.push(transfer);
                }
                last_visited = Some(HistoryCursor {
                    transfer_id: transfer.id,
                    timestamp: transfer.timestamp,
                });
                next = previous;
            }
            Ok(page)
        })
    }

    fn check_invariants(&self) -> Result<InvariantReport, StoreError> {
        self.with(|outer| {
            // One read transaction: in WAL mode every query below sees the snapshot the first
            // one started, so a batch committed meanwhile cannot look like a breach.
            let transaction = outer.unchecked_transaction()?;
            let connection: &Connection = &transaction;
            let mut statement =
                connection.prepare(&format!("SELECT {ACCOUNT_COLUMNS} FROM ledger_accounts"))?;
            let accounts = statement
                .query_map([], account_from_row)?
                .collect::<rusqlite::Result<Vec<Account>>>()?;
            // Single-phase and post transfers move posted balances; pending and void do not.
            let posted = TransferFlags::PENDING.bits() | TransferFlags::VOID_PENDING.bits();
            let debits_posted = sums_by(
                connection,
                &format!(
                    "SELECT debit_account_id, SUM(amount) FROM ledger_transfers
                     WHERE flags & {posted} = 0 GROUP BY debit_account_id"
                ),
            )?;
            let credits_posted = sums_by(
                connection,
                &format!(
                    "SELECT credit_account_id, SUM(amount) FROM ledger_transfers
                     WHERE flags & {posted} = 0 GROUP BY credit_account_id"
                ),
            )?;
            let open = "FROM ledger_transfers t JOIN ledger_pending p ON p.id = t.id
                        WHERE p.state = 1";
            let debits_open = sums_by(
                connection,
                &format!("SELECT t.debit_account_id, SUM(t.amount) {open} GROUP BY 1"),
            )?;
            let credits_open = sums_by(
                connection,
                &format!("SELECT t.credit_account_id, SUM(t.amount) {open} GROUP BY 1"),
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
                let mut statement = connection.prepare(sql)?;
                let ids = statement
                    .query_map([], |row| read_transfer_id(row, 0))?
                    .collect::<rusqlite::Result<Vec<TransferId>>>()?;
                structure.extend(ids.into_iter().map(|transfer_id| {
                    InvariantViolation::Structure {
                        transfer_id,
                        detail: (*detail).to_owned(),
                    }
                }));
            }
            let transfers: i64 =
                connection.query_row("SELECT COUNT(*) FROM ledger_transfers", [], |row| {
                    row.get(0)
                })?;
            drop(statement);
            transaction.commit()?;
            Ok(evaluate(
                &audits,
                structure,
                u64::try_from(transfers).unwrap_or(0),
            ))
        })
    }
}

/// Queries that must return no row; shared in shape with PostgreSQL's.
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
         WHERE t.flags & 2 != 0 AND p.id IS NULL",
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
