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
//! Every change here writes an audit entry in the same transaction (`kinko_audit::append`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kinko_audit::{Actor, AuditEntry};
use kinko_core::{ErrorCode, ErrorKind, typed_id};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Row, Tx, Value};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::password::{verify_password, verify_unknown_user};
use crate::secrets::{SecretBox, fill_random};

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
            OperatorError::Secret(_) => "OPERATOR_SECRET_UNUSABLE",
            OperatorError::Store(_) => "STORE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            OperatorError::InvalidEmail
            | OperatorError::InvalidBankCode
            | OperatorError::InvalidRole
            | OperatorError::ReasonRequired => ErrorKind::InvalidInput,
            // A locked account also answers LOGIN_FAILED (401), not 429: a different status
            // would tell a guesser which addresses are operators.
            OperatorError::LoginFailed | OperatorError::Unauthenticated => {
                ErrorKind::Unauthenticated
            }
            OperatorError::Forbidden => ErrorKind::Forbidden,
            OperatorError::EmailTaken => ErrorKind::Conflict,
            OperatorError::NotFound => ErrorKind::NotFound,
            OperatorError::Secret(_) | OperatorError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// What an operator is. A bank partner belongs to exactly one bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Manages operators and banks; everything else too.
    Admin,
    /// Reviews fraud cases; reads user data with a reason.
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
    /// Open, review and decide fraud and compensation cases.
    ReviewCases,
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
            (Role::Analyst, Permission::ReviewCases | Permission::ReadUserData) => true,
            (Role::Support, Permission::ReadUserData) => true,
            (Role::BankPartner { bank_code: own }, Permission::ManageBanks { bank_code }) => {
                valid_bank_code(own) && *own == bank_code
            }
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
    Ok(CreatedOperator { id, enrolment })
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
            (Role::Analyst, Permission::ManageOperators, false),
            (Role::Analyst, manage("0001"), false),
            (Role::Analyst, Permission::ReadUserData, true),
            (Role::Analyst, Permission::ReviewCases, true),
            (Role::Support, Permission::ManageOperators, false),
            (Role::Support, manage("0001"), false),
            (Role::Support, Permission::ReadUserData, true),
            (Role::Support, Permission::ReviewCases, false),
            (bank("0001"), Permission::ManageOperators, false),
            (bank("0001"), manage("0001"), true),
            (bank("0001"), manage("0002"), false),
            (bank("0001"), manage("001"), false),
            (bank("0001"), Permission::ReadUserData, false),
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
