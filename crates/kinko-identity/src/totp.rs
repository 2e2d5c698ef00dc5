//! The TOTP second factor (RFC 6238) and its recovery codes.
//!
//! Parameters are the ones every authenticator app supports: HMAC-SHA-1, 6 digits, 30-second
//! steps, a 160-bit random secret, issuer "Kinko" and the user's e-mail address as the account
//! name. The secret is stored sealed by [`SecretBox`], bound to the user's row.
//!
//! Life of the factor: [`begin_enrolment`] makes a secret (the app scans its `otpauth://` URL);
//! [`confirm_enrolment`] takes the first valid code, which proves the app holds the secret, and
//! only then does the factor count ([`has_confirmed_totp`]) and are the ten recovery codes
//! issued. A confirmed factor is replaced only by [`remove_totp`] then a new enrolment; the
//! service guards removal with a fresh second factor.
//!
//! A code is accepted for the current step and one step either side (clock skew), and never for
//! a step at or before the last one accepted: a code cannot be used twice, even within its
//! window (RFC 6238 §5.2). The row is locked while checking so two concurrent requests with
//! the same code cannot both pass.
//!
//! Recovery codes are ten characters from a 32-letter alphabet without look-alikes (50 bits
//! each), shown once, stored as salted SHA-256 hashes, and each works once.
//!
//! Guess limits are not counted here: a wrong code returns an error, and the caller's rate
//! limiting (`ratelimit`) counts failures per user and per source and locks out as THREATS.md
//! 19–20 require. Callers must count the failure outside the transaction that this error rolls
//! back.

use kinko_core::{ErrorCode, ErrorKind};
use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use zeroize::Zeroizing;

use crate::secrets::{SecretBox, SecretError, fill_random};

pub const TOTP_ISSUER: &str = "Kinko";
pub const TOTP_DIGITS: u8 = 6;
pub const TOTP_STEP_S: u64 = 30;
/// Steps accepted either side of the current one.
pub const TOTP_SKEW_STEPS: u64 = 1;
/// 160 bits, as RFC 4226 recommends.
pub const TOTP_SECRET_BYTES: usize = 20;
pub const RECOVERY_CODE_COUNT: usize = 10;
pub const RECOVERY_CODE_CHARS: usize = 10;
/// No 0/O, 1/I: 32 letters, so each character carries 5 bits and a code 50.
const RECOVERY_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const RECOVERY_HASH_DOMAIN: &[u8] = b"kinko recovery code v1";
const _: () = assert!(
    RECOVERY_CODE_CHARS * 5 >= 50,
    "a recovery code carries ≥ 50 bits"
);

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("the code is not valid")]
    Invalid,
    #[error("this code was already used; wait for the next one")]
    Replayed,
    #[error("no confirmed authenticator app")]
    NotEnrolled,
    #[error("an authenticator app is already set up; remove it first")]
    AlreadyEnrolled,
    #[error("the recovery code is not valid")]
    RecoveryCodeInvalid,
    #[error("the account name cannot be used in an authenticator app")]
    AccountNameInvalid,
    #[error("the clock is before 1970")]
    ClockInvalid,
    /// Our own constants refused by the TOTP library: a bug.
    #[error("TOTP parameters refused: {0}")]
    Parameters(String),
    #[error("the operating system's random generator failed")]
    Random,
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for TotpError {
    fn code(&self) -> &'static str {
        match self {
            TotpError::Invalid => "TOTP_INVALID",
            TotpError::Replayed => "TOTP_REPLAYED",
            TotpError::NotEnrolled => "TOTP_NOT_ENROLLED",
            TotpError::AlreadyEnrolled => "TOTP_ALREADY_ENROLLED",
            TotpError::RecoveryCodeInvalid => "RECOVERY_CODE_INVALID",
            TotpError::AccountNameInvalid => "TOTP_ACCOUNT_NAME_INVALID",
            TotpError::ClockInvalid => "TOTP_CLOCK_INVALID",
            TotpError::Parameters(_) => "TOTP_PARAMETERS_REFUSED",
            TotpError::Random => "TOTP_RANDOM_FAILED",
            TotpError::Secret(error) => error.code(),
            TotpError::Store(_) => "TOTP_STORAGE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            TotpError::Invalid
            | TotpError::Replayed
            | TotpError::RecoveryCodeInvalid
            | TotpError::AccountNameInvalid => ErrorKind::InvalidInput,
            TotpError::NotEnrolled => ErrorKind::NotFound,
            TotpError::AlreadyEnrolled => ErrorKind::Conflict,
            TotpError::ClockInvalid
            | TotpError::Parameters(_)
            | TotpError::Random
            | TotpError::Store(_) => ErrorKind::Internal,
            TotpError::Secret(error) => error.kind(),
        }
    }
}

/// What the user needs to add Kinko to an authenticator app: the URL for a QR code and the
/// secret for typing in by hand. Both are secrets: show them once, never log them.
#[derive(Debug)]
pub struct Enrolment {
    pub otpauth_url: SecretString,
    pub secret_base32: SecretString,
}

/// The recovery codes of a fresh set, in the form to show the user once (`ABCDE-FGHJK`).
#[derive(Debug)]
pub struct RecoveryCodes {
    codes: Vec<SecretString>,
}

impl RecoveryCodes {
    pub fn codes(&self) -> &[SecretString] {
        &self.codes
    }
}

/// A fresh random secret for a TOTP factor (also used for operators' factors).
pub fn generate_secret() -> Result<Zeroizing<Vec<u8>>, TotpError> {
    let mut secret = Zeroizing::new(vec![0u8; TOTP_SECRET_BYTES]);
    fill_random(secret.as_mut_slice()).map_err(|_| TotpError::Random)?;
    Ok(secret)
}

fn authenticator(secret: &[u8], account_name: &str) -> Result<Totp, TotpError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(TOTP_DIGITS)
        .with_step_duration(TOTP_STEP_S)
        .with_secret(secret.to_vec())
        .with_issuer(Some(TOTP_ISSUER))
        .with_account_name(account_name)
        .build()
        .map_err(|error| match error {
            totp_rs::TotpError::InvalidAccountName { .. } => TotpError::AccountNameInvalid,
            // Our own constants and a 20-byte secret: only a bug gets here.
            _ => TotpError::Parameters(error.to_string()),
        })
}

/// The `otpauth://totp/Kinko:<account>?secret=…&issuer=Kinko` URL for a QR code.
pub fn otpauth_url(secret: &[u8], account_name: &str) -> Result<SecretString, TotpError> {
    if account_name.is_empty() {
        return Err(TotpError::AccountNameInvalid);
    }
    authenticator(secret, account_name)?
        .to_url()
        .map(SecretString::from)
        .map_err(|_| TotpError::AccountNameInvalid)
}

/// Checks `code` against `secret` at `now_ms`, accepting the current step ± [`TOTP_SKEW_STEPS`]
/// but only steps after `last_step`. Returns the accepted step, which the caller stores as the
/// new `last_step` in the same transaction.
pub fn check_code(
    secret: &[u8],
    now_ms: i64,
    code: &str,
    last_step: i64,
) -> Result<i64, TotpError> {
    let now_s = u64::try_from(now_ms).map_err(|_| TotpError::ClockInvalid)? / 1_000;
    let code: String = code
        .chars()
        .filter(|character| !character.is_whitespace())
        .collect();
    if code.len() != usize::from(TOTP_DIGITS) || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(TotpError::Invalid);
    }
    // The account name plays no part in the codes.
    let totp = authenticator(secret, "")?;
    let step_now = now_s / TOTP_STEP_S;
    let mut matched = false;
    let mut accepted: Option<i64> = None;
    // Every candidate is computed and compared, in constant time, whatever matched before.
    for step in step_now.saturating_sub(TOTP_SKEW_STEPS)..=step_now.saturating_add(TOTP_SKEW_STEPS)
    {
        let expected = totp.generate(step.saturating_mul(TOTP_STEP_S)).to_string();
        let step = i64::try_from(step).map_err(|_| TotpError::ClockInvalid)?;
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = true;
            if step > last_step {
                accepted = Some(accepted.map_or(step, |best| best.max(step)));
            }
        }
    }
    match (accepted, matched) {
        (Some(step), _) => Ok(step),
        (None, true) => Err(TotpError::Replayed),
        (None, false) => Err(TotpError::Invalid),
    }
}

/// The associated data that binds a sealed TOTP secret to its user's row.
fn associated_data(user_id: u128) -> Vec<u8> {
    format!(
        "identity_totp.secret_encrypted:{}",
        uuid::Uuid::from_u128(user_id).hyphenated()
    )
    .into_bytes()
}

/// Starts (or restarts) setting up an authenticator app for `user_id`. An unconfirmed earlier
/// attempt is replaced; a confirmed factor is not (`TOTP_ALREADY_ENROLLED`).
pub fn begin_enrolment(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    account_name: &str,
    secret_box: &SecretBox,
) -> Result<Enrolment, TotpError> {
    let secret = generate_secret()?;
    let otpauth_url = otpauth_url(&secret, account_name)?;
    let secret_base32 = SecretString::from(Secret::from(secret.to_vec()).to_base32());
    let sealed = secret_box.seal(&secret, &associated_data(user_id))?;
    // One statement, so two concurrent attempts cannot both insert; the WHERE leaves a
    // confirmed factor untouched.
    let changed = tx.execute(
        "INSERT INTO identity_totp (user_id, secret_encrypted, confirmed_at, last_step, created_at)
         VALUES ($1, $2, NULL, 0, $3)
         ON CONFLICT (user_id) DO UPDATE
            SET secret_encrypted = excluded.secret_encrypted, last_step = 0,
                created_at = excluded.created_at
            WHERE identity_totp.confirmed_at IS NULL",
        &[Value::Uuid(user_id), sealed.into(), Value::Int(now_ms)],
    )?;
    if changed == 0 {
        return Err(TotpError::AlreadyEnrolled);
    }
    Ok(Enrolment {
        otpauth_url,
        secret_base32,
    })
}

struct TotpRow {
    secret: Zeroizing<Vec<u8>>,
    confirmed: bool,
    last_step: i64,
}

/// Reads and locks the user's TOTP row and opens its secret.
fn load_locked(
    tx: &mut dyn Tx,
    user_id: u128,
    secret_box: &SecretBox,
) -> Result<Option<TotpRow>, TotpError> {
    let sql = format!(
        "SELECT secret_encrypted, confirmed_at, last_step FROM identity_totp WHERE user_id = $1{}",
        tx.for_update()
    );
    let Some(row) = tx.query_opt(&sql, &[Value::Uuid(user_id)])? else {
        return Ok(None);
    };
    let secret = secret_box.open(&row.bytes(0)?, &associated_data(user_id))?;
    Ok(Some(TotpRow {
        secret,
        confirmed: row.opt_int(1)?.is_some(),
        last_step: row.int(2)?,
    }))
}

/// Confirms the enrolment with the first code from the app and issues the recovery codes.
pub fn confirm_enrolment(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    code: &str,
    secret_box: &SecretBox,
) -> Result<RecoveryCodes, TotpError> {
    let row = load_locked(tx, user_id, secret_box)?.ok_or(TotpError::NotEnrolled)?;
    if row.confirmed {
        return Err(TotpError::AlreadyEnrolled);
    }
    let step = check_code(&row.secret, now_ms, code, row.last_step)?;
    tx.execute(
        "UPDATE identity_totp SET confirmed_at = $2, last_step = $3 WHERE user_id = $1",
        &[Value::Uuid(user_id), Value::Int(now_ms), Value::Int(step)],
    )?;
    replace_recovery_codes(tx, now_ms, user_id)
}

/// Checks a code from the user's confirmed authenticator app; the code is used up.
pub fn verify(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    code: &str,
    secret_box: &SecretBox,
) -> Result<(), TotpError> {
    let row = load_locked(tx, user_id, secret_box)?
        .filter(|row| row.confirmed)
        .ok_or(TotpError::NotEnrolled)?;
    let step = check_code(&row.secret, now_ms, code, row.last_step)?;
    tx.execute(
        "UPDATE identity_totp SET last_step = $2 WHERE user_id = $1",
        &[Value::Uuid(user_id), Value::Int(step)],
    )?;
    Ok(())
}

/// Whether the user has a confirmed authenticator app (an unconfirmed one is not a factor).
pub fn has_confirmed_totp(tx: &mut dyn Tx, user_id: u128) -> Result<bool, TotpError> {
    let row = tx.query_opt(
        "SELECT 1 FROM identity_totp WHERE user_id = $1 AND confirmed_at IS NOT NULL",
        &[Value::Uuid(user_id)],
    )?;
    Ok(row.is_some())
}

/// Removes the user's authenticator app and recovery codes. The service calls this only after
/// a fresh second factor, and notifies the user.
pub fn remove_totp(tx: &mut dyn Tx, user_id: u128) -> Result<(), TotpError> {
    tx.execute(
        "DELETE FROM identity_recovery_codes WHERE user_id = $1",
        &[Value::Uuid(user_id)],
    )?;
    let removed = tx.execute(
        "DELETE FROM identity_totp WHERE user_id = $1",
        &[Value::Uuid(user_id)],
    )?;
    if removed == 0 {
        return Err(TotpError::NotEnrolled);
    }
    Ok(())
}

/// Replaces the user's recovery codes with a fresh set (the old ones stop working). Needs a
/// confirmed authenticator app; the service guards it with a fresh second factor.
pub fn regenerate_recovery_codes(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
) -> Result<RecoveryCodes, TotpError> {
    if !has_confirmed_totp(tx, user_id)? {
        return Err(TotpError::NotEnrolled);
    }
    replace_recovery_codes(tx, now_ms, user_id)
}

fn replace_recovery_codes(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
) -> Result<RecoveryCodes, TotpError> {
    tx.execute(
        "DELETE FROM identity_recovery_codes WHERE user_id = $1",
        &[Value::Uuid(user_id)],
    )?;
    let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
    for _ in 0..RECOVERY_CODE_COUNT {
        let code = new_recovery_code()?;
        tx.execute(
            "INSERT INTO identity_recovery_codes (id, user_id, code_hash, created_at)
             VALUES ($1, $2, $3, $4)",
            &[
                Value::Uuid(uuid::Uuid::now_v7().as_u128()),
                Value::Uuid(user_id),
                recovery_hash(user_id, code.as_bytes()).to_vec().into(),
                Value::Int(now_ms),
            ],
        )?;
        let (first, second) = code.split_at(RECOVERY_CODE_CHARS / 2);
        codes.push(SecretString::from(format!("{first}-{second}")));
    }
    Ok(RecoveryCodes { codes })
}

/// Ten characters, uniformly from the alphabet (32 divides 256, so masking is unbiased).
fn new_recovery_code() -> Result<Zeroizing<String>, TotpError> {
    let mut bytes = Zeroizing::new([0u8; RECOVERY_CODE_CHARS]);
    fill_random(bytes.as_mut_slice()).map_err(|_| TotpError::Random)?;
    let mut code = Zeroizing::new(String::with_capacity(RECOVERY_CODE_CHARS));
    for byte in bytes.iter() {
        code.push(char::from(RECOVERY_ALPHABET[usize::from(byte & 0x1f)]));
    }
    Ok(code)
}

/// Salted with the user id so one guess tests one user's codes, not everyone's.
fn recovery_hash(user_id: u128, normalised: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(RECOVERY_HASH_DOMAIN);
    hasher.update(user_id.to_be_bytes());
    hasher.update(normalised);
    hasher.finalize().into()
}

/// Upper case without dashes or spaces, if it can be a recovery code at all.
fn normalise_recovery_code(code: &str) -> Option<Zeroizing<String>> {
    let normalised: Zeroizing<String> = Zeroizing::new(
        code.chars()
            .filter(|character| *character != '-' && !character.is_whitespace())
            .map(|character| character.to_ascii_uppercase())
            .collect(),
    );
    let valid = normalised.len() == RECOVERY_CODE_CHARS
        && normalised
            .bytes()
            .all(|byte| RECOVERY_ALPHABET.contains(&byte));
    valid.then_some(normalised)
}

/// Uses up one of the user's recovery codes.
pub fn redeem_recovery_code(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    code: &str,
) -> Result<(), TotpError> {
    let normalised = normalise_recovery_code(code).ok_or(TotpError::RecoveryCodeInvalid)?;
    let presented = recovery_hash(user_id, normalised.as_bytes());
    let sql = format!(
        "SELECT id, code_hash FROM identity_recovery_codes
         WHERE user_id = $1 AND used_at IS NULL{}",
        tx.for_update()
    );
    let rows = tx.query(&sql, &[Value::Uuid(user_id)])?;
    let mut matched: Option<u128> = None;
    for row in &rows {
        if bool::from(row.bytes(1)?.as_slice().ct_eq(&presented)) {
            matched = Some(row.uuid(0)?);
        }
    }
    let id = matched.ok_or(TotpError::RecoveryCodeInvalid)?;
    let changed = tx.execute(
        "UPDATE identity_recovery_codes SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
        &[Value::Uuid(id), Value::Int(now_ms)],
    )?;
    if changed != 1 {
        return Err(TotpError::RecoveryCodeInvalid);
    }
    Ok(())
}

/// How many unused recovery codes the user has (to warn when they run low).
pub fn recovery_codes_left(tx: &mut dyn Tx, user_id: u128) -> Result<i64, TotpError> {
    let row = tx.query_one(
        "SELECT COUNT(*) FROM identity_recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        &[Value::Uuid(user_id)],
    )?;
    Ok(row.int(0)?)
}

#[cfg(test)]
mod tests {
    use kinko_store::sql::Database;
    use secrecy::ExposeSecret;

    use super::*;
    use crate::session::testing::{database, insert_user};

    const T0_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a step boundary
    const STEP_MS: i64 = 30_000;
    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn secret_box() -> SecretBox {
        SecretBox::from_key_hex(KEY_HEX).unwrap_or_else(|error| panic!("{error}"))
    }

    fn ok<T>(result: Result<T, TotpError>) -> T {
        result.unwrap_or_else(|error| panic!("{}: {error}", error.code()))
    }

    fn code<T: std::fmt::Debug>(result: Result<T, TotpError>) -> &'static str {
        match result {
            Ok(value) => panic!("expected an error, got {value:?}"),
            Err(error) => error.code(),
        }
    }

    /// The code an authenticator app shows at `at_ms`, computed independently of `check_code`.
    fn app_code(secret_base32: &SecretString, at_ms: i64) -> String {
        let secret = Secret::try_from_base32(secret_base32.expose_secret())
            .unwrap_or_else(|error| panic!("{error:?}"));
        let totp = Builder::new()
            .with_secret(secret)
            .build()
            .unwrap_or_else(|error| panic!("{error}"));
        totp.generate(u64::try_from(at_ms / 1_000).unwrap_or_else(|error| panic!("{error}")))
            .to_string()
    }

    fn enrolled(database: &Database, user_id: u128) -> (Enrolment, RecoveryCodes) {
        let secret_box = secret_box();
        let enrolment = ok(database.transaction(|tx| {
            begin_enrolment(tx, T0_MS, user_id, "alice@example.com", &secret_box)
        }));
        let first = app_code(&enrolment.secret_base32, T0_MS);
        let codes =
            ok(database
                .transaction(|tx| confirm_enrolment(tx, T0_MS, user_id, &first, &secret_box)));
        (enrolment, codes)
    }

    #[test]
    fn codes_match_the_rfc_6238_sha1_vectors() {
        // RFC 6238 appendix B, SHA-1, seed "12345678901234567890": the last six digits of the
        // eight-digit values.
        let secret = b"12345678901234567890";
        for (time_s, expected) in [
            (59_i64, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let step = ok(check_code(secret, time_s * 1_000, expected, 0));
            assert_eq!(step, time_s / 30);
        }
        assert_eq!(
            code(check_code(secret, 59_000, "287083", 0)),
            "TOTP_INVALID"
        );
        assert_eq!(code(check_code(secret, 59_000, "28708", 0)), "TOTP_INVALID");
        assert_eq!(
            code(check_code(secret, 59_000, "+87082", 0)),
            "TOTP_INVALID"
        );
        ok(check_code(secret, 59_000, " 287 082 ", 0));
        assert_eq!(
            code(check_code(secret, -1, "287082", 0)),
            "TOTP_CLOCK_INVALID"
        );
    }

    #[test]
    fn recovery_codes_carry_at_least_fifty_bits() {
        let distinct: std::collections::BTreeSet<u8> = RECOVERY_ALPHABET.iter().copied().collect();
        assert_eq!(distinct.len(), 32);
        for look_alike in [b'0', b'O', b'1', b'I'] {
            assert!(!RECOVERY_ALPHABET.contains(&look_alike));
        }
        assert_eq!(
            normalise_recovery_code(" abcde-fghjk ")
                .as_deref()
                .map(String::as_str),
            Some("ABCDEFGHJK")
        );
        assert!(normalise_recovery_code("ABCDE-FGHJ0").is_none());
        assert!(normalise_recovery_code("ABCDE-FGHJKL").is_none());
    }

    macro_rules! both {
        ($($name:ident),+ $(,)?) => {
            mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
            mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
        };
    }

    both!(
        enrol_confirm_and_verify,
        a_code_is_never_accepted_twice,
        only_the_current_step_and_one_either_side_are_accepted,
        recovery_codes_are_ten_and_single_use,
        an_unconfirmed_enrolment_is_not_a_factor,
        a_sealed_secret_moved_to_another_user_does_not_open,
    );

    fn enrol_confirm_and_verify(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let secret_box = secret_box();
        let enrolment = ok(database.transaction(|tx| {
            begin_enrolment(tx, T0_MS, user_id, "alice@example.com", &secret_box)
        }));
        let url = enrolment.otpauth_url.expose_secret();
        assert!(
            url.starts_with("otpauth://totp/Kinko:alice%40example.com?secret="),
            "{url}"
        );
        assert!(url.contains("issuer=Kinko"));
        assert!(url.contains(enrolment.secret_base32.expose_secret()));
        // An app configured from the URL produces the codes we accept.
        let app = Totp::from_url(url).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(app.secret().as_bytes().len(), TOTP_SECRET_BYTES);

        // The secret is stored sealed, not in clear.
        let stored = ok(database.transaction(|tx| {
            Ok(tx
                .query_one("SELECT secret_encrypted FROM identity_totp", &[])?
                .bytes(0)?)
        }));
        let raw = app.secret().as_bytes().to_vec();
        assert!(
            !stored
                .windows(raw.len())
                .any(|window| window == raw.as_slice())
        );

        let first = app
            .generate(u64::try_from(T0_MS / 1_000).unwrap_or_default())
            .to_string();
        assert_eq!(first, app_code(&enrolment.secret_base32, T0_MS));
        let codes = ok(database
            .transaction(|tx| confirm_enrolment(tx, T0_MS + 5_000, user_id, &first, &secret_box)));
        assert_eq!(codes.codes().len(), RECOVERY_CODE_COUNT);
        assert!(ok(
            database.transaction(|tx| has_confirmed_totp(tx, user_id))
        ));

        let later_ms = T0_MS + 10 * STEP_MS;
        let later = app_code(&enrolment.secret_base32, later_ms);
        ok(database.transaction(|tx| verify(tx, later_ms, user_id, &later, &secret_box)));
        let wrong = if later == "000000" {
            "000001"
        } else {
            "000000"
        };
        assert_eq!(
            code(database.transaction(|tx| verify(
                tx,
                later_ms + STEP_MS,
                user_id,
                wrong,
                &secret_box
            ))),
            "TOTP_INVALID"
        );

        // A second enrolment over a confirmed one is refused until the factor is removed.
        assert_eq!(
            code(database.transaction(|tx| begin_enrolment(
                tx,
                later_ms,
                user_id,
                "alice@example.com",
                &secret_box
            ))),
            "TOTP_ALREADY_ENROLLED"
        );
        ok(database.transaction(|tx| remove_totp(tx, user_id)));
        assert!(!ok(
            database.transaction(|tx| has_confirmed_totp(tx, user_id))
        ));
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, user_id))),
            0
        );
        ok(database.transaction(|tx| {
            begin_enrolment(tx, later_ms, user_id, "alice@example.com", &secret_box)
        }));
    }

    fn a_code_is_never_accepted_twice(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let secret_box = secret_box();
        let (enrolment, _codes) = enrolled(&database, user_id);
        // The confirming code itself cannot be replayed.
        let first = app_code(&enrolment.secret_base32, T0_MS);
        assert_eq!(
            code(database.transaction(|tx| verify(
                tx,
                T0_MS + 1_000,
                user_id,
                &first,
                &secret_box
            ))),
            "TOTP_REPLAYED"
        );

        let now_ms = T0_MS + 4 * STEP_MS;
        let current = app_code(&enrolment.secret_base32, now_ms);
        ok(database.transaction(|tx| verify(tx, now_ms, user_id, &current, &secret_box)));
        assert_eq!(
            code(database.transaction(|tx| verify(
                tx,
                now_ms + 1_000,
                user_id,
                &current,
                &secret_box
            ))),
            "TOTP_REPLAYED",
            "the same code again within its window"
        );
        // The previous step's code is inside the skew window but before the last accepted step.
        let previous = app_code(&enrolment.secret_base32, now_ms - STEP_MS);
        if previous != current {
            assert_eq!(
                code(database.transaction(|tx| verify(
                    tx,
                    now_ms,
                    user_id,
                    &previous,
                    &secret_box
                ))),
                "TOTP_REPLAYED"
            );
        }
        // The next step's code still works once.
        let next_ms = now_ms + STEP_MS;
        let next = app_code(&enrolment.secret_base32, next_ms);
        ok(database.transaction(|tx| verify(tx, next_ms, user_id, &next, &secret_box)));
    }

    fn only_the_current_step_and_one_either_side_are_accepted(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let secret_box = secret_box();
        let (enrolment, _codes) = enrolled(&database, user_id);
        let now_ms = T0_MS + 100 * STEP_MS;
        let verify_at = |at_ms: i64| {
            let presented = app_code(&enrolment.secret_base32, at_ms);
            database.transaction(|tx| verify(tx, now_ms, user_id, &presented, &secret_box))
        };
        // Two steps late, two steps early: refused (checked unless the random secret makes the
        // code equal one in the window, a one-in-a-million coincidence).
        let stale = app_code(&enrolment.secret_base32, now_ms - 2 * STEP_MS);
        let window: Vec<String> = (-1..=1)
            .map(|offset| app_code(&enrolment.secret_base32, now_ms + offset * STEP_MS))
            .collect();
        if !window.contains(&stale) {
            assert_eq!(code(verify_at(now_ms - 2 * STEP_MS)), "TOTP_INVALID");
        }
        let early = app_code(&enrolment.secret_base32, now_ms + 2 * STEP_MS);
        if !window.contains(&early) {
            assert_eq!(code(verify_at(now_ms + 2 * STEP_MS)), "TOTP_INVALID");
        }
        // One step late is accepted (a slow phone); then the current step (later) still is.
        ok(verify_at(now_ms - STEP_MS));
        ok(verify_at(now_ms));
        ok(verify_at(now_ms + STEP_MS));
        let last_step = ok(database.transaction(|tx| {
            Ok(tx
                .query_one("SELECT last_step FROM identity_totp", &[])?
                .int(0)?)
        }));
        assert_eq!(last_step, (now_ms + STEP_MS) / STEP_MS);
    }

    fn recovery_codes_are_ten_and_single_use(backend: &str) {
        let (database, _dir) = database(backend);
        let alice = insert_user(&database, T0_MS, "alice@example.com");
        let bob = insert_user(&database, T0_MS, "bob@example.com");
        let (_enrolment, codes) = enrolled(&database, alice);
        let (_bob_enrolment, bob_codes) = enrolled(&database, bob);
        let shown: Vec<String> = codes
            .codes()
            .iter()
            .map(|code| code.expose_secret().to_owned())
            .collect();
        assert_eq!(shown.len(), 10);
        let distinct: std::collections::BTreeSet<&String> = shown.iter().collect();
        assert_eq!(distinct.len(), 10);
        for code in &shown {
            assert_eq!(code.len(), 11, "{code}");
            assert_eq!(&code[5..6], "-");
            assert!(normalise_recovery_code(code).is_some(), "{code}");
        }
        // Only hashes are stored.
        let stored = ok(database
            .transaction(|tx| Ok(tx.query("SELECT code_hash FROM identity_recovery_codes", &[])?)));
        assert_eq!(stored.len(), 20);
        for row in &stored {
            let hash = row.bytes(0).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(hash.len(), 32);
            for code in &shown {
                let plain = code.replace('-', "");
                assert!(!hash.windows(10).any(|window| window == plain.as_bytes()));
            }
        }
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, alice))),
            10
        );

        // Bob's code does not work for Alice.
        let bobs = bob_codes.codes()[0].expose_secret().to_owned();
        assert_eq!(
            code(database.transaction(|tx| redeem_recovery_code(tx, T0_MS, alice, &bobs))),
            "RECOVERY_CODE_INVALID"
        );
        // Typed in lower case with spaces instead of the dash: accepted once, then never.
        let typed = shown[3].to_lowercase().replace('-', " ");
        ok(database.transaction(|tx| redeem_recovery_code(tx, T0_MS + 1, alice, &typed)));
        assert_eq!(
            code(database.transaction(|tx| redeem_recovery_code(tx, T0_MS + 2, alice, &shown[3]))),
            "RECOVERY_CODE_INVALID"
        );
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, alice))),
            9
        );
        for (index, code) in shown.iter().enumerate() {
            if index != 3 {
                ok(database.transaction(|tx| redeem_recovery_code(tx, T0_MS + 3, alice, code)));
            }
        }
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, alice))),
            0
        );
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, bob))),
            10
        );

        // A new set replaces the old one entirely.
        let fresh = ok(database.transaction(|tx| regenerate_recovery_codes(tx, T0_MS + 4, bob)));
        assert_eq!(
            code(database.transaction(|tx| redeem_recovery_code(tx, T0_MS + 5, bob, &bobs))),
            "RECOVERY_CODE_INVALID"
        );
        let new_code = fresh.codes()[0].expose_secret().to_owned();
        ok(database.transaction(|tx| redeem_recovery_code(tx, T0_MS + 5, bob, &new_code)));
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, bob))),
            9
        );
    }

    fn an_unconfirmed_enrolment_is_not_a_factor(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let secret_box = secret_box();
        let abandoned = ok(database.transaction(|tx| {
            begin_enrolment(tx, T0_MS, user_id, "alice@example.com", &secret_box)
        }));
        assert!(!ok(
            database.transaction(|tx| has_confirmed_totp(tx, user_id))
        ));
        let current = app_code(&abandoned.secret_base32, T0_MS);
        assert_eq!(
            code(database.transaction(|tx| verify(tx, T0_MS, user_id, &current, &secret_box))),
            "TOTP_NOT_ENROLLED"
        );
        assert_eq!(
            code(database.transaction(|tx| regenerate_recovery_codes(tx, T0_MS, user_id))),
            "TOTP_NOT_ENROLLED"
        );
        assert_eq!(
            ok(database.transaction(|tx| recovery_codes_left(tx, user_id))),
            0
        );

        // Starting again replaces the secret: the abandoned one no longer confirms.
        let retry = ok(database.transaction(|tx| {
            begin_enrolment(tx, T0_MS, user_id, "alice@example.com", &secret_box)
        }));
        assert_ne!(
            retry.secret_base32.expose_secret(),
            abandoned.secret_base32.expose_secret()
        );
        let rows = ok(database.transaction(|tx| {
            Ok(tx
                .query_one("SELECT COUNT(*) FROM identity_totp", &[])?
                .int(0)?)
        }));
        assert_eq!(rows, 1);
        let retry_code = app_code(&retry.secret_base32, T0_MS);
        if current != retry_code {
            assert_eq!(
                code(database.transaction(|tx| confirm_enrolment(
                    tx,
                    T0_MS,
                    user_id,
                    &current,
                    &secret_box
                ))),
                "TOTP_INVALID"
            );
        }
        ok(database
            .transaction(|tx| confirm_enrolment(tx, T0_MS, user_id, &retry_code, &secret_box)));
        assert!(ok(
            database.transaction(|tx| has_confirmed_totp(tx, user_id))
        ));
        let next = app_code(&retry.secret_base32, T0_MS + STEP_MS);
        assert_eq!(
            code(database.transaction(|tx| confirm_enrolment(
                tx,
                T0_MS + STEP_MS,
                user_id,
                &next,
                &secret_box
            ))),
            "TOTP_ALREADY_ENROLLED"
        );
        // Without any enrolment at all.
        let stranger = insert_user(&database, T0_MS, "stranger@example.com");
        assert_eq!(
            code(database.transaction(|tx| confirm_enrolment(
                tx,
                T0_MS,
                stranger,
                "123456",
                &secret_box
            ))),
            "TOTP_NOT_ENROLLED"
        );
        assert_eq!(
            code(database.transaction(|tx| remove_totp(tx, stranger))),
            "TOTP_NOT_ENROLLED"
        );
    }

    fn a_sealed_secret_moved_to_another_user_does_not_open(backend: &str) {
        let (database, _dir) = database(backend);
        let alice = insert_user(&database, T0_MS, "alice@example.com");
        let mallory = insert_user(&database, T0_MS, "mallory@example.com");
        let secret_box = secret_box();
        let (alice_enrolment, _codes) = enrolled(&database, alice);
        let _mallorys = enrolled(&database, mallory);
        // Mallory, with write access to the table, copies Alice's sealed secret into her row
        // hoping to verify with codes from a copy of Alice's app (or the reverse).
        ok(database.transaction(|tx| {
            let sealed = tx
                .query_one(
                    "SELECT secret_encrypted FROM identity_totp WHERE user_id = $1",
                    &[Value::Uuid(alice)],
                )?
                .bytes(0)?;
            tx.execute(
                "UPDATE identity_totp SET secret_encrypted = $2 WHERE user_id = $1",
                &[Value::Uuid(mallory), sealed.into()],
            )?;
            Ok(())
        }));
        let later_ms = T0_MS + 10 * STEP_MS;
        let alices_code = app_code(&alice_enrolment.secret_base32, later_ms);
        assert_eq!(
            code(database.transaction(|tx| verify(
                tx,
                later_ms,
                mallory,
                &alices_code,
                &secret_box
            ))),
            "SECRET_OPEN_FAILED"
        );
        ok(database.transaction(|tx| verify(tx, later_ms, alice, &alices_code, &secret_box)));
    }
}
