//! Disputes on the API: a wallet owner's "I didn't do this" on a movement of their history
//! (freezes the wallet's outgoing money, opens a case, follows the money and holds it), and
//! the operators' side — a case's holds, releasing one, and the refund to the victim's bank
//! account (four eyes above the threshold).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_money::MoneyError;
use kinko_money::credits::CreditDecision;
use kinko_money::disputes::Dispute;
use kinko_money::holds::Hold;
use kinko_money::victim_refunds::VictimRefund;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::api::identity::Authenticated;
use crate::api::money::{blocking, idempotency_key, money};
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/history/{entry_id}/dispute", post(dispute))
        .route("/operator/cases/{case_id}/holds", get(case_holds))
        .route("/operator/holds/{hold_id}/release", post(release_hold))
        .route("/operator/cases/{case_id}/refunds", post(propose_refund))
        .route(
            "/operator/victim-refunds/{refund_id}/{decision}",
            post(decide_refund),
        )
}

/// "I didn't do this": disputes a movement of the wallet's history. Freezes the wallet's
/// outgoing money, opens a case, and holds what the wallets the money reached by P2P still
/// have of it. The same movement again answers the same dispute and case. Another wallet's
/// movement answers like a missing one (404).
#[utoipa::path(post, path = "/api/v1/history/{entry_id}/dispute",
    params(("entry_id" = uuid::Uuid, Path, description = "A movement's id from /wallet/history")),
    responses((status = 201, description = "The dispute and its case"),
        (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn dispute(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(entry_id): Path<String>,
) -> Result<(StatusCode, Json<Dispute>), Problem> {
    let entry_id = uuid::Uuid::parse_str(&entry_id)
        .map_err(|_| Problem::from(MoneyError::MovementNotFound))?;
    let service = money(&state);
    let dispute = blocking(move || service.dispute(&session, entry_id)).await?;
    Ok((StatusCode::CREATED, Json(dispute)))
}

/// A case's holds, oldest first (analysts and admins).
#[utoipa::path(get, path = "/api/v1/operator/cases/{case_id}/holds",
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The holds"), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn case_holds(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(case_id): Path<String>,
) -> Result<Json<Vec<Hold>>, Problem> {
    let case_id =
        uuid::Uuid::parse_str(&case_id).map_err(|_| Problem::from(MoneyError::CaseNotFound))?;
    let service = money(&state);
    let holds = blocking(move || service.case_holds(&token, case_id)).await?;
    Ok(Json(holds))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why (kept in the audit entry and the case's history).
    reason: String,
}

/// Releases a hold: the wallet has the money back (analysts and admins, with a reason).
#[utoipa::path(post, path = "/api/v1/operator/holds/{hold_id}/release", request_body = ReasonBody,
    params(("hold_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The hold, released"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn release_hold(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(hold_id): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<Hold>, Problem> {
    let hold_id =
        uuid::Uuid::parse_str(&hold_id).map_err(|_| Problem::from(MoneyError::HoldNotFound))?;
    let service = money(&state);
    let hold = blocking(move || service.release_hold(&token, hold_id, &body.reason)).await?;
    Ok(Json(hold))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    amount_yen: i64,
    /// Why (kept in the audit entry and the case's history).
    reason: String,
}

/// Refunds the case's victim: pays back the bank account the disputed charge debited, from
/// the case's recovered (held) funds first, then from the compensation account (analysts and
/// admins; `Idempotency-Key` required). 201 with the refund as far as it got (`posted`, or
/// `pending` while the bank's answer is awaited); 202 when it waits for a second operator.
#[utoipa::path(post, path = "/api/v1/operator/cases/{case_id}/refunds", request_body = RefundBody,
    params(("case_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "The refund"),
        (status = 202, description = "The refund, awaiting a second operator's approval"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn propose_refund(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(case_id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<(StatusCode, Json<VictimRefund>), Problem> {
    let idempotency = idempotency_key(&headers)?;
    let case_id =
        uuid::Uuid::parse_str(&case_id).map_err(|_| Problem::from(MoneyError::CaseNotFound))?;
    let service = money(&state);
    let refund = blocking(move || {
        service.propose_victim_refund(&token, case_id, body.amount_yen, &body.reason, &idempotency)
    })
    .await?;
    let status = if refund.awaits_approval() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(refund)))
}

/// A second operator (admin, not the proposer) approves — the money moves — or rejects a
/// refund awaiting approval. The same decision again answers the refund, finishing it if it
/// was cut short.
#[utoipa::path(post, path = "/api/v1/operator/victim-refunds/{refund_id}/{decision}",
    request_body = ReasonBody,
    params(("refund_id" = uuid::Uuid, Path), ("decision" = String, Path, description = "approve or reject")),
    responses((status = 200, description = "The refund after the decision"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn decide_refund(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path((refund_id, decision)): Path<(String, String)>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<VictimRefund>, Problem> {
    let decision = match decision.as_str() {
        "approve" => CreditDecision::Approve,
        "reject" => CreditDecision::Reject,
        _ => return Err(MoneyError::VictimRefundNotFound.into()),
    };
    let refund_id = uuid::Uuid::parse_str(&refund_id)
        .map_err(|_| Problem::from(MoneyError::VictimRefundNotFound))?;
    let service = money(&state);
    let refund =
        blocking(move || service.decide_victim_refund(&token, refund_id, decision, &body.reason))
            .await?;
    Ok(Json(refund))
}
