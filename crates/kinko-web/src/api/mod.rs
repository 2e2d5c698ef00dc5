//! The JSON API under `/api/v1`: its router, its OpenAPI 3.1 document (generated from the
//! handlers' annotations, served at `/api/v1/openapi.json`), and the request-body extractor
//! that turns malformed JSON into problem+json instead of axum's plain-text rejection.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::AppState;
use crate::problem::Problem;

pub mod banks;
pub mod cases;
pub mod credits;
pub mod disputes;
pub mod identity;
pub mod links;
pub mod money;
pub mod operator;
pub mod passkey;
pub mod payments;
pub mod reconciliation;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kinko API",
        description = "E-money wallet platform. Errors are RFC 9457 problem+json with a stable `code`."
    ),
    paths(
        crate::healthz,
        identity::sign_up,
        identity::verify_contact,
        identity::log_in,
        identity::second_factor,
        identity::me,
        identity::begin_totp,
        identity::confirm_totp,
        identity::change_password,
        identity::start_email_change,
        identity::confirm_email_change,
        identity::start_phone_change,
        identity::confirm_phone_change,
        identity::submit_kyc,
        identity::money_gate,
        identity::list_sessions,
        identity::revoke_session,
        identity::list_devices,
        identity::revoke_device,
        identity::log_out,
        identity::start_recovery,
        identity::complete_recovery,
        identity::sandbox_outbox,
        banks::list_banks,
        banks::change_policy,
        links::start_link,
        links::complete_link,
        links::list_links,
        links::unlink,
        links::legacy_link,
        links::webhook,
        links::bank_links,
        links::bank_alerts,
        links::lift_legacy_block,
        money::charge,
        money::charge_status,
        money::start_confirmation,
        money::confirm_with_totp,
        money::withdraw,
        money::withdrawal_status,
        money::set_handle,
        money::send,
        money::balance,
        money::history,
        payments::resolve,
        payments::pay,
        payments::payment,
        payments::issue_pay_code,
        payments::merchant_me,
        payments::static_code,
        payments::payment_request,
        payments::redeem,
        payments::merchant_payments,
        payments::refund,
        payments::onboard,
        payments::issue_key,
        credits::credit,
        credits::decide,
        credits::list,
        cases::list,
        cases::case,
        cases::assign,
        cases::note,
        cases::link,
        cases::transition,
        cases::snooze,
        disputes::dispute,
        disputes::case_holds,
        disputes::release_hold,
        disputes::propose_refund,
        disputes::decide_refund,
        passkey::start_registration,
        passkey::finish_registration,
        passkey::list_passkeys,
        passkey::remove_passkey,
        passkey::start_authentication,
        passkey::finish_authentication,
        passkey::start_confirmation,
        passkey::finish_confirmation,
        operator::sign_in,
        operator::sign_out,
        operator::read_user,
        operator::read_audit,
        operator::create_operator,
        reconciliation::last_run,
    ),
    components(schemas(crate::Health, Problem))
)]
pub struct ApiDoc;

pub fn router(
    sandbox: bool,
    relying_party: Option<std::sync::Arc<kinko_identity::passkey::RelyingParty>>,
) -> Router<AppState> {
    let router = Router::new()
        .route("/openapi.json", get(openapi))
        .merge(identity::router())
        .merge(banks::router())
        .merge(links::router())
        .merge(money::router())
        .merge(payments::router())
        .merge(credits::router())
        .merge(cases::router())
        .merge(disputes::router())
        .merge(passkey::router(relying_party))
        .merge(operator::router())
        .merge(reconciliation::router());
    if sandbox {
        router.merge(identity::sandbox_router())
    } else {
        router
    }
}

async fn openapi() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(json) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %error, "rendering the OpenAPI document failed");
            Problem::internal().into_response()
        }
    }
}

/// The token of `Authorization: Bearer <token>`, if the request has one.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// A JSON body that must parse into `T`; anything else is a 400/415/413 problem+json with a
/// stable code, and the handler never runs.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                // Syntax and shape errors alike are 400, as the service's own validation is.
                let status = match rejection.status() {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE => {
                        rejection.status()
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                let (code, title) = match status {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                        "REQUEST_NOT_JSON",
                        "The request body must be JSON (Content-Type: application/json).",
                    ),
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        ("REQUEST_TOO_LARGE", "The request body is too large.")
                    }
                    _ => (
                        "REQUEST_INVALID",
                        "The request body is not valid for this endpoint.",
                    ),
                };
                let mut problem = Problem::new(status, code, title);
                // serde's message names the field and what was wrong; it holds no secrets
                // because it quotes the schema, not the value.
                problem.detail = Some(rejection.body_text());
                Err(problem.into_response())
            }
        }
    }
}
