//! Kinko's HTTP surface. Handlers parse the request into domain types, call one service
//! function and map the result; they hold no SQL and no business rules.
//!
//! `/api/v1` (JSON, errors per `problem.rs`), the pages for people in a browser (`pages/`),
//! `GET /healthz` and `GET /metrics` (Prometheus text, behind `KINKO_METRICS_TOKEN`; open only
//! in a sandbox without a token).

// Handlers return `Result<_, Problem>`: the error is the response body itself, built once per
// failed request, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod forwarded;
pub mod pages;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kinko_ledger::Ledger;
use metrics_exporter_prometheus::PrometheusHandle;
use problem::Problem;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;

/// Every request body is bounded; nothing Kinko accepts today is larger.
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Every request is bounded in time.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub ledger: Arc<Ledger>,
    pub metrics: PrometheusHandle,
    /// `sqlite` or `postgres`, for the health answer.
    pub store_kind: &'static str,
    pub identity: Arc<kinko_identity::service::IdentityService>,
    /// Bank links; without a configured bank, link attempts answer `BANK_UNAVAILABLE`.
    pub links: Arc<kinko_banking::links::LinkService>,
    /// Charges, balances and history.
    pub money: Arc<kinko_money::MoneyService>,
    /// Case work for operators.
    pub cases: Arc<kinko_cases::CaseService>,
    /// True only when `KINKO_ENV=sandbox` or `kinko demo` (`kinko_identity::environment`):
    /// mounts `/api/v1/sandbox/outbox`, where the demo and the tests read the codes "sent",
    /// and serves `/metrics` without a token when none is configured.
    pub sandbox: bool,
    /// The bearer token `/metrics` asks for (`KINKO_METRICS_TOKEN`). Without one, `/metrics`
    /// answers 404 outside a sandbox.
    pub metrics_token: Option<SecretString>,
    /// The passkeys' relying party, read once at start; `None` when its configuration was
    /// refused (the passkey routes then answer 503).
    pub relying_party: Option<Arc<kinko_identity::passkey::RelyingParty>>,
}

/// The whole router: testable without a socket, served by `kinko serve`.
pub fn app(state: AppState) -> Router {
    let sandbox = state.sandbox;
    let relying_party = state.relying_party.clone();
    Router::new()
        .route("/", get(pages::root))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api::router(sandbox, relying_party))
        .merge(pages::router())
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(REQUEST_BODY_BYTES_MAX))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(REQUEST_TIMEOUT_MS),
        ))
        // Every request gets an id (or keeps the caller's), echoed in the response and logs.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    status: &'static str,
    store: &'static str,
}

/// Healthy when the ledger writer runs and the store answers a read.
#[utoipa::path(
    get,
    path = "/healthz",
    responses(
        (status = 200, description = "The platform is healthy", body = Health),
        (status = 503, description = "The ledger or its store is not answering", body = Problem,
            content_type = "application/problem+json")
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let ledger = Arc::clone(&state.ledger);
    let store_answers = tokio::task::spawn_blocking(move || ledger.reader().lookup_accounts(&[]))
        .await
        .map(|result| result.is_ok())
        .unwrap_or(false);
    if state.ledger.is_running() && store_answers {
        Json(Health {
            status: "ok",
            store: state.store_kind,
        })
        .into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNHEALTHY",
            "The ledger or its store is not answering.",
        )
        .into_response()
    }
}

/// Prometheus text. With a token configured only `Authorization: Bearer <token>` reads it
/// (compared in constant time); without one, only a sandbox serves it, and elsewhere it is not
/// there at all — the figures say how busy the platform is and which flows fail.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match &state.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .unwrap_or_default();
            if !bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())) {
                return Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "METRICS_TOKEN_REQUIRED",
                    "The metrics need the configured bearer token.",
                )
                .into_response();
            }
        }
        None if state.sandbox => {}
        None => return not_found().await,
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    problem::Problem::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "There is nothing at this address.",
    )
    .into_response()
}
