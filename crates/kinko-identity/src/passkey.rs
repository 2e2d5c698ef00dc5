//! Passkeys (WebAuthn) as a second factor beside TOTP: registration and assertion ceremonies
//! over `webauthn-rs`, the credentials they leave, and the relying-party configuration.
//!
//! A passkey answers a challenge only for the origin it was registered at: the browser writes
//! the origin into what the authenticator signs, and the server refuses any other one. A
//! phishing page — the 2020 attacks relayed one-time codes typed into look-alike pages — gets
//! nothing it can replay. The library does the cryptography; this module keeps the state:
//!
//! - A ceremony's state (its challenge) stays on the server, in
//!   `identity_passkey_ceremonies`, keyed by the session that started it, never sent to the
//!   client. It lives [`CEREMONY_TTL_MS`] and is taken (deleted) by the first finish attempt,
//!   whatever its outcome: a response can be presented once, and only by the session whose
//!   challenge it answers.
//! - A credential is stored as webauthn-rs's `Passkey` JSON (public key and counters, no
//!   secret). Its credential id is unique across all users.
//! - Passing a passkey on a session is a second factor like a TOTP code: the session is marked
//!   ([`session::mark_second_factor`]) and its token rotated ([`session::rotate`]). Attempts
//!   share the TOTP route's rate-limit bucket, so switching factor buys no extra guesses.
//! - Adding a passkey when the user already has a second factor needs a fresh one (a thief
//!   holding only a password session must not add their own); adding one ends the user's
//!   other sessions, pauses outgoing money and tells the registered address, as adding TOTP
//!   does. Removing one needs a fresh second factor and tells the address too.

use std::sync::Arc;
use std::time::Duration;

use kinko_audit::{Actor, AuditEntry};
use kinko_core::{Clock, ErrorCode, ErrorKind, typed_id};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Row, Tx, Value};
use webauthn_rs::prelude::{Passkey, PasskeyAuthentication, PasskeyRegistration};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::notify::{self, Channel, Environment, Message, NotifyError};
use crate::ratelimit::{self, Decision};
use crate::session::{self, NewSession, SessionError, SessionInfo};
use crate::totp;

/// The wire types of the ceremonies, re-exported so the web layer needs no WebAuthn crate.
pub use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse, Url,
};

typed_id!(
    /// A registered passkey (our id, not the authenticator's credential id).
    PasskeyId
);

/// A ceremony must finish within this long of its start (THREATS.md: codes ≤ 10 min; a
/// challenge needs less).
pub const CEREMONY_TTL_MS: i64 = 5 * 60 * 1_000;
/// At most this many passkeys per user: a bound on the allow-list every assertion carries.
pub const PASSKEYS_PER_USER_MAX: i64 = 10;
/// Passkey labels are cut to this many characters.
pub const LABEL_MAX_CHARS: usize = 60;
/// Second-factor attempts (TOTP, recovery codes and passkeys together) per user per window.
pub const ATTEMPTS_MAX: i64 = 10;
pub const ATTEMPT_WINDOW_MS: i64 = 15 * 60 * 1_000;
/// The relying party a developer's machine uses when nothing is configured.
pub const DEFAULT_RP_ID: &str = "localhost";
pub const DEFAULT_RP_ORIGIN: &str = "http://localhost:8080";
/// The name authenticators show next to the credential.
pub const RP_NAME: &str = "Kinko";

/// Why the relying-party configuration was refused; the server does not start with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyConfigError {
    /// Production must say where it is served: a default would bind every passkey to
    /// `localhost`, where no real user is.
    #[error("KINKO_RP_ID and KINKO_RP_ORIGIN must both be set when KINKO_ENV=production")]
    NotConfigured,
    #[error("KINKO_RP_ORIGIN is not an origin (scheme://host[:port]): {0}")]
    OriginInvalid(String),
    #[error("KINKO_RP_ORIGIN must be https:// (plain http only for localhost outside production)")]
    OriginNotSecure,
    #[error("KINKO_RP_ID must be the origin's host name or a parent domain of it")]
    IdNotOfOrigin,
    #[error("{name} is not UTF-8")]
    NotUnicode { name: &'static str },
}

impl ErrorCode for PasskeyConfigError {
    fn code(&self) -> &'static str {
        match self {
            PasskeyConfigError::NotConfigured => "PASSKEY_NOT_CONFIGURED",
            PasskeyConfigError::OriginInvalid(_) => "PASSKEY_ORIGIN_INVALID",
            PasskeyConfigError::OriginNotSecure => "PASSKEY_ORIGIN_NOT_SECURE",
            PasskeyConfigError::IdNotOfOrigin => "PASSKEY_ID_NOT_OF_ORIGIN",
            PasskeyConfigError::NotUnicode { .. } => "PASSKEY_SETTING_NOT_UNICODE",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Who the passkeys are for: the relying-party id (a domain) and the one origin accepted.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    id: String,
    origin: Url,
    webauthn: Webauthn,
}

impl RelyingParty {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// Reads `KINKO_RP_ID` and `KINKO_RP_ORIGIN` from the process environment, for
    /// `environment` (decided by [`crate::environment`]).
    pub fn from_env(environment: Environment) -> Result<Self, PasskeyConfigError> {
        Self::from_lookup(environment, |name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(PasskeyConfigError::NotUnicode { name }),
        })
    }

    /// The same, from any source of variables (tests pass a map).
    pub fn from_lookup(
        environment: Environment,
        lookup: impl Fn(&'static str) -> Result<Option<String>, PasskeyConfigError>,
    ) -> Result<Self, PasskeyConfigError> {
        choose_relying_party(
            environment,
            lookup("KINKO_RP_ID")?.as_deref(),
            lookup("KINKO_RP_ORIGIN")?.as_deref(),
        )
    }
}

/// The rule: production must name both the id and the origin, and the origin must be https.
/// Elsewhere, unset values mean a developer's machine ([`DEFAULT_RP_ORIGIN`]); an origin
/// given alone brings its own host as the id; plain http is allowed only for `localhost`
/// (browsers treat it as a secure context). The id must be the origin's host or a parent
/// domain of it, as WebAuthn requires.
pub fn choose_relying_party(
    environment: Environment,
    rp_id: Option<&str>,
    rp_origin: Option<&str>,
) -> Result<RelyingParty, PasskeyConfigError> {
    let given = |value: Option<&str>| {
        value
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let (rp_id, rp_origin) = (given(rp_id), given(rp_origin));
    if environment == Environment::Production && (rp_id.is_none() || rp_origin.is_none()) {
        return Err(PasskeyConfigError::NotConfigured);
    }
    let origin_text = rp_origin.unwrap_or_else(|| DEFAULT_RP_ORIGIN.to_owned());
    let origin = Url::parse(&origin_text)
        .map_err(|error| PasskeyConfigError::OriginInvalid(error.to_string()))?;
    let bare = origin.path() == "/"
        && origin.query().is_none()
        && origin.fragment().is_none()
        && origin.username().is_empty()
        && origin.password().is_none();
    let Some(host) = origin.domain().filter(|_| bare).map(str::to_owned) else {
        return Err(PasskeyConfigError::OriginInvalid(
            "a scheme and a host name only (no path, query, user or IP address)".to_owned(),
        ));
    };
    let secure = match origin.scheme() {
        "https" => true,
        "http" => environment != Environment::Production && host == "localhost",
        _ => false,
    };
    if !secure {
        return Err(PasskeyConfigError::OriginNotSecure);
    }
    let id = rp_id
        .map(|id| id.to_ascii_lowercase())
        .unwrap_or_else(|| host.clone());
    if !(host == id || host.ends_with(&format!(".{id}"))) {
        return Err(PasskeyConfigError::IdNotOfOrigin);
    }
    let webauthn = WebauthnBuilder::new(&id, &origin)
        .map_err(|_| PasskeyConfigError::IdNotOfOrigin)?
        .rp_name(RP_NAME)
        // Exactly the configured origin: no sibling subdomain, no other port.
        .allow_subdomains(false)
        .allow_any_port(false)
        .timeout(Duration::from_millis(CEREMONY_TTL_MS.unsigned_abs()))
        .build()
        .map_err(|_| PasskeyConfigError::IdNotOfOrigin)?;
    Ok(RelyingParty {
        id,
        origin,
        webauthn,
    })
}

/// Every way a passkey request can fail, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// No ceremony of this kind is in progress on this session: never started, expired,
    /// already finished (a replay), or started by another session.
    #[error("no passkey ceremony is in progress on this session; start again")]
    CeremonyNotFound,
    #[error("the authenticator's registration response was refused")]
    RegistrationRejected,
    /// Wrong origin, wrong challenge, a credential that is not the user's, a bad signature, no
    /// user verification, or a counter that went backwards.
    #[error("the passkey assertion was refused")]
    AssertionRejected,
    #[error("no passkey is registered")]
    NoneRegistered,
    #[error("this passkey is already registered")]
    AlreadyRegistered,
    #[error("at most {PASSKEYS_PER_USER_MAX} passkeys may be registered")]
    LimitReached,
    /// No such passkey among the user's own (another user's is "not found" too).
    #[error("no such passkey")]
    NotFound,
    #[error("too many attempts; try again later")]
    RateLimited { retry_after_ms: i64 },
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Notify(#[from] NotifyError),
    #[error("an internal step failed: {0}")]
    Internal(String),
}

impl ErrorCode for PasskeyError {
    fn code(&self) -> &'static str {
        match self {
            PasskeyError::CeremonyNotFound => "PASSKEY_CEREMONY_NOT_FOUND",
            PasskeyError::RegistrationRejected => "PASSKEY_REGISTRATION_REJECTED",
            PasskeyError::AssertionRejected => "PASSKEY_ASSERTION_REJECTED",
            PasskeyError::NoneRegistered => "PASSKEY_NONE_REGISTERED",
            PasskeyError::AlreadyRegistered => "PASSKEY_ALREADY_REGISTERED",
            PasskeyError::LimitReached => "PASSKEY_LIMIT_REACHED",
            PasskeyError::NotFound => "PASSKEY_NOT_FOUND",
            PasskeyError::RateLimited { .. } => "RATE_LIMITED",
            PasskeyError::Session(error) => error.code(),
            PasskeyError::Store(_) | PasskeyError::Notify(_) | PasskeyError::Internal(_) => {
                "INTERNAL"
            }
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            PasskeyError::CeremonyNotFound | PasskeyError::RegistrationRejected => {
                ErrorKind::InvalidInput
            }
            PasskeyError::AssertionRejected => ErrorKind::Unauthenticated,
            PasskeyError::NoneRegistered => ErrorKind::Forbidden,
            PasskeyError::AlreadyRegistered | PasskeyError::LimitReached => ErrorKind::Conflict,
            PasskeyError::NotFound => ErrorKind::NotFound,
            PasskeyError::RateLimited { .. } => ErrorKind::RateLimited,
            PasskeyError::Session(error) => match error {
                SessionError::Invalid | SessionError::Expired => ErrorKind::Unauthenticated,
                SessionError::CsrfInvalid | SessionError::StepUpRequired => ErrorKind::Forbidden,
                SessionError::NotFound | SessionError::DeviceNotFound => ErrorKind::NotFound,
                SessionError::Random | SessionError::Store(_) => ErrorKind::Internal,
            },
            PasskeyError::Store(_) | PasskeyError::Notify(_) | PasskeyError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// What a finish step answers inside its transaction: the inner error is the request's
/// failure, and the transaction still commits (the ceremony is used up, the failure audited).
type Outcome<T> = Result<T, PasskeyError>;

fn internal(error: impl std::fmt::Display) -> PasskeyError {
    PasskeyError::Internal(error.to_string())
}

/// One of a user's passkeys, for the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeySummary {
    pub passkey_id: PasskeyId,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Register,
    Authenticate,
    /// Approving one thing the user is shown (a large charge), without changing the session.
    Approve,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::Authenticate => "authenticate",
            Purpose::Approve => "approve",
        }
    }
}

/// Whether the user has at least one passkey.
pub fn has_passkey(tx: &mut dyn Tx, user_id: u128) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT id FROM identity_passkeys WHERE user_id = $1 LIMIT 1",
            &[Value::Uuid(user_id)],
        )?
        .is_some())
}

/// Whether the user has any second factor: a confirmed TOTP app or a passkey.
pub fn has_second_factor(tx: &mut dyn Tx, user_id: u128) -> Result<bool, PasskeyError> {
    let totp = totp::has_confirmed_totp(tx, user_id).map_err(internal)?;
    Ok(totp || has_passkey(tx, user_id)?)
}

/// Deletes ceremonies past their lifetime; returns how many. Called at every start, so the
/// table holds at most two rows per session that started one in the last five minutes.
pub fn purge_expired_ceremonies(tx: &mut dyn Tx, now_ms: i64) -> Result<u64, StoreError> {
    tx.execute(
        "DELETE FROM identity_passkey_ceremonies WHERE expires_at <= $1",
        &[Value::Int(now_ms)],
    )
}

fn put_ceremony(
    tx: &mut dyn Tx,
    now_ms: i64,
    session: &SessionInfo,
    purpose: Purpose,
    state_json: &str,
) -> Result<(), StoreError> {
    purge_expired_ceremonies(tx, now_ms)?;
    // A new start replaces the session's previous challenge of the same kind.
    tx.execute(
        "INSERT INTO identity_passkey_ceremonies
            (session_id, purpose, user_id, state_json, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (session_id, purpose) DO UPDATE SET
            user_id = excluded.user_id, state_json = excluded.state_json,
            expires_at = excluded.expires_at",
        &[
            Value::Uuid(session.session_id.as_u128()),
            purpose.as_str().into(),
            Value::Uuid(session.user_id),
            state_json.into(),
            Value::Int(now_ms.saturating_add(CEREMONY_TTL_MS)),
        ],
    )?;
    Ok(())
}

/// Takes the session's ceremony of `purpose`: it is deleted whether or not it is still valid,
/// so whatever the outcome it is never used twice. The row lock makes two concurrent finishes
/// on PostgreSQL see it once between them.
fn take_ceremony(
    tx: &mut dyn Tx,
    now_ms: i64,
    session: &SessionInfo,
    purpose: Purpose,
) -> Result<Option<String>, StoreError> {
    let sql = format!(
        "SELECT user_id, state_json, expires_at FROM identity_passkey_ceremonies
         WHERE session_id = $1 AND purpose = $2{}",
        tx.for_update()
    );
    let key = [
        Value::Uuid(session.session_id.as_u128()),
        purpose.as_str().into(),
    ];
    let Some(row) = tx.query_opt(&sql, &key)? else {
        return Ok(None);
    };
    tx.execute(
        "DELETE FROM identity_passkey_ceremonies WHERE session_id = $1 AND purpose = $2",
        &key,
    )?;
    if row.uuid(0)? != session.user_id || row.int(2)? <= now_ms {
        return Ok(None);
    }
    Ok(Some(row.text(1)?))
}

fn passkey_id_of(row: &Row, index: usize) -> Result<PasskeyId, StoreError> {
    PasskeyId::from_u128(row.uuid(index)?).map_err(|error| StoreError::new(error.to_string()))
}

/// The user's stored passkeys (at most [`PASSKEYS_PER_USER_MAX`]), oldest first.
fn stored_passkeys(tx: &mut dyn Tx, user_id: u128) -> Result<Vec<Passkey>, PasskeyError> {
    let rows = tx.query(
        "SELECT passkey_json FROM identity_passkeys WHERE user_id = $1
         ORDER BY created_at, id LIMIT $2",
        &[Value::Uuid(user_id), Value::Int(PASSKEYS_PER_USER_MAX)],
    )?;
    rows.iter()
        .map(|row| serde_json::from_str::<Passkey>(&row.text(0)?).map_err(internal))
        .collect()
}

fn user_email(tx: &mut dyn Tx, user_id: u128) -> Result<String, PasskeyError> {
    let row = tx
        .query_opt(
            "SELECT email FROM identity_users WHERE id = $1",
            &[Value::Uuid(user_id)],
        )?
        .ok_or(PasskeyError::Session(SessionError::Invalid))?;
    Ok(row.text(0)?)
}

/// Printable characters only, cut to [`LABEL_MAX_CHARS`]: the label comes from the client
/// and is shown back to the user.
fn clean_label(label: Option<&str>) -> String {
    let cleaned: String = label
        .unwrap_or_default()
        .chars()
        .filter(|character| !character.is_control())
        .take(LABEL_MAX_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "passkey".to_owned()
    } else {
        cleaned.to_owned()
    }
}

fn audit(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::User(user_id),
            action,
            subject_kind: "user",
            subject_id: &uuid::Uuid::from_u128(user_id).to_string(),
            reason: "",
            detail,
        },
    )?;
    Ok(())
}

const ADDED_SUBJECT: &str = "Kinko: パスキーを登録しました / Passkey added";
const ADDED_BODY: &str = "Kinko の二段階認証にパスキーが登録されました。安全のため、他の端末はログアウトされ、しばらくの間は送金・出金ができません。お心当たりがなければ、すぐにサポートへ連絡してください。\n\
    A passkey was added as your Kinko second factor. Other devices were signed out and money cannot leave the wallet for a while. If this was not you, contact support now.";
const REMOVED_SUBJECT: &str = "Kinko: パスキーを削除しました / Passkey removed";
const REMOVED_BODY: &str = "Kinko の二段階認証からパスキーが削除されました。お心当たりがなければ、すぐにサポートへ連絡してください。\n\
    A passkey was removed from your Kinko second factors. If this was not you, contact support now.";

fn send_notice(
    tx: &mut dyn Tx,
    now_ms: i64,
    email: &str,
    purpose: &str,
    subject: &str,
    body: &str,
) -> Result<(), NotifyError> {
    notify::enqueue(
        tx,
        now_ms,
        &Message {
            channel: Channel::Email,
            destination: email.to_owned(),
            purpose: purpose.to_owned(),
            subject: subject.to_owned(),
            body: body.to_owned(),
        },
    )?;
    Ok(())
}

/// Adding a factor to an account that has one needs a fresh one: otherwise a thief with the
/// password alone could add their own passkey and pass every later step-up with it.
fn require_fresh_if_protected(
    tx: &mut dyn Tx,
    now_ms: i64,
    session: &SessionInfo,
) -> Result<(), PasskeyError> {
    if has_second_factor(tx, session.user_id)? {
        session::require_fresh_for_money(session, now_ms)?;
    }
    Ok(())
}

/// A failed second-factor attempt: audited, and answered with `error` once the transaction
/// (which used up the ceremony) commits.
fn refused<T>(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    error: PasskeyError,
) -> Result<Outcome<T>, PasskeyError> {
    tracing::info!(
        user_id = %uuid::Uuid::from_u128(user_id),
        code = error.code(),
        "passkey second factor refused"
    );
    audit(
        tx,
        now_ms,
        user_id,
        "second_factor.failed",
        serde_json::json!({ "method": "passkey", "code": error.code() }),
    )?;
    Ok(Err(error))
}

fn second_factor_bucket(user_id: u128) -> String {
    // The same bucket as the TOTP route in `service`, so the limit counts all factors.
    format!("second_factor:user:{}", uuid::Uuid::from_u128(user_id))
}

/// The passkey flows. Each is one storage transaction (a finish that fails still commits the
/// deletion of its ceremony and the audit entry of the failure). Callers on an async runtime
/// run these functions in `spawn_blocking`.
pub struct PasskeyService {
    db: Arc<Database>,
    relying_party: Arc<RelyingParty>,
    clock: Arc<dyn Clock>,
    /// How long outgoing money waits after a passkey is added (the identity service's
    /// `outgoing_freeze_ms`).
    outgoing_freeze_ms: i64,
}

impl PasskeyService {
    pub fn new(
        db: Arc<Database>,
        relying_party: Arc<RelyingParty>,
        clock: Arc<dyn Clock>,
        outgoing_freeze_ms: i64,
    ) -> Self {
        Self {
            db,
            relying_party,
            clock,
            outgoing_freeze_ms,
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Starts registering a passkey for the session's user: the options to pass to
    /// `navigator.credentials.create()`. The user's existing passkeys are excluded so an
    /// authenticator is not registered twice.
    pub fn start_registration(
        &self,
        session: &SessionInfo,
    ) -> Result<CreationChallengeResponse, PasskeyError> {
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            require_fresh_if_protected(tx, now_ms, session)?;
            let existing = stored_passkeys(tx, session.user_id)?;
            if i64::try_from(existing.len()).unwrap_or(i64::MAX) >= PASSKEYS_PER_USER_MAX {
                return Err(PasskeyError::LimitReached);
            }
            let email = user_email(tx, session.user_id)?;
            let exclude = existing
                .iter()
                .map(|passkey| passkey.cred_id().clone())
                .collect();
            let (options, state) = self
                .relying_party
                .webauthn
                .start_passkey_registration(
                    uuid::Uuid::from_u128(session.user_id),
                    &email,
                    &email,
                    Some(exclude),
                )
                .map_err(internal)?;
            let state_json = serde_json::to_string(&state).map_err(internal)?;
            put_ceremony(tx, now_ms, session, Purpose::Register, &state_json)?;
            Ok(options)
        })
    }

    /// Finishes a registration with the authenticator's response and stores the passkey.
    pub fn finish_registration(
        &self,
        session: &SessionInfo,
        credential: &RegisterPublicKeyCredential,
        label: Option<&str>,
    ) -> Result<PasskeySummary, PasskeyError> {
        let now_ms = self.now_ms();
        let passkey_id = PasskeyId::generate(self.clock.as_ref());
        self.db.transaction(|tx: &mut dyn Tx| {
            self.finish_registration_in(tx, now_ms, session, credential, label, passkey_id)
        })?
    }

    fn finish_registration_in(
        &self,
        tx: &mut dyn Tx,
        now_ms: i64,
        session: &SessionInfo,
        credential: &RegisterPublicKeyCredential,
        label: Option<&str>,
        passkey_id: PasskeyId,
    ) -> Result<Outcome<PasskeySummary>, PasskeyError> {
        let user = session.user_id;
        let Some(state_json) = take_ceremony(tx, now_ms, session, Purpose::Register)? else {
            return Ok(Err(PasskeyError::CeremonyNotFound));
        };
        let state: PasskeyRegistration = serde_json::from_str(&state_json).map_err(internal)?;
        let passkey = match self
            .relying_party
            .webauthn
            .finish_passkey_registration(credential, &state)
        {
            Ok(passkey) => passkey,
            Err(error) => {
                tracing::info!(
                    user_id = %uuid::Uuid::from_u128(user),
                    error = %error,
                    "passkey registration refused"
                );
                return Ok(Err(PasskeyError::RegistrationRejected));
            }
        };
        // Checked again: a factor may have been added, or freshness lapsed, since start.
        if let Err(error) = require_fresh_if_protected(tx, now_ms, session) {
            return Ok(Err(error));
        }
        let count = tx
            .query_one(
                "SELECT COUNT(*) FROM identity_passkeys WHERE user_id = $1",
                &[Value::Uuid(user)],
            )?
            .int(0)?;
        if count >= PASSKEYS_PER_USER_MAX {
            return Ok(Err(PasskeyError::LimitReached));
        }
        let credential_id = passkey.cred_id().clone();
        let taken = tx.query_opt(
            "SELECT id FROM identity_passkeys WHERE credential_id = $1",
            &[credential_id.clone().into()],
        )?;
        if taken.is_some() {
            return Ok(Err(PasskeyError::AlreadyRegistered));
        }
        let label = clean_label(label);
        tx.execute(
            "INSERT INTO identity_passkeys
                (id, user_id, credential_id, passkey_json, label, sign_count, created_at)
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
            &[
                Value::Uuid(passkey_id.as_u128()),
                Value::Uuid(user),
                credential_id.into(),
                serde_json::to_string(&passkey).map_err(internal)?.into(),
                label.as_str().into(),
                Value::Int(now_ms),
            ],
        )?;
        // As for a new TOTP app (service::confirm_totp): a new factor is what a thief
        // adds after taking a password (7pay), so other sessions end, outgoing money
        // waits and the registered address is told.
        session::sign_out_others_and_freeze(
            tx,
            now_ms,
            user,
            Some(session.session_id),
            now_ms.saturating_add(self.outgoing_freeze_ms),
        )?;
        let email = user_email(tx, user)?;
        send_notice(
            tx,
            now_ms,
            &email,
            "second_factor_added",
            ADDED_SUBJECT,
            ADDED_BODY,
        )?;
        audit(
            tx,
            now_ms,
            user,
            "second_factor.added",
            serde_json::json!({ "method": "passkey", "passkey_id": passkey_id.to_string() }),
        )?;
        Ok(Ok(PasskeySummary {
            passkey_id,
            label,
            created_at: now_ms,
            last_used_at: None,
        }))
    }

    /// Starts a passkey assertion as the second factor of the current session: the options to
    /// pass to `navigator.credentials.get()`, allowing only the user's own passkeys.
    pub fn start_authentication(
        &self,
        session: &SessionInfo,
    ) -> Result<RequestChallengeResponse, PasskeyError> {
        self.start_assertion(session, Purpose::Authenticate, |state| {
            serde_json::to_string(state).map_err(internal)
        })
    }

    /// Starts an assertion over the user's own passkeys and keeps its state (as `keep` writes
    /// it) in the session's ceremony of `purpose`.
    fn start_assertion(
        &self,
        session: &SessionInfo,
        purpose: Purpose,
        keep: impl FnOnce(&PasskeyAuthentication) -> Result<String, PasskeyError>,
    ) -> Result<RequestChallengeResponse, PasskeyError> {
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            let passkeys = stored_passkeys(tx, session.user_id)?;
            if passkeys.is_empty() {
                return Err(PasskeyError::NoneRegistered);
            }
            let (options, state) = self
                .relying_party
                .webauthn
                .start_passkey_authentication(&passkeys)
                .map_err(internal)?;
            put_ceremony(tx, now_ms, session, purpose, &keep(&state)?)?;
            Ok(options)
        })
    }

    /// Finishes the assertion: on success the session has passed its second factor, its
    /// device is trusted, and its token is rotated (the new one is returned).
    pub fn finish_authentication(
        &self,
        session: &SessionInfo,
        credential: &PublicKeyCredential,
    ) -> Result<NewSession, PasskeyError> {
        let now_ms = self.now_ms();
        let user = session.user_id;
        self.count_attempt(now_ms, user)?;
        self.db.transaction(|tx: &mut dyn Tx| {
            self.finish_authentication_in(tx, now_ms, session, credential)
        })?
    }

    /// Counts one try at the user's second factor (shared with TOTP), in its own transaction so
    /// that it counts even when the try fails.
    fn count_attempt(&self, now_ms: i64, user: u128) -> Result<(), PasskeyError> {
        self.db
            .transaction(|tx: &mut dyn Tx| -> Result<(), PasskeyError> {
                match ratelimit::hit(
                    tx,
                    now_ms,
                    &second_factor_bucket(user),
                    ATTEMPT_WINDOW_MS,
                    ATTEMPTS_MAX,
                )? {
                    Decision::Allowed => Ok(()),
                    Decision::Limited { retry_after_ms } => {
                        Err(PasskeyError::RateLimited { retry_after_ms })
                    }
                }
            })
    }

    fn finish_authentication_in(
        &self,
        tx: &mut dyn Tx,
        now_ms: i64,
        session: &SessionInfo,
        credential: &PublicKeyCredential,
    ) -> Result<Outcome<NewSession>, PasskeyError> {
        let user = session.user_id;
        let Some(state_json) = take_ceremony(tx, now_ms, session, Purpose::Authenticate)? else {
            return refused(tx, now_ms, user, PasskeyError::CeremonyNotFound);
        };
        let passkey_id = match self.verify_assertion(tx, now_ms, user, credential, &state_json)? {
            Ok(passkey_id) => passkey_id,
            Err(error) => return Ok(Err(error)),
        };
        session::mark_second_factor(tx, now_ms, session.session_id)?;
        let rotated = session::rotate(tx, now_ms, session.session_id)?;
        audit(
            tx,
            now_ms,
            user,
            "second_factor.passed",
            serde_json::json!({ "method": "passkey", "passkey_id": passkey_id.to_string() }),
        )?;
        Ok(Ok(rotated))
    }

    /// Checks an assertion against a ceremony's state and the stored passkey, and records the
    /// passkey's use (counter, last used). The passkey, or a refusal (audited).
    fn verify_assertion(
        &self,
        tx: &mut dyn Tx,
        now_ms: i64,
        user: u128,
        credential: &PublicKeyCredential,
        state_json: &str,
    ) -> Result<Outcome<PasskeyId>, PasskeyError> {
        let state: PasskeyAuthentication = serde_json::from_str(state_json).map_err(internal)?;
        let result = match self
            .relying_party
            .webauthn
            .finish_passkey_authentication(credential, &state)
        {
            Ok(result) => result,
            Err(error) => {
                tracing::info!(error = %error, "passkey assertion failed verification");
                return refused(tx, now_ms, user, PasskeyError::AssertionRejected);
            }
        };
        let sql = format!(
            "SELECT id, passkey_json, sign_count FROM identity_passkeys
             WHERE user_id = $1 AND credential_id = $2{}",
            tx.for_update()
        );
        // Gone if it was removed after the ceremony started.
        let Some(row) =
            tx.query_opt(&sql, &[Value::Uuid(user), result.cred_id().clone().into()])?
        else {
            return refused(tx, now_ms, user, PasskeyError::AssertionRejected);
        };
        let passkey_id = passkey_id_of(&row, 0)?;
        // webauthn-rs compares the counter with the one captured at start; this
        // compares it with the highest seen, which a concurrent ceremony may have
        // raised meanwhile. Authenticators that do not count send 0 every time.
        let seen = row.int(2)?;
        let counter = i64::from(result.counter());
        if (counter > 0 || seen > 0) && counter <= seen {
            return refused(tx, now_ms, user, PasskeyError::AssertionRejected);
        }
        let mut passkey: Passkey = serde_json::from_str(&row.text(1)?).map_err(internal)?;
        passkey.update_credential(&result);
        tx.execute(
            "UPDATE identity_passkeys SET passkey_json = $2, sign_count = $3, last_used_at = $4
             WHERE id = $1",
            &[
                Value::Uuid(passkey_id.as_u128()),
                serde_json::to_string(&passkey).map_err(internal)?.into(),
                Value::Int(counter.max(seen)),
                Value::Int(now_ms),
            ],
        )?;
        Ok(Ok(passkey_id))
    }

    /// Starts a passkey assertion that approves one thing, named by `context` (a charge's
    /// confirmation): the options for `navigator.credentials.get()`. The session is not changed.
    pub fn start_approval(
        &self,
        session: &SessionInfo,
        context: &str,
    ) -> Result<RequestChallengeResponse, PasskeyError> {
        self.start_assertion(session, Purpose::Approve, |state| {
            Ok(serde_json::json!({ "context": context, "state": state }).to_string())
        })
    }

    /// Finishes an approval: the assertion must answer the challenge started for this very
    /// `context` on this session (an assertion made for another confirmation is refused), once.
    pub fn finish_approval(
        &self,
        session: &SessionInfo,
        context: &str,
        credential: &PublicKeyCredential,
    ) -> Result<(), PasskeyError> {
        let now_ms = self.now_ms();
        let user = session.user_id;
        self.count_attempt(now_ms, user)?;
        self.db.transaction(|tx: &mut dyn Tx| {
            let Some(ceremony) = take_ceremony(tx, now_ms, session, Purpose::Approve)? else {
                return refused(tx, now_ms, user, PasskeyError::CeremonyNotFound);
            };
            let ceremony: serde_json::Value = serde_json::from_str(&ceremony).map_err(internal)?;
            if ceremony["context"].as_str() != Some(context) {
                return refused(tx, now_ms, user, PasskeyError::CeremonyNotFound);
            }
            let state = ceremony["state"].to_string();
            let passkey_id = match self.verify_assertion(tx, now_ms, user, credential, &state)? {
                Ok(passkey_id) => passkey_id,
                Err(error) => return Ok(Err(error)),
            };
            audit(
                tx,
                now_ms,
                user,
                "second_factor.approved",
                serde_json::json!({
                    "method": "passkey",
                    "passkey_id": passkey_id.to_string(),
                    "approved": context,
                }),
            )?;
            Ok(Ok(()))
        })?
    }

    /// The user's passkeys, oldest first.
    pub fn list(&self, session: &SessionInfo) -> Result<Vec<PasskeySummary>, PasskeyError> {
        self.db.transaction(|tx: &mut dyn Tx| {
            let rows = tx.query(
                "SELECT id, label, created_at, last_used_at FROM identity_passkeys
                 WHERE user_id = $1 ORDER BY created_at, id LIMIT $2",
                &[
                    Value::Uuid(session.user_id),
                    Value::Int(PASSKEYS_PER_USER_MAX),
                ],
            )?;
            rows.iter()
                .map(|row| {
                    Ok(PasskeySummary {
                        passkey_id: passkey_id_of(row, 0)?,
                        label: row.text(1)?,
                        created_at: row.int(2)?,
                        last_used_at: row.opt_int(3)?,
                    })
                })
                .collect()
        })
    }

    /// Removes one of the user's passkeys; needs a fresh second factor. Another user's
    /// passkey is "not found", whatever the session's freshness.
    pub fn remove(&self, session: &SessionInfo, passkey_id: PasskeyId) -> Result<(), PasskeyError> {
        let now_ms = self.now_ms();
        let user = session.user_id;
        self.db.transaction(|tx: &mut dyn Tx| {
            let sql = format!(
                "SELECT id FROM identity_passkeys WHERE id = $1 AND user_id = $2{}",
                tx.for_update()
            );
            tx.query_opt(
                &sql,
                &[Value::Uuid(passkey_id.as_u128()), Value::Uuid(user)],
            )?
            .ok_or(PasskeyError::NotFound)?;
            session::require_fresh_for_money(session, now_ms)?;
            tx.execute(
                "DELETE FROM identity_passkeys WHERE id = $1 AND user_id = $2",
                &[Value::Uuid(passkey_id.as_u128()), Value::Uuid(user)],
            )?;
            let email = user_email(tx, user)?;
            send_notice(
                tx,
                now_ms,
                &email,
                "second_factor_removed",
                REMOVED_SUBJECT,
                REMOVED_BODY,
            )?;
            audit(
                tx,
                now_ms,
                user,
                "second_factor.removed",
                serde_json::json!({ "method": "passkey", "passkey_id": passkey_id.to_string() }),
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<RelyingParty, PasskeyConfigError>) -> &'static str {
        match result {
            Ok(relying_party) => panic!("accepted: {relying_party:?}"),
            Err(error) => error.code(),
        }
    }

    fn accepted(result: Result<RelyingParty, PasskeyConfigError>) -> (String, String) {
        let relying_party = result.unwrap_or_else(|error| panic!("{error}"));
        (
            relying_party.id().to_owned(),
            relying_party.origin().as_str().to_owned(),
        )
    }

    #[test]
    fn outside_production_unset_means_localhost() {
        let nonproduction = Environment::Sandbox;
        assert_eq!(
            accepted(choose_relying_party(nonproduction, None, None)),
            ("localhost".to_owned(), "http://localhost:8080/".to_owned())
        );
        assert_eq!(
            accepted(choose_relying_party(nonproduction, Some(" "), Some(""))),
            ("localhost".to_owned(), "http://localhost:8080/".to_owned())
        );
        // An origin alone brings its own host as the id.
        assert_eq!(
            accepted(choose_relying_party(
                nonproduction,
                None,
                Some("https://wallet.example.jp")
            )),
            (
                "wallet.example.jp".to_owned(),
                "https://wallet.example.jp/".to_owned()
            )
        );
        // Plain http only for localhost.
        assert_eq!(
            code(choose_relying_party(
                nonproduction,
                None,
                Some("http://wallet.example.jp")
            )),
            "PASSKEY_ORIGIN_NOT_SECURE"
        );
    }

    #[test]
    fn production_needs_both_settings_and_https() {
        let production = Environment::Production;
        for (id, origin) in [
            (None, None),
            (Some("example.jp"), None),
            (None, Some("https://wallet.example.jp")),
            (Some(""), Some("https://wallet.example.jp")),
        ] {
            assert_eq!(
                code(choose_relying_party(production, id, origin)),
                "PASSKEY_NOT_CONFIGURED",
                "{id:?} {origin:?}"
            );
        }
        assert_eq!(
            code(choose_relying_party(
                production,
                Some("localhost"),
                Some("http://localhost:8080")
            )),
            "PASSKEY_ORIGIN_NOT_SECURE"
        );
        // A parent domain is a valid id (passkeys then work on its other subdomains' pages
        // only if those origins are configured, which they are not).
        assert_eq!(
            accepted(choose_relying_party(
                production,
                Some("Example.JP"),
                Some("https://wallet.example.jp")
            )),
            (
                "example.jp".to_owned(),
                "https://wallet.example.jp/".to_owned()
            )
        );
    }

    #[test]
    fn the_id_must_be_the_origins_domain_and_the_origin_bare() {
        let production = Environment::Production;
        for id in ["ample.jp", "other.example", "wallet.example.jp.evil"] {
            assert_eq!(
                code(choose_relying_party(
                    production,
                    Some(id),
                    Some("https://wallet.example.jp")
                )),
                "PASSKEY_ID_NOT_OF_ORIGIN",
                "{id}"
            );
        }
        for origin in [
            "wallet.example.jp",
            "https://wallet.example.jp/login",
            "https://wallet.example.jp/?next=1",
            "https://user@wallet.example.jp",
            "https://192.0.2.1",
            "ftp://wallet.example.jp",
        ] {
            let refused = code(choose_relying_party(
                production,
                Some("example.jp"),
                Some(origin),
            ));
            assert!(
                refused == "PASSKEY_ORIGIN_INVALID" || refused == "PASSKEY_ORIGIN_NOT_SECURE",
                "{origin}: {refused}"
            );
        }
    }

    #[test]
    fn the_settings_are_read_for_the_environment_given() {
        let lookup = |name: &'static str| {
            Ok(match name {
                // Ignored: the environment is decided in one place and passed in.
                "KINKO_ENV" => Some("sandbox".to_owned()),
                _ => None,
            })
        };
        assert_eq!(
            code(RelyingParty::from_lookup(Environment::Production, lookup)),
            "PASSKEY_NOT_CONFIGURED"
        );
        assert_eq!(
            accepted(RelyingParty::from_lookup(Environment::Sandbox, lookup)).0,
            "localhost"
        );
    }
}
