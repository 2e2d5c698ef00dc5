//! Partner banks on the API: the public list (which banks can be linked and charged from right
//! now), and the operator route that flips a bank's switches — the one-click stop the banks
//! lacked in 2020. A bank-partner operator reaches only its own bank; every change needs a
//! reason and is audited with the settings before and after.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use kinko_banking::registry::{self, BankCode, BankPolicy, BankingError, PolicyChange};
use kinko_identity::operator;
use kinko_store::sql::Tx;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::api::operator::OperatorToken;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/banks", get(list_banks))
        .route("/operator/banks/{bank_code}/policy", post(change_policy))
}

impl From<BankingError> for Problem {
    fn from(error: BankingError) -> Self {
        Problem::from_error(&error, "banking")
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BankingError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "banking task failed");
            Err(Problem::internal())
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct BankView {
    pub(crate) bank_code: String,
    pub(crate) name_ja: String,
    name_kana: String,
    pub(crate) linking_enabled: bool,
    pub(crate) charging_enabled: bool,
}

#[utoipa::path(get, path = "/api/v1/banks", responses((status = 200, body = Vec<BankView>)))]
pub async fn list_banks(State(state): State<AppState>) -> Result<Json<Vec<BankView>>, Problem> {
    Ok(Json(bank_views(&state).await?))
}

/// The partner banks with their switches, for the API and the pages alike.
pub(crate) async fn bank_views(state: &AppState) -> Result<Vec<BankView>, Problem> {
    let database = std::sync::Arc::clone(state.identity.database());
    let banks = blocking(move || {
        database.transaction(|tx: &mut dyn Tx| {
            registry::list_banks(tx)?
                .into_iter()
                .map(|bank| {
                    let policy = registry::policy(tx, &bank.code)?;
                    Ok(BankView {
                        bank_code: bank.code.to_string(),
                        name_ja: bank.name_ja,
                        name_kana: bank.name_kana,
                        linking_enabled: policy.linking_enabled,
                        charging_enabled: policy.charging_enabled,
                    })
                })
                .collect::<Result<Vec<_>, BankingError>>()
        })
    })
    .await?;
    Ok(banks)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyChangeRequest {
    /// Why (10–500 characters): kept in the audit entry.
    reason: String,
    linking_enabled: Option<bool>,
    charging_enabled: Option<bool>,
    legacy_enabled: Option<bool>,
    charge_max_yen: Option<i64>,
    daily_max_yen: Option<i64>,
    monthly_max_yen: Option<i64>,
    new_link_daily_max_yen: Option<i64>,
    new_link_period_days: Option<i64>,
    new_link_wait_hours: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    bank_code: String,
    linking_enabled: bool,
    pub(crate) charging_enabled: bool,
    legacy_enabled: bool,
    charge_max_yen: i64,
    daily_max_yen: i64,
    monthly_max_yen: i64,
    new_link_daily_max_yen: i64,
    new_link_period_days: i64,
    new_link_wait_hours: i64,
    version: i64,
}

impl From<BankPolicy> for PolicyView {
    fn from(policy: BankPolicy) -> Self {
        Self {
            bank_code: policy.bank_code.to_string(),
            linking_enabled: policy.linking_enabled,
            charging_enabled: policy.charging_enabled,
            legacy_enabled: policy.legacy_enabled,
            charge_max_yen: policy.charge_max_yen,
            daily_max_yen: policy.daily_max_yen,
            monthly_max_yen: policy.monthly_max_yen,
            new_link_daily_max_yen: policy.new_link_daily_max_yen,
            new_link_period_days: policy.new_link_period_days,
            new_link_wait_hours: policy.new_link_wait_hours,
            version: policy.version,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/operator/banks/{bank_code}/policy", request_body = PolicyChangeRequest,
    params(("bank_code" = String, Path)),
    responses((status = 200, body = PolicyView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn change_policy(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(bank_code): Path<String>,
    ApiJson(body): ApiJson<PolicyChangeRequest>,
) -> Result<Json<PolicyView>, Problem> {
    let change = PolicyChange {
        linking_enabled: body.linking_enabled,
        charging_enabled: body.charging_enabled,
        legacy_enabled: body.legacy_enabled,
        charge_max_yen: body.charge_max_yen,
        daily_max_yen: body.daily_max_yen,
        monthly_max_yen: body.monthly_max_yen,
        new_link_daily_max_yen: body.new_link_daily_max_yen,
        new_link_period_days: body.new_link_period_days,
        new_link_wait_hours: body.new_link_wait_hours,
    };
    let policy = change_policy_as(&state, token, bank_code, change, body.reason).await?;
    Ok(Json(policy.into()))
}

/// One bank's policy change by the operator holding `token`, for the API and the console alike:
/// the token is checked in the same transaction as the change it authorises.
pub(crate) async fn change_policy_as(
    state: &AppState,
    token: secrecy::SecretString,
    bank_code: String,
    change: PolicyChange,
    reason: String,
) -> Result<BankPolicy, Problem> {
    let database = std::sync::Arc::clone(state.identity.database());
    let clock = std::sync::Arc::clone(state.identity.clock());
    blocking(move || {
        let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        database.transaction(|tx: &mut dyn Tx| {
            let by = operator::authenticate(tx, now_ms, &token)?;
            let code = BankCode::parse(&bank_code)?;
            registry::change_policy(tx, now_ms, &by, &code, &change, &reason)
        })
    })
    .await
}
