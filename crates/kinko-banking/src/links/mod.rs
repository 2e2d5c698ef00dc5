//! Bank links: the docomo lesson in code (THREATS requirements 2–11, 16).
//!
//! - **Link** (default method): only for a wallet with KYC L1, a second factor and a fresh
//!   step-up. Kinko pushes an authorization request to the bank (PAR, PKCE S256, a DPoP key
//!   per link), the bank signs its own customer in with two factors and shows the consent,
//!   Kinko exchanges the code, then asks the bank whether the KYC'd kana name and birth date
//!   are the account holder's. Only then is the link active. Every failure — a refused code,
//!   a holder mismatch, an account already linked to another wallet — gives the caller one
//!   generic answer; the audit log keeps the real reason.
//! - **One wallet per bank account**: the bank's pairwise account reference is unique among
//!   active links; a second wallet's attempt is refused and the linked wallet's owner is told.
//! - **Unlink** by the user; **revocation** and **fraud reports** by the bank arrive as signed
//!   webhooks: the link is cut at once; a fraud report also freezes the wallet's outgoing money
//!   and opens an alert for operators and the bank.
//! - **Legacy method** (account number + cash-card PIN), only where the bank's policy enables
//!   it: the KYC'd name and birth date are sent, never typed ones; one answer after one fixed
//!   time whatever was wrong; caps per source on distinct accounts; a wallet failing on two
//!   accounts is blocked until reviewed; a detector switches the method off at a bank when
//!   one PIN is tried on many accounts or failures jump. Kinko never stores or logs a PIN: the
//!   detector keys on a keyed hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinko_audit::{Actor, AuditEntry};
use kinko_core::{ErrorCode, ErrorKind};
use kinko_identity::service::{IdentityError, IdentityService, Source, tell_user};
use kinko_identity::session::SessionInfo;
use kinko_ledger::StoreError;
use kinko_store::sql::{Row, Tx, Value};
use p256::ecdsa::SigningKey;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

use crate::client::{
    BankClient, BankClientError, BankPayment, LegacyVerify, PaymentKind, PaymentOrder, PushRequest,
};
use crate::protocol::{jws, random};
use crate::registry::{self, BankCode, BankingError};

mod legacy;
mod oauth;
mod refunds;
mod tokens;
mod webhooks;

pub use legacy::lift_legacy_block;

/// What Kinko asks a bank for at link time.
pub const LINK_SCOPE: &str = "holder_match debits credits";
/// A started link must come back from the bank within this time.
pub const ATTEMPT_LIFETIME_MS: i64 = 10 * 60_000;
/// Link attempts a wallet may start per hour.
pub const ATTEMPTS_PER_HOUR_MAX: i64 = 20;
/// Every legacy answer that reached the point of asking the bank leaves after this long from
/// the request's start, whatever was wrong: time tells nothing about which field it was.
pub const LEGACY_ANSWER_TIME: Duration = Duration::from_millis(1_000);
/// Every answer to a completed authorization leaves this long after the request began: the
/// bank calls behind it (token, holder match, revocation of an unused consent) take far less.
pub const LINK_ANSWER_TIME: Duration = Duration::from_millis(1_000);
/// Distinct accounts one source (IP, device or wallet) may try with the legacy method …
pub const LEGACY_SOURCE_ACCOUNTS_MAX: i64 = 10;
/// … within this window.
pub const LEGACY_SOURCE_WINDOW_MS: i64 = 10 * 60_000;
/// A wallet that failed on this many distinct accounts tries no more until reviewed.
pub const LEGACY_WALLET_FAILED_ACCOUNTS_MAX: i64 = 2;
/// The detector: one PIN value failing on this many distinct accounts at one bank …
pub const SPRAY_ACCOUNTS_PER_PIN_MAX: i64 = 5;
/// … within this window switches the legacy method off at that bank.
pub const SPRAY_WINDOW_MS: i64 = 60 * 60_000;
/// The detector: this many legacy failures at one bank within `BURST_WINDOW_MS`, when they
/// are also more than `BURST_FACTOR` times the bank's usual rate, switches it off too.
pub const BURST_FAILURES_MIN: i64 = 30;
pub const BURST_WINDOW_MS: i64 = 10 * 60_000;
pub const BURST_FACTOR: i64 = 4;
/// Outgoing money frozen by a fraud report stays frozen until an operator lifts it.
pub const FROZEN_UNTIL_REVIEWED: i64 = i64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The wallet may not link yet (KYC, second factor, step-up, frozen): the reason is the
    /// user's own state, so it is told.
    #[error("the wallet cannot link a bank account now: {0}")]
    Gate(&'static str),
    #[error("no such partner bank")]
    BankUnknown,
    #[error("linking is suspended at this bank")]
    LinkingDisabled,
    #[error("the PIN method is not offered at this bank")]
    LegacyDisabled,
    #[error("this wallet may not use the PIN method until our staff have reviewed it")]
    LegacyBlocked,
    #[error("the bank cannot be reached now; try again later")]
    BankUnavailable,
    /// One answer for every failed link, whatever failed.
    #[error("the bank account could not be linked")]
    LinkFailed,
    #[error("too many attempts; try again later")]
    RateLimited { retry_after_ms: i64 },
    #[error("{0}")]
    Input(&'static str),
    #[error("no such link")]
    NotFound,
    #[error("the bank link is not active")]
    LinkInactive,
    /// A payment order's deadline passed before it could be sent: the bank never saw it.
    #[error("the payment order's deadline passed before it was sent")]
    DeadlinePassed,
    #[error("the bank's event is not acceptable")]
    WebhookInvalid,
    #[error("storage failed: {0}")]
    Store(#[from] StoreError),
    #[error("an internal step failed: {0}")]
    Internal(String),
}

impl From<IdentityError> for LinkError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Store(store) => LinkError::Store(store),
            other => LinkError::Internal(other.to_string()),
        }
    }
}

impl From<BankingError> for LinkError {
    fn from(error: BankingError) -> Self {
        match error {
            BankingError::BankNotFound | BankingError::BankCodeInvalid => LinkError::BankUnknown,
            BankingError::Store(store) => LinkError::Store(store),
            other => LinkError::Internal(other.to_string()),
        }
    }
}

impl ErrorCode for LinkError {
    fn code(&self) -> &'static str {
        match self {
            LinkError::Gate(reason) => reason,
            LinkError::BankUnknown => "BANK_NOT_FOUND",
            LinkError::LinkingDisabled => "BANK_LINKING_DISABLED",
            LinkError::LegacyDisabled => "BANK_LEGACY_DISABLED",
            LinkError::LegacyBlocked => "BANK_LEGACY_WALLET_BLOCKED",
            LinkError::BankUnavailable => "BANK_UNAVAILABLE",
            LinkError::LinkFailed => "BANK_LINK_FAILED",
            LinkError::RateLimited { .. } => "RATE_LIMITED",
            LinkError::Input(_) => "BANK_LINK_INPUT_INVALID",
            LinkError::NotFound => "BANK_LINK_NOT_FOUND",
            LinkError::LinkInactive => "BANK_LINK_INACTIVE",
            LinkError::DeadlinePassed => "BANK_ORDER_DEADLINE_PASSED",
            LinkError::WebhookInvalid => "BANK_WEBHOOK_INVALID",
            LinkError::Store(_) | LinkError::Internal(_) => "INTERNAL",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            LinkError::Gate(_)
            | LinkError::LinkingDisabled
            | LinkError::LegacyDisabled
            | LinkError::LegacyBlocked => ErrorKind::Forbidden,
            LinkError::BankUnknown | LinkError::NotFound => ErrorKind::NotFound,
            LinkError::BankUnavailable | LinkError::DeadlinePassed => ErrorKind::Unavailable,
            LinkError::LinkFailed | LinkError::Input(_) | LinkError::WebhookInvalid => {
                ErrorKind::InvalidInput
            }
            LinkError::RateLimited { .. } => ErrorKind::RateLimited,
            LinkError::LinkInactive => ErrorKind::Conflict,
            LinkError::Store(_) | LinkError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Which bank client serves which bank code (the sandbox serves them all).
#[derive(Default)]
pub struct BankDirectory {
    by_code: HashMap<String, Arc<BankClient>>,
}

impl BankDirectory {
    /// One client serving every code given (a sandbox bank hosting all partner banks).
    pub fn serving(codes: impl IntoIterator<Item = String>, client: Arc<BankClient>) -> Self {
        Self {
            by_code: codes
                .into_iter()
                .map(|code| (code, Arc::clone(&client)))
                .collect(),
        }
    }

    pub fn for_bank(&self, bank_code: &str) -> Option<Arc<BankClient>> {
        self.by_code.get(bank_code).cloned()
    }

    /// The client talking to `issuer`, and the bank codes it serves.
    fn for_issuer(&self, issuer: &str) -> Option<(Arc<BankClient>, Vec<String>)> {
        let mut codes = Vec::new();
        let mut found = None;
        for (code, client) in &self.by_code {
            if client.issuer() == issuer {
                codes.push(code.clone());
                found = Some(Arc::clone(client));
            }
        }
        found.map(|client| (client, codes))
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

/// A link as its owner (and the API) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkView {
    pub id: uuid::Uuid,
    pub bank_code: String,
    pub account_label: String,
    pub method: String,
    pub status: String,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// Where to send the browser to approve the link at the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartedLink {
    pub authorization_url: String,
    pub expires_in_s: i64,
}

/// The legacy method's input. No `Debug`: it holds the PIN.
pub struct LegacyLinkRequest {
    pub bank_code: String,
    pub branch: String,
    pub account_type: String,
    pub account_number: String,
    pub pin: SecretString,
}

/// An alert for operators and the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub id: uuid::Uuid,
    pub bank_code: String,
    pub kind: String,
    pub user_id: Option<uuid::Uuid>,
    pub link_id: Option<uuid::Uuid>,
    pub detail: serde_json::Value,
    pub status: String,
    pub created_at_ms: i64,
}

/// What a bank-partner operator (or staff) sees of a link: no personal data beyond ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankLinkRecord {
    pub id: uuid::Uuid,
    pub user_id: uuid::Uuid,
    pub account_label: String,
    pub method: String,
    pub status: String,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
}

/// How a webhook went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Applied,
    /// The same event again: answered, not redone.
    AlreadyHandled,
}

pub struct LinkService {
    identity: Arc<IdentityService>,
    banks: BankDirectory,
    redirect_uri: String,
    legacy_answer_time: Duration,
    link_answer_time: Duration,
    /// Access tokens per link, and one lock per link so only one refresh is ever in flight
    /// for it (a refresh token rotates: two refreshes at once would look like theft to the
    /// bank and end the link).
    access: Mutex<HashMap<uuid::Uuid, Arc<Mutex<Option<CachedAccess>>>>>,
}

/// An access token in memory only; it lives minutes, the refresh token stays sealed.
struct CachedAccess {
    token: SecretString,
    usable_until_ms: i64,
}

/// How long a process may hold a link's refresh lease: longer than a refresh call may take.
const REFRESH_LEASE_MS: i64 = 15_000;
/// How long a process waits for another's refresh lease before giving up for now.
const REFRESH_LEASE_WAIT_MS: u64 = 20_000;

/// The bank says an access token lives 10 minutes; use it for 8.
const ACCESS_USE_MS: i64 = 8 * 60_000;

fn internal(error: impl std::fmt::Display) -> LinkError {
    LinkError::Internal(error.to_string())
}

fn bank_failure(error: BankClientError) -> LinkError {
    tracing::warn!(error = %error, "bank call failed");
    match error {
        BankClientError::Transport(_) => LinkError::BankUnavailable,
        _ => LinkError::LinkFailed,
    }
}

/// A failed bank call during a payment: unreachable, or the bank refused the request.
fn bank_failure_kept(error: BankClientError) -> LinkError {
    tracing::warn!(error = %error, "bank payment call failed");
    match error {
        BankClientError::Transport(_) => LinkError::BankUnavailable,
        BankClientError::DeadlinePassed => LinkError::DeadlinePassed,
        BankClientError::Refused {
            status: 401 | 403, ..
        } => LinkError::LinkInactive,
        _ => LinkError::BankUnavailable,
    }
}

fn audit(
    tx: &mut dyn Tx,
    now_ms: i64,
    actor: Actor,
    action: &str,
    subject_id: &str,
    reason: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor,
            action,
            subject_kind: "bank_link",
            subject_id,
            reason,
            detail,
        },
    )?;
    Ok(())
}

const LINK_COLUMNS: &str =
    "id, bank_code, account_label, method, status, created_at, ended_at, user_id, end_reason";

/// What a link's owner is told of its state. A link made by the legacy PIN method verified
/// the holder but holds no token to move money with: it is never shown as `active` (every
/// charge on it would fail), but as `verified`.
const STATUS_VERIFIED: &str = "verified";

fn shown(mut view: LinkView) -> LinkView {
    if view.method == "legacy" && view.status == "active" {
        STATUS_VERIFIED.clone_into(&mut view.status);
    }
    view
}

fn link_from(row: &Row) -> Result<LinkView, StoreError> {
    Ok(LinkView {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        bank_code: row.text(1)?,
        account_label: row.text(2)?,
        method: row.text(3)?,
        status: row.text(4)?,
        created_at_ms: row.int(5)?,
        ended_at_ms: row.opt_int(6)?,
    })
}

impl LinkService {
    pub fn new(identity: Arc<IdentityService>, banks: BankDirectory, redirect_uri: String) -> Self {
        Self {
            identity,
            banks,
            redirect_uri,
            legacy_answer_time: LEGACY_ANSWER_TIME,
            link_answer_time: LINK_ANSWER_TIME,
            access: Mutex::new(HashMap::new()),
        }
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.identity.clock().now_ms()).unwrap_or(i64::MAX)
    }

    fn gate(&self, session: &SessionInfo) -> Result<(), LinkError> {
        let gate = self.identity.money_gate(session, true)?;
        match gate.reasons.first() {
            None => Ok(()),
            Some(reason) => Err(LinkError::Gate(reason)),
        }
    }

    fn seal(&self, plaintext: &[u8], associated: &str) -> Result<Vec<u8>, LinkError> {
        self.identity
            .secret_box()
            .seal(plaintext, associated.as_bytes())
            .map_err(internal)
    }

    fn open(&self, sealed: &[u8], associated: &str) -> Result<Vec<u8>, LinkError> {
        Ok(self
            .identity
            .secret_box()
            .open(sealed, associated.as_bytes())
            .map_err(internal)?
            .to_vec())
    }

    fn open_key(&self, sealed: &[u8], associated: &str) -> Result<SigningKey, LinkError> {
        let bytes = zeroize::Zeroizing::new(self.open(sealed, associated)?);
        SigningKey::from_slice(&bytes).map_err(internal)
    }

    /// The wallet's links, newest first.
    pub fn list_links(&self, session: &SessionInfo) -> Result<Vec<LinkView>, LinkError> {
        let rows = self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.query(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM banking_links WHERE user_id = $1
                     ORDER BY created_at DESC, id DESC"
                ),
                &[Value::Uuid(session.user_id)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|row| link_from(row).map(shown))
            .collect::<Result<_, _>>()?)
    }

    /// The user ends one of their links; the bank is told (the consent ends there too).
    pub fn unlink(
        &self,
        session: &SessionInfo,
        link_id: uuid::Uuid,
    ) -> Result<LinkView, LinkError> {
        let now_ms = self.now_ms();
        let user_id = session.user_id;
        let (view, sealed) = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let sql = format!(
                "SELECT {LINK_COLUMNS}, sealed_refresh_token FROM banking_links
                 WHERE id = $1 AND user_id = $2{}",
                tx.for_update()
            );
            // Another user's link answers exactly like no link at all.
            let row = tx
                .query_opt(&sql, &[Value::Uuid(link_id.as_u128()), Value::Uuid(user_id)])?
                .ok_or(LinkError::NotFound)?;
            let mut view = link_from(&row)?;
            if view.status != "active" {
                return Ok((view, None));
            }
            tx.execute(
                "UPDATE banking_links SET status = 'unlinked', ended_at = $2, end_reason = 'user_unlinked'
                 WHERE id = $1",
                &[Value::Uuid(link_id.as_u128()), now_ms.into()],
            )?;
            tell_user(
                tx,
                now_ms,
                user_id,
                "bank_link_ended",
                "銀行口座の連携を解除しました / Bank account unlinked",
                &format!(
                    "銀行口座（{} {}）の連携を解除しました。\n\nYour bank account ({} {}) is no longer linked to your wallet.",
                    view.bank_code, view.account_label, view.bank_code, view.account_label
                ),
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.unlinked",
                &link_id.to_string(),
                "user_unlinked",
                serde_json::json!({ "bank_code": view.bank_code }),
            )?;
            view.status = "unlinked".to_owned();
            view.ended_at_ms = Some(now_ms);
            Ok::<_, LinkError>((view, row.opt_bytes(9)?))
        })?;
        if let (Some(sealed), Some(client)) = (sealed, self.banks.for_bank(&view.bank_code)) {
            let token = self.open(&sealed, &format!("bank_link:{link_id}"))?;
            let token = SecretString::from(String::from_utf8(token).map_err(internal)?);
            Self::revoke_quietly(&client, &token, now_ms);
        }
        Ok(view)
    }

    /// A bank's links, for that bank's partner operator or staff (the caller checks the
    /// permission).
    pub fn links_of_bank(&self, bank_code: &BankCode) -> Result<Vec<BankLinkRecord>, LinkError> {
        let rows = self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.query(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM banking_links WHERE bank_code = $1
                     ORDER BY created_at DESC, id DESC LIMIT 500"
                ),
                &[bank_code.as_str().into()],
            )
        })?;
        rows.iter()
            .map(|row| {
                let view = link_from(row)?;
                Ok(BankLinkRecord {
                    id: view.id,
                    user_id: uuid::Uuid::from_u128(row.uuid(7)?),
                    account_label: view.account_label,
                    method: view.method,
                    status: view.status,
                    created_at_ms: view.created_at_ms,
                    ended_at_ms: view.ended_at_ms,
                    end_reason: row.opt_text(8)?,
                })
            })
            .collect()
    }

    /// A bank's alerts (detector firings, fraud reports), newest first.
    pub fn alerts_of_bank(&self, bank_code: &BankCode) -> Result<Vec<Alert>, LinkError> {
        let rows = self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.query(
                "SELECT id, bank_code, kind, user_id, link_id, detail, status, created_at
                 FROM banking_alerts WHERE bank_code = $1 ORDER BY created_at DESC, id DESC LIMIT 500",
                &[bank_code.as_str().into()],
            )
        })?;
        rows.iter()
            .map(|row| {
                Ok(Alert {
                    id: uuid::Uuid::from_u128(row.uuid(0)?),
                    bank_code: row.text(1)?,
                    kind: row.text(2)?,
                    user_id: row.opt_uuid(3)?.map(uuid::Uuid::from_u128),
                    link_id: row.opt_uuid(4)?.map(uuid::Uuid::from_u128),
                    detail: serde_json::from_str(&row.text(5)?).map_err(internal)?,
                    status: row.text(6)?,
                    created_at_ms: row.int(7)?,
                })
            })
            .collect()
    }
}

/// Kinko's client key for `private_key_jwt`: made once, kept sealed in the store, so a
/// restart keeps the same identity at every bank.
pub fn client_key(identity: &IdentityService) -> Result<SigningKey, LinkError> {
    let now_ms = i64::try_from(identity.clock().now_ms()).unwrap_or(i64::MAX);
    let associated = b"bank_client_key:1";
    let database = identity.database();
    let sealed = database.transaction(|tx: &mut dyn Tx| {
        tx.query_opt(
            "SELECT sealed_key FROM banking_client_keys WHERE id = 1",
            &[],
        )?
        .map(|row| row.bytes(0))
        .transpose()
    })?;
    if let Some(sealed) = sealed {
        let bytes = identity
            .secret_box()
            .open(&sealed, associated)
            .map_err(internal)?;
        return SigningKey::from_slice(&bytes).map_err(internal);
    }
    let key = jws::generate_key().map_err(internal)?;
    let sealed = identity
        .secret_box()
        .seal(&key.to_bytes(), associated)
        .map_err(internal)?;
    database.transaction(|tx: &mut dyn Tx| {
        // Two servers starting at once: the first key stored wins, the other reads it back.
        let existing = tx.query_opt("SELECT id FROM banking_client_keys WHERE id = 1", &[])?;
        if existing.is_none() {
            tx.execute(
                "INSERT INTO banking_client_keys (id, sealed_key, created_at) VALUES (1, $1, $2)",
                &[Value::Bytes(sealed.clone()), now_ms.into()],
            )?;
        }
        Ok::<_, StoreError>(())
    })?;
    client_key_stored(identity)
}

fn client_key_stored(identity: &IdentityService) -> Result<SigningKey, LinkError> {
    let sealed = identity.database().transaction(|tx: &mut dyn Tx| {
        tx.query_one(
            "SELECT sealed_key FROM banking_client_keys WHERE id = 1",
            &[],
        )?
        .bytes(0)
    })?;
    let bytes = identity
        .secret_box()
        .open(&sealed, b"bank_client_key:1")
        .map_err(internal)?;
    SigningKey::from_slice(&bytes).map_err(internal)
}

/// Connects to a sandbox bank hosting every partner bank: discovers it, registers Kinko with
/// its redirect and webhook URLs under `public_url`, and answers the directory.
pub fn connect_sandbox(
    identity: &IdentityService,
    issuer: &str,
    public_url: &str,
) -> Result<(BankDirectory, String), LinkError> {
    let public_url = public_url.trim_end_matches('/');
    let redirect_uri = format!("{public_url}/api/v1/bank-links/callback");
    let webhook_url = format!("{public_url}/api/v1/bank-webhooks");
    let key = client_key(identity)?;
    let agent = crate::client::agent();
    let endpoints = crate::client::discover(&agent, issuer).map_err(|error| {
        tracing::error!(error = %error, issuer, "cannot discover the sandbox bank");
        LinkError::BankUnavailable
    })?;
    let client_id = crate::client::register_at_sandbox(
        &agent,
        &endpoints.issuer,
        "Kinko",
        &key,
        &redirect_uri,
        &webhook_url,
    )
    .map_err(|error| {
        tracing::error!(error = %error, issuer, "cannot register at the sandbox bank");
        LinkError::BankUnavailable
    })?;
    let now_ms = i64::try_from(identity.clock().now_ms()).unwrap_or(i64::MAX);
    identity.database().transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "DELETE FROM banking_clients WHERE issuer = $1",
            &[endpoints.issuer.as_str().into()],
        )?;
        tx.execute(
            "INSERT INTO banking_clients (issuer, client_id, registered_at) VALUES ($1, $2, $3)",
            &[
                endpoints.issuer.as_str().into(),
                client_id.as_str().into(),
                now_ms.into(),
            ],
        )
    })?;
    let codes = identity
        .database()
        .transaction(|tx: &mut dyn Tx| registry::list_banks(tx))?
        .into_iter()
        .map(|bank| bank.code.as_str().to_owned());
    let client = Arc::new(BankClient::new(agent, client_id, key, endpoints));
    Ok((BankDirectory::serving(codes, client), redirect_uri))
}

/// The wallet holding an active link on this bank account, if any (row-locked).
fn active_link_on(
    tx: &mut dyn Tx,
    bank_code: &str,
    account_ref: &str,
) -> Result<Option<u128>, StoreError> {
    let sql = format!(
        "SELECT user_id FROM banking_links WHERE bank_code = $1 AND account_ref = $2
         AND status = 'active'{}",
        tx.for_update()
    );
    tx.query_opt(&sql, &[bank_code.into(), account_ref.into()])?
        .map(|row| row.uuid(0))
        .transpose()
}

fn insert_alert(
    tx: &mut dyn Tx,
    now_ms: i64,
    bank_code: &str,
    kind: &str,
    user_id: Option<u128>,
    link_id: Option<uuid::Uuid>,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO banking_alerts (id, bank_code, kind, user_id, link_id, detail, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'open', $7)",
        &[
            Value::Uuid(uuid::Uuid::now_v7().as_u128()),
            bank_code.into(),
            kind.into(),
            user_id.map_or(Value::Null, Value::Uuid),
            link_id.map_or(Value::Null, |id| Value::Uuid(id.as_u128())),
            detail.to_string().into(),
            now_ms.into(),
        ],
    )?;
    Ok(())
}
