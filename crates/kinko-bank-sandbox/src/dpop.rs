//! DPoP proofs (RFC 9449): an access token is bound to a key the client holds, and every
//! use of the token comes with a fresh JWT signed by that key for this method and URL, so a
//! token copied off the wire or out of a log is useless without the key.

use kinko_ledger::StoreError;
use kinko_store::sql::Database;
use serde_json::Value;

use crate::jws;

/// How far a proof's `iat` may be from the bank's clock, either way.
pub const IAT_WINDOW_MS: i64 = 60_000;

/// A checked proof: the thumbprint of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    #[error("no DPoP proof was presented")]
    Missing,
    #[error("the DPoP proof is not a well-formed ES256 dpop+jwt with a public JWK")]
    Malformed,
    #[error("the DPoP proof's signature does not verify")]
    SignatureInvalid,
    #[error("the DPoP proof is for another method or URL")]
    TargetMismatch,
    #[error("the DPoP proof's iat is outside the accepted window")]
    Stale,
    #[error("the DPoP proof's ath does not match the access token")]
    TokenHashMismatch,
    #[error("the DPoP proof is signed by another key than the token is bound to")]
    KeyMismatch,
    #[error("the DPoP proof was already used")]
    Replayed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The URL as `htu` compares it: without query and fragment (RFC 9449 §4.3).
fn without_query(url: &str) -> &str {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    &url[..end]
}

/// Checks a proof for `method` on `url`. With `access_token`, the proof must carry its hash
/// in `ath`. The proof's `jti` is spent on success.
pub fn verify(
    database: &Database,
    proof: Option<&str>,
    method: &str,
    url: &str,
    access_token: Option<&str>,
    now_ms: i64,
) -> Result<Proof, DpopError> {
    let proof = proof.ok_or(DpopError::Missing)?;
    // `jsonwebtoken` parses the proof and checks its signature with the key in its header;
    // `jws` refuses any alg but ES256, a typ other than dpop+jwt, `crit`, and keys that
    // are not public P-256 points.
    let (jwk, verified) =
        jws::verify_with_header_jwk(proof, "dpop+jwt").map_err(|error| match error {
            jws::JwsError::SignatureInvalid => DpopError::SignatureInvalid,
            _ => DpopError::Malformed,
        })?;
    let claims = verified.claims;
    let htm = claims.get("htm").and_then(Value::as_str);
    let htu = claims.get("htu").and_then(Value::as_str).map(without_query);
    if htm != Some(method) || htu != Some(without_query(url)) {
        return Err(DpopError::TargetMismatch);
    }
    let issued_at_ms = claims
        .get("iat")
        .and_then(Value::as_i64)
        .and_then(|seconds| seconds.checked_mul(1_000))
        .ok_or(DpopError::Malformed)?;
    if (issued_at_ms - now_ms).abs() > IAT_WINDOW_MS {
        return Err(DpopError::Stale);
    }
    if let Some(token) = access_token {
        let expected = crate::random::sha256_b64url(token.as_bytes());
        // `ath` is a hash of a secret the client already showed: equality need not be
        // constant-time, but costs nothing to make so.
        let presented = claims.get("ath").and_then(Value::as_str).unwrap_or("");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_bytes(),
            expected.as_bytes(),
        )) {
            return Err(DpopError::TokenHashMismatch);
        }
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|jti| !jti.is_empty() && jti.len() <= 256)
        .ok_or(DpopError::Malformed)?;
    let jkt = jwk.thumbprint();
    // A proof is remembered for as long as its iat could still be accepted.
    let purpose = format!("dpop:{jkt}");
    if !crate::store::remember_jti(
        database,
        &purpose,
        jti,
        issued_at_ms + IAT_WINDOW_MS,
        now_ms,
    )? {
        return Err(DpopError::Replayed);
    }
    Ok(Proof { jkt })
}

/// The client's side makes the proof; it lives with the protocol so both ends share it.
pub use kinko_banking::protocol::make_dpop_proof as make_proof;
