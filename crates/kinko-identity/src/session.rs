//! Sessions and devices: who is signed in, from which device, and whether they passed a second
//! factor recently enough to move money.
//!
//! A session is an opaque random token (`kinko_s_` + 32 random bytes, base64url): the client
//! presents it as a cookie (web pages, with a CSRF token alongside) or as a bearer token (API
//! clients). Only SHA-256 of a token is stored and sessions are looked up by that hash, so a
//! database dump holds no usable token and comparison timing reveals nothing useful. Tokens are
//! always made here, never taken from the client (no session fixation), and [`rotate`] issues a
//! new one for the same session when privileges change.
//!
//! A device is recognised by a long-lived device token (`kinko_d_…`, also stored hashed) that
//! the client keeps, never by its id: ids appear in logs and lists, and a device that could be
//! claimed by id would let a credential-stuffing attacker pose as a trusted phone. A device
//! becomes trusted only when a second factor is passed on it ([`mark_second_factor`]); money
//! moves only from a trusted device with a second factor passed in the last
//! [`MONEY_FRESHNESS_MS`] ([`require_fresh_for_money`], THREATS.md requirements 15 and 19).
//!
//! Lifetimes: a session ends [`SESSION_ABSOLUTE_LIFETIME_MS`] after sign-in whatever happens,
//! and after [`SESSION_IDLE_TIMEOUT_MS`] without use. `last_seen_at` is written at most once
//! per [`LAST_SEEN_RESOLUTION_MS`] to limit writes, so the idle timeout effectively runs from
//! somewhere in the last minute of use (a session dies 29 to 30 minutes after its last use).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kinko_core::{ErrorCode, ErrorKind, typed_id};
use kinko_ledger::StoreError;
use kinko_store::sql::{Row, Tx, Value};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::secrets::fill_random;

typed_id!(
    /// A session: one sign-in on one device.
    SessionId
);
typed_id!(
    /// A device a user signed in from.
    DeviceId
);

/// A session ends this long after sign-in, however active it is.
pub const SESSION_ABSOLUTE_LIFETIME_MS: i64 = 12 * 60 * 60 * 1_000;
/// A session ends after this long without use.
pub const SESSION_IDLE_TIMEOUT_MS: i64 = 30 * 60 * 1_000;
/// Money moves only if a second factor was passed within this long (THREATS.md 15, ⟨5 min⟩).
pub const MONEY_FRESHNESS_MS: i64 = 5 * 60 * 1_000;
/// `last_seen_at` is written at most this often per session.
pub const LAST_SEEN_RESOLUTION_MS: i64 = 60 * 1_000;
/// Device labels (from the user agent) are cut to this many characters.
pub const DEVICE_LABEL_MAX_CHARS: usize = 100;
/// At most this many sessions or devices are listed.
pub const LIST_MAX: i64 = 100;

pub const SESSION_TOKEN_PREFIX: &str = "kinko_s_";
pub const CSRF_TOKEN_PREFIX: &str = "kinko_c_";
pub const DEVICE_TOKEN_PREFIX: &str = "kinko_d_";
/// Random bytes in every token: 256 bits, beyond any guessing.
const TOKEN_BYTES: usize = 32;
/// base64url without padding of 32 bytes.
const TOKEN_BODY_CHARS: usize = 43;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Unknown, revoked or malformed token: the client must sign in again.
    #[error("the session is not valid")]
    Invalid,
    /// Past its absolute lifetime or idle too long: the client must sign in again.
    #[error("the session has expired")]
    Expired,
    #[error("the CSRF token does not match the session")]
    CsrfInvalid,
    /// The action moves money: pass a second factor on this device first.
    #[error("this action needs a fresh second factor on a trusted device")]
    StepUpRequired,
    /// No such session among the user's own (another user's session is "not found" too).
    #[error("no such session")]
    NotFound,
    #[error("no such device")]
    DeviceNotFound,
    #[error("the operating system's random generator failed")]
    Random,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for SessionError {
    fn code(&self) -> &'static str {
        match self {
            SessionError::Invalid => "SESSION_INVALID",
            SessionError::Expired => "SESSION_EXPIRED",
            SessionError::CsrfInvalid => "SESSION_CSRF_INVALID",
            SessionError::StepUpRequired => "SESSION_STEP_UP_REQUIRED",
            SessionError::NotFound => "SESSION_NOT_FOUND",
            SessionError::DeviceNotFound => "DEVICE_NOT_FOUND",
            SessionError::Random => "SESSION_RANDOM_FAILED",
            SessionError::Store(_) => "SESSION_STORAGE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        // ErrorKind has no "unauthenticated"/"forbidden" yet: the web layer maps SESSION_INVALID,
        // SESSION_EXPIRED to 401 and SESSION_CSRF_INVALID, SESSION_STEP_UP_REQUIRED to 403 by code.
        match self {
            SessionError::Invalid
            | SessionError::Expired
            | SessionError::CsrfInvalid
            | SessionError::StepUpRequired => ErrorKind::InvalidInput,
            SessionError::NotFound | SessionError::DeviceNotFound => ErrorKind::NotFound,
            SessionError::Random | SessionError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// The device a sign-in comes from.
#[derive(Clone, Copy)]
pub enum DeviceRef<'a> {
    /// The client presented a device token (cookie or header). It is used only if it names a
    /// live device of the same user; otherwise the sign-in counts as from a new device.
    Presented {
        device_token: &'a str,
        /// The label for a new device if the token is not recognised (e.g. the user agent).
        label: &'a str,
    },
    /// No device token: a new device.
    New { label: &'a str },
}

impl std::fmt::Debug for DeviceRef<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRef::Presented { label, .. } => formatter
                .debug_struct("Presented")
                .field("device_token", &"<redacted>")
                .field("label", label)
                .finish(),
            DeviceRef::New { label } => {
                formatter.debug_struct("New").field("label", label).finish()
            }
        }
    }
}

/// The tokens of a new or rotated session, to hand to the client once.
#[derive(Debug)]
pub struct NewSession {
    pub session_id: SessionId,
    pub device_id: DeviceId,
    /// The session token: a cookie or a bearer token.
    pub token: SecretString,
    /// The CSRF token for cookie-based pages.
    pub csrf_token: SecretString,
    /// Set when a new device was registered: the client keeps it (long-lived cookie) and
    /// presents it at its next sign-in. `None` when the presented device was recognised.
    pub device_token: Option<SecretString>,
}

impl NewSession {
    /// Whether this sign-in registered a new device (notify the user, THREATS.md 18).
    pub fn is_new_device(&self) -> bool {
        self.device_token.is_some()
    }
}

/// An authenticated session, as the request handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: SessionId,
    pub user_id: u128,
    pub device_id: DeviceId,
    pub device_trusted: bool,
    pub second_factor_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
    csrf_hash: Option<Vec<u8>>,
}

impl SessionInfo {
    /// Checks the CSRF token a cookie-authenticated form or request carried.
    pub fn check_csrf(&self, presented: &str) -> Result<(), SessionError> {
        let presented_hash = token_hash(presented);
        match &self.csrf_hash {
            Some(stored) if bool::from(stored.as_slice().ct_eq(&presented_hash)) => Ok(()),
            _ => Err(SessionError::CsrfInvalid),
        }
    }
}

/// One of a user's live sessions, for "where am I signed in".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: SessionId,
    pub device_id: DeviceId,
    pub device_label: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub second_factor_at: Option<i64>,
    pub expires_at: i64,
}

/// One of a user's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSummary {
    pub device_id: DeviceId,
    pub label: String,
    pub first_seen_at: i64,
    pub trusted_at: Option<i64>,
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh token with its prefix, and its hash (what is stored).
fn new_token(prefix: &str) -> Result<(SecretString, [u8; 32]), SessionError> {
    let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
    fill_random(bytes.as_mut_slice()).map_err(|_| SessionError::Random)?;
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes.as_slice()));
    let hash = token_hash(&token);
    Ok((SecretString::from(token), hash))
}

/// Whether `token` has the shape of a token with `prefix`; anything else is not looked up.
fn well_formed(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|body| {
        body.len() == TOKEN_BODY_CHARS
            && body
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    })
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

fn session_id_of(row: &Row, index: usize) -> Result<SessionId, StoreError> {
    SessionId::from_u128(row.uuid(index)?).map_err(|error| StoreError::new(error.to_string()))
}

fn device_id_of(row: &Row, index: usize) -> Result<DeviceId, StoreError> {
    DeviceId::from_u128(row.uuid(index)?).map_err(|error| StoreError::new(error.to_string()))
}

/// Printable characters only, cut to [`DEVICE_LABEL_MAX_CHARS`]: the label comes from the
/// client and is shown back to the user.
fn clean_label(label: &str) -> String {
    let cleaned: String = label
        .chars()
        .filter(|character| !character.is_control())
        .take(DEVICE_LABEL_MAX_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() {
        "unknown device".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// The presented device if it is a live device of `user_id`; `None` otherwise.
fn recognised_device(
    tx: &mut dyn Tx,
    user_id: u128,
    device_token: &str,
) -> Result<Option<DeviceId>, SessionError> {
    if !well_formed(device_token, DEVICE_TOKEN_PREFIX) {
        return Ok(None);
    }
    let row = tx.query_opt(
        "SELECT id FROM identity_devices
         WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL",
        &[
            token_hash(device_token).to_vec().into(),
            Value::Uuid(user_id),
        ],
    )?;
    Ok(row.map(|row| device_id_of(&row, 0)).transpose()?)
}

/// Whether `device_token` is a live device of `user_id` that has passed the second factor:
/// what lets the holder sign in while their account is throttled (issue 13, item 3).
pub fn is_trusted_device(
    tx: &mut dyn Tx,
    user_id: u128,
    device_token: &str,
) -> Result<bool, SessionError> {
    if !well_formed(device_token, DEVICE_TOKEN_PREFIX) {
        return Ok(false);
    }
    let row = tx.query_opt(
        "SELECT id FROM identity_devices
         WHERE token_hash = $1 AND user_id = $2 AND revoked_at IS NULL
           AND trusted_at IS NOT NULL",
        &[
            token_hash(device_token).to_vec().into(),
            Value::Uuid(user_id),
        ],
    )?;
    Ok(row.is_some())
}

fn insert_device(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    label: &str,
) -> Result<(DeviceId, SecretString), SessionError> {
    let (device_token, device_hash) = new_token(DEVICE_TOKEN_PREFIX)?;
    let device_id =
        DeviceId::from_u128(new_id(now_ms)).map_err(|error| StoreError::new(error.to_string()))?;
    tx.execute(
        "INSERT INTO identity_devices (id, user_id, token_hash, label, first_seen_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            Value::Uuid(device_id.as_u128()),
            Value::Uuid(user_id),
            device_hash.to_vec().into(),
            clean_label(label).into(),
            Value::Int(now_ms),
        ],
    )?;
    Ok((device_id, device_token))
}

/// Starts a session for `user_id` (who has just proved who they are) on `device`.
pub fn create(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    device: DeviceRef<'_>,
) -> Result<NewSession, SessionError> {
    let (device_id, device_token) = match device {
        DeviceRef::Presented {
            device_token,
            label,
        } => match recognised_device(tx, user_id, device_token)? {
            Some(device_id) => (device_id, None),
            None => {
                let (device_id, token) = insert_device(tx, now_ms, user_id, label)?;
                (device_id, Some(token))
            }
        },
        DeviceRef::New { label } => {
            let (device_id, token) = insert_device(tx, now_ms, user_id, label)?;
            (device_id, Some(token))
        }
    };
    let (token, session_hash) = new_token(SESSION_TOKEN_PREFIX)?;
    let (csrf_token, csrf_hash) = new_token(CSRF_TOKEN_PREFIX)?;
    let session_id =
        SessionId::from_u128(new_id(now_ms)).map_err(|error| StoreError::new(error.to_string()))?;
    tx.execute(
        "INSERT INTO identity_sessions
            (id, user_id, device_id, token_hash, csrf_hash, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        &[
            Value::Uuid(session_id.as_u128()),
            Value::Uuid(user_id),
            Value::Uuid(device_id.as_u128()),
            session_hash.to_vec().into(),
            csrf_hash.to_vec().into(),
            Value::Int(now_ms),
            Value::Int(now_ms.saturating_add(SESSION_ABSOLUTE_LIFETIME_MS)),
        ],
    )?;
    Ok(NewSession {
        session_id,
        device_id,
        token,
        csrf_token,
        device_token,
    })
}

/// Whether a session with these times is past its absolute lifetime or idle timeout at `now_ms`.
fn is_expired(now_ms: i64, expires_at: i64, last_seen_at: i64) -> bool {
    now_ms >= expires_at || now_ms.saturating_sub(last_seen_at) >= SESSION_IDLE_TIMEOUT_MS
}

/// Finds the live session a token names, and records its use.
pub fn authenticate(
    tx: &mut dyn Tx,
    now_ms: i64,
    token: &str,
) -> Result<SessionInfo, SessionError> {
    let (session, stale) = look_up(tx, now_ms, token)?;
    if stale {
        touch(tx, now_ms, session.session_id)?;
    }
    Ok(session)
}

/// The session a token names, without writing: reads only, so it can run in a read
/// transaction. Also answers whether `last_seen_at` is stale enough to [`touch`].
pub fn look_up(
    tx: &mut dyn Tx,
    now_ms: i64,
    token: &str,
) -> Result<(SessionInfo, bool), SessionError> {
    if !well_formed(token, SESSION_TOKEN_PREFIX) {
        return Err(SessionError::Invalid);
    }
    let row = tx
        .query_opt(
            "SELECT s.id, s.user_id, s.device_id, s.csrf_hash, s.created_at, s.last_seen_at,
                    s.second_factor_at, s.expires_at, s.revoked_at, d.trusted_at, d.revoked_at
             FROM identity_sessions s JOIN identity_devices d ON d.id = s.device_id
             WHERE s.token_hash = $1",
            &[token_hash(token).to_vec().into()],
        )?
        .ok_or(SessionError::Invalid)?;
    let session_revoked = row.opt_int(8)?.is_some();
    let device_revoked = row.opt_int(10)?.is_some();
    if session_revoked || device_revoked {
        return Err(SessionError::Invalid);
    }
    let session_id = session_id_of(&row, 0)?;
    let last_seen_at = row.int(5)?;
    let expires_at = row.int(7)?;
    if is_expired(now_ms, expires_at, last_seen_at) {
        return Err(SessionError::Expired);
    }
    let stale = now_ms.saturating_sub(last_seen_at) >= LAST_SEEN_RESOLUTION_MS;
    Ok((
        SessionInfo {
            session_id,
            user_id: row.uuid(1)?,
            device_id: device_id_of(&row, 2)?,
            device_trusted: row.opt_int(9)?.is_some(),
            second_factor_at: row.opt_int(6)?,
            created_at: row.int(4)?,
            expires_at,
            csrf_hash: row.opt_bytes(3)?,
        },
        stale,
    ))
}

/// Moves the session's `last_seen_at` (its idle timer) to `now_ms`.
pub fn touch(tx: &mut dyn Tx, now_ms: i64, session_id: SessionId) -> Result<(), SessionError> {
    tx.execute(
        "UPDATE identity_sessions SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $2",
        &[Value::Uuid(session_id.as_u128()), Value::Int(now_ms)],
    )?;
    Ok(())
}

/// Records that a second factor was just passed in this session, and trusts its device.
/// Call [`rotate`] next: privileges changed, so the token should too.
pub fn mark_second_factor(
    tx: &mut dyn Tx,
    now_ms: i64,
    session_id: SessionId,
) -> Result<(), SessionError> {
    let sql = format!(
        "SELECT device_id FROM identity_sessions WHERE id = $1 AND revoked_at IS NULL{}",
        tx.for_update()
    );
    let row = tx
        .query_opt(&sql, &[Value::Uuid(session_id.as_u128())])?
        .ok_or(SessionError::Invalid)?;
    let device_id = device_id_of(&row, 0)?;
    tx.execute(
        "UPDATE identity_sessions SET second_factor_at = $2 WHERE id = $1",
        &[Value::Uuid(session_id.as_u128()), Value::Int(now_ms)],
    )?;
    tx.execute(
        "UPDATE identity_devices SET trusted_at = $2
         WHERE id = $1 AND trusted_at IS NULL AND revoked_at IS NULL",
        &[Value::Uuid(device_id.as_u128()), Value::Int(now_ms)],
    )?;
    Ok(())
}

/// Refuses a money action unless a second factor was passed on a trusted device within
/// [`MONEY_FRESHNESS_MS`].
pub fn require_fresh_for_money(info: &SessionInfo, now_ms: i64) -> Result<(), SessionError> {
    if !info.device_trusted {
        return Err(SessionError::StepUpRequired);
    }
    match info.second_factor_at {
        Some(second_factor_at) if now_ms.saturating_sub(second_factor_at) <= MONEY_FRESHNESS_MS => {
            Ok(())
        }
        _ => Err(SessionError::StepUpRequired),
    }
}

/// Issues a new session token and CSRF token for a live session; the old ones stop working.
pub fn rotate(
    tx: &mut dyn Tx,
    now_ms: i64,
    session_id: SessionId,
) -> Result<NewSession, SessionError> {
    let sql = format!(
        "SELECT device_id, expires_at, last_seen_at FROM identity_sessions
         WHERE id = $1 AND revoked_at IS NULL{}",
        tx.for_update()
    );
    let row = tx
        .query_opt(&sql, &[Value::Uuid(session_id.as_u128())])?
        .ok_or(SessionError::Invalid)?;
    if is_expired(now_ms, row.int(1)?, row.int(2)?) {
        return Err(SessionError::Expired);
    }
    let (token, session_hash) = new_token(SESSION_TOKEN_PREFIX)?;
    let (csrf_token, csrf_hash) = new_token(CSRF_TOKEN_PREFIX)?;
    tx.execute(
        "UPDATE identity_sessions SET token_hash = $2, csrf_hash = $3, last_seen_at = $4
         WHERE id = $1",
        &[
            Value::Uuid(session_id.as_u128()),
            session_hash.to_vec().into(),
            csrf_hash.to_vec().into(),
            Value::Int(now_ms),
        ],
    )?;
    Ok(NewSession {
        session_id,
        device_id: device_id_of(&row, 0)?,
        token,
        csrf_token,
        device_token: None,
    })
}

/// The user's live sessions, newest first (at most [`LIST_MAX`]).
pub fn list_sessions(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
) -> Result<Vec<SessionSummary>, SessionError> {
    let rows = tx.query(
        "SELECT s.id, s.device_id, d.label, s.created_at, s.last_seen_at, s.second_factor_at,
                s.expires_at
         FROM identity_sessions s JOIN identity_devices d ON d.id = s.device_id
         WHERE s.user_id = $1 AND s.revoked_at IS NULL AND d.revoked_at IS NULL
           AND s.expires_at > $2 AND s.last_seen_at > $3
         ORDER BY s.created_at DESC, s.id DESC
         LIMIT $4",
        &[
            Value::Uuid(user_id),
            Value::Int(now_ms),
            Value::Int(now_ms.saturating_sub(SESSION_IDLE_TIMEOUT_MS)),
            Value::Int(LIST_MAX),
        ],
    )?;
    rows.iter()
        .map(|row| {
            Ok(SessionSummary {
                session_id: session_id_of(row, 0)?,
                device_id: device_id_of(row, 1)?,
                device_label: row.text(2)?,
                created_at: row.int(3)?,
                last_seen_at: row.int(4)?,
                second_factor_at: row.opt_int(5)?,
                expires_at: row.int(6)?,
            })
        })
        .collect()
}

/// Ends one of the user's own sessions. A session of another user is "not found" and is left
/// alone. Revoking an already revoked session succeeds.
pub fn revoke(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    session_id: SessionId,
) -> Result<(), SessionError> {
    let changed = tx.execute(
        "UPDATE identity_sessions SET revoked_at = COALESCE(revoked_at, $3)
         WHERE id = $1 AND user_id = $2",
        &[
            Value::Uuid(session_id.as_u128()),
            Value::Uuid(user_id),
            Value::Int(now_ms),
        ],
    )?;
    if changed == 0 {
        return Err(SessionError::NotFound);
    }
    Ok(())
}

/// After a security change (recovery, a new password, contact or second factor): every other
/// session of the user ends and outgoing money waits until `frozen_until_ms` — never earlier
/// than a freeze already in place (a bank's fraud report freezes until reviewed, and a thief
/// who changes the password must not shorten that).
pub fn sign_out_others_and_freeze(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    keep: Option<SessionId>,
    frozen_until_ms: i64,
) -> Result<(), SessionError> {
    revoke_all_except(tx, now_ms, user_id, keep)?;
    tx.execute(
        "UPDATE identity_users SET outgoing_frozen_until = $2
         WHERE id = $1 AND (outgoing_frozen_until IS NULL OR outgoing_frozen_until < $2)",
        &[Value::Uuid(user_id), Value::Int(frozen_until_ms)],
    )?;
    Ok(())
}

/// Ends every live session of the user except `keep` (after recovery or a credential change).
/// Returns how many were ended.
pub fn revoke_all_except(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    keep: Option<SessionId>,
) -> Result<u64, SessionError> {
    let changed = match keep {
        Some(keep) => tx.execute(
            "UPDATE identity_sessions SET revoked_at = $2
             WHERE user_id = $1 AND revoked_at IS NULL AND id <> $3",
            &[
                Value::Uuid(user_id),
                Value::Int(now_ms),
                Value::Uuid(keep.as_u128()),
            ],
        )?,
        None => tx.execute(
            "UPDATE identity_sessions SET revoked_at = $2
             WHERE user_id = $1 AND revoked_at IS NULL",
            &[Value::Uuid(user_id), Value::Int(now_ms)],
        )?,
    };
    Ok(changed)
}

/// The user's devices that are not revoked, newest first (at most [`LIST_MAX`]).
pub fn list_devices(tx: &mut dyn Tx, user_id: u128) -> Result<Vec<DeviceSummary>, SessionError> {
    let rows = tx.query(
        "SELECT id, label, first_seen_at, trusted_at FROM identity_devices
         WHERE user_id = $1 AND revoked_at IS NULL
         ORDER BY first_seen_at DESC, id DESC
         LIMIT $2",
        &[Value::Uuid(user_id), Value::Int(LIST_MAX)],
    )?;
    rows.iter()
        .map(|row| {
            Ok(DeviceSummary {
                device_id: device_id_of(row, 0)?,
                label: row.text(1)?,
                first_seen_at: row.int(2)?,
                trusted_at: row.opt_int(3)?,
            })
        })
        .collect()
}

/// Revokes one of the user's devices and every session on it; its device token is never
/// recognised again. Returns how many sessions were ended.
pub fn revoke_device(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    device_id: DeviceId,
) -> Result<u64, SessionError> {
    let changed = tx.execute(
        "UPDATE identity_devices SET revoked_at = COALESCE(revoked_at, $3)
         WHERE id = $1 AND user_id = $2",
        &[
            Value::Uuid(device_id.as_u128()),
            Value::Uuid(user_id),
            Value::Int(now_ms),
        ],
    )?;
    if changed == 0 {
        return Err(SessionError::DeviceNotFound);
    }
    let sessions = tx.execute(
        "UPDATE identity_sessions SET revoked_at = $3
         WHERE device_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        &[
            Value::Uuid(device_id.as_u128()),
            Value::Uuid(user_id),
            Value::Int(now_ms),
        ],
    )?;
    Ok(sessions)
}

/// Deletes up to `rows_max` sessions that can never be used again (revoked, or past their
/// absolute lifetime), oldest first, so the table does not grow without bound. Run it from
/// a periodic task. Returns how many were deleted.
pub fn purge_dead_sessions(
    tx: &mut dyn Tx,
    now_ms: i64,
    rows_max: i64,
) -> Result<u64, SessionError> {
    let deleted = tx.execute(
        "DELETE FROM identity_sessions WHERE id IN (
            SELECT id FROM identity_sessions
            WHERE revoked_at IS NOT NULL OR expires_at <= $1 OR last_seen_at <= $2
            ORDER BY created_at LIMIT $3)",
        &[
            Value::Int(now_ms),
            Value::Int(now_ms.saturating_sub(SESSION_IDLE_TIMEOUT_MS)),
            Value::Int(rows_max.max(0)),
        ],
    )?;
    Ok(deleted)
}

/// Test support shared by the identity modules' tests: a fresh database per test on either
/// backend, and a user row to hang factors and sessions on.
#[cfg(test)]
pub(crate) mod testing {
    use kinko_ledger::StoreError;
    use kinko_store::sql::{Database, Tx, Value};

    /// A fresh database on `backend` ("sqlite" or "postgres"); keep the directory alive.
    pub(crate) fn database(backend: &str) -> (Database, kinko_store::testing::Scratch) {
        kinko_store::testing::database(backend)
    }

    /// Inserts an active user and returns its id.
    pub(crate) fn insert_user(database: &Database, now_ms: i64, email: &str) -> u128 {
        let user_id = uuid::Uuid::now_v7().as_u128();
        database
            .transaction(|tx: &mut dyn Tx| {
                tx.execute(
                    "INSERT INTO identity_users (id, email, phone, password_hash, status, created_at)
                     VALUES ($1, $2, $3, 'not-a-hash', 'active', $4)",
                    &[
                        Value::Uuid(user_id),
                        email.into(),
                        format!("+8190{:08}", user_id % 100_000_000).into(),
                        Value::Int(now_ms),
                    ],
                )
            })
            .unwrap_or_else(|error: StoreError| panic!("{error}"));
        user_id
    }
}

#[cfg(test)]
mod tests {
    use kinko_store::sql::{Database, Tx, Value};
    use secrecy::ExposeSecret;

    use super::testing::{database, insert_user};
    use super::*;

    fn expose(token: &SecretString) -> &str {
        token.expose_secret()
    }

    const T0_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    macro_rules! both {
        ($($name:ident),+ $(,)?) => {
            mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
            mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
        };
    }

    both!(
        a_token_authenticates_and_only_its_hash_is_stored,
        sessions_expire_after_their_absolute_lifetime_and_when_idle,
        last_seen_is_written_at_most_once_a_minute,
        money_needs_a_second_factor_within_five_minutes_on_a_trusted_device,
        rotation_invalidates_the_old_token,
        another_users_session_cannot_be_revoked_and_is_left_alone,
        revoke_all_except_keeps_one,
        a_device_is_trusted_only_after_a_second_factor_and_recognised_by_its_token,
        a_device_token_of_another_user_makes_a_new_device,
        revoking_a_device_ends_its_sessions,
        csrf_token_matches_only_its_session,
        dead_sessions_are_purged,
    );

    fn run<T>(
        database: &Database,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, SessionError>,
    ) -> Result<T, SessionError> {
        database.transaction(work)
    }

    fn ok<T>(result: Result<T, SessionError>) -> T {
        result.unwrap_or_else(|error| panic!("{}: {error}", error.code()))
    }

    fn code<T: std::fmt::Debug>(result: Result<T, SessionError>) -> &'static str {
        match result {
            Ok(value) => panic!("expected an error, got {value:?}"),
            Err(error) => error.code(),
        }
    }

    fn sign_in(database: &Database, now_ms: i64, user_id: u128) -> NewSession {
        ok(run(database, |tx| {
            create(tx, now_ms, user_id, DeviceRef::New { label: "Firefox" })
        }))
    }

    fn authenticate_at(
        database: &Database,
        now_ms: i64,
        token: &SecretString,
    ) -> Result<SessionInfo, SessionError> {
        run(database, |tx| authenticate(tx, now_ms, expose(token)))
    }

    fn a_token_authenticates_and_only_its_hash_is_stored(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let session = sign_in(&database, T0_MS, user_id);
        let token = expose(&session.token);
        assert!(token.starts_with(SESSION_TOKEN_PREFIX));
        assert_eq!(token.len(), SESSION_TOKEN_PREFIX.len() + TOKEN_BODY_CHARS);
        assert!(session.is_new_device());

        let info = ok(authenticate_at(&database, T0_MS + 1_000, &session.token));
        assert_eq!(info.session_id, session.session_id);
        assert_eq!(info.user_id, user_id);
        assert_eq!(info.device_id, session.device_id);
        assert!(!info.device_trusted);
        assert_eq!(info.second_factor_at, None);
        assert_eq!(info.created_at, T0_MS);
        assert_eq!(info.expires_at, T0_MS + SESSION_ABSOLUTE_LIFETIME_MS);

        // Every column of the session and device rows, as bytes: no token appears in them.
        let rows = ok(run(&database, |tx| {
            let mut rows = tx.query("SELECT * FROM identity_sessions", &[])?;
            rows.extend(tx.query("SELECT * FROM identity_devices", &[])?);
            Ok(rows)
        }));
        let secrets = [
            expose(&session.token).to_owned(),
            expose(&session.csrf_token).to_owned(),
            session
                .device_token
                .as_ref()
                .map(|token| expose(token).to_owned())
                .unwrap_or_else(|| panic!("a new device has a token")),
        ];
        for row in &rows {
            for index in 0.. {
                let Ok(value) = row.value(index) else { break };
                let bytes = match value {
                    Value::Text(text) => text.as_bytes().to_vec(),
                    Value::Bytes(bytes) => bytes.clone(),
                    _ => continue,
                };
                for secret in &secrets {
                    let body = &secret.as_bytes()[8..];
                    assert!(
                        !bytes.windows(body.len()).any(|window| window == body),
                        "a token is stored in clear"
                    );
                    let decoded = URL_SAFE_NO_PAD
                        .decode(body)
                        .unwrap_or_else(|error| panic!("{error}"));
                    assert!(
                        !bytes.windows(decoded.len()).any(|window| window == decoded),
                        "a token's random bytes are stored"
                    );
                }
            }
        }
        let stored_hash = ok(run(&database, |tx| {
            Ok(tx
                .query_one("SELECT token_hash FROM identity_sessions", &[])?
                .bytes(0)?)
        }));
        assert_eq!(stored_hash, token_hash(token).to_vec());

        // The last character changed to one it is not (a fixed "A" would be the token itself
        // one time in 64).
        let last = if token.ends_with('A') { 'B' } else { 'A' };
        for bad in [
            "",
            "kinko_s_",
            "not-a-token",
            &token.replace(SESSION_TOKEN_PREFIX, CSRF_TOKEN_PREFIX),
            &format!("{}{last}", &token[..token.len() - 1]),
        ] {
            assert_eq!(
                code(run(&database, |tx| authenticate(tx, T0_MS, bad))),
                "SESSION_INVALID",
                "{bad}"
            );
        }
    }

    fn sessions_expire_after_their_absolute_lifetime_and_when_idle(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");

        // Idle: used at T0 + 29:59 is fine; 30 minutes after that last use, it is over.
        let idle = sign_in(&database, T0_MS, user_id);
        let used_ms = T0_MS + SESSION_IDLE_TIMEOUT_MS - 1;
        ok(authenticate_at(&database, used_ms, &idle.token));
        assert_eq!(
            code(authenticate_at(
                &database,
                used_ms + SESSION_IDLE_TIMEOUT_MS,
                &idle.token
            )),
            "SESSION_EXPIRED"
        );

        // Absolute: used every 10 minutes, it still ends 12 hours after sign-in.
        let busy = sign_in(&database, T0_MS, user_id);
        let mut now_ms = T0_MS;
        while now_ms + 10 * 60_000 < T0_MS + SESSION_ABSOLUTE_LIFETIME_MS {
            now_ms += 10 * 60_000;
            ok(authenticate_at(&database, now_ms, &busy.token));
        }
        assert_eq!(
            code(authenticate_at(
                &database,
                T0_MS + SESSION_ABSOLUTE_LIFETIME_MS,
                &busy.token
            )),
            "SESSION_EXPIRED"
        );
        assert!(
            ok(run(&database, |tx| list_sessions(
                tx,
                T0_MS + SESSION_ABSOLUTE_LIFETIME_MS,
                user_id
            )))
            .is_empty(),
            "expired sessions are not listed"
        );
    }

    fn last_seen_is_written_at_most_once_a_minute(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let session = sign_in(&database, T0_MS, user_id);
        let last_seen = |database: &Database| {
            ok(run(database, |tx| {
                Ok(tx
                    .query_one("SELECT last_seen_at FROM identity_sessions", &[])?
                    .int(0)?)
            }))
        };
        ok(authenticate_at(&database, T0_MS + 59_999, &session.token));
        assert_eq!(last_seen(&database), T0_MS);
        ok(authenticate_at(&database, T0_MS + 60_000, &session.token));
        assert_eq!(last_seen(&database), T0_MS + 60_000);
    }

    fn money_needs_a_second_factor_within_five_minutes_on_a_trusted_device(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let session = sign_in(&database, T0_MS, user_id);
        let info = ok(authenticate_at(&database, T0_MS, &session.token));
        assert_eq!(
            code(require_fresh_for_money(&info, T0_MS)),
            "SESSION_STEP_UP_REQUIRED",
            "no second factor yet"
        );

        let passed_ms = T0_MS + 1_000;
        ok(run(&database, |tx| {
            mark_second_factor(tx, passed_ms, session.session_id)
        }));
        let info = ok(authenticate_at(&database, passed_ms, &session.token));
        assert!(info.device_trusted);
        assert_eq!(info.second_factor_at, Some(passed_ms));
        ok(require_fresh_for_money(&info, passed_ms));
        ok(require_fresh_for_money(
            &info,
            passed_ms + MONEY_FRESHNESS_MS,
        ));
        assert_eq!(
            code(require_fresh_for_money(
                &info,
                passed_ms + MONEY_FRESHNESS_MS + 1
            )),
            "SESSION_STEP_UP_REQUIRED",
            "older than five minutes"
        );
        // A fresh factor on an untrusted device is not enough either.
        let untrusted = SessionInfo {
            device_trusted: false,
            ..info
        };
        assert_eq!(
            code(require_fresh_for_money(&untrusted, passed_ms)),
            "SESSION_STEP_UP_REQUIRED"
        );
    }

    fn rotation_invalidates_the_old_token(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let old = sign_in(&database, T0_MS, user_id);
        let new = ok(run(&database, |tx| rotate(tx, T0_MS + 1, old.session_id)));
        assert_eq!(new.session_id, old.session_id);
        assert_eq!(new.device_id, old.device_id);
        assert!(!new.is_new_device());
        assert_ne!(expose(&new.token), expose(&old.token));
        assert_eq!(
            code(authenticate_at(&database, T0_MS + 2, &old.token)),
            "SESSION_INVALID"
        );
        let info = ok(authenticate_at(&database, T0_MS + 2, &new.token));
        assert_eq!(info.session_id, old.session_id);
        assert_eq!(
            code(info.check_csrf(expose(&old.csrf_token))),
            "SESSION_CSRF_INVALID"
        );
        ok(info.check_csrf(expose(&new.csrf_token)));

        ok(run(&database, |tx| {
            revoke(tx, T0_MS + 3, user_id, old.session_id)
        }));
        assert_eq!(
            code(run(&database, |tx| rotate(tx, T0_MS + 4, old.session_id))),
            "SESSION_INVALID",
            "a revoked session cannot be revived by rotation"
        );
    }

    fn another_users_session_cannot_be_revoked_and_is_left_alone(backend: &str) {
        let (database, _dir) = database(backend);
        let alice = insert_user(&database, T0_MS, "alice@example.com");
        let mallory = insert_user(&database, T0_MS, "mallory@example.com");
        let session = sign_in(&database, T0_MS, alice);
        assert_eq!(
            code(run(&database, |tx| revoke(
                tx,
                T0_MS + 1,
                mallory,
                session.session_id
            ))),
            "SESSION_NOT_FOUND"
        );
        let revoked_at = ok(run(&database, |tx| {
            Ok(tx
                .query_one("SELECT revoked_at FROM identity_sessions", &[])?
                .opt_int(0)?)
        }));
        assert_eq!(revoked_at, None);
        ok(authenticate_at(&database, T0_MS + 2, &session.token));
        assert_eq!(
            code(run(&database, |tx| revoke_device(
                tx,
                T0_MS + 3,
                mallory,
                session.device_id
            ))),
            "DEVICE_NOT_FOUND"
        );
        ok(authenticate_at(&database, T0_MS + 4, &session.token));

        // The owner can, and doing it twice is fine.
        ok(run(&database, |tx| {
            revoke(tx, T0_MS + 5, alice, session.session_id)
        }));
        ok(run(&database, |tx| {
            revoke(tx, T0_MS + 6, alice, session.session_id)
        }));
        assert_eq!(
            code(authenticate_at(&database, T0_MS + 7, &session.token)),
            "SESSION_INVALID"
        );
    }

    fn revoke_all_except_keeps_one(backend: &str) {
        let (database, _dir) = database(backend);
        let alice = insert_user(&database, T0_MS, "alice@example.com");
        let bob = insert_user(&database, T0_MS, "bob@example.com");
        let sessions: Vec<NewSession> = (0..3)
            .map(|offset| sign_in(&database, T0_MS + offset, alice))
            .collect();
        let bobs = sign_in(&database, T0_MS, bob);
        let listed = ok(run(&database, |tx| list_sessions(tx, T0_MS + 10, alice)));
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[0].session_id, sessions[2].session_id, "newest first");
        assert_eq!(listed[0].device_label, "Firefox");

        let ended = ok(run(&database, |tx| {
            revoke_all_except(tx, T0_MS + 10, alice, Some(sessions[1].session_id))
        }));
        assert_eq!(ended, 2);
        assert_eq!(
            code(authenticate_at(&database, T0_MS + 11, &sessions[0].token)),
            "SESSION_INVALID"
        );
        assert_eq!(
            code(authenticate_at(&database, T0_MS + 11, &sessions[2].token)),
            "SESSION_INVALID"
        );
        ok(authenticate_at(&database, T0_MS + 11, &sessions[1].token));
        ok(authenticate_at(&database, T0_MS + 11, &bobs.token));

        let ended = ok(run(&database, |tx| {
            revoke_all_except(tx, T0_MS + 12, alice, None)
        }));
        assert_eq!(ended, 1);
        assert!(ok(run(&database, |tx| list_sessions(tx, T0_MS + 13, alice))).is_empty());
        ok(authenticate_at(&database, T0_MS + 13, &bobs.token));
    }

    fn a_device_is_trusted_only_after_a_second_factor_and_recognised_by_its_token(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let first = ok(run(&database, |tx| {
            create(
                tx,
                T0_MS,
                user_id,
                DeviceRef::New {
                    label: "Mozilla/5.0 (iPhone)\u{7}\n",
                },
            )
        }));
        let device_token = first
            .device_token
            .as_ref()
            .map(|token| expose(token).to_owned())
            .unwrap_or_else(|| panic!("a new device has a token"));
        let devices = ok(run(&database, |tx| list_devices(tx, user_id)));
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].label, "Mozilla/5.0 (iPhone)");
        assert_eq!(devices[0].trusted_at, None);

        // Signing in again from the same device: recognised, still not trusted.
        let second = ok(run(&database, |tx| {
            create(
                tx,
                T0_MS + 1,
                user_id,
                DeviceRef::Presented {
                    device_token: &device_token,
                    label: "ignored",
                },
            )
        }));
        assert_eq!(second.device_id, first.device_id);
        assert!(!second.is_new_device());
        let info = ok(authenticate_at(&database, T0_MS + 2, &second.token));
        assert!(!info.device_trusted);

        ok(run(&database, |tx| {
            mark_second_factor(tx, T0_MS + 3, second.session_id)
        }));
        let devices = ok(run(&database, |tx| list_devices(tx, user_id)));
        assert_eq!(devices[0].trusted_at, Some(T0_MS + 3));
        // Trust belongs to the device: the other session on it sees it too, but has no fresh
        // factor of its own.
        let other = ok(authenticate_at(&database, T0_MS + 4, &first.token));
        assert!(other.device_trusted);
        assert_eq!(
            code(require_fresh_for_money(&other, T0_MS + 4)),
            "SESSION_STEP_UP_REQUIRED"
        );

        // A long label is cut; a device id is not a device token.
        let long = "x".repeat(500);
        let third = ok(run(&database, |tx| {
            create(
                tx,
                T0_MS + 5,
                user_id,
                DeviceRef::Presented {
                    device_token: &first.device_id.to_string(),
                    label: &long,
                },
            )
        }));
        assert!(third.is_new_device());
        let devices = ok(run(&database, |tx| list_devices(tx, user_id)));
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].label.chars().count(), DEVICE_LABEL_MAX_CHARS);
    }

    fn a_device_token_of_another_user_makes_a_new_device(backend: &str) {
        let (database, _dir) = database(backend);
        let alice = insert_user(&database, T0_MS, "alice@example.com");
        let mallory = insert_user(&database, T0_MS, "mallory@example.com");
        let alices = sign_in(&database, T0_MS, alice);
        ok(run(&database, |tx| {
            mark_second_factor(tx, T0_MS + 1, alices.session_id)
        }));
        let alices_device_token = alices
            .device_token
            .as_ref()
            .map(|token| expose(token).to_owned())
            .unwrap_or_else(|| panic!("a new device has a token"));

        let mallorys = ok(run(&database, |tx| {
            create(
                tx,
                T0_MS + 2,
                mallory,
                DeviceRef::Presented {
                    device_token: &alices_device_token,
                    label: "curl",
                },
            )
        }));
        assert!(mallorys.is_new_device());
        assert_ne!(mallorys.device_id, alices.device_id);
        let info = ok(authenticate_at(&database, T0_MS + 3, &mallorys.token));
        assert!(
            !info.device_trusted,
            "Alice's trusted device is not lent out"
        );
        assert_eq!(ok(run(&database, |tx| list_devices(tx, mallory))).len(), 1);
        assert_eq!(ok(run(&database, |tx| list_devices(tx, alice))).len(), 1);
    }

    fn revoking_a_device_ends_its_sessions(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let phone = sign_in(&database, T0_MS, user_id);
        let laptop = sign_in(&database, T0_MS, user_id);
        let phone_token = phone
            .device_token
            .as_ref()
            .map(|token| expose(token).to_owned())
            .unwrap_or_else(|| panic!("a new device has a token"));
        let ended = ok(run(&database, |tx| {
            revoke_device(tx, T0_MS + 1, user_id, phone.device_id)
        }));
        assert_eq!(ended, 1);
        assert_eq!(
            code(authenticate_at(&database, T0_MS + 2, &phone.token)),
            "SESSION_INVALID"
        );
        ok(authenticate_at(&database, T0_MS + 2, &laptop.token));
        let devices = ok(run(&database, |tx| list_devices(tx, user_id)));
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].device_id, laptop.device_id);
        // The revoked device's token no longer identifies it.
        let again = ok(run(&database, |tx| {
            create(
                tx,
                T0_MS + 3,
                user_id,
                DeviceRef::Presented {
                    device_token: &phone_token,
                    label: "phone",
                },
            )
        }));
        assert!(again.is_new_device());
    }

    fn csrf_token_matches_only_its_session(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let first = sign_in(&database, T0_MS, user_id);
        let second = sign_in(&database, T0_MS, user_id);
        let info = ok(authenticate_at(&database, T0_MS, &first.token));
        ok(info.check_csrf(expose(&first.csrf_token)));
        assert_eq!(
            code(info.check_csrf(expose(&second.csrf_token))),
            "SESSION_CSRF_INVALID"
        );
        assert_eq!(code(info.check_csrf("")), "SESSION_CSRF_INVALID");
        assert_eq!(
            code(info.check_csrf(expose(&first.token))),
            "SESSION_CSRF_INVALID",
            "the session token is not the CSRF token"
        );
    }

    fn dead_sessions_are_purged(backend: &str) {
        let (database, _dir) = database(backend);
        let user_id = insert_user(&database, T0_MS, "alice@example.com");
        let revoked = sign_in(&database, T0_MS, user_id);
        let _expired = sign_in(&database, T0_MS - SESSION_ABSOLUTE_LIFETIME_MS, user_id);
        let live = sign_in(&database, T0_MS, user_id);
        ok(run(&database, |tx| {
            revoke(tx, T0_MS, user_id, revoked.session_id)
        }));
        let deleted = ok(run(&database, |tx| purge_dead_sessions(tx, T0_MS + 1, 1)));
        assert_eq!(deleted, 1, "bounded by rows_max");
        let deleted = ok(run(&database, |tx| purge_dead_sessions(tx, T0_MS + 1, 100)));
        assert_eq!(deleted, 1);
        let remaining = ok(run(&database, |tx| {
            Ok(tx
                .query_one("SELECT COUNT(*) FROM identity_sessions", &[])?
                .int(0)?)
        }));
        assert_eq!(remaining, 1);
        ok(authenticate_at(&database, T0_MS + 2, &live.token));
    }
}
