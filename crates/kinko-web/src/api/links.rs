//! Bank links on the API: start a link (the answer says where to send the browser), complete
//! it when the bank sends the browser back, list and end links, the fenced-in legacy method,
//! the banks' signed webhooks, and a bank's own view of its links and alerts for its
//! bank-partner operator. Every failed link attempt answers `BANK_LINK_FAILED`, whatever
//! failed.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::pages::wallet::CallbackQuery;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use kinko_banking::links::{
    Alert, BankLinkRecord, LegacyLinkRequest, LinkError, LinkService, LinkView, StartedLink,
};
use kinko_banking::registry::BankCode;
use kinko_identity::operator::{self, OperatorError, Permission};
use kinko_store::sql::Tx;
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::api::identity::{Authenticated, source};
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

/// A webhook body is one compact JWS; anything longer is refused unread.
pub const WEBHOOK_BODY_BYTES_MAX: usize = 16 * 1_024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/bank-links", post(start_link).get(list_links))
        .route("/bank-links/complete", post(complete_link))
        .route("/bank-links/callback", get(callback))
        .route("/bank-links/legacy", post(legacy_link))
        .route("/bank-links/{link_id}", delete(unlink))
        .route("/bank-webhooks", post(webhook))
        .route("/operator/banks/{bank_code}/links", get(bank_links))
        .route("/operator/banks/{bank_code}/alerts", get(bank_alerts))
        .route(
            "/operator/users/{user_id}/legacy-block",
            delete(lift_legacy_block),
        )
}

impl From<LinkError> for Problem {
    fn from(error: LinkError) -> Self {
        let problem = Problem::from_error(&error, "bank_links");
        match error {
            LinkError::RateLimited { retry_after_ms } => problem.retry_after_ms(retry_after_ms),
            _ => problem,
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LinkError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "bank link task failed");
            Err(Problem::internal())
        }
    }
}

fn links(state: &AppState) -> Arc<LinkService> {
    Arc::clone(&state.links)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartLinkRequest {
    /// The partner bank's 4-digit code.
    bank_code: String,
}

#[derive(serde::Serialize, ToSchema)]
pub struct StartedLinkView {
    /// Send the browser here: the bank's own login and consent.
    authorization_url: String,
    expires_in_s: i64,
}

impl From<StartedLink> for StartedLinkView {
    fn from(started: StartedLink) -> Self {
        Self {
            authorization_url: started.authorization_url,
            expires_in_s: started.expires_in_s,
        }
    }
}

#[derive(serde::Serialize, ToSchema)]
pub struct LinkResponse {
    id: uuid::Uuid,
    bank_code: String,
    /// e.g. `普通 123 ****567`.
    account_label: String,
    /// `oauth` or `legacy`.
    method: String,
    /// `active` (moves money), `verified` (a PIN-method link: the holder was verified, but it
    /// moves no money), `unlinked`, `revoked_by_bank` or `cut_for_fraud`.
    status: String,
    created_at_ms: i64,
    ended_at_ms: Option<i64>,
}

impl From<LinkView> for LinkResponse {
    fn from(view: LinkView) -> Self {
        Self {
            id: view.id,
            bank_code: view.bank_code,
            account_label: view.account_label,
            method: view.method,
            status: view.status,
            created_at_ms: view.created_at_ms,
            ended_at_ms: view.ended_at_ms,
        }
    }
}

/// Starts a link. Needs KYC L1, a second factor and a fresh step-up.
#[utoipa::path(post, path = "/api/v1/bank-links", request_body = StartLinkRequest,
    responses((status = 201, body = StartedLinkView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn start_link(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<StartLinkRequest>,
) -> Result<(StatusCode, Json<StartedLinkView>), Problem> {
    let service = links(&state);
    let started = blocking(move || service.start_link(&session, &body.bank_code)).await?;
    Ok((StatusCode::CREATED, Json(started.into())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteLinkRequest {
    state: String,
    code: String,
    /// The `iss` the bank sent back (RFC 9207).
    iss: String,
}

/// Completes a link with what the bank sent back (for apps that catch the redirect).
#[utoipa::path(post, path = "/api/v1/bank-links/complete", request_body = CompleteLinkRequest,
    responses((status = 201, body = LinkResponse), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem)))]
pub async fn complete_link(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<CompleteLinkRequest>,
) -> Result<(StatusCode, Json<LinkResponse>), Problem> {
    let service = links(&state);
    let link =
        blocking(move || service.complete_link(&session, &body.state, &body.code, &body.iss))
            .await?;
    Ok((StatusCode::CREATED, Json(link.into())))
}

/// Where the bank sends the browser back (the registered redirect URI). The browser's
/// session cookie says whose attempt it is; the state must be that user's. A browser coming
/// straight from the bank (another site) does not send the SameSite=Strict cookie: it gets a
/// page that carries it on to the wallet's own finish page, from this site
/// (`pages::wallet::bounce`).
pub async fn callback(
    State(state): State<AppState>,
    lang: crate::pages::Lang,
    headers: HeaderMap,
    session: Result<Authenticated, Problem>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let Ok(Query(query)) = query else {
        return Err(LinkError::Input("state, code and iss are required").into());
    };
    let has_credentials = headers.contains_key(header::AUTHORIZATION)
        || crate::pages::cookie(&headers, crate::api::identity::SESSION_COOKIE).is_some();
    if !has_credentials {
        return Ok(crate::pages::wallet::bounce(lang, &query));
    }
    let Authenticated(session) = session?;
    if query.error.is_some() {
        // The customer denied, or the bank refused: the same answer as any failed link.
        return Err(LinkError::LinkFailed.into());
    }
    let (Some(link_state), Some(code), Some(iss)) = (query.state, query.code, query.iss) else {
        return Err(LinkError::Input("state, code and iss are required").into());
    };
    let service = links(&state);
    let link = blocking(move || service.complete_link(&session, &link_state, &code, &iss)).await?;
    Ok((StatusCode::CREATED, Json(LinkResponse::from(link))).into_response())
}

#[utoipa::path(get, path = "/api/v1/bank-links",
    responses((status = 200, body = Vec<LinkResponse>), (status = 401, body = Problem)))]
pub async fn list_links(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<Vec<LinkResponse>>, Problem> {
    let service = links(&state);
    let links = blocking(move || service.list_links(&session)).await?;
    Ok(Json(links.into_iter().map(LinkResponse::from).collect()))
}

/// Ends one of the wallet's links; the bank ends the consent too.
#[utoipa::path(delete, path = "/api/v1/bank-links/{link_id}", params(("link_id" = uuid::Uuid, Path)),
    responses((status = 200, body = LinkResponse), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn unlink(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(link_id): Path<String>,
) -> Result<Json<LinkResponse>, Problem> {
    let link_id = uuid::Uuid::parse_str(&link_id).map_err(|_| LinkError::NotFound)?;
    let service = links(&state);
    let link = blocking(move || service.unlink(&session, link_id)).await?;
    Ok(Json(link.into()))
}

/// The legacy method's form. No `Debug`: it holds the PIN.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyLinkBody {
    bank_code: String,
    /// 3 digits.
    branch: String,
    /// `futsu` (普通) or `toza` (当座).
    account_type: String,
    /// 7 digits.
    account_number: String,
    /// The cash-card PIN (4 digits): sent to the bank, never stored or logged.
    #[schema(value_type = String, format = Password)]
    pin: SecretString,
}

/// The legacy PIN method, only where the bank's policy enables it. The name and birth date
/// sent to the bank are the wallet's KYC'd ones.
#[utoipa::path(post, path = "/api/v1/bank-links/legacy", request_body = LegacyLinkBody,
    responses((status = 201, body = LinkResponse), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 429, body = Problem), (status = 503, body = Problem)))]
pub async fn legacy_link(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LegacyLinkBody>,
) -> Result<(StatusCode, Json<LinkResponse>), Problem> {
    let source = source(&headers, address);
    let request = LegacyLinkRequest {
        bank_code: body.bank_code,
        branch: body.branch,
        account_type: body.account_type,
        account_number: body.account_number,
        pin: body.pin,
    };
    let service = links(&state);
    let link = blocking(move || service.legacy_link(&session, &source, &request)).await?;
    Ok((StatusCode::CREATED, Json(link.into())))
}

/// A bank's signed event (`Content-Type: application/jwt`, one compact JWS).
#[utoipa::path(post, path = "/api/v1/bank-webhooks", request_body(content = String, content_type = "application/jwt"),
    responses((status = 204), (status = 400, body = Problem), (status = 503, body = Problem)))]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, Problem> {
    let is_jwt = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("application/jwt"));
    if !is_jwt || body.len() > WEBHOOK_BODY_BYTES_MAX {
        return Err(LinkError::WebhookInvalid.into());
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| LinkError::WebhookInvalid)?;
    let service = links(&state);
    blocking(move || service.handle_webhook(text.trim())).await?;
    // A fraud report: freeze the wallet that charged the account, follow the money, hold
    // it (`MoneyService::contain`). The reconciler sweeps again, so a failure here is only
    // logged: the bank's event itself was applied.
    let money = Arc::clone(&state.money);
    match tokio::task::spawn_blocking(move || money.contain_reported_frauds()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::error!(error = %error, "containing a fraud report failed"),
        Err(error) => tracing::error!(error = %error, "containing a fraud report failed"),
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the operator may see this bank's activity (its own bank for a bank partner).
async fn bank_viewer(
    state: &AppState,
    token: SecretString,
    bank_code: &str,
) -> Result<BankCode, Problem> {
    let code = BankCode::parse(bank_code).map_err(|_| LinkError::BankUnknown)?;
    let database = Arc::clone(state.identity.database());
    let clock = Arc::clone(state.identity.clock());
    let wanted = code.as_str().to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        database.transaction(|tx: &mut dyn Tx| {
            let by = operator::authenticate(tx, now_ms, &token)?;
            by.require(Permission::ViewBankActivity { bank_code: wanted })?;
            Ok::<_, OperatorError>(())
        })
    })
    .await;
    match outcome {
        Ok(Ok(())) => Ok(code),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => {
            tracing::error!(error = %error, "operator check failed");
            Err(Problem::internal())
        }
    }
}

/// The links on a bank's accounts: for that bank's partner operator and for staff.
#[utoipa::path(get, path = "/api/v1/operator/banks/{bank_code}/links", params(("bank_code" = String, Path)),
    responses((status = 200, description = "The bank's links, newest first"), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn bank_links(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(bank_code): Path<String>,
) -> Result<Json<Vec<BankLinkRecord>>, Problem> {
    let code = bank_viewer(&state, token, &bank_code).await?;
    let service = links(&state);
    Ok(Json(blocking(move || service.links_of_bank(&code)).await?))
}

/// Alerts at a bank: the legacy detector firing, wallets blocked, fraud reports.
#[utoipa::path(get, path = "/api/v1/operator/banks/{bank_code}/alerts", params(("bank_code" = String, Path)),
    responses((status = 200, description = "The bank's alerts, newest first"), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn bank_alerts(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(bank_code): Path<String>,
) -> Result<Json<Vec<Alert>>, Problem> {
    let code = bank_viewer(&state, token, &bank_code).await?;
    let service = links(&state);
    Ok(Json(blocking(move || service.alerts_of_bank(&code)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// Why (10–500 characters): kept in the audit entry.
    reason: String,
}

/// Lifts a wallet's block on the legacy PIN method after review (analysts and admins).
#[utoipa::path(delete, path = "/api/v1/operator/users/{user_id}/legacy-block", request_body = ReviewRequest,
    params(("user_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn lift_legacy_block(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<ReviewRequest>,
) -> Result<StatusCode, Problem> {
    let user_id = uuid::Uuid::parse_str(&user_id).map_err(|_| LinkError::NotFound)?;
    let database = Arc::clone(state.identity.database());
    let clock = Arc::clone(state.identity.clock());
    let outcome = tokio::task::spawn_blocking(move || {
        let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        database.transaction(|tx: &mut dyn Tx| {
            let by = operator::authenticate(tx, now_ms, &token)?;
            kinko_banking::links::lift_legacy_block(tx, now_ms, &by, user_id, &body.reason)
        })
    })
    .await;
    match outcome {
        Ok(Ok(true)) => Ok(StatusCode::NO_CONTENT),
        Ok(Ok(false)) => Err(LinkError::NotFound.into()),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => {
            tracing::error!(error = %error, "operator task failed");
            Err(Problem::internal())
        }
    }
}
