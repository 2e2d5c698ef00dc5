//! A small portable SQL layer for the domain stores (identity, audit, banking, payments):
//! one SQL text, two backends. The ledger has its own tuned stores; everything else, where a
//! request touches a handful of rows, goes through here.
//!
//! Conventions every domain's SQL follows so it runs on both SQLite and PostgreSQL:
//! - placeholders are `$1`, `$2`, …; SQLite binds them by name, so order and reuse are free;
//! - integers are `BIGINT` in PostgreSQL (`INTEGER` in SQLite), booleans are integers 0/1,
//!   times are `BIGINT` milliseconds since the epoch, ids are `UUID` / 16-byte `BLOB`;
//! - row locks are spelled with [`Tx::for_update`] (empty on SQLite, whose write
//!   transactions are already exclusive: they start with `BEGIN IMMEDIATE`).

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use kinko_ledger::StoreError;

use crate::StoreLocation;

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    /// Stored as `UUID` in PostgreSQL and a 16-byte big-endian `BLOB` in SQLite.
    Uuid(u128),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Bytes(value)
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Self {
        Value::Bytes(value.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// One result row; getters fail with a `StoreError` instead of panicking on a type mismatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    values: Vec<Value>,
}

fn mismatch(index: usize, wanted: &str) -> StoreError {
    StoreError::new(format!("column {index}: expected {wanted}"))
}

impl Row {
    pub fn value(&self, index: usize) -> Result<&Value, StoreError> {
        self.values
            .get(index)
            .ok_or_else(|| StoreError::new(format!("no column {index}")))
    }

    pub fn int(&self, index: usize) -> Result<i64, StoreError> {
        match self.value(index)? {
            Value::Int(value) => Ok(*value),
            _ => Err(mismatch(index, "an integer")),
        }
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            _ => self.int(index).map(Some),
        }
    }

    pub fn bool(&self, index: usize) -> Result<bool, StoreError> {
        Ok(self.int(index)? != 0)
    }

    pub fn text(&self, index: usize) -> Result<String, StoreError> {
        match self.value(index)? {
            Value::Text(value) => Ok(value.clone()),
            _ => Err(mismatch(index, "text")),
        }
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            _ => self.text(index).map(Some),
        }
    }

    pub fn bytes(&self, index: usize) -> Result<Vec<u8>, StoreError> {
        match self.value(index)? {
            Value::Bytes(value) => Ok(value.clone()),
            _ => Err(mismatch(index, "bytes")),
        }
    }

    pub fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            _ => self.bytes(index).map(Some),
        }
    }

    pub fn uuid(&self, index: usize) -> Result<u128, StoreError> {
        match self.value(index)? {
            Value::Uuid(value) => Ok(*value),
            Value::Bytes(bytes) => <[u8; 16]>::try_from(bytes.as_slice())
                .map(u128::from_be_bytes)
                .map_err(|_| mismatch(index, "a 16-byte id")),
            _ => Err(mismatch(index, "an id")),
        }
    }

    pub fn opt_uuid(&self, index: usize) -> Result<Option<u128>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            _ => self.uuid(index).map(Some),
        }
    }
}

/// Which SQL dialect a transaction speaks, for the few places they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A transaction: everything in it commits or nothing does.
pub trait Tx {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the number of rows changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;

    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        let mut rows = self.query(sql, params)?;
        if rows.len() > 1 {
            return Err(StoreError::new("expected at most one row"));
        }
        Ok(rows.pop())
    }

    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::new("expected one row, found none"))
    }

    /// ` FOR UPDATE` on PostgreSQL, nothing on SQLite (already exclusive).
    fn for_update(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::new("connection pool poisoned")
}

/// A bounded pool: at most `size` connections; a caller waits up to `wait` for one.
struct Pool<C> {
    idle: Mutex<Vec<C>>,
    available: Condvar,
    open: Mutex<usize>,
    size: usize,
    wait: Duration,
}

impl<C> Pool<C> {
    fn new(size: usize, wait: Duration) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            available: Condvar::new(),
            open: Mutex::new(0),
            size,
            wait,
        }
    }

    /// Takes an idle connection, opens a new one within the bound, or waits.
    fn take(&self, connect: impl Fn() -> Result<C, StoreError>) -> Result<C, StoreError> {
        let mut idle = self.idle.lock().map_err(poisoned)?;
        loop {
            if let Some(connection) = idle.pop() {
                return Ok(connection);
            }
            {
                let mut open = self.open.lock().map_err(poisoned)?;
                if *open < self.size {
                    *open += 1;
                    drop(open);
                    drop(idle);
                    return connect().inspect_err(|_| self.forget_one());
                }
            }
            let (guard, timeout) = self
                .available
                .wait_timeout(idle, self.wait)
                .map_err(poisoned)?;
            idle = guard;
            if timeout.timed_out() && idle.is_empty() {
                return Err(StoreError::new("no database connection free in time"));
            }
        }
    }

    fn give_back(&self, connection: C) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(connection);
            self.available.notify_one();
        }
    }

    /// A broken connection is dropped; its slot is freed for a new one.
    fn forget_one(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = open.saturating_sub(1);
        }
        self.available.notify_one();
    }
}

/// The domain database: a pool over the store the platform runs on.
pub struct Database {
    backend: Backend,
}

enum Backend {
    Sqlite {
        pool: Pool<rusqlite::Connection>,
        data_dir: std::path::PathBuf,
        /// The group committer of covered transactions, started on first use.
        committer: std::sync::OnceLock<std::sync::mpsc::SyncSender<GroupJob>>,
    },
    Postgres {
        pool: Pool<PgConnection>,
        url: String,
    },
}

/// A pooled PostgreSQL connection with the statements it has prepared: each SQL text is parsed
/// and planned once per connection, and every later use is one round trip (bind and execute)
/// instead of two.
struct PgConnection {
    client: postgres::Client,
    statements: std::collections::HashMap<String, postgres::Statement>,
}

/// Prepared statements kept per PostgreSQL connection; the domain code has far fewer texts.
const PG_STATEMENT_CACHE: usize = 512;

impl PgConnection {
    fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self {
            client: crate::postgres::connect(url)?,
            statements: std::collections::HashMap::new(),
        })
    }
}

/// Connections per process by default: requests hold one only for a transaction's duration.
/// SQLite writes one at a time whatever the pool; PostgreSQL commits in parallel, and
/// `kinko bench api` ran best with 16 to 32 (bench/RESULTS.md).
pub const SQLITE_POOL_SIZE: usize = 8;
pub const POSTGRES_POOL_SIZE: usize = 16;
pub const POOL_WAIT_MS: u64 = 5_000;

impl Database {
    /// Opens a pool of the default size for the store, migrating first.
    pub fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        Self::open_with_pool_size(location, Self::default_pool_size(location))
    }

    /// The pool size [`Database::open`] uses for this store.
    pub fn default_pool_size(location: &StoreLocation) -> usize {
        match location {
            StoreLocation::Sqlite { .. } => SQLITE_POOL_SIZE,
            StoreLocation::Postgres { .. } => POSTGRES_POOL_SIZE,
        }
    }

    /// Opens a pool of at most `pool_size` connections (at least one), migrating first.
    pub fn open_with_pool_size(
        location: &StoreLocation,
        pool_size: usize,
    ) -> Result<Self, StoreError> {
        crate::migrate(location)?;
        let wait = Duration::from_millis(POOL_WAIT_MS);
        let pool_size = pool_size.max(1);
        let backend = match location {
            StoreLocation::Sqlite { data_dir } => Backend::Sqlite {
                pool: Pool::new(pool_size, wait),
                data_dir: data_dir.clone(),
                committer: std::sync::OnceLock::new(),
            },
            StoreLocation::Postgres { url } => Backend::Postgres {
                pool: Pool::new(pool_size, wait),
                url: url.clone(),
            },
        };
        Ok(Self { backend })
    }

    pub fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite { .. } => Dialect::Sqlite,
            Backend::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// Runs `work` in one transaction: committed if it returns `Ok`, rolled back otherwise.
    /// The commit is durable (fsynced) before this returns.
    pub fn transaction<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(Mode::Write, work)
    }

    /// Runs read-only `work` in one transaction that sees one snapshot. On SQLite it does not
    /// take the write lock (a deferred transaction in WAL mode), so reads never queue behind
    /// writers; PostgreSQL runs it `READ ONLY`. Writing inside is an error.
    pub fn read<T, E: From<StoreError>>(
        &self,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(Mode::Read, work)
    }

    /// Like [`Database::transaction`], but on SQLite the commit is shared and not fsynced by
    /// itself. `work` joins a queue; one committer thread runs whatever is queued in one
    /// transaction, each piece of work in a savepoint of its own (an `Err` rolls back only
    /// that piece), commits once and then answers every caller. The commit becomes durable
    /// with the next fsynced commit to the same database: every commit appends to the one WAL
    /// file, and an fsync covers all of it. For hot-path bookkeeping only, where a durable
    /// commit follows before anyone is answered (the ledger's), or where a lost write leaves
    /// a state the reconciler finishes. On PostgreSQL the transaction commits with
    /// `synchronous_commit = off`: the commit record is in the WAL and visible at once, and the
    /// next synchronous commit anywhere on the server (the ledger's) flushes the WAL past it.
    pub fn transaction_covered<T, E>(
        &self,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let Backend::Sqlite {
            data_dir,
            committer,
            ..
        } = &self.backend
        else {
            return self.run(Mode::WriteCovered, work);
        };
        let sender = match committer.get() {
            Some(sender) => sender,
            None => {
                let started = start_committer(data_dir.clone())?;
                committer.get_or_init(|| started)
            }
        };
        let (reply, answer) = std::sync::mpsc::sync_channel::<Result<T, E>>(1);
        let job: GroupJob = Box::new(move |tx: &mut dyn Tx| {
            let outcome = work(tx);
            let keep = outcome.is_ok();
            let finish: GroupFinish = Box::new(move |failure: Option<&StoreError>| {
                let result = match (outcome, failure) {
                    (Ok(_), Some(error)) => Err(E::from(StoreError::new(error.message.clone()))),
                    (outcome, _) => outcome,
                };
                // The caller waits for this answer; it is gone only if its thread died.
                if reply.send(result).is_err() {
                    tracing::warn!("a covered transaction's caller went away");
                }
            });
            (keep, finish)
        });
        let stopped = || {
            StoreError::new(
                "sqlite: no answer from the group committer (stopped, or the work panicked)",
            )
        };
        sender.send(job).map_err(|_| stopped())?;
        answer.recv().map_err(|_| E::from(stopped()))?
    }

    fn run<T, E: From<StoreError>>(
        &self,
        mode: Mode,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite { pool, data_dir, .. } => {
                // Writers take their turn in this process's gate before SQLite's lock.
                let _permit = match mode {
                    Mode::Write | Mode::WriteCovered => {
                        Some(crate::sqlite::write_gate(data_dir).enter()?)
                    }
                    Mode::Read => None,
                };
                let connection = pool.take(|| open_sqlite(data_dir))?;
                let mut tx = SqliteTx {
                    connection: &connection,
                };
                let begin_sql = match mode {
                    Mode::Write | Mode::WriteCovered => "BEGIN IMMEDIATE",
                    Mode::Read => "BEGIN DEFERRED",
                };
                let outcome = begin(&mut tx, begin_sql)
                    .map_err(E::from)
                    .and_then(|()| work(&mut tx));
                let finished = match &outcome {
                    Ok(_) => tx.execute("COMMIT", &[]),
                    Err(_) => tx.execute("ROLLBACK", &[]),
                };
                if connection.is_autocommit() {
                    pool.give_back(connection);
                } else {
                    pool.forget_one();
                }
                let value = outcome?;
                finished?;
                Ok(value)
            }
            Backend::Postgres { pool, url } => {
                let mut connection = pool.take(|| PgConnection::open(url))?;
                if connection.client.is_closed() {
                    connection = PgConnection::open(url)?;
                }
                let mut tx = PostgresTx {
                    connection: &mut connection,
                };
                let begin_sql = match mode {
                    Mode::Write | Mode::WriteCovered => "BEGIN",
                    Mode::Read => "BEGIN READ ONLY",
                };
                let outcome = begin(&mut tx, begin_sql)
                    .and_then(|()| match mode {
                        // Only this transaction's commit skips waiting for the WAL flush.
                        Mode::WriteCovered => begin(&mut tx, "SET LOCAL synchronous_commit = off"),
                        Mode::Write | Mode::Read => Ok(()),
                    })
                    .map_err(E::from)
                    .and_then(|()| work(&mut tx));
                let finished = match &outcome {
                    Ok(_) => tx.execute("COMMIT", &[]),
                    Err(_) => tx.execute("ROLLBACK", &[]),
                };
                if connection.client.is_closed() || finished.is_err() {
                    pool.forget_one();
                } else {
                    pool.give_back(connection);
                }
                let value = outcome?;
                finished?;
                Ok(value)
            }
        }
    }
}

/// One caller's work in a shared transaction: answers whether to keep it, and what to do
/// once the commit's fate is known (`Some(error)` if it failed).
type GroupJob = Box<dyn FnOnce(&mut dyn Tx) -> (bool, GroupFinish) + Send>;
type GroupFinish = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// At most this many callers share one commit.
const GROUP_JOBS_MAX: usize = 512;
/// Callers waiting for the committer; more wait to queue (backpressure).
const GROUP_QUEUE_MAX: usize = 4_096;

fn start_committer(
    data_dir: std::path::PathBuf,
) -> Result<std::sync::mpsc::SyncSender<GroupJob>, StoreError> {
    let connection = open_sqlite(&data_dir)?;
    // Its commits are covered by a later fsynced one (see `transaction_covered`).
    connection
        .execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(sqlite_error)?;
    let (sender, receiver) = std::sync::mpsc::sync_channel::<GroupJob>(GROUP_QUEUE_MAX);
    let gate = crate::sqlite::write_gate(&data_dir);
    std::thread::Builder::new()
        .name("sql-committer".to_owned())
        .spawn(move || {
            // Ends when the database (the last sender) is dropped.
            while let Ok(first) = receiver.recv() {
                let mut jobs = vec![first];
                while jobs.len() < GROUP_JOBS_MAX {
                    match receiver.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                commit_group(&connection, &gate, jobs);
            }
        })
        .map_err(|error| StoreError::new(format!("starting the group committer: {error}")))?;
    Ok(sender)
}

/// Runs `jobs` in one transaction, each in its own savepoint, and tells each how it ended.
fn commit_group(
    connection: &rusqlite::Connection,
    gate: &std::sync::Arc<crate::sqlite::WriteGate>,
    jobs: Vec<GroupJob>,
) {
    let mut finishers = Vec::with_capacity(jobs.len());
    let mut failure: Option<StoreError> = None;
    let mut tx = SqliteTx { connection };
    let permit = match gate.enter() {
        Ok(permit) => Some(permit),
        Err(error) => {
            failure = Some(error);
            None
        }
    };
    if failure.is_none()
        && let Err(error) = tx.execute("BEGIN IMMEDIATE", &[])
    {
        failure = Some(error);
    }
    for job in jobs {
        if failure.is_some() {
            // Not run: the whole group failed; its caller hears why.
            let refused: &mut dyn Tx = &mut FailedTx;
            let (_, finish) = job(refused);
            finishers.push(finish);
            continue;
        }
        let framed = tx.execute("SAVEPOINT job", &[]).map(|_| ());
        // A panic in one caller's work must not take the committer (and every later caller)
        // down: its savepoint is rolled back, and its caller hears that the work failed.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut tx)));
        let keep = match ran {
            Ok((keep, finish)) => {
                finishers.push(finish);
                keep
            }
            Err(_) => {
                tracing::error!("a covered transaction's work panicked; rolled back");
                false
            }
        };
        let closed = framed.and_then(|()| {
            if keep {
                tx.execute("RELEASE job", &[])
            } else {
                tx.execute("ROLLBACK TO job", &[])
                    .and_then(|_| tx.execute("RELEASE job", &[]))
            }
        });
        if let Err(error) = closed {
            failure = Some(error);
        }
    }
    if failure.is_none()
        && let Err(error) = tx.execute("COMMIT", &[])
    {
        failure = Some(error);
    }
    if failure.is_some()
        && !connection.is_autocommit()
        && let Err(error) = tx.execute("ROLLBACK", &[])
    {
        tracing::error!(error = %error, "rolling back a failed group failed");
    }
    drop(permit);
    for finish in finishers {
        finish(failure.as_ref());
    }
}

/// What a job sees when its group failed before it could run: every statement fails.
struct FailedTx;

impl Tx for FailedTx {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, _sql: &str, _params: &[Value]) -> Result<u64, StoreError> {
        Err(StoreError::new("sqlite: the shared transaction failed"))
    }

    fn query(&mut self, _sql: &str, _params: &[Value]) -> Result<Vec<Row>, StoreError> {
        Err(StoreError::new("sqlite: the shared transaction failed"))
    }
}

/// What a transaction may do, and how its commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Write,
    /// A write whose commit a later durable commit makes durable (PostgreSQL only; SQLite's
    /// covered writes go through the group committer).
    WriteCovered,
    Read,
}

fn begin(tx: &mut dyn Tx, statement: &str) -> Result<(), StoreError> {
    tx.execute(statement, &[]).map(|_| ())
}

fn open_sqlite(data_dir: &Path) -> Result<rusqlite::Connection, StoreError> {
    crate::sqlite::connect(data_dir)
}

struct SqliteTx<'c> {
    connection: &'c rusqlite::Connection,
}

fn sqlite_error(error: rusqlite::Error) -> StoreError {
    StoreError::new(format!("sqlite: {error}"))
}

impl SqliteTx<'_> {
    fn prepare(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let mut statement = self.connection.prepare_cached(sql).map_err(sqlite_error)?;
        for (position, value) in params.iter().enumerate() {
            let name = format!("${}", position + 1);
            // A parameter the SQL does not mention is a bug in the caller's SQL.
            let index = statement
                .parameter_index(&name)
                .map_err(sqlite_error)?
                .ok_or_else(|| StoreError::new(format!("SQL has no parameter {name}")))?;
            let bound = match value {
                Value::Null => statement.raw_bind_parameter(index, rusqlite::types::Null),
                Value::Int(value) => statement.raw_bind_parameter(index, value),
                Value::Text(value) => statement.raw_bind_parameter(index, value),
                Value::Bytes(value) => statement.raw_bind_parameter(index, value),
                Value::Uuid(value) => statement.raw_bind_parameter(index, value.to_be_bytes()),
            };
            bound.map_err(sqlite_error)?;
        }
        Ok(statement)
    }
}

impl Tx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        if params.is_empty() && !sql.contains('$') {
            return self
                .connection
                .execute(sql, [])
                .map(|changed| changed as u64)
                .map_err(sqlite_error);
        }
        let mut statement = self.prepare(sql, params)?;
        statement
            .raw_execute()
            .map(|changed| changed as u64)
            .map_err(sqlite_error)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        let mut statement = self.prepare(sql, params)?;
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        let mut result = Vec::new();
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(match row.get_ref(index).map_err(sqlite_error)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(value) => Value::Int(value),
                    rusqlite::types::ValueRef::Real(_) => {
                        return Err(StoreError::new("floating-point column in a domain table"));
                    }
                    rusqlite::types::ValueRef::Text(text) => Value::Text(
                        String::from_utf8(text.to_vec())
                            .map_err(|_| StoreError::new("text column is not UTF-8"))?,
                    ),
                    rusqlite::types::ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
                });
            }
            result.push(Row { values });
        }
        Ok(result)
    }
}

struct PostgresTx<'c> {
    connection: &'c mut PgConnection,
}

impl PostgresTx<'_> {
    /// The connection's prepared statement for `sql`, prepared now if it is new.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(statement) = self.connection.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .connection
            .client
            .prepare(sql)
            .map_err(postgres_error)?;
        if self.connection.statements.len() >= PG_STATEMENT_CACHE {
            // Dropping a `Statement` closes it on the server.
            self.connection.statements.clear();
        }
        self.connection
            .statements
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Keeps the server's own message (a trigger's "append-only", a constraint's name): the
/// driver's Display says only "db error".
fn postgres_error(error: postgres::Error) -> StoreError {
    match error.as_db_error() {
        Some(db_error) => StoreError::new(format!(
            "postgres: {} ({})",
            db_error.message(),
            db_error.code().code()
        )),
        None => StoreError::new(format!("postgres: {error}")),
    }
}

/// A PostgreSQL parameter: binds a `Value` whatever the column's declared type family.
#[derive(Debug)]
struct PgValue<'v>(&'v Value);

impl postgres::types::ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match self.0 {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::BOOL => (*value != 0).to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
            Value::Text(value) => value.to_sql(ty, out),
            Value::Bytes(value) => value.to_sql(ty, out),
            Value::Uuid(value) => uuid::Uuid::from_u128(*value).to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl Tx for PostgresTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let bound: Vec<PgValue<'_>> = params.iter().map(PgValue).collect();
        let references: Vec<&(dyn postgres::types::ToSql + Sync)> = bound
            .iter()
            .map(|value| value as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.connection
            .client
            .execute(&statement, &references)
            .map_err(postgres_error)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        use postgres::types::Type;
        let bound: Vec<PgValue<'_>> = params.iter().map(PgValue).collect();
        let references: Vec<&(dyn postgres::types::ToSql + Sync)> = bound
            .iter()
            .map(|value| value as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let statement = self.statement(sql)?;
        let rows = self
            .connection
            .client
            .query(&statement, &references)
            .map_err(postgres_error)?;
        let mut result = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (index, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row
                        .try_get::<_, Option<i64>>(index)
                        .map(|value| value.map_or(Value::Null, Value::Int)),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(index)
                        .map(|value| value.map_or(Value::Null, |v| Value::Int(i64::from(v)))),
                    Type::INT2 => row
                        .try_get::<_, Option<i16>>(index)
                        .map(|value| value.map_or(Value::Null, |v| Value::Int(i64::from(v)))),
                    Type::BOOL => row
                        .try_get::<_, Option<bool>>(index)
                        .map(|value| value.map_or(Value::Null, |v| Value::Int(i64::from(v)))),
                    Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                        .try_get::<_, Option<String>>(index)
                        .map(|value| value.map_or(Value::Null, Value::Text)),
                    Type::BYTEA => row
                        .try_get::<_, Option<Vec<u8>>>(index)
                        .map(|value| value.map_or(Value::Null, Value::Bytes)),
                    Type::UUID => row
                        .try_get::<_, Option<uuid::Uuid>>(index)
                        .map(|value| value.map_or(Value::Null, |v| Value::Uuid(v.as_u128()))),
                    ref other => {
                        return Err(StoreError::new(format!(
                            "column {} has unsupported type {other}",
                            column.name()
                        )));
                    }
                };
                values.push(value.map_err(postgres_error)?);
            }
            result.push(Row { values });
        }
        Ok(result)
    }
}
