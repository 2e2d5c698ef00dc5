//! Compact JWS with ES256 only (RFC 7515/7518) and public P-256 JWKs (RFC 7517) with their
//! thumbprints (RFC 7638). The JWS itself — splitting, decoding, signing and checking the
//! ECDSA signature — is the `jsonwebtoken` crate's (RustCrypto backend); this module adds
//! the bank's policy around it: every algorithm other than ES256 — `none` above all — is
//! refused, so no token chooses how it is verified; `crit` is refused; tokens are bounded in
//! length; keys are public P-256 points only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::pkcs8::EncodePrivateKey as _;
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

impl From<jsonwebtoken::errors::Error> for JwsError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::SignatureInvalid,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => Self::AlgorithmRefused,
            ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat => Self::KeyInvalid,
            _ => Self::Malformed,
        }
    }
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
        super::random::sha256_b64url(canonical.as_bytes())
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({"kty": self.kty, "crv": self.crv, "x": self.x, "y": self.y})
    }

    /// The same key as `jsonwebtoken` represents it, to verify with.
    pub fn to_jsonwebtoken(&self) -> Result<jsonwebtoken::jwk::Jwk, JwsError> {
        serde_json::from_value(self.to_json()).map_err(|_| JwsError::KeyInvalid)
    }
}

/// A JWS whose signature has been checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// Claims are checked by the callers against the bank's own clock (`now_ms`), with the
/// windows each kind of token needs (DPoP's `iat` window has no `exp`): `jsonwebtoken` only
/// checks the signature and that the algorithm is ES256.
fn signature_only_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

/// The bank's refusals that come before any key is used (the length is checked before
/// `jsonwebtoken` decodes anything).
fn check_header(header: &Header) -> Result<(), JwsError> {
    if header.alg != Algorithm::ES256 {
        return Err(JwsError::AlgorithmRefused);
    }
    // A `crit` header names extensions the verifier must understand; we understand none.
    if header.crit.is_some() {
        return Err(JwsError::Malformed);
    }
    Ok(())
}

/// The header, parsed by `jsonwebtoken` and checked against the bank's policy.
fn checked_header(token: &str) -> Result<Header, JwsError> {
    if token.len() > JWS_LENGTH_MAX_BYTES {
        return Err(JwsError::TooLong);
    }
    let header = jsonwebtoken::decode_header(token)?;
    check_header(&header)?;
    Ok(header)
}

fn header_map(header: &Header) -> Result<Map<String, Value>, JwsError> {
    match serde_json::to_value(header) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(JwsError::Malformed),
    }
}

/// The header of a JWS, before its signature is checked: only to find the key to check it
/// with (a client assertion names its client).
pub fn unverified_header(token: &str) -> Result<Map<String, Value>, JwsError> {
    header_map(&checked_header(token)?)
}

/// The claims of a JWS, before its signature is checked: only to find which client's key
/// to check it with.
pub fn unverified_claims(token: &str) -> Result<Map<String, Value>, JwsError> {
    if token.len() > JWS_LENGTH_MAX_BYTES {
        return Err(JwsError::TooLong);
    }
    let data = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token)?;
    check_header(&data.header)?;
    Ok(data.claims)
}

fn verify_with_decoding_key(token: &str, key: &DecodingKey) -> Result<Verified, JwsError> {
    checked_header(token)?;
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &signature_only_validation())?;
    Ok(Verified {
        header: header_map(&data.header)?,
        claims: data.claims,
    })
}

/// Checks an ES256 signature with the public key `jwk` and returns the header and claims.
pub fn verify_with_jwk(token: &str, jwk: &Jwk) -> Result<Verified, JwsError> {
    jwk.verifying_key()?;
    let key = DecodingKey::from_jwk(&jwk.to_jsonwebtoken()?)?;
    verify_with_decoding_key(token, &key)
}

/// Checks an ES256 signature with `key` and returns the header and claims.
pub fn verify(token: &str, key: &VerifyingKey) -> Result<Verified, JwsError> {
    verify_with_jwk(token, &Jwk::from_verifying_key(key)?)
}

/// Whether the header's `jwk` carries a private part. `jsonwebtoken`'s `Jwk` keeps only the
/// public members and silently drops the others, `d` included, so this one refusal reads
/// the header JSON itself (after `jsonwebtoken` has accepted the framing): a proof whose
/// sender published its private key must be refused, not quietly trimmed (RFC 9449 §4.3).
fn header_jwk_has_private_part(token: &str) -> Result<bool, JwsError> {
    let segment = token.split('.').next().ok_or(JwsError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| JwsError::Malformed)?;
    // No readable `jwk` object here, though `jsonwebtoken` found one: refuse, fail closed.
    Ok(header
        .get("jwk")
        .and_then(Value::as_object)
        .is_none_or(|jwk| jwk.contains_key("d")))
}

/// Checks a JWS signed by the key in its own `jwk` header, whose `typ` must be `typ` (a DPoP
/// proof: `dpop+jwt`), and returns that key with the header and claims.
pub fn verify_with_header_jwk(token: &str, typ: &str) -> Result<(Jwk, Verified), JwsError> {
    let header = checked_header(token)?;
    if header.typ.as_deref() != Some(typ) {
        return Err(JwsError::Malformed);
    }
    let header_jwk = header.jwk.as_ref().ok_or(JwsError::KeyInvalid)?;
    if header_jwk_has_private_part(token)? {
        return Err(JwsError::KeyInvalid);
    }
    // Only a public P-256 point on the curve: `Jwk::from_json` checks kty, crv and the point.
    let jwk = serde_json::to_value(header_jwk)
        .map_err(|_| JwsError::KeyInvalid)
        .and_then(|value| Jwk::from_json(&value))?;
    let key = DecodingKey::from_jwk(header_jwk)?;
    Ok((jwk, verify_with_decoding_key(token, &key)?))
}

/// Signs `claims` under `header` (whose `alg` is forced to ES256): what a client (Kinko,
/// or a test) does to make a client assertion or a DPoP proof.
pub fn sign(
    mut header: Map<String, Value>,
    claims: &Map<String, Value>,
    key: &SigningKey,
) -> Result<String, JwsError> {
    header.insert("alg".to_owned(), Value::from("ES256"));
    let header: Header =
        serde_json::from_value(Value::Object(header)).map_err(|_| JwsError::Malformed)?;
    // `jsonwebtoken` takes EC private keys as PKCS#8 DER; both documents zeroize on drop.
    let der = key.to_pkcs8_der().map_err(|_| JwsError::KeyInvalid)?;
    let encoding_key = EncodingKey::from_ec_der(der.as_bytes());
    Ok(jsonwebtoken::encode(&header, claims, &encoding_key)?)
}

/// A fresh P-256 key pair from the OS random source (for clients and DPoP keys).
pub fn generate_key() -> Result<SigningKey, super::random::RandomError> {
    loop {
        let mut bytes = [0u8; 32];
        super::random::fill(&mut bytes)?;
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
        let forged = |alg: &str| {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#));
            format!("{header}.{payload}.")
        };
        // `jsonwebtoken` has no `none` algorithm at all: such a header does not even parse.
        assert_eq!(
            verify(&forged("none"), key.verifying_key()),
            Err(JwsError::Malformed)
        );
        for alg in ["HS256", "RS256", "ES384"] {
            assert_eq!(
                verify(&forged(alg), key.verifying_key()),
                Err(JwsError::AlgorithmRefused),
                "{alg}"
            );
            assert_eq!(
                unverified_claims(&forged(alg)),
                Err(JwsError::AlgorithmRefused),
                "{alg}"
            );
        }
        let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","crit":["b64"],"b64":false}"#);
        assert_eq!(
            verify(&format!("{crit}.{payload}."), key.verifying_key()),
            Err(JwsError::Malformed)
        );
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

    fn header_jwk_token(key: &SigningKey, typ: &str) -> String {
        let jwk =
            Jwk::from_verifying_key(key.verifying_key()).unwrap_or_else(|error| panic!("{error}"));
        let mut header = Map::new();
        header.insert("typ".to_owned(), Value::from(typ));
        header.insert("jwk".to_owned(), jwk.to_json());
        sign(header, &claims(), key).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The token with its header replaced by `header` (JSON), keeping payload and signature.
    fn with_header(token: &str, header: &Value) -> String {
        let rest = token
            .split_once('.')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
    }

    #[test]
    fn a_header_jwk_token_verifies_with_its_own_key_only() {
        let key = key();
        let token = header_jwk_token(&key, "dpop+jwt");
        let (jwk, verified) =
            verify_with_header_jwk(&token, "dpop+jwt").unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            Ok(jwk.clone()),
            Jwk::from_verifying_key(key.verifying_key())
        );
        assert_eq!(verified.claims, claims());
        assert_eq!(
            verify_with_header_jwk(&token, "other+jwt").map(|_| ()),
            Err(JwsError::Malformed)
        );
        assert_eq!(
            verify_with_header_jwk(&header_jwk_token(&key, "JWT"), "dpop+jwt").map(|_| ()),
            Err(JwsError::Malformed)
        );

        // Another key put in the header: the signature no longer verifies.
        let other = Jwk::from_verifying_key(self::key().verifying_key())
            .unwrap_or_else(|error| panic!("{error}"));
        let swapped = with_header(
            &token,
            &serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": other.to_json()}),
        );
        assert_eq!(
            verify_with_header_jwk(&swapped, "dpop+jwt").map(|_| ()),
            Err(JwsError::SignatureInvalid)
        );

        // A private part, an off-curve point, another curve, no key, `crit`, another alg.
        let mut private = jwk.to_json();
        if let Value::Object(object) = &mut private {
            object.insert(
                "d".to_owned(),
                Value::from(URL_SAFE_NO_PAD.encode([7u8; 32])),
            );
        }
        let mut off_curve = jwk.clone();
        off_curve.y = off_curve.x.clone();
        let mut p384 = jwk.to_json();
        if let Value::Object(object) = &mut p384 {
            object.insert("crv".to_owned(), Value::from("P-384"));
        }
        for (header, expected) in [
            (
                serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": private}),
                JwsError::KeyInvalid,
            ),
            (
                serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": off_curve.to_json()}),
                JwsError::KeyInvalid,
            ),
            (
                serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": p384}),
                JwsError::KeyInvalid,
            ),
            (
                serde_json::json!({"alg": "ES256", "typ": "dpop+jwt"}),
                JwsError::KeyInvalid,
            ),
            (
                serde_json::json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": jwk.to_json(), "crit": ["x"]}),
                JwsError::Malformed,
            ),
            (
                serde_json::json!({"alg": "ES384", "typ": "dpop+jwt", "jwk": jwk.to_json()}),
                JwsError::AlgorithmRefused,
            ),
            (
                serde_json::json!({"alg": "none", "typ": "dpop+jwt", "jwk": jwk.to_json()}),
                JwsError::Malformed,
            ),
        ] {
            assert_eq!(
                verify_with_header_jwk(&with_header(&token, &header), "dpop+jwt").map(|_| ()),
                Err(expected),
                "{header}"
            );
        }
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
