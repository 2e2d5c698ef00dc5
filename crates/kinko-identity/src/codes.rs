//! One-time codes sent to a registered e-mail address or phone number (table
//! `identity_codes`): 8 decimal digits (26.6 bits) from the operating system's CSPRNG, valid
//! 10 minutes, at most 5 tries, single use, and only the newest code of a user and purpose
//! counts. Codes are stored as SHA-256 and compared in constant time; with 5 tries on 10^8
//! values a keyed hash would add nothing.
//!
//! The message that carries a code says, in Japanese and English, what the code is for
//! ([`CodePurpose::message`]), so a user tricked into reading out a "login code" that is really
//! a recovery code has a chance to notice.
//!
//! # Counting wrong tries inside the caller's transaction
//! [`redeem`] runs in the caller's transaction. A wrong code must still count, even though the
//! request as a whole fails; so a wrong code is not an `Err` (which would roll the transaction
//! back and forget the try) but `Ok(CodeCheck::Wrong { .. })`. The caller commits, then turns
//! the check into the user's answer with [`CodeCheck::into_result`]. The `Err` cases (no code,
//! expired, used, out of tries) write nothing, so rolling back after them loses nothing.

use kinko_core::{ErrorCode, ErrorKind};
use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::notify::{Channel, Message};

kinko_core::typed_id!(
    /// A one-time code.
    CodeId
);

/// 10^8 codes: 26.6 bits, above the 20 bits NIST SP 800-63B asks of a one-time secret.
pub const CODE_DIGITS: usize = 8;
pub const CODE_LIFETIME_MS: i64 = 10 * 60_000;
/// Wrong tries a code survives; the fifth wrong one kills it.
pub const CODE_ATTEMPTS_MAX: i64 = 5;
/// Codes issued to one user for one purpose within an hour. Without a cap, asking for a new
/// code over and over would buy 5 fresh guesses each time.
pub const CODE_ISSUES_PER_HOUR_MAX: i64 = 10;
const HOUR_MS: i64 = 3_600_000;
/// A submitted code longer than this is malformed without looking further.
const SUBMITTED_CHARS_MAX: usize = 64;

/// What a code proves; stored as `as_str()` in `identity_codes.purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodePurpose {
    /// The user receives mail at this address (sign-up, e-mail change).
    VerifyEmail,
    /// The user receives SMS at this number (sign-up, phone change).
    VerifyPhone,
    /// Account recovery through a channel registered before the request.
    Recovery,
    /// The second code of a recovery, sent to the registered phone: possession of the phone.
    RecoveryPhone,
    /// Sign-in from a device this account has not used before.
    NewDevice,
}

impl CodePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            CodePurpose::VerifyEmail => "verify_email",
            CodePurpose::VerifyPhone => "verify_phone",
            CodePurpose::Recovery => "recovery",
            CodePurpose::RecoveryPhone => "recovery_phone",
            CodePurpose::NewDevice => "new_device",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            CodePurpose::VerifyEmail,
            CodePurpose::VerifyPhone,
            CodePurpose::Recovery,
            CodePurpose::RecoveryPhone,
            CodePurpose::NewDevice,
        ]
        .into_iter()
        .find(|purpose| purpose.as_str() == text)
    }

    /// The subject line (e-mail) naming what the code is for.
    pub fn subject(self) -> &'static str {
        match self {
            CodePurpose::VerifyEmail => "Kinko: メールアドレスの確認 / Verify your e-mail address",
            CodePurpose::VerifyPhone => "Kinko: 電話番号の確認 / Verify your phone number",
            CodePurpose::Recovery | CodePurpose::RecoveryPhone => {
                "Kinko: アカウントの復旧 / Account recovery"
            }
            CodePurpose::NewDevice => "Kinko: 新しい端末でのログイン / Sign-in from a new device",
        }
    }

    /// The text that carries `code`, in Japanese then English: what the code is for, how long
    /// it lasts, never to share it, and what to do if the user did not ask for it.
    pub fn sentence(self, code: &str) -> String {
        let minutes = CODE_LIFETIME_MS / 60_000;
        let (what_ja, what_en, unasked_ja, unasked_en) = match self {
            CodePurpose::VerifyEmail => (
                "メールアドレス確認コード",
                "e-mail address verification code",
                "心当たりがない場合は、このメールを無視してください。",
                "If you did not sign up, ignore this message.",
            ),
            CodePurpose::VerifyPhone => (
                "電話番号確認コード",
                "phone number verification code",
                "心当たりがない場合は、無視してください。",
                "If you did not ask for it, ignore this message.",
            ),
            CodePurpose::Recovery | CodePurpose::RecoveryPhone => (
                "アカウント復旧コード",
                "account recovery code",
                "復旧を申し込んでいない場合は、コードを使わず、すぐにサポートへご連絡ください。",
                "If you did not ask to recover your account, do not use it and contact support.",
            ),
            CodePurpose::NewDevice => (
                "新しい端末でのログイン確認コード",
                "new-device sign-in code",
                "ログインしようとしていない場合は、パスワードを変更してください。",
                "If you are not signing in, change your password.",
            ),
        };
        format!(
            "Kinko の{what_ja}: {code}（{minutes}分間有効）。他人に教えないでください。\
             Kinko の社員がこのコードを尋ねることはありません。{unasked_ja}\n\
             Your Kinko {what_en}: {code} (valid for {minutes} minutes). Do not share it \
             with anyone; Kinko staff will never ask for it. {unasked_en}"
        )
    }

    /// The outbox message that carries `code` to `destination`.
    pub fn message(self, channel: Channel, destination: &str, code: &SecretString) -> Message {
        Message {
            channel,
            destination: destination.to_owned(),
            purpose: self.as_str().to_owned(),
            subject: match channel {
                Channel::Email => self.subject().to_owned(),
                Channel::Sms => String::new(),
            },
            body: self.sentence(code.expose_secret()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// No live code for this user and purpose.
    #[error("the code is not valid")]
    Invalid,
    /// Returned only by [`CodeCheck::into_result`], after the try was committed.
    #[error("the code is wrong; {attempts_left} tries left")]
    Wrong { attempts_left: i64 },
    #[error("the code has expired; ask for a new one")]
    Expired,
    #[error("the code was already used")]
    Used,
    #[error("the code was tried too many times; ask for a new one")]
    TooManyAttempts,
    #[error("too many codes were asked for; wait before asking again")]
    IssueLimited,
    #[error("the operating system's random number generator failed")]
    Randomness,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Equal when the code (and the tries left) are; storage errors compare by message.
impl PartialEq for CodeError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CodeError::Store(left), CodeError::Store(right)) => left.message == right.message,
            (
                CodeError::Wrong {
                    attempts_left: left,
                },
                CodeError::Wrong {
                    attempts_left: right,
                },
            ) => left == right,
            _ => self.code() == other.code(),
        }
    }
}

impl ErrorCode for CodeError {
    fn code(&self) -> &'static str {
        match self {
            CodeError::Invalid => "CODE_INVALID",
            CodeError::Wrong { .. } => "CODE_WRONG",
            CodeError::Expired => "CODE_EXPIRED",
            CodeError::Used => "CODE_USED",
            CodeError::TooManyAttempts => "CODE_TOO_MANY_ATTEMPTS",
            CodeError::IssueLimited => "CODE_ISSUE_LIMITED",
            CodeError::Randomness => "CODE_RANDOMNESS_FAILED",
            CodeError::Store(_) => "CODE_STORAGE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            CodeError::Invalid
            | CodeError::Wrong { .. }
            | CodeError::Expired
            | CodeError::Used
            | CodeError::TooManyAttempts => ErrorKind::InvalidInput,
            CodeError::IssueLimited => ErrorKind::RateLimited,
            CodeError::Randomness => ErrorKind::Internal,
            CodeError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// The outcome of a try that must be committed whatever it is (see the module docs).
#[must_use = "commit the transaction, then call into_result"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code was right and is now used up.
    Accepted,
    /// The code was wrong; the try was counted. `attempts_left` is 0 after the last one.
    Wrong { attempts_left: i64 },
}

impl CodeCheck {
    /// The user's answer, to be taken after the transaction committed.
    pub fn into_result(self) -> Result<(), CodeError> {
        match self {
            CodeCheck::Accepted => Ok(()),
            CodeCheck::Wrong { attempts_left } => Err(CodeError::Wrong { attempts_left }),
        }
    }
}

fn id_at(now_ms: i64) -> u128 {
    let now_ms = u64::try_from(now_ms).unwrap_or(0);
    let timestamp = uuid::Timestamp::from_unix(
        uuid::NoContext,
        now_ms / 1_000,
        u32::try_from((now_ms % 1_000) * 1_000_000).unwrap_or(0),
    );
    uuid::Uuid::new_v7(timestamp).as_u128()
}

/// A uniformly random code of [`CODE_DIGITS`] digits from the OS CSPRNG.
fn generate_code() -> Result<SecretString, CodeError> {
    use rand::TryRngCore;
    // 42 × 10^8 is the largest multiple of 10^8 below 2^32: values above it are redrawn so
    // every code is equally likely. A redraw happens 2.2% of the time; 64 in a row never.
    const RANGE: u32 = 100_000_000;
    const ACCEPT_BELOW: u32 = 42 * RANGE;
    for _ in 0..64 {
        let value = rand::rngs::OsRng
            .try_next_u32()
            .map_err(|_| CodeError::Randomness)?;
        if value < ACCEPT_BELOW {
            return Ok(SecretString::from(format!(
                "{:0width$}",
                value % RANGE,
                width = CODE_DIGITS
            )));
        }
    }
    Err(CodeError::Randomness)
}

fn code_hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.as_bytes()).to_vec()
}

/// The submitted code as 8 ASCII digits, or `None` if it cannot be one. Surrounding spaces are
/// dropped and full-width digits (as a Japanese IME types them) are read as digits.
fn normalize_submitted(submitted: &str) -> Option<String> {
    if submitted.chars().count() > SUBMITTED_CHARS_MAX {
        return None;
    }
    let digits: String = submitted
        .trim()
        .chars()
        .map(|character| match character {
            '０'..='９' => {
                char::from_u32(u32::from(character) - u32::from('０') + u32::from('0'))
                    .unwrap_or(character)
            }
            other => other,
        })
        .collect();
    (digits.len() == CODE_DIGITS && digits.bytes().all(|byte| byte.is_ascii_digit()))
        .then_some(digits)
}

/// Issues a new code for `user_id` and `purpose`, to be sent on `channel`; earlier unused codes
/// for the same user and purpose stop working. Returns the plain code for the message (put it
/// in the outbox with [`CodePurpose::message`] in the same transaction); only its hash is kept.
pub fn issue(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    purpose: CodePurpose,
    channel: Channel,
) -> Result<(CodeId, SecretString), CodeError> {
    // The user row lock serialises issues for one user across processes, so the hourly count
    // below cannot be raced.
    let user = tx.query_opt(
        &format!(
            "SELECT id FROM identity_users WHERE id = $1{}",
            tx.for_update()
        ),
        &[Value::Uuid(user_id)],
    )?;
    if user.is_none() {
        return Err(StoreError::new("issuing a code for a user that does not exist").into());
    }
    let issued_last_hour = tx
        .query_one(
            "SELECT COUNT(*) FROM identity_codes
             WHERE user_id = $1 AND purpose = $2 AND created_at > $3",
            &[
                Value::Uuid(user_id),
                purpose.as_str().into(),
                Value::Int(now_ms - HOUR_MS),
            ],
        )?
        .int(0)?;
    if issued_last_hour >= CODE_ISSUES_PER_HOUR_MAX {
        tracing::warn!(
            purpose = purpose.as_str(),
            "one-time code issue limit reached"
        );
        return Err(CodeError::IssueLimited);
    }
    tx.execute(
        "UPDATE identity_codes SET expires_at = $3
         WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
        &[
            Value::Uuid(user_id),
            purpose.as_str().into(),
            Value::Int(now_ms),
        ],
    )?;
    let code = generate_code()?;
    let id = CodeId::from_u128(id_at(now_ms))
        .map_err(|_| StoreError::new("generated a zero code id"))?;
    tx.execute(
        "INSERT INTO identity_codes
            (id, user_id, purpose, channel, code_hash, expires_at, attempts, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        &[
            Value::Uuid(id.as_u128()),
            Value::Uuid(user_id),
            purpose.as_str().into(),
            channel.as_str().into(),
            Value::Bytes(code_hash(code.expose_secret())),
            Value::Int(now_ms.saturating_add(CODE_LIFETIME_MS)),
            Value::Int(now_ms),
        ],
    )?;
    Ok((id, code))
}

/// Tries `submitted` against the newest code of `user_id` for `purpose`. Commit the
/// transaction whatever `Ok` this returns, so a wrong try is counted (see the module docs).
/// Input that cannot be a code (wrong length, letters) counts as a wrong try.
pub fn redeem(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    purpose: CodePurpose,
    submitted: &str,
) -> Result<CodeCheck, CodeError> {
    // Newest first; of two codes issued in the same millisecond, the one the later issue did
    // not invalidate (ids within a millisecond are random, so they cannot break the tie).
    let row = tx.query_opt(
        &format!(
            "SELECT id, code_hash, expires_at, attempts, used_at FROM identity_codes
             WHERE user_id = $1 AND purpose = $2
             ORDER BY created_at DESC, expires_at DESC, id DESC LIMIT 1{}",
            tx.for_update()
        ),
        &[Value::Uuid(user_id), purpose.as_str().into()],
    )?;
    let Some(row) = row else {
        // No code at all (an id handed out for a sign-up of an address that already has an
        // account, or a made-up one): answer exactly as a wrong try at a real code would —
        // counted, tries left, then spent — so the answers never tell the two apart.
        let tries = crate::ratelimit::hit_count(
            tx,
            now_ms,
            &format!(
                "code_absent:{}:{}",
                uuid::Uuid::from_u128(user_id),
                purpose.as_str()
            ),
            CODE_LIFETIME_MS,
        )?;
        if tries > CODE_ATTEMPTS_MAX {
            return Err(CodeError::TooManyAttempts);
        }
        return Ok(CodeCheck::Wrong {
            attempts_left: CODE_ATTEMPTS_MAX - tries,
        });
    };
    let id = row.uuid(0)?;
    let stored_hash = row.bytes(1)?;
    let expires_at_ms = row.int(2)?;
    let attempts = row.int(3)?;
    if row.opt_int(4)?.is_some() {
        return Err(CodeError::Used);
    }
    if attempts >= CODE_ATTEMPTS_MAX {
        return Err(CodeError::TooManyAttempts);
    }
    if now_ms >= expires_at_ms {
        return Err(CodeError::Expired);
    }
    let matched = normalize_submitted(submitted)
        .is_some_and(|digits| bool::from(code_hash(&digits).ct_eq(&stored_hash)));
    if matched {
        tx.execute(
            "UPDATE identity_codes SET used_at = $2 WHERE id = $1",
            &[Value::Uuid(id), Value::Int(now_ms)],
        )?;
        return Ok(CodeCheck::Accepted);
    }
    tx.execute(
        "UPDATE identity_codes SET attempts = attempts + 1 WHERE id = $1",
        &[Value::Uuid(id)],
    )?;
    let attempts_left = CODE_ATTEMPTS_MAX - (attempts + 1);
    if attempts_left == 0 {
        tracing::warn!(
            code_id = %uuid::Uuid::from_u128(id),
            purpose = purpose.as_str(),
            "one-time code exhausted its tries"
        );
    }
    Ok(CodeCheck::Wrong { attempts_left })
}

#[cfg(test)]
mod tests {
    use kinko_store::sql::Database;

    use super::*;
    use crate::notify::testing::{both, database, insert_user};

    both!(
        a_code_is_single_use,
        a_code_expires_after_ten_minutes,
        the_fifth_wrong_try_kills_the_code,
        malformed_input_counts_as_a_wrong_try,
        a_new_code_replaces_the_old_one,
        a_code_only_works_for_its_purpose,
        a_code_only_works_for_its_user,
        a_wrong_try_survives_the_caller_committing,
        issuing_is_capped_per_hour,
        a_missing_code_answers_like_a_wrong_one,
    );

    /// Before: an id with no code (the one a sign-up of a taken address hands out) answered
    /// `Invalid` for ever, while a real one was spent after five tries — an oracle.
    fn a_missing_code_answers_like_a_wrong_one(backend: &str) {
        let (database, _dir) = database(backend);
        let real = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, real, CodePurpose::VerifyEmail);
        let wrong = other_than(&code);
        let absent = uuid::Uuid::now_v7().as_u128();
        let answers = |user: u128| {
            (0..=CODE_ATTEMPTS_MAX)
                .map(|index| {
                    try_code(
                        &database,
                        T0_MS + 1 + index,
                        user,
                        CodePurpose::VerifyEmail,
                        &wrong,
                    )
                })
                .collect::<Vec<_>>()
        };
        let (real_answers, absent_answers) = (answers(real), answers(absent));
        assert_eq!(real_answers, absent_answers);
        assert_eq!(
            absent_answers.last(),
            Some(&Err(CodeError::TooManyAttempts))
        );
    }

    const T0_MS: i64 = 1_750_000_000_000;

    fn issue_committed(
        database: &Database,
        now_ms: i64,
        user: u128,
        purpose: CodePurpose,
    ) -> String {
        database
            .transaction(|tx: &mut dyn Tx| issue(tx, now_ms, user, purpose, Channel::Email))
            .map(|(_, code)| code.expose_secret().to_owned())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Redeems in its own transaction, committing every `Ok` as a caller must.
    fn try_code(
        database: &Database,
        now_ms: i64,
        user: u128,
        purpose: CodePurpose,
        submitted: &str,
    ) -> Result<(), CodeError> {
        database
            .transaction(|tx: &mut dyn Tx| redeem(tx, now_ms, user, purpose, submitted))?
            .into_result()
    }

    /// A code of the right shape that is not `code`.
    fn other_than(code: &str) -> String {
        let last = code.as_bytes()[CODE_DIGITS - 1];
        let changed = if last == b'9' {
            '0'
        } else {
            char::from(last + 1)
        };
        format!("{}{changed}", &code[..CODE_DIGITS - 1])
    }

    fn a_code_is_single_use(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, user, CodePurpose::VerifyEmail);
        assert_eq!(code.len(), CODE_DIGITS);
        assert!(code.bytes().all(|byte| byte.is_ascii_digit()));
        assert_eq!(
            try_code(&database, T0_MS + 1, user, CodePurpose::VerifyEmail, &code),
            Ok(())
        );
        assert_eq!(
            try_code(&database, T0_MS + 2, user, CodePurpose::VerifyEmail, &code),
            Err(CodeError::Used)
        );
    }

    fn a_code_expires_after_ten_minutes(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, user, CodePurpose::VerifyPhone);
        assert_eq!(
            try_code(
                &database,
                T0_MS + CODE_LIFETIME_MS,
                user,
                CodePurpose::VerifyPhone,
                &code
            ),
            Err(CodeError::Expired)
        );
        let code = issue_committed(&database, T0_MS, user, CodePurpose::VerifyPhone);
        assert_eq!(
            try_code(
                &database,
                T0_MS + CODE_LIFETIME_MS - 1,
                user,
                CodePurpose::VerifyPhone,
                &code
            ),
            Ok(())
        );
    }

    fn the_fifth_wrong_try_kills_the_code(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, user, CodePurpose::Recovery);
        let wrong = other_than(&code);
        for attempts_left in (0..CODE_ATTEMPTS_MAX).rev() {
            assert_eq!(
                try_code(&database, T0_MS + 1, user, CodePurpose::Recovery, &wrong),
                Err(CodeError::Wrong { attempts_left })
            );
        }
        // Even the right code is refused now.
        assert_eq!(
            try_code(&database, T0_MS + 2, user, CodePurpose::Recovery, &code),
            Err(CodeError::TooManyAttempts)
        );
    }

    fn malformed_input_counts_as_a_wrong_try(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, user, CodePurpose::VerifyEmail);
        let long = "9".repeat(10_000);
        for (index, malformed) in ["", "1234567", "123456789", "abcdefgh", long.as_str()]
            .into_iter()
            .enumerate()
        {
            let attempts_left = CODE_ATTEMPTS_MAX - 1 - i64::try_from(index).unwrap_or(0);
            assert_eq!(
                try_code(
                    &database,
                    T0_MS + 1,
                    user,
                    CodePurpose::VerifyEmail,
                    malformed
                ),
                Err(CodeError::Wrong { attempts_left }),
                "{malformed:.20}"
            );
        }
        assert_eq!(
            try_code(&database, T0_MS + 1, user, CodePurpose::VerifyEmail, &code),
            Err(CodeError::TooManyAttempts)
        );
        // Full-width digits and surrounding spaces are read as the code.
        let code = issue_committed(&database, T0_MS, user, CodePurpose::VerifyEmail);
        let full_width: String = code
            .chars()
            .map(|digit| {
                char::from_u32(u32::from(digit) - u32::from('0') + u32::from('０')).unwrap_or(digit)
            })
            .collect();
        assert_eq!(
            try_code(
                &database,
                T0_MS + 1,
                user,
                CodePurpose::VerifyEmail,
                &format!(" {full_width} ")
            ),
            Ok(())
        );
    }

    fn a_new_code_replaces_the_old_one(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let first = issue_committed(&database, T0_MS, user, CodePurpose::VerifyEmail);
        let mut second = issue_committed(&database, T0_MS + 1_000, user, CodePurpose::VerifyEmail);
        while second == first {
            // One chance in 10^8; the test would otherwise prove nothing.
            second = issue_committed(&database, T0_MS + 1_000, user, CodePurpose::VerifyEmail);
        }
        assert_eq!(
            try_code(
                &database,
                T0_MS + 2_000,
                user,
                CodePurpose::VerifyEmail,
                &first
            ),
            Err(CodeError::Wrong {
                attempts_left: CODE_ATTEMPTS_MAX - 1
            })
        );
        assert_eq!(
            try_code(
                &database,
                T0_MS + 2_000,
                user,
                CodePurpose::VerifyEmail,
                &second
            ),
            Ok(())
        );
    }

    fn a_code_only_works_for_its_purpose(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, user, CodePurpose::VerifyEmail);
        assert_eq!(
            try_code(&database, T0_MS + 1, user, CodePurpose::Recovery, &code),
            Err(CodeError::Wrong {
                attempts_left: CODE_ATTEMPTS_MAX - 1
            })
        );
        // A live code for the other purpose does not accept it either.
        let recovery = issue_committed(&database, T0_MS, user, CodePurpose::Recovery);
        if recovery != code {
            assert_eq!(
                try_code(&database, T0_MS + 1, user, CodePurpose::Recovery, &code),
                Err(CodeError::Wrong {
                    attempts_left: CODE_ATTEMPTS_MAX - 1
                })
            );
        }
        assert_eq!(
            try_code(&database, T0_MS + 1, user, CodePurpose::VerifyEmail, &code),
            Ok(())
        );
    }

    fn a_code_only_works_for_its_user(backend: &str) {
        let (database, _dir) = database(backend);
        let owner = insert_user(&database, T0_MS);
        let other = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, owner, CodePurpose::VerifyPhone);
        assert_eq!(
            try_code(&database, T0_MS + 1, other, CodePurpose::VerifyPhone, &code),
            Err(CodeError::Wrong {
                attempts_left: CODE_ATTEMPTS_MAX - 1
            })
        );
        assert_eq!(
            try_code(&database, T0_MS + 1, owner, CodePurpose::VerifyPhone, &code),
            Ok(())
        );
    }

    fn a_wrong_try_survives_the_caller_committing(backend: &str) {
        // The caller's request fails (wrong code) but its transaction commits: the try counts.
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let code = issue_committed(&database, T0_MS, user, CodePurpose::NewDevice);
        let check = database
            .transaction(|tx: &mut dyn Tx| {
                redeem(
                    tx,
                    T0_MS + 1,
                    user,
                    CodePurpose::NewDevice,
                    &other_than(&code),
                )
            })
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            check,
            CodeCheck::Wrong {
                attempts_left: CODE_ATTEMPTS_MAX - 1
            }
        );
        let attempts = database
            .transaction(|tx: &mut dyn Tx| {
                tx.query_one(
                    "SELECT attempts FROM identity_codes WHERE user_id = $1",
                    &[Value::Uuid(user)],
                )
            })
            .and_then(|row| row.int(0))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(attempts, 1);
    }

    fn issuing_is_capped_per_hour(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        for index in 0..CODE_ISSUES_PER_HOUR_MAX {
            issue_committed(&database, T0_MS + index, user, CodePurpose::Recovery);
        }
        let refused = database.transaction(|tx: &mut dyn Tx| {
            issue(
                tx,
                T0_MS + 60_000,
                user,
                CodePurpose::Recovery,
                Channel::Sms,
            )
            .map(|(id, _)| id)
        });
        assert_eq!(refused, Err(CodeError::IssueLimited));
        // Other purposes are counted apart, and an hour later the cap is free again.
        issue_committed(&database, T0_MS + 60_000, user, CodePurpose::VerifyEmail);
        issue_committed(
            &database,
            T0_MS + HOUR_MS + CODE_ISSUES_PER_HOUR_MAX,
            user,
            CodePurpose::Recovery,
        );
    }

    #[test]
    fn codes_are_uniform_enough_and_never_short() {
        // 2,000 codes: every position sees every digit, and leading zeros are kept.
        let mut seen = [[false; 10]; CODE_DIGITS];
        for _ in 0..2_000 {
            let code = generate_code().unwrap_or_else(|error| panic!("{error}"));
            let code = code.expose_secret();
            assert_eq!(code.len(), CODE_DIGITS);
            for (position, digit) in code.bytes().enumerate() {
                seen[position][usize::from(digit - b'0')] = true;
            }
        }
        assert!(seen.iter().all(|digits| digits.iter().all(|&seen| seen)));
    }

    #[test]
    fn the_message_says_what_the_code_is_for() {
        let code = SecretString::from("01234567");
        let email = CodePurpose::VerifyEmail.message(Channel::Email, "a@example.com", &code);
        assert!(email.body.starts_with(
            "Kinko のメールアドレス確認コード: 01234567（10分間有効）。他人に教えないでください。"
        ));
        assert!(email.body.contains(
            "Your Kinko e-mail address verification code: 01234567 (valid for 10 minutes)"
        ));
        assert_eq!(email.purpose, "verify_email");
        assert!(email.subject.contains("Verify your e-mail address"));
        let sms = CodePurpose::Recovery.message(Channel::Sms, "+819012345678", &code);
        assert!(sms.subject.is_empty());
        assert!(
            sms.body.contains("アカウント復旧コード: 01234567")
                && sms.body.contains("account recovery code")
        );
        for purpose in [
            CodePurpose::VerifyEmail,
            CodePurpose::VerifyPhone,
            CodePurpose::Recovery,
            CodePurpose::NewDevice,
        ] {
            assert_eq!(CodePurpose::parse(purpose.as_str()), Some(purpose));
        }
    }
}
