//! Kinko's client of the bank protocol (`docs/BANK-PROTOCOL.md`): discovery, pushed
//! authorization requests, the code and refresh grants with `private_key_jwt` and DPoP,
//! holder match, revocation, the legacy verify call, and the bank's published keys for its
//! webhooks. Blocking HTTP (ureq): callers run it off the async threads.
//!
//! Nothing here decides anything: the link service (`links`) holds the rules. What comes back
//! from a bank is parsed strictly; an answer that does not fit the protocol is an error, never
//! a guess.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use p256::ecdsa::SigningKey;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::Value;

use crate::protocol::{self, jws};

/// A client assertion lives one minute: long enough for one call, short enough to be useless
/// to anyone who copies it.
pub const ASSERTION_LIFETIME_MS: i64 = 60_000;
/// Every call to a bank gives up after this long.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The bank's key set is fetched again for an unknown `kid` at most this often: anyone can post
/// a webhook naming a made-up `kid`, and must not make Kinko call the bank on every request.
/// A bank that rotates publishes the new key before signing with it, so one fetch a minute
/// finds it.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Bank answers bigger than this are refused unread.
const ANSWER_LENGTH_MAX_BYTES: u64 = 64 * 1_024;

#[derive(Debug, thiserror::Error)]
pub enum BankClientError {
    /// The bank could not be reached or did not answer in time.
    #[error("the bank could not be reached: {0}")]
    Transport(String),
    /// The bank answered with a protocol error.
    #[error("the bank refused ({status} {code})")]
    Refused { status: u16, code: String },
    /// The bank answered something the protocol does not allow.
    #[error("the bank's answer does not fit the protocol: {0}")]
    Malformed(&'static str),
    #[error("signing failed: {0}")]
    Signing(#[from] jws::JwsError),
    /// The order's deadline (`not_after_ms`) passed before it was sent: it was not sent, and
    /// the bank would refuse it anyway.
    #[error("the order's deadline passed before it was sent")]
    DeadlinePassed,
}

impl From<ureq::Error> for BankClientError {
    fn from(error: ureq::Error) -> Self {
        BankClientError::Transport(error.to_string())
    }
}

/// Where a bank's endpoints are, from its RFC 8414 metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BankEndpoints {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub pushed_authorization_request_endpoint: String,
    pub token_endpoint: String,
    pub revocation_endpoint: String,
    pub jwks_uri: String,
}

impl BankEndpoints {
    /// A resource server path (the protocol fixes them under the issuer).
    pub fn resource(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// What a code or refresh grant gives.
pub struct Tokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub link_id: String,
    pub account_ref: String,
    pub account_label: String,
    pub scope: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Tokens")
            .field("link_id", &self.link_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    token_type: String,
    refresh_token: String,
    link_id: String,
    account_ref: String,
    account_label: String,
    scope: String,
}

/// The legacy verify call's fields. The PIN stays a secret until it is on the wire.
pub struct LegacyVerify<'a> {
    pub bank_code: &'a str,
    pub branch: &'a str,
    pub account_type: &'a str,
    pub account_number: &'a str,
    pub pin: &'a SecretString,
    pub kana_name: &'a str,
    pub birth_date: &'a str,
}

/// A bank's public signing key as published at `jwks_uri`.
#[derive(Debug, Clone)]
pub struct PublishedKey {
    pub kid: String,
    pub jwk: jws::Jwk,
}

/// Kinko as one bank's client: its client id there, its signing key, the bank's endpoints, and
/// the bank's webhook keys (fetched when first needed and again on an unknown `kid`, at most
/// once per [`JWKS_REFETCH_INTERVAL`]).
pub struct BankClient {
    agent: ureq::Agent,
    client_id: String,
    key: SigningKey,
    endpoints: BankEndpoints,
    published_keys: RwLock<Vec<PublishedKey>>,
    /// When the key set was last fetched; held while fetching, so callers queue behind one
    /// fetch instead of each making their own.
    published_keys_fetched: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for BankClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BankClient")
            .field("issuer", &self.endpoints.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The HTTP agent every bank call uses: a timeout, no redirects followed, and statuses
/// handed back rather than turned into errors (the protocol's error bodies matter).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(CALL_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into()
}

/// Reads a JSON answer, or the protocol error it carries.
fn answer_json(mut response: ureq::http::Response<ureq::Body>) -> Result<Value, BankClientError> {
    let status = response.status().as_u16();
    let value: Value = response
        .body_mut()
        .with_config()
        .limit(ANSWER_LENGTH_MAX_BYTES)
        .read_json()
        .map_err(|_| {
            if (200..300).contains(&status) {
                BankClientError::Malformed("the answer is not JSON")
            } else {
                BankClientError::Refused {
                    status,
                    code: String::new(),
                }
            }
        })?;
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        Err(BankClientError::Refused {
            status,
            code: value
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        })
    }
}

/// Fetches a bank's metadata (RFC 8414) and checks it names the issuer asked for and the
/// protocol's requirements (PAR required, S256, `private_key_jwt`, DPoP ES256).
pub fn discover(agent: &ureq::Agent, issuer: &str) -> Result<BankEndpoints, BankClientError> {
    let issuer = issuer.trim_end_matches('/');
    let response = agent
        .get(&format!("{issuer}/.well-known/oauth-authorization-server"))
        .call()?;
    let metadata = answer_json(response)?;
    let endpoints: BankEndpoints = serde_json::from_value(metadata.clone())
        .map_err(|_| BankClientError::Malformed("metadata lacks an endpoint"))?;
    if endpoints.issuer != issuer {
        // RFC 8414 §3.3: the metadata must be for the issuer we asked.
        return Err(BankClientError::Malformed("metadata names another issuer"));
    }
    let lists = |name: &str, wanted: &str| {
        metadata
            .get(name)
            .and_then(Value::as_array)
            .is_some_and(|values| values.iter().any(|value| value == wanted))
    };
    if metadata.get("require_pushed_authorization_requests") != Some(&Value::Bool(true))
        || !lists("code_challenge_methods_supported", "S256")
        || !lists("token_endpoint_auth_methods_supported", "private_key_jwt")
        || !lists("dpop_signing_alg_values_supported", "ES256")
    {
        return Err(BankClientError::Malformed(
            "the bank does not offer PAR, PKCE S256, private_key_jwt and DPoP ES256",
        ));
    }
    Ok(endpoints)
}

/// Registers Kinko at a sandbox bank (`POST /sandbox/clients`): a real bank does this out of
/// band and gives Kinko its client id.
pub fn register_at_sandbox(
    agent: &ureq::Agent,
    issuer: &str,
    client_name: &str,
    key: &SigningKey,
    redirect_uri: &str,
    webhook_url: &str,
) -> Result<String, BankClientError> {
    let jwk = jws::Jwk::from_verifying_key(key.verifying_key())?;
    let body = serde_json::json!({
        "client_name": client_name,
        "jwks": {"keys": [jwk.to_json()]},
        "redirect_uris": [redirect_uri],
        "webhook_url": webhook_url,
    });
    let response = agent
        .post(&format!("{}/sandbox/clients", issuer.trim_end_matches('/')))
        .send_json(&body)?;
    answer_json(response)?
        .get("client_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(BankClientError::Malformed("no client_id"))
}

impl BankClient {
    pub fn new(
        agent: ureq::Agent,
        client_id: String,
        key: SigningKey,
        endpoints: BankEndpoints,
    ) -> Self {
        Self {
            agent,
            client_id,
            key,
            endpoints,
            published_keys: RwLock::new(Vec::new()),
            published_keys_fetched: Mutex::new(None),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.endpoints.issuer
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn endpoints(&self) -> &BankEndpoints {
        &self.endpoints
    }

    fn assertion(&self, now_ms: i64) -> Result<String, BankClientError> {
        Ok(protocol::make_client_assertion(
            &self.client_id,
            &self.endpoints.issuer,
            &self.key,
            now_ms,
            ASSERTION_LIFETIME_MS,
        )?)
    }

    /// Pushes an authorization request (RFC 9126) and answers the URL to send the browser to.
    pub fn push_authorization(
        &self,
        request: &PushRequest<'_>,
        now_ms: i64,
    ) -> Result<String, BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let challenge = protocol::pkce_challenge(request.code_verifier.expose_secret());
        let response = self
            .agent
            .post(&self.endpoints.pushed_authorization_request_endpoint)
            .send_form([
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
                ("response_type", "code"),
                ("client_id", self.client_id.as_str()),
                ("redirect_uri", request.redirect_uri),
                ("scope", request.scope),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
                ("state", request.state.expose_secret()),
                ("bank_code", request.bank_code),
            ])?;
        let request_uri = answer_json(response)?
            .get("request_uri")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(BankClientError::Malformed("no request_uri"))?;
        Ok(format!(
            "{}?client_id={}&request_uri={}",
            self.endpoints.authorization_endpoint,
            query_encode(&self.client_id),
            query_encode(&request_uri)
        ))
    }

    /// The authorization code grant with PKCE, bound to `dpop_key`.
    pub fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &SecretString,
        dpop_key: &SigningKey,
        now_ms: i64,
    ) -> Result<Tokens, BankClientError> {
        self.token_call(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", code_verifier.expose_secret()),
            ],
            dpop_key,
            now_ms,
        )
    }

    /// The refresh grant: a new access token and a new (rotated) refresh token.
    pub fn refresh(
        &self,
        refresh_token: &SecretString,
        dpop_key: &SigningKey,
        now_ms: i64,
    ) -> Result<Tokens, BankClientError> {
        self.token_call(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ],
            dpop_key,
            now_ms,
        )
    }

    fn token_call(
        &self,
        fields: &[(&str, &str)],
        dpop_key: &SigningKey,
        now_ms: i64,
    ) -> Result<Tokens, BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let proof = protocol::make_dpop_proof(
            dpop_key,
            "POST",
            &self.endpoints.token_endpoint,
            None,
            now_ms,
        )?;
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
        form.push(("client_assertion", assertion.as_str()));
        let response = self
            .agent
            .post(&self.endpoints.token_endpoint)
            .header("DPoP", &proof)
            .send_form(form)?;
        let answer: TokenAnswer = serde_json::from_value(answer_json(response)?)
            .map_err(|_| BankClientError::Malformed("token answer lacks a member"))?;
        if answer.token_type != "DPoP" {
            return Err(BankClientError::Malformed("the token is not DPoP-bound"));
        }
        if answer.account_ref.is_empty() || answer.link_id.is_empty() {
            return Err(BankClientError::Malformed("no link or account reference"));
        }
        Ok(Tokens {
            access_token: SecretString::from(answer.access_token),
            refresh_token: SecretString::from(answer.refresh_token),
            link_id: answer.link_id,
            account_ref: answer.account_ref,
            account_label: answer.account_label,
            scope: answer.scope,
        })
    }

    /// Asks the bank whether the KYC'd kana name and birth date are its account holder's.
    pub fn holder_match(
        &self,
        access_token: &SecretString,
        dpop_key: &SigningKey,
        kana_name: &str,
        birth_date: &str,
        now_ms: i64,
    ) -> Result<bool, BankClientError> {
        let url = self.endpoints.resource("/v1/holder-match");
        let proof = protocol::make_dpop_proof(
            dpop_key,
            "POST",
            &url,
            Some(access_token.expose_secret()),
            now_ms,
        )?;
        let response = self
            .agent
            .post(&url)
            .header(
                "Authorization",
                &format!("DPoP {}", access_token.expose_secret()),
            )
            .header("DPoP", &proof)
            .send_json(serde_json::json!({"kana_name": kana_name, "birth_date": birth_date}))?;
        answer_json(response)?
            .get("match")
            .and_then(Value::as_bool)
            .ok_or(BankClientError::Malformed("no match member"))
    }

    /// A debit or credit on the token's account (`docs/BANK-PROTOCOL.md` §6): settled or
    /// rejected, saved under `key` at the bank so a retry gets the same answer.
    pub fn payment(
        &self,
        order: &PaymentOrder<'_>,
        access_token: &SecretString,
        dpop_key: &SigningKey,
        now_ms: i64,
    ) -> Result<BankPayment, BankClientError> {
        let url = self.endpoints.resource(order.kind.path());
        let proof = protocol::make_dpop_proof(
            dpop_key,
            "POST",
            &url,
            Some(access_token.expose_secret()),
            now_ms,
        )?;
        let response = self
            .agent
            .post(&url)
            .header(
                "Authorization",
                &format!("DPoP {}", access_token.expose_secret()),
            )
            .header("DPoP", &proof)
            .header("Idempotency-Key", order.key)
            .send_json(serde_json::json!({
                "amount_yen": order.amount_yen,
                "description": order.description,
                "not_after_ms": order.not_after_ms,
            }))?;
        BankPayment::from_answer(answer_json(response)?)
    }

    /// The bank's saved answer for `key`, or `None` when the bank never saw it: what the
    /// reconciler asks after a crash.
    pub fn payment_by_key(
        &self,
        kind: PaymentKind,
        access_token: &SecretString,
        dpop_key: &SigningKey,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<BankPayment>, BankClientError> {
        let url = self
            .endpoints
            .resource(&format!("{}/{}", kind.path(), query_encode(key)));
        let proof = protocol::make_dpop_proof(
            dpop_key,
            "GET",
            &url,
            Some(access_token.expose_secret()),
            now_ms,
        )?;
        let response = self
            .agent
            .get(&url)
            .header(
                "Authorization",
                &format!("DPoP {}", access_token.expose_secret()),
            )
            .header("DPoP", &proof)
            .call()?;
        match answer_json(response) {
            Ok(answer) => Ok(Some(BankPayment::from_answer(answer)?)),
            Err(BankClientError::Refused { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The bank's saved answer for one of Kinko's keys, asked with Kinko's own client
    /// authentication instead of a link's token (`POST /v1/payments/lookup`): how an order in
    /// doubt is settled once its link has ended. `None` when the bank never saw the key.
    pub fn payment_by_client(
        &self,
        kind: PaymentKind,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<BankPayment>, BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let response = self
            .agent
            .post(&self.endpoints.resource("/v1/payments/lookup"))
            .send_form([
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
                ("kind", kind.as_str()),
                ("key", key),
            ])?;
        match answer_json(response) {
            Ok(answer) => Ok(Some(BankPayment::from_answer(answer)?)),
            Err(BankClientError::Refused { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Pays back one of Kinko's settled debits (`original_key`) into the account it took from,
    /// with Kinko's client authentication (`POST /v1/refunds`): needs no live link, so a
    /// victim whose link was cut is refunded all the same. Saved at the bank under `order.key`.
    pub fn refund_by_client(
        &self,
        original_key: &str,
        order: &PaymentOrder<'_>,
        now_ms: i64,
    ) -> Result<BankPayment, BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let amount = order.amount_yen.to_string();
        let not_after = order.not_after_ms.to_string();
        let response = self
            .agent
            .post(&self.endpoints.resource("/v1/refunds"))
            .header("Idempotency-Key", order.key)
            .send_form([
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
                ("original_key", original_key),
                ("amount_yen", amount.as_str()),
                ("description", order.description),
                ("not_after_ms", not_after.as_str()),
            ])?;
        BankPayment::from_answer(answer_json(response)?)
    }

    /// Ends the link at the bank (RFC 7009). The bank answers 200 whatever the token was.
    pub fn revoke(&self, refresh_token: &SecretString, now_ms: i64) -> Result<(), BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let response = self
            .agent
            .post(&self.endpoints.revocation_endpoint)
            .send_form([
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
                ("token", refresh_token.expose_secret()),
                ("token_type_hint", "refresh_token"),
            ])?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(BankClientError::Refused {
                status,
                code: String::new(),
            })
        }
    }

    /// The legacy verify call: `true` only when the bank says every field matched.
    pub fn legacy_verify(
        &self,
        request: &LegacyVerify<'_>,
        now_ms: i64,
    ) -> Result<bool, BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let response = self
            .agent
            .post(&self.endpoints.resource("/v1/legacy/verify"))
            .send_form([
                ("client_assertion_type", CLIENT_ASSERTION_TYPE),
                ("client_assertion", assertion.as_str()),
                ("bank_code", request.bank_code),
                ("branch", request.branch),
                ("account_type", request.account_type),
                ("account_number", request.account_number),
                ("pin", request.pin.expose_secret()),
                ("kana_name", request.kana_name),
                ("birth_date", request.birth_date),
            ])?;
        answer_json(response)?
            .get("match")
            .and_then(Value::as_bool)
            .ok_or(BankClientError::Malformed("no match member"))
    }

    /// The bank's webhook signing key named `kid`: from the cache, else fetched afresh (a
    /// bank rotates keys by publishing the new one first) — but not more than once per
    /// [`JWKS_REFETCH_INTERVAL`]: an unknown `kid` within it is simply unknown.
    pub fn published_key(&self, kid: &str) -> Result<Option<jws::Jwk>, BankClientError> {
        let cached = || {
            self.published_keys.read().ok().and_then(|keys| {
                keys.iter()
                    .find(|key| key.kid == kid)
                    .map(|key| key.jwk.clone())
            })
        };
        if let Some(jwk) = cached() {
            return Ok(Some(jwk));
        }
        let mut fetched = self
            .published_keys_fetched
            .lock()
            .map_err(|_| BankClientError::Malformed("the key cache is poisoned"))?;
        // Another caller may have fetched while this one waited.
        if let Some(jwk) = cached() {
            return Ok(Some(jwk));
        }
        if fetched.is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL) {
            return Ok(None);
        }
        *fetched = Some(Instant::now());
        let find = |keys: &[PublishedKey]| {
            keys.iter()
                .find(|key| key.kid == kid)
                .map(|key| key.jwk.clone())
        };
        let response = self.agent.get(&self.endpoints.jwks_uri).call()?;
        let document = answer_json(response)?;
        let keys: Vec<PublishedKey> = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(BankClientError::Malformed("no keys"))?
            .iter()
            .filter_map(|value| {
                let kid = value.get("kid").and_then(Value::as_str)?.to_owned();
                // A key with a private part, or not P-256, is skipped rather than trusted.
                let jwk = jws::Jwk::from_json(value).ok()?;
                Some(PublishedKey { kid, jwk })
            })
            .collect();
        let found = find(&keys);
        if let Ok(mut slot) = self.published_keys.write() {
            *slot = keys;
        }
        Ok(found)
    }
}

/// Which way money goes at the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentKind {
    /// From the customer's account (a charge).
    Debit,
    /// To the customer's account (a withdrawal).
    Credit,
}

impl PaymentKind {
    fn path(self) -> &'static str {
        match self {
            PaymentKind::Debit => "/v1/debits",
            PaymentKind::Credit => "/v1/credits",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Debit => "debit",
            PaymentKind::Credit => "credit",
        }
    }
}

/// A debit or credit to ask for.
#[derive(Debug, Clone, Copy)]
pub struct PaymentOrder<'a> {
    pub kind: PaymentKind,
    /// The `Idempotency-Key`: the same key never moves money twice at the bank.
    pub key: &'a str,
    pub amount_yen: i64,
    /// What the customer reads on their statement and notice.
    pub description: &'a str,
    /// The order's deadline, ms since the epoch, stored on Kinko's row before the call:
    /// Kinko never sends the order after it, and the bank refuses it after it
    /// (`docs/BANK-PROTOCOL.md` section 6), so once it has passed by more than a call's
    /// timeout, a bank that never saw the key never will.
    pub not_after_ms: i64,
}

/// The bank's answer to a debit or credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankPayment {
    pub id: String,
    pub settled: bool,
    /// Why a rejected one was rejected (`insufficient_funds`, `balance_limit`).
    pub reason: Option<String>,
}

impl BankPayment {
    fn from_answer(answer: Value) -> Result<Self, BankClientError> {
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or(BankClientError::Malformed("no payment id"))?
            .to_owned();
        let settled = match answer.get("status").and_then(Value::as_str) {
            Some("settled") => true,
            Some("rejected") => false,
            _ => return Err(BankClientError::Malformed("unknown payment status")),
        };
        Ok(Self {
            id,
            settled,
            reason: answer
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// What a pushed authorization request carries besides the client's own fields.
pub struct PushRequest<'a> {
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a SecretString,
    pub code_verifier: &'a SecretString,
    pub bank_code: &'a str,
}

pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn query_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A bank whose key set is empty, counting how often it is fetched.
    fn counting_bank() -> (String, Arc<AtomicUsize>) {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|error| panic!("{error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("{error}"));
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&fetches);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"keys":[]}"#;
                let mut stream = &stream;
                if let Err(error) = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                ) {
                    eprintln!("answering: {error}");
                }
            }
        });
        (format!("http://{address}"), fetches)
    }

    #[test]
    fn unknown_kids_cannot_make_kinko_fetch_the_key_set_per_request() {
        let (issuer, fetches) = counting_bank();
        let endpoints = BankEndpoints {
            issuer: issuer.clone(),
            authorization_endpoint: format!("{issuer}/authorize"),
            pushed_authorization_request_endpoint: format!("{issuer}/par"),
            token_endpoint: format!("{issuer}/token"),
            revocation_endpoint: format!("{issuer}/revoke"),
            jwks_uri: format!("{issuer}/jwks"),
        };
        let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
        let client = BankClient::new(agent(), "kinko".to_owned(), key, endpoints);
        for attempt in 0..50 {
            let found = client
                .published_key(&format!("made-up-{attempt}"))
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(found.is_none());
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch per interval");
    }
}
