//! The reconcilers: they finish what a crash, a timeout or an unreachable bank left pending.
//! Charges and withdrawals are settled by asking the bank by key with Kinko's own client
//! authentication (so an ended link does not strand them); payments, refunds and P2P
//! transfers by submitting the same ledger transfer again (the same id is the same transfer,
//! and an id that failed once never posts: `id_already_failed`).
//!
//! Every sweep walks the pending rows in (created_at, id) order a page at a time, at most
//! [`SWEEP_ROWS_MAX`] rows per run, and the next run carries on after the last row it saw:
//! however many rows stay pending, every one is reached. One row's failure is logged and
//! counted, never the end of the sweep.

use std::sync::Mutex;

use kinko_ledger::StoreError;
use kinko_store::sql::{Row, Tx, Value};
use serde::Serialize;

use crate::charge::{
    BANK_ANSWER_MARGIN_MS, BANK_ORDER_TTL_S_DEFAULT, CHARGE_COLUMNS, Direction, MoneyError,
    MoneyService, Outcome, Reserved, charge_from, internal,
};

/// Rows one page of a sweep reads.
pub const SWEEP_PAGE_ROWS: i64 = 1_000;
/// Rows one run of a sweep handles at most; the next run goes on from there.
pub const SWEEP_ROWS_MAX: usize = 10_000;

/// Where a sweep stopped: the (created_at, id) of the last row it handled.
pub(crate) type Cursor = Option<(i64, u128)>;

/// One cursor per reconciler.
#[derive(Debug, Default)]
pub struct Sweeps {
    charges: Mutex<Cursor>,
    pub(crate) payments: Mutex<Cursor>,
    pub(crate) refunds: Mutex<Cursor>,
    pub(crate) transfers: Mutex<Cursor>,
}

/// What the charge reconciler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub posted: u64,
    pub voided: u64,
    /// Still pending: the bank could not be asked (unreachable), or it has not seen the key
    /// yet while the order could still reach it (before its deadline plus
    /// [`BANK_ANSWER_MARGIN_MS`]).
    pub unresolved: u64,
    /// Rows that could not be handled (logged with their id); the sweep went on.
    pub failed: u64,
}

/// What a payment, refund or transfer sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub finished: u64,
    pub failed: u64,
}

/// The pending rows after `cursor`, one page: `sql` takes $1 = cutoff, $2/$3 = the cursor's
/// created_at and id, and orders by (created_at, id).
fn page(
    tx: &mut dyn Tx,
    sql: &str,
    cutoff_ms: i64,
    after: (i64, u128),
) -> Result<Vec<Row>, StoreError> {
    tx.query(
        sql,
        &[cutoff_ms.into(), after.0.into(), Value::Uuid(after.1)],
    )
}

/// The WHERE and ORDER BY tail every sweep shares, over the table alias `t`.
pub(crate) fn after_cursor(alias: &str) -> String {
    format!(
        "{alias}.status = 'pending' AND {alias}.created_at <= $1
         AND ({alias}.created_at > $2 OR ({alias}.created_at = $2 AND {alias}.id > $3))
         ORDER BY {alias}.created_at, {alias}.id LIMIT {SWEEP_PAGE_ROWS}"
    )
}

impl MoneyService {
    /// Runs `each` over the pending rows `sql` selects (see [`page`]), from where the last run
    /// stopped, at most [`SWEEP_ROWS_MAX`] of them. `position` reads a row's created_at and
    /// id. An error of `each` is logged and counted; only a failure to read the rows at all
    /// ends the run.
    pub(crate) fn sweep(
        &self,
        cursor: &Mutex<Cursor>,
        sql: &str,
        cutoff_ms: i64,
        position: impl Fn(&Row) -> Result<(i64, u128), StoreError>,
        mut each: impl FnMut(&Row) -> Result<(), MoneyError>,
    ) -> Result<u64, MoneyError> {
        let mut saved = cursor.lock().map_err(|_| internal("sweep cursor lock"))?;
        let mut after = saved.unwrap_or((i64::MIN, 0));
        let mut seen = 0_usize;
        let mut failed = 0_u64;
        loop {
            let rows = self
                .identity_database()
                .read(|tx: &mut dyn Tx| page(tx, sql, cutoff_ms, after))?;
            for row in &rows {
                after = position(row)?;
                if let Err(error) = each(row) {
                    tracing::warn!(row = %uuid::Uuid::from_u128(after.1), error = %error,
                        "reconciling a row failed; going on with the next");
                    failed += 1;
                }
            }
            seen += rows.len();
            let exhausted = rows.len() < usize::try_from(SWEEP_PAGE_ROWS).unwrap_or(usize::MAX);
            if exhausted {
                // Every row was reached: the next run starts from the oldest again.
                *saved = None;
                return Ok(failed);
            }
            if seen >= SWEEP_ROWS_MAX {
                *saved = Some(after);
                return Ok(failed);
            }
        }
    }

    /// Resolves charges and withdrawals pending for longer than `older_than_ms` by asking the
    /// bank for the order under the row's key, with Kinko's client authentication (the link
    /// may have ended since): settled → post; rejected → void; never seen → void, but only
    /// once the order's deadline has passed by [`BANK_ANSWER_MARGIN_MS`].
    pub fn reconcile(&self, older_than_ms: i64) -> Result<ReconcileReport, MoneyError> {
        let cutoff_ms = self.now_ms() - older_than_ms;
        let sql = format!(
            "SELECT {CHARGE_COLUMNS} FROM money_bank_transfers t WHERE {}",
            after_cursor("t")
        );
        let mut report = ReconcileReport::default();
        let failed = self.sweep(
            &self.sweeps.charges,
            &sql,
            cutoff_ms,
            |row| Ok((row.int(6)?, row.uuid(0)?)),
            |row| self.reconcile_charge(row, &mut report),
        )?;
        report.failed = failed;
        Ok(report)
    }

    fn reconcile_charge(&self, row: &Row, report: &mut ReconcileReport) -> Result<(), MoneyError> {
        let mut charge = charge_from(row)?;
        let user_id = row.uuid(7)?;
        let direction = Direction::parse(&charge.direction).ok_or_else(|| internal("direction"))?;
        // Rows from before deadlines were stored: the default time to live.
        let not_after_ms = row.opt_int(10)?.unwrap_or_else(|| {
            charge
                .created_at_ms
                .saturating_add(BANK_ORDER_TTL_S_DEFAULT * 1_000)
        });
        // The pending transfer may be missing if the crash came before it: make sure it is
        // there, so a post or void has something to resolve.
        if self.reserve(user_id, &charge, direction)? == Reserved::InsufficientFunds {
            self.record(&mut charge, "rejected", Some("insufficient_funds"))?;
            report.voided += 1;
            return Ok(());
        }
        let asked = self.links().bank_payment_lookup(
            &charge.bank_code,
            direction.bank_kind(),
            &charge.id.to_string(),
        );
        let now_ms = self.now_ms();
        match asked {
            Ok(Some(payment)) if payment.settled => {
                self.resolve(&mut charge, Outcome::Settled)?;
                report.posted += 1;
            }
            Ok(Some(payment)) => {
                let reason = payment.reason.as_deref().unwrap_or("rejected_by_bank");
                self.resolve(&mut charge, Outcome::Rejected(reason))?;
                report.voided += 1;
            }
            // The bank has not seen the key, but the order may still be on its way (a slow
            // first request, another instance): wait until it cannot be any more.
            Ok(None) if now_ms <= not_after_ms.saturating_add(BANK_ANSWER_MARGIN_MS) => {
                report.unresolved += 1;
            }
            Ok(None) => {
                self.resolve(&mut charge, Outcome::Voided("not_at_bank"))?;
                report.voided += 1;
            }
            Err(error) => {
                tracing::warn!(charge = %charge.id, error = %error, "cannot reconcile a charge yet");
                report.unresolved += 1;
            }
        }
        Ok(())
    }
}
