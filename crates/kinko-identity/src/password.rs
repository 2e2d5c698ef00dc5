//! Passwords: argon2id hashing, equal-time checks for unknown users, and the rules a new
//! password must meet (NIST SP 800-63B: a length range, any printable Unicode, refusal of
//! common and breached passwords and of the user's own e-mail address).
//!
//! Every password is normalised to Unicode NFKC before it is counted, compared or hashed, as
//! NIST SP 800-63B recommends: a Japanese IME may type the same password in full-width
//! (`ｐａｓｓ`) on one device and half-width (`pass`) on another, and both must work.
//!
//! Hashing costs about 14 ms of CPU on purpose: callers on an async runtime run it in
//! `spawn_blocking`, and never on a money path.

use std::collections::HashSet;
use std::io::Read;
use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use kinko_core::{ErrorCode, ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

/// NIST SP 800-63B asks for at least 8; we take 12, the length that keeps an offline guess of
/// a random lowercase password out of reach even if a hash leaked.
pub const PASSWORD_LENGTH_MIN_CHARS: usize = 12;
/// NIST asks to allow at least 64; 128 leaves room for long passphrases.
pub const PASSWORD_LENGTH_MAX_CHARS: usize = 128;
/// A candidate longer than this at login cannot be anyone's password (NFKC never triples a
/// string of 128 characters); it is refused before hashing so it costs us nothing.
const CANDIDATE_LENGTH_MAX_CHARS: usize = 1_024;
/// The gunzipped list is about 170 kB; the bound stops a corrupt blob from eating memory.
const COMMON_LIST_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Django's list of 20,000 common passwords (BSD-3-Clause; see
/// `data/COMMON-PASSWORDS-LICENSE.txt`), lowercased, one a line, gzipped.
static COMMON_PASSWORDS_GZ: &[u8] = include_bytes!("../data/common-passwords.txt.gz");

/// Decompressed once, on first use.
static COMMON_PASSWORDS: LazyLock<Result<HashSet<String>, String>> =
    LazyLock::new(|| load_common_passwords(COMMON_PASSWORDS_GZ));

/// A well-formed argon2id hash with the same parameters as real hashes but a random output
/// that no known password produces: checking a login for an unknown user against it costs the
/// same time as for a known user. (`verify_unknown_user` answers `false` even on a match.)
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$mW0mLGcv+uqcBp5uoYE/Ew$sfbB8FH9hnLn6hCyqtudH0MtRw5ZPMWXp+jMLwfbDwU";

/// Hashing failed; neither case is the user's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the operating system's random number generator failed")]
    Randomness,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("the common-password list could not be loaded: {0}")]
    CommonListUnavailable(String),
}

impl ErrorCode for PasswordError {
    fn code(&self) -> &'static str {
        match self {
            PasswordError::Randomness => "PASSWORD_RANDOMNESS_FAILED",
            PasswordError::Hashing(_) => "PASSWORD_HASHING_FAILED",
            PasswordError::CommonListUnavailable(_) => "PASSWORD_LIST_UNAVAILABLE",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// A new password that breaks a rule; the user is told which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRule {
    #[error("the password must have at least {PASSWORD_LENGTH_MIN_CHARS} characters")]
    TooShort,
    #[error("the password must have at most {PASSWORD_LENGTH_MAX_CHARS} characters")]
    TooLong,
    #[error("the password is too common: it appears in lists attackers try first")]
    TooCommon,
    #[error("the password must not be your e-mail address")]
    EqualsEmail,
}

impl ErrorCode for PasswordRule {
    fn code(&self) -> &'static str {
        match self {
            PasswordRule::TooShort => "PASSWORD_TOO_SHORT",
            PasswordRule::TooLong => "PASSWORD_TOO_LONG",
            PasswordRule::TooCommon => "PASSWORD_TOO_COMMON",
            PasswordRule::EqualsEmail => "PASSWORD_EQUALS_EMAIL",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

/// The one place the argon2 parameters are chosen, for hashing and (through the PHC string
/// they are written into) for verifying.
fn hasher() -> Result<Argon2<'static>, PasswordError> {
    // Argon2id with OWASP's minimum for it (Password Storage Cheat Sheet): 19 MiB of memory,
    // 2 passes, 1 lane, 32-byte output. Memory is what makes GPU guessing expensive; 19 MiB
    // keeps a hash near 14 ms on one core here, so a login burst cannot starve the server.
    // Raising them later is safe: each stored PHC string carries its own parameters.
    let memory_kib = 19_456;
    let passes = 2;
    let lanes = 1;
    let output_bytes = 32;
    let params = Params::new(memory_kib, passes, lanes, Some(output_bytes))
        .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The NFKC form of a password, itself kept secret.
fn normalized(password: &SecretString) -> SecretString {
    SecretString::from(password.expose_secret().nfkc().collect::<String>())
}

/// Hashes a password with a fresh random salt; returns the PHC string to store.
pub fn hash_password(password: &SecretString) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    os_random(&mut salt)?;
    let normalized = normalized(password);
    let hash = hasher()?
        .hash_password_with_salt(normalized.expose_secret().as_bytes(), &salt)
        .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

fn os_random(buffer: &mut [u8]) -> Result<(), PasswordError> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(buffer)
        .map_err(|_| PasswordError::Randomness)
}

/// Whether `candidate` is the password behind `phc`. The comparison inside argon2 is
/// constant-time. A stored hash that cannot be parsed is a bug: it is logged, the dummy hash
/// is checked instead so the time stays the same, and the answer is `false`.
pub fn verify_password(phc: &str, candidate: &SecretString) -> bool {
    match verify_against(phc, candidate) {
        Ok(matched) => matched,
        Err(error) => {
            tracing::error!(code = error.code(), "stored password hash is unusable");
            verify_unknown_user(candidate)
        }
    }
}

/// Spends the time of one password check and answers `false`: the login path for an e-mail
/// address that has no account, so the answer and its timing are the same as a wrong password.
pub fn verify_unknown_user(candidate: &SecretString) -> bool {
    // The outcome is deliberately ignored: whatever the dummy's password is, it opens nothing.
    // `black_box` keeps the compiler from dropping the work whose time is the point.
    std::hint::black_box(verify_against(DUMMY_PHC, candidate).is_ok_and(|matched| matched));
    false
}

fn verify_against(phc: &str, candidate: &SecretString) -> Result<bool, PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|error| PasswordError::Hashing(error.to_string()))?;
    if candidate.expose_secret().chars().count() > CANDIDATE_LENGTH_MAX_CHARS {
        return Ok(false);
    }
    let normalized = normalized(candidate);
    match hasher()?.verify_password(normalized.expose_secret().as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(error) => Err(PasswordError::Hashing(error.to_string())),
    }
}

/// Checks a new password (sign-up, change, reset) against the rules, in the order a user can
/// act on: length first, then what it must not be.
pub fn check_new_password(password: &SecretString, email: &str) -> Result<(), PasswordRule> {
    let normalized = normalized(password);
    let length_chars = normalized.expose_secret().chars().count();
    if length_chars < PASSWORD_LENGTH_MIN_CHARS {
        return Err(PasswordRule::TooShort);
    }
    if length_chars > PASSWORD_LENGTH_MAX_CHARS {
        return Err(PasswordRule::TooLong);
    }
    let lowered = SecretString::from(normalized.expose_secret().to_lowercase());
    let lowered = lowered.expose_secret();
    let email = email.trim().nfkc().collect::<String>().to_lowercase();
    let local_part = email
        .rsplit_once('@')
        .map_or(email.as_str(), |(local, _)| local);
    if lowered == email || (!local_part.is_empty() && lowered == local_part) {
        return Err(PasswordRule::EqualsEmail);
    }
    match &*COMMON_PASSWORDS {
        Ok(common) if !common.contains(lowered) => Ok(()),
        Ok(_) => Err(PasswordRule::TooCommon),
        Err(error) => {
            // Fail closed: with the list missing nothing can be shown not to be common.
            tracing::error!(%error, "the common-password list could not be loaded");
            Err(PasswordRule::TooCommon)
        }
    }
}

/// The number of entries in the common-password list; call it at start-up so a broken build
/// refuses to start instead of refusing every new password.
pub fn common_passwords_loaded() -> Result<usize, PasswordError> {
    COMMON_PASSWORDS
        .as_ref()
        .map(HashSet::len)
        .map_err(|error| PasswordError::CommonListUnavailable(error.clone()))
}

fn load_common_passwords(gzipped: &[u8]) -> Result<HashSet<String>, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gzipped)
        .take(COMMON_LIST_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|error| format!("gunzip: {error}"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_lowercase)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text)
    }

    #[test]
    fn the_shipped_list_has_at_least_ten_thousand_entries() {
        let count = common_passwords_loaded().unwrap_or_else(|error| panic!("{error}"));
        assert!(count >= 10_000, "only {count} common passwords");
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in [
            "password123456",
            "PASSWORD123456",
            "qwertyuiop123",
            "1q2w3e4r5t6y",
            "Qwerty123456",
            "1qaz2wsx3edc",
            "123456123456",
            "password",
            "123456",
        ] {
            let refused = check_new_password(&secret(common), "someone@example.com");
            let expected = if common.chars().count() < PASSWORD_LENGTH_MIN_CHARS {
                PasswordRule::TooShort
            } else {
                PasswordRule::TooCommon
            };
            assert_eq!(refused, Err(expected), "{common}");
        }
        // Short entries are in the set too, in case the minimum length ever changes.
        let common = COMMON_PASSWORDS
            .as_ref()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(common.contains("password") && common.contains("qwerty"));
    }

    #[test]
    fn full_width_input_is_the_same_password() {
        // NFKC turns full-width ASCII into ASCII: this is "password123456".
        assert_eq!(
            check_new_password(&secret("ｐａｓｓｗｏｒｄ１２３４５６"), "a@example.com"),
            Err(PasswordRule::TooCommon)
        );
    }

    #[test]
    fn a_long_passphrase_is_accepted() {
        for good in [
            "correct horse battery staple 金庫",
            "とても長い合言葉は忘れにくい",
            "vN3#kq8!Lz0@wE5r",
        ] {
            assert_eq!(
                check_new_password(&secret(good), "user@example.com"),
                Ok(())
            );
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // Eleven kanji are 33 bytes but only 11 characters.
        assert_eq!(
            check_new_password(&secret("金庫金庫金庫金庫金庫金"), "a@example.com"),
            Err(PasswordRule::TooShort)
        );
        assert_eq!(
            check_new_password(&secret("金庫金庫金庫金庫金庫金庫"), "a@example.com"),
            Ok(())
        );
        let longest = "あ".repeat(PASSWORD_LENGTH_MAX_CHARS);
        assert_eq!(
            check_new_password(&secret(&longest), "a@example.com"),
            Ok(())
        );
        let too_long = "あ".repeat(PASSWORD_LENGTH_MAX_CHARS + 1);
        assert_eq!(
            check_new_password(&secret(&too_long), "a@example.com"),
            Err(PasswordRule::TooLong)
        );
    }

    #[test]
    fn the_email_address_or_its_local_part_is_refused() {
        let email = "Taro.Yamada.1990@Example.com";
        for candidate in ["taro.yamada.1990@example.com", "TARO.YAMADA.1990", email] {
            assert_eq!(
                check_new_password(&secret(candidate), email),
                Err(PasswordRule::EqualsEmail),
                "{candidate}"
            );
        }
    }

    #[test]
    fn hashes_are_argon2id_with_the_chosen_parameters() {
        let phc = hash_password(&secret("correct horse battery staple"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC string {phc}"
        );
        let again = hash_password(&secret("correct horse battery staple"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_ne!(phc, again, "each hash has its own salt");
        // The dummy costs what a real check costs.
        assert_eq!(
            DUMMY_PHC.split('$').nth(3),
            phc.split('$').nth(3),
            "the dummy hash must use the same parameters as real hashes"
        );
    }

    #[test]
    fn verify_accepts_the_password_and_refuses_others() {
        let phc = hash_password(&secret("correct horse battery staple"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(verify_password(
            &phc,
            &secret("correct horse battery staple")
        ));
        assert!(!verify_password(
            &phc,
            &secret("correct horse battery stapler")
        ));
        assert!(!verify_password(&phc, &secret("")));
        assert!(!verify_password(&phc, &secret(&"x".repeat(10_000))));
        // Full-width input verifies against a half-width password.
        assert!(verify_password(
            &phc,
            &secret("ｃｏｒｒｅｃｔ ｈｏｒｓｅ ｂａｔｔｅｒｙ ｓｔａｐｌｅ")
        ));
        assert!(!verify_password("not a phc string", &secret("anything")));
    }

    #[test]
    fn unknown_users_are_always_refused() {
        assert!(!verify_unknown_user(&secret(
            "correct horse battery staple"
        )));
        assert!(!verify_unknown_user(&secret("")));
        // The dummy hash parses and really is checked (a broken one would make the
        // unknown-user path fast, and so distinguishable).
        assert!(verify_against(DUMMY_PHC, &secret("anything")).is_ok());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let shown = format!("{:?}", secret("correct horse battery staple"));
        assert!(!shown.contains("horse"), "{shown}");
    }
}
