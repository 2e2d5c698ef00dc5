//! Money movement (issue 5), first slice: the chart of accounts, charges from a linked bank
//! account, their reconciliation after a crash, and what a wallet's owner sees (balance and
//! history).
//!
//! A charge, in order:
//! 1. the wallet's gate (KYC L1, second factor, fresh step-up, no freeze);
//! 2. in one transaction, under the user's and the link's row locks: the `Idempotency-Key`
//!    (same key and body → the same charge; another body → `IDEMPOTENCY_KEY_REUSED`), the
//!    link (active, the user's), the bank's switch, every limit (per charge; per link per day
//!    and month at the bank's policy; per wallet per day and month; the new link's reduced
//!    daily limit and its wait before the first charge), and the charge row itself — so 50
//!    parallel charges cannot all pass a limit that only one more fits under;
//! 3. a pending ledger transfer settlement → wallet (id = the charge id);
//! 4. the bank debit with `Idempotency-Key` = the charge id;
//! 5. post on `settled`, void on `rejected`; if the bank cannot be reached the charge stays
//!    pending and the reconciler asks the bank by key later.

pub mod accounts;
pub mod bank_reconcile;
pub mod charge;
pub mod confirmations;
pub mod credits;
pub mod decisions;
pub mod disputes;
pub mod error;
pub mod history;
pub mod holds;
pub mod merchants;
pub mod notices;
pub mod payments;
pub mod reconcile;
mod risk;
pub mod service;
pub mod transfers;
pub mod victim_refunds;

pub use charge::{Charge, ChargeRequest, Direction, MoneyError, MoneyService};
