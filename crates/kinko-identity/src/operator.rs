//! Operators: the staff and bank-partner accounts that run Kinko, kept apart from wallet users
//! (own table, own sessions, own sign-in), their roles, and what each role may do.
//!
//! Sign-in always takes three things: e-mail, password (argon2id) and a TOTP code (passkeys
//! come later). A wrong e-mail, a wrong password, a wrong or replayed code, a disabled or a
//! locked account all get the same answer, `OPERATOR_LOGIN_FAILED`, after the same work (one
//! argon2 check each); the audit log records which it was. A TOTP time step is accepted once
//! (`totp_last_step`), so a code seen over someone's shoulder cannot be replayed, and at most
//! [`LOGIN_FAILURES_PER_HOUR_MAX`] failures per account per hour are judged at all — without
//! that bound, a leaked password leaves only a 6-digit code between an attacker and the
//! console.
//!
//! Permissions are deny-by-default ([`Role::can`]): every allowed (role, permission) pair is
//! written out, and a bank partner acts only for its own bank code. Reading a user's data needs
//! a stated reason ([`require_reason`]), which goes into the audit entry.
//!
//! Every change here writes an audit entry in the same transaction (`kinko_audit::append`), and
//! so does every read of a user's data or of the audit log, and every refused attempt
//! (`operator.refused`). The flows the console calls ([`sign_in`], [`sign_out`],
//! [`read_user_data`], [`read_audit_log`], [`create_operator_as`]) take the session token and
//! authenticate in the same transaction as the action, so a session ended meanwhile cannot act.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
/// Audit entries as [`read_audit_log`] returns them.
pub use kinko_audit::StoredEntry;
use kinko_audit::{Actor, AuditEntry};
use kinko_core::{ErrorCode, ErrorKind, typed_id};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Row, Tx, Value};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::kyc::KycLevel;
use crate::password::{
    PasswordRule, check_new_password, hash_password, verify_password, verify_unknown_user,
};
use crate::ratelimit::{self, Decision};
use crate::secrets::{SecretBox, fill_random};
use crate::session::SESSION_IDLE_TIMEOUT_MS;

typed_id!(
    /// An operator account.
    OperatorId
);

/// An operator session ends this long after sign-in, whatever happens.
pub const OPERATOR_SESSION_LIFETIME_MS: i64 = 8 * 60 * 60 * 1_000;
/// …and after this long without use: consoles left open are the classic way in.
pub const OPERATOR_SESSION_IDLE_MS: i64 = 15 * 60 * 1_000;
/// Failed sign-ins judged per account per hour; beyond, every attempt fails until the next
/// window. Lower than a wallet user's bound (100): operators are few and can see much.
pub const LOGIN_FAILURES_PER_HOUR_MAX: i64 = 10;
const FAILURE_WINDOW_MS: i64 = 60 * 60 * 1_000;
/// Sign-in attempts per source IP address per hour, over all operator accounts: bounds
/// password spraying across operators from one place (an office behind one address signs in a
/// few times a day per person).
pub const LOGINS_PER_IP_PER_HOUR_MAX: i64 = 50;
/// Sign-in attempts per e-mail address per hour, whether or not it is an operator's (so the
/// limit itself does not tell which addresses are). Successes count too.
pub const LOGINS_PER_ACCOUNT_PER_HOUR_MAX: i64 = 20;
/// Entries per page of the audit log; [`kinko_audit::entries_after`] caps at 1 000.
pub const AUDIT_PAGE_ENTRIES_MAX: u32 = 500;
/// A stated reason, after trimming, in characters.
pub const REASON_MIN_CHARS: usize = 10;
pub const REASON_MAX_CHARS: usize = 500;
pub const EMAIL_MAX_BYTES: usize = 254;
/// Operator session tokens: prefix + 32 random bytes in base64url (43 characters).
pub const OPERATOR_TOKEN_PREFIX: &str = "kinko_o_";
const TOKEN_BYTES: usize = 32;
const TOKEN_BODY_CHARS: usize = 43;
/// RFC 4226 recommends 160-bit HOTP/TOTP secrets.
const TOTP_SECRET_BYTES: usize = 20;
/// Shown by authenticator apps next to the account name.
pub const TOTP_ISSUER: &str = "Kinko";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("the e-mail address is not valid")]
    InvalidEmail,
    #[error("a bank code is 4 digits")]
    InvalidBankCode,
    #[error("unknown role: expected admin, analyst, support or bank_partner")]
    InvalidRole,
    #[error("an operator with this e-mail address exists")]
    EmailTaken,
    /// Unknown e-mail, wrong password, wrong or replayed code, disabled or locked: one answer.
    #[error("sign-in failed")]
    LoginFailed,
    /// No session, or an expired or revoked one, or a disabled operator.
    #[error("not signed in")]
    Unauthenticated,
    #[error("this operator may not do that")]
    Forbidden,
    #[error("state a reason of {REASON_MIN_CHARS} to {REASON_MAX_CHARS} characters")]
    ReasonRequired,
    #[error("no such operator")]
    NotFound,
    #[error("no such user")]
    UserNotFound,
    #[error("the password is not acceptable: {0}")]
    Password(PasswordRule),
    #[error("too many sign-in attempts; try again later")]
    RateLimited { retry_after_ms: i64 },
    #[error("a page holds 1 to {AUDIT_PAGE_ENTRIES_MAX} entries")]
    PageLimitInvalid,
    #[error("password hashing failed: {0}")]
    PasswordHashing(String),
    /// The TOTP secret could not be sealed or opened (wrong server key, corrupt row).
    #[error("the operator's second-factor secret is unusable: {0}")]
    Secret(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for OperatorError {
    fn code(&self) -> &'static str {
        match self {
            OperatorError::InvalidEmail => "OPERATOR_INVALID_EMAIL",
            OperatorError::InvalidBankCode => "OPERATOR_INVALID_BANK_CODE",
            OperatorError::InvalidRole => "OPERATOR_INVALID_ROLE",
            OperatorError::EmailTaken => "OPERATOR_EMAIL_TAKEN",
            OperatorError::LoginFailed => "OPERATOR_LOGIN_FAILED",
            OperatorError::Unauthenticated => "OPERATOR_UNAUTHENTICATED",
            OperatorError::Forbidden => "OPERATOR_FORBIDDEN",
            OperatorError::ReasonRequired => "OPERATOR_REASON_REQUIRED",
            OperatorError::NotFound => "OPERATOR_NOT_FOUND",
            OperatorError::UserNotFound => "USER_NOT_FOUND",
            OperatorError::Password(rule) => rule.code(),
            OperatorError::RateLimited { .. } => "RATE_LIMITED",
            OperatorError::PageLimitInvalid => "OPERATOR_PAGE_LIMIT_INVALID",
            OperatorError::PasswordHashing(_) => "PASSWORD_HASHING_FAILED",
            OperatorError::Secret(_) => "OPERATOR_SECRET_UNUSABLE",
            OperatorError::Store(_) => "STORE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            OperatorError::InvalidEmail
            | OperatorError::InvalidBankCode
            | OperatorError::InvalidRole
            | OperatorError::ReasonRequired
            | OperatorError::Password(_)
            | OperatorError::PageLimitInvalid => ErrorKind::InvalidInput,
            // A locked account also answers LOGIN_FAILED (401), not 429: a different status
            // would tell a guesser which addresses are operators.
            OperatorError::LoginFailed | OperatorError::Unauthenticated => {
                ErrorKind::Unauthenticated
            }
            OperatorError::Forbidden => ErrorKind::Forbidden,
            OperatorError::EmailTaken => ErrorKind::Conflict,
            OperatorError::NotFound | OperatorError::UserNotFound => ErrorKind::NotFound,
            // Per source address or per e-mail address, the same for every address: a 429
            // tells nothing about which addresses are operators.
            OperatorError::RateLimited { .. } => ErrorKind::RateLimited,
            OperatorError::Secret(_)
            | OperatorError::PasswordHashing(_)
            | OperatorError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// What an operator is. A bank partner belongs to exactly one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Manages operators and banks; everything else too.
    Admin,
    /// Reviews fraud cases and disputes (DESIGN.md). Does not browse users' personal data: a
    /// case carries what its review needs.
    Analyst,
    /// Answers users; reads user data with a reason.
    Support,
    /// A partner bank's staff: suspends and resumes linking and charging at its own bank.
    BankPartner { bank_code: String },
}

/// Something an operator may be allowed to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// Create, disable and change operators.
    ManageOperators,
    /// Suspend or resume linking and charging at one bank, change its settings.
    ManageBanks { bank_code: String },
    /// See a user's personal data and history (with a reason, see [`require_reason`]).
    ReadUserData,
    /// See a user's phone number in full; without it, all but the last 4 digits are masked.
    ReadUnmaskedContacts,
    /// Read the audit log (itself an audited act).
    ReadAuditLog,
    /// Open, review and decide fraud and compensation cases.
    ReviewCases,
    /// See the links, charges, alerts and fraud reports on one bank's accounts.
    ViewBankActivity { bank_code: String },
    /// Onboard merchants and issue their API keys.
    ManageMerchants,
    /// Approve or reject another operator's credit above the solo threshold (four eyes).
    ApproveCredits,
}

impl Permission {
    /// The name written into `operator.refused` audit entries.
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::ManageOperators => "manage_operators",
            Permission::ManageBanks { .. } => "manage_banks",
            Permission::ReadUserData => "read_user_data",
            Permission::ReadUnmaskedContacts => "read_unmasked_contacts",
            Permission::ReadAuditLog => "read_audit_log",
            Permission::ReviewCases => "review_cases",
            Permission::ViewBankActivity { .. } => "view_bank_activity",
            Permission::ManageMerchants => "manage_merchants",
            Permission::ApproveCredits => "approve_credits",
        }
    }
}

fn valid_bank_code(code: &str) -> bool {
    code.len() == 4 && code.bytes().all(|byte| byte.is_ascii_digit())
}

impl Role {
    /// Parses the stored (or typed) role and bank code; a bank code goes with bank_partner
    /// and only with it.
    pub fn parse(role: &str, bank_code: Option<&str>) -> Result<Role, OperatorError> {
        match (role, bank_code) {
            ("admin", None) => Ok(Role::Admin),
            ("analyst", None) => Ok(Role::Analyst),
            ("support", None) => Ok(Role::Support),
            ("bank_partner", Some(code)) if valid_bank_code(code) => Ok(Role::BankPartner {
                bank_code: code.to_owned(),
            }),
            ("bank_partner", _) => Err(OperatorError::InvalidBankCode),
            ("admin" | "analyst" | "support", Some(_)) => Err(OperatorError::InvalidBankCode),
            _ => Err(OperatorError::InvalidRole),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Support => "support",
            Role::BankPartner { .. } => "bank_partner",
        }
    }

    pub fn bank_code(&self) -> Option<&str> {
        match self {
            Role::BankPartner { bank_code } => Some(bank_code),
            _ => None,
        }
    }

    /// Deny by default: only the pairs listed here are allowed.
    pub fn can(&self, permission: Permission) -> bool {
        match (self, permission) {
            (Role::Admin, _) => true,
            (Role::Analyst, Permission::ReviewCases | Permission::ViewBankActivity { .. }) => true,
            (Role::Support, Permission::ReadUserData) => true,
            (
                Role::BankPartner { bank_code: own },
                Permission::ManageBanks { bank_code } | Permission::ViewBankActivity { bank_code },
            ) => valid_bank_code(own) && *own == bank_code,
            _ => false,
        }
    }
}

/// An operator as the rest of the system sees it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub id: OperatorId,
    pub email: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub disabled_at_ms: Option<i64>,
}

impl Operator {
    /// What the role allows; a disabled operator may do nothing.
    pub fn can(&self, permission: Permission) -> bool {
        self.disabled_at_ms.is_none() && self.role.can(permission)
    }

    /// `can`, as a `Result` for `?`.
    pub fn require(&self, permission: Permission) -> Result<(), OperatorError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(OperatorError::Forbidden)
        }
    }

    fn actor(&self) -> Actor {
        Actor::Operator(self.id.as_u128())
    }
}

/// Support reads need a stated reason: 10 to 500 characters after trimming.
pub fn require_reason(reason: &str) -> Result<(), OperatorError> {
    let length_chars = reason.trim().chars().count();
    if (REASON_MIN_CHARS..=REASON_MAX_CHARS).contains(&length_chars) {
        Ok(())
    } else {
        Err(OperatorError::ReasonRequired)
    }
}

/// Trimmed and lower-cased; refused unless it looks like `local@domain` with no spaces,
/// control characters or colons (a colon would break the otpauth label).
pub fn normalize_email(email: &str) -> Result<String, OperatorError> {
    let email = email.trim().to_lowercase();
    let well_formed = email.len() <= EMAIL_MAX_BYTES
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email.chars().any(|character| {
            character.is_whitespace() || character.is_control() || character == ':'
        });
    if well_formed {
        Ok(email)
    } else {
        Err(OperatorError::InvalidEmail)
    }
}

/// Who creates an operator: the CLI bootstrap (no operator exists yet), or an operator who
/// holds [`Permission::ManageOperators`].
#[derive(Debug, Clone, Copy)]
pub enum CreatedBy<'a> {
    Cli,
    Operator(&'a Operator),
}

/// A new operator. The password is hashed by the caller (`password::hash_password`, ~14 ms,
/// outside the transaction) after `password::check_new_password`.
pub struct NewOperator<'a> {
    pub email: &'a str,
    pub password_hash: String,
    pub role: Role,
}

/// What the new operator enrols in their authenticator app. Shown once; never stored in clear.
pub struct TotpEnrolment {
    secret_base32: SecretString,
    otpauth_url: SecretString,
}

impl TotpEnrolment {
    pub fn secret_base32(&self) -> &SecretString {
        &self.secret_base32
    }

    pub fn otpauth_url(&self) -> &SecretString {
        &self.otpauth_url
    }
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TotpEnrolment(<redacted>)")
    }
}

#[derive(Debug)]
pub struct CreatedOperator {
    pub id: OperatorId,
    pub enrolment: TotpEnrolment,
    /// The new operator as stored.
    pub operator: Operator,
}

/// The associated data a TOTP secret is sealed with: it opens only in its own row.
fn totp_associated_data(id: OperatorId) -> Vec<u8> {
    format!("identity_operators.totp_secret_encrypted:{id}").into_bytes()
}

fn totp(secret: &[u8], account_name: &str) -> Result<totp_rs::Totp, OperatorError> {
    // SHA-1, 6 digits, 30 s steps: what every authenticator app supports (RFC 6238 defaults).
    // One step of skew either way covers clock drift; more would widen the guessing window.
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret.to_vec())
        .with_issuer(Some(TOTP_ISSUER))
        .with_account_name(account_name)
        .build()
        .map_err(|error| OperatorError::Secret(error.to_string()))
}

/// A UUIDv7 stamped with the caller's time, so ids sort with the rows' own timestamps.
fn new_id(now_ms: i64) -> u128 {
    let now_ms = u64::try_from(now_ms).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        now_ms / 1_000,
        u32::try_from((now_ms % 1_000) * 1_000_000).unwrap_or(0),
    );
    uuid::Uuid::new_v7(timestamp).as_u128()
}

fn operator_id_of(row: &Row, index: usize) -> Result<OperatorId, StoreError> {
    OperatorId::from_u128(row.uuid(index)?).map_err(|error| StoreError::new(error.to_string()))
}

/// Creates an operator with a fresh TOTP secret (sealed under the server key, bound to the
/// new row) and writes `operator.created` to the audit log in the same transaction.
pub fn create_operator(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: CreatedBy<'_>,
    reason: &str,
    new: &NewOperator<'_>,
    secret_box: &SecretBox,
) -> Result<CreatedOperator, OperatorError> {
    let actor = match by {
        CreatedBy::Cli => Actor::System,
        CreatedBy::Operator(operator) => {
            operator.require(Permission::ManageOperators)?;
            require_reason(reason)?;
            operator.actor()
        }
    };
    let email = normalize_email(new.email)?;
    // Re-parse so a hand-built Role with a malformed bank code cannot reach the table.
    let role = Role::parse(new.role.as_str(), new.role.bank_code())?;
    let taken = tx.query_opt(
        "SELECT id FROM identity_operators WHERE email = $1",
        &[email.as_str().into()],
    )?;
    if taken.is_some() {
        return Err(OperatorError::EmailTaken);
    }

    let id = OperatorId::from_u128(new_id(now_ms))
        .map_err(|error| StoreError::new(error.to_string()))?;
    let mut secret = Zeroizing::new([0u8; TOTP_SECRET_BYTES]);
    fill_random(secret.as_mut_slice()).map_err(|error| OperatorError::Secret(error.to_string()))?;
    let sealed = secret_box
        .seal(secret.as_slice(), &totp_associated_data(id))
        .map_err(|error| OperatorError::Secret(error.to_string()))?;
    let enrolment_totp = totp(secret.as_slice(), &email)?;
    let enrolment = TotpEnrolment {
        secret_base32: SecretString::from(enrolment_totp.secret().to_base32()),
        otpauth_url: SecretString::from(
            enrolment_totp
                .to_url()
                .map_err(|error| OperatorError::Secret(error.to_string()))?,
        ),
    };

    tx.execute(
        "INSERT INTO identity_operators (id, email, password_hash, role, bank_code,
             totp_secret_encrypted, totp_last_step, failures_window_start, failures_count,
             created_at, disabled_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0, $7, NULL)",
        &[
            Value::Uuid(id.as_u128()),
            email.as_str().into(),
            new.password_hash.as_str().into(),
            role.as_str().into(),
            role.bank_code().into(),
            Value::Bytes(sealed),
            Value::Int(now_ms),
        ],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor,
            action: "operator.created",
            subject_kind: "operator",
            subject_id: &id.to_string(),
            reason,
            detail: serde_json::json!({
                "role": role.as_str(),
                "bank_code": role.bank_code(),
            }),
        },
    )?;
    Ok(CreatedOperator {
        id,
        enrolment,
        operator: Operator {
            id,
            email,
            role,
            created_at_ms: now_ms,
            disabled_at_ms: None,
        },
    })
}

const OPERATOR_COLUMNS: &str = "id, email, role, bank_code, created_at, disabled_at";

fn operator_of(row: &Row, offset: usize) -> Result<Operator, OperatorError> {
    let role_text = row.text(offset + 2)?;
    let bank_code = row.opt_text(offset + 3)?;
    let role = Role::parse(&role_text, bank_code.as_deref())
        .map_err(|_| StoreError::new("identity_operators holds an invalid role"))?;
    Ok(Operator {
        id: operator_id_of(row, offset)?,
        email: row.text(offset + 1)?,
        role,
        created_at_ms: row.int(offset + 4)?,
        disabled_at_ms: row.opt_int(offset + 5)?,
    })
}

/// The operator with `id`, disabled or not.
pub fn find_operator(tx: &mut dyn Tx, id: OperatorId) -> Result<Operator, OperatorError> {
    let row = tx
        .query_opt(
            &format!("SELECT {OPERATOR_COLUMNS} FROM identity_operators WHERE id = $1"),
            &[Value::Uuid(id.as_u128())],
        )?
        .ok_or(OperatorError::NotFound)?;
    operator_of(&row, 0)
}

/// What a sign-in presents.
pub struct LoginAttempt<'a> {
    pub email: &'a str,
    pub password: &'a SecretString,
    pub totp_code: &'a str,
}

/// A signed-in operator and their session token (give it to the client; it is not stored).
#[derive(Debug)]
pub struct OperatorSession {
    pub operator: Operator,
    pub token: SecretString,
    pub expires_at_ms: i64,
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> Result<(SecretString, [u8; 32]), OperatorError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    fill_random(bytes.as_mut_slice()).map_err(|error| OperatorError::Secret(error.to_string()))?;
    let token = format!(
        "{OPERATOR_TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes.as_slice())
    );
    let hash = token_hash(&token);
    Ok((SecretString::from(token), hash))
}

fn well_formed_token(token: &str) -> bool {
    token
        .strip_prefix(OPERATOR_TOKEN_PREFIX)
        .is_some_and(|body| {
            body.len() == TOKEN_BODY_CHARS
                && body
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
}

/// Why a sign-in failed, for the audit log only (the caller hears `LOGIN_FAILED`).
#[derive(Debug, Clone, Copy)]
enum LoginFailure {
    UnknownEmail,
    Locked,
    Disabled,
    Password,
    Code,
}

impl LoginFailure {
    fn as_str(self) -> &'static str {
        match self {
            LoginFailure::UnknownEmail => "unknown_email",
            LoginFailure::Locked => "locked",
            LoginFailure::Disabled => "disabled",
            LoginFailure::Password => "password",
            LoginFailure::Code => "code",
        }
    }
}

/// Signs an operator in with e-mail, password and TOTP code.
///
/// Runs its own transactions on `db` rather than joining the caller's, for two reasons: the
/// argon2 check (~14 ms) runs between them so no lock is held while hashing, and a failure
/// must still be *committed* (the failure count and the `operator.login_failed` entry) while
/// the caller hears an error. Call it from a blocking context (`spawn_blocking`).
pub fn operator_login(
    db: &Database,
    now_ms: i64,
    attempt: &LoginAttempt<'_>,
    secret_box: &SecretBox,
) -> Result<OperatorSession, OperatorError> {
    // A malformed address cannot be anyone's: it gets the same work and answer as an unknown one.
    let email = normalize_email(attempt.email).ok();
    let known = match &email {
        Some(email) => db.transaction(|tx: &mut dyn Tx| {
            tx.query_opt(
                "SELECT id, password_hash FROM identity_operators WHERE email = $1",
                &[email.as_str().into()],
            )
        })?,
        None => None,
    };
    let Some(row) = known else {
        verify_unknown_user(attempt.password);
        db.transaction(|tx: &mut dyn Tx| {
            audit_login_failed(tx, now_ms, None, LoginFailure::UnknownEmail)
        })?;
        return Err(OperatorError::LoginFailed);
    };
    let id = operator_id_of(&row, 0)?;
    let checked_hash = row.text(1)?;
    let password_ok = verify_password(&checked_hash, attempt.password);

    // The outer Result rolls back (storage trouble); the inner one is the committed outcome.
    db.transaction(|tx: &mut dyn Tx| {
        judge_login(
            tx,
            now_ms,
            id,
            &checked_hash,
            password_ok,
            attempt.totp_code,
            secret_box,
        )
    })?
}

/// The locked part of a sign-in, after the password was checked against `checked_hash`.
fn judge_login(
    tx: &mut dyn Tx,
    now_ms: i64,
    id: OperatorId,
    checked_hash: &str,
    password_ok: bool,
    totp_code: &str,
    secret_box: &SecretBox,
) -> Result<Result<OperatorSession, OperatorError>, OperatorError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {OPERATOR_COLUMNS}, password_hash, totp_secret_encrypted,
                     totp_last_step, failures_window_start, failures_count
                 FROM identity_operators WHERE id = $1{}",
                tx.for_update()
            ),
            &[Value::Uuid(id.as_u128())],
        )?
        .ok_or(OperatorError::LoginFailed)?;
    let operator = operator_of(&row, 0)?;
    let stored_hash = row.text(6)?;
    let sealed_secret = row.bytes(7)?;
    let last_step = row.int(8)?;
    let (window_start_ms, failures) = match (row.int(9)?, row.int(10)?) {
        (start, _) if now_ms.saturating_sub(start) >= FAILURE_WINDOW_MS => (now_ms, 0),
        window => window,
    };

    let failure = if failures >= LOGIN_FAILURES_PER_HOUR_MAX {
        Some(LoginFailure::Locked)
    } else if !password_ok || stored_hash != checked_hash {
        // (A password changed since it was checked counts as wrong: try again.)
        Some(LoginFailure::Password)
    } else if operator.disabled_at_ms.is_some() {
        Some(LoginFailure::Disabled)
    } else {
        match accepted_step(secret_box, &operator, &sealed_secret, totp_code, now_ms)? {
            Some(step) if step > last_step => {
                tx.execute(
                    "UPDATE identity_operators SET totp_last_step = $1,
                         failures_window_start = $2, failures_count = 0 WHERE id = $3",
                    &[
                        Value::Int(step),
                        Value::Int(now_ms),
                        Value::Uuid(id.as_u128()),
                    ],
                )?;
                None
            }
            // Not a current code, or one already used (replay).
            _ => Some(LoginFailure::Code),
        }
    };

    if let Some(failure) = failure {
        if !matches!(failure, LoginFailure::Locked) {
            tx.execute(
                "UPDATE identity_operators SET failures_window_start = $1,
                     failures_count = $2 WHERE id = $3",
                &[
                    Value::Int(window_start_ms),
                    Value::Int(failures + 1),
                    Value::Uuid(id.as_u128()),
                ],
            )?;
        }
        audit_login_failed(tx, now_ms, Some(id), failure)?;
        return Ok(Err(OperatorError::LoginFailed));
    }

    let (token, hash) = new_token()?;
    let expires_at_ms = now_ms.saturating_add(OPERATOR_SESSION_LIFETIME_MS);
    let session_id = new_id(now_ms);
    tx.execute(
        "INSERT INTO identity_operator_sessions (id, operator_id, token_hash, created_at,
             last_seen_at, expires_at, revoked_at)
         VALUES ($1, $2, $3, $4, $4, $5, NULL)",
        &[
            Value::Uuid(session_id),
            Value::Uuid(id.as_u128()),
            Value::Bytes(hash.to_vec()),
            Value::Int(now_ms),
            Value::Int(expires_at_ms),
        ],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: operator.actor(),
            action: "operator.login",
            subject_kind: "operator",
            subject_id: &id.to_string(),
            reason: "",
            detail: serde_json::json!({
                "session_id": uuid::Uuid::from_u128(session_id).to_string(),
            }),
        },
    )?;
    Ok(Ok(OperatorSession {
        operator,
        token,
        expires_at_ms,
    }))
}

/// The time step `code` is valid for at `now_ms` (±1 step), if any.
fn accepted_step(
    secret_box: &SecretBox,
    operator: &Operator,
    sealed_secret: &[u8],
    code: &str,
    now_ms: i64,
) -> Result<Option<i64>, OperatorError> {
    let secret = secret_box
        .open(sealed_secret, &totp_associated_data(operator.id))
        .map_err(|error| OperatorError::Secret(error.to_string()))?;
    let checker = totp(&secret, &operator.email)?;
    let now_s = u64::try_from(now_ms).unwrap_or(0) / 1_000;
    // The token comparison inside totp-rs is constant-time.
    Ok(checker
        .check(code.trim(), now_s)
        .and_then(|step| i64::try_from(step).ok()))
}

fn audit_login_failed(
    tx: &mut dyn Tx,
    now_ms: i64,
    id: Option<OperatorId>,
    failure: LoginFailure,
) -> Result<(), StoreError> {
    // The attempted address is not recorded: it is personal data, and often a password typed
    // into the wrong field.
    let subject_id = id.map(|id| id.to_string()).unwrap_or_default();
    let actor = match id {
        Some(id) => Actor::Operator(id.as_u128()),
        None => Actor::System,
    };
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor,
            action: "operator.login_failed",
            subject_kind: "operator",
            subject_id: &subject_id,
            reason: "",
            detail: serde_json::json!({ "cause": failure.as_str() }),
        },
    )
    .map(|_| ())
}

/// The operator behind a session token. Expired, idle, revoked, malformed and unknown tokens
/// and disabled operators are all `OPERATOR_UNAUTHENTICATED`. The lookup is by SHA-256 of the
/// token, so no comparison of the secret itself takes place.
pub fn authenticate(
    tx: &mut dyn Tx,
    now_ms: i64,
    token: &SecretString,
) -> Result<Operator, OperatorError> {
    let token = token.expose_secret();
    if !well_formed_token(token) {
        return Err(OperatorError::Unauthenticated);
    }
    let row = tx
        .query_opt(
            "SELECT s.id, s.last_seen_at, s.expires_at, s.revoked_at,
                 o.id, o.email, o.role, o.bank_code, o.created_at, o.disabled_at
             FROM identity_operator_sessions s
             JOIN identity_operators o ON o.id = s.operator_id
             WHERE s.token_hash = $1",
            &[Value::Bytes(token_hash(token).to_vec())],
        )?
        .ok_or(OperatorError::Unauthenticated)?;
    let session_id = row.uuid(0)?;
    let last_seen_ms = row.int(1)?;
    let expires_at_ms = row.int(2)?;
    let revoked = row.opt_int(3)?.is_some();
    let operator = operator_of(&row, 4)?;
    let idle = now_ms.saturating_sub(last_seen_ms) >= OPERATOR_SESSION_IDLE_MS;
    if revoked || idle || now_ms >= expires_at_ms || operator.disabled_at_ms.is_some() {
        return Err(OperatorError::Unauthenticated);
    }
    tx.execute(
        "UPDATE identity_operator_sessions SET last_seen_at = $1
         WHERE id = $2 AND last_seen_at < $1",
        &[Value::Int(now_ms), Value::Uuid(session_id)],
    )?;
    Ok(operator)
}

/// Ends the session behind `token` (sign-out). Unknown tokens are ignored: signing out twice
/// is not an error.
pub fn operator_logout(
    tx: &mut dyn Tx,
    now_ms: i64,
    token: &SecretString,
) -> Result<(), OperatorError> {
    let token = token.expose_secret();
    if !well_formed_token(token) {
        return Ok(());
    }
    let row = tx.query_opt(
        "SELECT id, operator_id FROM identity_operator_sessions
         WHERE token_hash = $1 AND revoked_at IS NULL",
        &[Value::Bytes(token_hash(token).to_vec())],
    )?;
    let Some(row) = row else {
        return Ok(());
    };
    let session_id = row.uuid(0)?;
    let operator_id = operator_id_of(&row, 1)?;
    tx.execute(
        "UPDATE identity_operator_sessions SET revoked_at = $1 WHERE id = $2",
        &[Value::Int(now_ms), Value::Uuid(session_id)],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(operator_id.as_u128()),
            action: "operator.logout",
            subject_kind: "operator",
            subject_id: &operator_id.to_string(),
            reason: "",
            detail: serde_json::json!({
                "session_id": uuid::Uuid::from_u128(session_id).to_string(),
            }),
        },
    )?;
    Ok(())
}

/// Disables an operator and ends their sessions; needs [`Permission::ManageOperators`] and a
/// reason. An operator cannot disable themselves (so the last admin cannot lock everyone out
/// by accident).
pub fn disable_operator(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &Operator,
    target: OperatorId,
    reason: &str,
) -> Result<(), OperatorError> {
    by.require(Permission::ManageOperators)?;
    require_reason(reason)?;
    if by.id == target {
        return Err(OperatorError::Forbidden);
    }
    let changed = tx.execute(
        "UPDATE identity_operators SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL",
        &[Value::Int(now_ms), Value::Uuid(target.as_u128())],
    )?;
    if changed == 0 {
        // Unknown, or already disabled: say which.
        find_operator(tx, target)?;
        return Ok(());
    }
    let sessions_ended = tx.execute(
        "UPDATE identity_operator_sessions SET revoked_at = $1
         WHERE operator_id = $2 AND revoked_at IS NULL",
        &[Value::Int(now_ms), Value::Uuid(target.as_u128())],
    )?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: by.actor(),
            action: "operator.disabled",
            subject_kind: "operator",
            subject_id: &target.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({ "sessions_ended": sessions_ended }),
        },
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The console's flows: each authenticates the session token in the transaction that acts.

/// Counts a sign-in attempt from `source_ip` for `email` and says whether it may be judged.
/// The per-address bucket is keyed by a hash of the (normalised) address, so bucket names
/// never hold what a caller typed and the limit falls the same on every address.
fn login_limits(
    tx: &mut dyn Tx,
    now_ms: i64,
    email: &str,
    source_ip: &str,
) -> Result<Decision, StoreError> {
    let account_key = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    let account_hash = Sha256::digest(account_key.as_bytes());
    let account_hex: String = account_hash
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    // Both windows count every attempt, even one the other refuses: hammering one does not
    // spare the other.
    let by_ip = ratelimit::hit(
        tx,
        now_ms,
        &format!("operator_login:ip:{source_ip}"),
        FAILURE_WINDOW_MS,
        LOGINS_PER_IP_PER_HOUR_MAX,
    )?;
    let by_account = ratelimit::hit(
        tx,
        now_ms,
        &format!("operator_login:account:{account_hex}"),
        FAILURE_WINDOW_MS,
        LOGINS_PER_ACCOUNT_PER_HOUR_MAX,
    )?;
    Ok(match (by_ip, by_account) {
        (Decision::Allowed, Decision::Allowed) => Decision::Allowed,
        (Decision::Limited { retry_after_ms }, Decision::Allowed)
        | (Decision::Allowed, Decision::Limited { retry_after_ms }) => {
            Decision::Limited { retry_after_ms }
        }
        (
            Decision::Limited { retry_after_ms: ip },
            Decision::Limited {
                retry_after_ms: account,
            },
        ) => Decision::Limited {
            retry_after_ms: ip.max(account),
        },
    })
}

/// [`operator_login`] behind the per-source and per-address limits
/// ([`LOGINS_PER_IP_PER_HOUR_MAX`], [`LOGINS_PER_ACCOUNT_PER_HOUR_MAX`]). The count is
/// committed before the password is checked, so a refused attempt costs no argon2 work and
/// still counts. `source_ip` comes from the connection, never from the request body.
pub fn sign_in(
    db: &Database,
    now_ms: i64,
    attempt: &LoginAttempt<'_>,
    source_ip: &str,
    secret_box: &SecretBox,
) -> Result<OperatorSession, OperatorError> {
    let decision =
        db.transaction(|tx: &mut dyn Tx| login_limits(tx, now_ms, attempt.email, source_ip))?;
    if let Decision::Limited { retry_after_ms } = decision {
        return Err(OperatorError::RateLimited { retry_after_ms });
    }
    operator_login(db, now_ms, attempt, secret_box)
}

/// Ends the session behind `token`; `OPERATOR_UNAUTHENTICATED` if it is not a live one.
pub fn sign_out(db: &Database, now_ms: i64, token: &SecretString) -> Result<(), OperatorError> {
    db.transaction(|tx: &mut dyn Tx| {
        authenticate(tx, now_ms, token)?;
        operator_logout(tx, now_ms, token)
    })
}

/// Records a refused attempt: who tried what on which object. Committed although the caller
/// hears `OPERATOR_FORBIDDEN` — a support account probing for admin routes is worth knowing.
fn audit_refused(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &Operator,
    permission: &Permission,
    action: &str,
    subject: (&str, &str),
) -> Result<(), StoreError> {
    let (subject_kind, subject_id) = subject;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: by.actor(),
            action: "operator.refused",
            subject_kind,
            subject_id,
            reason: "",
            detail: serde_json::json!({
                "attempted": action,
                "role": by.role.as_str(),
                "missing_permission": permission.as_str(),
            }),
        },
    )
    .map(|_| ())
}

/// Authenticates `token` and checks `permission` in `tx`. The inner `Err(Forbidden)` comes
/// with an `operator.refused` entry written in `tx`: the caller must commit it.
fn authorize(
    tx: &mut dyn Tx,
    now_ms: i64,
    token: &SecretString,
    permission: Permission,
    action: &str,
    subject: (&str, &str),
) -> Result<Result<Operator, OperatorError>, OperatorError> {
    let operator = authenticate(tx, now_ms, token)?;
    if operator.can(permission.clone()) {
        Ok(Ok(operator))
    } else {
        audit_refused(tx, now_ms, &operator, &permission, action, subject)?;
        Ok(Err(OperatorError::Forbidden))
    }
}

/// A user's record as the console shows it to one operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub user_id: uuid::Uuid,
    pub email: String,
    /// In full only for operators with [`Permission::ReadUnmaskedContacts`]; otherwise every
    /// character but the last 4 is `*`.
    pub phone: String,
    pub phone_masked: bool,
    pub status: String,
    pub email_verified: bool,
    pub phone_verified: bool,
    pub kyc_level: KycLevel,
    pub second_factor: bool,
    /// Sessions neither revoked, expired nor idle.
    pub active_sessions: i64,
    pub locked_until_ms: Option<i64>,
    pub outgoing_frozen_until_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// All but the last 4 characters replaced by `*` (the length stays: it says nothing a support
/// agent could misuse, and the user recognises their number by its end).
pub fn mask_phone(phone: &str) -> String {
    let shown_from = phone.chars().count().saturating_sub(4);
    phone
        .chars()
        .enumerate()
        .map(|(index, character)| if index < shown_from { '*' } else { character })
        .collect()
}

/// Reads a user's record for `by`, who needs [`Permission::ReadUserData`] and a stated reason,
/// and writes `operator.read_user` (with that reason) in the same transaction: the read is on
/// record exactly when it happened.
pub fn read_user(
    tx: &mut dyn Tx,
    now_ms: i64,
    by: &Operator,
    user_id: uuid::Uuid,
    reason: &str,
) -> Result<UserRecord, OperatorError> {
    by.require(Permission::ReadUserData)?;
    require_reason(reason)?;
    let row = tx
        .query_opt(
            "SELECT u.email, u.phone, u.status, u.email_verified_at, u.phone_verified_at,
                 u.kyc_level, u.locked_until, u.outgoing_frozen_until, u.created_at,
                 (SELECT COUNT(*) FROM identity_totp t
                  WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL)
             FROM identity_users u WHERE u.id = $1",
            &[Value::Uuid(user_id.as_u128())],
        )?
        .ok_or(OperatorError::UserNotFound)?;
    // The same sessions the user sees in their own list (session::list_sessions), counted.
    let active_sessions = tx
        .query_one(
            "SELECT COUNT(*) FROM identity_sessions s
             JOIN identity_devices d ON d.id = s.device_id
             WHERE s.user_id = $1 AND s.revoked_at IS NULL AND d.revoked_at IS NULL
               AND s.expires_at > $2 AND s.last_seen_at > $3",
            &[
                Value::Uuid(user_id.as_u128()),
                Value::Int(now_ms),
                Value::Int(now_ms.saturating_sub(SESSION_IDLE_TIMEOUT_MS)),
            ],
        )?
        .int(0)?;
    let phone = row.text(1)?;
    let phone_masked = !by.can(Permission::ReadUnmaskedContacts);
    let record = UserRecord {
        user_id,
        email: row.text(0)?,
        phone: if phone_masked {
            mask_phone(&phone)
        } else {
            phone
        },
        phone_masked,
        status: row.text(2)?,
        email_verified: row.opt_int(3)?.is_some(),
        phone_verified: row.opt_int(4)?.is_some(),
        kyc_level: KycLevel::from_i64(row.int(5)?),
        locked_until_ms: row.opt_int(6)?,
        outgoing_frozen_until_ms: row.opt_int(7)?,
        created_at_ms: row.int(8)?,
        second_factor: row.int(9)? > 0,
        active_sessions,
    };
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: by.actor(),
            action: "operator.read_user",
            subject_kind: "user",
            subject_id: &user_id.to_string(),
            reason: reason.trim(),
            detail: serde_json::json!({ "phone_masked": phone_masked }),
        },
    )?;
    Ok(record)
}

/// [`read_user`] for the session behind `token`. A refused attempt is audited and committed.
pub fn read_user_data(
    db: &Database,
    now_ms: i64,
    token: &SecretString,
    user_id: uuid::Uuid,
    reason: &str,
) -> Result<UserRecord, OperatorError> {
    let subject_id = user_id.to_string();
    db.transaction(|tx: &mut dyn Tx| {
        let operator = match authorize(
            tx,
            now_ms,
            token,
            Permission::ReadUserData,
            "operator.read_user",
            ("user", &subject_id),
        )? {
            Ok(operator) => operator,
            Err(refused) => return Ok(Err(refused)),
        };
        read_user(tx, now_ms, &operator, user_id, reason).map(Ok)
    })?
}

/// A page of the audit log after `after_seq` for the session behind `token`, which needs
/// [`Permission::ReadAuditLog`]. The read itself is recorded (`operator.read_audit`, after the
/// page is taken, so it appears on the next page).
pub fn read_audit_log(
    db: &Database,
    now_ms: i64,
    token: &SecretString,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<StoredEntry>, OperatorError> {
    db.transaction(|tx: &mut dyn Tx| {
        let operator = match authorize(
            tx,
            now_ms,
            token,
            Permission::ReadAuditLog,
            "operator.read_audit",
            ("audit_log", ""),
        )? {
            Ok(operator) => operator,
            Err(refused) => return Ok(Err(refused)),
        };
        if !(1..=AUDIT_PAGE_ENTRIES_MAX).contains(&limit) {
            return Err(OperatorError::PageLimitInvalid);
        }
        let entries = kinko_audit::entries_after(tx, after_seq, limit)?;
        kinko_audit::append(
            tx,
            now_ms,
            &AuditEntry {
                actor: operator.actor(),
                action: "operator.read_audit",
                subject_kind: "audit_log",
                subject_id: "",
                reason: "",
                detail: serde_json::json!({
                    "after_seq": after_seq,
                    "limit": limit,
                    "entries": entries.len(),
                }),
            },
        )?;
        Ok(Ok(entries))
    })?
}

/// What an admin asks for when creating an operator through the console.
pub struct OperatorRequest<'a> {
    pub email: &'a str,
    /// `admin`, `analyst`, `support` or `bank_partner`.
    pub role: &'a str,
    /// Required for `bank_partner`, refused otherwise.
    pub bank_code: Option<&'a str>,
    pub password: &'a SecretString,
    /// Why this operator is created (ticket, hire…): 10 to 500 characters.
    pub reason: &'a str,
}

/// Creates an operator on behalf of the session behind `token` ([`Permission::ManageOperators`]
/// and a reason), with `operator.created` naming that operator as actor. The permission is
/// checked before anything else is looked at (a refused attempt learns nothing about the
/// password rules), and the password is hashed between two transactions so no lock is held
/// while argon2 runs; the second one authenticates again.
pub fn create_operator_as(
    db: &Database,
    now_ms: i64,
    token: &SecretString,
    request: &OperatorRequest<'_>,
    secret_box: &SecretBox,
) -> Result<CreatedOperator, OperatorError> {
    db.transaction(|tx: &mut dyn Tx| {
        authorize(
            tx,
            now_ms,
            token,
            Permission::ManageOperators,
            "operator.create",
            ("operator", ""),
        )
    })??;
    require_reason(request.reason)?;
    let role = Role::parse(request.role, request.bank_code)?;
    let email = normalize_email(request.email)?;
    check_new_password(request.password, &email).map_err(OperatorError::Password)?;
    let password_hash = hash_password(request.password)
        .map_err(|error| OperatorError::PasswordHashing(error.to_string()))?;
    db.transaction(|tx: &mut dyn Tx| {
        let by = authenticate(tx, now_ms, token)?;
        create_operator(
            tx,
            now_ms,
            CreatedBy::Operator(&by),
            request.reason.trim(),
            &NewOperator {
                email: &email,
                password_hash: password_hash.clone(),
                role: role.clone(),
            },
            secret_box,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank(code: &str) -> Role {
        Role::BankPartner {
            bank_code: code.to_owned(),
        }
    }

    fn manage(code: &str) -> Permission {
        Permission::ManageBanks {
            bank_code: code.to_owned(),
        }
    }

    /// The whole matrix, written out: anything not marked `true` here must be refused.
    #[test]
    fn the_permission_matrix_is_deny_by_default() {
        let cases: Vec<(Role, Permission, bool)> = vec![
            (Role::Admin, Permission::ManageOperators, true),
            (Role::Admin, manage("0001"), true),
            (Role::Admin, Permission::ReadUserData, true),
            (Role::Admin, Permission::ReviewCases, true),
            (Role::Admin, Permission::ReadUnmaskedContacts, true),
            (Role::Admin, Permission::ReadAuditLog, true),
            (Role::Admin, Permission::ApproveCredits, true),
            (Role::Analyst, Permission::ApproveCredits, false),
            (Role::Support, Permission::ApproveCredits, false),
            (bank("0001"), Permission::ApproveCredits, false),
            (Role::Analyst, Permission::ManageOperators, false),
            (Role::Analyst, manage("0001"), false),
            (Role::Analyst, Permission::ReadUserData, false),
            (Role::Analyst, Permission::ReadUnmaskedContacts, false),
            (Role::Analyst, Permission::ReadAuditLog, false),
            (Role::Analyst, Permission::ReviewCases, true),
            (Role::Support, Permission::ManageOperators, false),
            (Role::Support, manage("0001"), false),
            (Role::Support, Permission::ReadUserData, true),
            (Role::Support, Permission::ReadUnmaskedContacts, false),
            (Role::Support, Permission::ReadAuditLog, false),
            (Role::Support, Permission::ReviewCases, false),
            (bank("0001"), Permission::ManageOperators, false),
            (bank("0001"), manage("0001"), true),
            (bank("0001"), manage("0002"), false),
            (bank("0001"), manage("001"), false),
            (bank("0001"), Permission::ReadUserData, false),
            (bank("0001"), Permission::ReadUnmaskedContacts, false),
            (bank("0001"), Permission::ReadAuditLog, false),
            (bank("0001"), Permission::ReviewCases, false),
            // A hand-built partner with a malformed code matches nothing, not even itself.
            (bank(""), manage(""), false),
            (bank("12345"), manage("12345"), false),
        ];
        for (role, permission, allowed) in cases {
            assert_eq!(
                role.can(permission.clone()),
                allowed,
                "{role:?} / {permission:?}"
            );
        }
    }

    #[test]
    fn a_disabled_operator_may_do_nothing() {
        let mut operator = Operator {
            id: OperatorId::from_u128(1).unwrap_or_else(|error| panic!("{error}")),
            email: "root@example.com".into(),
            role: Role::Admin,
            created_at_ms: 0,
            disabled_at_ms: None,
        };
        assert!(operator.can(Permission::ReviewCases));
        operator.disabled_at_ms = Some(1);
        for permission in [
            Permission::ManageOperators,
            manage("0001"),
            Permission::ReadUserData,
            Permission::ReadUnmaskedContacts,
            Permission::ReadAuditLog,
            Permission::ReviewCases,
        ] {
            assert!(!operator.can(permission.clone()), "{permission:?}");
            assert!(matches!(
                operator.require(permission),
                Err(OperatorError::Forbidden)
            ));
        }
    }

    #[test]
    fn roles_parse_with_their_bank_code_only() {
        let cases: Vec<(&str, Option<&str>, Result<Role, &str>)> = vec![
            ("admin", None, Ok(Role::Admin)),
            ("analyst", None, Ok(Role::Analyst)),
            ("support", None, Ok(Role::Support)),
            ("bank_partner", Some("0005"), Ok(bank("0005"))),
            ("bank_partner", None, Err("OPERATOR_INVALID_BANK_CODE")),
            ("bank_partner", Some("5"), Err("OPERATOR_INVALID_BANK_CODE")),
            (
                "bank_partner",
                Some("00a5"),
                Err("OPERATOR_INVALID_BANK_CODE"),
            ),
            ("admin", Some("0005"), Err("OPERATOR_INVALID_BANK_CODE")),
            ("root", None, Err("OPERATOR_INVALID_ROLE")),
            ("Admin", None, Err("OPERATOR_INVALID_ROLE")),
        ];
        for (role, code, expected) in cases {
            let parsed = Role::parse(role, code).map_err(|error| error.code());
            assert_eq!(parsed, expected, "{role} {code:?}");
        }
    }

    #[test]
    fn a_reason_has_ten_to_five_hundred_characters_after_trimming() {
        let cases: Vec<(String, bool)> = vec![
            (String::new(), false),
            ("   because   ".into(), false),
            ("ticket 123".into(), true),
            ("  ticket 123  ".into(), true),
            ("問い合わせ番号１２３への回答".into(), true),
            ("x".repeat(500), true),
            ("x".repeat(501), false),
        ];
        for (reason, accepted) in cases {
            assert_eq!(require_reason(&reason).is_ok(), accepted, "{reason:?}");
        }
    }

    #[test]
    fn emails_are_normalised_and_malformed_ones_refused() {
        assert_eq!(
            normalize_email("  Root@Example.COM ").ok().as_deref(),
            Some("root@example.com")
        );
        for bad in [
            "",
            "root",
            "@example.com",
            "root@",
            "a b@example.com",
            "a:b@example.com",
            "a@b@c",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn phones_are_masked_but_for_the_last_four_characters() {
        let cases = [
            ("+819012345678", "*********5678"),
            ("5678", "5678"),
            ("678", "678"),
            ("", ""),
        ];
        for (phone, masked) in cases {
            assert_eq!(mask_phone(phone), masked, "{phone:?}");
        }
    }

    #[test]
    fn tokens_have_one_shape() {
        let (token, hash) = new_token().unwrap_or_else(|error| panic!("{error}"));
        assert!(well_formed_token(token.expose_secret()));
        assert_eq!(hash, token_hash(token.expose_secret()));
        assert!(!well_formed_token("kinko_s_AAAA"));
        assert!(!well_formed_token(&format!(
            "{OPERATOR_TOKEN_PREFIX}{}",
            "!".repeat(43)
        )));
    }
}
