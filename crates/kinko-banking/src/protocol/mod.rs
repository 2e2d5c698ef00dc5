//! The bank protocol's shared parts (`docs/BANK-PROTOCOL.md`): compact JWS with ES256 only,
//! random tokens, and what a client sends — client assertions (RFC 7523), DPoP proofs
//! (RFC 9449) and PKCE challenges (RFC 7636). Kinko's bank client and the sandbox bank both use
//! these, so the two ends cannot drift apart.

pub mod jws;
pub mod random;

use p256::ecdsa::SigningKey;
use serde_json::{Map, Value};

/// Makes a client assertion: `iss` = `sub` = client id, `aud`, a fresh `jti`, valid for
/// `lifetime_ms`.
pub fn make_client_assertion(
    client_id: &str,
    audience: &str,
    key: &SigningKey,
    now_ms: i64,
    lifetime_ms: i64,
) -> Result<String, jws::JwsError> {
    let jti = random::token().map_err(|_| jws::JwsError::Malformed)?;
    let mut header = Map::new();
    header.insert("typ".to_owned(), Value::from("JWT"));
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now_ms / 1_000,
        "exp": (now_ms + lifetime_ms) / 1_000,
        "jti": jti,
    });
    match claims {
        Value::Object(claims) => jws::sign(header, &claims, key),
        _ => Err(jws::JwsError::Malformed),
    }
}

/// Makes a DPoP proof for one request: `htm`, `htu`, `iat`, a fresh `jti`, and `ath` when an
/// access token goes with it.
pub fn make_dpop_proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now_ms: i64,
) -> Result<String, jws::JwsError> {
    let jwk = jws::Jwk::from_verifying_key(key.verifying_key())?;
    let mut header = Map::new();
    header.insert("typ".to_owned(), Value::from("dpop+jwt"));
    header.insert("jwk".to_owned(), jwk.to_json());
    let mut claims = Map::new();
    let jti = random::token().map_err(|_| jws::JwsError::Malformed)?;
    claims.insert("jti".to_owned(), Value::from(jti));
    claims.insert("htm".to_owned(), Value::from(method));
    claims.insert("htu".to_owned(), Value::from(url));
    claims.insert("iat".to_owned(), Value::from(now_ms / 1_000));
    if let Some(token) = access_token {
        claims.insert(
            "ath".to_owned(),
            Value::from(random::sha256_b64url(token.as_bytes())),
        );
    }
    jws::sign(header, &claims, key)
}

/// The S256 PKCE challenge for a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    random::sha256_b64url(verifier.as_bytes())
}
