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

    /// Starts a link: checks the wallet and the bank's switches, pushes the authorization
    /// request, and answers where to send the browser.
    pub fn start_link(
        &self,
        session: &SessionInfo,
        bank_code: &str,
    ) -> Result<StartedLink, LinkError> {
        self.gate(session)?;
        let code = BankCode::parse(bank_code).map_err(|_| LinkError::BankUnknown)?;
        let database = self.identity.database();
        let now_ms = self.now_ms();
        let policy = database.transaction(|tx: &mut dyn Tx| {
            let started = tx
                .query_one(
                    "SELECT COUNT(*) FROM banking_link_attempts WHERE user_id = $1 AND created_at > $2",
                    &[Value::Uuid(session.user_id), (now_ms - 3_600_000).into()],
                )?
                .int(0)?;
            if started >= ATTEMPTS_PER_HOUR_MAX {
                return Err(LinkError::RateLimited {
                    retry_after_ms: 3_600_000,
                });
            }
            Ok(registry::policy(tx, &code)?)
        })?;
        if !policy.linking_enabled {
            return Err(LinkError::LinkingDisabled);
        }
        let client = self
            .banks
            .for_bank(code.as_str())
            .ok_or(LinkError::BankUnavailable)?;
        let state = SecretString::from(random::token().map_err(internal)?);
        let verifier = SecretString::from(random::token().map_err(internal)?);
        let dpop_key = jws::generate_key().map_err(internal)?;
        let authorization_url = client
            .push_authorization(
                &PushRequest {
                    redirect_uri: &self.redirect_uri,
                    scope: LINK_SCOPE,
                    state: &state,
                    code_verifier: &verifier,
                    bank_code: code.as_str(),
                },
                now_ms,
            )
            .map_err(|error| match bank_failure(error) {
                LinkError::LinkFailed => LinkError::BankUnavailable,
                other => other,
            })?;
        let state_hash = random::stored_hash(state.expose_secret());
        let associated = format!("bank_link_attempt:{state_hash}");
        let sealed_verifier = self.seal(verifier.expose_secret().as_bytes(), &associated)?;
        let sealed_key = self.seal(&dpop_key.to_bytes(), &associated)?;
        database.transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO banking_link_attempts (state_hash, user_id, bank_code, sealed_verifier,
                 sealed_dpop_key, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    state_hash.as_str().into(),
                    Value::Uuid(session.user_id),
                    code.as_str().into(),
                    Value::Bytes(sealed_verifier.clone()),
                    Value::Bytes(sealed_key.clone()),
                    now_ms.into(),
                    (now_ms + ATTEMPT_LIFETIME_MS).into(),
                ],
            )
        })?;
        Ok(StartedLink {
            authorization_url,
            expires_in_s: ATTEMPT_LIFETIME_MS / 1_000,
        })
    }

    /// Records a refused link attempt in the audit log (the caller gets the generic answer).
    fn refuse(&self, user_id: u128, bank_code: &str, reason: &str) -> LinkError {
        let now_ms = self.now_ms();
        let outcome = self.identity.database().transaction(|tx: &mut dyn Tx| {
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.refused",
                bank_code,
                reason,
                serde_json::json!({ "bank_code": bank_code }),
            )
        });
        if let Err(error) = outcome {
            tracing::error!(error = %error, "cannot audit a refused link");
        }
        LinkError::LinkFailed
    }

    /// Ends a consent at the bank that Kinko will not use (holder mismatch, duplicate).
    fn revoke_quietly(client: &BankClient, refresh_token: &SecretString, now_ms: i64) {
        if let Err(error) = client.revoke(refresh_token, now_ms) {
            tracing::warn!(error = %error, "cannot revoke an unused consent at the bank");
        }
    }

    /// Completes a link when the browser comes back from the bank with `code`, `state` and
    /// `iss`. The attempt is spent first, so a state works once whatever follows. Every answer
    /// leaves `LINK_ANSWER_TIME` after the request began, so the time does not tell a spent
    /// state from a refused code or a holder mismatch.
    pub fn complete_link(
        &self,
        session: &SessionInfo,
        state: &str,
        code: &str,
        iss: &str,
    ) -> Result<LinkView, LinkError> {
        let started = Instant::now();
        let outcome = self.complete_link_now(session, state, code, iss);
        if let Some(rest) = self.link_answer_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        outcome
    }

    fn complete_link_now(
        &self,
        session: &SessionInfo,
        state: &str,
        code: &str,
        iss: &str,
    ) -> Result<LinkView, LinkError> {
        if state.is_empty() || state.len() > 512 || code.is_empty() || code.len() > 512 {
            return Err(LinkError::Input("state and code are required"));
        }
        let now_ms = self.now_ms();
        let state_hash = random::stored_hash(state);
        let attempt = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let sql = format!(
                "SELECT user_id, bank_code, sealed_verifier, sealed_dpop_key, expires_at, used_at
                 FROM banking_link_attempts WHERE state_hash = $1{}",
                tx.for_update()
            );
            let Some(row) = tx.query_opt(&sql, &[state_hash.as_str().into()])? else {
                return Ok(None);
            };
            if row.uuid(0)? != session.user_id || row.opt_int(5)?.is_some() || row.int(4)? <= now_ms
            {
                return Ok(None);
            }
            tx.execute(
                "UPDATE banking_link_attempts SET used_at = $2 WHERE state_hash = $1",
                &[state_hash.as_str().into(), now_ms.into()],
            )?;
            Ok::<_, StoreError>(Some((row.text(1)?, row.bytes(2)?, row.bytes(3)?)))
        })?;
        let Some((bank_code, sealed_verifier, sealed_key)) = attempt else {
            return Err(self.refuse(session.user_id, "", "attempt_invalid"));
        };
        let user_id = session.user_id;
        let client = self
            .banks
            .for_bank(&bank_code)
            .ok_or(LinkError::BankUnavailable)?;
        // RFC 9207: the answer must come from the bank the request went to (mix-up defence).
        if iss != client.issuer() {
            return Err(self.refuse(user_id, &bank_code, "issuer_mismatch"));
        }
        let code_parsed = BankCode::parse(&bank_code).map_err(|_| LinkError::BankUnknown)?;
        let policy = self
            .identity
            .database()
            .transaction(|tx: &mut dyn Tx| registry::policy(tx, &code_parsed))?;
        if !policy.linking_enabled {
            return Err(LinkError::LinkingDisabled);
        }
        let associated = format!("bank_link_attempt:{state_hash}");
        let verifier = SecretString::from(
            String::from_utf8(self.open(&sealed_verifier, &associated)?).map_err(internal)?,
        );
        let dpop_key = self.open_key(&sealed_key, &associated)?;
        let tokens =
            match client.exchange_code(code, &self.redirect_uri, &verifier, &dpop_key, now_ms) {
                Ok(tokens) => tokens,
                Err(BankClientError::Transport(_)) => return Err(LinkError::BankUnavailable),
                Err(error) => {
                    tracing::info!(error = %error, "the bank refused the code");
                    return Err(self.refuse(user_id, &bank_code, "code_refused"));
                }
            };
        let identity = self
            .identity
            .database()
            .transaction(|tx: &mut dyn Tx| kinko_identity::kyc::current_identity(tx, user_id))?;
        let Some(identity) = identity else {
            Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
            return Err(self.refuse(user_id, &bank_code, "kyc_missing"));
        };
        let matched = client.holder_match(
            &tokens.access_token,
            &dpop_key,
            &identity.kana_name,
            &identity.birth_date,
            now_ms,
        );
        match matched {
            Ok(true) => {}
            Ok(false) => {
                Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
                return Err(self.refuse(user_id, &bank_code, "holder_mismatch"));
            }
            Err(error) => {
                Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
                return Err(bank_failure(error));
            }
        }
        let link_id = uuid::Uuid::now_v7();
        let associated = format!("bank_link:{link_id}");
        let sealed_refresh =
            self.seal(tokens.refresh_token.expose_secret().as_bytes(), &associated)?;
        let sealed_key = self.seal(&dpop_key.to_bytes(), &associated)?;
        let outcome = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let existing = active_link_on(tx, &bank_code, &tokens.account_ref)?;
            if let Some(owner) = existing {
                if owner == user_id {
                    return Ok(Err("already_linked_here"));
                }
                // One wallet per bank account (D4): refused; the linked wallet's owner is told.
                tell_user(
                    tx,
                    now_ms,
                    owner,
                    "bank_link_attempt_elsewhere",
                    "連携済みの銀行口座に別のウォレットから連携の試みがありました / Someone tried to link your bank account to another wallet",
                    &format!(
                        "あなたのウォレットに連携済みの口座（{} {}）を、別のウォレットに連携しようとする試みがあり、拒否しました。心当たりがない場合は銀行とサポートにご連絡ください。\n\nSomeone tried to link your bank account ({} {}), which is linked to your wallet, to another wallet. We refused. If this was not you, contact your bank and our support.",
                        bank_code, tokens.account_label, bank_code, tokens.account_label
                    ),
                )?;
                audit(
                    tx,
                    now_ms,
                    Actor::User(user_id),
                    "bank_link.refused",
                    &bank_code,
                    "account_linked_to_another_wallet",
                    serde_json::json!({ "bank_code": bank_code, "linked_wallet": uuid::Uuid::from_u128(owner) }),
                )?;
                return Ok(Err("account_linked_to_another_wallet"));
            }
            tx.execute(
                "INSERT INTO banking_links (id, user_id, bank_code, account_ref, account_label,
                 method, bank_link_id, status, sealed_refresh_token, sealed_dpop_key, created_at)
                 VALUES ($1, $2, $3, $4, $5, 'oauth', $6, 'active', $7, $8, $9)",
                &[
                    Value::Uuid(link_id.as_u128()),
                    Value::Uuid(user_id),
                    bank_code.as_str().into(),
                    tokens.account_ref.as_str().into(),
                    tokens.account_label.as_str().into(),
                    tokens.link_id.as_str().into(),
                    Value::Bytes(sealed_refresh.clone()),
                    Value::Bytes(sealed_key.clone()),
                    now_ms.into(),
                ],
            )?;
            tell_user(
                tx,
                now_ms,
                user_id,
                "bank_link_created",
                "銀行口座を連携しました / Bank account linked",
                &format!(
                    "銀行口座（{} {}）をウォレットに連携しました。心当たりがない場合はすぐに連携を解除し、サポートにご連絡ください。\n\nYour bank account ({} {}) is now linked to your wallet. If this was not you, unlink it at once and contact our support.",
                    bank_code, tokens.account_label, bank_code, tokens.account_label
                ),
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.created",
                &link_id.to_string(),
                "",
                serde_json::json!({ "bank_code": bank_code, "method": "oauth" }),
            )?;
            Ok::<_, LinkError>(Ok(()))
        })?;
        if let Err(reason) = outcome {
            Self::revoke_quietly(&client, &tokens.refresh_token, now_ms);
            if reason == "already_linked_here" {
                return Err(self.refuse(user_id, &bank_code, reason));
            }
            return Err(LinkError::LinkFailed);
        }
        // The first access token is good for minutes: a charge right after linking needs no
        // refresh.
        if let Ok(mut slot) = self.access_slot(link_id).lock() {
            *slot = Some(CachedAccess {
                token: tokens.access_token.clone(),
                usable_until_ms: now_ms + ACCESS_USE_MS,
            });
        }
        Ok(LinkView {
            id: link_id,
            bank_code,
            account_label: tokens.account_label,
            method: "oauth".to_owned(),
            status: "active".to_owned(),
            created_at_ms: now_ms,
            ended_at_ms: None,
        })
    }

    fn access_slot(&self, link_id: uuid::Uuid) -> Arc<Mutex<Option<CachedAccess>>> {
        match self.access.lock() {
            Ok(mut slots) => Arc::clone(slots.entry(link_id).or_default()),
            // A poisoned map only means another thread panicked; a fresh slot is safe.
            Err(_) => Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `call` with a live access token of an active link of `user_id`, refreshing it
    /// (one refresh at a time per link) when needed, and once more if the bank no longer
    /// takes the cached one.
    fn with_access<T>(
        &self,
        user_id: u128,
        link_id: uuid::Uuid,
        call: impl Fn(&BankClient, &SecretString, &SigningKey, i64) -> Result<T, BankClientError>,
    ) -> Result<T, LinkError> {
        let slot = self.access_slot(link_id);
        let mut cached = slot.lock().map_err(|_| internal("access token lock"))?;
        for attempt in 0..2 {
            let now_ms = self.now_ms();
            let row = self.identity.database().transaction(|tx: &mut dyn Tx| {
                tx.query_opt(
                    "SELECT bank_code, status, method, sealed_refresh_token, sealed_dpop_key
                     FROM banking_links WHERE id = $1 AND user_id = $2",
                    &[Value::Uuid(link_id.as_u128()), Value::Uuid(user_id)],
                )
            })?;
            let row = row.ok_or(LinkError::NotFound)?;
            let bank_code = row.text(0)?;
            if row.text(1)? != "active" || row.text(2)? != "oauth" {
                return Err(LinkError::LinkInactive);
            }
            let (Some(sealed_refresh), Some(sealed_key)) = (row.opt_bytes(3)?, row.opt_bytes(4)?)
            else {
                return Err(LinkError::LinkInactive);
            };
            let associated = format!("bank_link:{link_id}");
            let dpop_key = self.open_key(&sealed_key, &associated)?;
            let client = self
                .banks
                .for_bank(&bank_code)
                .ok_or(LinkError::BankUnavailable)?;
            let usable = cached
                .as_ref()
                .filter(|access| access.usable_until_ms > now_ms)
                .map(|access| access.token.clone());
            let token = match usable {
                Some(token) => token,
                None => {
                    drop(sealed_refresh);
                    // One refresh at a time across processes: the lease first, then the
                    // refresh token as it stands now (another process may have rotated it).
                    let sealed_refresh = self.take_refresh_lease(link_id)?;
                    let refreshed = self.refresh_leased(
                        &client,
                        link_id,
                        &sealed_refresh,
                        &dpop_key,
                        &associated,
                    );
                    if refreshed.is_err() {
                        self.release_refresh_lease(link_id)?;
                    }
                    let tokens = refreshed?;
                    *cached = Some(CachedAccess {
                        token: tokens.access_token.clone(),
                        usable_until_ms: now_ms + ACCESS_USE_MS,
                    });
                    tokens.access_token
                }
            };
            match call(&client, &token, &dpop_key, now_ms) {
                Err(BankClientError::Refused { status: 401, .. }) if attempt == 0 => {
                    *cached = None;
                }
                Err(error) => return Err(bank_failure_kept(error)),
                Ok(answer) => return Ok(answer),
            }
        }
        Err(LinkError::BankUnavailable)
    }

    /// Takes the link's refresh lease (`refresh_lease_until`, a conditional update, so one
    /// process at a time across every instance) and answers the sealed refresh token as it
    /// stands once the lease is held. Waits for another holder at most
    /// [`REFRESH_LEASE_WAIT_MS`]; a lease whose holder died expires after
    /// [`REFRESH_LEASE_MS`].
    fn take_refresh_lease(&self, link_id: uuid::Uuid) -> Result<Vec<u8>, LinkError> {
        let started = std::time::Instant::now();
        loop {
            let now_ms = self.now_ms();
            let held = self.identity.database().transaction(|tx: &mut dyn Tx| {
                let taken = tx.execute(
                    "UPDATE banking_links SET refresh_lease_until = $2
                     WHERE id = $1 AND status = 'active'
                       AND (refresh_lease_until IS NULL OR refresh_lease_until <= $3)",
                    &[
                        Value::Uuid(link_id.as_u128()),
                        now_ms.saturating_add(REFRESH_LEASE_MS).into(),
                        now_ms.into(),
                    ],
                )?;
                if taken != 1 {
                    return Ok(None);
                }
                let row = tx.query_one(
                    "SELECT sealed_refresh_token FROM banking_links WHERE id = $1",
                    &[Value::Uuid(link_id.as_u128())],
                )?;
                Ok::<_, LinkError>(Some(row.opt_bytes(0)?))
            })?;
            match held {
                Some(Some(sealed)) => return Ok(sealed),
                Some(None) => {
                    self.release_refresh_lease(link_id)?;
                    return Err(LinkError::LinkInactive);
                }
                None if started.elapsed()
                    >= std::time::Duration::from_millis(REFRESH_LEASE_WAIT_MS) =>
                {
                    return Err(LinkError::BankUnavailable);
                }
                None => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    fn release_refresh_lease(&self, link_id: uuid::Uuid) -> Result<(), LinkError> {
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE banking_links SET refresh_lease_until = NULL WHERE id = $1",
                &[Value::Uuid(link_id.as_u128())],
            )
        })?;
        Ok(())
    }

    /// Spends the refresh token under the lease; the rotated one is stored and the lease
    /// given back in one update.
    fn refresh_leased(
        &self,
        client: &BankClient,
        link_id: uuid::Uuid,
        sealed_refresh: &[u8],
        dpop_key: &SigningKey,
        associated: &str,
    ) -> Result<crate::client::Tokens, LinkError> {
        let refresh = SecretString::from(
            String::from_utf8(self.open(sealed_refresh, associated)?).map_err(internal)?,
        );
        let tokens = match client.refresh(&refresh, dpop_key, self.now_ms()) {
            Ok(tokens) => tokens,
            Err(BankClientError::Refused { status: 400, .. }) => {
                // The bank ended the consent: so does Kinko.
                self.end_link(link_id, "revoked_by_bank", "refresh_refused")?;
                return Err(LinkError::LinkInactive);
            }
            Err(error) => return Err(bank_failure(error)),
        };
        let sealed = self.seal(tokens.refresh_token.expose_secret().as_bytes(), associated)?;
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE banking_links SET sealed_refresh_token = $2, refresh_lease_until = NULL
                 WHERE id = $1",
                &[Value::Uuid(link_id.as_u128()), Value::Bytes(sealed.clone())],
            )
        })?;
        Ok(tokens)
    }

    fn end_link(&self, link_id: uuid::Uuid, status: &str, reason: &str) -> Result<(), LinkError> {
        let now_ms = self.now_ms();
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE banking_links SET status = $2, ended_at = $3, end_reason = $4,
                 sealed_refresh_token = NULL WHERE id = $1 AND status = 'active'",
                &[
                    Value::Uuid(link_id.as_u128()),
                    status.into(),
                    now_ms.into(),
                    reason.into(),
                ],
            )?;
            audit(
                tx,
                now_ms,
                Actor::System,
                "bank_link.ended",
                &link_id.to_string(),
                reason,
                serde_json::json!({ "status": status }),
            )
        })?;
        Ok(())
    }

    /// Debits or credits the bank account of an active link of `user_id`, under `key` (the
    /// bank keeps the answer, so the same key never moves money twice).
    pub fn bank_payment(
        &self,
        user_id: u128,
        link_id: uuid::Uuid,
        order: &PaymentOrder<'_>,
    ) -> Result<BankPayment, LinkError> {
        self.with_access(user_id, link_id, |client, token, dpop_key, _| {
            // Read the clock again: a token refresh may have taken a call's time already.
            let now_ms = self.now_ms();
            if now_ms >= order.not_after_ms {
                return Err(BankClientError::DeadlinePassed);
            }
            client.payment(order, token, dpop_key, now_ms)
        })
    }

    /// The bank's saved answer for `key` on that link, `None` if the bank never saw it.
    pub fn bank_payment_status(
        &self,
        user_id: u128,
        link_id: uuid::Uuid,
        kind: PaymentKind,
        key: &str,
    ) -> Result<Option<BankPayment>, LinkError> {
        self.with_access(user_id, link_id, |client, token, dpop_key, now_ms| {
            client.payment_by_key(kind, token, dpop_key, key, now_ms)
        })
    }

    /// The bank's saved answer for `key` at `bank_code`, asked with Kinko's client
    /// authentication: needs no live link, so it settles orders on ended links too. `None` if
    /// the bank never saw the key.
    pub fn bank_payment_lookup(
        &self,
        bank_code: &str,
        kind: PaymentKind,
        key: &str,
    ) -> Result<Option<BankPayment>, LinkError> {
        let client = self
            .banks
            .for_bank(bank_code)
            .ok_or(LinkError::BankUnavailable)?;
        client
            .payment_by_client(kind, key, self.now_ms())
            .map_err(bank_failure_kept)
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

    /// A signed event from a bank (`docs/BANK-PROTOCOL.md` §9): checked against the bank's
    /// published key, applied once.
    pub fn handle_webhook(&self, body: &str) -> Result<WebhookOutcome, LinkError> {
        let now_ms = self.now_ms();
        let header = jws::unverified_header(body).map_err(|_| LinkError::WebhookInvalid)?;
        let claims = jws::unverified_claims(body).map_err(|_| LinkError::WebhookInvalid)?;
        let text = |map: &serde_json::Map<String, serde_json::Value>, name: &str| {
            map.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        if text(&header, "typ").as_deref() != Some("bank-event+jwt") {
            return Err(LinkError::WebhookInvalid);
        }
        let kid = text(&header, "kid").ok_or(LinkError::WebhookInvalid)?;
        let issuer = text(&claims, "iss").ok_or(LinkError::WebhookInvalid)?;
        let (client, codes) = self
            .banks
            .for_issuer(&issuer)
            .ok_or(LinkError::WebhookInvalid)?;
        let jwk = client
            .published_key(&kid)
            .map_err(|_| LinkError::BankUnavailable)?
            .ok_or(LinkError::WebhookInvalid)?;
        // Only now, with the bank's own published key, is anything of the event believed.
        let verified = jws::verify_with_jwk(body, &jwk).map_err(|_| LinkError::WebhookInvalid)?;
        let claims = verified.claims;
        if text(&claims, "aud").as_deref() != Some(client.client_id()) {
            return Err(LinkError::WebhookInvalid);
        }
        let issued_at_ms = claims
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            .ok_or(LinkError::WebhookInvalid)?
            .saturating_mul(1_000);
        if (now_ms - issued_at_ms).abs() > 5 * 60_000 {
            return Err(LinkError::WebhookInvalid);
        }
        let jti = text(&claims, "jti").ok_or(LinkError::WebhookInvalid)?;
        let event = text(&claims, "event").ok_or(LinkError::WebhookInvalid)?;
        if event != "link.revoked" && event != "fraud.reported" {
            return Err(LinkError::WebhookInvalid);
        }
        let bank_link_id = text(&claims, "link_id").ok_or(LinkError::WebhookInvalid)?;
        let reason = text(&claims, "reason").unwrap_or_default();
        let payment_key = text(&claims, "payment_key");
        if jti.len() > 200 || bank_link_id.len() > 200 || reason.len() > 100 {
            return Err(LinkError::WebhookInvalid);
        }
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            let seen = tx.query_opt(
                "SELECT jti FROM banking_webhook_events WHERE jti = $1",
                &[jti.as_str().into()],
            )?;
            if seen.is_some() {
                return Ok(WebhookOutcome::AlreadyHandled);
            }
            tx.execute(
                "INSERT INTO banking_webhook_events (jti, issuer, event, received_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    jti.as_str().into(),
                    issuer.as_str().into(),
                    event.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            let sql = format!(
                "SELECT id, user_id, bank_code, status, account_label FROM banking_links
                 WHERE bank_link_id = $1{}",
                tx.for_update()
            );
            let rows = tx.query(&sql, &[bank_link_id.as_str().into()])?;
            // A link id of another bank than the sender's is not the sender's to cut.
            let Some(row) = rows
                .iter()
                .find(|row| row.text(2).is_ok_and(|code| codes.contains(&code)))
            else {
                tracing::warn!(event, "a bank event names no link of ours");
                return Ok(WebhookOutcome::Applied);
            };
            let link_id = uuid::Uuid::from_u128(row.uuid(0)?);
            let user_id = row.uuid(1)?;
            let bank_code = row.text(2)?;
            let active = row.text(3)? == "active";
            let label = row.text(4)?;
            let fraud = event == "fraud.reported";
            if active {
                tx.execute(
                    "UPDATE banking_links SET status = $2, ended_at = $3, end_reason = $4,
                     sealed_refresh_token = NULL WHERE id = $1",
                    &[
                        Value::Uuid(link_id.as_u128()),
                        (if fraud { "cut_for_fraud" } else { "revoked_by_bank" }).into(),
                        now_ms.into(),
                        reason.as_str().into(),
                    ],
                )?;
            }
            if fraud {
                tx.execute(
                    "UPDATE identity_users SET outgoing_frozen_until = $2 WHERE id = $1",
                    &[Value::Uuid(user_id), FROZEN_UNTIL_REVIEWED.into()],
                )?;
                insert_alert(
                    tx,
                    now_ms,
                    &bank_code,
                    "fraud_reported",
                    Some(user_id),
                    Some(link_id),
                    serde_json::json!({
                        "reason": reason,
                        "payment_key": payment_key,
                        "bank_event": jti,
                    }),
                )?;
                tell_user(
                    tx,
                    now_ms,
                    user_id,
                    "bank_fraud_reported",
                    "銀行口座の連携を停止し、出金を止めました / We cut a bank link and paused outgoing money",
                    &format!(
                        "銀行から、口座（{bank_code} {label}）の名義人がこの連携または引き落としを承認していないとの報告がありました。連携を解除し、ウォレットからの出金を停止しました。担当者が確認します。\n\nThe bank reports that the holder of the account ({bank_code} {label}) did not authorise this link or debit. We cut the link and paused outgoing money from your wallet while our staff review it."
                    ),
                )?;
            } else if active {
                tell_user(
                    tx,
                    now_ms,
                    user_id,
                    "bank_link_ended",
                    "銀行口座の連携が銀行側で解除されました / Your bank ended a link",
                    &format!(
                        "銀行口座（{bank_code} {label}）の連携が銀行側で解除されました。\n\nThe link to your bank account ({bank_code} {label}) was ended at your bank."
                    ),
                )?;
            }
            audit(
                tx,
                now_ms,
                Actor::Bank(bank_code.clone()),
                if fraud {
                    "bank_link.fraud_reported"
                } else {
                    "bank_link.revoked_by_bank"
                },
                &link_id.to_string(),
                &reason,
                serde_json::json!({ "bank_event": jti, "payment_key": payment_key, "was_active": active }),
            )?;
            Ok::<_, LinkError>(WebhookOutcome::Applied)
        })
    }

    /// The legacy method (account number + cash-card PIN), fenced in. See the module doc.
    pub fn legacy_link(
        &self,
        session: &SessionInfo,
        source: &Source,
        request: &LegacyLinkRequest,
    ) -> Result<LinkView, LinkError> {
        let started = Instant::now();
        self.gate(session)?;
        let code = BankCode::parse(&request.bank_code).map_err(|_| LinkError::BankUnknown)?;
        check_legacy_fields(request)?;
        let user_id = session.user_id;
        let now_ms = self.now_ms();
        let secret_box = self.identity.secret_box();
        let account_key = secret_box.keyed_hash(
            "kinko.legacy.account",
            format!(
                "{}|{}|{}|{}",
                code.as_str(),
                request.branch,
                request.account_type,
                request.account_number
            )
            .as_bytes(),
        );
        let pin_key = secret_box.keyed_hash(
            "kinko.legacy.pin",
            format!("{}|{}", code.as_str(), request.pin.expose_secret()).as_bytes(),
        );
        let device = source
            .device_token
            .as_deref()
            .map_or_else(String::new, |token| {
                secret_box.keyed_hash("kinko.legacy.device", token.as_bytes())
            });
        let attempt_id = uuid::Uuid::now_v7();
        let identity = self.identity.database().transaction(|tx: &mut dyn Tx| {
            let policy = registry::policy(tx, &code)?;
            if !policy.legacy_enabled || !policy.linking_enabled {
                return Err(LinkError::LegacyDisabled);
            }
            let blocked = tx.query_opt(
                "SELECT user_id FROM banking_legacy_blocks WHERE user_id = $1",
                &[Value::Uuid(user_id)],
            )?;
            if blocked.is_some() {
                return Err(LinkError::LegacyBlocked);
            }
            // The cap per source: distinct accounts tried in the window, by IP, device, wallet.
            let since = now_ms - LEGACY_SOURCE_WINDOW_MS;
            let mut sources: Vec<(&str, Value)> = vec![
                ("user_id", Value::Uuid(user_id)),
                ("ip", source.ip.as_str().into()),
            ];
            if !device.is_empty() {
                sources.push(("device", device.as_str().into()));
            }
            for (column, value) in sources {
                let tried = tx.query_one(
                    &format!(
                        "SELECT COUNT(DISTINCT account_key),
                             SUM(CASE WHEN account_key = $3 THEN 1 ELSE 0 END)
                             FROM banking_legacy_attempts WHERE {column} = $1 AND at > $2"
                    ),
                    &[value, since.into(), account_key.as_str().into()],
                )?;
                let distinct = tried.int(0)?;
                let this_one = tried.opt_int(1)?.unwrap_or(0);
                if this_one == 0 && distinct >= LEGACY_SOURCE_ACCOUNTS_MAX {
                    return Err(LinkError::RateLimited {
                        retry_after_ms: LEGACY_SOURCE_WINDOW_MS,
                    });
                }
            }
            // The attempt counts before the bank is asked, whatever happens next.
            tx.execute(
                "INSERT INTO banking_legacy_attempts (id, bank_code, account_key, pin_key, user_id,
                 ip, device, matched, at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
                &[
                    Value::Uuid(attempt_id.as_u128()),
                    code.as_str().into(),
                    account_key.as_str().into(),
                    pin_key.as_str().into(),
                    Value::Uuid(user_id),
                    source.ip.as_str().into(),
                    device.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            Ok(kinko_identity::kyc::current_identity(tx, user_id)?)
        })?;
        let outcome = self.legacy_ask_bank(
            user_id,
            &code,
            request,
            identity,
            &account_key,
            &pin_key,
            attempt_id,
            now_ms,
        );
        // Every answer past this point leaves at the same time after the request began.
        if let Some(rest) = self.legacy_answer_time.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    fn legacy_ask_bank(
        &self,
        user_id: u128,
        code: &BankCode,
        request: &LegacyLinkRequest,
        identity: Option<kinko_identity::kyc::VerifiedIdentity>,
        account_key: &str,
        pin_key: &str,
        attempt_id: uuid::Uuid,
        now_ms: i64,
    ) -> Result<LinkView, LinkError> {
        let client = self
            .banks
            .for_bank(code.as_str())
            .ok_or(LinkError::BankUnavailable)?;
        // The KYC'd name and birth date go to the bank, never typed ones: a stranger's leaked
        // data cannot be offered for a wallet proven to be someone else's (D1).
        let matched = match &identity {
            None => false,
            Some(identity) => client
                .legacy_verify(
                    &LegacyVerify {
                        bank_code: code.as_str(),
                        branch: &request.branch,
                        account_type: &request.account_type,
                        account_number: &request.account_number,
                        pin: &request.pin,
                        kana_name: &identity.kana_name,
                        birth_date: &identity.birth_date,
                    },
                    now_ms,
                )
                .map_err(bank_failure)?,
        };
        let label = format!(
            "{} {} ****{}",
            if request.account_type == "toza" {
                "当座"
            } else {
                "普通"
            },
            request.branch,
            &request.account_number[request.account_number.len().saturating_sub(3)..]
        );
        self.identity.database().transaction(|tx: &mut dyn Tx| {
            if !matched {
                self.legacy_failed(tx, user_id, code, pin_key, now_ms)?;
                return Ok(Err(LinkError::LinkFailed));
            }
            tx.execute(
                "UPDATE banking_legacy_attempts SET matched = 1 WHERE id = $1",
                &[Value::Uuid(attempt_id.as_u128())],
            )?;
            if let Some(owner) = active_link_on(tx, code.as_str(), account_key)? {
                if owner != user_id {
                    tell_user(
                        tx,
                        now_ms,
                        owner,
                        "bank_link_attempt_elsewhere",
                        "連携済みの銀行口座に別のウォレットから連携の試みがありました / Someone tried to link your bank account to another wallet",
                        &format!(
                            "あなたのウォレットに連携済みの口座（{} {label}）を、別のウォレットに連携しようとする試みがあり、拒否しました。\n\nSomeone tried to link your bank account ({} {label}) to another wallet. We refused.",
                            code.as_str(),
                            code.as_str()
                        ),
                    )?;
                }
                audit(
                    tx,
                    now_ms,
                    Actor::User(user_id),
                    "bank_link.refused",
                    code.as_str(),
                    "account_already_linked",
                    serde_json::json!({ "bank_code": code.as_str(), "method": "legacy" }),
                )?;
                return Ok(Err(LinkError::LinkFailed));
            }
            let link_id = uuid::Uuid::now_v7();
            tx.execute(
                "INSERT INTO banking_links (id, user_id, bank_code, account_ref, account_label,
                 method, status, created_at) VALUES ($1, $2, $3, $4, $5, 'legacy', 'active', $6)",
                &[
                    Value::Uuid(link_id.as_u128()),
                    Value::Uuid(user_id),
                    code.as_str().into(),
                    account_key.into(),
                    label.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            tell_user(
                tx,
                now_ms,
                user_id,
                "bank_link_created",
                "銀行口座を連携しました / Bank account linked",
                &format!(
                    "銀行口座（{} {label}）を暗証番号方式でウォレットに連携しました。心当たりがない場合はすぐに連携を解除してください。\n\nYour bank account ({} {label}) is now linked to your wallet with the PIN method. If this was not you, unlink it at once.",
                    code.as_str(),
                    code.as_str()
                ),
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user_id),
                "bank_link.created",
                &link_id.to_string(),
                "",
                serde_json::json!({ "bank_code": code.as_str(), "method": "legacy" }),
            )?;
            Ok::<_, LinkError>(Ok(LinkView {
                id: link_id,
                bank_code: code.as_str().to_owned(),
                account_label: label.clone(),
                method: "legacy".to_owned(),
                status: STATUS_VERIFIED.to_owned(),
                created_at_ms: now_ms,
                ended_at_ms: None,
            }))
        })?
    }

    /// After a legacy failure: the wallet rule and the bank-wide detector.
    fn legacy_failed(
        &self,
        tx: &mut dyn Tx,
        user_id: u128,
        code: &BankCode,
        pin_key: &str,
        now_ms: i64,
    ) -> Result<(), LinkError> {
        audit(
            tx,
            now_ms,
            Actor::User(user_id),
            "bank_link.refused",
            code.as_str(),
            "legacy_no_match",
            serde_json::json!({ "bank_code": code.as_str(), "method": "legacy" }),
        )?;
        let failed_accounts = tx
            .query_one(
                "SELECT COUNT(DISTINCT account_key) FROM banking_legacy_attempts
                 WHERE user_id = $1 AND matched = 0",
                &[Value::Uuid(user_id)],
            )?
            .int(0)?;
        if failed_accounts >= LEGACY_WALLET_FAILED_ACCOUNTS_MAX {
            let already = tx.query_opt(
                "SELECT user_id FROM banking_legacy_blocks WHERE user_id = $1",
                &[Value::Uuid(user_id)],
            )?;
            if already.is_none() {
                tx.execute(
                    "INSERT INTO banking_legacy_blocks (user_id, blocked_at, reason)
                     VALUES ($1, $2, 'failed_on_distinct_accounts')",
                    &[Value::Uuid(user_id), now_ms.into()],
                )?;
                insert_alert(
                    tx,
                    now_ms,
                    code.as_str(),
                    "legacy_wallet_blocked",
                    Some(user_id),
                    None,
                    serde_json::json!({ "failed_accounts": failed_accounts }),
                )?;
                audit(
                    tx,
                    now_ms,
                    Actor::System,
                    "bank_link.legacy_wallet_blocked",
                    &uuid::Uuid::from_u128(user_id).to_string(),
                    "failed_on_distinct_accounts",
                    serde_json::json!({ "failed_accounts": failed_accounts }),
                )?;
            }
        }
        // One PIN value on many accounts: the reverse brute force of 2020.
        let sprayed = tx
            .query_one(
                "SELECT COUNT(DISTINCT account_key) FROM banking_legacy_attempts
                 WHERE bank_code = $1 AND pin_key = $2 AND matched = 0 AND at > $3",
                &[
                    code.as_str().into(),
                    pin_key.into(),
                    (now_ms - SPRAY_WINDOW_MS).into(),
                ],
            )?
            .int(0)?;
        let recent_failures = tx
            .query_one(
                "SELECT COUNT(*) FROM banking_legacy_attempts
                 WHERE bank_code = $1 AND matched = 0 AND at > $2",
                &[code.as_str().into(), (now_ms - BURST_WINDOW_MS).into()],
            )?
            .int(0)?;
        // The bank's usual rate: failures per window over the previous day.
        let day_failures = tx
            .query_one(
                "SELECT COUNT(*) FROM banking_legacy_attempts
                 WHERE bank_code = $1 AND matched = 0 AND at > $2 AND at <= $3",
                &[
                    code.as_str().into(),
                    (now_ms - 24 * 3_600_000).into(),
                    (now_ms - BURST_WINDOW_MS).into(),
                ],
            )?
            .int(0)?;
        let usual = day_failures / (24 * 3_600_000 / BURST_WINDOW_MS);
        let rule = if sprayed >= SPRAY_ACCOUNTS_PER_PIN_MAX {
            Some((
                "one_pin_many_accounts",
                serde_json::json!({ "accounts": sprayed }),
            ))
        } else if recent_failures >= BURST_FAILURES_MIN
            && recent_failures > usual.saturating_mul(BURST_FACTOR)
        {
            Some((
                "failure_rate_jump",
                serde_json::json!({ "failures": recent_failures, "usual": usual }),
            ))
        } else {
            None
        };
        if let Some((rule, evidence)) = rule
            && registry::switch_off_legacy(tx, now_ms, code, rule, evidence.clone())?
        {
            tracing::warn!(
                bank = code.as_str(),
                rule,
                "legacy method switched off at a bank"
            );
            insert_alert(
                tx,
                now_ms,
                code.as_str(),
                "legacy_switched_off",
                None,
                None,
                serde_json::json!({ "rule": rule, "evidence": evidence }),
            )?;
        }
        Ok(())
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

/// An analyst (or admin) lifts a wallet's legacy-method block after reviewing it, with a
/// reason; audited. Answers whether there was a block to lift.
pub fn lift_legacy_block(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &kinko_identity::operator::Operator,
    user_id: uuid::Uuid,
    reason: &str,
) -> Result<bool, kinko_identity::operator::OperatorError> {
    by.require(kinko_identity::operator::Permission::ReviewCases)?;
    kinko_identity::operator::require_reason(reason)?;
    let lifted = tx.execute(
        "DELETE FROM banking_legacy_blocks WHERE user_id = $1",
        &[Value::Uuid(user_id.as_u128())],
    )?;
    if lifted == 0 {
        return Ok(false);
    }
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(by.id.as_u128()),
            action: "bank_link.legacy_block_lifted",
            subject_kind: "user",
            subject_id: &user_id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({}),
        },
    )?;
    Ok(true)
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

/// The legacy form's shape: checked before anything is counted or asked, and saying nothing
/// about any account.
fn check_legacy_fields(request: &LegacyLinkRequest) -> Result<(), LinkError> {
    let digits = |text: &str, length: usize| {
        text.len() == length && text.bytes().all(|byte| byte.is_ascii_digit())
    };
    if !digits(&request.branch, 3) {
        return Err(LinkError::Input("branch must be 3 digits"));
    }
    if request.account_type != "futsu" && request.account_type != "toza" {
        return Err(LinkError::Input("account_type must be futsu or toza"));
    }
    if !digits(&request.account_number, 7) {
        return Err(LinkError::Input("account_number must be 7 digits"));
    }
    if !digits(request.pin.expose_secret(), 4) {
        return Err(LinkError::Input("pin must be 4 digits"));
    }
    Ok(())
}
