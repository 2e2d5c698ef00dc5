//! Kinko's double-entry ledger, after TigerBeetle's model.
//!
//! - [`types`]: accounts, transfers, flags and the named result of every rejected event.
//! - [`state_machine`]: the pure rules that turn a batch of events into results and writes.
//! - [`store`]: the storage traits this crate defines and `kinko-store` implements.
//! - [`writer`]: group commit: one writer thread validates a batch in memory and commits it in
//!   one storage transaction, then answers every caller of the batch.
//! - [`invariants`]: what `kinko check` verifies.

pub mod invariants;
pub mod state_machine;
pub mod store;
pub mod types;
pub mod writer;

pub use invariants::{InvariantReport, InvariantViolation};
pub use store::{BatchStart, LedgerReader, LedgerStore, StoreError, WriteSet};
pub use types::*;
pub use writer::{Ledger, LedgerError, WriterConfig, WriterStatsSnapshot};
