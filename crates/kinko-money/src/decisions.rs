//! Reading back the risk decisions the money-out gate recorded (`risk_decisions`: every
//! scored action on which a rule fired), newest first, for the operator console. The caller
//! checks the operator's permission; this is a bounded read and writes nothing.

use kinko_store::sql::{Database, Tx, Value};

use crate::charge::MoneyError;

/// The most decisions one read returns.
pub const DECISIONS_PAGE_MAX: i64 = 200;

/// One recorded decision: who, which flow, the outcome, and the rules that fired (with
/// whether each acted or ran in shadow).
#[derive(Debug, Clone)]
pub struct DecisionView {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub flow: String,
    pub outcome: String,
    pub rules_version: String,
    /// (rule id, its effect as recorded: `acting`, `shadow`…).
    pub rules: Vec<(String, String)>,
    pub created_at_ms: i64,
}

/// The newest `limit` (1 to [`DECISIONS_PAGE_MAX`]) decisions.
pub fn recent_decisions(database: &Database, limit: i64) -> Result<Vec<DecisionView>, MoneyError> {
    let limit = limit.clamp(1, DECISIONS_PAGE_MAX);
    database.read(|tx: &mut dyn Tx| {
        let rows = tx.query(
            "SELECT id, user_id, flow, outcome, rules_version, decision, created_at
             FROM risk_decisions ORDER BY created_at DESC, id DESC LIMIT $1",
            &[Value::Int(limit)],
        )?;
        rows.iter()
            .map(|row| {
                let decision: serde_json::Value =
                    serde_json::from_str(&row.text(5)?).map_err(|error| {
                        MoneyError::Internal(format!("a risk decision row: {error}"))
                    })?;
                let rules = decision["firings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|firing| {
                        let effect = match &firing["effect"] {
                            serde_json::Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        (
                            firing["rule_id"].as_str().unwrap_or_default().to_owned(),
                            effect,
                        )
                    })
                    .collect();
                Ok(DecisionView {
                    id: uuid::Uuid::from_u128(row.uuid(0)?),
                    user_id: uuid::Uuid::from_u128(row.uuid(1)?),
                    flow: row.text(2)?,
                    outcome: row.text(3)?,
                    rules_version: row.text(4)?,
                    rules,
                    created_at_ms: row.int(6)?,
                })
            })
            .collect()
    })
}

/// Minutes the dashboard's chart covers.
pub const ACTIVITY_MINUTES: usize = 60;
/// Rows one series reads at most (a busier hour is drawn from its newest rows).
const ACTIVITY_ROWS_MAX: i64 = 100_000;

/// Charges, payments and declines per minute over the last [`ACTIVITY_MINUTES`], oldest
/// minute first. A decline is a refused charge or payment, or a risk decision that denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub charges: Vec<u32>,
    pub payments: Vec<u32>,
    pub declines: Vec<u32>,
}

/// Counts the last hour's movements per minute, ending at `now_ms`.
pub fn activity(database: &Database, now_ms: i64) -> Result<Activity, MoneyError> {
    const MINUTE_MS: i64 = 60_000;
    let span_ms = MINUTE_MS * ACTIVITY_MINUTES as i64;
    let since_ms = now_ms.saturating_sub(span_ms);
    let bucket = |at_ms: i64| -> Option<usize> {
        let offset = at_ms.checked_sub(since_ms)?;
        (0..span_ms)
            .contains(&offset)
            .then(|| usize::try_from(offset / MINUTE_MS).ok())
            .flatten()
    };
    database.read(|tx: &mut dyn Tx| {
        let mut count = |sql: &str| -> Result<Vec<u32>, MoneyError> {
            let mut minutes = vec![0u32; ACTIVITY_MINUTES];
            let rows = tx.query(sql, &[Value::Int(since_ms), Value::Int(ACTIVITY_ROWS_MAX)])?;
            for row in &rows {
                if let Some(index) = bucket(row.int(0)?) {
                    minutes[index] = minutes[index].saturating_add(1);
                }
            }
            Ok(minutes)
        };
        let charges = count(
            "SELECT created_at FROM money_bank_transfers
             WHERE direction = 'charge' AND created_at >= $1 ORDER BY created_at DESC LIMIT $2",
        )?;
        let payments = count(
            "SELECT created_at FROM money_payments
             WHERE created_at >= $1 ORDER BY created_at DESC LIMIT $2",
        )?;
        let refused_charges = count(
            "SELECT created_at FROM money_bank_transfers
             WHERE direction = 'charge' AND status = 'rejected' AND created_at >= $1
             ORDER BY created_at DESC LIMIT $2",
        )?;
        let refused_payments = count(
            "SELECT created_at FROM money_payments
             WHERE status = 'rejected' AND created_at >= $1 ORDER BY created_at DESC LIMIT $2",
        )?;
        let denied = count(
            "SELECT created_at FROM risk_decisions
             WHERE outcome = 'deny' AND created_at >= $1 ORDER BY created_at DESC LIMIT $2",
        )?;
        let declines = (0..ACTIVITY_MINUTES)
            .map(|minute| {
                refused_charges[minute]
                    .saturating_add(refused_payments[minute])
                    .saturating_add(denied[minute])
            })
            .collect();
        Ok(Activity {
            charges,
            payments,
            declines,
        })
    })
}
