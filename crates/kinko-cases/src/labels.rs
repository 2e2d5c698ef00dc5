//! Labels feed the risk rules' precision: every `risk_review` case an analyst closed with a
//! label (fraud / not fraud) names the stored decision that opened it (`risk_decision:<id>`),
//! whose firings say which rules fired. Per rule: hits on fraud, hits on not fraud, and the
//! precision (fraud over labelled hits). `kinko risk labels` prints it.

use std::collections::BTreeMap;

use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};
use serde::Serialize;

/// Labelled cases read at most (the newest).
pub const LABELLED_CASES_MAX: i64 = 100_000;

/// One rule's record on labelled cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleLabels {
    pub rule_id: String,
    pub hits_fraud: u64,
    pub hits_not_fraud: u64,
    /// Fraud hits over labelled hits.
    pub precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelReport {
    /// Closed, labelled risk-review cases whose decision was found.
    pub cases: u64,
    pub cases_fraud: u64,
    pub rules: Vec<RuleLabels>,
}

/// Reads the labelled risk-review cases and their decisions, in the caller's transaction.
pub fn rule_precision(tx: &mut dyn Tx) -> Result<LabelReport, StoreError> {
    let cases = tx.query(
        "SELECT subject, label FROM cases
         WHERE kind = 'risk_review' AND label IS NOT NULL
         ORDER BY id DESC LIMIT $1",
        &[LABELLED_CASES_MAX.into()],
    )?;
    let mut report = LabelReport {
        cases: 0,
        cases_fraud: 0,
        rules: Vec::new(),
    };
    let mut per_rule: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for case in &cases {
        let subject = case.text(0)?;
        let Some(decision_id) = subject
            .strip_prefix("risk_decision:")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
        else {
            continue;
        };
        let Some(decision) = tx.query_opt(
            "SELECT decision FROM risk_decisions WHERE id = $1",
            &[Value::Uuid(decision_id.as_u128())],
        )?
        else {
            continue;
        };
        let decision: serde_json::Value = serde_json::from_str(&decision.text(0)?)
            .map_err(|error| StoreError::new(format!("risk_decisions.decision: {error}")))?;
        let fraud = case.text(1)? == "fraud";
        report.cases += 1;
        report.cases_fraud += u64::from(fraud);
        let firings = decision["firings"].as_array().cloned().unwrap_or_default();
        for firing in &firings {
            if let Some(rule_id) = firing["rule_id"].as_str() {
                let counts = per_rule.entry(rule_id.to_owned()).or_default();
                if fraud {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
            }
        }
    }
    report.rules = per_rule
        .into_iter()
        .map(|(rule_id, (hits_fraud, hits_not_fraud))| {
            let labelled = hits_fraud + hits_not_fraud;
            // Counts of cases: far below 2^52, exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let precision = (labelled > 0).then(|| hits_fraud as f64 / labelled as f64);
            RuleLabels {
                rule_id,
                hits_fraud,
                hits_not_fraud,
                precision,
            }
        })
        .collect();
    Ok(report)
}

/// The report as a table, one line per rule.
pub fn render(report: &LabelReport) -> String {
    let mut out = format!(
        "{} labelled risk-review cases ({} fraud, {} not fraud)\n{:<34} {:>7} {:>9} {:>9}\n",
        report.cases,
        report.cases_fraud,
        report.cases - report.cases_fraud,
        "rule",
        "fraud",
        "not_fraud",
        "precision"
    );
    for rule in &report.rules {
        let precision = rule
            .precision
            .map_or_else(|| "-".to_owned(), |precision| format!("{precision:.3}"));
        out.push_str(&format!(
            "{:<34} {:>7} {:>9} {:>9}\n",
            rule.rule_id, rule.hits_fraud, rule.hits_not_fraud, precision
        ));
    }
    out
}
