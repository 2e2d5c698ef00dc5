//! Cases: the one inbox where operators work what the platform could not decide alone — a risk
//! review, a bank's fraud report, a user's "I didn't do this", a reconciliation mismatch.
//!
//! Every domain opens a case inside its own transaction with [`open_case`], so the thing that
//! needs a human and the case about it commit together or not at all. Opening is idempotent by
//! a dedupe key (a retried webhook or a replayed dispute finds the first case).
//!
//! Operators work cases through [`service::CaseService`] (list, assign, note, link, move through
//! the states, label, snooze a rule for one customer); the SLA sweep escalates overdue cases.
//! Every step is a row of `case_events` *and* an entry of the hash-chained audit log, written
//! together by [`record_event`].

use kinko_audit::{Actor, AuditEntry};
use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};
use serde::{Deserialize, Serialize};

pub mod error;
pub mod filter;
pub mod labels;
pub mod service;
pub mod snooze;
pub mod types;

pub use error::CaseError;
pub use service::{CaseConfig, CaseService};
pub use types::{CaseLabel, CaseState, LinkReason};

/// What opened a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    RiskReview,
    BankFraudReport,
    Dispute,
    Reconciliation,
}

impl CaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseKind::RiskReview => "risk_review",
            CaseKind::BankFraudReport => "bank_fraud_report",
            CaseKind::Dispute => "dispute",
            CaseKind::Reconciliation => "reconciliation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            CaseKind::RiskReview,
            CaseKind::BankFraudReport,
            CaseKind::Dispute,
            CaseKind::Reconciliation,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }

    /// How long a new case of this kind may wait before it is escalated. Disputes and bank
    /// reports concern money someone has lost: they come first.
    pub fn sla_ms(self) -> i64 {
        const HOUR_MS: i64 = 3_600_000;
        match self {
            CaseKind::Dispute | CaseKind::BankFraudReport => 4 * HOUR_MS,
            CaseKind::RiskReview => 24 * HOUR_MS,
            CaseKind::Reconciliation => 8 * HOUR_MS,
        }
    }
}

/// A case to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCase {
    pub kind: CaseKind,
    /// The bank whose account it concerns, if any (bank partners see only their own bank's).
    pub bank_code: Option<String>,
    /// The wallet it is about, if any.
    pub user_id: Option<uuid::Uuid>,
    /// What opened it, e.g. `risk_decision:<id>`, `bank_alert:<id>`, `dispute:<id>`.
    pub subject: String,
    /// One line for the inbox.
    pub summary: String,
    pub amount_yen: Option<i64>,
    /// The same key opens one case only; by default use `subject`.
    pub dedupe_key: String,
}

/// Whether [`open_case`] made a new case or found the one opened before for the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub case_id: uuid::Uuid,
    pub created: bool,
}

/// Opens a case (state `open`, due after its kind's SLA) inside the caller's transaction, or
/// finds the case already opened under the same dedupe key.
pub fn open_case(tx: &mut dyn Tx, case: &NewCase, now_ms: i64) -> Result<Opened, StoreError> {
    if let Some(row) = tx.query_opt(
        "SELECT id FROM cases WHERE dedupe_key = $1",
        &[Value::from(case.dedupe_key.as_str())],
    )? {
        return Ok(Opened {
            case_id: uuid::Uuid::from_u128(row.uuid(0)?),
            created: false,
        });
    }
    let case_id = uuid::Uuid::now_v7();
    let due_at = now_ms.saturating_add(case.kind.sla_ms());
    tx.execute(
        "INSERT INTO cases (id, kind, state, bank_code, user_id, subject, summary, amount_yen,
                            dedupe_key, opened_at, due_at, updated_at)
         VALUES ($1, $2, 'open', $3, $4, $5, $6, $7, $8, $9, $10, $9)",
        &[
            Value::Uuid(case_id.as_u128()),
            Value::from(case.kind.as_str()),
            case.bank_code.as_deref().map_or(Value::Null, Value::from),
            case.user_id
                .map_or(Value::Null, |id| Value::Uuid(id.as_u128())),
            Value::from(case.subject.as_str()),
            Value::from(case.summary.as_str()),
            case.amount_yen.map_or(Value::Null, Value::Int),
            Value::from(case.dedupe_key.as_str()),
            Value::Int(now_ms),
            Value::Int(due_at),
        ],
    )?;
    record_event(tx, case_id, None, "opened", &case.summary, now_ms)?;
    Ok(Opened {
        case_id,
        created: true,
    })
}

/// Appends one step to a case's history (`actor` None = the platform itself), and the same
/// step to the audit log (`case.<kind>`), in the caller's transaction.
pub fn record_event(
    tx: &mut dyn Tx,
    case_id: uuid::Uuid,
    actor: Option<uuid::Uuid>,
    kind: &str,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO case_events (id, case_id, at, actor, kind, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            Value::Uuid(uuid::Uuid::now_v7().as_u128()),
            Value::Uuid(case_id.as_u128()),
            Value::Int(now_ms),
            actor.map_or(Value::Null, |id| Value::Uuid(id.as_u128())),
            Value::from(kind),
            Value::from(detail),
        ],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: actor.map_or(Actor::System, |id| Actor::Operator(id.as_u128())),
            action: &format!("case.{kind}"),
            subject_kind: "case",
            subject_id: &case_id.to_string(),
            reason: "",
            detail: serde_json::json!({ "detail": detail }),
        },
    )?;
    Ok(())
}

/// The identity domain's reviews (an eKYC held because the identity backs another wallet, or
/// the wallet proved someone else) become `risk_review` cases.
pub struct IdentityReviews;

impl kinko_identity::service::ReviewInbox for IdentityReviews {
    fn open_review(
        &self,
        tx: &mut dyn Tx,
        user_id: u128,
        subject: &str,
        summary: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        open_case(
            tx,
            &NewCase {
                kind: CaseKind::RiskReview,
                bank_code: None,
                user_id: Some(uuid::Uuid::from_u128(user_id)),
                subject: subject.to_owned(),
                summary: summary.to_owned(),
                amount_yen: None,
                dedupe_key: subject.to_owned(),
            },
            now_ms,
        )
        .map(|_| ())
    }
}
