//! The sandbox bank's HTTP face for the OAuth flow: server metadata (RFC 8414), the PAR
//! endpoint, the authorization endpoint (which refuses anything but a pushed request), the
//! token endpoint, and one protected resource (`GET /v1/grant`) that shows what a
//! DPoP-bound token allows. Handlers parse, call one `Bank` function off the async threads
//! (argon2 and the store block), and map the result; errors are JSON with the RFC error name
//! and a stable code, and a 5xx says nothing of its cause.

use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_core::Clock;
use secrecy::SecretString;
use serde::Deserialize;

use crate::client_auth::ClientAuthError;
use crate::dpop::DpopError;
use crate::oauth::{AuthorizationRequest, Bank, OAuthError, SCOPES, TokenRequest};

/// Requests to the bank are small forms; anything bigger is refused unread.
pub const BODY_LENGTH_MAX_BYTES: usize = 16 * 1_024;

#[derive(Clone)]
pub struct HttpState {
    pub bank: Arc<Bank>,
    pub clock: Arc<dyn Clock>,
}

impl HttpState {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX)
    }
}

/// The router for `kinko bank-sandbox`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/par", post(par))
        .route("/oauth/authorize", get(authorization_page).post(authorize))
        .route("/oauth/token", post(token))
        .route("/v1/grant", get(grant))
        .layer(DefaultBodyLimit::max(BODY_LENGTH_MAX_BYTES))
        .with_state(state)
}

/// An error answer: the standard name, the stable code, a fitting status.
struct ErrorResponse {
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

fn refusal(error: &OAuthError, at_resource: bool) -> ErrorResponse {
    let status = match error {
        OAuthError::Store(_) | OAuthError::Random(_) => {
            // The cause goes to the log; the client learns only that it was not its fault.
            tracing::error!(code = error.code(), error = %error, "bank request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        OAuthError::InvalidClient(_) | OAuthError::TokenInvalid => StatusCode::UNAUTHORIZED,
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
async fn blocking<T: Send + 'static>(
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
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
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

#[derive(Deserialize)]
struct AuthorizationQuery {
    client_id: String,
    request_uri: Option<String>,
}

/// What the consent page will show. Today it answers JSON; the bank's login and consent page
/// (templated HTML with CSRF protection) replaces it.
async fn authorization_page(
    State(state): State<HttpState>,
    query: Result<Query<AuthorizationQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return malformed().into_response();
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        bank.authorization_request(&query.client_id, query.request_uri.as_deref(), now_ms)
    })
    .await;
    match outcome {
        Ok(Ok(pending)) => (no_store(), Json(pending)).into_response(),
        Ok(Err(error)) => refusal(&error, false).into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct ConsentForm {
    client_id: String,
    request_uri: Option<String>,
    online_id: String,
    password: String,
    totp_code: String,
    account_id: uuid::Uuid,
}

/// The customer's login with both factors and approval for one account, in one step; on
/// success the browser goes back to the client with the code, the state and `iss`.
async fn authorize(
    State(state): State<HttpState>,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return malformed().into_response();
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        let password = SecretString::from(form.password);
        let customer =
            bank.authenticate_customer(&form.online_id, &password, &form.totp_code, now_ms)?;
        bank.authorize(
            &form.client_id,
            form.request_uri.as_deref(),
            &customer,
            form.account_id,
            now_ms,
        )
    })
    .await;
    match outcome {
        Ok(Ok(response)) => {
            let separator = if response.redirect_uri.contains('?') {
                '&'
            } else {
                '?'
            };
            let location = format!(
                "{}{separator}code={}&state={}&iss={}",
                response.redirect_uri,
                form_encode(&response.code),
                form_encode(&response.state),
                form_encode(&response.iss),
            );
            Redirect::to(&location).into_response()
        }
        Ok(Err(error)) => refusal(&error, false).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn form_encode(value: &str) -> String {
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

async fn token(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let Ok(Form(request)) = form else {
        return malformed().into_response();
    };
    let proof = match dpop_header(&headers) {
        Ok(proof) => proof,
        Err(error) => return error.into_response(),
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || bank.exchange_code(&request, proof.as_deref(), now_ms)).await;
    match outcome {
        Ok(Ok(response)) => (no_store(), Json(response)).into_response(),
        Ok(Err(error)) => refusal(&error, false).into_response(),
        Err(error) => error.into_response(),
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
