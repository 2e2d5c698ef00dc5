//! Group commit. Callers queue requests on a bounded channel (a full queue makes them wait:
//! backpressure); one writer thread takes as many as fit in a batch, loads what they refer to,
//! judges them in memory, commits everything in one storage transaction (one fsync), and only
//! then answers each caller. A failed commit fails every request of the batch and leaves
//! nothing written; the writer forgets its cache so the next batch starts from storage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kinko_core::{Clock, ErrorCode, ErrorKind};
use tokio::sync::{mpsc, oneshot};

use crate::state_machine::{BatchInput, BatchRun, Reply, Request, batch_keys};
use crate::store::{LedgerReader, LedgerStore, StoreError};
use crate::types::{
    Account, AccountId, CreateAccountResult, CreateTransferResult, NewAccount, TransferRequest,
};

/// Bounds of the writer. Out-of-bound values are refused at start.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Requests waiting for the writer; more make callers wait.
    pub queue_requests_max: usize,
    /// Events in one request (a request is one caller's list of events).
    pub request_events_max: usize,
    /// Events committed in one storage transaction.
    pub batch_events_max: usize,
    /// Accounts kept in memory between batches; past this the cache starts afresh.
    pub accounts_cached_max: usize,
    /// Expired pending transfers released per batch.
    pub expiries_per_batch_max: usize,
}

impl WriterConfig {
    pub const DEFAULT: WriterConfig = WriterConfig {
        queue_requests_max: 4_096,
        request_events_max: 8_190,
        batch_events_max: 32_760,
        accounts_cached_max: 2_000_000,
        expiries_per_batch_max: 1_000,
    };

    fn validate(&self) -> Result<(), LedgerError> {
        let in_range = (1..=1_000_000).contains(&self.queue_requests_max)
            && (1..=1_000_000).contains(&self.request_events_max)
            && (self.request_events_max..=10_000_000).contains(&self.batch_events_max)
            && (1..=100_000_000).contains(&self.accounts_cached_max)
            && (1..=1_000_000).contains(&self.expiries_per_batch_max);
        if in_range {
            Ok(())
        } else {
            Err(LedgerError::InvalidConfig)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("a request may hold at most {max} events")]
    RequestTooLarge { max: usize },
    #[error("the ledger could not commit the batch; nothing of it was written")]
    Storage,
    #[error("the ledger writer has stopped")]
    Stopped,
    #[error("the ledger writer's bounds are out of range")]
    InvalidConfig,
}

impl ErrorCode for LedgerError {
    fn code(&self) -> &'static str {
        match self {
            LedgerError::RequestTooLarge { .. } => "LEDGER_REQUEST_TOO_LARGE",
            LedgerError::Storage => "LEDGER_STORAGE_FAILED",
            LedgerError::Stopped => "LEDGER_STOPPED",
            LedgerError::InvalidConfig => "LEDGER_INVALID_CONFIG",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            LedgerError::RequestTooLarge { .. } => ErrorKind::InvalidInput,
            LedgerError::Storage | LedgerError::Stopped => ErrorKind::Unavailable,
            LedgerError::InvalidConfig => ErrorKind::Internal,
        }
    }
}

/// Where the writer's time goes, cumulative since start; read by `kinko bench ledger`.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub events: AtomicU64,
    /// Beginning the transaction and loading accounts, transfers and pending states.
    pub load_ns: AtomicU64,
    /// Judging the batch in memory.
    pub judge_ns: AtomicU64,
    /// Writing rows and committing (including the fsync).
    pub commit_ns: AtomicU64,
}

/// A copy of [`WriterStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStatsSnapshot {
    pub batches: u64,
    pub events: u64,
    pub load_ns: u64,
    pub judge_ns: u64,
    pub commit_ns: u64,
}

impl WriterStats {
    pub fn snapshot(&self) -> WriterStatsSnapshot {
        WriterStatsSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            load_ns: self.load_ns.load(Ordering::Relaxed),
            judge_ns: self.judge_ns.load(Ordering::Relaxed),
            commit_ns: self.commit_ns.load(Ordering::Relaxed),
        }
    }
}

fn add_elapsed(counter: &AtomicU64, since: Instant) {
    let elapsed_ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(elapsed_ns, Ordering::Relaxed);
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Reply, LedgerError>>,
}

/// The handle every part of Kinko uses to reach the ledger. Cheap to share behind an `Arc`.
pub struct Ledger {
    sender: mpsc::Sender<Job>,
    reader: Arc<dyn LedgerReader>,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Starts the writer thread over `store`.
    pub fn start(
        store: Box<dyn LedgerStore>,
        reader: Arc<dyn LedgerReader>,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
    ) -> Result<Self, LedgerError> {
        config.validate()?;
        let (sender, receiver) = mpsc::channel(config.queue_requests_max);
        let stats = Arc::new(WriterStats::default());
        let writer_stats = Arc::clone(&stats);
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || Writer::new(store, clock, config, writer_stats).run(receiver))
            .map_err(|_| LedgerError::Stopped)?;
        Ok(Self {
            sender,
            reader,
            config,
            stats,
            writer: Mutex::new(Some(writer)),
        })
    }

    pub fn stats(&self) -> WriterStatsSnapshot {
        self.stats.snapshot()
    }

    /// False once the writer thread has ended (it stops only on shutdown or a panic).
    pub fn is_running(&self) -> bool {
        !self.sender.is_closed()
    }

    pub fn reader(&self) -> &Arc<dyn LedgerReader> {
        &self.reader
    }

    pub async fn create_accounts(
        &self,
        events: Vec<NewAccount>,
    ) -> Result<Vec<CreateAccountResult>, LedgerError> {
        match self.submit(Request::CreateAccounts(events)).await? {
            Reply::Accounts(results) => Ok(results),
            Reply::Transfers(_) => Err(LedgerError::Stopped),
        }
    }

    pub async fn create_transfers(
        &self,
        events: Vec<TransferRequest>,
    ) -> Result<Vec<CreateTransferResult>, LedgerError> {
        match self.submit(Request::CreateTransfers(events)).await? {
            Reply::Transfers(results) => Ok(results),
            Reply::Accounts(_) => Err(LedgerError::Stopped),
        }
    }

    /// For callers outside an async runtime (benchmarks, the crash test's child process).
    pub fn create_accounts_blocking(
        &self,
        events: Vec<NewAccount>,
    ) -> Result<Vec<CreateAccountResult>, LedgerError> {
        match self.submit_blocking(Request::CreateAccounts(events))? {
            Reply::Accounts(results) => Ok(results),
            Reply::Transfers(_) => Err(LedgerError::Stopped),
        }
    }

    pub fn create_transfers_blocking(
        &self,
        events: Vec<TransferRequest>,
    ) -> Result<Vec<CreateTransferResult>, LedgerError> {
        match self.submit_blocking(Request::CreateTransfers(events))? {
            Reply::Transfers(results) => Ok(results),
            Reply::Accounts(_) => Err(LedgerError::Stopped),
        }
    }

    async fn submit(&self, request: Request) -> Result<Reply, LedgerError> {
        self.check_size(&request)?;
        let (reply, receiver) = oneshot::channel();
        self.sender
            .send(Job { request, reply })
            .await
            .map_err(|_| LedgerError::Stopped)?;
        receiver.await.map_err(|_| LedgerError::Stopped)?
    }

    fn submit_blocking(&self, request: Request) -> Result<Reply, LedgerError> {
        self.check_size(&request)?;
        let (reply, receiver) = oneshot::channel();
        self.sender
            .blocking_send(Job { request, reply })
            .map_err(|_| LedgerError::Stopped)?;
        receiver.blocking_recv().map_err(|_| LedgerError::Stopped)?
    }

    fn check_size(&self, request: &Request) -> Result<(), LedgerError> {
        if request.len() > self.config.request_events_max {
            Err(LedgerError::RequestTooLarge {
                max: self.config.request_events_max,
            })
        } else {
            Ok(())
        }
    }

    /// Stops taking requests, lets the writer finish what is queued, and waits for it.
    pub fn shutdown(self) {
        let Ledger { sender, writer, .. } = self;
        drop(sender);
        let handle = match writer.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("ledger writer thread panicked");
        }
    }
}

struct Writer {
    store: Box<dyn LedgerStore>,
    clock: Arc<dyn Clock>,
    config: WriterConfig,
    stats: Arc<WriterStats>,
    accounts: HashMap<AccountId, Account>,
    /// The batch sequence this writer committed last; `None` forces a reload.
    sequence_committed: Option<u64>,
}

impl Writer {
    fn new(
        store: Box<dyn LedgerStore>,
        clock: Arc<dyn Clock>,
        config: WriterConfig,
        stats: Arc<WriterStats>,
    ) -> Self {
        Self {
            store,
            clock,
            config,
            stats,
            accounts: HashMap::new(),
            sequence_committed: None,
        }
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Job>) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match receiver.blocking_recv() {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut events = first.request.len();
            let mut jobs = vec![first];
            while events < self.config.batch_events_max {
                match receiver.try_recv() {
                    Ok(job) if events + job.request.len() > self.config.batch_events_max => {
                        carried = Some(job);
                        break;
                    }
                    Ok(job) => {
                        events += job.request.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            let requests: Vec<&Request> = jobs.iter().map(|job| &job.request).collect();
            let started = Instant::now();
            let outcome = self.commit(&requests);
            drop(requests);
            metrics::histogram!("kinko_ledger_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("kinko_ledger_batch_events").record(events as f64);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .events
                .fetch_add(u64::try_from(events).unwrap_or(u64::MAX), Ordering::Relaxed);
            let outcome_label = if outcome.is_ok() {
                "committed"
            } else {
                "failed"
            };
            metrics::counter!("kinko_ledger_batches_total", "outcome" => outcome_label)
                .increment(1);
            match outcome {
                Ok(replies) => {
                    for (job, reply) in jobs.into_iter().zip(replies) {
                        // A caller that went away no longer needs its answer.
                        drop(job.reply.send(Ok(reply)));
                    }
                }
                Err(error) => {
                    tracing::error!(error = %error, "ledger batch failed; nothing written");
                    for job in jobs {
                        drop(job.reply.send(Err(LedgerError::Storage)));
                    }
                }
            }
        }
    }

    fn commit(&mut self, requests: &[&Request]) -> Result<Vec<Reply>, StoreError> {
        let load_started = Instant::now();
        let start = match self.store.begin_batch() {
            Ok(start) => start,
            Err(error) => {
                self.forget();
                self.store.rollback_batch();
                return Err(error);
            }
        };
        match self.judge_and_write(
            requests,
            start.sequence_before,
            start.timestamp_last,
            load_started,
        ) {
            Ok(replies) => {
                self.sequence_committed = Some(start.sequence_before.saturating_add(1));
                Ok(replies)
            }
            Err(error) => {
                self.forget();
                self.store.rollback_batch();
                Err(error)
            }
        }
    }

    fn forget(&mut self) {
        self.accounts.clear();
        self.sequence_committed = None;
    }

    fn judge_and_write(
        &mut self,
        requests: &[&Request],
        sequence_before: u64,
        timestamp_last: u64,
        load_started: Instant,
    ) -> Result<Vec<Reply>, StoreError> {
        // Another writer committed since our last batch: our balances may be stale.
        if self.sequence_committed != Some(sequence_before)
            || self.accounts.len() > self.config.accounts_cached_max
        {
            self.accounts.clear();
        }
        let keys = batch_keys(requests);
        let timestamp_start = self.clock.now_ns().max(timestamp_last.saturating_add(1));

        let mut input = BatchInput::default();
        self.store.load_expired_pending(
            timestamp_start,
            self.config.expiries_per_batch_max,
            &mut input.expired,
        )?;
        self.store
            .load_transfers(&keys.pending_ids, &mut input.transfers)?;
        let mut state_ids = keys.pending_ids.clone();
        state_ids.extend(input.expired.iter().map(|transfer| transfer.id));
        self.store
            .load_pending_states(&state_ids, &mut input.pending_states)?;

        let mut account_ids = keys.account_ids;
        for transfer in input.transfers.iter().chain(&input.expired) {
            account_ids.push(transfer.debit_account_id);
            account_ids.push(transfer.credit_account_id);
        }
        account_ids.sort_unstable();
        account_ids.dedup();
        account_ids.retain(|id| !self.accounts.contains_key(id));
        let mut loaded = Vec::with_capacity(account_ids.len());
        self.store.load_accounts(&account_ids, &mut loaded)?;
        self.accounts
            .extend(loaded.into_iter().map(|account| (account.id, account)));

        self.store
            .load_transfers(&keys.transfer_ids, &mut input.transfers)?;
        self.store
            .load_failed_transfers(&keys.transfer_ids, &mut input.failed)?;

        add_elapsed(&self.stats.load_ns, load_started);

        let judge_started = Instant::now();
        let (replies, writes) =
            BatchRun::new(&mut self.accounts, input, timestamp_start).execute(requests);
        add_elapsed(&self.stats.judge_ns, judge_started);

        let commit_started = Instant::now();
        self.store.commit_batch(&writes)?;
        add_elapsed(&self.stats.commit_ns, commit_started);
        Ok(replies)
    }
}
