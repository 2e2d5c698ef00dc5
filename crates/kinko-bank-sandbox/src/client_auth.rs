//! The bank's client registry and `private_key_jwt` client authentication (RFC 7523,
//! FAPI 2.0): a client proves itself with a short-lived JWT signed by its private key;
//! the bank holds only the public JWK, and each assertion's `jti` is spent on first use.

use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Tx};
use serde_json::{Map, Value};

use crate::jws::{self, Jwk};

/// The longest lifetime an assertion may claim: exp ≤ now + 5 min.
pub const ASSERTION_LIFETIME_MAX_MS: i64 = 5 * 60_000;
/// Clock skew tolerated on `exp`/`iat`/`nbf` between client and bank.
pub const CLOCK_SKEW_MS: i64 = 5_000;
/// The `client_assertion_type` RFC 7523 defines.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A registered OAuth client (Kinko is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub jwk: Jwk,
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    #[error("the client assertion is not a well-formed ES256 JWT")]
    Malformed,
    #[error("no such client")]
    UnknownClient,
    #[error("the client assertion's signature does not verify with the client's key")]
    SignatureInvalid,
    #[error("the client assertion's claims are wrong: {0}")]
    ClaimsInvalid(&'static str),
    #[error("the client assertion has expired or claims too long a life")]
    Expired,
    #[error("the client assertion was already used")]
    Replayed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registers or replaces a client.
pub fn register(database: &Database, client: &Client) -> Result<(), StoreError> {
    let redirect_uris = serde_json::to_string(&client.redirect_uris)
        .map_err(|error| StoreError::new(error.to_string()))?;
    let jwk = client.jwk.to_json().to_string();
    database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "INSERT INTO bank_oauth_clients (client_id, name, jwk, redirect_uris)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (client_id) DO UPDATE
             SET name = $2, jwk = $3, redirect_uris = $4",
            &[
                client.client_id.as_str().into(),
                client.name.as_str().into(),
                jwk.as_str().into(),
                redirect_uris.as_str().into(),
            ],
        )?;
        Ok(())
    })
}

pub fn find(tx: &mut dyn Tx, client_id: &str) -> Result<Option<Client>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT client_id, name, jwk, redirect_uris FROM bank_oauth_clients WHERE client_id = $1",
        &[client_id.into()],
    )?
    else {
        return Ok(None);
    };
    let unusable = |what: &str| StoreError::new(format!("bank_oauth_clients.{what} is unusable"));
    let jwk_json: Value = serde_json::from_str(&row.text(2)?).map_err(|_| unusable("jwk"))?;
    Ok(Some(Client {
        client_id: row.text(0)?,
        name: row.text(1)?,
        jwk: Jwk::from_json(&jwk_json).map_err(|_| unusable("jwk"))?,
        redirect_uris: serde_json::from_str(&row.text(3)?)
            .map_err(|_| unusable("redirect_uris"))?,
    }))
}

fn numeric_date_ms(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims
        .get(name)
        .and_then(Value::as_i64)
        .and_then(|seconds| seconds.checked_mul(1_000))
}

fn audience_matches(claims: &Map<String, Value>, audiences: &[&str]) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => audiences.contains(&aud.as_str()),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| audiences.contains(&aud)),
        _ => false,
    }
}

/// Authenticates the client behind `assertion`. `audiences` are the values this bank
/// accepts in `aud` (its issuer identifier, and the endpoint URL for older clients).
pub fn authenticate(
    database: &Database,
    assertion: &str,
    audiences: &[&str],
    now_ms: i64,
) -> Result<Client, ClientAuthError> {
    let unverified = jws::unverified_claims(assertion).map_err(|_| ClientAuthError::Malformed)?;
    let client_id = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(ClientAuthError::ClaimsInvalid("iss"))?;
    let client = database
        .transaction(|tx: &mut dyn Tx| find(tx, client_id))?
        .ok_or(ClientAuthError::UnknownClient)?;
    let claims = jws::verify_with_jwk(assertion, &client.jwk)
        .map_err(|error| match error {
            jws::JwsError::SignatureInvalid | jws::JwsError::KeyInvalid => {
                ClientAuthError::SignatureInvalid
            }
            _ => ClientAuthError::Malformed,
        })?
        .claims;
    if claims.get("iss").and_then(Value::as_str) != Some(client.client_id.as_str())
        || claims.get("sub").and_then(Value::as_str) != Some(client.client_id.as_str())
    {
        return Err(ClientAuthError::ClaimsInvalid(
            "iss and sub must be the client id",
        ));
    }
    if !audience_matches(&claims, audiences) {
        return Err(ClientAuthError::ClaimsInvalid("aud"));
    }
    let expires_at_ms =
        numeric_date_ms(&claims, "exp").ok_or(ClientAuthError::ClaimsInvalid("exp"))?;
    if expires_at_ms + CLOCK_SKEW_MS <= now_ms
        || expires_at_ms > now_ms + ASSERTION_LIFETIME_MAX_MS + CLOCK_SKEW_MS
    {
        return Err(ClientAuthError::Expired);
    }
    if numeric_date_ms(&claims, "nbf").is_some_and(|nbf_ms| nbf_ms > now_ms + CLOCK_SKEW_MS) {
        return Err(ClientAuthError::ClaimsInvalid("nbf"));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|jti| !jti.is_empty() && jti.len() <= 256)
        .ok_or(ClientAuthError::ClaimsInvalid("jti"))?;
    let purpose = format!("client_assertion:{}", client.client_id);
    if !crate::store::remember_jti(
        database,
        &purpose,
        jti,
        expires_at_ms + CLOCK_SKEW_MS,
        now_ms,
    )? {
        return Err(ClientAuthError::Replayed);
    }
    Ok(client)
}

/// Kinko's side makes the assertion; it lives with the protocol so both ends share it.
pub use kinko_banking::protocol::make_client_assertion as make_assertion;
