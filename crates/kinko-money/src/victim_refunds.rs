//! Refunds to a victim (issue 12 item 3, THREATS 23): an operator pays back the bank account a
//! disputed charge debited, through the bank's refund of that debit (Kinko's client
//! authentication, so the link may have ended), paid from the case's recovered funds first —
//! its holds are returned (posted) into the case's holds account — and the rest from the
//! compensation account.
//!
//! Four eyes as for credits: what one operator refunds alone is capped by a sum over the last
//! day (`KINKO_CREDIT_APPROVAL_ABOVE_YEN`); beyond it the refund waits (`awaiting_approval`,
//! nothing moves) until a *different* operator with `ApproveCredits` approves or rejects it.
//!
//! Moving the money, like a withdrawal: `approved` → the holds are returned and the split
//! (recovered / compensation) is written once, with the bank's deadline (`pending`) → pending
//! ledger transfers (ids derived from the refund's) → the bank's credit under the refund's id
//! → post (`posted`) or void (`voided`). A crash anywhere leaves a row the reconciler — or the
//! approver's repeated approval — finishes with the same ids and the same key at the bank, so
//! the victim is paid once.

use kinko_audit::{Actor, AuditEntry};
use kinko_banking::client::{PaymentKind, PaymentOrder};
use kinko_banking::links::LinkError;
use kinko_identity::operator::{Operator, Permission, require_reason};
use kinko_ledger::{CreateTransferResult, LEDGER_JPY, TransferFlags, TransferId, TransferRequest};
use kinko_store::sql::{Row, Tx, Value};
use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{self, code, transfer};
use crate::charge::{MoneyService, internal};
use crate::credits::{CREDIT_SOLO_WINDOW_MS, CreditDecision};
use crate::error::MoneyError;
use crate::holds::HoldEnd;
use crate::service::BANK_ANSWER_MARGIN_MS;
use crate::transfers::check_key;

/// What the victim reads on their bank statement.
const DESCRIPTION: &str = "Kinko 返金 (不正利用の補償)";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VictimRefund {
    pub id: uuid::Uuid,
    pub case_id: uuid::Uuid,
    /// The charge whose debit is paid back.
    pub charge_id: uuid::Uuid,
    pub bank_code: String,
    pub amount_yen: i64,
    /// What the case's recovered funds pay, once the money starts to move.
    pub from_holds_yen: Option<i64>,
    /// What the compensation account pays (the rest).
    pub from_compensation_yen: Option<i64>,
    /// `awaiting_approval`, `approved`, `pending` (the bank has not answered), `posted`,
    /// `rejected` (by the second operator) or `voided` (the bank refused, or the deadline
    /// passed; `failure` says which).
    pub status: String,
    pub failure: Option<String>,
    pub proposed_by: uuid::Uuid,
    pub decided_by: Option<uuid::Uuid>,
    pub created_at_ms: i64,
}

impl VictimRefund {
    pub fn awaits_approval(&self) -> bool {
        self.status == "awaiting_approval"
    }
}

const REFUND_COLUMNS: &str = "id, case_id, charge_id, bank_code, amount_yen, from_holds_yen, \
     from_compensation_yen, status, failure, proposed_by, decided_by, created_at, request_hash, \
     bank_not_after";

fn refund_from(row: &Row) -> Result<VictimRefund, kinko_ledger::StoreError> {
    Ok(VictimRefund {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        case_id: uuid::Uuid::from_u128(row.uuid(1)?),
        charge_id: uuid::Uuid::from_u128(row.uuid(2)?),
        bank_code: row.text(3)?,
        amount_yen: row.int(4)?,
        from_holds_yen: row.opt_int(5)?,
        from_compensation_yen: row.opt_int(6)?,
        status: row.text(7)?,
        failure: row.opt_text(8)?,
        proposed_by: uuid::Uuid::from_u128(row.uuid(9)?),
        decided_by: row.opt_uuid(10)?.map(uuid::Uuid::from_u128),
        created_at_ms: row.int(11)?,
    })
}

/// The ids of the refund's ledger transfers: from the recovered funds, from compensation, and
/// their posts or voids.
fn transfer_ids(refund_id: uuid::Uuid) -> [u128; 4] {
    let id = refund_id.as_u128();
    [id, id ^ 0x2, id ^ 0x1, id ^ 0x3]
}

impl MoneyService {
    /// Proposes a refund of `amount_yen` to the victim of `case_id` (analysts and admins,
    /// reason and `Idempotency-Key` required). Beyond the operator's solo threshold it waits for
    /// a second operator; otherwise the money moves at once.
    pub fn propose_victim_refund(
        &self,
        token: &SecretString,
        case_id: uuid::Uuid,
        amount_yen: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<VictimRefund, MoneyError> {
        check_key(idempotency_key)?;
        if !(1..=crate::credits::CREDIT_MAX_YEN).contains(&amount_yen) {
            return Err(MoneyError::AmountInvalid);
        }
        let request_hash = format!(
            "{:x}",
            Sha256::digest(format!(
                "victim_refund|{case_id}|{amount_yen}|{}",
                reason.trim()
            ))
        );
        let now_ms = self.clock_ms();
        let solo_yen = self.credit_solo_yen();
        let refund = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            require_reason(reason)?;
            if let Some(existing) = tx.query_opt(
                &format!(
                    "SELECT {REFUND_COLUMNS} FROM money_victim_refunds
                     WHERE proposed_by = $1 AND idempotency_key = $2"
                ),
                &[Value::Uuid(by.id.as_u128()), idempotency_key.into()],
            )? {
                if existing.text(12)? != request_hash {
                    return Err(MoneyError::IdempotencyKeyReused);
                }
                return Ok(refund_from(&existing)?);
            }
            // The case's row lock orders its refunds.
            tx.query_opt(
                &format!("SELECT id FROM cases WHERE id = $1{}", tx.for_update()),
                &[Value::Uuid(case_id.as_u128())],
            )?
            .ok_or(MoneyError::CaseNotFound)?;
            let charge_id = tx
                .query_opt(
                    "SELECT charge_id FROM money_disputes WHERE case_id = $1
                     AND charge_id IS NOT NULL ORDER BY created_at LIMIT 1",
                    &[Value::Uuid(case_id.as_u128())],
                )?
                .ok_or(MoneyError::CaseHasNoBankDebit)?
                .uuid(0)?;
            let charge = tx
                .query_opt(
                    "SELECT bank_code, amount_yen FROM money_bank_transfers
                     WHERE id = $1 AND direction = 'charge' AND status = 'posted'",
                    &[Value::Uuid(charge_id)],
                )?
                .ok_or(MoneyError::CaseHasNoBankDebit)?;
            let in_flight = tx.query_opt(
                "SELECT id FROM money_victim_refunds WHERE case_id = $1
                 AND status IN ('awaiting_approval', 'approved', 'pending')",
                &[Value::Uuid(case_id.as_u128())],
            )?;
            if in_flight.is_some() {
                return Err(MoneyError::VictimRefundInFlight);
            }
            let refunded_yen = tx
                .query_one(
                    "SELECT CAST(COALESCE(SUM(amount_yen), 0) AS BIGINT) FROM money_victim_refunds
                     WHERE charge_id = $1 AND status = 'posted'",
                    &[Value::Uuid(charge_id)],
                )?
                .int(0)?;
            let charged_yen = charge.int(1)?;
            if refunded_yen
                .checked_add(amount_yen)
                .is_none_or(|sum| sum > charged_yen)
            {
                return Err(MoneyError::VictimRefundExceedsCharge);
            }
            let refunded_alone_yen = tx
                .query_one(
                    "SELECT CAST(COALESCE(SUM(amount_yen), 0) AS BIGINT) FROM money_victim_refunds
                     WHERE proposed_by = $1 AND created_at > $2 AND decided_by IS NULL
                       AND status IN ('approved', 'pending', 'posted')",
                    &[
                        Value::Uuid(by.id.as_u128()),
                        now_ms.saturating_sub(CREDIT_SOLO_WINDOW_MS).into(),
                    ],
                )?
                .int(0)?;
            let alone_ok = refunded_alone_yen
                .checked_add(amount_yen)
                .is_some_and(|sum| sum <= solo_yen);
            let refund = VictimRefund {
                id: uuid::Uuid::now_v7(),
                case_id,
                charge_id: uuid::Uuid::from_u128(charge_id),
                bank_code: charge.text(0)?,
                amount_yen,
                from_holds_yen: None,
                from_compensation_yen: None,
                status: if alone_ok {
                    "approved"
                } else {
                    "awaiting_approval"
                }
                .to_owned(),
                failure: None,
                proposed_by: uuid::Uuid::from_u128(by.id.as_u128()),
                decided_by: None,
                created_at_ms: now_ms,
            };
            tx.execute(
                "INSERT INTO money_victim_refunds (id, case_id, charge_id, bank_code, amount_yen,
                 status, reason, proposed_by, idempotency_key, request_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    Value::Uuid(refund.id.as_u128()),
                    Value::Uuid(case_id.as_u128()),
                    Value::Uuid(charge_id),
                    refund.bank_code.as_str().into(),
                    amount_yen.into(),
                    refund.status.as_str().into(),
                    reason.trim().into(),
                    Value::Uuid(by.id.as_u128()),
                    idempotency_key.into(),
                    request_hash.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            let action = if alone_ok {
                "money.victim_refund_approved"
            } else {
                "money.victim_refund_proposed"
            };
            note(tx, now_ms, &by, action, &refund, reason)?;
            Ok(refund)
        })?;
        self.drive_victim_refund(refund)
    }

    /// A second operator approves (the money moves) or rejects a refund awaiting it. The same
    /// decision again answers the refund — and finishes it if a crash stopped it halfway.
    pub fn decide_victim_refund(
        &self,
        token: &SecretString,
        refund_id: uuid::Uuid,
        decision: CreditDecision,
        reason: &str,
    ) -> Result<VictimRefund, MoneyError> {
        let now_ms = self.clock_ms();
        let refund = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ApproveCredits)?;
            require_reason(reason)?;
            let mut refund = tx
                .query_opt(
                    &format!("SELECT {REFUND_COLUMNS} FROM money_victim_refunds WHERE id = $1"),
                    &[Value::Uuid(refund_id.as_u128())],
                )?
                .map(|row| refund_from(&row))
                .transpose()?
                .ok_or(MoneyError::VictimRefundNotFound)?;
            let approver = uuid::Uuid::from_u128(by.id.as_u128());
            if refund.proposed_by == approver {
                return Err(MoneyError::VictimRefundSecondOperatorRequired);
            }
            if refund.status != "awaiting_approval" {
                let same = refund.decided_by == Some(approver)
                    && (refund.status == "rejected") == (decision == CreditDecision::Reject);
                return if same {
                    Ok(refund)
                } else {
                    Err(MoneyError::VictimRefundAlreadyDecided)
                };
            }
            let status = match decision {
                CreditDecision::Approve => "approved",
                CreditDecision::Reject => "rejected",
            };
            let changed = tx.execute(
                "UPDATE money_victim_refunds SET status = $2, decided_by = $3, decided_at = $4,
                 decision_reason = $5 WHERE id = $1 AND status = 'awaiting_approval'",
                &[
                    Value::Uuid(refund_id.as_u128()),
                    status.into(),
                    Value::Uuid(by.id.as_u128()),
                    now_ms.into(),
                    reason.trim().into(),
                ],
            )?;
            if changed != 1 {
                return Err(MoneyError::VictimRefundAlreadyDecided);
            }
            refund.status = status.to_owned();
            refund.decided_by = Some(approver);
            let action = match decision {
                CreditDecision::Approve => "money.victim_refund_approved",
                CreditDecision::Reject => "money.victim_refund_rejected",
            };
            note(tx, now_ms, &by, action, &refund, reason)?;
            Ok(refund)
        })?;
        self.drive_victim_refund(refund)
    }

    /// Finishes refunds a crash or an unreachable bank left `approved` or `pending` for longer
    /// than `older_than_ms` (see `reconcile.rs`). Answers how many it looked at.
    pub fn reconcile_victim_refunds(&self, older_than_ms: i64) -> Result<u64, MoneyError> {
        let cutoff_ms = self.clock_ms() - older_than_ms;
        let rows = self.identity_database().read(|tx: &mut dyn Tx| {
            tx.query(
                &format!(
                    "SELECT {REFUND_COLUMNS} FROM money_victim_refunds
                     WHERE status IN ('approved', 'pending') AND created_at <= $1
                     ORDER BY created_at, id LIMIT 1000"
                ),
                &[cutoff_ms.into()],
            )
        })?;
        let mut seen = 0;
        for row in &rows {
            let refund = refund_from(row)?;
            let id = refund.id;
            if let Err(error) = self.drive_victim_refund(refund) {
                tracing::warn!(refund = %id, error = %error, "reconciling a refund failed");
            }
            seen += 1;
        }
        Ok(seen)
    }

    /// Moves an `approved` or `pending` refund on as far as it can; any other state is
    /// answered as it is. A refund found `pending` may have reached the bank already (a
    /// request cut short): the bank is asked for its saved answer first, the order is sent
    /// (again, under the same key) only while its deadline holds, and a key the bank never saw
    /// is voided only once no order of it can still land.
    fn drive_victim_refund(&self, mut refund: VictimRefund) -> Result<VictimRefund, MoneyError> {
        let resumed = refund.status == "pending";
        if refund.status == "approved" {
            self.split_victim_refund(&refund)?;
            refund = self.victim_refund(refund.id)?;
        }
        if refund.status != "pending" {
            return Ok(refund);
        }
        let not_after_ms = self.victim_refund_deadline(refund.id)?;
        self.reserve_victim_refund(&refund)?;
        let key = refund.id.to_string();
        let send = || {
            self.links().bank_refund(
                &refund.bank_code,
                &refund.charge_id.to_string(),
                &PaymentOrder {
                    kind: PaymentKind::Credit,
                    key: &key,
                    amount_yen: refund.amount_yen,
                    description: DESCRIPTION,
                    not_after_ms,
                },
            )
        };
        let answer = if resumed {
            let now_ms = self.clock_ms();
            match self
                .links()
                .bank_payment_lookup(&refund.bank_code, PaymentKind::Credit, &key)
            {
                Ok(Some(payment)) => Ok(payment),
                Ok(None) if now_ms < not_after_ms => send(),
                Ok(None) if now_ms > not_after_ms.saturating_add(BANK_ANSWER_MARGIN_MS) => {
                    Err(LinkError::DeadlinePassed)
                }
                Ok(None) => return Ok(refund),
                Err(error) => Err(error),
            }
        } else {
            send()
        };
        crate::charge::failpoint("victim_refund_after_bank_credit");
        match answer {
            Ok(payment) if payment.settled => self.finish_victim_refund(&refund, None)?,
            Ok(payment) => {
                let reason = payment.reason.as_deref().unwrap_or("rejected_by_bank");
                self.finish_victim_refund(&refund, Some(reason))?;
            }
            Err(LinkError::DeadlinePassed) => {
                self.finish_victim_refund(&refund, Some("bank_deadline_passed"))?;
            }
            Err(LinkError::BankUnavailable) => {
                // Unknown whether the bank paid: the reconciler asks it by key later.
                tracing::warn!(refund = %refund.id, "bank unreachable; the refund stays pending");
            }
            Err(error) => return Err(internal(error)),
        }
        self.victim_refund(refund.id)
    }

    /// Returns the case's holds into its holds account, then writes — once — what the
    /// recovered funds pay and what compensation pays, with the bank's deadline.
    fn split_victim_refund(&self, refund: &VictimRefund) -> Result<(), MoneyError> {
        for hold in self.holds_in(refund.case_id, Some("held"))? {
            self.end_hold(&hold, HoldEnd::Return)?;
        }
        let holds = accounts::case_holds(refund.case_id.as_u128())?;
        accounts::ensure(self.ledger(), &[(holds, code::HOLDS)])?;
        let recovered_yen = self
            .ledger()
            .reader()
            .lookup_accounts(&[holds])
            .map_err(MoneyError::Store)?
            .first()
            .map_or(0, |account| {
                i64::try_from(account.credit_balance_available().max(0)).unwrap_or(i64::MAX)
            });
        let from_holds_yen = recovered_yen.min(refund.amount_yen);
        let from_compensation_yen = refund
            .amount_yen
            .checked_sub(from_holds_yen)
            .ok_or_else(|| internal("refund split"))?;
        let now_ms = self.clock_ms();
        let not_after_ms = now_ms.saturating_add(self.bank_order_ttl_ms);
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE money_victim_refunds SET status = 'pending', from_holds_yen = $2,
                 from_compensation_yen = $3, bank_not_after = $4
                 WHERE id = $1 AND status = 'approved'",
                &[
                    Value::Uuid(refund.id.as_u128()),
                    from_holds_yen.into(),
                    from_compensation_yen.into(),
                    not_after_ms.into(),
                ],
            )
        })?;
        Ok(())
    }

    fn victim_refund(&self, id: uuid::Uuid) -> Result<VictimRefund, MoneyError> {
        let row = self.identity_database().read(|tx: &mut dyn Tx| {
            tx.query_one(
                &format!("SELECT {REFUND_COLUMNS} FROM money_victim_refunds WHERE id = $1"),
                &[Value::Uuid(id.as_u128())],
            )
        })?;
        Ok(refund_from(&row)?)
    }

    fn victim_refund_deadline(&self, id: uuid::Uuid) -> Result<i64, MoneyError> {
        let row = self.identity_database().read(|tx: &mut dyn Tx| {
            tx.query_one(
                "SELECT bank_not_after FROM money_victim_refunds WHERE id = $1",
                &[Value::Uuid(id.as_u128())],
            )
        })?;
        row.opt_int(0)?
            .ok_or_else(|| internal("a pending refund has no deadline"))
    }

    /// The pending transfers: the case's holds account and the compensation account → the
    /// bank's settlement account. Not a linked chain: a replay answers `exists` per event, and
    /// in a chain `exists` fails the others; each leg is idempotent by its own id instead.
    fn reserve_victim_refund(&self, refund: &VictimRefund) -> Result<(), MoneyError> {
        let [from_holds_id, from_compensation_id, _, _] = transfer_ids(refund.id);
        let holds = accounts::case_holds(refund.case_id.as_u128())?;
        let compensation = accounts::compensation()?;
        let settlement = accounts::settlement(&refund.bank_code)?;
        accounts::ensure(
            self.ledger(),
            &[
                (holds, code::HOLDS),
                (compensation, code::COMPENSATION),
                (settlement, code::SETTLEMENT),
            ],
        )?;
        let legs = [
            (from_holds_id, holds, refund.from_holds_yen),
            (
                from_compensation_id,
                compensation,
                refund.from_compensation_yen,
            ),
        ];
        let mut requests = Vec::new();
        for (id, debit, amount_yen) in legs {
            let amount_yen = amount_yen.ok_or_else(|| internal("a pending refund has no split"))?;
            if amount_yen > 0 {
                requests.push(TransferRequest {
                    flags: TransferFlags::PENDING,
                    ..TransferRequest::single_phase(
                        TransferId::from_u128(id).map_err(internal)?,
                        debit,
                        settlement,
                        u64::try_from(amount_yen).map_err(internal)?,
                        LEDGER_JPY,
                        transfer::VICTIM_REFUND,
                    )
                });
            }
        }
        for result in self.ledger().create_transfers_blocking(requests)? {
            if !matches!(
                result,
                CreateTransferResult::Ok | CreateTransferResult::Exists
            ) {
                return Err(internal(format!(
                    "a refund's reservation was refused: {result:?}"
                )));
            }
        }
        Ok(())
    }

    /// Posts (the bank paid: `failure` None) or voids the pending transfers and records the
    /// outcome on the row, only while it is pending.
    fn finish_victim_refund(
        &self,
        refund: &VictimRefund,
        failure: Option<&str>,
    ) -> Result<(), MoneyError> {
        let [
            from_holds_id,
            from_compensation_id,
            holds_end_id,
            compensation_end_id,
        ] = transfer_ids(refund.id);
        let legs = [
            (from_holds_id, holds_end_id, refund.from_holds_yen),
            (
                from_compensation_id,
                compensation_end_id,
                refund.from_compensation_yen,
            ),
        ];
        let mut requests = Vec::new();
        for (pending_id, end_id, amount_yen) in legs {
            let amount_yen = amount_yen.ok_or_else(|| internal("a pending refund has no split"))?;
            if amount_yen == 0 {
                continue;
            }
            requests.push(TransferRequest {
                id: TransferId::from_u128(end_id).map_err(internal)?,
                debit_account_id: None,
                credit_account_id: None,
                amount: match failure {
                    None => u64::try_from(amount_yen).map_err(internal)?,
                    Some(_) => 0,
                },
                pending_id: Some(TransferId::from_u128(pending_id).map_err(internal)?),
                ledger: 0,
                code: 0,
                flags: match failure {
                    None => TransferFlags::POST_PENDING,
                    Some(_) => TransferFlags::VOID_PENDING,
                },
                timeout_s: 0,
            });
        }
        for result in self.ledger().create_transfers_blocking(requests)? {
            let expected = match failure {
                None => CreateTransferResult::PendingTransferAlreadyPosted,
                Some(_) => CreateTransferResult::PendingTransferAlreadyVoided,
            };
            if !matches!(
                result,
                CreateTransferResult::Ok | CreateTransferResult::Exists
            ) && result != expected
            {
                return Err(internal(format!("ending a refund failed: {result:?}")));
            }
        }
        let now_ms = self.clock_ms();
        let status = if failure.is_some() {
            "voided"
        } else {
            "posted"
        };
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let changed = tx.execute(
                "UPDATE money_victim_refunds SET status = $2, failure = $3, resolved_at = $4
                 WHERE id = $1 AND status = 'pending'",
                &[
                    Value::Uuid(refund.id.as_u128()),
                    status.into(),
                    failure.map_or(Value::Null, Into::into),
                    now_ms.into(),
                ],
            )?;
            if changed == 1 {
                kinko_cases::record_event(
                    tx,
                    refund.case_id,
                    None,
                    if failure.is_some() {
                        "refund_failed"
                    } else {
                        "refunded"
                    },
                    &format!(
                        "¥{} to the victim's bank account: {}",
                        refund.amount_yen,
                        failure.unwrap_or("paid")
                    ),
                    now_ms,
                )?;
                if failure.is_none() {
                    close_refunded(tx, refund.case_id, now_ms)?;
                }
            }
            Ok::<_, MoneyError>(())
        })
    }
}

/// The victim has their money back: the case closes as `refunded`, labelled `fraud` (money is
/// returned only for a movement its owner did not make), unless an analyst closed it first.
fn close_refunded(tx: &mut dyn Tx, case_id: uuid::Uuid, now_ms: i64) -> Result<(), MoneyError> {
    let closed = tx.execute(
        "UPDATE cases SET state = 'refunded', label = 'fraud', closed_at = $2, updated_at = $2
         WHERE id = $1 AND state IN ('open', 'investigating')",
        &[Value::Uuid(case_id.as_u128()), now_ms.into()],
    )?;
    if closed == 1 {
        kinko_cases::record_event(
            tx,
            case_id,
            None,
            "state",
            "refunded (label fraud): the victim's refund was paid",
            now_ms,
        )?;
    }
    Ok(())
}

fn note(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &Operator,
    action: &'static str,
    refund: &VictimRefund,
    reason: &str,
) -> Result<(), MoneyError> {
    kinko_cases::record_event(
        tx,
        refund.case_id,
        Some(uuid::Uuid::from_u128(by.id.as_u128())),
        action,
        &format!("¥{}: {}", refund.amount_yen, reason.trim()),
        now_ms,
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(by.id.as_u128()),
            action,
            subject_kind: "case",
            subject_id: &refund.case_id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({
                "refund_id": refund.id,
                "charge_id": refund.charge_id,
                "amount_yen": refund.amount_yen,
                "proposed_by": refund.proposed_by,
                "status": refund.status,
            }),
        },
    )?;
    Ok(())
}
