//! The three-way reconciliation on the operator API: the last run (when, what it compared,
//! mismatches per kind and in detail) for operators who review cases (analysts, admins).
//! Runs come from `kinko serve`'s schedule and from `kinko reconcile`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kinko_money::bank_reconcile::LastRun;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::money::{blocking, money};
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new().route("/operator/reconciliation", get(last_run))
}

/// The answer: the last run, or `null` before the first.
#[derive(Serialize, ToSchema)]
pub struct Reconciliation {
    /// `{ran_at_ms, days, with_bank, rows_checked, bank_entries_checked, in_doubt,
    /// mismatch_count, counts: {bank_only, kinko_only, amount_differs, status_differs,
    /// ledger_differs}, mismatches: [{kind, key, bank_code, user_id, amount_yen, detail}]}`
    #[schema(value_type = Option<Object>)]
    last_run: Option<LastRun>,
}

/// The last three-way reconciliation of the bank's statements, Kinko's rows and the ledger
/// (analysts and admins).
#[utoipa::path(get, path = "/api/v1/operator/reconciliation",
    responses((status = 200, description = "The last run, or null", body = Reconciliation),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn last_run(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
) -> Result<Json<Reconciliation>, Problem> {
    let service = money(&state);
    let last_run = blocking(move || service.last_reconciliation(&token)).await?;
    Ok(Json(Reconciliation { last_run }))
}
