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
    /// Where the bank POSTs its signed events (section 9); none: the client gets none.
    pub webhook_url: Option<String>,
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
            "INSERT INTO bank_oauth_clients (client_id, name, jwk, redirect_uris, webhook_url)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (client_id) DO UPDATE
             SET name = $2, jwk = $3, redirect_uris = $4, webhook_url = $5",
            &[
                client.client_id.as_str().into(),
                client.name.as_str().into(),
                jwk.as_str().into(),
                redirect_uris.as_str().into(),
                client.webhook_url.as_deref().into(),
            ],
        )?;
        Ok(())
    })
}

pub fn find(tx: &mut dyn Tx, client_id: &str) -> Result<Option<Client>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT client_id, name, jwk, redirect_uris, webhook_url FROM bank_oauth_clients
         WHERE client_id = $1",
        &[client_id.into()],
    )?
    else {
        return Ok(None);
    };
    client_from_row(&row).map(Some)
}

fn client_from_row(row: &kinko_store::sql::Row) -> Result<Client, StoreError> {
    let unusable = |what: &str| StoreError::new(format!("bank_oauth_clients.{what} is unusable"));
    let jwk_json: Value = serde_json::from_str(&row.text(2)?).map_err(|_| unusable("jwk"))?;
    Ok(Client {
        client_id: row.text(0)?,
        name: row.text(1)?,
        jwk: Jwk::from_json(&jwk_json).map_err(|_| unusable("jwk"))?,
        redirect_uris: serde_json::from_str(&row.text(3)?)
            .map_err(|_| unusable("redirect_uris"))?,
        webhook_url: row.opt_text(4)?,
    })
}

/// What `POST /sandbox/clients` takes (RFC 7591 names): a real bank registers its clients
/// out of band; the sandbox lets a client do it itself.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClientMetadata {
    pub client_name: String,
    pub jwks: JwkSet,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("the client metadata is invalid: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistrationError {
    pub fn code(&self) -> &'static str {
        match self {
            RegistrationError::Invalid(_) => "BANK_CLIENT_METADATA_INVALID",
            RegistrationError::Store(_) => "BANK_STORE_FAILED",
        }
    }
}

/// Bounds on what a client registers.
pub const CLIENT_NAME_LENGTH_MAX: usize = 100;
pub const REDIRECT_URIS_MAX: usize = 10;
pub const URL_LENGTH_MAX: usize = 2_000;

/// An absolute `https` URL, or `http` to this machine (the sandbox runs beside its clients),
/// without a fragment or credentials.
pub fn acceptable_url(url: &str) -> bool {
    if url.len() > URL_LENGTH_MAX || url.contains('#') || url.chars().any(char::is_whitespace) {
        return false;
    }
    let authority = |rest: &str| -> Option<String> {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        Some(rest[..end].to_owned()).filter(|host| !host.is_empty() && !host.contains('@'))
    };
    if let Some(rest) = url.strip_prefix("https://") {
        return authority(rest).is_some();
    }
    if let Some(rest) = url.strip_prefix("http://")
        && let Some(host) = authority(rest)
    {
        let name = if host.starts_with('[') {
            host.split(']').next().map(|inner| format!("{inner}]"))
        } else {
            host.split(':').next().map(str::to_owned)
        };
        return matches!(name.as_deref(), Some("localhost" | "127.0.0.1" | "[::1]"));
    }
    false
}

/// Registers a client from its metadata. A key already registered keeps its client id; its
/// name, redirect URIs and webhook URL are replaced. Answers the client id.
pub fn register_metadata(
    database: &Database,
    metadata: &ClientMetadata,
) -> Result<String, RegistrationError> {
    let name = metadata.client_name.trim();
    if name.is_empty()
        || name.chars().count() > CLIENT_NAME_LENGTH_MAX
        || name.chars().any(char::is_control)
    {
        return Err(RegistrationError::Invalid("client_name"));
    }
    let [key] = metadata.jwks.keys.as_slice() else {
        return Err(RegistrationError::Invalid("jwks must hold exactly one key"));
    };
    let jwk = Jwk::from_json(key).map_err(|_| RegistrationError::Invalid("jwks"))?;
    if metadata.redirect_uris.is_empty()
        || metadata.redirect_uris.len() > REDIRECT_URIS_MAX
        || !metadata.redirect_uris.iter().all(|uri| acceptable_url(uri))
    {
        return Err(RegistrationError::Invalid("redirect_uris"));
    }
    if let Some(url) = &metadata.webhook_url
        && !acceptable_url(url)
    {
        return Err(RegistrationError::Invalid("webhook_url"));
    }
    let thumbprint = jwk.thumbprint();
    let existing = database.transaction(|tx: &mut dyn Tx| {
        let rows = tx.query(
            "SELECT client_id, name, jwk, redirect_uris, webhook_url FROM bank_oauth_clients",
            &[],
        )?;
        let mut found = None;
        for row in &rows {
            let client = client_from_row(row)?;
            if client.jwk.thumbprint() == thumbprint {
                found = Some(client.client_id);
            }
        }
        Ok::<_, StoreError>(found)
    })?;
    let client_id = existing.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    register(
        database,
        &Client {
            client_id: client_id.clone(),
            name: name.to_owned(),
            jwk,
            redirect_uris: metadata.redirect_uris.clone(),
            webhook_url: metadata.webhook_url.clone(),
        },
    )?;
    Ok(client_id)
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
