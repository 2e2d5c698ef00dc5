//! Operator credits on the API: an analyst or admin credits a wallet from Kinko's
//! compensation account; beyond the operator's solo threshold the credit waits for a second
//! operator (an admin who is not the proposer) to approve or reject it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_money::MoneyError;
use kinko_money::credits::{Credit, CreditDecision};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::api::ApiJson;
use crate::api::money::{blocking, idempotency_key, money, query_problem};
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/operator/users/{user_id}/credits", post(credit))
        .route("/operator/credits", get(list))
        .route("/operator/credits/{credit_id}/{decision}", post(decide))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreditBody {
    amount_yen: i64,
    /// Why (kept in the audit entry): the case made good, the goodwill gesture.
    reason: String,
}

/// Credits a wallet from Kinko's compensation account (analysts and admins;
/// `Idempotency-Key` required). 201 when the money moved; 202 when the credit waits for a
/// second operator's approval (the operator's credits of the last day exceed the solo
/// threshold).
#[utoipa::path(post, path = "/api/v1/operator/users/{user_id}/credits", request_body = CreditBody,
    params(("user_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "The credit, posted"),
        (status = 202, description = "The credit, awaiting a second operator's approval"),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn credit(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreditBody>,
) -> Result<(StatusCode, Json<Credit>), Problem> {
    let idempotency = idempotency_key(&headers)?;
    let user_id = uuid::Uuid::parse_str(&user_id)
        .map_err(|_| Problem::from(MoneyError::RecipientNotFound))?;
    let service = money(&state);
    let credit = blocking(move || {
        service.credit_wallet(&token, user_id, body.amount_yen, &body.reason, &idempotency)
    })
    .await?;
    let status = if credit.awaits_approval() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(credit)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (kept in the audit entry).
    reason: String,
}

/// A second operator (admin, not the proposer) approves — the money moves — or rejects a
/// credit awaiting approval. The same decision again answers the credit as it is.
#[utoipa::path(post, path = "/api/v1/operator/credits/{credit_id}/{decision}", request_body = DecisionBody,
    params(("credit_id" = uuid::Uuid, Path), ("decision" = String, Path, description = "approve or reject")),
    responses((status = 200, description = "The credit after the decision"),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn decide(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path((credit_id, decision)): Path<(String, String)>,
    ApiJson(body): ApiJson<DecisionBody>,
) -> Result<Json<Credit>, Problem> {
    let decision = match decision.as_str() {
        "approve" => CreditDecision::Approve,
        "reject" => CreditDecision::Reject,
        _ => return Err(MoneyError::CreditNotFound.into()),
    };
    let credit_id =
        uuid::Uuid::parse_str(&credit_id).map_err(|_| Problem::from(MoneyError::CreditNotFound))?;
    let service = money(&state);
    let credit =
        blocking(move || service.decide_credit(&token, credit_id, decision, &body.reason)).await?;
    Ok(Json(credit))
}

#[derive(Deserialize, IntoParams)]
pub struct CreditFilter {
    /// awaiting_approval (default), pending, posted or rejected.
    status: Option<String>,
}

/// Credits in one state, newest first (analysts and admins).
#[utoipa::path(get, path = "/api/v1/operator/credits", params(CreditFilter),
    responses((status = 200, description = "Up to 200 credits"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    filter: Result<Query<CreditFilter>, QueryRejection>,
) -> Result<Json<Vec<Credit>>, Problem> {
    let Query(filter) = filter.map_err(|rejection| query_problem(&rejection))?;
    let status = filter
        .status
        .unwrap_or_else(|| "awaiting_approval".to_owned());
    let service = money(&state);
    let credits = blocking(move || service.list_credits(&token, &status)).await?;
    Ok(Json(credits))
}
