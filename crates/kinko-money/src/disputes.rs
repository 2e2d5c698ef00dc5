//! Disputes (issue 12 item 2, THREATS 27): a wallet owner's "I didn't do this" on a movement
//! of their history, and a bank's fraud report contained for an account holder who may never
//! have used Kinko. Either, in one transaction: freezes the wallet's outgoing money, opens a
//! case (`kinko-cases`), follows the money by P2P and writes a hold for what each wallet it
//! reached still has of it (and freezes those wallets for review too, telling their owners;
//! the disputer is told the dispute was received); then the holds are
//! placed in the ledger (`holds.rs`). Idempotent: the same movement or report again finds the
//! same dispute and case, and finishes holds a crash left pending.

use kinko_audit::{Actor, AuditEntry};
use kinko_banking::links::FROZEN_UNTIL_REVIEWED;
use kinko_cases::{CaseKind, NewCase};
use kinko_identity::service::tell_user;
use kinko_identity::session::SessionInfo;
use kinko_store::sql::{Row, Tx, Value};
use serde::Serialize;

use crate::charge::{MoneyService, internal};
use crate::error::MoneyError;
use crate::holds::{Hold, Origin, follow};

/// Fraud reports contained in one sweep, at most.
pub const CONTAIN_SWEEP_MAX: i64 = 100;

/// A dispute as its wallet owner sees it. The wallets the money reached are not named: they
/// are other users'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispute {
    pub id: uuid::Uuid,
    pub case_id: uuid::Uuid,
    /// The disputed movement (a user's dispute).
    pub movement_id: Option<uuid::Uuid>,
    pub amount_yen: i64,
    /// What is held for the case in all the wallets the money reached.
    pub held_yen: i64,
    pub created_at_ms: i64,
}

const DISPUTE_COLUMNS: &str = "id, case_id, movement_id, amount_yen, created_at, user_id";

fn dispute_from(row: &Row) -> Result<Dispute, kinko_ledger::StoreError> {
    Ok(Dispute {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        case_id: uuid::Uuid::from_u128(row.uuid(1)?),
        movement_id: row.opt_uuid(2)?.map(uuid::Uuid::from_u128),
        amount_yen: row.int(3)?,
        held_yen: 0,
        created_at_ms: row.int(4)?,
    })
}

/// What a bank's report names as the source of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainSource {
    /// One charge (the report's payment key is the charge id).
    Charge(uuid::Uuid),
    /// Every settled charge through the link.
    Link(uuid::Uuid),
}

/// What one dispute or containment is about, worked out inside its transaction.
struct Subject {
    user_id: u128,
    bank_code: Option<String>,
    charge_id: Option<uuid::Uuid>,
    amount_yen: i64,
    /// Where following starts, if the money can be followed at all.
    origin: Option<Origin>,
}

impl MoneyService {
    /// "I didn't do this" on `movement_id` of the session's wallet. Another wallet's movement
    /// answers exactly like a missing one.
    pub fn dispute(
        &self,
        session: &SessionInfo,
        movement_id: uuid::Uuid,
    ) -> Result<Dispute, MoneyError> {
        let user_id = session.user_id;
        let now_ms = self.clock_ms();
        let dispute = self.identity_database().transaction(|tx: &mut dyn Tx| {
            // The wallet's row lock orders its disputes: a second dispute of the same movement
            // waits and then finds the first.
            tx.query_opt(
                &format!(
                    "SELECT id FROM identity_users WHERE id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(user_id)],
            )?;
            if let Some(existing) = tx.query_opt(
                &format!(
                    "SELECT {DISPUTE_COLUMNS} FROM money_disputes
                     WHERE user_id = $1 AND movement_id = $2"
                ),
                &[Value::Uuid(user_id), Value::Uuid(movement_id.as_u128())],
            )? {
                return Ok(dispute_from(&existing)?);
            }
            let subject = movement_subject(tx, user_id, movement_id)?;
            let case = NewCase {
                kind: CaseKind::Dispute,
                bank_code: subject.bank_code.clone(),
                user_id: Some(uuid::Uuid::from_u128(user_id)),
                subject: format!("dispute:{movement_id}"),
                summary: format!(
                    "The wallet's owner disputes a movement of ¥{}",
                    subject.amount_yen
                ),
                amount_yen: Some(subject.amount_yen),
                dedupe_key: format!("dispute:{movement_id}"),
            };
            self.open_dispute(
                tx,
                &case,
                &subject,
                DisputeOrigin::User(movement_id),
                now_ms,
            )
        })?;
        self.finish_dispute(dispute)
    }

    /// Contains a bank's fraud report about an account charged through Kinko: freezes the
    /// wallet that charged it, follows the money from it, holds what the wallets it reached
    /// still have and opens (or joins) the report's case. Idempotent per alert.
    pub fn contain(
        &self,
        user_id: uuid::Uuid,
        alert_id: uuid::Uuid,
        source: ContainSource,
    ) -> Result<Dispute, MoneyError> {
        let now_ms = self.clock_ms();
        let dispute = self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.query_opt(
                &format!(
                    "SELECT id FROM identity_users WHERE id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(user_id.as_u128())],
            )?;
            if let Some(existing) = tx.query_opt(
                &format!("SELECT {DISPUTE_COLUMNS} FROM money_disputes WHERE alert_id = $1"),
                &[Value::Uuid(alert_id.as_u128())],
            )? {
                return Ok(dispute_from(&existing)?);
            }
            let subject = report_subject(tx, user_id.as_u128(), source)?;
            // The same key as the case the bank's webhook opened for the reported link
            // (`kinko-banking` `links/webhooks.rs`): one case per report.
            let reported_link = tx
                .query_opt(
                    "SELECT link_id FROM banking_alerts WHERE id = $1",
                    &[Value::Uuid(alert_id.as_u128())],
                )?
                .map(|row| row.opt_uuid(0))
                .transpose()?
                .flatten();
            let dedupe_key = match reported_link {
                Some(link_id) => {
                    format!("bank_fraud_report:{}", uuid::Uuid::from_u128(link_id))
                }
                None => format!("bank_alert:{alert_id}"),
            };
            let case = NewCase {
                kind: CaseKind::BankFraudReport,
                bank_code: subject.bank_code.clone(),
                user_id: Some(user_id),
                subject: format!("bank_alert:{alert_id}"),
                summary: format!(
                    "The bank reports ¥{} charged without its holder's consent",
                    subject.amount_yen
                ),
                amount_yen: Some(subject.amount_yen),
                dedupe_key,
            };
            self.open_dispute(
                tx,
                &case,
                &subject,
                DisputeOrigin::BankReport(alert_id),
                now_ms,
            )
        })?;
        self.finish_dispute(dispute)
    }

    /// Contains every bank fraud report not contained yet whose link has a settled charge (at
    /// most [`CONTAIN_SWEEP_MAX`] a call; a report about a link that never moved money has
    /// nothing to follow and is left to its case): run after each bank webhook and by the
    /// reconciler, so a report whose webhook answer was cut short is contained all the same.
    /// One report that fails is logged and the others go on. Answers how many it contained.
    pub fn contain_reported_frauds(&self) -> Result<u64, MoneyError> {
        let rows = self.identity_database().read(|tx: &mut dyn Tx| {
            tx.query(
                "SELECT a.id, a.user_id, a.link_id, a.detail FROM banking_alerts a
                 WHERE a.kind = 'fraud_reported' AND a.user_id IS NOT NULL
                   AND a.link_id IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM money_disputes d WHERE d.alert_id = a.id)
                   AND EXISTS (SELECT 1 FROM money_bank_transfers t WHERE t.link_id = a.link_id
                               AND t.direction = 'charge' AND t.status = 'posted')
                 ORDER BY a.created_at, a.id LIMIT $1",
                &[CONTAIN_SWEEP_MAX.into()],
            )
        })?;
        let mut contained = 0;
        for row in &rows {
            let alert_id = uuid::Uuid::from_u128(row.uuid(0)?);
            let user_id = uuid::Uuid::from_u128(row.uuid(1)?);
            let link_id = uuid::Uuid::from_u128(row.uuid(2)?);
            let detail: serde_json::Value =
                serde_json::from_str(&row.text(3)?).map_err(internal)?;
            let source = detail
                .get("payment_key")
                .and_then(serde_json::Value::as_str)
                .and_then(|key| uuid::Uuid::parse_str(key).ok())
                .map_or(ContainSource::Link(link_id), ContainSource::Charge);
            let outcome = match self.contain(user_id, alert_id, source) {
                // The report names a charge that did not settle: every settled charge through
                // the link is followed instead (the query above found at least one).
                Err(MoneyError::MovementNotFound) => {
                    self.contain(user_id, alert_id, ContainSource::Link(link_id))
                }
                other => other,
            };
            match outcome {
                Ok(_) => contained += 1,
                Err(error) => {
                    tracing::warn!(alert = %alert_id, error = %error, "containing a report failed")
                }
            }
        }
        Ok(contained)
    }

    /// The dispute's row, case, freezes and planned holds, in the caller's transaction.
    fn open_dispute(
        &self,
        tx: &mut dyn Tx,
        case: &NewCase,
        subject: &Subject,
        origin: DisputeOrigin,
        now_ms: i64,
    ) -> Result<Dispute, MoneyError> {
        let opened = kinko_cases::open_case(tx, case, now_ms)?;
        let id = uuid::Uuid::now_v7();
        let (kind, movement_id, alert_id) = match origin {
            DisputeOrigin::User(movement_id) => ("user", Some(movement_id), None),
            DisputeOrigin::BankReport(alert_id) => ("bank_report", None, Some(alert_id)),
        };
        let optional =
            |id: Option<uuid::Uuid>| id.map_or(Value::Null, |id| Value::Uuid(id.as_u128()));
        tx.execute(
            "INSERT INTO money_disputes (id, case_id, user_id, origin, movement_id, alert_id,
             charge_id, amount_yen, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                Value::Uuid(id.as_u128()),
                Value::Uuid(opened.case_id.as_u128()),
                Value::Uuid(subject.user_id),
                kind.into(),
                optional(movement_id),
                optional(alert_id),
                optional(subject.charge_id),
                subject.amount_yen.into(),
                now_ms.into(),
            ],
        )?;
        freeze(tx, subject.user_id)?;
        let mut reached_count = 0;
        let mut planned_count = 0;
        if let DisputeOrigin::User(_) = origin {
            tell_user(
                tx,
                now_ms,
                subject.user_id,
                "dispute_received",
                "お申し出を受け付けました / We received your dispute",
                &format!(
                    "身に覚えのない取引（¥{}）のお申し出を受け付けました。安全のためウォレットからの出金・送金を停止し、お金の流れを確認しています。担当者からご連絡します。\n\nWe received your dispute of a movement of ¥{}. For your safety we paused outgoing money from your wallet and are following the money. Our staff will contact you.",
                    subject.amount_yen, subject.amount_yen
                ),
            )?;
        }
        if let Some(start) = subject.origin {
            let reached = follow(tx, start)?;
            for wallet in reached.keys() {
                freeze(tx, *wallet)?;
                if *wallet != subject.user_id {
                    tell_user(
                        tx,
                        now_ms,
                        *wallet,
                        "money_held_for_review",
                        "出金を一時停止しました / We paused outgoing money",
                        "あなたのウォレットが受け取ったお金について、不正利用の申し出がありました。確認が終わるまで、ウォレットからの出金・送金を停止し、該当する金額を保留しています。担当者が確認します。\n\nMoney your wallet received is the subject of a fraud claim. Until we have reviewed it, outgoing money from your wallet is paused and the amount concerned is held. Our staff will review it.",
                    )?;
                }
            }
            reached_count = reached.len();
            planned_count = self.plan_holds(tx, opened.case_id, &reached, now_ms)?.len();
        }
        kinko_cases::record_event(
            tx,
            opened.case_id,
            None,
            "money_followed",
            &format!(
                "Outgoing money frozen; the money reached {reached_count} wallet(s), {planned_count} hold(s) placed"
            ),
            now_ms,
        )?;
        kinko_audit::append(
            tx,
            now_ms,
            &AuditEntry {
                actor: match origin {
                    DisputeOrigin::User(_) => Actor::User(subject.user_id),
                    DisputeOrigin::BankReport(_) => Actor::System,
                },
                action: match origin {
                    DisputeOrigin::User(_) => "money.disputed",
                    DisputeOrigin::BankReport(_) => "money.report_contained",
                },
                subject_kind: "case",
                subject_id: &opened.case_id.to_string(),
                reason: "",
                detail: serde_json::json!({
                    "dispute_id": id,
                    "movement_id": movement_id,
                    "alert_id": alert_id,
                    "charge_id": subject.charge_id,
                    "amount_yen": subject.amount_yen,
                    "wallets_reached": reached_count,
                    "holds": planned_count,
                }),
            },
        )?;
        Ok(Dispute {
            id,
            case_id: opened.case_id,
            movement_id,
            amount_yen: subject.amount_yen,
            held_yen: 0,
            created_at_ms: now_ms,
        })
    }

    /// Places the dispute's pending holds and answers it with what is held.
    fn finish_dispute(&self, mut dispute: Dispute) -> Result<Dispute, MoneyError> {
        self.place_holds(dispute.case_id)?;
        dispute.held_yen = self
            .holds_in(dispute.case_id, Some("held"))?
            .iter()
            .try_fold(0_i64, |sum, hold: &Hold| sum.checked_add(hold.amount_yen))
            .ok_or_else(|| internal("held amount overflows"))?;
        Ok(dispute)
    }
}

#[derive(Debug, Clone, Copy)]
enum DisputeOrigin {
    User(uuid::Uuid),
    BankReport(uuid::Uuid),
}

/// Freezes the wallet's outgoing money until an operator lifts it.
fn freeze(tx: &mut dyn Tx, user_id: u128) -> Result<(), MoneyError> {
    tx.execute(
        "UPDATE identity_users SET outgoing_frozen_until = $2 WHERE id = $1",
        &[Value::Uuid(user_id), FROZEN_UNTIL_REVIEWED.into()],
    )?;
    Ok(())
}

/// What a disputed movement is about, and where its money is followed from: a charge or money
/// received from the wallet itself (it may have passed it on), a transfer out from its
/// recipient; a payment, withdrawal or refund has left the wallets and is not followed.
fn movement_subject(
    tx: &mut dyn Tx,
    user_id: u128,
    movement_id: uuid::Uuid,
) -> Result<Subject, MoneyError> {
    let movement = tx
        .query_opt(
            "SELECT kind, amount_yen, status, created_at FROM money_movements
             WHERE id = $1 AND user_id = $2",
            &[Value::Uuid(movement_id.as_u128()), Value::Uuid(user_id)],
        )?
        .ok_or(MoneyError::MovementNotFound)?;
    let kind = movement.text(0)?;
    let amount_yen = movement.int(1)?;
    let posted = movement.text(2)? == "posted";
    let since_ms = movement.int(3)?;
    let mut subject = Subject {
        user_id,
        bank_code: None,
        charge_id: None,
        amount_yen,
        origin: None,
    };
    match kind.as_str() {
        "charge" => {
            subject.bank_code = tx
                .query_opt(
                    "SELECT bank_code FROM money_bank_transfers WHERE id = $1 AND user_id = $2",
                    &[Value::Uuid(movement_id.as_u128()), Value::Uuid(user_id)],
                )?
                .map(|row| row.text(0))
                .transpose()?;
            subject.charge_id = Some(movement_id);
            if posted {
                subject.origin = Some(Origin {
                    user_id,
                    since_ms,
                    amount_yen,
                    depth: 0,
                });
            }
        }
        "transfer_in" if posted => {
            subject.origin = Some(Origin {
                user_id,
                since_ms,
                amount_yen,
                depth: 0,
            });
        }
        "transfer_out" if posted => {
            let recipient = tx
                .query_one(
                    "SELECT to_user FROM money_transfers WHERE id = $1",
                    &[Value::Uuid(movement_id.as_u128())],
                )?
                .uuid(0)?;
            subject.origin = Some(Origin {
                user_id: recipient,
                since_ms,
                amount_yen,
                depth: 1,
            });
        }
        _ => {}
    }
    Ok(subject)
}

/// What a bank's report is about: the settled charge it names, or every settled charge
/// through the link; followed from the wallet that charged.
fn report_subject(
    tx: &mut dyn Tx,
    user_id: u128,
    source: ContainSource,
) -> Result<Subject, MoneyError> {
    let rows = match source {
        ContainSource::Charge(charge_id) => tx.query(
            "SELECT id, bank_code, amount_yen, created_at FROM money_bank_transfers
             WHERE id = $1 AND user_id = $2 AND direction = 'charge' AND status = 'posted'",
            &[Value::Uuid(charge_id.as_u128()), Value::Uuid(user_id)],
        )?,
        ContainSource::Link(link_id) => tx.query(
            "SELECT id, bank_code, amount_yen, created_at FROM money_bank_transfers
             WHERE link_id = $1 AND user_id = $2 AND direction = 'charge' AND status = 'posted'
             ORDER BY created_at, id LIMIT 1000",
            &[Value::Uuid(link_id.as_u128()), Value::Uuid(user_id)],
        )?,
    };
    let first = rows.first().ok_or(MoneyError::MovementNotFound)?;
    let mut amount_yen: i64 = 0;
    for row in &rows {
        amount_yen = amount_yen
            .checked_add(row.int(2)?)
            .ok_or_else(|| internal("reported amount overflows"))?;
    }
    let since_ms = first.int(3)?;
    Ok(Subject {
        user_id,
        bank_code: Some(first.text(1)?),
        // The charge to make good: the one named (for a whole link, the first; an operator
        // refunds the others case by case).
        charge_id: Some(uuid::Uuid::from_u128(first.uuid(0)?)),
        amount_yen,
        origin: Some(Origin {
            user_id,
            since_ms,
            amount_yen,
            depth: 0,
        }),
    })
}
