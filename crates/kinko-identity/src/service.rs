//! The identity flows — sign-up, contact verification, login, second factors, recovery, KYC,
//! and the gate every money movement passes — over the modules of this crate, and
//! `IdentityError`, the errors they answer with.
//!
//! Each flow is one storage transaction: the change, its audit entry and the messages it
//! causes (outbox) commit together or not at all. Password hashing (argon2id, ~15 ms) runs
//! before the transaction opens so no lock is held while it runs. Callers on an async runtime
//! run these functions in `spawn_blocking`.

use std::sync::Arc;

use kinko_audit::{Actor, AuditEntry};
use kinko_core::{Clock, ErrorCode, ErrorKind};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Tx, Value};
use secrecy::{ExposeSecret, SecretString};

use crate::codes::{self, CodeCheck, CodePurpose};
use crate::kyc::{KycLevel, KycProvider};
use crate::notify::{self, Channel, Message};
use crate::password::{self, PasswordRule};
use crate::ratelimit::{self, Decision, Guess, Guesser, LockState, LoginGate};
use crate::secrets::SecretBox;
use crate::session::{self, DeviceRef, NewSession, SessionError, SessionInfo};
use crate::totp::{self, TotpError};

mod kyc_submission;
pub mod own_safety;
mod sessions;

/// Defaults from THREATS.md; an operator may tune them within their bounds.
#[derive(Debug, Clone, Copy)]
pub struct IdentityConfig {
    /// Outgoing money waits this long after recovery or a credential change (⟨24 h⟩).
    pub outgoing_freeze_ms: i64,
    /// Sign-ups per source IP per hour, and per device.
    pub signups_per_ip_per_hour: i64,
    pub signups_per_device_per_hour: i64,
    /// Login attempts per source IP per hour (all accounts together).
    pub logins_per_ip_per_hour: i64,
    /// Recovery requests per source IP per hour.
    pub recoveries_per_ip_per_hour: i64,
    /// A sign-up not verified within this long no longer holds its address: the next sign-up
    /// of the address takes it over (no one can squat an address they cannot verify).
    pub pending_signup_ttl_ms: i64,
}

impl IdentityConfig {
    pub const DEFAULT: IdentityConfig = IdentityConfig {
        outgoing_freeze_ms: 24 * 60 * 60 * 1_000,
        signups_per_ip_per_hour: 20,
        signups_per_device_per_hour: 5,
        logins_per_ip_per_hour: 300,
        recoveries_per_ip_per_hour: 20,
        pending_signup_ttl_ms: 24 * 60 * 60 * 1_000,
    };
}

const HOUR_MS: i64 = 60 * 60 * 1_000;

/// Every way an identity request can fail, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the e-mail address is not valid")]
    EmailInvalid,
    #[error("the phone number is not valid: use the international form, e.g. +819012345678")]
    PhoneInvalid,
    /// SMS pumping: codes go only to countries Kinko serves ([`SMS_COUNTRY_CODES`]).
    #[error("phone numbers of this country cannot be used")]
    PhoneCountryNotAllowed,
    #[error("the password is not acceptable: {0}")]
    Password(PasswordRule),
    #[error("too many attempts; try again later")]
    RateLimited { retry_after_ms: i64 },
    #[error("the code is not valid")]
    CodeInvalid { attempts_left: i64 },
    #[error("the code has expired or was used too often; ask for a new one")]
    CodeExpired,
    #[error("this phone number already belongs to an active wallet")]
    PhoneInUse,
    #[error("the e-mail address or the password is wrong")]
    LoginFailed,
    #[error("set up a second factor first")]
    SecondFactorRequired,
    #[error("the second factor is not valid")]
    SecondFactorInvalid,
    #[error("outgoing money is paused after a security change until {until_ms}")]
    OutgoingFrozen { until_ms: i64 },
    #[error("prove your identity first")]
    KycRequired,
    #[error("the recovery could not be completed")]
    RecoveryFailed,
    #[error("the identity provider is unavailable")]
    KycUnavailable,
    #[error("not found")]
    NotFound,
    #[error("a second factor is already set up")]
    SecondFactorExists,
    #[error("this e-mail address belongs to another account")]
    EmailInUse,
    #[error("no contact change is waiting for a code")]
    NoPendingChange,
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("storage failed")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Notify(#[from] crate::notify::NotifyError),
    #[error("an internal step failed: {0}")]
    Internal(String),
}

impl ErrorCode for IdentityError {
    fn code(&self) -> &'static str {
        match self {
            IdentityError::EmailInvalid => "IDENTITY_EMAIL_INVALID",
            IdentityError::PhoneInvalid => "IDENTITY_PHONE_INVALID",
            IdentityError::PhoneCountryNotAllowed => "IDENTITY_PHONE_COUNTRY_NOT_ALLOWED",
            IdentityError::Password(rule) => rule.code(),
            IdentityError::RateLimited { .. } => "RATE_LIMITED",
            IdentityError::CodeInvalid { .. } => "CODE_INVALID",
            IdentityError::CodeExpired => "CODE_EXPIRED",
            IdentityError::PhoneInUse => "IDENTITY_PHONE_IN_USE",
            IdentityError::LoginFailed => "IDENTITY_LOGIN_FAILED",
            IdentityError::SecondFactorRequired => "IDENTITY_SECOND_FACTOR_REQUIRED",
            IdentityError::SecondFactorInvalid => "IDENTITY_SECOND_FACTOR_INVALID",
            IdentityError::OutgoingFrozen { .. } => "IDENTITY_OUTGOING_FROZEN",
            IdentityError::KycRequired => "IDENTITY_KYC_REQUIRED",
            IdentityError::RecoveryFailed => "IDENTITY_RECOVERY_FAILED",
            IdentityError::KycUnavailable => "KYC_PROVIDER_UNAVAILABLE",
            IdentityError::NotFound => "NOT_FOUND",
            IdentityError::SecondFactorExists => "IDENTITY_SECOND_FACTOR_EXISTS",
            IdentityError::EmailInUse => "IDENTITY_EMAIL_IN_USE",
            IdentityError::NoPendingChange => "IDENTITY_NO_PENDING_CHANGE",
            IdentityError::Session(error) => error.code(),
            IdentityError::Store(_) | IdentityError::Internal(_) | IdentityError::Notify(_) => {
                "INTERNAL"
            }
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            IdentityError::EmailInvalid
            | IdentityError::PhoneInvalid
            | IdentityError::PhoneCountryNotAllowed
            | IdentityError::Password(_)
            | IdentityError::CodeInvalid { .. }
            | IdentityError::CodeExpired
            | IdentityError::RecoveryFailed => ErrorKind::InvalidInput,
            IdentityError::RateLimited { .. } => ErrorKind::RateLimited,
            IdentityError::PhoneInUse
            | IdentityError::SecondFactorExists
            | IdentityError::EmailInUse
            | IdentityError::NoPendingChange => ErrorKind::Conflict,
            IdentityError::LoginFailed | IdentityError::SecondFactorInvalid => {
                ErrorKind::Unauthenticated
            }
            IdentityError::SecondFactorRequired
            | IdentityError::OutgoingFrozen { .. }
            | IdentityError::KycRequired => ErrorKind::Forbidden,
            IdentityError::KycUnavailable => ErrorKind::Unavailable,
            IdentityError::NotFound => ErrorKind::NotFound,
            IdentityError::Session(error) => match error {
                SessionError::Invalid | SessionError::Expired => ErrorKind::Unauthenticated,
                SessionError::CsrfInvalid | SessionError::StepUpRequired => ErrorKind::Forbidden,
                SessionError::NotFound | SessionError::DeviceNotFound => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
            IdentityError::Store(_) | IdentityError::Internal(_) | IdentityError::Notify(_) => {
                ErrorKind::Internal
            }
        }
    }
}

/// Where a request comes from: the keys of per-source limits.
#[derive(Debug, Clone)]
pub struct Source {
    pub ip: String,
    /// The device token the client presented, if any (cookie or `X-Kinko-Device` header).
    pub device_token: Option<String>,
    /// A label for a new device (the user agent, truncated).
    pub device_label: String,
}

/// A normalised e-mail address: trimmed, lower-case, one `@`, ≤ 254 characters.
pub fn normalize_email(raw: &str) -> Result<String, IdentityError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split('@').count() == 2
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if valid {
        Ok(email)
    } else {
        Err(IdentityError::EmailInvalid)
    }
}

/// A phone number in E.164: `+`, country code, 8–15 digits in all. Japanese numbers written
/// domestically (`090-1234-5678`) become `+819012345678`.
pub fn normalize_phone(raw: &str) -> Result<String, IdentityError> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let international = match compact.strip_prefix('0') {
        Some(rest) if !compact.starts_with("00") => format!("+81{rest}"),
        _ => compact,
    };
    let digits = international.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(international)
    } else {
        Err(IdentityError::PhoneInvalid)
    }
}

/// How long after a contact change further changes are still told to the contacts as they
/// were before it (at least; the outgoing-money freeze when that is longer).
pub const CONTACT_NOTICE_COOL_OFF_MS: i64 = 24 * 60 * 60 * 1_000;

/// The countries (E.164 calling codes) sign-up codes are sent to by SMS: Kinko serves Japan.
/// Anything else is refused before a message is paid for (SMS pumping).
pub const SMS_COUNTRY_CODES: &[&str] = &["81"];
/// Sign-up SMS to one number per day, and to one prefix (the number without its last four
/// digits) per hour.
pub const SIGN_UP_SMS_PER_NUMBER_PER_DAY: i64 = 3;
pub const SIGN_UP_SMS_PER_PREFIX_PER_HOUR: i64 = 10;

/// The number without its last four digits: numbers an SMS-pumping fraud rents come in runs.
fn phone_prefix(phone: &str) -> &str {
    let keep = phone.len().saturating_sub(4);
    phone.get(..keep).unwrap_or(phone)
}

/// A user as the flows see them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserProfile {
    pub user_id: uuid::Uuid,
    pub email: String,
    pub phone: String,
    pub status: String,
    pub email_verified: bool,
    pub phone_verified: bool,
    pub kyc_level: KycLevel,
    pub second_factor: bool,
    pub outgoing_frozen_until_ms: Option<i64>,
}

/// What a sign-in returns: the session, and whether a second factor is still to be passed.
#[derive(Debug)]
pub struct SignedIn {
    pub session: NewSession,
    pub second_factor_required: bool,
}

/// The answer to "may this session move money now?", with every reason it may not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MoneyGate {
    pub allowed: bool,
    pub reasons: Vec<&'static str>,
}

pub struct IdentityService {
    db: Arc<Database>,
    secrets: SecretBox,
    kyc: Arc<dyn KycProvider>,
    clock: Arc<dyn Clock>,
    config: IdentityConfig,
    /// Where what a person must look at goes (the cases inbox, `kinko-cases`, which depends on
    /// this crate: hence a trait set at start rather than a call).
    reviews: Option<Arc<dyn ReviewInbox>>,
}

/// Opens a review for an operator inside the caller's transaction, idempotent by `subject`.
pub trait ReviewInbox: Send + Sync {
    fn open_review(
        &self,
        tx: &mut dyn Tx,
        user_id: u128,
        subject: &str,
        summary: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

fn audit(
    tx: &mut dyn Tx,
    now_ms: i64,
    actor: Actor,
    action: &str,
    user_id: u128,
    detail: serde_json::Value,
) -> Result<(), IdentityError> {
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor,
            action,
            subject_kind: "user",
            subject_id: &uuid::Uuid::from_u128(user_id).to_string(),
            reason: "",
            detail,
        },
    )?;
    Ok(())
}

fn code_error(error: codes::CodeError) -> IdentityError {
    use codes::CodeError;
    match error {
        CodeError::Invalid | CodeError::Wrong { .. } => {
            IdentityError::CodeInvalid { attempts_left: 0 }
        }
        CodeError::Expired | CodeError::Used | CodeError::TooManyAttempts => {
            IdentityError::CodeExpired
        }
        CodeError::IssueLimited => IdentityError::RateLimited {
            retry_after_ms: HOUR_MS,
        },
        other => IdentityError::Internal(other.to_string()),
    }
}

/// Counts a try at a user's second factor: at most 10 in 15 minutes, whatever it is for.
fn second_factor_tries(tx: &mut dyn Tx, now_ms: i64, user: u128) -> Result<(), IdentityError> {
    limit(ratelimit::hit(
        tx,
        now_ms,
        &format!("second_factor:user:{}", uuid::Uuid::from_u128(user)),
        15 * 60 * 1_000,
        10,
    )?)
}

fn limit(decision: Decision) -> Result<(), IdentityError> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after_ms } => Err(IdentityError::RateLimited { retry_after_ms }),
    }
}

/// Tells a user something on their verified e-mail address (a link made or cut, a freeze):
/// what other domains use to keep the user informed.
pub fn tell_user(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    purpose: &str,
    subject: &str,
    body: &str,
) -> Result<(), IdentityError> {
    let user = user_by_id(tx, user_id)?.ok_or(IdentityError::NotFound)?;
    send(
        tx,
        now_ms,
        Channel::Email,
        &user.email,
        purpose,
        subject,
        body,
    )
}

fn send(
    tx: &mut dyn Tx,
    now_ms: i64,
    channel: Channel,
    destination: &str,
    purpose: &str,
    subject: &str,
    body: &str,
) -> Result<(), IdentityError> {
    notify::enqueue(
        tx,
        now_ms,
        &Message {
            channel,
            destination: destination.to_owned(),
            purpose: purpose.to_owned(),
            subject: subject.to_owned(),
            body: body.to_owned(),
        },
    )?;
    Ok(())
}

struct UserRow {
    id: u128,
    email: String,
    phone: String,
    password_hash: String,
    status: String,
    email_verified_at: Option<i64>,
    phone_verified_at: Option<i64>,
    kyc_level: i64,
    outgoing_frozen_until: Option<i64>,
}

const USER_COLUMNS: &str = "id, email, phone, password_hash, status, email_verified_at, \
     phone_verified_at, kyc_level, outgoing_frozen_until";

fn user_from(row: &kinko_store::sql::Row) -> Result<UserRow, IdentityError> {
    Ok(UserRow {
        id: row.uuid(0)?,
        email: row.text(1)?,
        phone: row.text(2)?,
        password_hash: row.text(3)?,
        status: row.text(4)?,
        email_verified_at: row.opt_int(5)?,
        phone_verified_at: row.opt_int(6)?,
        kyc_level: row.int(7)?,
        outgoing_frozen_until: row.opt_int(8)?,
    })
}

fn user_by_id(tx: &mut dyn Tx, user_id: u128) -> Result<Option<UserRow>, IdentityError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM identity_users WHERE id = $1{}",
        tx.for_update()
    );
    tx.query_opt(&sql, &[Value::Uuid(user_id)])?
        .as_ref()
        .map(user_from)
        .transpose()
}

/// The same without the row lock, for read transactions (the money gate on every payment).
fn user_read(tx: &mut dyn Tx, user_id: u128) -> Result<Option<UserRow>, IdentityError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM identity_users WHERE id = $1");
    tx.query_opt(&sql, &[Value::Uuid(user_id)])?
        .as_ref()
        .map(user_from)
        .transpose()
}

fn user_by_email(tx: &mut dyn Tx, email: &str) -> Result<Option<UserRow>, IdentityError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM identity_users WHERE email = $1{}",
        tx.for_update()
    );
    tx.query_opt(&sql, &[email.into()])?
        .as_ref()
        .map(user_from)
        .transpose()
}

impl IdentityService {
    pub fn new(
        db: Arc<Database>,
        secrets: SecretBox,
        kyc: Arc<dyn KycProvider>,
        clock: Arc<dyn Clock>,
        config: IdentityConfig,
    ) -> Self {
        Self {
            db,
            secrets,
            kyc,
            clock,
            config,
            reviews: None,
        }
    }

    /// Sends what needs a person (an eKYC held for review) to `inbox`.
    pub fn with_review_inbox(mut self, inbox: Arc<dyn ReviewInbox>) -> Self {
        self.reviews = Some(inbox);
        self
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// The server key, for the operator routes (operators' TOTP secrets are sealed with it).
    pub fn secret_box(&self) -> &SecretBox {
        &self.secrets
    }

    /// The clock the flows read, for the operator routes.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }

    /// Sign-up: e-mail, password, phone. Sends a code to each contact. An address that is
    /// already registered gets the same answer (no account enumeration) and its owner a notice
    /// instead of a code.
    pub fn sign_up(
        &self,
        email: &str,
        password: &SecretString,
        phone: &str,
        source: &Source,
    ) -> Result<uuid::Uuid, IdentityError> {
        let email = normalize_email(email)?;
        let phone = normalize_phone(phone)?;
        if !SMS_COUNTRY_CODES.iter().any(|country| {
            phone
                .get(1..)
                .is_some_and(|digits| digits.starts_with(country))
        }) {
            return Err(IdentityError::PhoneCountryNotAllowed);
        }
        password::check_new_password(password, &email).map_err(IdentityError::Password)?;
        let now_ms = self.now_ms();
        self.db
            .transaction(|tx: &mut dyn Tx| -> Result<(), IdentityError> {
                limit(ratelimit::hit(
                    tx,
                    now_ms,
                    &format!("signup:ip:{}", source.ip),
                    HOUR_MS,
                    self.config.signups_per_ip_per_hour,
                )?)?;
                // The network too (/24, /64): a rotating IPv6 address is one source.
                limit(ratelimit::hit(
                    tx,
                    now_ms,
                    &format!("signup:net:{}", ratelimit::network_of(&source.ip)),
                    HOUR_MS,
                    self.config.signups_per_ip_per_hour.saturating_mul(3),
                )?)?;
                // Counted whether or not the address is known, so the limits tell nothing.
                limit(ratelimit::hit(
                    tx,
                    now_ms,
                    &format!("signup_sms:number:{}", ratelimit::key_of(&phone)),
                    24 * HOUR_MS,
                    SIGN_UP_SMS_PER_NUMBER_PER_DAY,
                )?)?;
                limit(ratelimit::hit(
                    tx,
                    now_ms,
                    &format!("signup_sms:prefix:{}", phone_prefix(&phone)),
                    HOUR_MS,
                    SIGN_UP_SMS_PER_PREFIX_PER_HOUR,
                )?)?;
                if let Some(device) = &source.device_token {
                    limit(ratelimit::hit(
                        tx,
                        now_ms,
                        &format!("signup:device:{device}"),
                        HOUR_MS,
                        self.config.signups_per_device_per_hour,
                    )?)?;
                }
                Ok(())
            })?;
        let password_hash = password::hash_password(password)
            .map_err(|error| IdentityError::Internal(error.to_string()))?;
        let new_id = uuid::Uuid::now_v7();
        let user_id = self.db.transaction(|tx: &mut dyn Tx| -> Result<uuid::Uuid, IdentityError> {
            let existing = user_by_email(tx, &email)?;
            if let Some(stale) = self.stale_pending(tx, now_ms, existing.as_ref())? {
                // Never verified in time: the address is free again. The row is reused (its
                // id may be referenced) with everything the squatter set replaced, and every
                // code it was sent dies.
                tx.execute(
                    "UPDATE identity_users SET phone = $2, password_hash = $3, created_at = $4,
                         email_verified_at = NULL, phone_verified_at = NULL
                     WHERE id = $1 AND status = 'pending'",
                    &[Value::Uuid(stale), phone.as_str().into(), password_hash.as_str().into(), Value::Int(now_ms)],
                )?;
                tx.execute(
                    "UPDATE identity_codes SET expires_at = $2 WHERE user_id = $1 AND expires_at > $2",
                    &[Value::Uuid(stale), Value::Int(now_ms)],
                )?;
                self.send_code(tx, now_ms, stale, CodePurpose::VerifyEmail, Channel::Email, &email)?;
                self.send_code(tx, now_ms, stale, CodePurpose::VerifyPhone, Channel::Sms, &phone)?;
                audit(tx, now_ms, Actor::User(stale), "user.signup", stale, serde_json::json!({ "ip": source.ip, "replaced_expired_pending": true }))?;
                return Ok(uuid::Uuid::from_u128(stale));
            }
            let user_id = new_id;
            if existing.is_some() {
                send(tx, now_ms, Channel::Email, &email, "signup_existing",
                    "Kinko: 登録の試み / A sign-up attempt",
                    "このメールアドレスで Kinko への登録が試みられましたが、既にアカウントがあります。お心当たりがなければ、何もする必要はありません。\n\
                     Someone tried to sign up to Kinko with this address, which already has an account. If it was not you, you need not do anything.")?;
                return Ok(user_id);
            }
            tx.execute(
                "INSERT INTO identity_users (id, email, phone, password_hash, status, created_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5)",
                &[Value::Uuid(user_id.as_u128()), email.as_str().into(), phone.as_str().into(), password_hash.as_str().into(), Value::Int(now_ms)],
            )?;
            self.send_code(tx, now_ms, user_id.as_u128(), CodePurpose::VerifyEmail, Channel::Email, &email)?;
            self.send_code(tx, now_ms, user_id.as_u128(), CodePurpose::VerifyPhone, Channel::Sms, &phone)?;
            audit(tx, now_ms, Actor::User(user_id.as_u128()), "user.signup", user_id.as_u128(), serde_json::json!({ "ip": source.ip }))?;
            Ok(user_id)
        })?;
        Ok(user_id)
    }

    /// The id of `existing` if it is a sign-up left unverified past
    /// [`IdentityConfig::pending_signup_ttl_ms`].
    fn stale_pending(
        &self,
        tx: &mut dyn Tx,
        now_ms: i64,
        existing: Option<&UserRow>,
    ) -> Result<Option<u128>, IdentityError> {
        let Some(user) = existing.filter(|user| user.status == "pending") else {
            return Ok(None);
        };
        let row = tx.query_opt(
            "SELECT created_at FROM identity_users WHERE id = $1",
            &[Value::Uuid(user.id)],
        )?;
        let created_at = match row {
            Some(row) => row.int(0)?,
            None => return Ok(None),
        };
        Ok(
            (now_ms.saturating_sub(created_at) >= self.config.pending_signup_ttl_ms)
                .then_some(user.id),
        )
    }

    fn send_code(
        &self,
        tx: &mut dyn Tx,
        now_ms: i64,
        user_id: u128,
        purpose: CodePurpose,
        channel: Channel,
        destination: &str,
    ) -> Result<(), IdentityError> {
        let (_, code) = codes::issue(tx, now_ms, user_id, purpose, channel).map_err(code_error)?;
        notify::enqueue(tx, now_ms, &purpose.message(channel, destination, &code))?;
        Ok(())
    }

    /// Redeems a code in its own transaction, so a wrong try is counted even though the
    /// request fails.
    fn redeem(&self, user_id: u128, purpose: CodePurpose, code: &str) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let check = self.db.transaction(|tx: &mut dyn Tx| {
            codes::redeem(tx, now_ms, user_id, purpose, code).map_err(code_error)
        })?;
        match check {
            CodeCheck::Accepted => Ok(()),
            CodeCheck::Wrong { attempts_left } if attempts_left > 0 => {
                Err(IdentityError::CodeInvalid { attempts_left })
            }
            CodeCheck::Wrong { .. } => Err(IdentityError::CodeExpired),
        }
    }
}

impl IdentityService {
    /// Verifies one contact of a pending sign-up; when both are verified the user is active
    /// (KYC level L0). One phone number belongs to at most one active wallet.
    pub fn verify_contact(
        &self,
        user_id: uuid::Uuid,
        channel: Channel,
        code: &str,
    ) -> Result<UserProfile, IdentityError> {
        let user = user_id.as_u128();
        let purpose = match channel {
            Channel::Email => CodePurpose::VerifyEmail,
            Channel::Sms => CodePurpose::VerifyPhone,
        };
        self.redeem(user, purpose, code)?;
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            let column = match channel {
                Channel::Email => "email_verified_at",
                Channel::Sms => "phone_verified_at",
            };
            let row = user_by_id(tx, user)?.ok_or(IdentityError::NotFound)?;
            if channel == Channel::Sms {
                let taken = tx.query_opt(
                    "SELECT id FROM identity_users WHERE phone = $1 AND id <> $2
                     AND phone_verified_at IS NOT NULL AND status <> 'closed'",
                    &[row.phone.as_str().into(), Value::Uuid(user)],
                )?;
                if taken.is_some() {
                    return Err(IdentityError::PhoneInUse);
                }
            }
            tx.execute(
                &format!(
                    "UPDATE identity_users SET {column} = $2 WHERE id = $1 AND {column} IS NULL"
                ),
                &[Value::Uuid(user), Value::Int(now_ms)],
            )?;
            tx.execute(
                "UPDATE identity_users SET status = 'active'
                 WHERE id = $1 AND status = 'pending'
                   AND email_verified_at IS NOT NULL AND phone_verified_at IS NOT NULL",
                &[Value::Uuid(user)],
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user),
                match channel {
                    Channel::Email => "user.email_verified",
                    Channel::Sms => "user.phone_verified",
                },
                user,
                serde_json::json!({}),
            )?;
            self.profile_in(tx, user)
        })
    }

    fn profile_in(&self, tx: &mut dyn Tx, user: u128) -> Result<UserProfile, IdentityError> {
        let row = user_by_id(tx, user)?.ok_or(IdentityError::NotFound)?;
        let second_factor = crate::passkey::has_second_factor(tx, user)
            .map_err(|error| IdentityError::Internal(error.to_string()))?;
        Ok(UserProfile {
            user_id: uuid::Uuid::from_u128(row.id),
            email: row.email,
            phone: row.phone,
            status: row.status,
            email_verified: row.email_verified_at.is_some(),
            phone_verified: row.phone_verified_at.is_some(),
            kyc_level: KycLevel::from_i64(row.kyc_level),
            second_factor,
            outgoing_frozen_until_ms: row.outgoing_frozen_until,
        })
    }

    pub fn profile(&self, session: &SessionInfo) -> Result<UserProfile, IdentityError> {
        self.db
            .transaction(|tx: &mut dyn Tx| self.profile_in(tx, session.user_id))
    }

    /// Resolves a bearer token to its session.
    pub fn authenticate(&self, token: &str) -> Result<SessionInfo, IdentityError> {
        let now_ms = self.now_ms();
        // Every API request comes through here: read without the write lock, and write only
        // when the idle timer needs moving (at most once per LAST_SEEN_RESOLUTION_MS).
        let (session, stale) = self
            .db
            .read(|tx: &mut dyn Tx| session::look_up(tx, now_ms, token))?;
        if stale {
            self.db
                .transaction(|tx: &mut dyn Tx| session::touch(tx, now_ms, session.session_id))?;
        }
        Ok(session)
    }

    /// Login with e-mail and password. The same answer, after the same work, whether the
    /// address is unknown, the password wrong or the account locked.
    pub fn log_in(
        &self,
        email: &str,
        password: &SecretString,
        source: &Source,
    ) -> Result<SignedIn, IdentityError> {
        let now_ms = self.now_ms();
        let email = normalize_email(email).map_err(|_| IdentityError::LoginFailed)?;
        let user = self.db.transaction(
            |tx: &mut dyn Tx| -> Result<Option<UserRow>, IdentityError> {
                limit(ratelimit::hit(
                    tx,
                    now_ms,
                    &format!("login:ip:{}", source.ip),
                    HOUR_MS,
                    self.config.logins_per_ip_per_hour,
                )?)?;
                // The source's network and device: never the account, so that no one can keep
                // its holder out by guessing (issue 13, item 3).
                limit(ratelimit::guess(
                    tx,
                    now_ms,
                    Guess::Password,
                    Guesser {
                        account: None,
                        ip: Some(&source.ip),
                        device: source.device_token.as_deref(),
                    },
                )?)?;
                user_by_email(tx, &email)
            },
        )?;
        let Some(user) = user.filter(|user| user.status == "active") else {
            password::verify_unknown_user(password);
            // The same work as a known account's failure: one transaction with a counter
            // write and an audit entry, so neither the answer nor its time tells them apart.
            self.db
                .transaction(|tx: &mut dyn Tx| -> Result<(), IdentityError> {
                    ratelimit::hit(
                        tx,
                        now_ms,
                        &format!("login_failed:address:{}", ratelimit::key_of(&email)),
                        HOUR_MS,
                        ratelimit::LOGIN_FAILURES_MAX,
                    )?;
                    audit(
                        tx,
                        now_ms,
                        Actor::System,
                        "login.failed",
                        0,
                        serde_json::json!({ "ip": source.ip, "known": false }),
                    )
                })?;
            return Err(IdentityError::LoginFailed);
        };
        let allowed = self
            .db
            .transaction(|tx: &mut dyn Tx| -> Result<bool, IdentityError> {
                Ok(match ratelimit::login_allowed(tx, now_ms, user.id)? {
                    LoginGate::Allowed => true,
                    // Throttled, but the holder on a device that passed the second factor still
                    // signs in; the new session must pass the second factor again for money.
                    LoginGate::Locked { .. } => match &source.device_token {
                        Some(token) => {
                            session::is_trusted_device(tx, user.id, token)?
                                && crate::passkey::has_second_factor(tx, user.id)
                                    .map_err(|error| IdentityError::Internal(error.to_string()))?
                        }
                        None => false,
                    },
                })
            })?;
        let password_ok = password::verify_password(&user.password_hash, password);
        if !allowed || !password_ok {
            self.db.transaction(|tx: &mut dyn Tx| -> Result<(), IdentityError> {
                let state = ratelimit::record_login_failure(tx, now_ms, user.id)?;
                audit(tx, now_ms, Actor::User(user.id), "login.failed", user.id, serde_json::json!({ "ip": source.ip }))?;
                if matches!(state, LockState::JustLocked { .. }) {
                    send(tx, now_ms, Channel::Email, &user.email, "account_locked",
                        "Kinko: ログインを一時的に停止しました / Sign-in paused",
                        "パスワードの誤りが続いたため、このアカウントへのログインを一時的に停止しました。お心当たりがなければ、パスワードを変更してください。\n\
                         After many wrong passwords, sign-in to this account is paused for a while. If this was not you, change your password.")?;
                    audit(tx, now_ms, Actor::System, "login.locked", user.id, serde_json::json!({}))?;
                }
                Ok(())
            })?;
            return Err(IdentityError::LoginFailed);
        }
        self.db.transaction(|tx: &mut dyn Tx| {
            let device = match &source.device_token {
                Some(token) => DeviceRef::Presented { device_token: token, label: &source.device_label },
                None => DeviceRef::New { label: &source.device_label },
            };
            let new_session = session::create(tx, now_ms, user.id, device)?;
            let has_factor = crate::passkey::has_second_factor(tx, user.id)
                .map_err(|error| IdentityError::Internal(error.to_string()))?;
            if new_session.is_new_device() {
                send(tx, now_ms, Channel::Email, &user.email, "new_device",
                    "Kinko: 新しい端末からのログイン / Sign-in from a new device",
                    "新しい端末から Kinko にログインがありました。この端末からの送金には二段階認証が必要です。お心当たりがなければ、すぐにパスワードを変更してください。\n\
                     Someone signed in to Kinko from a new device. Money cannot move from it until it passes your second factor. If this was not you, change your password now.")?;
            }
            audit(tx, now_ms, Actor::User(user.id), "login.succeeded", user.id,
                serde_json::json!({ "ip": source.ip, "new_device": new_session.is_new_device() }))?;
            Ok(SignedIn { session: new_session, second_factor_required: has_factor })
        })
    }

    /// Confirms one transaction with a TOTP code (dynamic linking, THREATS requirement 13):
    /// the caller has bound `subject` (what is confirmed: amount and payee) to the request
    /// being confirmed. Rate-limited with the second factor, audited pass or fail, and the
    /// session is left as it is.
    pub fn confirm_with_totp(
        &self,
        session: &SessionInfo,
        code: &str,
        subject: &str,
    ) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let user = session.user_id;
        let verified = self
            .db
            .transaction(|tx: &mut dyn Tx| -> Result<bool, IdentityError> {
                second_factor_tries(tx, now_ms, user)?;
                Ok(totp::verify(tx, now_ms, user, code, &self.secrets).is_ok())
            })?;
        self.db
            .transaction(|tx: &mut dyn Tx| -> Result<(), IdentityError> {
                let action = if verified {
                    "confirmation.passed"
                } else {
                    "confirmation.failed"
                };
                audit(
                    tx,
                    now_ms,
                    Actor::User(user),
                    action,
                    user,
                    serde_json::json!({ "subject": subject }),
                )
            })?;
        if verified {
            Ok(())
        } else {
            Err(IdentityError::SecondFactorInvalid)
        }
    }

    /// Passes the second factor on this session (TOTP code or a recovery code): marks the
    /// device trusted, and rotates the session token (a privilege change).
    pub fn pass_second_factor(
        &self,
        session: &SessionInfo,
        totp_code: Option<&str>,
        recovery_code: Option<&str>,
    ) -> Result<NewSession, IdentityError> {
        let now_ms = self.now_ms();
        let user = session.user_id;
        let verified = self
            .db
            .transaction(|tx: &mut dyn Tx| -> Result<bool, IdentityError> {
                second_factor_tries(tx, now_ms, user)?;
                if !totp::has_confirmed_totp(tx, user)
                    .map_err(|error| IdentityError::Internal(error.to_string()))?
                {
                    return Err(IdentityError::SecondFactorRequired);
                }
                let outcome = match (totp_code, recovery_code) {
                    (Some(code), None) => totp::verify(tx, now_ms, user, code, &self.secrets),
                    (None, Some(code)) => totp::redeem_recovery_code(tx, now_ms, user, code),
                    _ => return Err(IdentityError::SecondFactorInvalid),
                };
                Ok(outcome.is_ok())
            })?;
        self.db.transaction(|tx: &mut dyn Tx| -> Result<Option<NewSession>, IdentityError> {
            if !verified {
                audit(tx, now_ms, Actor::User(user), "second_factor.failed", user, serde_json::json!({}))?;
                return Ok(None);
            }
            session::mark_second_factor(tx, now_ms, session.session_id)?;
            let rotated = session::rotate(tx, now_ms, session.session_id)?;
            audit(tx, now_ms, Actor::User(user), "second_factor.passed", user,
                serde_json::json!({ "method": if totp_code.is_some() { "totp" } else { "recovery_code" } }))?;
            Ok(Some(rotated))
        })?
        .ok_or(IdentityError::SecondFactorInvalid)
    }
}

impl IdentityService {
    /// Starts TOTP enrolment. The first factor can be set up by a signed-in user; replacing an
    /// existing one is not offered here (remove it first, with a fresh second factor).
    pub fn begin_totp(&self, session: &SessionInfo) -> Result<totp::Enrolment, IdentityError> {
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            let user = user_by_id(tx, session.user_id)?.ok_or(IdentityError::NotFound)?;
            totp::begin_enrolment(tx, now_ms, session.user_id, &user.email, &self.secrets).map_err(
                |error| match error {
                    TotpError::AlreadyEnrolled => IdentityError::SecondFactorExists,
                    other => IdentityError::Internal(other.to_string()),
                },
            )
        })
    }

    /// Confirms TOTP with a first code; returns the recovery codes (shown once). The session
    /// counts as having passed the second factor, and its token is rotated.
    pub fn confirm_totp(
        &self,
        session: &SessionInfo,
        code: &str,
    ) -> Result<(Vec<String>, NewSession), IdentityError> {
        let now_ms = self.now_ms();
        let user = session.user_id;
        self.db.transaction(|tx: &mut dyn Tx| {
            let recovery = totp::confirm_enrolment(tx, now_ms, user, code, &self.secrets).map_err(
                |error| match error {
                    TotpError::AlreadyEnrolled => IdentityError::SecondFactorExists,
                    TotpError::NotEnrolled => IdentityError::SecondFactorRequired,
                    TotpError::Store(error) => IdentityError::Store(error),
                    _ => IdentityError::SecondFactorInvalid,
                },
            )?;
            session::mark_second_factor(tx, now_ms, session.session_id)?;
            let rotated = session::rotate(tx, now_ms, session.session_id)?;
            let row = user_by_id(tx, user)?.ok_or(IdentityError::NotFound)?;
            // A new factor is what a thief adds after taking a password (7pay): other sessions
            // end, the registered address is told, and outgoing money waits.
            self.lock_down(
                tx,
                now_ms,
                &row,
                Some(session.session_id),
                "second_factor_added",
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user),
                "second_factor.added",
                user,
                serde_json::json!({ "method": "totp" }),
            )?;
            let codes = recovery
                .codes()
                .iter()
                .map(|code| code.expose_secret().to_owned())
                .collect();
            Ok((codes, rotated))
        })
    }

    /// Everything that must hold before money leaves a wallet (THREATS.md 15, 18, 19):
    /// a second factor set up, passed on this trusted device within 5 minutes, and no freeze
    /// after a security change. Pulling money from a bank also needs KYC L1.
    pub fn money_gate(
        &self,
        session: &SessionInfo,
        pulls_from_bank: bool,
    ) -> Result<MoneyGate, IdentityError> {
        let now_ms = self.now_ms();
        self.db.read(|tx: &mut dyn Tx| {
            let user = user_read(tx, session.user_id)?.ok_or(IdentityError::NotFound)?;
            let mut reasons = Vec::new();
            if user.status != "active" {
                reasons.push("IDENTITY_NOT_ACTIVE");
            }
            if !crate::passkey::has_second_factor(tx, session.user_id)
                .map_err(|error| IdentityError::Internal(error.to_string()))?
            {
                reasons.push("IDENTITY_SECOND_FACTOR_REQUIRED");
            } else if session::require_fresh_for_money(session, now_ms).is_err() {
                reasons.push("SESSION_STEP_UP_REQUIRED");
            }
            if user
                .outgoing_frozen_until
                .is_some_and(|until| until > now_ms)
            {
                reasons.push("IDENTITY_OUTGOING_FROZEN");
            }
            if pulls_from_bank && user.kyc_level < KycLevel::L1.as_i64() {
                reasons.push("IDENTITY_KYC_REQUIRED");
            }
            Ok(MoneyGate {
                allowed: reasons.is_empty(),
                reasons,
            })
        })
    }

    /// After recovery or a credential change: other sessions end, the old channel is told,
    /// outgoing money waits (THREATS.md 18).
    fn lock_down(
        &self,
        tx: &mut dyn Tx,
        now_ms: i64,
        user: &UserRow,
        keep_session: Option<session::SessionId>,
        what: &str,
    ) -> Result<(), IdentityError> {
        session::sign_out_others_and_freeze(
            tx,
            now_ms,
            user.id,
            keep_session,
            now_ms.saturating_add(self.config.outgoing_freeze_ms),
        )?;
        send(
            tx,
            now_ms,
            Channel::Email,
            &user.email,
            what,
            "Kinko: セキュリティ設定が変更されました / Your security settings changed",
            &security_change_notice(what, self.config.outgoing_freeze_ms),
        )?;
        if what == "account_recovered" {
            // Whoever recovered may hold the mailbox: the registered phone hears it too.
            send(
                tx,
                now_ms,
                Channel::Sms,
                &user.phone,
                what,
                "",
                "Kinko: アカウントが復旧され、パスワードが変わりました。心当たりがなければサポートへ。 / Your Kinko account was recovered and its password changed. Not you? Contact support.",
            )?;
        }
        Ok(())
    }

    /// Changes the password: the current one, and a fresh second factor if one is set up.
    pub fn change_password(
        &self,
        session: &SessionInfo,
        current: &SecretString,
        new: &SecretString,
    ) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let user = self
            .db
            .transaction(|tx: &mut dyn Tx| user_by_id(tx, session.user_id))?
            .ok_or(IdentityError::NotFound)?;
        password::check_new_password(new, &user.email).map_err(IdentityError::Password)?;
        // Whoever holds this session guesses this account's password: limited per account and
        // device, and each miss counts as a failed sign-in and is audited (issue 13, item 2).
        let device = session.device_id.to_string();
        self.db.transaction(|tx: &mut dyn Tx| {
            limit(ratelimit::guess(
                tx,
                now_ms,
                Guess::Password,
                Guesser {
                    account: Some(user.id),
                    ip: None,
                    device: Some(&device),
                },
            )?)
        })?;
        if !password::verify_password(&user.password_hash, current) {
            self.db
                .transaction(|tx: &mut dyn Tx| -> Result<(), IdentityError> {
                    ratelimit::record_login_failure(tx, now_ms, user.id)?;
                    audit(
                        tx,
                        now_ms,
                        Actor::User(user.id),
                        "password.change_failed",
                        user.id,
                        serde_json::json!({ "session_id": session.session_id.to_string() }),
                    )
                })?;
            return Err(IdentityError::LoginFailed);
        }
        let hash = password::hash_password(new)
            .map_err(|error| IdentityError::Internal(error.to_string()))?;
        self.db.transaction(|tx: &mut dyn Tx| {
            if crate::passkey::has_second_factor(tx, user.id)
                .map_err(|error| IdentityError::Internal(error.to_string()))?
            {
                session::require_fresh_for_money(session, now_ms)?;
            }
            tx.execute(
                "UPDATE identity_users SET password_hash = $2 WHERE id = $1",
                &[Value::Uuid(user.id), hash.as_str().into()],
            )?;
            self.lock_down(
                tx,
                now_ms,
                &user,
                Some(session.session_id),
                "password_changed",
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user.id),
                "password.changed",
                user.id,
                serde_json::json!({}),
            )
        })
    }

    /// Recovery, step one: codes go to the registered e-mail address and phone — never to an
    /// address in the request (the API has no field for one). The answer is the same whether
    /// or not the address has an account.
    pub fn start_recovery(&self, email: &str, source: &Source) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let Ok(email) = normalize_email(email) else {
            return Ok(());
        };
        self.db.transaction(|tx: &mut dyn Tx| {
            limit(ratelimit::hit(
                tx,
                now_ms,
                &format!("recovery:ip:{}", source.ip),
                HOUR_MS,
                self.config.recoveries_per_ip_per_hour,
            )?)?;
            // Per address and source network, before the address is looked up: any address
            // meets the same 429, and an attacker elsewhere cannot use up the holder's tries.
            limit(ratelimit::hit(
                tx,
                now_ms,
                &format!(
                    "recovery:address:{}:net:{}",
                    ratelimit::key_of(&email),
                    ratelimit::network_of(&source.ip)
                ),
                HOUR_MS,
                5,
            )?)?;
            let Some(user) = user_by_email(tx, &email)?.filter(|user| user.status == "active")
            else {
                return Ok(());
            };
            self.send_code(
                tx,
                now_ms,
                user.id,
                CodePurpose::Recovery,
                Channel::Email,
                &user.email,
            )?;
            self.send_code(
                tx,
                now_ms,
                user.id,
                CodePurpose::RecoveryPhone,
                Channel::Sms,
                &user.phone,
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user.id),
                "recovery.started",
                user.id,
                serde_json::json!({ "ip": source.ip }),
            )
        })
    }

    /// Recovery, step two: the e-mail code AND a possession factor — the TOTP app, a recovery
    /// code, or the code sent to the registered phone. Knowledge alone never succeeds. Any
    /// failure gives one answer.
    pub fn complete_recovery(
        &self,
        email: &str,
        email_code: &str,
        possession: Possession<'_>,
        new_password: &SecretString,
        source: &Source,
    ) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        let email = normalize_email(email).map_err(|_| IdentityError::RecoveryFailed)?;
        // The policy is checked on what the request says, before anything is looked up: a
        // registered address and an unknown one get the same answer (issue 13, item 1).
        password::check_new_password(new_password, &email).map_err(IdentityError::Password)?;
        // Throttled per source network and device, and per address from that network.
        let user = self.db.transaction(
            |tx: &mut dyn Tx| -> Result<Option<UserRow>, IdentityError> {
                limit(ratelimit::guess(
                    tx,
                    now_ms,
                    Guess::Code,
                    Guesser {
                        account: None,
                        ip: Some(&source.ip),
                        device: source.device_token.as_deref(),
                    },
                )?)?;
                limit(ratelimit::hit(
                    tx,
                    now_ms,
                    &format!(
                        "recovery_complete:address:{}:net:{}",
                        ratelimit::key_of(&email),
                        ratelimit::network_of(&source.ip)
                    ),
                    HOUR_MS,
                    10,
                )?)?;
                Ok(user_by_email(tx, &email)?.filter(|user| user.status == "active"))
            },
        )?;
        // Every failure is audited, for a known account and an unknown address alike.
        let failed = |user_id: u128, step: &str| -> IdentityError {
            let audited = self.db.transaction(|tx: &mut dyn Tx| {
                audit(
                    tx,
                    now_ms,
                    Actor::System,
                    "recovery.failed",
                    user_id,
                    serde_json::json!({ "ip": source.ip, "step": step }),
                )
            });
            match audited {
                Ok(()) => IdentityError::RecoveryFailed,
                Err(error) => error,
            }
        };
        let Some(user) = user else {
            return Err(failed(0, "email_code"));
        };
        if self
            .redeem(user.id, CodePurpose::Recovery, email_code)
            .is_err()
        {
            return Err(failed(user.id, "email_code"));
        }
        let possession_ok = match possession {
            Possession::SmsCode(code) => self
                .redeem(user.id, CodePurpose::RecoveryPhone, code)
                .is_ok(),
            Possession::TotpCode(code) => self.db.transaction(|tx: &mut dyn Tx| {
                Ok::<_, IdentityError>(
                    totp::verify(tx, now_ms, user.id, code, &self.secrets).is_ok(),
                )
            })?,
            Possession::RecoveryCode(code) => self.db.transaction(|tx: &mut dyn Tx| {
                Ok::<_, IdentityError>(
                    totp::redeem_recovery_code(tx, now_ms, user.id, code).is_ok(),
                )
            })?,
        };
        if !possession_ok {
            return Err(failed(user.id, "possession"));
        }
        let hash = password::hash_password(new_password)
            .map_err(|error| IdentityError::Internal(error.to_string()))?;
        self.db.transaction(|tx: &mut dyn Tx| {
            tx.execute("UPDATE identity_users SET password_hash = $2, failures_count = 0, locked_until = NULL WHERE id = $1",
                &[Value::Uuid(user.id), hash.as_str().into()])?;
            self.lock_down(tx, now_ms, &user, None, "account_recovered")?;
            audit(tx, now_ms, Actor::User(user.id), "recovery.completed", user.id,
                serde_json::json!({ "possession": possession.kind() }))
        })
    }
}

impl IdentityService {
    /// Starts changing the e-mail address or the phone number: the new one must prove itself
    /// with a code before it replaces the old. With a second factor set up, the session must
    /// have passed it within the last 5 minutes.
    pub fn start_contact_change(
        &self,
        session: &SessionInfo,
        channel: Channel,
        new_value: &str,
    ) -> Result<(), IdentityError> {
        let new_value = match channel {
            Channel::Email => normalize_email(new_value)?,
            Channel::Sms => normalize_phone(new_value)?,
        };
        let now_ms = self.now_ms();
        let user = session.user_id;
        self.db.transaction(|tx: &mut dyn Tx| {
            if crate::passkey::has_second_factor(tx, user)
                .map_err(|error| IdentityError::Internal(error.to_string()))?
            {
                session::require_fresh_for_money(session, now_ms)?;
            }
            user_by_id(tx, user)?.ok_or(IdentityError::NotFound)?;
            let (column, purpose) = match channel {
                Channel::Email => ("pending_email", CodePurpose::VerifyEmail),
                Channel::Sms => ("pending_phone", CodePurpose::VerifyPhone),
            };
            tx.execute(
                &format!("UPDATE identity_users SET {column} = $2 WHERE id = $1"),
                &[Value::Uuid(user), new_value.as_str().into()],
            )?;
            self.send_code(tx, now_ms, user, purpose, channel, &new_value)?;
            audit(
                tx,
                now_ms,
                Actor::User(user),
                match channel {
                    Channel::Email => "email.change_started",
                    Channel::Sms => "phone.change_started",
                },
                user,
                serde_json::json!({}),
            )
        })
    }

    /// Confirms a contact change with the code sent to the new contact. The old contact is told,
    /// other sessions end and outgoing money waits (THREATS.md 18).
    pub fn confirm_contact_change(
        &self,
        session: &SessionInfo,
        channel: Channel,
        code: &str,
    ) -> Result<UserProfile, IdentityError> {
        let user = session.user_id;
        let purpose = match channel {
            Channel::Email => CodePurpose::VerifyEmail,
            Channel::Sms => CodePurpose::VerifyPhone,
        };
        self.redeem(user, purpose, code)?;
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            let row = user_by_id(tx, user)?.ok_or(IdentityError::NotFound)?;
            let pending = tx
                .query_one(
                    "SELECT pending_email, pending_phone FROM identity_users WHERE id = $1",
                    &[Value::Uuid(user)],
                )?;
            let (pending, column, verified_column, what) = match channel {
                Channel::Email => (pending.opt_text(0)?, "email", "email_verified_at", "email_changed"),
                Channel::Sms => (pending.opt_text(1)?, "phone", "phone_verified_at", "phone_changed"),
            };
            let pending = pending.ok_or(IdentityError::NoPendingChange)?;
            match channel {
                Channel::Email => {
                    if user_by_email(tx, &pending)?.is_some_and(|other| other.id != user) {
                        return Err(IdentityError::EmailInUse);
                    }
                }
                Channel::Sms => {
                    let taken = tx.query_opt(
                        "SELECT id FROM identity_users WHERE phone = $1 AND id <> $2
                         AND phone_verified_at IS NOT NULL AND status <> 'closed'",
                        &[pending.as_str().into(), Value::Uuid(user)],
                    )?;
                    if taken.is_some() {
                        return Err(IdentityError::PhoneInUse);
                    }
                }
            }
            tx.execute(
                &format!(
                    "UPDATE identity_users SET {column} = $2, {verified_column} = $3,
                        pending_{column} = NULL WHERE id = $1"
                ),
                &[Value::Uuid(user), pending.as_str().into(), Value::Int(now_ms)],
            )?;
            // Notices go to the contacts as they were before the first change of this cool-off:
            // a thief who changed the e-mail first must not hear of the phone change on it.
            let before = tx.query_one(
                "SELECT notice_email, notice_phone, notice_until FROM identity_users WHERE id = $1",
                &[Value::Uuid(user)],
            )?;
            let (notice_email, notice_phone) = match before.opt_int(2)? {
                Some(until) if until > now_ms => (
                    before.opt_text(0)?.unwrap_or_else(|| row.email.clone()),
                    before.opt_text(1)?.unwrap_or_else(|| row.phone.clone()),
                ),
                _ => (row.email.clone(), row.phone.clone()),
            };
            tx.execute(
                "UPDATE identity_users SET notice_email = $2, notice_phone = $3, notice_until = $4
                 WHERE id = $1",
                &[
                    Value::Uuid(user),
                    notice_email.as_str().into(),
                    notice_phone.as_str().into(),
                    Value::Int(now_ms.saturating_add(self.config.outgoing_freeze_ms.max(CONTACT_NOTICE_COOL_OFF_MS))),
                ],
            )?;
            let told = UserRow { email: notice_email, phone: notice_phone, ..row };
            self.lock_down(tx, now_ms, &told, Some(session.session_id), what)?;
            if channel == Channel::Sms {
                send(tx, now_ms, Channel::Sms, &told.phone, what, "Kinko",
                    "Kinko に登録の電話番号が変更されました。お心当たりがなければサポートへご連絡ください。 / The phone number of your Kinko account was changed. If this was not you, contact support.")?;
            }
            audit(tx, now_ms, Actor::User(user), what, user, serde_json::json!({}))?;
            self.profile_in(tx, user)
        })
    }
}

/// The possession factor presented in a recovery.
#[derive(Debug, Clone, Copy)]
pub enum Possession<'a> {
    SmsCode(&'a str),
    TotpCode(&'a str),
    RecoveryCode(&'a str),
}

impl Possession<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Possession::SmsCode(_) => "sms",
            Possession::TotpCode(_) => "totp",
            Possession::RecoveryCode(_) => "recovery_code",
        }
    }
}

/// The notice after a security change, saying how long outgoing money waits as configured
/// (whole hours, rounded up; nothing about waiting when there is no freeze).
fn security_change_notice(what: &str, freeze_ms: i64) -> String {
    let hours = freeze_ms.saturating_add(3_599_999) / 3_600_000;
    let (ja, en) = if hours > 0 {
        (
            format!("他の端末はログアウトされ、{hours}時間は送金・出金ができません"),
            format!(
                "Other devices were signed out and money cannot leave the wallet for {hours} hour{}",
                if hours == 1 { "" } else { "s" }
            ),
        )
    } else {
        (
            "他の端末はログアウトされました".to_owned(),
            "Other devices were signed out".to_owned(),
        )
    };
    format!(
        "Kinko のアカウントで「{what}」が行われました。安全のため、{ja}。お心当たりがなければ、すぐにサポートへ連絡してください。\n\
         Your Kinko account had a security change ({what}). {en}. If this was not you, contact support now."
    )
}

#[cfg(test)]
mod tests {
    use super::security_change_notice;

    #[test]
    fn the_notice_tells_the_configured_wait() {
        let day = security_change_notice("password_changed", 86_400_000);
        assert!(day.contains("24時間は送金・出金ができません"), "{day}");
        assert!(day.contains("for 24 hours."), "{day}");
        let short = security_change_notice("password_changed", 1);
        assert!(
            short.contains("1時間") && short.contains("for 1 hour."),
            "{short}"
        );
        let none = security_change_notice("password_changed", 0);
        assert!(
            !none.contains("時間") && !none.contains("cannot leave"),
            "{none}"
        );
        assert!(none.contains("Other devices were signed out."), "{none}");
    }
}
