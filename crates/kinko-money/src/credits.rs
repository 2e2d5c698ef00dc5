//! Credits: Kinko pays a wallet from its own compensation account — confirmed fraud made
//! good (THREATS requirement 23), goodwill. Only analysts and admins (`ReviewCases`), always
//! with a reason, audited in the transaction that records the credit, idempotent per operator
//! and `Idempotency-Key`.
//!
//! Four eyes: what one operator credits alone is capped by a sum over the last day (the solo
//! threshold, `KINKO_CREDIT_APPROVAL_ABOVE_YEN`), so splitting a large credit into small ones
//! does not escape it. A credit beyond it waits (`awaiting_approval`, no money moved, nothing
//! in the wallet's history) until a *different* operator with `ApproveCredits` approves or
//! rejects it; the database refuses a decision by the proposer as well.
//!
//! Moving the money: the row is written first (`pending`); the ledger moves the money under
//! the row's id (so a retry — the proposer's replay or the approver's second approve — moves
//! it once); then the row is marked posted.

use kinko_audit::{Actor, AuditEntry};
use kinko_identity::operator::{Operator, Permission, require_reason};
use kinko_store::sql::{Row, Tx, Value};
use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{self, Moved, code, transfer};
use crate::charge::MoneyService;
use crate::error::MoneyError;
use crate::transfers::check_key;

/// One credit pays at most this much.
pub const CREDIT_MAX_YEN: i64 = 10_000_000;
/// What one operator may credit alone within [`CREDIT_SOLO_WINDOW_MS`] by default.
pub const CREDIT_SOLO_YEN_DEFAULT: i64 = 10_000;
/// The window over which an operator's solo credits are summed.
pub const CREDIT_SOLO_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;
/// A page of credits in a listing.
const CREDIT_LIST_MAX: i64 = 200;

const STATUS_AWAITING: &str = "awaiting_approval";
const STATUS_PENDING: &str = "pending";
const STATUS_POSTED: &str = "posted";
const STATUS_REJECTED: &str = "rejected";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credit {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub amount_yen: i64,
    /// `awaiting_approval` (a second operator must decide), `pending` until the ledger has
    /// answered, `posted`, or `rejected`.
    pub status: String,
    pub created_at_ms: i64,
    /// The operator who proposed it.
    pub proposed_by: uuid::Uuid,
    /// The second operator who approved or rejected it, if it needed one.
    pub decided_by: Option<uuid::Uuid>,
}

impl Credit {
    pub fn awaits_approval(&self) -> bool {
        self.status == STATUS_AWAITING
    }
}

const CREDIT_COLUMNS: &str =
    "id, user_id, amount_yen, status, created_at, operator_id, decided_by, request_hash";

fn credit_from(row: &Row) -> Result<Credit, kinko_ledger::StoreError> {
    Ok(Credit {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        user_id: uuid::Uuid::from_u128(row.uuid(1)?),
        amount_yen: row.int(2)?,
        status: row.text(3)?,
        created_at_ms: row.int(4)?,
        proposed_by: uuid::Uuid::from_u128(row.uuid(5)?),
        decided_by: row.opt_uuid(6)?.map(uuid::Uuid::from_u128),
    })
}

/// Approve (money moves) or reject (nothing moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditDecision {
    Approve,
    Reject,
}

impl CreditDecision {
    fn status(self) -> &'static str {
        match self {
            CreditDecision::Approve => STATUS_PENDING,
            CreditDecision::Reject => STATUS_REJECTED,
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            CreditDecision::Approve => "wallet.credit_approved",
            CreditDecision::Reject => "wallet.credit_rejected",
        }
    }
}

impl MoneyService {
    /// Credits `amount_yen` to `user_id`'s wallet for the operator holding `token`; beyond the
    /// operator's solo threshold the credit waits for a second operator.
    pub fn credit_wallet(
        &self,
        token: &SecretString,
        user_id: uuid::Uuid,
        amount_yen: i64,
        reason: &str,
        idempotency_key: &str,
    ) -> Result<Credit, MoneyError> {
        check_key(idempotency_key)?;
        if !(1..=CREDIT_MAX_YEN).contains(&amount_yen) {
            return Err(MoneyError::AmountInvalid);
        }
        let request_hash = format!(
            "{:x}",
            Sha256::digest(format!("credit|{user_id}|{amount_yen}|{}", reason.trim()))
        );
        let now_ms = self.clock_ms();
        let solo_yen = self.credit_solo_yen();
        let credit = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            require_reason(reason)?;
            if let Some(existing) = tx.query_opt(
                &format!(
                    "SELECT {CREDIT_COLUMNS} FROM money_credits
                     WHERE operator_id = $1 AND idempotency_key = $2"
                ),
                &[Value::Uuid(by.id.as_u128()), idempotency_key.into()],
            )? {
                if existing.text(7)? != request_hash {
                    return Err(MoneyError::IdempotencyKeyReused);
                }
                return Ok(credit_from(&existing)?);
            }
            let active = tx
                .query_opt(
                    "SELECT status FROM identity_users WHERE id = $1",
                    &[Value::Uuid(user_id.as_u128())],
                )?
                .ok_or(MoneyError::RecipientNotFound)?;
            if active.text(0)? != "active" {
                return Err(MoneyError::RecipientNotFound);
            }
            let credited_alone_yen = tx
                .query_one(
                    "SELECT CAST(COALESCE(SUM(amount_yen), 0) AS BIGINT) FROM money_credits
                     WHERE operator_id = $1 AND created_at > $2 AND decided_by IS NULL
                       AND status IN ('pending', 'posted')",
                    &[
                        Value::Uuid(by.id.as_u128()),
                        now_ms.saturating_sub(CREDIT_SOLO_WINDOW_MS).into(),
                    ],
                )?
                .int(0)?;
            let alone_ok = credited_alone_yen
                .checked_add(amount_yen)
                .is_some_and(|sum| sum <= solo_yen);
            let credit = Credit {
                id: uuid::Uuid::now_v7(),
                user_id,
                amount_yen,
                status: if alone_ok {
                    STATUS_PENDING
                } else {
                    STATUS_AWAITING
                }
                .to_owned(),
                created_at_ms: now_ms,
                proposed_by: uuid::Uuid::from_u128(by.id.as_u128()),
                decided_by: None,
            };
            tx.execute(
                "INSERT INTO money_credits (id, user_id, operator_id, amount_yen, reason,
                 idempotency_key, request_hash, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    Value::Uuid(credit.id.as_u128()),
                    Value::Uuid(user_id.as_u128()),
                    Value::Uuid(by.id.as_u128()),
                    amount_yen.into(),
                    reason.trim().into(),
                    idempotency_key.into(),
                    request_hash.as_str().into(),
                    credit.status.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            if alone_ok {
                insert_movement(tx, &credit, now_ms)?;
            }
            let action = if alone_ok {
                "wallet.credited"
            } else {
                "wallet.credit_proposed"
            };
            audit(tx, now_ms, &by, action, &credit, reason)?;
            Ok(credit)
        })?;
        self.post_if_pending(credit)
    }

    /// A second operator approves or rejects a credit that awaits it. Approving again after
    /// a crash finishes the same credit (the ledger transfer's id is the credit's), never a
    /// second one.
    pub fn decide_credit(
        &self,
        token: &SecretString,
        credit_id: uuid::Uuid,
        decision: CreditDecision,
        reason: &str,
    ) -> Result<Credit, MoneyError> {
        let now_ms = self.clock_ms();
        let credit = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ApproveCredits)?;
            require_reason(reason)?;
            let mut credit = tx
                .query_opt(
                    &format!("SELECT {CREDIT_COLUMNS} FROM money_credits WHERE id = $1"),
                    &[Value::Uuid(credit_id.as_u128())],
                )?
                .map(|row| credit_from(&row))
                .transpose()?
                .ok_or(MoneyError::CreditNotFound)?;
            let approver = uuid::Uuid::from_u128(by.id.as_u128());
            if credit.proposed_by == approver {
                return Err(MoneyError::CreditSecondOperatorRequired);
            }
            if credit.status != STATUS_AWAITING {
                // The same decision by the same operator again answers what it did.
                let same = credit.decided_by == Some(approver)
                    && (credit.status == STATUS_REJECTED) == (decision == CreditDecision::Reject);
                return if same {
                    Ok(credit)
                } else {
                    Err(MoneyError::CreditAlreadyDecided)
                };
            }
            let changed = tx.execute(
                "UPDATE money_credits SET status = $2, decided_by = $3, decided_at = $4,
                 decision_reason = $5 WHERE id = $1 AND status = 'awaiting_approval'",
                &[
                    Value::Uuid(credit_id.as_u128()),
                    decision.status().into(),
                    Value::Uuid(by.id.as_u128()),
                    now_ms.into(),
                    reason.trim().into(),
                ],
            )?;
            if changed != 1 {
                return Err(MoneyError::CreditAlreadyDecided);
            }
            credit.status = decision.status().to_owned();
            credit.decided_by = Some(approver);
            if decision == CreditDecision::Approve {
                insert_movement(tx, &credit, now_ms)?;
            }
            audit(tx, now_ms, &by, decision.audit_action(), &credit, reason)?;
            Ok(credit)
        })?;
        self.post_if_pending(credit)
    }

    /// Credits in one state (newest first), for the operators who decide them.
    pub fn list_credits(
        &self,
        token: &SecretString,
        status: &str,
    ) -> Result<Vec<Credit>, MoneyError> {
        if ![
            STATUS_AWAITING,
            STATUS_PENDING,
            STATUS_POSTED,
            STATUS_REJECTED,
        ]
        .contains(&status)
        {
            return Err(MoneyError::FilterInvalid("status"));
        }
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            let rows = tx.query(
                &format!(
                    "SELECT {CREDIT_COLUMNS} FROM money_credits WHERE status = $1
                     ORDER BY created_at DESC LIMIT $2"
                ),
                &[status.into(), CREDIT_LIST_MAX.into()],
            )?;
            rows.iter()
                .map(|row| credit_from(row).map_err(MoneyError::from))
                .collect()
        })
    }

    /// Moves a `pending` credit's money (once: the transfer id is the credit's) and marks it
    /// posted; any other state is returned as it is.
    fn post_if_pending(&self, mut credit: Credit) -> Result<Credit, MoneyError> {
        if credit.status != STATUS_PENDING {
            return Ok(credit);
        }
        let wallet = accounts::wallet(credit.user_id.as_u128())?;
        let compensation = accounts::compensation()?;
        accounts::ensure(
            self.ledger(),
            &[(wallet, code::WALLET), (compensation, code::COMPENSATION)],
        )?;
        let moved = accounts::move_once(
            self.ledger(),
            credit.id.as_u128(),
            compensation,
            wallet,
            credit.amount_yen,
            transfer::CREDIT,
        )?;
        if moved != Moved::Posted {
            return Err(MoneyError::Internal(
                "the compensation account refused a credit".to_owned(),
            ));
        }
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE money_credits SET status = 'posted' WHERE id = $1 AND status = 'pending'",
                &[Value::Uuid(credit.id.as_u128())],
            )?;
            tx.execute(
                "UPDATE money_movements SET status = 'posted', updated_at = $2
                 WHERE id = $1 AND status = 'pending'",
                &[Value::Uuid(credit.id.as_u128()), now_ms.into()],
            )
        })?;
        credit.status = STATUS_POSTED.to_owned();
        Ok(credit)
    }
}

/// The wallet's history row for a credit whose money is about to move.
fn insert_movement(tx: &mut dyn Tx, credit: &Credit, now_ms: i64) -> Result<u64, MoneyError> {
    Ok(tx.execute(
        "INSERT INTO money_movements (id, user_id, kind, amount_yen, status, counterparty,
         created_at, updated_at)
         VALUES ($1, $2, 'transfer_in', $3, 'pending', 'Kinko', $4, $4)",
        &[
            Value::Uuid(credit.id.as_u128()),
            Value::Uuid(credit.user_id.as_u128()),
            credit.amount_yen.into(),
            now_ms.into(),
        ],
    )?)
}

fn audit(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &Operator,
    action: &'static str,
    credit: &Credit,
    reason: &str,
) -> Result<(), MoneyError> {
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(by.id.as_u128()),
            action,
            subject_kind: "user",
            subject_id: &credit.user_id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({
                "credit_id": credit.id,
                "amount_yen": credit.amount_yen,
                "proposed_by": credit.proposed_by,
                "status": credit.status,
            }),
        },
    )?;
    Ok(())
}
