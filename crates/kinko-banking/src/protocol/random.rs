//! Random tokens (request URIs, codes, access tokens) and the hash under which they are
//! stored: the store never holds a usable bearer secret, only its SHA-256.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Bytes of entropy in every token the bank hands out (256 bits).
pub const TOKEN_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError;

/// A fresh URL-safe token carrying `TOKEN_BYTES` of OS randomness.
pub fn token() -> Result<String, RandomError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|_| RandomError)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Fills `buffer` from the OS random source.
pub fn fill(buffer: &mut [u8]) -> Result<(), RandomError> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(buffer)
        .map_err(|_| RandomError)
}

/// The lowercase hex SHA-256 of a token: the form it is stored and looked up in.
pub fn stored_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// BASE64URL(SHA-256(input)) without padding: PKCE S256, DPoP `ath`, JWK thumbprints.
pub fn sha256_b64url(input: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(input))
}
