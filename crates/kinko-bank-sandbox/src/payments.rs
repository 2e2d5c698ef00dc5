//! Debits and credits on a linked account, each under the client's `Idempotency-Key`: the
//! first request decides, every retry with the same key and body gets the saved answer (a
//! rejection too), and the same key with another body is refused. A debit and its balance
//! update are one transaction under the account's row lock, so concurrent debits never
//! overdraw; every debit is told to the customer on the bank's own channel.

use kinko_store::sql::{Row, Tx, Value};

use crate::client_auth;
use crate::oauth::{Bank, ResourceGrant, masked};
use crate::random::stored_hash;
use crate::resource::{self, ResourceError};
use crate::store;

/// `Idempotency-Key` bounds: 1–255 visible ASCII characters.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// A description is what the customer reads on the notice and statement.
pub const DESCRIPTION_LENGTH_MAX: usize = 140;
/// Why a debit or credit was rejected.
pub const REASON_INSUFFICIENT_FUNDS: &str = "insufficient_funds";
pub const REASON_BALANCE_LIMIT: &str = "balance_limit";
/// The order reached the bank after its `not_after_ms`: refused, and the key is spent.
pub const REASON_ORDER_EXPIRED: &str = "order_expired";
/// Sandbox test hook: while the file this names exists, every debit, credit and refresh grant
/// waits before the bank decides it (at most [`HOLD_MAX`]), as a slow network or a busy bank
/// would.
pub const HOLD_PAYMENTS_FILE_ENV: &str = "KINKO_SANDBOX_HOLD_PAYMENTS_FILE";
const HOLD_MAX: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentKind {
    Debit,
    Credit,
}

impl PaymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Debit => "debit",
            PaymentKind::Credit => "credit",
        }
    }

    /// The scope a token needs for this kind.
    pub fn scope(self) -> &'static str {
        match self {
            PaymentKind::Debit => "debits",
            PaymentKind::Credit => "credits",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    pub amount_yen: i64,
    pub description: String,
    /// The client's deadline for this order, ms since the epoch: the bank refuses the order
    /// if it decides it later (`order_expired`). Optional in the protocol; Kinko always sends
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Settled,
    Rejected,
}

/// The bank's answer, saved and replayed for every retry with the same key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PaymentResult {
    pub id: uuid::Uuid,
    pub status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after_yen: Option<i64>,
}

/// Checks an `Idempotency-Key`: 1–255 characters from `!` to `~`.
pub fn check_idempotency_key(key: &str) -> Result<(), ResourceError> {
    let valid = !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_LENGTH_MAX
        && key.bytes().all(|byte| (0x21..=0x7E).contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(ResourceError::IdempotencyKeyInvalid)
    }
}

fn check_request(request: &PaymentRequest) -> Result<(), ResourceError> {
    if request.amount_yen <= 0 {
        return Err(ResourceError::RequestInvalid("amount_yen"));
    }
    let description_valid = !request.description.trim().is_empty()
        && request.description.chars().count() <= DESCRIPTION_LENGTH_MAX
        && !request.description.chars().any(char::is_control);
    if !description_valid {
        return Err(ResourceError::RequestInvalid("description"));
    }
    Ok(())
}

/// What makes two requests "the same": account, amount and description. Control characters
/// are refused, so the newline-joined form is unambiguous.
fn request_hash(account_id: uuid::Uuid, request: &PaymentRequest) -> String {
    let deadline = request
        .not_after_ms
        .map_or_else(String::new, |not_after_ms| format!("\n{not_after_ms}"));
    stored_hash(&format!(
        "{account_id}\n{}\n{}{deadline}",
        request.amount_yen, request.description
    ))
}

/// The sandbox's slow bank (see [`HOLD_PAYMENTS_FILE_ENV`]); returns at once when unset.
pub fn hold_while_asked() {
    let Ok(path) = std::env::var(HOLD_PAYMENTS_FILE_ENV) else {
        return;
    };
    let started = std::time::Instant::now();
    while std::path::Path::new(&path).exists() && started.elapsed() < HOLD_MAX {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn result_from_row(row: &Row) -> Result<PaymentResult, kinko_ledger::StoreError> {
    let status = match row.text(1)?.as_str() {
        "settled" => PaymentStatus::Settled,
        _ => PaymentStatus::Rejected,
    };
    Ok(PaymentResult {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        status,
        reason: row.opt_text(2)?,
        balance_after_yen: row.opt_int(3)?,
    })
}

/// The saved payment of this client under this key, with its request hash.
fn saved(
    tx: &mut dyn Tx,
    client_id: &str,
    kind: PaymentKind,
    key: &str,
) -> Result<Option<(PaymentResult, String, uuid::Uuid)>, kinko_ledger::StoreError> {
    tx.query_opt(
        "SELECT id, status, reason, balance_after_yen, request_hash, account_id
         FROM bank_payments WHERE client_id = $1 AND kind = $2 AND idempotency_key = $3",
        &[client_id.into(), kind.as_str().into(), key.into()],
    )?
    .map(|row| {
        Ok((
            result_from_row(&row)?,
            row.text(4)?,
            uuid::Uuid::from_u128(row.uuid(5)?),
        ))
    })
    .transpose()
}

/// An amount of yen as customers read it: `12,345円`.
fn yen(amount_yen: i64) -> String {
    format!("{}円", grouped(amount_yen))
}

/// An integer with thousands separators: `-1,234,567`.
pub fn grouped(amount: i64) -> String {
    let digits = amount.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if amount < 0 { "-" } else { "" };
    format!("{sign}{grouped}")
}

impl Bank {
    /// `POST /v1/debits`: takes `amount_yen` from the grant's account, or rejects it for
    /// insufficient funds; either answer is saved under the key.
    pub fn debit(
        &self,
        grant: &ResourceGrant,
        idempotency_key: &str,
        request: &PaymentRequest,
        now_ms: i64,
    ) -> Result<PaymentResult, ResourceError> {
        self.pay(PaymentKind::Debit, grant, idempotency_key, request, now_ms)
    }

    /// `POST /v1/credits`: pays `amount_yen` into the grant's account.
    pub fn credit(
        &self,
        grant: &ResourceGrant,
        idempotency_key: &str,
        request: &PaymentRequest,
        now_ms: i64,
    ) -> Result<PaymentResult, ResourceError> {
        self.pay(PaymentKind::Credit, grant, idempotency_key, request, now_ms)
    }

    fn pay(
        &self,
        kind: PaymentKind,
        grant: &ResourceGrant,
        key: &str,
        request: &PaymentRequest,
        now_ms: i64,
    ) -> Result<PaymentResult, ResourceError> {
        resource::require_scope(grant, kind.scope())?;
        check_idempotency_key(key)?;
        check_request(request)?;
        let hash = request_hash(grant.account_id, request);
        self.database().transaction(|tx: &mut dyn Tx| {
            // The account's row lock first: every payment on the account, and every retry of
            // one, runs one after the other, so the key check below sees what came before.
            let balance_yen = tx
                .query_opt(
                    &format!(
                        "SELECT balance_yen FROM bank_accounts WHERE id = $1 AND customer_id = $2{}",
                        tx.for_update()
                    ),
                    &[
                        Value::Uuid(grant.account_id.as_u128()),
                        Value::Uuid(grant.customer_id.as_u128()),
                    ],
                )?
                .ok_or(ResourceError::NotFound)?
                .int(0)?;
            if let Some(answer) = replay(tx, grant, kind, key, &hash)? {
                return Ok(answer);
            }
            // Decided after the client's deadline: refused, and saved under the key like any
            // answer, so the key can never move money afterwards.
            let expired = request
                .not_after_ms
                .is_some_and(|not_after_ms| now_ms > not_after_ms);
            let balance_after_yen = match kind {
                _ if expired => None,
                PaymentKind::Debit => balance_yen
                    .checked_sub(request.amount_yen)
                    .filter(|balance| *balance >= 0),
                PaymentKind::Credit => balance_yen.checked_add(request.amount_yen),
            };
            let (status, reason) = match (balance_after_yen, kind) {
                _ if expired => (PaymentStatus::Rejected, Some(REASON_ORDER_EXPIRED)),
                (Some(_), _) => (PaymentStatus::Settled, None),
                (None, PaymentKind::Debit) => (PaymentStatus::Rejected, Some(REASON_INSUFFICIENT_FUNDS)),
                (None, PaymentKind::Credit) => (PaymentStatus::Rejected, Some(REASON_BALANCE_LIMIT)),
            };
            let id = uuid::Uuid::now_v7();
            let inserted = tx.execute(
                "INSERT INTO bank_payments (client_id, kind, idempotency_key, id, account_id,
                 request_hash, amount_yen, description, status, reason, balance_after_yen,
                 created_at_ms, link_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (client_id, kind, idempotency_key) DO NOTHING",
                &[
                    grant.client_id.as_str().into(),
                    kind.as_str().into(),
                    key.into(),
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(grant.account_id.as_u128()),
                    hash.as_str().into(),
                    request.amount_yen.into(),
                    request.description.as_str().into(),
                    match status {
                        PaymentStatus::Settled => "settled",
                        PaymentStatus::Rejected => "rejected",
                    }
                    .into(),
                    reason.map_or(Value::Null, Value::from),
                    balance_after_yen.map_or(Value::Null, Value::from),
                    now_ms.into(),
                    // Which link paid: a report of this debit ends that link.
                    Value::Uuid(grant.link_id.as_u128()),
                ],
            )?;
            if inserted != 1 {
                // The same key went in at the same moment on another account: answer as a
                // retry would, without touching the balance.
                return replay(tx, grant, kind, key, &hash)?
                    .ok_or(ResourceError::IdempotencyKeyReused);
            }
            if let Some(balance) = balance_after_yen {
                tx.execute(
                    "UPDATE bank_accounts SET balance_yen = $2 WHERE id = $1",
                    &[Value::Uuid(grant.account_id.as_u128()), balance.into()],
                )?;
            }
            let client_name = client_auth::find(tx, &grant.client_id)?
                .map_or_else(|| grant.client_id.clone(), |client| client.name);
            let account = store::account(tx, grant.account_id)?.ok_or(ResourceError::NotFound)?;
            let place = format!(
                "{} 支店 {} {}",
                account.branch,
                account.kind.label_ja(),
                masked(&account.number)
            );
            let (notice_kind, body) = match (kind, status) {
                (PaymentKind::Debit, PaymentStatus::Settled) => (
                    "debit_settled",
                    format!(
                        "{client_name} の請求により、{place} から {} を引き落としました（{}）。\
                         心当たりがない場合はすぐに当行にご連絡ください。",
                        yen(request.amount_yen),
                        request.description
                    ),
                ),
                (PaymentKind::Debit, PaymentStatus::Rejected) => (
                    "debit_rejected",
                    format!(
                        "{client_name} から {place} への {} の引き落とし請求がありましたが、\
                         残高不足のためお受けしませんでした（{}）。",
                        yen(request.amount_yen),
                        request.description
                    ),
                ),
                (PaymentKind::Credit, _) => (
                    "credit",
                    format!(
                        "{client_name} から {place} へ {} の入金がありました（{}）。",
                        yen(request.amount_yen),
                        request.description
                    ),
                ),
            };
            if !expired && (kind == PaymentKind::Debit || status == PaymentStatus::Settled) {
                store::record_notice(tx, grant.customer_id, notice_kind, &body, now_ms)?;
            }
            Ok(PaymentResult {
                id,
                status,
                reason: reason.map(str::to_owned),
                balance_after_yen,
            })
        })
    }

    /// `GET /v1/debits/{key}` and `GET /v1/credits/{key}`: the saved answer, for
    /// reconciliation. Only the client that used the key, with a token for the same account,
    /// sees it.
    pub fn payment(
        &self,
        grant: &ResourceGrant,
        kind: PaymentKind,
        key: &str,
    ) -> Result<PaymentResult, ResourceError> {
        resource::require_scope(grant, kind.scope())?;
        check_idempotency_key(key)?;
        self.database()
            .transaction(|tx: &mut dyn Tx| saved(tx, &grant.client_id, kind, key))?
            .filter(|(_, _, account_id)| *account_id == grant.account_id)
            .map(|(answer, _, _)| answer)
            .ok_or(ResourceError::NotFound)
    }
}

impl Bank {
    /// `POST /v1/payments/lookup` (form, `private_key_jwt`): the saved answer for one of the
    /// authenticated client's own keys, whatever became of the link or its tokens since — how
    /// a client settles an order in doubt on a link that has ended (unlinked, revoked, reported).
    /// Another client's key, or a key never used, is `404` alike.
    pub fn payment_by_client(
        &self,
        client_assertion: &str,
        kind: PaymentKind,
        key: &str,
        now_ms: i64,
    ) -> Result<PaymentResult, ResourceError> {
        let client = self.authenticate_client(client_assertion, now_ms)?;
        check_idempotency_key(key)?;
        self.database()
            .transaction(|tx: &mut dyn Tx| saved(tx, &client.client_id, kind, key))?
            .map(|(answer, _, _)| answer)
            .ok_or(ResourceError::NotFound)
    }
}

impl Bank {
    /// `POST /v1/refunds` (form, `private_key_jwt`): pays back into the account that one of
    /// the client's settled debits (`original_key`) took from, at most that debit's amount,
    /// under the client's `key` — whatever became of the link since (a victim's link is
    /// usually ended by the time the refund comes). Saved and replayed like any credit, and
    /// found by `POST /v1/payments/lookup` as a `credit`.
    pub fn refund_by_client(
        &self,
        client_assertion: &str,
        original_key: &str,
        key: &str,
        request: &PaymentRequest,
        now_ms: i64,
    ) -> Result<PaymentResult, ResourceError> {
        let client = self.authenticate_client(client_assertion, now_ms)?;
        check_idempotency_key(original_key)?;
        check_idempotency_key(key)?;
        let debit = self.database().transaction(|tx: &mut dyn Tx| {
            tx.query_opt(
                "SELECT p.account_id, p.amount_yen, p.status, p.link_id, a.customer_id
                 FROM bank_payments p JOIN bank_accounts a ON a.id = p.account_id
                 WHERE p.client_id = $1 AND p.kind = 'debit' AND p.idempotency_key = $2",
                &[client.client_id.as_str().into(), original_key.into()],
            )
        })?;
        let debit = debit.ok_or(ResourceError::NotFound)?;
        if debit.text(2)? != "settled" {
            return Err(ResourceError::NotFound);
        }
        if request.amount_yen > debit.int(1)? {
            return Err(ResourceError::RequestInvalid("amount_yen"));
        }
        let grant = ResourceGrant {
            link_id: uuid::Uuid::from_u128(debit.uuid(3)?),
            client_id: client.client_id.clone(),
            customer_id: uuid::Uuid::from_u128(debit.uuid(4)?),
            account_id: uuid::Uuid::from_u128(debit.uuid(0)?),
            scope: PaymentKind::Credit.scope().to_owned(),
        };
        self.pay(PaymentKind::Credit, &grant, key, request, now_ms)
    }
}

/// The saved answer if this key was used before: the same one for the same request, a
/// refusal for another.
fn replay(
    tx: &mut dyn Tx,
    grant: &ResourceGrant,
    kind: PaymentKind,
    key: &str,
    hash: &str,
) -> Result<Option<PaymentResult>, ResourceError> {
    match saved(tx, &grant.client_id, kind, key)? {
        None => Ok(None),
        Some((answer, saved_hash, _)) if saved_hash == hash => Ok(Some(answer)),
        Some(_) => Err(ResourceError::IdempotencyKeyReused),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_idempotency_key, yen};

    #[test]
    fn yen_groups_thousands() {
        assert_eq!(yen(1_000), "1,000円");
        assert_eq!(yen(999), "999円");
        assert_eq!(yen(1_234_567), "1,234,567円");
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_up_to_255() {
        assert!(check_idempotency_key("a").is_ok());
        assert!(check_idempotency_key(&"k".repeat(255)).is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
        assert!(check_idempotency_key("with space").is_err());
        assert!(check_idempotency_key("日本").is_err());
    }
}
