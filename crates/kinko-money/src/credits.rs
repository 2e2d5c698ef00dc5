//! Credits: Kinko pays a wallet from its own compensation account — confirmed fraud made
//! good (THREATS requirement 23), goodwill. Only analysts and admins (`ReviewCases`), always
//! with a reason, audited in the transaction that records the credit, idempotent per operator
//! and `Idempotency-Key`. The row is written first; the ledger moves the money under the row's
//! id (so a retry moves it once); then the row is marked posted.

use kinko_audit::{Actor, AuditEntry};
use kinko_identity::operator::{Permission, require_reason};
use kinko_store::sql::{Tx, Value};
use secrecy::SecretString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{self, Moved, code, transfer};
use crate::charge::MoneyService;
use crate::error::MoneyError;
use crate::transfers::check_key;

/// One credit pays at most this much.
pub const CREDIT_MAX_YEN: i64 = 10_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credit {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub amount_yen: i64,
    /// `posted`, or `pending` until the ledger has answered.
    pub status: String,
    pub created_at_ms: i64,
}

impl MoneyService {
    /// Credits `amount_yen` to `user_id`'s wallet for the operator holding `token`.
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
        let mut credit = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(Permission::ReviewCases)?;
            require_reason(reason)?;
            if let Some(existing) = tx.query_opt(
                "SELECT id, user_id, amount_yen, status, created_at, request_hash
                 FROM money_credits WHERE operator_id = $1 AND idempotency_key = $2",
                &[Value::Uuid(by.id.as_u128()), idempotency_key.into()],
            )? {
                if existing.text(5)? != request_hash {
                    return Err(MoneyError::IdempotencyKeyReused);
                }
                return Ok(Credit {
                    id: uuid::Uuid::from_u128(existing.uuid(0)?),
                    user_id: uuid::Uuid::from_u128(existing.uuid(1)?),
                    amount_yen: existing.int(2)?,
                    status: existing.text(3)?,
                    created_at_ms: existing.int(4)?,
                });
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
            let id = uuid::Uuid::now_v7();
            tx.execute(
                "INSERT INTO money_credits (id, user_id, operator_id, amount_yen, reason,
                 idempotency_key, request_hash, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(user_id.as_u128()),
                    Value::Uuid(by.id.as_u128()),
                    amount_yen.into(),
                    reason.trim().into(),
                    idempotency_key.into(),
                    request_hash.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            tx.execute(
                "INSERT INTO money_movements (id, user_id, kind, amount_yen, status, counterparty,
                 created_at, updated_at)
                 VALUES ($1, $2, 'transfer_in', $3, 'pending', 'Kinko', $4, $4)",
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(user_id.as_u128()),
                    amount_yen.into(),
                    now_ms.into(),
                ],
            )?;
            kinko_audit::append(
                tx,
                now_ms,
                &AuditEntry {
                    actor: Actor::Operator(by.id.as_u128()),
                    action: "wallet.credited",
                    subject_kind: "user",
                    subject_id: &user_id.to_string(),
                    reason: reason.trim(),
                    detail: serde_json::json!({ "credit_id": id, "amount_yen": amount_yen }),
                },
            )?;
            Ok(Credit {
                id,
                user_id,
                amount_yen,
                status: "pending".to_owned(),
                created_at_ms: now_ms,
            })
        })?;
        if credit.status == "pending" {
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
            self.identity_database().transaction(|tx: &mut dyn Tx| {
                tx.execute(
                    "UPDATE money_credits SET status = 'posted' WHERE id = $1",
                    &[Value::Uuid(credit.id.as_u128())],
                )?;
                tx.execute(
                    "UPDATE money_movements SET status = 'posted', updated_at = $2 WHERE id = $1",
                    &[Value::Uuid(credit.id.as_u128()), now_ms.into()],
                )
            })?;
            credit.status = "posted".to_owned();
        }
        Ok(credit)
    }
}
