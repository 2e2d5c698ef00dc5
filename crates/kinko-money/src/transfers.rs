//! Person-to-person transfers by handle: one single-phase ledger transfer wallet → wallet.
//! The sender's wallet can never go negative (the ledger's flag on every wallet), so however
//! many transfers race, only what the balance covers goes through. The row is written first
//! with its `Idempotency-Key`; a crash before the ledger answers leaves it pending, and the
//! reconciler submits the same transfer again (the ledger treats the same id as the same
//! transfer) and finishes it.

use kinko_identity::session::SessionInfo;
use kinko_ledger::{CreateTransferResult, LEDGER_JPY, TransferId, TransferRequest};
use kinko_store::sql::{Row, Tx, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{self, code, transfer};
use crate::charge::{IDEMPOTENCY_KEY_LENGTH_MAX, MoneyError, MoneyService};

/// A handle is 3–20 of `a-z`, `0-9` and `_`, stored lower-case.
pub const HANDLE_LENGTH_MIN: usize = 3;
pub const HANDLE_LENGTH_MAX: usize = 20;
/// Handles one wallet may look up (a transfer sent or a handle claimed, found or not) per
/// [`HANDLE_LOOKUP_WINDOW_MS`]: more than a person pays or renames in an hour (a wallet
/// sending 60 at once is tested), far too few to enumerate who is on Kinko: 2,400 a day from a
/// verified wallet, against unlimited before (THREATS: every guess limited).
pub const HANDLE_LOOKUPS_MAX: i64 = 100;
pub const HANDLE_LOOKUP_WINDOW_MS: i64 = 60 * 60 * 1000;
/// A note to the recipient: at most this many characters, no control characters.
pub const NOTE_LENGTH_MAX: usize = 100;
/// One transfer moves at most this much.
pub const TRANSFER_MAX_YEN: i64 = 1_000_000;

/// What a send asks for.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub to_handle: String,
    pub amount_yen: i64,
    pub note: String,
    pub idempotency_key: String,
}

/// A transfer as its sender sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct P2pTransfer {
    pub id: uuid::Uuid,
    pub to_handle: String,
    pub amount_yen: i64,
    pub note: String,
    /// `posted`, `rejected` (with `reason`) or `pending`.
    pub status: String,
    pub reason: Option<String>,
    pub created_at_ms: i64,
}

/// A normalised handle, or why it is not one.
pub fn normalize_handle(raw: &str) -> Result<String, MoneyError> {
    let handle = raw.trim().trim_start_matches('@').to_ascii_lowercase();
    let valid = (HANDLE_LENGTH_MIN..=HANDLE_LENGTH_MAX).contains(&handle.len())
        && handle
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if valid {
        Ok(handle)
    } else {
        Err(MoneyError::HandleInvalid)
    }
}

fn handle_of(tx: &mut dyn Tx, user_id: u128) -> Result<Option<String>, kinko_ledger::StoreError> {
    tx.query_opt(
        "SELECT handle FROM money_handles WHERE user_id = $1",
        &[Value::Uuid(user_id)],
    )?
    .map(|row| row.text(0))
    .transpose()
}

const TRANSFER_COLUMNS: &str = "t.id, h.handle, t.amount_yen, t.note, t.status, t.reason, t.created_at, t.request_hash, \
     t.from_user, t.to_user";

fn transfer_from(row: &Row) -> Result<P2pTransfer, kinko_ledger::StoreError> {
    Ok(P2pTransfer {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        to_handle: row.opt_text(1)?.unwrap_or_default(),
        amount_yen: row.int(2)?,
        note: row.text(3)?,
        status: row.text(4)?,
        reason: row.opt_text(5)?,
        created_at_ms: row.int(6)?,
    })
}

impl MoneyService {
    /// Sets (or changes) the wallet's handle; another wallet's handle is `MONEY_HANDLE_TAKEN`.
    pub fn set_handle(&self, session: &SessionInfo, raw: &str) -> Result<String, MoneyError> {
        let handle = normalize_handle(raw)?;
        self.count_handle_lookup(session.user_id)?;
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let owner = tx.query_opt(
                "SELECT user_id FROM money_handles WHERE handle = $1",
                &[handle.as_str().into()],
            )?;
            match owner.map(|row| row.uuid(0)).transpose()? {
                Some(owner) if owner == session.user_id => return Ok(()),
                Some(_) => return Err(MoneyError::HandleTaken),
                None => {}
            }
            tx.execute(
                "DELETE FROM money_handles WHERE user_id = $1",
                &[Value::Uuid(session.user_id)],
            )?;
            tx.execute(
                "INSERT INTO money_handles (user_id, handle, created_at) VALUES ($1, $2, $3)",
                &[
                    Value::Uuid(session.user_id),
                    handle.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(handle)
    }

    /// Sends money to the wallet with `to_handle`.
    pub fn send(
        &self,
        session: &SessionInfo,
        request: &SendRequest,
    ) -> Result<P2pTransfer, MoneyError> {
        self.gate(session, false)?;
        if request.amount_yen <= 0 || request.amount_yen > TRANSFER_MAX_YEN {
            return Err(MoneyError::AmountInvalid);
        }
        check_key(&request.idempotency_key)?;
        let note = request.note.trim().to_owned();
        if note.chars().count() > NOTE_LENGTH_MAX || note.chars().any(char::is_control) {
            return Err(MoneyError::NoteInvalid);
        }
        let to_handle = normalize_handle(&request.to_handle)?;
        self.count_handle_lookup(session.user_id)?;
        self.score_money_out(
            session,
            crate::risk::MoneyOut::P2p {
                to_handle: &to_handle,
                amount_yen: request.amount_yen,
                idempotency_key: &request.idempotency_key,
            },
        )?;
        let user_id = session.user_id;
        let request_hash = format!(
            "{:x}",
            Sha256::digest(format!("send|{to_handle}|{}|{note}", request.amount_yen))
        );
        let now_ms = self.clock_ms();
        let transfer_id = uuid::Uuid::now_v7();
        let row = self.identity_database().transaction(|tx: &mut dyn Tx| {
            // The sender's row lock orders every request under one key: the second of two
            // concurrent ones finds the first's row (the saved answer), never a unique-index
            // violation.
            tx.query_opt(
                &format!(
                    "SELECT id FROM identity_users WHERE id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(user_id)],
            )?;
            if let Some(existing) = tx.query_opt(
                &format!(
                    "SELECT {TRANSFER_COLUMNS} FROM money_transfers t
                     LEFT JOIN money_handles h ON h.user_id = t.to_user
                     WHERE t.from_user = $1 AND t.idempotency_key = $2"
                ),
                &[Value::Uuid(user_id), request.idempotency_key.as_str().into()],
            )? {
                if existing.text(7)? != request_hash {
                    return Err(MoneyError::IdempotencyKeyReused);
                }
                return Ok((transfer_from(&existing)?, existing.uuid(9)?, true));
            }
            let recipient = tx
                .query_opt(
                    "SELECT h.user_id FROM money_handles h
                     JOIN identity_users u ON u.id = h.user_id
                     WHERE h.handle = $1 AND u.status = 'active'",
                    &[to_handle.as_str().into()],
                )?
                .map(|row| row.uuid(0))
                .transpose()?
                .ok_or(MoneyError::RecipientNotFound)?;
            if recipient == user_id {
                return Err(MoneyError::RecipientInvalid);
            }
            tx.execute(
                "INSERT INTO money_transfers (id, from_user, to_user, amount_yen, note,
                 idempotency_key, request_hash, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
                &[
                    Value::Uuid(transfer_id.as_u128()),
                    Value::Uuid(user_id),
                    Value::Uuid(recipient),
                    request.amount_yen.into(),
                    note.as_str().into(),
                    request.idempotency_key.as_str().into(),
                    request_hash.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            tx.execute(
                "INSERT INTO money_movements (id, user_id, kind, amount_yen, status, counterparty,
                 created_at, updated_at) VALUES ($1, $2, 'transfer_out', $3, 'pending', $4, $5, $5)",
                &[
                    Value::Uuid(transfer_id.as_u128()),
                    Value::Uuid(user_id),
                    request.amount_yen.into(),
                    format!("@{to_handle}").into(),
                    now_ms.into(),
                ],
            )?;
            Ok((
                P2pTransfer {
                    id: transfer_id,
                    to_handle: to_handle.clone(),
                    amount_yen: request.amount_yen,
                    note: note.clone(),
                    status: "pending".to_owned(),
                    reason: None,
                    created_at_ms: now_ms,
                },
                recipient,
                false,
            ))
        })?;
        let (mut sent, recipient, replayed) = row;
        if replayed && sent.status != "pending" {
            return Ok(sent);
        }
        self.settle_transfer(&mut sent, user_id, recipient)?;
        Ok(sent)
    }

    /// Counts one handle lookup by `user_id` in its own transaction (a lookup that finds
    /// nothing rolls its own transaction back, and must count all the same); refused beyond
    /// [`HANDLE_LOOKUPS_MAX`] in the window, across processes.
    fn count_handle_lookup(&self, user_id: u128) -> Result<(), MoneyError> {
        let now_ms = self.clock_ms();
        let bucket = format!("handle_lookup:user:{}", uuid::Uuid::from_u128(user_id));
        let decision = self.identity_database().transaction(|tx: &mut dyn Tx| {
            kinko_identity::ratelimit::hit(
                tx,
                now_ms,
                &bucket,
                HANDLE_LOOKUP_WINDOW_MS,
                HANDLE_LOOKUPS_MAX,
            )
        })?;
        match decision {
            kinko_identity::ratelimit::Decision::Allowed => Ok(()),
            kinko_identity::ratelimit::Decision::Limited { retry_after_ms } => {
                Err(MoneyError::HandleLookupRateLimited { retry_after_ms })
            }
        }
    }

    /// Submits the ledger transfer (the same id is the same transfer) and records the outcome:
    /// posted (and the recipient's movement appears) or rejected for insufficient funds.
    fn settle_transfer(
        &self,
        sent: &mut P2pTransfer,
        from_user: u128,
        to_user: u128,
    ) -> Result<(), MoneyError> {
        let from = accounts::wallet(from_user)?;
        let to = accounts::wallet(to_user)?;
        accounts::ensure(self.ledger(), &[(from, code::WALLET), (to, code::WALLET)])?;
        let request = TransferRequest::single_phase(
            TransferId::from_u128(sent.id.as_u128())
                .map_err(|error| MoneyError::Internal(error.to_string()))?,
            from,
            to,
            u64::try_from(sent.amount_yen)
                .map_err(|error| MoneyError::Internal(error.to_string()))?,
            LEDGER_JPY,
            transfer::TRANSFER,
        );
        let results = self.ledger().create_transfers_blocking(vec![request])?;
        let (status, reason) = match results.first() {
            Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => ("posted", None),
            // Refused once, refused for good (`id_already_failed`): a replay after a top-up
            // cannot send what its first attempt could not.
            Some(CreateTransferResult::ExceedsCredits | CreateTransferResult::IdAlreadyFailed) => {
                ("rejected", Some("insufficient_funds"))
            }
            other => {
                return Err(MoneyError::Internal(format!("transfer refused: {other:?}")));
            }
        };
        let now_ms = self.clock_ms();
        let stored = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let updated = tx.execute(
                "UPDATE money_transfers SET status = $2, reason = $3, resolved_at = $4
                 WHERE id = $1 AND status = 'pending'",
                &[
                    Value::Uuid(sent.id.as_u128()),
                    status.into(),
                    reason.map_or(Value::Null, Into::into),
                    now_ms.into(),
                ],
            )?;
            if updated != 1 {
                // Finished already (by the request or the reconciler): the row decides.
                let row = tx.query_one(
                    "SELECT status, reason FROM money_transfers WHERE id = $1",
                    &[Value::Uuid(sent.id.as_u128())],
                )?;
                return Ok::<_, MoneyError>(Some((row.text(0)?, row.opt_text(1)?)));
            }
            tx.execute(
                "UPDATE money_movements SET status = $2, updated_at = $3 WHERE id = $1",
                &[Value::Uuid(sent.id.as_u128()), status.into(), now_ms.into()],
            )?;
            if status == "posted" {
                let from_handle = handle_of(tx, from_user)?
                    .map_or_else(|| "Kinko".to_owned(), |handle| format!("@{handle}"));
                tx.execute(
                    "INSERT INTO money_movements (id, user_id, kind, amount_yen, status,
                     counterparty, created_at, updated_at)
                     VALUES ($1, $2, 'transfer_in', $3, 'posted', $4, $5, $5)",
                    &[
                        Value::Uuid(uuid::Uuid::now_v7().as_u128()),
                        Value::Uuid(to_user),
                        sent.amount_yen.into(),
                        from_handle.into(),
                        now_ms.into(),
                    ],
                )?;
            }
            Ok(None)
        })?;
        match stored {
            None => {
                sent.status = status.to_owned();
                sent.reason = reason.map(str::to_owned);
            }
            Some((stored_status, stored_reason)) => {
                sent.status = stored_status;
                sent.reason = stored_reason;
            }
        }
        Ok(())
    }

    /// Finishes transfers left pending by a crash (older than `older_than_ms`); a row that
    /// fails is logged and skipped (see `reconcile.rs`). Answers how many it finished.
    pub fn reconcile_transfers(&self, older_than_ms: i64) -> Result<u64, MoneyError> {
        let cutoff_ms = self.clock_ms() - older_than_ms;
        let sql = format!(
            "SELECT {TRANSFER_COLUMNS} FROM money_transfers t
             LEFT JOIN money_handles h ON h.user_id = t.to_user WHERE {}",
            crate::reconcile::after_cursor("t")
        );
        let mut finished = 0;
        self.sweep(
            &self.sweeps.transfers,
            &sql,
            cutoff_ms,
            |row| Ok((row.int(6)?, row.uuid(0)?)),
            |row| {
                let mut sent = transfer_from(row)?;
                self.settle_transfer(&mut sent, row.uuid(8)?, row.uuid(9)?)?;
                finished += 1;
                Ok(())
            },
        )?;
        Ok(finished)
    }
}

/// An `Idempotency-Key` is 1–255 visible ASCII characters.
pub(crate) fn check_key(key: &str) -> Result<(), MoneyError> {
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_LENGTH_MAX
        || !key.bytes().all(|byte| (b'!'..=b'~').contains(&byte))
    {
        Err(MoneyError::IdempotencyKeyInvalid)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_short_lower_case_words() {
        assert_eq!(
            normalize_handle("@Hanako_01").ok().as_deref(),
            Some("hanako_01")
        );
        for bad in [
            "ab",
            "has space",
            "ハナコ",
            "a-b",
            "x".repeat(21).as_str(),
            "",
        ] {
            assert!(normalize_handle(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_visible_ascii() {
        assert!(check_key("order-1").is_ok());
        for bad in ["", "has space", "tab\t", "キー"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_key(&"k".repeat(256)).is_err());
    }
}
