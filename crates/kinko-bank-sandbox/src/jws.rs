//! Compact JWS with ES256 only (RFC 7515/7518) and public P-256 JWKs (RFC 7517) with their
//! thumbprints (RFC 7638). Only the framing is here: the ECDSA signature is made and checked
//! by the `p256` crate. Every algorithm other than ES256 — `none` above all — is refused, so
//! no token chooses how it is verified.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JWS longer than this is refused before any decoding (a bound on work per request).
pub const JWS_LENGTH_MAX_BYTES: usize = 8_192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the JWS is not three base64url parts of JSON")]
    Malformed,
    #[error("the JWS is longer than {JWS_LENGTH_MAX_BYTES} bytes")]
    TooLong,
    #[error("only ES256 is accepted")]
    AlgorithmRefused,
    #[error("the key is not a public P-256 JWK")]
    KeyInvalid,
    #[error("the signature does not verify")]
    SignatureInvalid,
}

/// A public P-256 key as a JWK. Only the members RFC 7638 hashes are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
}

impl Jwk {
    /// Parses a JWK from JSON, refusing anything but a public EC P-256 key: a JWK carrying
    /// the private part `d` is refused rather than silently accepted.
    pub fn from_json(value: &Value) -> Result<Self, JwsError> {
        let object = value.as_object().ok_or(JwsError::KeyInvalid)?;
        if object.contains_key("d") {
            return Err(JwsError::KeyInvalid);
        }
        let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|_| JwsError::KeyInvalid)?;
        jwk.verifying_key()?;
        Ok(jwk)
    }

    pub fn from_verifying_key(key: &VerifyingKey) -> Result<Self, JwsError> {
        let point = key.to_sec1_point(false);
        let bytes = point.as_bytes();
        // Uncompressed SEC1: 0x04 || x (32 bytes) || y (32 bytes).
        if bytes.len() != 65 {
            return Err(JwsError::KeyInvalid);
        }
        Ok(Self {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            x: URL_SAFE_NO_PAD.encode(&bytes[1..33]),
            y: URL_SAFE_NO_PAD.encode(&bytes[33..65]),
        })
    }

    /// The key, checked to be a valid point on P-256.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JwsError> {
        if self.kty != "EC" || self.crv != "P-256" {
            return Err(JwsError::KeyInvalid);
        }
        let x = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| JwsError::KeyInvalid)?;
        let y = URL_SAFE_NO_PAD
            .decode(&self.y)
            .map_err(|_| JwsError::KeyInvalid)?;
        if x.len() != 32 || y.len() != 32 {
            return Err(JwsError::KeyInvalid);
        }
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(0x04);
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| JwsError::KeyInvalid)
    }

    /// The RFC 7638 thumbprint: BASE64URL(SHA-256) of the required members in lexicographic
    /// order with no whitespace. The members are base64url or fixed words, so no escaping
    /// is ever needed; `from_json`/`verifying_key` have checked them.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            self.crv, self.kty, self.x, self.y
        );
        crate::random::sha256_b64url(canonical.as_bytes())
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({"kty": self.kty, "crv": self.crv, "x": self.x, "y": self.y})
    }
}

/// A JWS whose signature has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// The parts of a compact JWS, decoded but not yet verified.
struct Parts<'a> {
    signing_input: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signature: Signature,
}

fn decode_object(part: &str) -> Result<Map<String, Value>, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(JwsError::Malformed),
    }
}

fn split(token: &str) -> Result<Parts<'_>, JwsError> {
    if token.len() > JWS_LENGTH_MAX_BYTES {
        return Err(JwsError::TooLong);
    }
    let mut pieces = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (pieces.next(), pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(JwsError::Malformed);
    };
    let header_object = decode_object(header)?;
    if header_object.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(JwsError::AlgorithmRefused);
    }
    // A `crit` header names extensions the verifier must understand; we understand none.
    if header_object.contains_key("crit") {
        return Err(JwsError::Malformed);
    }
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| JwsError::Malformed)?;
    let signature = Signature::from_slice(&signature_bytes).map_err(|_| JwsError::Malformed)?;
    Ok(Parts {
        signing_input: &token[..header.len() + 1 + claims.len()],
        header: header_object,
        claims: decode_object(claims)?,
        signature,
    })
}

/// The header of a JWS, before its signature is checked: only to find the key to check it
/// with (DPoP carries its key in the header; a client assertion names its client).
pub fn unverified_header(token: &str) -> Result<Map<String, Value>, JwsError> {
    split(token).map(|parts| parts.header)
}

/// The claims of a JWS, before its signature is checked: only to find which client's key
/// to check it with.
pub fn unverified_claims(token: &str) -> Result<Map<String, Value>, JwsError> {
    split(token).map(|parts| parts.claims)
}

/// Checks an ES256 signature with `key` and returns the header and claims.
pub fn verify(token: &str, key: &VerifyingKey) -> Result<Verified, JwsError> {
    let parts = split(token)?;
    key.verify(parts.signing_input.as_bytes(), &parts.signature)
        .map_err(|_| JwsError::SignatureInvalid)?;
    Ok(Verified {
        header: parts.header,
        claims: parts.claims,
    })
}

/// Signs `claims` under `header` (whose `alg` is forced to ES256): what a client (Kinko,
/// or a test) does to make a client assertion or a DPoP proof.
pub fn sign(
    mut header: Map<String, Value>,
    claims: &Map<String, Value>,
    key: &SigningKey,
) -> Result<String, JwsError> {
    header.insert("alg".to_owned(), Value::from("ES256"));
    let header_json = serde_json::to_vec(&header).map_err(|_| JwsError::Malformed)?;
    let claims_json = serde_json::to_vec(claims).map_err(|_| JwsError::Malformed)?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let signature: Signature = key.sign(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

/// A fresh P-256 key pair from the OS random source (for clients and DPoP keys).
pub fn generate_key() -> Result<SigningKey, crate::random::RandomError> {
    loop {
        let mut bytes = [0u8; 32];
        crate::random::fill(&mut bytes)?;
        // A 32-byte string is a valid scalar unless it is zero or ≥ the group order, which
        // happens with probability about 2^-32: draw again.
        if let Ok(key) = SigningKey::from_slice(&bytes) {
            return Ok(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        generate_key().unwrap_or_else(|error| panic!("{error}"))
    }

    fn claims() -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("sub".to_owned(), Value::from("kinko"));
        claims
    }

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() {
        let key = key();
        let token = sign(Map::new(), &claims(), &key).unwrap_or_else(|error| panic!("{error}"));
        let verified =
            verify(&token, key.verifying_key()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(verified.claims, claims());

        let mut other_claims = claims();
        other_claims.insert("sub".to_owned(), Value::from("mallory"));
        let other = sign(Map::new(), &other_claims, &key).unwrap_or_else(|error| panic!("{error}"));
        let pieces: Vec<&str> = token.split('.').collect();
        let other_pieces: Vec<&str> = other.split('.').collect();
        let spliced = format!("{}.{}.{}", pieces[0], other_pieces[1], pieces[2]);
        assert_eq!(
            verify(&spliced, key.verifying_key()),
            Err(JwsError::SignatureInvalid)
        );
        assert_eq!(
            verify(&token, self::key().verifying_key()),
            Err(JwsError::SignatureInvalid)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let key = key();
        let token = sign(Map::new(), &claims(), &key).unwrap_or_else(|error| panic!("{error}"));
        let payload = token.split('.').nth(1).unwrap_or_default().to_owned();
        for alg in ["none", "HS256", "RS256", "ES384"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            let forged = format!("{header}.{payload}.");
            assert_eq!(
                verify(&forged, key.verifying_key()),
                Err(JwsError::AlgorithmRefused),
                "{alg}"
            );
        }
        assert_eq!(verify("a.b", key.verifying_key()), Err(JwsError::Malformed));
        assert_eq!(
            verify(&"a".repeat(JWS_LENGTH_MAX_BYTES + 1), key.verifying_key()),
            Err(JwsError::TooLong)
        );
    }

    #[test]
    fn jwks_round_trip_refuse_private_parts_and_have_distinct_thumbprints() {
        let key = key();
        let jwk =
            Jwk::from_verifying_key(key.verifying_key()).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(Jwk::from_json(&jwk.to_json()), Ok(jwk.clone()));
        assert_eq!(jwk.thumbprint().len(), 43);
        assert_eq!(jwk.thumbprint(), jwk.clone().thumbprint());
        let other = Jwk::from_verifying_key(self::key().verifying_key())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_ne!(jwk.thumbprint(), other.thumbprint());

        let mut with_private = jwk.to_json();
        if let Value::Object(object) = &mut with_private {
            object.insert("d".to_owned(), Value::from("secret"));
        }
        assert_eq!(Jwk::from_json(&with_private), Err(JwsError::KeyInvalid));
        let mut off_curve = jwk.clone();
        off_curve.y = off_curve.x.clone();
        assert_eq!(
            Jwk::from_json(&off_curve.to_json()),
            Err(JwsError::KeyInvalid)
        );
    }

    #[test]
    fn thumbprint_matches_the_rfc9449_example() {
        // RFC 9449 §4.1 (the example proof's key) and §6.1 (its `jkt`).
        let jwk = Jwk::from_json(&serde_json::json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        }))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            jwk.thumbprint(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }
}
