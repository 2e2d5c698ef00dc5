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
fn answer_json(response: ureq::http::Response<ureq::Body>) -> Result<Value, BankClientError> {
    answer_json_within(response, ANSWER_LENGTH_MAX_BYTES)
}

/// [`answer_json`] with another size bound (a statement page is bigger than other answers).
fn answer_json_within(
    mut response: ureq::http::Response<ureq::Body>,
    length_max_bytes: u64,
) -> Result<Value, BankClientError> {
    let status = response.status().as_u16();
    let value: Value = response
        .body_mut()
        .with_config()
        .limit(length_max_bytes)
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

    /// One page of the bank's statement of this client's debits and credits decided on `day`
    /// (`POST /v1/statements`, Kinko's client authentication), from `cursor` on.
    pub fn statement_page(
        &self,
        day: StatementDay,
        cursor: Option<&str>,
        now_ms: i64,
    ) -> Result<StatementPage, BankClientError> {
        let assertion = self.assertion(now_ms)?;
        let day_text = day.to_string();
        let page_limit = STATEMENT_PAGE_ENTRIES_MAX.to_string();
        let mut form = vec![
            ("client_assertion_type", CLIENT_ASSERTION_TYPE),
            ("client_assertion", assertion.as_str()),
            ("day", day_text.as_str()),
            ("limit", page_limit.as_str()),
        ];
        if let Some(cursor) = cursor {
            form.push(("cursor", cursor));
        }
        let response = self
            .agent
            .post(&self.endpoints.resource("/v1/statements"))
            .send_form(form)?;
        StatementPage::from_answer(
            answer_json_within(response, STATEMENT_ANSWER_LENGTH_MAX_BYTES)?,
            day,
        )
    }

    /// The whole statement of `day`, page after page: at most `entries_max` entries (more is
    /// an error, never a silently cut statement) and [`STATEMENT_PAGES_MAX`] pages.
    pub fn statement(
        &self,
        day: StatementDay,
        entries_max: usize,
        now_ms: i64,
    ) -> Result<Vec<StatementEntry>, BankClientError> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..STATEMENT_PAGES_MAX {
            let page = self.statement_page(day, cursor.as_deref(), now_ms)?;
            entries.extend(page.entries);
            if entries.len() > entries_max {
                return Err(BankClientError::Malformed(
                    "the statement holds more entries than allowed",
                ));
            }
            match page.next_cursor {
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(BankClientError::Malformed("the statement's cursor repeats"));
                }
                Some(next) => cursor = Some(next),
                None => return Ok(entries),
            }
        }
        Err(BankClientError::Malformed(
            "the statement has more pages than allowed",
        ))
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

    /// The legacy verify call: the account's pairwise reference (the same an OAuth consent
    /// gives) only when the bank says every field matched; `None` otherwise.
    pub fn legacy_verify(
        &self,
        request: &LegacyVerify<'_>,
        now_ms: i64,
    ) -> Result<Option<String>, BankClientError> {
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
        let answer = answer_json(response)?;
        let matched = answer
            .get("match")
            .and_then(Value::as_bool)
            .ok_or(BankClientError::Malformed("no match member"))?;
        if !matched {
            return Ok(None);
        }
        // A match without the account's reference can't be keyed to one account: refused.
        match answer.get("account_ref").and_then(Value::as_str) {
            Some(reference) if !reference.is_empty() && reference.len() <= 128 => {
                Ok(Some(reference.to_owned()))
            }
            _ => Err(BankClientError::Malformed(
                "a match without its account_ref",
            )),
        }
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

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Debit => "debit",
            PaymentKind::Credit => "credit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "debit" => Some(PaymentKind::Debit),
            "credit" => Some(PaymentKind::Credit),
            _ => None,
        }
    }
}

/// Entries a statement page holds at most (the bank's bound; Kinko asks for this many).
pub const STATEMENT_PAGE_ENTRIES_MAX: usize = 500;
/// A statement page's answer is read up to this size (500 entries of ~250 bytes fit).
const STATEMENT_ANSWER_LENGTH_MAX_BYTES: u64 = 1_024 * 1_024;
/// Pages one statement is read in at most.
pub const STATEMENT_PAGES_MAX: usize = 10_000;

const DAY_MS: i64 = 86_400_000;
/// Japan time is UTC+9 all year: a bank day starts at 15:00 UTC the day before.
const JAPAN_OFFSET_MS: i64 = 9 * 3_600_000;

/// A bank day: a calendar date in Japan time, as statements count days
/// (`docs/BANK-PROTOCOL.md` section 6). Written `YYYY-MM-DD`, years 2000–9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StatementDay {
    /// Days since 1970-01-01.
    days: i64,
}

impl StatementDay {
    /// Parses `YYYY-MM-DD` strictly: a real date, nothing around it.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = text.get(range)?;
            if !part.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        if !(2000..=9999).contains(&year) || !(1..=12).contains(&month) || day < 1 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        // A day past the month's end (2026-02-30) comes back as another date.
        let parsed = Self { days };
        (parsed.civil() == (year, month, day)).then_some(parsed)
    }

    /// The Japan-time day that `at_ms` (ms since the epoch) falls in.
    pub fn of_ms(at_ms: i64) -> Self {
        Self {
            days: at_ms.saturating_add(JAPAN_OFFSET_MS).div_euclid(DAY_MS),
        }
    }

    /// Its first millisecond (midnight in Japan), ms since the epoch.
    pub fn start_ms(self) -> i64 {
        self.days.saturating_mul(DAY_MS) - JAPAN_OFFSET_MS
    }

    /// The first millisecond of the next day: the day is `[start_ms, end_ms)`.
    pub fn end_ms(self) -> i64 {
        self.start_ms().saturating_add(DAY_MS)
    }

    pub fn next(self) -> Self {
        Self {
            days: self.days + 1,
        }
    }

    pub fn previous(self) -> Self {
        Self {
            days: self.days - 1,
        }
    }

    /// (year, month, day).
    fn civil(self) -> (i64, i64, i64) {
        civil_from_days(self.days)
    }
}

impl std::fmt::Display for StatementDay {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (year, month, day) = self.civil();
        write!(formatter, "{year:04}-{month:02}-{day:02}")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One debit or credit on a statement: what the bank decided under one of the client's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementEntry {
    /// The bank's id of the payment.
    pub id: String,
    pub kind: PaymentKind,
    /// The client's `Idempotency-Key`.
    pub key: String,
    pub bank_code: String,
    pub amount_yen: i64,
    pub settled: bool,
    pub reason: Option<String>,
    /// When the bank decided it, ms since the epoch.
    pub decided_at_ms: i64,
}

/// One page of a statement and where the next starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementPage {
    pub entries: Vec<StatementEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementAnswer {
    day: String,
    entries: Vec<StatementEntryAnswer>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementEntryAnswer {
    id: String,
    kind: String,
    key: String,
    bank_code: String,
    amount_yen: i64,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    decided_at_ms: i64,
}

impl StatementPage {
    /// Parses a page strictly: the day asked for, known kinds and statuses, positive amounts,
    /// decision times within the day, at most [`STATEMENT_PAGE_ENTRIES_MAX`] entries.
    fn from_answer(answer: Value, day: StatementDay) -> Result<Self, BankClientError> {
        let answer: StatementAnswer = serde_json::from_value(answer)
            .map_err(|_| BankClientError::Malformed("the statement is not a statement"))?;
        if answer.day != day.to_string() {
            return Err(BankClientError::Malformed(
                "the statement is of another day",
            ));
        }
        if answer.entries.len() > STATEMENT_PAGE_ENTRIES_MAX {
            return Err(BankClientError::Malformed("a statement page is too long"));
        }
        let entries = answer
            .entries
            .into_iter()
            .map(|entry| {
                let kind = PaymentKind::parse(&entry.kind)
                    .ok_or(BankClientError::Malformed("unknown statement entry kind"))?;
                let settled = match entry.status.as_str() {
                    "settled" => true,
                    "rejected" => false,
                    _ => return Err(BankClientError::Malformed("unknown statement status")),
                };
                if entry.amount_yen <= 0
                    || !(day.start_ms()..day.end_ms()).contains(&entry.decided_at_ms)
                    || entry.key.is_empty()
                {
                    return Err(BankClientError::Malformed(
                        "a statement entry is out of bounds",
                    ));
                }
                Ok(StatementEntry {
                    id: entry.id,
                    kind,
                    key: entry.key,
                    bank_code: entry.bank_code,
                    amount_yen: entry.amount_yen,
                    settled,
                    reason: entry.reason,
                    decided_at_ms: entry.decided_at_ms,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            entries,
            next_cursor: answer.next_cursor,
        })
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
    fn statement_days_are_japan_dates() {
        let day = StatementDay::parse("2026-12-06").unwrap_or_else(|| panic!("a date"));
        assert_eq!(day.to_string(), "2026-12-06");
        // 2026-12-06T00:00+09:00 is 2026-12-05T15:00Z.
        assert_eq!(day.start_ms(), 1_796_482_800_000);
        assert_eq!(day.end_ms() - day.start_ms(), 86_400_000);
        assert_eq!(StatementDay::of_ms(day.start_ms()), day);
        assert_eq!(StatementDay::of_ms(day.start_ms() - 1), day.previous());
        assert_eq!(StatementDay::of_ms(day.end_ms()), day.next());
        assert_eq!(
            StatementDay::parse("2024-02-29").map(|day| day.next().to_string()),
            Some("2024-03-01".to_owned())
        );
        assert_eq!(
            StatementDay::parse("2026-12-31").map(|day| day.next().to_string()),
            Some("2027-01-01".to_owned())
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-1-01",
            "26-12-06",
            "2026-12-06 ",
            "+026-12-06",
            "1999-12-31",
            "",
        ] {
            assert_eq!(StatementDay::parse(bad), None, "{bad}");
        }
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
