//! Payments wallet → merchant and refunds merchant → wallet.
//!
//! Two ways to pay, both ending in one single-phase ledger transfer wallet → the merchant's
//! payable (the wallet's flag makes an overdraft impossible, however many payments race):
//! - **merchant-presented codes**: the payer's app sends the scanned payload. It is parsed
//!   strictly and then used only as a key into Kinko's records: a static code names a
//!   merchant (the payer types the amount), a dynamic one names a payment request whose
//!   recorded amount is charged — a code whose amount differs is refused, whatever its CRC.
//!   The payer is shown the merchant's name from the records first (`resolve_qr`);
//! - **consumer-presented codes**: the payer's app shows a signed one-time code (≤ 60 s); the
//!   merchant's till redeems it through the merchant API, once.
//!
//! Each payment and refund row is written first with its `Idempotency-Key` (the payer's for a
//! scanned code, the merchant's for a redeemed code or a refund), then the ledger moves the
//! money under the row's id, then the row records the outcome. A crash in between leaves the
//! row pending; the reconciler submits the same transfer again (same id, so at most once).
//! A payment's `refunded_yen` counts pending and posted refunds, raised under the payment's row
//! lock, so refunds can never add up to more than the payment.

use kinko_identity::session::SessionInfo;
use kinko_qr::{MerchantQr, Payment as QrPayment, QrReference};
use kinko_store::sql::{Dialect, Row, Tx, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::{self, Moved, transfer};
use crate::charge::MoneyService;
use crate::error::MoneyError;
use crate::merchants::{self, Merchant};
use crate::transfers::check_key;

/// One payment moves at most this much.
pub const PAYMENT_MAX_YEN: i64 = 1_000_000;
/// The ceiling of a pay code shown from a wallet page, which does not ask for one: a basket at
/// a convenience store or a restaurant bill, so a till cannot take up to [`PAYMENT_MAX_YEN`].
pub const PAY_CODE_DEFAULT_MAX_YEN: i64 = 10_000;
/// How long a dynamic code's payment request can be paid.
pub const PAYMENT_REQUEST_LIFETIME_MS: i64 = 10 * 60 * 1_000;
/// A payment request's reference: 1–25 of `A-Z a-z 0-9 - _`.
pub const REFERENCE_CHARS_MAX: usize = 25;
/// A merchant's page of payments holds at most this many.
pub const MERCHANT_PAGE_MAX: u32 = 200;

/// What the payer confirms before paying: the merchant as Kinko knows it, and the amount
/// from Kinko's record for a dynamic code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QrQuote {
    /// `static` (the payer types the amount) or `dynamic`.
    pub kind: &'static str,
    pub merchant_id: uuid::Uuid,
    pub merchant_name: String,
    pub merchant_name_ja: String,
    pub category_code: u16,
    pub amount_yen: Option<i64>,
    pub reference: Option<String>,
    /// The name printed in the code (ID 59 or its Japanese one) is not Kinko's record: a
    /// sticker someone else printed. Show the payer Kinko's name and this warning.
    pub printed_name_differs: bool,
}

/// A scanned code to pay.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub qr: String,
    /// The amount the payer typed: required for a static code; for a dynamic one, if given,
    /// it must be the request's.
    pub amount_yen: Option<i64>,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refund {
    pub id: uuid::Uuid,
    pub payment_id: uuid::Uuid,
    pub amount_yen: i64,
    /// `pending`, `posted` or `rejected` (with `reason`).
    pub status: String,
    pub reason: Option<String>,
    pub created_at_ms: i64,
}

/// A payment as its payer or its merchant sees it (the merchant never sees who paid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Payment {
    pub id: uuid::Uuid,
    pub merchant_id: uuid::Uuid,
    pub merchant_name: String,
    pub merchant_name_ja: String,
    pub amount_yen: i64,
    pub refunded_yen: i64,
    /// `qr_static`, `qr_dynamic` or `pay_code`.
    pub method: String,
    pub reference: Option<String>,
    /// `pending`, `posted` or `rejected` (with `reason`: `insufficient_funds`).
    pub status: String,
    pub reason: Option<String>,
    pub created_at_ms: i64,
    pub refunds: Vec<Refund>,
}

/// A dynamic code made for one sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentRequest {
    pub reference: String,
    pub amount_yen: i64,
    pub expires_at_ms: i64,
    /// The EMV/JPQR payload to show as a QR code.
    pub payload: String,
}

/// A consumer-presented code, to show as a QR code at the till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayCode {
    pub code: String,
    pub expires_at_ms: i64,
}

/// Where a scanned code leads, from Kinko's records.
struct Target {
    merchant: Merchant,
    /// The payment request's reference and recorded amount, for a dynamic code.
    request: Option<(String, i64)>,
}

const PAYMENT_COLUMNS: &str = "p.id, p.merchant_id, m.name, m.name_ja, p.amount_yen, p.refunded_yen, \
     p.method, p.reference, p.status, p.reason, p.created_at, p.request_hash, p.user_id";

fn payment_from(row: &Row) -> Result<Payment, MoneyError> {
    Ok(Payment {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        merchant_id: uuid::Uuid::from_u128(row.uuid(1)?),
        merchant_name: row.text(2)?,
        merchant_name_ja: row.text(3)?,
        amount_yen: row.int(4)?,
        refunded_yen: row.int(5)?,
        method: row.text(6)?,
        reference: row.opt_text(7)?,
        status: row.text(8)?,
        reason: row.opt_text(9)?,
        created_at_ms: row.int(10)?,
        refunds: Vec::new(),
    })
}

const REFUND_COLUMNS: &str =
    "id, payment_id, amount_yen, status, reason, created_at, request_hash, user_id, merchant_id";

fn refund_from(row: &Row) -> Result<Refund, MoneyError> {
    Ok(Refund {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        payment_id: uuid::Uuid::from_u128(row.uuid(1)?),
        amount_yen: row.int(2)?,
        status: row.text(3)?,
        reason: row.opt_text(4)?,
        created_at_ms: row.int(5)?,
    })
}

fn hash_of(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn check_amount(amount_yen: i64) -> Result<(), MoneyError> {
    if (1..=PAYMENT_MAX_YEN).contains(&amount_yen) {
        Ok(())
    } else {
        Err(MoneyError::AmountInvalid)
    }
}

fn payment_by_key(tx: &mut dyn Tx, key_owner: u128, key: &str) -> Result<Option<Row>, MoneyError> {
    Ok(tx.query_opt(
        &format!(
            "SELECT {PAYMENT_COLUMNS} FROM money_payments p
             JOIN money_merchants m ON m.id = p.merchant_id
             WHERE p.key_owner = $1 AND p.idempotency_key = $2"
        ),
        &[Value::Uuid(key_owner), key.into()],
    )?)
}

/// A row just written, or the one a replayed `Idempotency-Key` found, with its payer.
enum Recorded<T> {
    Fresh(T, u128),
    Saved(T, u128),
}

/// The saved answer for a replayed key, or `IDEMPOTENCY_KEY_REUSED` for another request.
fn replay(row: &Row, request_hash: &str) -> Result<Recorded<Payment>, MoneyError> {
    if row.text(11)? != request_hash {
        return Err(MoneyError::IdempotencyKeyReused);
    }
    Ok(Recorded::Saved(payment_from(row)?, row.uuid(12)?))
}

/// Resolves a decoded code against Kinko's records (see the module doc).
fn resolve(tx: &mut dyn Tx, code: &MerchantQr, now_ms: i64) -> Result<Target, MoneyError> {
    let merchant_id = uuid::Uuid::from_u128(code.merchant_id());
    let merchant = merchants::by_id(tx, merchant_id)?.ok_or(MoneyError::MerchantNotFound)?;
    if merchant.status != "active" {
        return Err(MoneyError::MerchantInactive);
    }
    let request = match code.reference() {
        QrReference::Merchant { .. } => None,
        QrReference::PaymentRequest { reference, .. } => {
            let row = tx
                .query_opt(
                    "SELECT amount_yen, status, expires_at FROM money_payment_requests
                     WHERE merchant_id = $1 AND reference = $2",
                    &[Value::Uuid(merchant_id.as_u128()), reference.into()],
                )?
                .ok_or(MoneyError::PaymentRequestUnavailable)?;
            let amount_yen = row.int(0)?;
            if row.text(1)? != "open" || row.int(2)? <= now_ms {
                return Err(MoneyError::PaymentRequestUnavailable);
            }
            // The code is only a key: an amount altered in it (CRC recomputed or not) fails.
            if let QrPayment::Dynamic {
                amount_yen: stated, ..
            } = code.payment()
                && *stated != amount_yen
            {
                return Err(MoneyError::AmountMismatch);
            }
            Some((reference.to_owned(), amount_yen))
        }
    };
    Ok(Target { merchant, request })
}

/// Writes a new pending payment and the payer's pending movement.
struct NewPayment<'a> {
    id: uuid::Uuid,
    user_id: u128,
    merchant: &'a Merchant,
    amount_yen: i64,
    method: &'static str,
    reference: Option<&'a str>,
    key_owner: u128,
    idempotency_key: &'a str,
    request_hash: &'a str,
    now_ms: i64,
}

impl NewPayment<'_> {
    /// Writes the payment and its movement, or nothing if its key owner already used its
    /// `Idempotency-Key` (`None`: the caller replays the saved one). The unique index decides,
    /// so two requests racing with one key cannot both write.
    fn insert(&self, tx: &mut dyn Tx) -> Result<Option<Payment>, MoneyError> {
        let inserted = tx.execute(
            "INSERT INTO money_payments (id, user_id, merchant_id, amount_yen, method, reference,
             key_owner, idempotency_key, request_hash, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10)
             ON CONFLICT (key_owner, idempotency_key) DO NOTHING",
            &[
                Value::Uuid(self.id.as_u128()),
                Value::Uuid(self.user_id),
                Value::Uuid(self.merchant.id.as_u128()),
                self.amount_yen.into(),
                self.method.into(),
                self.reference.into(),
                Value::Uuid(self.key_owner),
                self.idempotency_key.into(),
                self.request_hash.into(),
                self.now_ms.into(),
            ],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO money_movements (id, user_id, kind, amount_yen, status, counterparty,
             created_at, updated_at) VALUES ($1, $2, 'payment', $3, 'pending', $4, $5, $5)",
            &[
                Value::Uuid(self.id.as_u128()),
                Value::Uuid(self.user_id),
                self.amount_yen.into(),
                self.merchant.name_ja.as_str().into(),
                self.now_ms.into(),
            ],
        )?;
        Ok(Some(Payment {
            id: self.id,
            merchant_id: self.merchant.id,
            merchant_name: self.merchant.name.clone(),
            merchant_name_ja: self.merchant.name_ja.clone(),
            amount_yen: self.amount_yen,
            refunded_yen: 0,
            method: self.method.to_owned(),
            reference: self.reference.map(str::to_owned),
            status: "pending".to_owned(),
            reason: None,
            created_at_ms: self.now_ms,
            refunds: Vec::new(),
        }))
    }
}

fn check_reference(reference: &str) -> Result<(), MoneyError> {
    let valid = (1..=REFERENCE_CHARS_MAX).contains(&reference.len())
        && reference
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(MoneyError::ReferenceInvalid)
    }
}

impl MoneyService {
    /// What a scanned code leads to, for the payer to confirm: nothing is written.
    pub fn resolve_qr(&self, qr: &str) -> Result<QrQuote, MoneyError> {
        let code = kinko_qr::decode(qr.trim())?;
        let now_ms = self.clock_ms();
        let target = self
            .identity_database()
            .read(|tx: &mut dyn Tx| resolve(tx, &code, now_ms))?;
        let printed = code.details();
        let printed_name_differs =
            printed.name != target.merchant.name || printed.name_ja != target.merchant.name_ja;
        Ok(QrQuote {
            printed_name_differs,
            kind: if target.request.is_some() {
                "dynamic"
            } else {
                "static"
            },
            merchant_id: target.merchant.id,
            merchant_name: target.merchant.name,
            merchant_name_ja: target.merchant.name_ja,
            category_code: target.merchant.category_code,
            amount_yen: target.request.as_ref().map(|(_, amount)| *amount),
            reference: target.request.map(|(reference, _)| reference),
        })
    }

    /// Pays a scanned merchant code from the session's wallet.
    pub fn pay(&self, session: &SessionInfo, request: &PayRequest) -> Result<Payment, MoneyError> {
        self.gate(session, false)?;
        check_key(&request.idempotency_key)?;
        if let Some(amount_yen) = request.amount_yen {
            check_amount(amount_yen)?;
        }
        let qr = request.qr.trim();
        let code = kinko_qr::decode(qr)?;
        let request_hash = hash_of(&format!("pay|{qr}|{:?}", request.amount_yen));
        let user_id = session.user_id;
        let now_ms = self.clock_ms();
        // Resolved in a read transaction, outside the write lock every payment queues for; the
        // write below still claims a dynamic code's request under its conditions.
        let database = self.identity_database();
        let target = match database.read(|tx: &mut dyn Tx| resolve(tx, &code, now_ms)) {
            Ok(target) => target,
            Err(error) => {
                // A replay gets its saved answer even if the code no longer resolves.
                let saved = database.read(|tx: &mut dyn Tx| {
                    payment_by_key(tx, user_id, &request.idempotency_key)
                })?;
                return match saved {
                    Some(row) => self.finish_recorded(replay(&row, &request_hash)?),
                    None => Err(error),
                };
            }
        };
        // The work runs on the group committer's thread: it owns what it needs.
        let idempotency_key = request.idempotency_key.clone();
        let typed_amount_yen = request.amount_yen;
        // Not fsynced by itself: the ledger's commit (or the rejection's, below) that follows
        // before anyone is answered makes it durable (see `Database::transaction_covered`).
        let payment = database.transaction_covered(move |tx: &mut dyn Tx| {
            let id = uuid::Uuid::now_v7();
            let (amount_yen, method, reference) = match &target.request {
                None => (
                    typed_amount_yen.ok_or(MoneyError::AmountRequired)?,
                    "qr_static",
                    None,
                ),
                Some((reference, recorded)) => {
                    if let Some(existing) = payment_by_key(tx, user_id, &idempotency_key)? {
                        return replay(&existing, &request_hash);
                    }
                    // The payer's row lock makes a replay racing its original wait for it
                    // (PostgreSQL; SQLite's write transactions are exclusive anyway).
                    if tx.dialect() == Dialect::Postgres {
                        tx.query_opt(
                            "SELECT id FROM identity_users WHERE id = $1 FOR UPDATE",
                            &[Value::Uuid(user_id)],
                        )?;
                        if let Some(existing) = payment_by_key(tx, user_id, &idempotency_key)? {
                            return replay(&existing, &request_hash);
                        }
                    }
                    if typed_amount_yen.is_some_and(|typed| typed != *recorded) {
                        return Err(MoneyError::AmountMismatch);
                    }
                    let claimed = tx.execute(
                        "UPDATE money_payment_requests SET status = 'paid', payment_id = $3
                         WHERE merchant_id = $1 AND reference = $2 AND status = 'open'
                           AND expires_at > $4",
                        &[
                            Value::Uuid(target.merchant.id.as_u128()),
                            reference.as_str().into(),
                            Value::Uuid(id.as_u128()),
                            now_ms.into(),
                        ],
                    )?;
                    if claimed != 1 {
                        return Err(MoneyError::PaymentRequestUnavailable);
                    }
                    (*recorded, "qr_dynamic", Some(reference.as_str()))
                }
            };
            check_amount(amount_yen)?;
            let fresh = NewPayment {
                id,
                user_id,
                merchant: &target.merchant,
                amount_yen,
                method,
                reference,
                key_owner: user_id,
                idempotency_key: &idempotency_key,
                request_hash: &request_hash,
                now_ms,
            }
            .insert(tx)?;
            match fresh {
                Some(fresh) => Ok(Recorded::Fresh(fresh, user_id)),
                // The key was used before: the saved answer (or 409 for another body).
                None => {
                    let existing = payment_by_key(tx, user_id, &idempotency_key)?
                        .ok_or_else(|| MoneyError::Internal("a used key without its row".into()))?;
                    replay(&existing, &request_hash)
                }
            }
        })?;
        self.finish_recorded(payment)
    }

    /// Settles a payment just written, or one a replay found still pending (its first
    /// attempt was cut short); a settled one is the saved answer.
    fn finish_recorded(&self, recorded: Recorded<Payment>) -> Result<Payment, MoneyError> {
        match recorded {
            Recorded::Fresh(payment, payer) => self.settle_payment(payment, payer),
            Recorded::Saved(payment, payer) if payment.status == "pending" => {
                self.settle_payment(payment, payer)
            }
            Recorded::Saved(payment, _) => Ok(payment),
        }
    }

    /// Moves the money for a pending payment and records the outcome.
    fn settle_payment(&self, mut payment: Payment, user_id: u128) -> Result<Payment, MoneyError> {
        let moved = accounts::move_once(
            self.ledger(),
            payment.id.as_u128(),
            accounts::wallet(user_id)?,
            accounts::payable(payment.merchant_id.as_u128())?,
            payment.amount_yen,
            transfer::PAYMENT,
        )?;
        crate::charge::failpoint("payment_after_ledger");
        let (status, reason) = match moved {
            Moved::Posted => ("posted", None),
            Moved::InsufficientFunds => ("rejected", Some("insufficient_funds")),
        };
        let now_ms = self.clock_ms();
        let payment_id = payment.id;
        let record = move |tx: &mut dyn Tx| {
            if !finish(tx, "money_payments", payment_id, status, reason, now_ms)? {
                // Finished already (the request or the reconciler): the row decides.
                return stored_outcome(tx, "money_payments", payment_id).map(Some);
            }
            if status == "rejected" {
                // The sale is still open: the payer may top up and scan again (under another
                // key: this payment's id failed in the ledger and can never post).
                tx.execute(
                    "UPDATE money_payment_requests SET status = 'open', payment_id = NULL
                     WHERE payment_id = $1",
                    &[Value::Uuid(payment_id.as_u128())],
                )?;
            }
            Ok::<_, MoneyError>(None)
        };
        let stored = match moved {
            // Durable already in the ledger: were this write lost, the row would stay pending
            // and the reconciler would find the transfer (same id) and post it again.
            Moved::Posted => self.identity_database().transaction_covered(record)?,
            // The ledger keeps the failed id too (`id_already_failed`), but the reopened sale
            // must be durable before the payer hears of it.
            Moved::InsufficientFunds => self.identity_database().transaction(record)?,
        };
        match stored {
            None => {
                payment.status = status.to_owned();
                payment.reason = reason.map(str::to_owned);
            }
            Some((stored_status, stored_reason)) => {
                payment.status = stored_status;
                payment.reason = stored_reason;
            }
        }
        Ok(payment)
    }

    /// The payer's own payment `id` (another wallet's answers like none at all).
    pub fn payment_of(
        &self,
        session: &SessionInfo,
        id: uuid::Uuid,
    ) -> Result<Option<Payment>, MoneyError> {
        self.identity_database().read(|tx: &mut dyn Tx| {
            let row = tx.query_opt(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM money_payments p
                     JOIN money_merchants m ON m.id = p.merchant_id
                     WHERE p.id = $1 AND p.user_id = $2"
                ),
                &[Value::Uuid(id.as_u128()), Value::Uuid(session.user_id)],
            )?;
            let Some(row) = row else { return Ok(None) };
            let mut payment = payment_from(&row)?;
            payment.refunds = refunds_of(tx, &[payment.id])?;
            Ok(Some(payment))
        })
    }

    /// A one-time code for the till to redeem (≤ 60 s). The wallet must be able to pay now.
    /// `max_amount_yen` is the most the till may take with it (1 to [`PAYMENT_MAX_YEN`]).
    pub fn issue_pay_code(
        &self,
        session: &SessionInfo,
        max_amount_yen: i64,
    ) -> Result<PayCode, MoneyError> {
        check_amount(max_amount_yen)?;
        self.gate(session, false)?;
        let now_ms = u64::try_from(self.clock_ms()).unwrap_or(0);
        let code = kinko_qr::paycode::issue(self.pay_code_key(), session.user_id, now_ms);
        let expires_at_ms = now_ms.saturating_add(kinko_qr::paycode::PAY_CODE_LIFETIME_MS);
        let claims = kinko_qr::paycode::verify(self.pay_code_key(), &code, now_ms)?;
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO money_pay_code_ceilings (nonce, max_amount_yen, expires_at)
                 VALUES ($1, $2, $3)",
                &[
                    claims.nonce.to_vec().into(),
                    max_amount_yen.into(),
                    i64::try_from(expires_at_ms).unwrap_or(i64::MAX).into(),
                ],
            )?;
            Ok::<_, MoneyError>(())
        })?;
        Ok(PayCode {
            code,
            expires_at_ms: i64::try_from(expires_at_ms).unwrap_or(i64::MAX),
        })
    }

    /// The merchant's till redeems a consumer-presented code for `amount_yen`, once.
    pub fn redeem_pay_code(
        &self,
        merchant: &Merchant,
        code: &str,
        amount_yen: i64,
        idempotency_key: &str,
    ) -> Result<Payment, MoneyError> {
        check_key(idempotency_key)?;
        check_amount(amount_yen)?;
        if merchant.status != "active" {
            return Err(MoneyError::MerchantInactive);
        }
        let code = code.trim();
        let request_hash = hash_of(&format!("redeem|{code}|{amount_yen}"));
        let now_ms = self.clock_ms();
        let merchant_key = merchant.id.as_u128();
        let payment = self.identity_database().transaction(|tx: &mut dyn Tx| {
            if let Some(existing) = payment_by_key(tx, merchant_key, idempotency_key)? {
                return replay(&existing, &request_hash);
            }
            let claims = kinko_qr::paycode::verify(
                self.pay_code_key(),
                code,
                u64::try_from(now_ms).unwrap_or(0),
            )?;
            // The payer must still be able to pay: active, and not frozen after a security
            // change or a fraud report.
            let payer = tx
                .query_opt(
                    "SELECT status, outgoing_frozen_until FROM identity_users WHERE id = $1",
                    &[Value::Uuid(claims.wallet)],
                )?
                .ok_or(MoneyError::PayCode(kinko_qr::CodeError::BadSignature))?;
            if payer.text(0)? != "active" {
                return Err(MoneyError::Gate("IDENTITY_NOT_ACTIVE"));
            }
            if payer.opt_int(1)?.is_some_and(|until| until > now_ms) {
                return Err(MoneyError::Gate("IDENTITY_OUTGOING_FROZEN"));
            }
            // The payer's ceiling; a code without one (none is issued so) is refused.
            let ceiling = tx
                .query_opt(
                    "SELECT max_amount_yen FROM money_pay_code_ceilings WHERE nonce = $1",
                    &[claims.nonce.to_vec().into()],
                )?
                .ok_or(MoneyError::PayCode(kinko_qr::CodeError::BadSignature))?
                .int(0)?;
            if amount_yen > ceiling {
                return Err(MoneyError::PayCodeAboveCeiling);
            }
            let id = uuid::Uuid::now_v7();
            let used = tx.execute(
                "INSERT INTO money_pay_codes_used (nonce, payment_id, expires_at)
                 VALUES ($1, $2, $3) ON CONFLICT (nonce) DO NOTHING",
                &[
                    claims.nonce.to_vec().into(),
                    Value::Uuid(id.as_u128()),
                    i64::try_from(claims.expires_at_ms)
                        .unwrap_or(i64::MAX)
                        .into(),
                ],
            )?;
            if used != 1 {
                return Err(MoneyError::PayCodeUsed);
            }
            NewPayment {
                id,
                user_id: claims.wallet,
                merchant,
                amount_yen,
                method: "pay_code",
                reference: None,
                key_owner: merchant_key,
                idempotency_key,
                request_hash: &request_hash,
                now_ms,
            }
            .insert(tx)?
            // Unreachable in practice: the same key is the same code, whose nonce was taken
            // above; were it reached, the transaction must not keep that nonce.
            .map(|fresh| Recorded::Fresh(fresh, claims.wallet))
            .ok_or(MoneyError::IdempotencyKeyReused)
        })?;
        self.finish_recorded(payment)
    }

    /// A dynamic code for one sale of `amount_yen`, payable once within 10 minutes.
    pub fn create_payment_request(
        &self,
        merchant: &Merchant,
        amount_yen: i64,
        reference: Option<&str>,
    ) -> Result<PaymentRequest, MoneyError> {
        check_amount(amount_yen)?;
        if merchant.status != "active" {
            return Err(MoneyError::MerchantInactive);
        }
        let reference = match reference {
            Some(reference) => reference.trim().to_owned(),
            None => format!("K{}", &uuid::Uuid::new_v4().simple().to_string()[..20]),
        };
        check_reference(&reference)?;
        let code = MerchantQr::new(
            merchant.details(),
            QrPayment::Dynamic {
                amount_yen,
                reference: reference.clone(),
            },
        )?;
        let now_ms = self.clock_ms();
        let expires_at_ms = now_ms + PAYMENT_REQUEST_LIFETIME_MS;
        let inserted = self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO money_payment_requests (merchant_id, reference, amount_yen, status,
                 expires_at, created_at) VALUES ($1, $2, $3, 'open', $4, $5)
                 ON CONFLICT (merchant_id, reference) DO NOTHING",
                &[
                    Value::Uuid(merchant.id.as_u128()),
                    reference.as_str().into(),
                    amount_yen.into(),
                    expires_at_ms.into(),
                    now_ms.into(),
                ],
            )
        })?;
        if inserted != 1 {
            return Err(MoneyError::ReferenceTaken);
        }
        Ok(PaymentRequest {
            reference,
            amount_yen,
            expires_at_ms,
            payload: kinko_qr::encode(&code),
        })
    }

    /// The merchant's payments with their refunds, newest first; `before_ms` pages back.
    pub fn merchant_payments(
        &self,
        merchant: &Merchant,
        before_ms: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<Payment>, MoneyError> {
        let limit = limit.unwrap_or(50).clamp(1, MERCHANT_PAGE_MAX);
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM money_payments p
                     JOIN money_merchants m ON m.id = p.merchant_id
                     WHERE p.merchant_id = $1 AND p.created_at < $2
                     ORDER BY p.created_at DESC, p.id DESC LIMIT $3"
                ),
                &[
                    Value::Uuid(merchant.id.as_u128()),
                    before_ms.unwrap_or(i64::MAX).into(),
                    i64::from(limit).into(),
                ],
            )?;
            let mut payments = rows
                .iter()
                .map(payment_from)
                .collect::<Result<Vec<_>, _>>()?;
            let ids: Vec<uuid::Uuid> = payments.iter().map(|payment| payment.id).collect();
            let mut refunds = refunds_of(tx, &ids)?;
            for payment in &mut payments {
                let (mine, others) = refunds
                    .into_iter()
                    .partition(|refund| refund.payment_id == payment.id);
                payment.refunds = mine;
                refunds = others;
            }
            Ok(payments)
        })
    }

    /// Refunds `amount_yen` of the merchant's payment `payment_id` to the payer's wallet.
    pub fn refund(
        &self,
        merchant: &Merchant,
        payment_id: uuid::Uuid,
        amount_yen: i64,
        idempotency_key: &str,
    ) -> Result<Refund, MoneyError> {
        check_key(idempotency_key)?;
        check_amount(amount_yen)?;
        let request_hash = hash_of(&format!("refund|{payment_id}|{amount_yen}"));
        let now_ms = self.clock_ms();
        let merchant_id = merchant.id.as_u128();
        let refund = self.identity_database().transaction(|tx: &mut dyn Tx| {
            // The merchant's row lock orders every refund request under one of its keys: the
            // second of two concurrent ones finds the first's row (the saved answer), never a
            // unique-index violation.
            tx.query_opt(
                &format!(
                    "SELECT id FROM money_merchants WHERE id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(merchant_id)],
            )?;
            if let Some(existing) = tx.query_opt(
                &format!(
                    "SELECT {REFUND_COLUMNS} FROM money_refunds
                     WHERE merchant_id = $1 AND idempotency_key = $2"
                ),
                &[Value::Uuid(merchant_id), idempotency_key.into()],
            )? {
                if existing.text(6)? != request_hash {
                    return Err(MoneyError::IdempotencyKeyReused);
                }
                return Ok(Recorded::Saved(refund_from(&existing)?, existing.uuid(7)?));
            }
            // The payment's row lock orders its refunds: the sum below cannot be outrun.
            let payment = tx
                .query_opt(
                    &format!(
                        "SELECT amount_yen, refunded_yen, status, user_id FROM money_payments
                         WHERE id = $1 AND merchant_id = $2{}",
                        tx.for_update()
                    ),
                    &[Value::Uuid(payment_id.as_u128()), Value::Uuid(merchant_id)],
                )?
                .ok_or(MoneyError::PaymentNotFound)?;
            if payment.text(2)? != "posted" {
                return Err(MoneyError::PaymentNotRefundable);
            }
            let refunded = payment
                .int(1)?
                .checked_add(amount_yen)
                .ok_or(MoneyError::RefundExceedsPayment)?;
            if refunded > payment.int(0)? {
                return Err(MoneyError::RefundExceedsPayment);
            }
            let user_id = payment.uuid(3)?;
            tx.execute(
                "UPDATE money_payments SET refunded_yen = $2 WHERE id = $1",
                &[Value::Uuid(payment_id.as_u128()), refunded.into()],
            )?;
            let id = uuid::Uuid::now_v7();
            tx.execute(
                "INSERT INTO money_refunds (id, payment_id, merchant_id, user_id, amount_yen,
                 idempotency_key, request_hash, status, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(payment_id.as_u128()),
                    Value::Uuid(merchant_id),
                    Value::Uuid(user_id),
                    amount_yen.into(),
                    idempotency_key.into(),
                    request_hash.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            tx.execute(
                "INSERT INTO money_movements (id, user_id, kind, amount_yen, status, counterparty,
                 created_at, updated_at) VALUES ($1, $2, 'refund', $3, 'pending', $4, $5, $5)",
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(user_id),
                    amount_yen.into(),
                    merchant.name_ja.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            Ok(Recorded::Fresh(
                Refund {
                    id,
                    payment_id,
                    amount_yen,
                    status: "pending".to_owned(),
                    reason: None,
                    created_at_ms: now_ms,
                },
                user_id,
            ))
        })?;
        match refund {
            Recorded::Fresh(fresh, user_id) => self.settle_refund(fresh, merchant_id, user_id),
            Recorded::Saved(saved, user_id) if saved.status == "pending" => {
                self.settle_refund(saved, merchant_id, user_id)
            }
            Recorded::Saved(saved, _) => Ok(saved),
        }
    }

    fn settle_refund(
        &self,
        mut refund: Refund,
        merchant_id: u128,
        user_id: u128,
    ) -> Result<Refund, MoneyError> {
        let moved = accounts::move_once(
            self.ledger(),
            refund.id.as_u128(),
            accounts::payable(merchant_id)?,
            accounts::wallet(user_id)?,
            refund.amount_yen,
            transfer::REFUND,
        )?;
        let (status, reason) = match moved {
            Moved::Posted => ("posted", None),
            // Kinko owes the merchant less than the refund: what it was paid was paid out.
            Moved::InsufficientFunds => ("rejected", Some("merchant_balance_insufficient")),
        };
        let now_ms = self.clock_ms();
        let stored = self.identity_database().transaction(|tx: &mut dyn Tx| {
            if !finish(tx, "money_refunds", refund.id, status, reason, now_ms)? {
                return stored_outcome(tx, "money_refunds", refund.id).map(Some);
            }
            if status == "rejected" {
                tx.execute(
                    "UPDATE money_payments SET refunded_yen = refunded_yen - $2 WHERE id = $1",
                    &[
                        Value::Uuid(refund.payment_id.as_u128()),
                        refund.amount_yen.into(),
                    ],
                )?;
            }
            Ok::<_, MoneyError>(None)
        })?;
        match stored {
            None => {
                refund.status = status.to_owned();
                refund.reason = reason.map(str::to_owned);
            }
            Some((stored_status, stored_reason)) => {
                refund.status = stored_status;
                refund.reason = stored_reason;
            }
        }
        Ok(refund)
    }

    /// Finishes payments and refunds left pending by a crash (older than `older_than_ms`):
    /// the same ledger transfer again, then the outcome on the row. Answers how many it
    /// finished; a row that fails is logged and skipped (see `reconcile.rs`).
    pub fn reconcile_payments(&self, older_than_ms: i64) -> Result<u64, MoneyError> {
        let cutoff_ms = self.clock_ms() - older_than_ms;
        let mut finished = 0;
        let payments = format!(
            "SELECT {PAYMENT_COLUMNS} FROM money_payments p
             JOIN money_merchants m ON m.id = p.merchant_id WHERE {}",
            crate::reconcile::after_cursor("p")
        );
        self.sweep(
            &self.sweeps.payments,
            &payments,
            cutoff_ms,
            |row| Ok((row.int(10)?, row.uuid(0)?)),
            |row| {
                self.settle_payment(payment_from(row)?, row.uuid(12)?)?;
                finished += 1;
                Ok(())
            },
        )?;
        let refunds = format!(
            "SELECT {REFUND_COLUMNS} FROM money_refunds r WHERE {}",
            crate::reconcile::after_cursor("r")
        );
        self.sweep(
            &self.sweeps.refunds,
            &refunds,
            cutoff_ms,
            |row| Ok((row.int(5)?, row.uuid(0)?)),
            |row| {
                self.settle_refund(refund_from(row)?, row.uuid(8)?, row.uuid(7)?)?;
                finished += 1;
                Ok(())
            },
        )?;
        Ok(finished)
    }
}

/// Records a pending row's outcome on it and on its movement; answers whether it was pending.
fn finish(
    tx: &mut dyn Tx,
    table: &'static str,
    id: uuid::Uuid,
    status: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<bool, MoneyError> {
    let changed = tx.execute(
        &format!(
            "UPDATE {table} SET status = $2, reason = $3, resolved_at = $4
             WHERE id = $1 AND status = 'pending'"
        ),
        &[
            Value::Uuid(id.as_u128()),
            status.into(),
            reason.into(),
            now_ms.into(),
        ],
    )?;
    if changed == 1 {
        // The history follows the row, never a status the row refused.
        tx.execute(
            "UPDATE money_movements SET status = $2, updated_at = $3 WHERE id = $1",
            &[Value::Uuid(id.as_u128()), status.into(), now_ms.into()],
        )?;
    }
    Ok(changed == 1)
}

/// The status and reason a finished row holds.
fn stored_outcome(
    tx: &mut dyn Tx,
    table: &'static str,
    id: uuid::Uuid,
) -> Result<(String, Option<String>), MoneyError> {
    let row = tx.query_one(
        &format!("SELECT status, reason FROM {table} WHERE id = $1"),
        &[Value::Uuid(id.as_u128())],
    )?;
    Ok((row.text(0)?, row.opt_text(1)?))
}

/// The refunds of these payments, oldest first.
fn refunds_of(tx: &mut dyn Tx, payment_ids: &[uuid::Uuid]) -> Result<Vec<Refund>, MoneyError> {
    if payment_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=payment_ids.len()).map(|n| format!("${n}")).collect();
    let params: Vec<Value> = payment_ids
        .iter()
        .map(|id| Value::Uuid(id.as_u128()))
        .collect();
    tx.query(
        &format!(
            "SELECT {REFUND_COLUMNS} FROM money_refunds WHERE payment_id IN ({})
             ORDER BY created_at, id",
            placeholders.join(", ")
        ),
        &params,
    )?
    .iter()
    .map(refund_from)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_short_and_plain() {
        assert!(check_reference("order-2026_12").is_ok());
        for bad in ["", "has space", "注文", &"r".repeat(26), "a/b"] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_are_bounded() {
        assert!(check_amount(1).is_ok());
        assert!(check_amount(PAYMENT_MAX_YEN).is_ok());
        for bad in [0, -1, PAYMENT_MAX_YEN + 1, i64::MAX] {
            assert!(check_amount(bad).is_err(), "{bad}");
        }
    }
}
