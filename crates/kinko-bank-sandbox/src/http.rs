//! The sandbox bank's HTTP face for the OAuth flow: server metadata (RFC 8414), the PAR
//! endpoint, the token endpoint (code and refresh grants), revocation (RFC 7009), the bank's
//! published keys, one protected resource (`GET /v1/grant`) that shows what a DPoP-bound
//! token allows, and the account resources: holder match, debits and credits with an
//! `Idempotency-Key`, their lookup by key, and the legacy verify endpoint; and the sandbox's
//! own client registration. The pages (authorization, customer) are in `pages`. Handlers
//! parse, call one `Bank` function off the async threads (argon2 and the store block), and
//! map the result; errors are JSON with the RFC error name and a stable code, and a 5xx says
//! nothing of its cause.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_core::Clock;
use secrecy::SecretString;
use serde::Deserialize;

use crate::client_auth::ClientAuthError;
use crate::client_auth::{ClientMetadata, RegistrationError};
use crate::dpop::DpopError;
use crate::holder::HolderMatchRequest;
use crate::legacy::LegacyVerifyRequest;
use crate::oauth::{
    AuthorizationRequest, Bank, OAuthError, RefreshRequest, ResourceGrant, SCOPES, TokenRequest,
};
use crate::payments::{PaymentKind, PaymentRequest};
use crate::resource::ResourceError;

/// Requests to the bank are small forms; anything bigger is refused unread.
pub const BODY_LENGTH_MAX_BYTES: usize = 16 * 1_024;

#[derive(Clone)]
pub struct HttpState {
    pub bank: Arc<Bank>,
    pub clock: Arc<dyn Clock>,
}

impl HttpState {
    pub(crate) fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }
}

/// The router for `kinko bank-sandbox`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/par", post(par))
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/sandbox/clients", post(register_client))
        .route("/v1/grant", get(grant))
        .route("/v1/holder-match", post(holder_match))
        .route("/v1/debits", post(debit))
        .route("/v1/credits", post(credit))
        .route("/v1/debits/{key}", get(debit_by_key))
        .route("/v1/credits/{key}", get(credit_by_key))
        .route("/v1/legacy/verify", post(legacy_verify))
        .route("/v1/payments/lookup", post(payment_lookup))
        .route("/v1/statements", post(crate::statement::statement))
        .route("/v1/refunds", post(refund))
        .merge(crate::pages::routes())
        .merge(crate::drill::routes())
        .layer(DefaultBodyLimit::max(BODY_LENGTH_MAX_BYTES))
        .with_state(state)
}

/// An error answer: the standard name, the stable code, a fitting status.
pub(crate) struct ErrorResponse {
    status: StatusCode,
    error: &'static str,
    code: &'static str,
    /// At a protected resource, RFC 9449 §7.1 asks for a `WWW-Authenticate: DPoP` challenge.
    challenge: bool,
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({"error": self.error, "code": self.code}));
        let mut response = (self.status, body).into_response();
        if self.challenge
            && let Ok(value) =
                HeaderValue::from_str(&format!("DPoP error=\"{}\", algs=\"ES256\"", self.error))
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

pub(crate) fn refusal(error: &OAuthError, at_resource: bool) -> ErrorResponse {
    let status = match error {
        OAuthError::Store(_) | OAuthError::Random(_) => {
            // The cause goes to the log; the client learns only that it was not its fault.
            tracing::error!(code = error.code(), error = %error, "bank request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        OAuthError::InvalidClient(_) | OAuthError::TokenInvalid => StatusCode::UNAUTHORIZED,
        OAuthError::LinkNotFound | OAuthError::DebitNotFound | OAuthError::AccountNotFound => {
            StatusCode::NOT_FOUND
        }
        OAuthError::Dpop(_) if at_resource => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    ErrorResponse {
        status,
        error: error.oauth_error(),
        code: error.code(),
        challenge: at_resource && status == StatusCode::UNAUTHORIZED,
    }
}

fn malformed() -> ErrorResponse {
    ErrorResponse {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        code: "BANK_OAUTH_INVALID_REQUEST",
        challenge: false,
    }
}

fn server_error() -> ErrorResponse {
    ErrorResponse {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        error: "server_error",
        code: "BANK_INTERNAL",
        challenge: false,
    }
}

/// Runs blocking bank work (store, argon2) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorResponse> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(error = %error, "bank worker failed");
        server_error()
    })
}

async fn metadata(State(state): State<HttpState>) -> Response {
    let issuer = state.bank.issuer();
    Json(serde_json::json!({
        "issuer": issuer,
        "pushed_authorization_request_endpoint": state.bank.par_endpoint(),
        "require_pushed_authorization_requests": true,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": state.bank.token_endpoint(),
        "revocation_endpoint": state.bank.revocation_endpoint(),
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        "jwks_uri": state.bank.jwks_uri(),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": SCOPES,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ParForm {
    client_assertion_type: String,
    client_assertion: String,
    #[serde(flatten)]
    request: AuthorizationRequest,
}

async fn par(
    State(state): State<HttpState>,
    form: Result<Form<ParForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return malformed().into_response();
    };
    if form.client_assertion_type != crate::client_auth::ASSERTION_TYPE {
        return refusal(
            &OAuthError::InvalidClient(ClientAuthError::Malformed),
            false,
        )
        .into_response();
    }
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        bank.push_authorization_request(&form.client_assertion, &form.request, now_ms)
    })
    .await;
    match outcome {
        Ok(Ok(pushed)) => (StatusCode::CREATED, no_store(), Json(pushed)).into_response(),
        Ok(Err(error)) => refusal(&error, false).into_response(),
        Err(error) => error.into_response(),
    }
}

fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub(crate) fn form_encode(value: &str) -> String {
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

fn dpop_header(headers: &HeaderMap) -> Result<Option<String>, ErrorResponse> {
    let mut values = headers.get_all("dpop").iter();
    let first = values.next();
    // RFC 9449 §4.3: exactly one proof per request.
    if values.next().is_some() {
        return Err(refusal(&OAuthError::Dpop(DpopError::Malformed), false));
    }
    first
        .map(|value| value.to_str().map(str::to_owned).map_err(|_| malformed()))
        .transpose()
}

/// Every field either grant may carry; which must be there depends on `grant_type`.
#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
}

/// A token request, by grant.
enum Grant {
    Code(TokenRequest),
    Refresh(RefreshRequest),
}

impl TokenForm {
    fn grant(self) -> Result<Grant, OAuthError> {
        let missing = OAuthError::RequestInvalid("a required field is missing");
        let client_assertion_type = self.client_assertion_type.ok_or(missing)?;
        let client_assertion = self
            .client_assertion
            .ok_or(OAuthError::RequestInvalid("client_assertion"))?;
        match self.grant_type.as_str() {
            "authorization_code" => Ok(Grant::Code(TokenRequest {
                grant_type: self.grant_type,
                code: self.code.ok_or(OAuthError::RequestInvalid("code"))?,
                redirect_uri: self
                    .redirect_uri
                    .ok_or(OAuthError::RequestInvalid("redirect_uri"))?,
                code_verifier: self.code_verifier,
                client_assertion_type,
                client_assertion,
            })),
            "refresh_token" => Ok(Grant::Refresh(RefreshRequest {
                grant_type: self.grant_type,
                refresh_token: self
                    .refresh_token
                    .ok_or(OAuthError::RequestInvalid("refresh_token"))?,
                client_assertion_type,
                client_assertion,
            })),
            _ => Err(OAuthError::UnsupportedGrantType),
        }
    }
}

async fn token(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return malformed().into_response();
    };
    let grant = match form.grant() {
        Ok(grant) => grant,
        Err(error) => return refusal(&error, false).into_response(),
    };
    let proof = match dpop_header(&headers) {
        Ok(proof) => proof,
        Err(error) => return error.into_response(),
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || match grant {
        Grant::Code(request) => bank.exchange_code(&request, proof.as_deref(), now_ms),
        Grant::Refresh(request) => {
            // The sandbox's slow bank holds refresh grants too (a test hook).
            crate::payments::hold_while_asked();
            bank.refresh(&request, proof.as_deref(), now_ms)
        }
    })
    .await;
    match outcome {
        Ok(Ok(response)) => (no_store(), Json(response)).into_response(),
        Ok(Err(error)) => refusal(&error, false).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `token_type_hint` (RFC 7009 §2.1) is only a hint: the bank looks the token up either way,
/// so the field is accepted and not read.
#[derive(Deserialize)]
struct RevokeForm {
    client_assertion_type: String,
    client_assertion: String,
    token: String,
}

/// `POST /oauth/revoke` (RFC 7009): `200` whatever the token was, once the client is known.
async fn revoke(
    State(state): State<HttpState>,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return malformed().into_response();
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        bank.revoke(
            &form.client_assertion_type,
            &form.client_assertion,
            &form.token,
            now_ms,
        )
    })
    .await;
    match outcome {
        Ok(Ok(())) => (StatusCode::OK, no_store()).into_response(),
        Ok(Err(error)) => refusal(&error, false).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /.well-known/jwks.json`: the keys that sign the bank's webhooks.
async fn jwks(State(state): State<HttpState>) -> Response {
    Json(state.bank.jwks()).into_response()
}

/// `POST /sandbox/clients` (sandbox only): registers a client; `201 {"client_id"}`.
async fn register_client(
    State(state): State<HttpState>,
    body: Result<Json<ClientMetadata>, JsonRejection>,
) -> Response {
    let Ok(Json(metadata)) = body else {
        return client_metadata_refusal(&RegistrationError::Invalid("body")).into_response();
    };
    let bank = Arc::clone(&state.bank);
    let outcome =
        blocking(move || crate::client_auth::register_metadata(bank.database(), &metadata)).await;
    match outcome {
        Ok(Ok(client_id)) => (
            StatusCode::CREATED,
            no_store(),
            Json(serde_json::json!({ "client_id": client_id })),
        )
            .into_response(),
        Ok(Err(error)) => client_metadata_refusal(&error).into_response(),
        Err(error) => error.into_response(),
    }
}

fn client_metadata_refusal(error: &RegistrationError) -> ErrorResponse {
    match error {
        RegistrationError::Invalid(_) => ErrorResponse {
            status: StatusCode::BAD_REQUEST,
            // RFC 7591 §3.2.2.
            error: "invalid_client_metadata",
            code: error.code(),
            challenge: false,
        },
        RegistrationError::Store(store) => {
            tracing::error!(error = %store, "registering a client failed");
            server_error()
        }
    }
}

/// A protected resource: answers what the presented token allows.
async fn grant(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("DPoP "))
        .map(str::to_owned);
    // A DPoP-bound token sent as a bearer token, or no token at all, is refused as invalid.
    let Some(token) = token else {
        return refusal(&OAuthError::TokenInvalid, true).into_response();
    };
    let proof = match dpop_header(&headers) {
        Ok(proof) => proof,
        Err(error) => return error.into_response(),
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let url = format!("{}/v1/grant", bank.issuer());
    let outcome =
        blocking(move || bank.authorize_resource(&token, proof.as_deref(), "GET", &url, now_ms))
            .await;
    match outcome {
        Ok(Ok(grant)) => Json(serde_json::json!({
            "client_id": grant.client_id,
            "account_id": grant.account_id,
            "scope": grant.scope,
        }))
        .into_response(),
        Ok(Err(error)) => refusal(&error, true).into_response(),
        Err(error) => error.into_response(),
    }
}

pub(crate) fn resource_refusal(error: &ResourceError) -> ErrorResponse {
    let status = match error {
        ResourceError::OAuth(error) => return refusal(error, true),
        ResourceError::ScopeMissing(_) => StatusCode::FORBIDDEN,
        ResourceError::RequestInvalid(_) | ResourceError::IdempotencyKeyInvalid => {
            StatusCode::BAD_REQUEST
        }
        ResourceError::IdempotencyKeyReused => StatusCode::CONFLICT,
        ResourceError::NotFound => StatusCode::NOT_FOUND,
        ResourceError::Store(_) => {
            tracing::error!(code = error.code(), error = %error, "bank resource failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ErrorResponse {
        status,
        error: error.error_name(),
        code: error.code(),
        // RFC 6750 §3.1 / RFC 9449 §7.1: a token short of scope gets a challenge too.
        challenge: status == StatusCode::FORBIDDEN,
    }
}

/// Runs `work` on the grant of the request's DPoP-bound token, checked for this method and
/// URL before anything of the request is read.
async fn with_grant(
    state: HttpState,
    headers: &HeaderMap,
    method: &'static str,
    uri: &Uri,
    work: impl FnOnce(&Bank, &ResourceGrant, i64) -> Result<serde_json::Value, ResourceError>
    + Send
    + 'static,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("DPoP "))
        .map(str::to_owned);
    let Some(token) = token else {
        return refusal(&OAuthError::TokenInvalid, true).into_response();
    };
    let proof = match dpop_header(headers) {
        Ok(proof) => proof,
        Err(error) => return error.into_response(),
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let url = format!("{}{}", bank.issuer(), uri.path());
    let outcome = blocking(move || {
        let grant = bank.authorize_resource(&token, proof.as_deref(), method, &url, now_ms)?;
        work(&bank, &grant, now_ms)
    })
    .await;
    match outcome {
        Ok(Ok(answer)) => (no_store(), Json(answer)).into_response(),
        Ok(Err(error)) => resource_refusal(&error).into_response(),
        Err(error) => error.into_response(),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ResourceError> {
    serde_json::from_slice(body).map_err(|_| ResourceError::RequestInvalid("body"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ResourceError> {
    serde_json::to_value(value).map_err(|_| ResourceError::RequestInvalid("answer"))
}

/// `POST /v1/holder-match`: `{kana_name, birth_date}` → `{match}`, nothing more.
async fn holder_match(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    with_grant(state, &headers, "POST", &uri, move |bank, grant, _| {
        let request: HolderMatchRequest = json_body(&body)?;
        let matched = bank.holder_match(grant, &request)?;
        Ok(serde_json::json!({ "match": matched }))
    })
    .await
}

/// The one `Idempotency-Key` header, as text.
fn idempotency_key(headers: &HeaderMap) -> Result<String, ResourceError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ResourceError::IdempotencyKeyInvalid);
    }
    first
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or(ResourceError::IdempotencyKeyInvalid)
}

async fn payment(
    kind: PaymentKind,
    state: HttpState,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let key = idempotency_key(&headers);
    let clock = Arc::clone(&state.clock);
    with_grant(state, &headers, "POST", &uri, move |bank, grant, _| {
        let key = key?;
        let request: PaymentRequest = json_body(&body)?;
        crate::payments::hold_while_asked();
        // The deadline is judged when the bank decides, not when the request arrived.
        let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        let answer = match kind {
            PaymentKind::Debit => bank.debit(grant, &key, &request, now_ms)?,
            PaymentKind::Credit => bank.credit(grant, &key, &request, now_ms)?,
        };
        to_json(&answer)
    })
    .await
}

async fn debit(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    payment(PaymentKind::Debit, state, headers, uri, body).await
}

async fn credit(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    payment(PaymentKind::Credit, state, headers, uri, body).await
}

async fn payment_by_key(
    kind: PaymentKind,
    state: HttpState,
    headers: HeaderMap,
    uri: Uri,
    key: String,
) -> Response {
    with_grant(state, &headers, "GET", &uri, move |bank, grant, _| {
        to_json(&bank.payment(grant, kind, &key)?)
    })
    .await
}

async fn debit_by_key(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    key: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(key)) = key else {
        return resource_refusal(&ResourceError::IdempotencyKeyInvalid).into_response();
    };
    payment_by_key(PaymentKind::Debit, state, headers, uri, key).await
}

async fn credit_by_key(
    State(state): State<HttpState>,
    headers: HeaderMap,
    uri: Uri,
    key: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(key)) = key else {
        return resource_refusal(&ResourceError::IdempotencyKeyInvalid).into_response();
    };
    payment_by_key(PaymentKind::Credit, state, headers, uri, key).await
}

/// The payment lookup form: the client's own authentication and one of its keys.
#[derive(Deserialize)]
struct PaymentLookupForm {
    client_assertion_type: String,
    client_assertion: String,
    /// `debit` or `credit`.
    kind: String,
    key: String,
}

/// `POST /v1/payments/lookup` (form, `private_key_jwt`): the saved answer for a key of the
/// client's, without a link's token (see [`Bank::payment_by_client`]).
async fn payment_lookup(
    State(state): State<HttpState>,
    form: Result<Form<PaymentLookupForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return resource_refusal(&ResourceError::RequestInvalid("body")).into_response();
    };
    if form.client_assertion_type != crate::client_auth::ASSERTION_TYPE {
        return refusal(
            &OAuthError::InvalidClient(ClientAuthError::Malformed),
            false,
        )
        .into_response();
    }
    let kind = match form.kind.as_str() {
        "debit" => PaymentKind::Debit,
        "credit" => PaymentKind::Credit,
        _ => return resource_refusal(&ResourceError::RequestInvalid("kind")).into_response(),
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome =
        blocking(move || bank.payment_by_client(&form.client_assertion, kind, &form.key, now_ms))
            .await;
    match outcome {
        Ok(Ok(answer)) => match to_json(&answer) {
            Ok(json) => (no_store(), Json(json)).into_response(),
            Err(error) => resource_refusal(&error).into_response(),
        },
        Ok(Err(ResourceError::OAuth(error))) => refusal(&error, false).into_response(),
        Ok(Err(error)) => resource_refusal(&error).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The refund form: the client's own authentication, the debit to pay back, and the credit.
#[derive(Deserialize)]
struct RefundForm {
    client_assertion_type: String,
    client_assertion: String,
    /// The client's key of the settled debit being paid back.
    original_key: String,
    amount_yen: i64,
    description: String,
    not_after_ms: Option<i64>,
}

/// `POST /v1/refunds` (form, `private_key_jwt`, `Idempotency-Key`): a credit into the account
/// a debit of the client's took from (see [`Bank::refund_by_client`]).
async fn refund(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<RefundForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return resource_refusal(&ResourceError::RequestInvalid("body")).into_response();
    };
    if form.client_assertion_type != crate::client_auth::ASSERTION_TYPE {
        return refusal(
            &OAuthError::InvalidClient(ClientAuthError::Malformed),
            false,
        )
        .into_response();
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
    else {
        return resource_refusal(&ResourceError::IdempotencyKeyInvalid).into_response();
    };
    let request = crate::payments::PaymentRequest {
        amount_yen: form.amount_yen,
        description: form.description,
        not_after_ms: form.not_after_ms,
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        crate::payments::hold_while_asked();
        bank.refund_by_client(
            &form.client_assertion,
            &form.original_key,
            &key,
            &request,
            now_ms,
        )
    })
    .await;
    match outcome {
        Ok(Ok(answer)) => match to_json(&answer) {
            Ok(json) => (no_store(), Json(json)).into_response(),
            Err(error) => resource_refusal(&error).into_response(),
        },
        Ok(Err(ResourceError::OAuth(error))) => refusal(&error, false).into_response(),
        Ok(Err(error)) => resource_refusal(&error).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The legacy verify form. No `Debug`: it holds the PIN until it becomes a `SecretString`.
#[derive(Deserialize)]
struct LegacyVerifyForm {
    client_assertion_type: String,
    client_assertion: String,
    bank_code: String,
    branch: String,
    account_type: String,
    account_number: String,
    pin: String,
    kana_name: String,
    birth_date: String,
}

/// `POST /v1/legacy/verify` (form, `private_key_jwt`): `{match}`.
async fn legacy_verify(
    State(state): State<HttpState>,
    form: Result<Form<LegacyVerifyForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return resource_refusal(&ResourceError::RequestInvalid("body")).into_response();
    };
    if form.client_assertion_type != crate::client_auth::ASSERTION_TYPE {
        return refusal(
            &OAuthError::InvalidClient(ClientAuthError::Malformed),
            false,
        )
        .into_response();
    }
    let request = LegacyVerifyRequest {
        bank_code: form.bank_code,
        branch: form.branch,
        account_type: form.account_type,
        account_number: form.account_number,
        pin: SecretString::from(form.pin),
        kana_name: form.kana_name,
        birth_date: form.birth_date,
    };
    let assertion = form.client_assertion;
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || bank.legacy_verify(&assertion, &request, now_ms)).await;
    match outcome {
        Ok(Ok(Some(account_ref))) => (
            no_store(),
            Json(serde_json::json!({ "match": true, "account_ref": account_ref })),
        )
            .into_response(),
        Ok(Ok(None)) => (no_store(), Json(serde_json::json!({ "match": false }))).into_response(),
        // A failed client authentication is a token-endpoint-style 401, without a DPoP challenge.
        Ok(Err(ResourceError::OAuth(error))) => refusal(&error, false).into_response(),
        Ok(Err(error)) => resource_refusal(&error).into_response(),
        Err(error) => error.into_response(),
    }
}
