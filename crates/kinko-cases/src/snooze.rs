//! "Snooze a rule for one customer": while a snooze lasts, the risk path records the rule for
//! that user and does not act on it. An analyst writes one from a case
//! ([`crate::CaseService::snooze_rule`]); the risk path reads them with [`active_rules`].

use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};

/// The rules snoozed for `user_id` at `now_ms`, in the caller's transaction.
pub fn active_rules(
    tx: &mut dyn Tx,
    user_id: u128,
    now_ms: i64,
) -> Result<Vec<String>, StoreError> {
    tx.query(
        "SELECT DISTINCT rule_id FROM risk_snoozes WHERE user_id = $1 AND until_at > $2",
        &[Value::Uuid(user_id), now_ms.into()],
    )?
    .iter()
    .map(|row| row.text(0))
    .collect()
}
