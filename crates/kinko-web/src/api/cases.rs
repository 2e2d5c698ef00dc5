//! Cases on the API (`/api/v1/operator/cases…`): analysts and admins list and work every case;
//! a bank-partner operator lists and reads only its own bank's cases, and another bank's case
//! answers exactly like a missing one (404 `CASE_NOT_FOUND`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_cases::service::{CaseDetail, CaseFilter, CasePage, FilterText, Transition};
use kinko_cases::{CaseError, CaseLabel, CaseService, CaseState, LinkReason};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::api::ApiJson;
use crate::api::money::query_problem;
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/operator/cases", get(list))
        .route("/operator/cases/{case_id}", get(case))
        .route("/operator/cases/{case_id}/assign", post(assign))
        .route("/operator/cases/{case_id}/notes", post(note))
        .route("/operator/cases/{case_id}/links", post(link))
        .route("/operator/cases/{case_id}/state", post(transition))
        .route("/operator/cases/{case_id}/snoozes", post(snooze))
}

impl From<CaseError> for Problem {
    fn from(error: CaseError) -> Self {
        Problem::from_error(&error, "cases")
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CaseError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "case task failed");
            Err(Problem::internal())
        }
    }
}

fn cases(state: &AppState) -> Arc<CaseService> {
    Arc::clone(&state.cases)
}

/// A case id from the path; anything else is a case that does not exist.
fn case_id(text: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(text).map_err(|_| CaseError::NotFound.into())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    /// open, investigating, resolved, refunded or rejected.
    state: Option<String>,
    /// risk_review, bank_fraud_report, dispute or reconciliation.
    kind: Option<String>,
    /// `me`, `none`, or an operator id.
    assigned: Option<String>,
    /// Only open or investigating cases past their due time.
    overdue: Option<bool>,
    /// The previous page's `next_before`.
    before: Option<String>,
    /// 1 to 100 (default 50).
    limit: Option<i64>,
}

/// The inbox, newest first, one page at a time (analysts and admins: every case; a bank
/// partner: its bank's cases only).
#[utoipa::path(get, path = "/api/v1/operator/cases", params(CaseQuery),
    responses((status = 200, description = "A page of cases and `next_before`"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    query: Result<Query<CaseQuery>, QueryRejection>,
) -> Result<Json<CasePage>, Problem> {
    let Query(query) = query.map_err(|rejection| query_problem(&rejection))?;
    let filter = CaseFilter::parse(&FilterText {
        state: query.state.as_deref(),
        kind: query.kind.as_deref(),
        assigned: query.assigned.as_deref(),
        overdue: query.overdue,
        before: query.before.as_deref(),
        limit: query.limit,
    })?;
    let service = cases(&state);
    Ok(Json(blocking(move || service.list(&token, &filter)).await?))
}

/// One case with its history (oldest first), related cases and snoozed rules.
#[utoipa::path(get, path = "/api/v1/operator/cases/{case_id}",
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The case with its events, links and snoozes"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn case(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(id): Path<String>,
) -> Result<Json<CaseDetail>, Problem> {
    let id = case_id(&id)?;
    let service = cases(&state);
    Ok(Json(blocking(move || service.get(&token, id)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// The analyst or admin to assign; the caller when absent.
    assignee: Option<uuid::Uuid>,
}

/// Assigns a case (to oneself, or another analyst), within the cap of open cases per analyst
/// (`KINKO_CASES_PER_ANALYST_MAX`; beyond it 409 `CASE_ASSIGNEE_AT_CAPACITY`).
#[utoipa::path(post, path = "/api/v1/operator/cases/{case_id}/assign", request_body = AssignBody,
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The case after the step"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn assign(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AssignBody>,
) -> Result<Json<CaseDetail>, Problem> {
    let id = case_id(&id)?;
    let service = cases(&state);
    Ok(Json(
        blocking(move || service.assign(&token, id, body.assignee)).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    /// 1 to 1,000 characters.
    text: String,
}

/// Adds a note to a case's history.
#[utoipa::path(post, path = "/api/v1/operator/cases/{case_id}/notes", request_body = NoteBody,
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The case after the step"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn note(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NoteBody>,
) -> Result<Json<CaseDetail>, Problem> {
    let id = case_id(&id)?;
    let service = cases(&state);
    Ok(Json(
        blocking(move || service.note(&token, id, &body.text)).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    other_case_id: uuid::Uuid,
    /// same_device, same_network, same_bank_account, same_identity or money_chain.
    reason: String,
}

/// Links two related cases; both list the link.
#[utoipa::path(post, path = "/api/v1/operator/cases/{case_id}/links", request_body = LinkBody,
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The case after the step"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)))]
pub async fn link(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LinkBody>,
) -> Result<Json<CaseDetail>, Problem> {
    let id = case_id(&id)?;
    let reason = LinkReason::parse(&body.reason).ok_or(CaseError::FieldInvalid("reason"))?;
    let service = cases(&state);
    Ok(Json(
        blocking(move || service.link(&token, id, body.other_case_id, reason)).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    /// investigating (from open), or resolved, refunded or rejected (from investigating).
    state: String,
    /// fraud or not_fraud: required when closing, refused otherwise.
    label: Option<String>,
    /// Why (10–500 characters).
    reason: String,
}

/// Moves a case along open → investigating → resolved | refunded | rejected (409
/// `CASE_TRANSITION_INVALID` otherwise); closing needs a label.
#[utoipa::path(post, path = "/api/v1/operator/cases/{case_id}/state", request_body = StateBody,
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The case after the step"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn transition(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StateBody>,
) -> Result<Json<CaseDetail>, Problem> {
    let id = case_id(&id)?;
    let to = CaseState::parse(&body.state).ok_or(CaseError::FieldInvalid("state"))?;
    let label = body
        .label
        .as_deref()
        .map(|label| CaseLabel::parse(label).ok_or(CaseError::FieldInvalid("label")))
        .transpose()?;
    let service = cases(&state);
    Ok(Json(
        blocking(move || {
            service.transition(
                &token,
                id,
                Transition {
                    to,
                    label,
                    reason: &body.reason,
                },
            )
        })
        .await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    /// The rule's id in the rule file.
    rule_id: String,
    /// 1 to 720.
    hours: i64,
    /// Why (10–500 characters).
    reason: String,
}

/// Snoozes a risk rule for the case's customer: while it lasts the rule is recorded for them
/// and does not act.
#[utoipa::path(post, path = "/api/v1/operator/cases/{case_id}/snoozes", request_body = SnoozeBody,
    params(("case_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The case after the step"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn snooze(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SnoozeBody>,
) -> Result<Json<CaseDetail>, Problem> {
    let id = case_id(&id)?;
    let service = cases(&state);
    Ok(Json(
        blocking(move || service.snooze_rule(&token, id, &body.rule_id, body.hours, &body.reason))
            .await?,
    ))
}
