//! The storage traits the ledger defines; `kinko-store` implements them for SQLite and
//! PostgreSQL. The writer owns one [`LedgerStore`]; readers share a [`LedgerReader`].

use crate::invariants::InvariantReport;
use crate::types::{
    Account, AccountId, CreateTransferResult, PendingState, Transfer, TransferId, TransferLinks,
};

/// A storage failure. The batch it happened in is rolled back whole.
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {message}")]
pub struct StoreError {
    pub message: String,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// What the store tells the writer when a batch transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStart {
    /// The batch sequence number before this batch. If it is not the one this writer committed
    /// last, another process wrote in between and every cached account must be re-read.
    pub sequence_before: u64,
    /// The last event timestamp committed by any writer; new timestamps must exceed it.
    pub timestamp_last: u64,
}

/// Everything one batch writes, committed in one storage transaction.
#[derive(Debug, Default)]
pub struct WriteSet {
    pub accounts_created: Vec<Account>,
    /// Final balances of every account the batch changed.
    pub accounts_updated: Vec<Account>,
    pub transfers_created: Vec<Transfer>,
    /// Aligned with `transfers_created`: each transfer's place in its accounts' histories.
    pub transfer_links: Vec<TransferLinks>,
    /// New pending transfers with their expiry, and state changes of existing ones.
    pub pending_inserted: Vec<(TransferId, Option<u64>)>,
    pub pending_resolved: Vec<(TransferId, PendingState)>,
    /// Ids of transfers refused for a transient reason, with that reason and the batch's
    /// time: they can never post afterwards (`id_already_failed`).
    pub transfers_failed: Vec<(TransferId, CreateTransferResult)>,
    /// The timestamp of the batch's last event.
    pub timestamp_last: u64,
}

impl WriteSet {
    pub fn is_empty(&self) -> bool {
        self.accounts_created.is_empty()
            && self.accounts_updated.is_empty()
            && self.transfers_created.is_empty()
            && self.pending_resolved.is_empty()
            && self.transfers_failed.is_empty()
    }
}

/// The writer's view of storage: one transaction per batch.
///
/// Implementations hold a lock across writers between `begin_batch` and `commit_batch` /
/// `rollback_batch` (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a row lock on the ledger's
/// sequence row), so two processes on one database never validate against the same balances.
pub trait LedgerStore: Send + 'static {
    fn begin_batch(&mut self) -> Result<BatchStart, StoreError>;
    fn load_accounts(
        &mut self,
        ids: &[AccountId],
        into: &mut Vec<Account>,
    ) -> Result<(), StoreError>;
    fn load_transfers(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<Transfer>,
    ) -> Result<(), StoreError>;
    /// Which of `ids` failed before for a transient reason (`ledger_failed_transfers`).
    fn load_failed_transfers(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<TransferId>,
    ) -> Result<(), StoreError>;
    fn load_pending_states(
        &mut self,
        ids: &[TransferId],
        into: &mut Vec<(TransferId, PendingState)>,
    ) -> Result<(), StoreError>;
    /// Open pending transfers whose expiry is at or before `now_ns`, at most `limit`.
    fn load_expired_pending(
        &mut self,
        now_ns: u64,
        limit: usize,
        into: &mut Vec<Transfer>,
    ) -> Result<(), StoreError>;
    fn commit_batch(&mut self, writes: &WriteSet) -> Result<(), StoreError>;
    fn rollback_batch(&mut self);
}

/// Where the previous page of a history stopped: its oldest transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub transfer_id: TransferId,
    pub timestamp: u64,
}

/// A page of an account's history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub transfers: Vec<Transfer>,
    /// Pass back as `before` for the next page; `None` when the range is exhausted. A page may
    /// hold fewer than `limit` transfers (even none) and still have a cursor: the store stops
    /// after scanning `HISTORY_SCAN_MAX` transfers so no request runs unbounded.
    pub next: Option<HistoryCursor>,
}

/// A time range and page of an account's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub account_id: AccountId,
    /// Inclusive lower bound, ns since the epoch.
    pub from_ns: u64,
    /// Exclusive upper bound.
    pub to_ns: u64,
    /// The cursor from the previous page: only transfers older than it.
    pub before: Option<HistoryCursor>,
    pub limit: u32,
}

pub const HISTORY_LIMIT_MAX: u32 = 1_000;
/// Transfers one history request may step over (outside the range) before it returns.
pub const HISTORY_SCAN_MAX: u32 = 100_000;

/// Reads that need no writer: balances, history, invariant checks.
pub trait LedgerReader: Send + Sync + 'static {
    fn lookup_accounts(&self, ids: &[AccountId]) -> Result<Vec<Account>, StoreError>;
    fn lookup_transfers(&self, ids: &[TransferId]) -> Result<Vec<Transfer>, StoreError>;
    fn account_history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError>;
    /// Verifies every invariant over the whole store; see [`crate::invariants`].
    fn check_invariants(&self) -> Result<InvariantReport, StoreError>;
}
