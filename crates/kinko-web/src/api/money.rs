//! Money on the API: charges from a linked bank account (with `Idempotency-Key`), the wallet's
//! balance, and its history (JSON pages, or CSV for Excel).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kinko_money::confirmations::Confirmation;
use kinko_money::history::{Balance, HistoryFilter, HistoryPage};
use kinko_money::transfers::{P2pTransfer, SendRequest};
use kinko_money::{Charge, ChargeRequest, Direction, MoneyError, MoneyService};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::api::identity::Authenticated;
use crate::problem::Problem;

/// The header every money-moving POST carries.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/charges", post(charge))
        .route("/charges/{charge_id}", get(charge_status))
        .route("/charges/confirmations", post(start_confirmation))
        .route(
            "/charges/confirmations/{confirmation_id}/totp",
            post(confirm_with_totp),
        )
        .route("/withdrawals", post(withdraw))
        .route("/withdrawals/{withdrawal_id}", get(withdrawal_status))
        .route("/wallet", get(balance))
        .route("/me/handle", put(set_handle))
        .route("/transfers", post(send))
        .route("/wallet/history", get(history))
        .route("/wallet/history.csv", get(history_csv))
}

impl From<MoneyError> for Problem {
    fn from(error: MoneyError) -> Self {
        let mut problem = Problem::from_error(&error, "money");
        match error {
            MoneyError::NewLinkWait { retry_after_ms }
            | MoneyError::PayoutAccountWait { retry_after_ms }
            | MoneyError::ConfirmationRateLimited { retry_after_ms }
            | MoneyError::HandleLookupRateLimited { retry_after_ms } => {
                problem.retry_after_ms(retry_after_ms)
            }
            MoneyError::LimitExceeded(which) => {
                problem.detail = Some(format!("The {which} limit is reached."));
                problem
            }
            _ => problem,
        }
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MoneyError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "money task failed");
            Err(Problem::internal())
        }
    }
}

pub(crate) fn money(state: &AppState) -> Arc<MoneyService> {
    Arc::clone(&state.money)
}

/// The request's single `Idempotency-Key`; a missing, repeated or unreadable one is refused.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .map(str::to_owned)
            .map_err(|_| MoneyError::IdempotencyKeyInvalid.into()),
        _ => Err(MoneyError::IdempotencyKeyInvalid.into()),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargeBody {
    /// The active bank link to charge from.
    link_id: uuid::Uuid,
    /// Whole yen, above zero.
    amount_yen: i64,
    /// A confirmation passed for this link and amount: required for a charge above the
    /// threshold (`MONEY_CONFIRMATION_REQUIRED`), ignored for a withdrawal.
    confirmation_id: Option<uuid::Uuid>,
}

#[derive(serde::Serialize, ToSchema)]
pub struct ChargeView {
    id: uuid::Uuid,
    /// `charge` (bank → wallet) or `withdrawal` (wallet → bank).
    direction: String,
    link_id: uuid::Uuid,
    bank_code: String,
    amount_yen: i64,
    /// `posted`, `rejected`, `voided`, or `pending` (the bank has not answered yet).
    status: String,
    reason: Option<String>,
    created_at_ms: i64,
}

impl From<Charge> for ChargeView {
    fn from(charge: Charge) -> Self {
        Self {
            id: charge.id,
            direction: charge.direction,
            link_id: charge.link_id,
            bank_code: charge.bank_code,
            amount_yen: charge.amount_yen,
            status: charge.status,
            reason: charge.reason,
            created_at_ms: charge.created_at_ms,
        }
    }
}

async fn cross_to_bank(
    state: &AppState,
    session: kinko_identity::session::SessionInfo,
    direction: Direction,
    headers: &HeaderMap,
    body: ChargeBody,
) -> Result<(StatusCode, Json<ChargeView>), Problem> {
    let key = idempotency_key(headers)?;
    let service = money(state);
    let moved = blocking(move || {
        let request = ChargeRequest {
            link_id: body.link_id,
            amount_yen: body.amount_yen,
            idempotency_key: key,
            confirmation_id: body.confirmation_id,
        };
        match direction {
            Direction::Charge => service.charge(&session, &request),
            Direction::Withdrawal => service.withdraw(&session, &request),
        }
    })
    .await?;
    let status = if moved.status == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(moved.into())))
}

/// Charges the wallet from a linked bank account. The same `Idempotency-Key` with the same
/// body answers the same charge; with another body, 409.
#[utoipa::path(post, path = "/api/v1/charges", request_body = ChargeBody,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = ChargeView, description = "posted or rejected"),
        (status = 202, body = ChargeView, description = "pending: the bank has not answered yet"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn charge(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChargeBody>,
) -> Result<(StatusCode, Json<ChargeView>), Problem> {
    cross_to_bank(&state, session, Direction::Charge, &headers, body).await
}

/// Withdraws to a linked bank account (whose holder matched the wallet's identity when it
/// was linked). `rejected` with `insufficient_funds` when the wallet does not cover it.
#[utoipa::path(post, path = "/api/v1/withdrawals", request_body = ChargeBody,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = ChargeView, description = "posted or rejected"),
        (status = 202, body = ChargeView, description = "pending: the bank has not answered yet"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn withdraw(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChargeBody>,
) -> Result<(StatusCode, Json<ChargeView>), Problem> {
    cross_to_bank(&state, session, Direction::Withdrawal, &headers, body).await
}

async fn bank_transfer_status(
    state: &AppState,
    session: kinko_identity::session::SessionInfo,
    direction: Direction,
    id: &str,
) -> Result<Json<ChargeView>, Problem> {
    let not_found = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            match direction {
                Direction::Charge => "MONEY_CHARGE_NOT_FOUND",
                Direction::Withdrawal => "MONEY_WITHDRAWAL_NOT_FOUND",
            },
            "There is no such movement.",
        )
    };
    let id = uuid::Uuid::parse_str(id).map_err(|_| not_found())?;
    let service = money(state);
    let found = blocking(move || service.bank_transfer_of(&session, direction, id)).await?;
    found.map(|found| Json(found.into())).ok_or_else(not_found)
}

#[utoipa::path(get, path = "/api/v1/charges/{charge_id}", params(("charge_id" = uuid::Uuid, Path)),
    responses((status = 200, body = ChargeView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn charge_status(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(charge_id): Path<String>,
) -> Result<Json<ChargeView>, Problem> {
    bank_transfer_status(&state, session, Direction::Charge, &charge_id).await
}

#[utoipa::path(get, path = "/api/v1/withdrawals/{withdrawal_id}", params(("withdrawal_id" = uuid::Uuid, Path)),
    responses((status = 200, body = ChargeView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn withdrawal_status(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(withdrawal_id): Path<String>,
) -> Result<Json<ChargeView>, Problem> {
    bank_transfer_status(&state, session, Direction::Withdrawal, &withdrawal_id).await
}

#[derive(serde::Serialize, ToSchema)]
pub struct BalanceView {
    balance_yen: i64,
    available_yen: i64,
    pending_in_yen: i64,
}

impl From<Balance> for BalanceView {
    fn from(balance: Balance) -> Self {
        Self {
            balance_yen: balance.balance_yen,
            available_yen: balance.available_yen,
            pending_in_yen: balance.pending_in_yen,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/wallet",
    responses((status = 200, body = BalanceView), (status = 401, body = Problem)))]
pub async fn balance(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<BalanceView>, Problem> {
    let service = money(&state);
    Ok(Json(
        blocking(move || service.balance(&session)).await?.into(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    kind: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    cursor: Option<String>,
    limit: Option<u32>,
}

impl From<HistoryQuery> for HistoryFilter {
    fn from(query: HistoryQuery) -> Self {
        Self {
            kind: query.kind,
            from_ms: query.from_ms,
            to_ms: query.to_ms,
            cursor: query.cursor,
            limit: query.limit,
        }
    }
}

pub(crate) fn query_problem(rejection: &QueryRejection) -> Problem {
    let mut problem = Problem::new(
        StatusCode::BAD_REQUEST,
        "REQUEST_INVALID",
        "The query string is not valid for this endpoint.",
    );
    problem.detail = Some(rejection.body_text());
    problem
}

/// The wallet's movements, newest first: `?kind=charge&from_ms=…&to_ms=…&limit=50&cursor=…`.
#[utoipa::path(get, path = "/api/v1/wallet/history",
    responses((status = 200, description = "A page of movements and the next cursor"), (status = 400, body = Problem), (status = 401, body = Problem)))]
pub async fn history(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryPage>, Problem> {
    let Query(query) = query.map_err(|rejection| query_problem(&rejection))?;
    let service = money(&state);
    let filter = HistoryFilter::from(query);
    Ok(Json(
        blocking(move || service.history(&session, &filter)).await?,
    ))
}

/// The same movements as CSV (UTF-8 with a BOM, for Excel in Japan).
pub async fn history_csv(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|rejection| query_problem(&rejection))?;
    let service = money(&state);
    let filter = HistoryFilter::from(query);
    let csv = blocking(move || service.history_csv(&session, &filter)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"kinko-history.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandleBody {
    /// 3–20 of a–z, 0–9 and _; what others type to send this wallet money.
    handle: String,
}

#[derive(serde::Serialize, ToSchema)]
pub struct HandleView {
    handle: String,
}

#[utoipa::path(put, path = "/api/v1/me/handle", request_body = HandleBody,
    responses((status = 200, body = HandleView), (status = 400, body = Problem), (status = 401, body = Problem), (status = 409, body = Problem), (status = 429, body = Problem)))]
pub async fn set_handle(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<HandleBody>,
) -> Result<Json<HandleView>, Problem> {
    let service = money(&state);
    let handle = blocking(move || service.set_handle(&session, &body.handle)).await?;
    Ok(Json(HandleView { handle }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// The recipient's handle (with or without `@`).
    to_handle: String,
    amount_yen: i64,
    /// Up to 100 characters for the recipient.
    #[serde(default)]
    note: String,
}

#[derive(serde::Serialize, ToSchema)]
pub struct TransferView {
    id: uuid::Uuid,
    to_handle: String,
    amount_yen: i64,
    note: String,
    /// `posted`, or `rejected` with `reason` (`insufficient_funds`).
    status: String,
    reason: Option<String>,
    created_at_ms: i64,
}

impl From<P2pTransfer> for TransferView {
    fn from(sent: P2pTransfer) -> Self {
        Self {
            id: sent.id,
            to_handle: sent.to_handle,
            amount_yen: sent.amount_yen,
            note: sent.note,
            status: sent.status,
            reason: sent.reason,
            created_at_ms: sent.created_at_ms,
        }
    }
}

/// Sends money to another wallet by handle (`Idempotency-Key` required).
#[utoipa::path(post, path = "/api/v1/transfers", request_body = SendBody,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = TransferView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 429, body = Problem)))]
pub async fn send(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<(StatusCode, Json<TransferView>), Problem> {
    let key = idempotency_key(&headers)?;
    let service = money(&state);
    let sent = blocking(move || {
        service.send(
            &session,
            &SendRequest {
                to_handle: body.to_handle,
                amount_yen: body.amount_yen,
                note: body.note,
                idempotency_key: key,
            },
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(sent.into())))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationBody {
    link_id: uuid::Uuid,
    amount_yen: i64,
}

/// Starts a confirmation of a charge: the answer says, in words, what the authenticator code
/// will approve (this amount from this bank account, nothing else).
#[utoipa::path(post, path = "/api/v1/charges/confirmations", request_body = ConfirmationBody,
    responses((status = 201, description = "The confirmation to pass"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn start_confirmation(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ConfirmationBody>,
) -> Result<(StatusCode, Json<Confirmation>), Problem> {
    let service = money(&state);
    let started =
        blocking(move || service.start_confirmation(&session, body.link_id, body.amount_yen))
            .await?;
    Ok((StatusCode::CREATED, Json(started)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationCode {
    /// The authenticator app's current code.
    code: String,
}

/// Passes the authenticator code for one confirmation.
#[utoipa::path(post, path = "/api/v1/charges/confirmations/{confirmation_id}/totp", request_body = ConfirmationCode,
    params(("confirmation_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The confirmation, now confirmed"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
pub async fn confirm_with_totp(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(confirmation_id): Path<String>,
    ApiJson(body): ApiJson<ConfirmationCode>,
) -> Result<Json<Confirmation>, Problem> {
    let id = uuid::Uuid::parse_str(&confirmation_id)
        .map_err(|_| Problem::from(MoneyError::ConfirmationInvalid))?;
    let service = money(&state);
    Ok(Json(
        blocking(move || service.confirm_with_totp(&session, id, &body.code)).await?,
    ))
}
