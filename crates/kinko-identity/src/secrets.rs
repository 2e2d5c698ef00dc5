//! Encryption of secrets at rest: the secrets Kinko must be able to read back (TOTP seeds) are
//! sealed with XChaCha20-Poly1305 under one server key before they reach the database.
//!
//! A sealed blob is `version (1 byte) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`. The
//! version names the key, so a future key can be introduced while blobs sealed under key 1
//! still open (rotation: add the new key, reseal row by row, retire the old one). The nonce is
//! random per seal; with 192-bit nonces, random choice is safe for any number of seals.
//!
//! Every seal binds *associated data* chosen by the caller, naming the row and column the blob
//! belongs to (e.g. `identity_totp.secret_encrypted:<user id>`): a blob copied into another
//! user's row, or into another column, does not open.
//!
//! Where the key comes from is decided so that production cannot silently run with a throwaway
//! key ([`SecretBox::load`]):
//! - `KINKO_SECRET_KEY` (64 hex digits = 32 bytes), when set, always wins;
//! - else `KINKO_SECRET_KEY_FILE` names a file holding it (64 hex digits, mode 0600, never
//!   created by Kinko): the way to keep the key outside the data directory, so that a copy of
//!   the data (a backup, a stolen disk image of the data volume) does not carry its key. Both
//!   set is refused as ambiguous; a missing or exposed file is refused, never replaced;
//! - otherwise, with the embedded SQLite store only, `<data-dir>/secret.key` is read, or created
//!   on first start (mode 0600): the key lives next to the data it protects, like the database
//!   file itself, which is what a single-process embedded install can do;
//! - otherwise (PostgreSQL) start-up fails with `SECRET_KEY_MISSING`: several processes share
//!   one database and must share one key, which only the operator can hand to all of them.

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use kinko_core::{ErrorCode, ErrorKind};
use kinko_store::StoreLocation;
use rand::TryRngCore;
use zeroize::Zeroizing;

/// The environment variable that holds the key as 64 hex digits.
pub const SECRET_KEY_ENV: &str = "KINKO_SECRET_KEY";
/// The environment variable that names a key file outside the data directory.
pub const SECRET_KEY_FILE_ENV: &str = "KINKO_SECRET_KEY_FILE";
/// The key file inside a SQLite data directory.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// The version byte of blobs sealed under the current key.
pub const KEY_VERSION_CURRENT: u8 = 1;

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const HEADER_BYTES: usize = 1 + NONCE_BYTES;
/// A key file is 64 hex digits and a newline; anything much larger is not a key file.
const KEY_FILE_MAX_BYTES: u64 = 1_024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "{SECRET_KEY_ENV} must be set when the data lives in PostgreSQL: every process must share one key"
    )]
    KeyMissing,
    #[error("the secret key must be 64 hexadecimal digits (32 bytes)")]
    KeyInvalid,
    #[error("set {SECRET_KEY_ENV} or {SECRET_KEY_FILE_ENV}, not both")]
    KeyAmbiguous,
    #[error("the secret key file {path} could not be used: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error(
        "the secret key file {path} is readable by other users: make it private (chmod 600) or move the key to {SECRET_KEY_ENV}"
    )]
    KeyFileExposed { path: PathBuf },
    #[error("the sealed secret is malformed")]
    Malformed,
    #[error("the sealed secret names key version {0}, which this process does not have")]
    UnknownKeyVersion(u8),
    /// Tampered with, sealed for another row, or sealed under another key: AEAD cannot tell
    /// which, and neither should we.
    #[error("the sealed secret does not open")]
    OpenFailed,
    #[error("the operating system's random generator failed")]
    Random,
}

impl ErrorCode for SecretError {
    fn code(&self) -> &'static str {
        match self {
            SecretError::KeyMissing => "SECRET_KEY_MISSING",
            SecretError::KeyInvalid => "SECRET_KEY_INVALID",
            SecretError::KeyAmbiguous => "SECRET_KEY_AMBIGUOUS",
            SecretError::KeyFile { .. } => "SECRET_KEY_FILE_FAILED",
            SecretError::KeyFileExposed { .. } => "SECRET_KEY_FILE_EXPOSED",
            SecretError::Malformed => "SECRET_MALFORMED",
            SecretError::UnknownKeyVersion(_) => "SECRET_KEY_VERSION_UNKNOWN",
            SecretError::OpenFailed => "SECRET_OPEN_FAILED",
            SecretError::Random => "SECRET_RANDOM_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        // Every one of these is a configuration problem or corrupt data, never the client's
        // fault: the details go to the log.
        ErrorKind::Internal
    }
}

/// Fills `buffer` from the operating system's CSPRNG.
pub(crate) fn fill_random(buffer: &mut [u8]) -> Result<(), SecretError> {
    rand::rngs::OsRng
        .try_fill_bytes(buffer)
        .map_err(|_| SecretError::Random)
}

/// The inputs that decide where the key comes from, passed explicitly so the decision can be
/// tested without touching the process environment.
#[derive(Clone, Copy)]
pub struct KeySource<'a> {
    /// The value of `KINKO_SECRET_KEY`, if the variable is set.
    pub env_value: Option<&'a str>,
    /// The path in `KINKO_SECRET_KEY_FILE`, if the variable is set.
    pub key_file: Option<&'a Path>,
    /// Where the data lives.
    pub store: &'a StoreLocation,
}

impl fmt::Debug for KeySource<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("KeySource")
            .field("env_value", &self.env_value.map(|_| "<redacted>"))
            .field("store", &self.store.kind())
            .finish()
    }
}

/// Where the key of a [`SecretBox`] came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Environment,
    FileCreated(PathBuf),
    FileExisting(PathBuf),
    /// Given directly to [`SecretBox::from_key_hex`].
    Explicit,
}

/// Seals and opens secrets under the server key. The key is zeroized on drop and never printed.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// A separate key for [`SecretBox::keyed_hash`], derived from the server key so the two
    /// uses never share key material.
    hash_key: Zeroizing<[u8; KEY_BYTES]>,
    origin: KeyOrigin,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SecretBox")
            .field("key_version", &KEY_VERSION_CURRENT)
            .field("origin", &self.origin)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SecretBox {
    /// Loads the key from the process environment and the store location (see the module doc).
    pub fn from_environment(store: &StoreLocation) -> Result<Self, SecretError> {
        let env_value = match std::env::var_os(SECRET_KEY_ENV) {
            None => None,
            Some(value) => Some(value.into_string().map_err(|_| SecretError::KeyInvalid)?),
        };
        let env_value = env_value.map(Zeroizing::new);
        let key_file = std::env::var_os(SECRET_KEY_FILE_ENV).map(PathBuf::from);
        Self::load(KeySource {
            env_value: env_value.as_deref().map(String::as_str),
            key_file: key_file.as_deref(),
            store,
        })
    }

    /// Decides where the key comes from: the environment value if present (a malformed one is
    /// an error, never ignored); else the SQLite data directory's key file, created if missing;
    /// else `SECRET_KEY_MISSING`.
    pub fn load(source: KeySource<'_>) -> Result<Self, SecretError> {
        if source.env_value.is_some() && source.key_file.is_some() {
            return Err(SecretError::KeyAmbiguous);
        }
        if let Some(path) = source.key_file {
            let key = read_key_file(path)?.ok_or_else(|| SecretError::KeyFile {
                path: path.to_path_buf(),
                reason: "it does not exist (Kinko never creates this file)".to_owned(),
            })?;
            return Ok(Self::new(&key, KeyOrigin::FileExisting(path.to_path_buf())));
        }
        if let Some(hex) = source.env_value {
            let key = parse_key_hex(hex)?;
            return Ok(Self::new(&key, KeyOrigin::Environment));
        }
        match source.store {
            StoreLocation::Postgres { .. } => Err(SecretError::KeyMissing),
            StoreLocation::Sqlite { data_dir } => {
                let (key, origin) = load_or_create_key_file(data_dir)?;
                Ok(Self::new(&key, origin))
            }
        }
    }

    /// A box over an explicitly given key (64 hex digits), for tools and tests.
    pub fn from_key_hex(hex: &str) -> Result<Self, SecretError> {
        let key = parse_key_hex(hex)?;
        Ok(Self::new(&key, KeyOrigin::Explicit))
    }

    fn new(key: &[u8; KEY_BYTES], origin: KeyOrigin) -> Self {
        use hmac::Mac as _;
        let mut hash_key = Zeroizing::new([0u8; KEY_BYTES]);
        // HMAC accepts a key of any length, so this cannot fail; a zero key is never used
        // because `new_from_slice` on a 32-byte key always succeeds.
        if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
            mac.update(b"kinko.keyed-hash.v1");
            hash_key.copy_from_slice(&mac.finalize().into_bytes());
        }
        Self {
            cipher: XChaCha20Poly1305::new(&(*key).into()),
            hash_key,
            origin,
        }
    }

    /// A 32-byte key for one purpose (`domain`), derived from the server key with
    /// HMAC-SHA-256: every instance sharing the server key derives the same one.
    pub fn derived_key(&self, domain: &str) -> Zeroizing<[u8; KEY_BYTES]> {
        use hmac::Mac as _;
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.hash_key[..]) {
            mac.update(b"kinko.derived_key\0");
            mac.update(domain.as_bytes());
            key.copy_from_slice(&mac.finalize().into_bytes());
        }
        key
    }

    /// A keyed hash (HMAC-SHA-256, lowercase hex) of `data` in `domain`: lets Kinko recognise
    /// a value it must never store (a cash-card PIN, an account number) without keeping it,
    /// and without anyone lacking the server key being able to brute-force the hash.
    pub fn keyed_hash(&self, domain: &str, data: &[u8]) -> String {
        use hmac::Mac as _;
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.hash_key[..]) else {
            return String::new();
        };
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    pub fn origin(&self) -> &KeyOrigin {
        &self.origin
    }

    /// Encrypts `plaintext`, bound to `associated` (which is authenticated, not stored).
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_BYTES];
        fill_random(&mut nonce)?;
        let aad = versioned_aad(KEY_VERSION_CURRENT, associated);
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Only a plaintext beyond the cipher's limit (~256 GiB) fails here.
            .map_err(|_| SecretError::Malformed)?;
        let mut sealed = Vec::with_capacity(HEADER_BYTES + ciphertext.len());
        sealed.push(KEY_VERSION_CURRENT);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts a blob made by [`SecretBox::seal`] with the same associated data.
    pub fn open(
        &self,
        sealed: &[u8],
        associated: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        if sealed.len() < HEADER_BYTES + TAG_BYTES {
            return Err(SecretError::Malformed);
        }
        let (header, ciphertext) = sealed.split_at(HEADER_BYTES);
        let (version, nonce) = header.split_at(1);
        let version = version[0];
        if version != KEY_VERSION_CURRENT {
            return Err(SecretError::UnknownKeyVersion(version));
        }
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| SecretError::Malformed)?;
        let aad = versioned_aad(version, associated);
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SecretError::OpenFailed)
    }
}

/// The version byte is authenticated too, so a blob relabelled with another version fails.
fn versioned_aad(version: u8, associated: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + associated.len());
    aad.push(version);
    aad.extend_from_slice(associated);
    aad
}

fn parse_key_hex(text: &str) -> Result<Zeroizing<[u8; KEY_BYTES]>, SecretError> {
    let digits = text.trim().as_bytes();
    if digits.len() != KEY_BYTES * 2 {
        return Err(SecretError::KeyInvalid);
    }
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        let high = hex_value(pair[0]).ok_or(SecretError::KeyInvalid)?;
        let low = hex_value(pair[1]).ok_or(SecretError::KeyInvalid)?;
        *byte = (high << 4) | low;
    }
    Ok(key)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn to_hex(bytes: &[u8]) -> Zeroizing<String> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn file_error(path: &Path, error: &std::io::Error) -> SecretError {
    SecretError::KeyFile {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn load_or_create_key_file(
    data_dir: &Path,
) -> Result<(Zeroizing<[u8; KEY_BYTES]>, KeyOrigin), SecretError> {
    let path = data_dir.join(SECRET_KEY_FILE);
    match read_key_file(&path)? {
        Some(key) => Ok((key, KeyOrigin::FileExisting(path))),
        None => create_key_file(data_dir, &path),
    }
}

/// `Ok(None)` when the file does not exist; any other problem is an error, never "create a
/// new key" (which would orphan every secret sealed under the old one).
fn read_key_file(path: &Path) -> Result<Option<Zeroizing<[u8; KEY_BYTES]>>, SecretError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(file_error(path, &error)),
    };
    refuse_if_exposed(path, &file)?;
    let mut text = Zeroizing::new(String::new());
    file.take(KEY_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(|error| file_error(path, &error))?;
    parse_key_hex(&text)
        .map(Some)
        .map_err(|_| SecretError::KeyFile {
            path: path.to_path_buf(),
            reason: "not 64 hexadecimal digits".to_owned(),
        })
}

#[cfg(unix)]
fn refuse_if_exposed(path: &Path, file: &fs::File) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file
        .metadata()
        .map_err(|error| file_error(path, &error))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretError::KeyFileExposed {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_if_exposed(_path: &Path, _file: &fs::File) -> Result<(), SecretError> {
    Ok(())
}

/// Writes a fresh key to a private temporary file, then links it into place. The link fails if
/// another process created the key first, in which case that key is used: two processes
/// starting together on one data directory end up with one key, and a crash never leaves a
/// half-written key file behind.
fn create_key_file(
    data_dir: &Path,
    path: &Path,
) -> Result<(Zeroizing<[u8; KEY_BYTES]>, KeyOrigin), SecretError> {
    fs::create_dir_all(data_dir).map_err(|error| file_error(data_dir, &error))?;
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    fill_random(key.as_mut_slice())?;
    let mut suffix = [0u8; 8];
    fill_random(&mut suffix)?;
    let temporary = data_dir.join(format!(".{SECRET_KEY_FILE}.{}.tmp", *to_hex(&suffix)));
    let written = write_private(&temporary, &key);
    let linked = written.and_then(|()| match fs::hard_link(&temporary, path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(file_error(path, &error)),
    });
    // The temporary name is removed whatever happened; failing to remove it leaves a stray
    // private file, which is not worth failing start-up over, but is worth a log line.
    if let Err(error) = fs::remove_file(&temporary)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %temporary.display(), %error, "could not remove a temporary key file");
    }
    if linked? {
        sync_directory(data_dir)?;
        Ok((key, KeyOrigin::FileCreated(path.to_path_buf())))
    } else {
        let key = read_key_file(path)?.ok_or_else(|| SecretError::KeyFile {
            path: path.to_path_buf(),
            reason: "disappeared while being created".to_owned(),
        })?;
        Ok((key, KeyOrigin::FileExisting(path.to_path_buf())))
    }
}

fn write_private(path: &Path, key: &[u8; KEY_BYTES]) -> Result<(), SecretError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| file_error(path, &error))?;
    let mut text = to_hex(key);
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| file_error(path, &error))
}

#[cfg(unix)]
fn sync_directory(dir: &Path) -> Result<(), SecretError> {
    fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| file_error(dir, &error))
}

#[cfg(not(unix))]
fn sync_directory(_dir: &Path) -> Result<(), SecretError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn secret_box() -> SecretBox {
        SecretBox::from_key_hex(KEY_HEX).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn a_keyed_hash_depends_on_the_key_the_domain_and_the_data() {
        let one = secret_box();
        let other = SecretBox::from_key_hex(
            "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let hash = one.keyed_hash("pin", b"1234");
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, one.keyed_hash("pin", b"1234"), "deterministic");
        assert_ne!(hash, other.keyed_hash("pin", b"1234"), "keyed");
        assert_ne!(hash, one.keyed_hash("account", b"1234"), "domain-separated");
        assert_ne!(hash, one.keyed_hash("pin", b"1235"));
        // Domain and data are separated, so moving a byte across the boundary changes it.
        assert_ne!(one.keyed_hash("ab", b"c"), one.keyed_hash("a", b"bc"));
    }

    #[test]
    fn a_sealed_secret_opens_with_the_same_associated_data() {
        let secret_box = secret_box();
        let sealed = secret_box
            .seal(b"seed of twenty bytes", b"row-1")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(sealed[0], KEY_VERSION_CURRENT);
        assert_eq!(sealed.len(), HEADER_BYTES + 20 + TAG_BYTES);
        assert!(
            !sealed
                .windows(b"seed".len())
                .any(|window| window == b"seed"),
            "the plaintext does not appear in the blob"
        );
        let opened = secret_box
            .open(&sealed, b"row-1")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(opened.as_slice(), b"seed of twenty bytes");
        // A fresh nonce each time: sealing the same secret twice gives different blobs.
        let again = secret_box
            .seal(b"seed of twenty bytes", b"row-1")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_ne!(sealed, again);
    }

    #[test]
    fn any_changed_byte_makes_the_blob_refuse_to_open() {
        let secret_box = secret_box();
        let sealed = secret_box
            .seal(b"secret", b"row-1")
            .unwrap_or_else(|error| panic!("{error}"));
        // Every byte after the version: nonce, ciphertext and tag are all authenticated.
        for index in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert_eq!(
                secret_box.open(&tampered, b"row-1").map(|_| ()),
                Err(SecretError::OpenFailed),
                "byte {index}"
            );
        }
        let mut relabelled = sealed.clone();
        relabelled[0] = 2;
        assert_eq!(
            secret_box.open(&relabelled, b"row-1").map(|_| ()),
            Err(SecretError::UnknownKeyVersion(2))
        );
        assert_eq!(
            secret_box
                .open(&sealed[..HEADER_BYTES], b"row-1")
                .map(|_| ()),
            Err(SecretError::Malformed)
        );
    }

    #[test]
    fn a_blob_copied_to_another_row_or_opened_under_another_key_refuses() {
        let secret_box = secret_box();
        let sealed = secret_box
            .seal(b"secret", b"identity_totp:user-1")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            secret_box
                .open(&sealed, b"identity_totp:user-2")
                .map(|_| ()),
            Err(SecretError::OpenFailed)
        );
        let other = SecretBox::from_key_hex(&KEY_HEX.replace("00", "ff"))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            other.open(&sealed, b"identity_totp:user-1").map(|_| ()),
            Err(SecretError::OpenFailed)
        );
    }

    #[test]
    fn the_environment_key_wins_and_a_bad_one_is_refused_not_ignored() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let sqlite = StoreLocation::Sqlite {
            data_dir: dir.path().to_path_buf(),
        };
        let from_env = SecretBox::load(KeySource {
            key_file: None,
            env_value: Some(KEY_HEX),
            store: &sqlite,
        })
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(from_env.origin(), &KeyOrigin::Environment);
        assert!(
            !dir.path().join(SECRET_KEY_FILE).exists(),
            "no key file is written when the environment gives the key"
        );
        let sealed = from_env
            .seal(b"x", b"a")
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(secret_box().open(&sealed, b"a").is_ok());

        for bad in [
            "",
            "00",
            &KEY_HEX[..62],
            &format!("{KEY_HEX}00"),
            &KEY_HEX.replace('0', "g"),
        ] {
            let refused = SecretBox::load(KeySource {
                key_file: None,
                env_value: Some(bad),
                store: &sqlite,
            });
            assert_eq!(refused.map(|_| ()), Err(SecretError::KeyInvalid), "{bad:?}");
        }
        assert!(!dir.path().join(SECRET_KEY_FILE).exists());
    }

    /// `KINKO_SECRET_KEY_FILE`: a key kept outside the data directory, for either store; never
    /// created, never replaced, refused when exposed or when the environment also holds a key.
    #[test]
    fn a_key_file_outside_the_data_directory_is_used_and_never_created() {
        let data = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let keys = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let sqlite = StoreLocation::Sqlite {
            data_dir: data.path().to_path_buf(),
        };
        let postgres = StoreLocation::Postgres {
            url: "postgres://db.example/kinko".to_owned(),
        };
        let path = keys.path().join("kinko.key");
        let missing = SecretBox::load(KeySource {
            key_file: Some(&path),
            env_value: None,
            store: &sqlite,
        });
        assert!(matches!(missing, Err(SecretError::KeyFile { .. })));
        assert!(!path.exists(), "the named file is never created");
        assert!(!data.path().join(SECRET_KEY_FILE).exists());
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap_or_else(|error| panic!("{error}"));
            writeln!(file, "{KEY_HEX}").unwrap_or_else(|error| panic!("{error}"));
        }
        for store in [&sqlite, &postgres] {
            let from_file = SecretBox::load(KeySource {
                key_file: Some(&path),
                env_value: None,
                store,
            })
            .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(from_file.origin(), &KeyOrigin::FileExisting(path.clone()));
            let sealed = from_file
                .seal(b"x", b"a")
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(secret_box().open(&sealed, b"a").is_ok(), "the same key");
        }
        assert!(!data.path().join(SECRET_KEY_FILE).exists());
        let both = SecretBox::load(KeySource {
            key_file: Some(&path),
            env_value: Some(KEY_HEX),
            store: &sqlite,
        });
        assert_eq!(both.map(|_| ()), Err(SecretError::KeyAmbiguous));
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|error| panic!("{error}"));
        }
        let exposed = SecretBox::load(KeySource {
            key_file: Some(&path),
            env_value: None,
            store: &sqlite,
        });
        assert!(matches!(exposed, Err(SecretError::KeyFileExposed { .. })));
    }

    #[test]
    fn postgres_without_a_key_in_the_environment_refuses_to_start() {
        let postgres = StoreLocation::Postgres {
            url: "postgres://db.example/kinko".to_owned(),
        };
        let refused = SecretBox::load(KeySource {
            key_file: None,
            env_value: None,
            store: &postgres,
        });
        let error = refused.map(|_| ()).err();
        assert_eq!(error, Some(SecretError::KeyMissing));
        assert_eq!(error.map(|e| e.code()), Some("SECRET_KEY_MISSING"));
        let accepted = SecretBox::load(KeySource {
            key_file: None,
            env_value: Some(KEY_HEX),
            store: &postgres,
        });
        assert!(accepted.is_ok());
    }

    #[test]
    fn the_sqlite_key_file_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let data_dir = dir.path().join("kinko-data");
        let sqlite = StoreLocation::Sqlite {
            data_dir: data_dir.clone(),
        };
        let source = KeySource {
            key_file: None,
            env_value: None,
            store: &sqlite,
        };
        let first = SecretBox::load(source).unwrap_or_else(|error| panic!("{error}"));
        let path = data_dir.join(SECRET_KEY_FILE);
        assert_eq!(first.origin(), &KeyOrigin::FileCreated(path.clone()));
        let contents = fs::read_to_string(&path).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(contents.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path)
                .unwrap_or_else(|error| panic!("{error}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(&data_dir)
            .unwrap_or_else(|error| panic!("{error}"))
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

        let sealed = first
            .seal(b"seed", b"row")
            .unwrap_or_else(|error| panic!("{error}"));
        let second = SecretBox::load(source).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(second.origin(), &KeyOrigin::FileExisting(path.clone()));
        let opened = second
            .open(&sealed, b"row")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(opened.as_slice(), b"seed");
        assert_eq!(
            fs::read_to_string(&path).unwrap_or_else(|error| panic!("{error}")),
            contents,
            "the file is not rewritten"
        );
    }

    #[test]
    fn a_damaged_or_exposed_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
        let sqlite = StoreLocation::Sqlite {
            data_dir: dir.path().to_path_buf(),
        };
        let source = KeySource {
            key_file: None,
            env_value: None,
            store: &sqlite,
        };
        let path = dir.path().join(SECRET_KEY_FILE);
        write_private(&path, &[7u8; KEY_BYTES]).unwrap_or_else(|error| panic!("{error}"));
        fs::write(&path, "not a key\n").unwrap_or_else(|error| panic!("{error}"));
        let damaged = SecretBox::load(source).map(|_| ()).err();
        assert_eq!(
            damaged.as_ref().map(ErrorCode::code),
            Some("SECRET_KEY_FILE_FAILED")
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap_or_else(|error| panic!("{error}")),
            "not a key\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::write(&path, format!("{KEY_HEX}\n")).unwrap_or_else(|error| panic!("{error}"));
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
                .unwrap_or_else(|error| panic!("{error}"));
            let exposed = SecretBox::load(source).map(|_| ()).err();
            assert_eq!(exposed, Some(SecretError::KeyFileExposed { path }));
        }
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let text = format!("{:?}", secret_box());
        assert!(text.contains("redacted"));
        assert!(!text.contains("0102"));
        let source = format!(
            "{:?}",
            KeySource {
                key_file: None,
                env_value: Some(KEY_HEX),
                store: &StoreLocation::Postgres {
                    url: "postgres://x/y".to_owned()
                },
            }
        );
        assert!(!source.contains("0102"), "{source}");
    }
}
