//! `/api/v1` passkey routes: registering a passkey (WebAuthn) as a second factor, passing it on
//! the current session, listing and removing passkeys. The ceremonies are two calls each: a
//! start that returns the options for `navigator.credentials.create()`/`get()`, and a finish
//! that takes the browser's `PublicKeyCredential` as JSON. Every route needs a bearer session.
//!
//! The relying party (`KINKO_RP_ID`, `KINKO_RP_ORIGIN`) is read once at start and handed to
//! the router in `AppState`. Without one these routes answer 503 `PASSKEY_NOT_CONFIGURED`
//! (`kinko serve` refuses to start on a refused configuration instead).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use kinko_identity::passkey::{
    CreationChallengeResponse, PasskeyError, PasskeyId, PasskeyService, PasskeySummary,
    PublicKeyCredential, RegisterPublicKeyCredential, RelyingParty, RequestChallengeResponse,
};
use kinko_identity::session::NewSession;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use kinko_money::MoneyError;
use kinko_money::charge::MoneyService;
use kinko_money::confirmations::Confirmation;

use crate::AppState;
use crate::api::ApiJson;
use crate::api::identity::Authenticated;
use crate::problem::Problem;

/// The relying party, or `None` when its configuration was refused.
#[derive(Clone)]
pub struct Configured(Option<Arc<RelyingParty>>);

pub fn router(relying_party: Option<Arc<RelyingParty>>) -> Router<AppState> {
    Router::new()
        .route("/me/passkeys", get(list_passkeys))
        .route("/me/passkeys/register/start", post(start_registration))
        .route("/me/passkeys/register/finish", post(finish_registration))
        .route("/me/passkeys/{passkey_id}", delete(remove_passkey))
        .route(
            "/sessions/current/passkey/start",
            post(start_authentication),
        )
        .route(
            "/sessions/current/passkey/finish",
            post(finish_authentication),
        )
        .route(
            "/charges/confirmations/{confirmation_id}/passkey/start",
            post(start_confirmation),
        )
        .route(
            "/charges/confirmations/{confirmation_id}/passkey/finish",
            post(finish_confirmation),
        )
        .layer(Extension(Configured(relying_party)))
}

impl From<PasskeyError> for Problem {
    fn from(error: PasskeyError) -> Self {
        Problem::from_error(&error, "passkey")
    }
}

/// The flows over the identity database, with the relying party configured at start.
fn passkeys(state: &AppState, configured: &Configured) -> Result<PasskeyService, Problem> {
    let relying_party = configured.0.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "PASSKEY_NOT_CONFIGURED",
            "Passkeys are not available on this server.",
        )
    })?;
    Ok(PasskeyService::new(
        Arc::clone(state.identity.database()),
        relying_party,
        Arc::clone(state.identity.clock()),
        state.identity.config().outgoing_freeze_ms,
    ))
}

/// Runs a blocking passkey call (SQL, signature checks) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PasskeyError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "passkey task failed");
            Err(Problem::internal())
        }
    }
}

fn not_found() -> Problem {
    PasskeyError::NotFound.into()
}

/// `PublicKeyCredentialCreationOptions` under `publicKey`, binary fields in base64url: pass
/// them to `navigator.credentials.create()` after decoding.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct CreationOptions(CreationChallengeResponse);

/// `PublicKeyCredentialRequestOptions` under `publicKey`, for `navigator.credentials.get()`.
#[derive(Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct RequestOptions(RequestChallengeResponse);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRegistrationRequest {
    /// The `PublicKeyCredential` that `navigator.credentials.create()` returned, as JSON with
    /// binary fields in base64url (`id`, `rawId`, `response.attestationObject`,
    /// `response.clientDataJSON`, `type`).
    #[schema(value_type = Object)]
    credential: RegisterPublicKeyCredential,
    /// A name to tell this passkey from others ("iPhone", "YubiKey"…).
    label: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishAuthenticationRequest {
    /// The `PublicKeyCredential` that `navigator.credentials.get()` returned, as JSON with
    /// binary fields in base64url.
    #[schema(value_type = Object)]
    credential: PublicKeyCredential,
}

#[derive(Serialize, ToSchema)]
pub struct PasskeyView {
    passkey_id: String,
    label: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
}

impl From<PasskeySummary> for PasskeyView {
    fn from(summary: PasskeySummary) -> Self {
        Self {
            passkey_id: summary.passkey_id.to_string(),
            label: summary.label,
            created_at_ms: summary.created_at,
            last_used_at_ms: summary.last_used_at,
        }
    }
}

/// The session after a passed second factor: the same fields as the TOTP route's answer.
#[derive(Serialize, ToSchema)]
pub struct PasskeyPassed {
    /// The session token changed (privilege change): use this one from now on.
    token: String,
    session_id: String,
    /// Always false here: the second factor was just passed.
    second_factor_required: bool,
}

impl From<NewSession> for PasskeyPassed {
    fn from(session: NewSession) -> Self {
        Self {
            token: session.token.expose_secret().to_owned(),
            session_id: session.session_id.to_string(),
            second_factor_required: false,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/me/passkeys/register/start",
    responses((status = 200, body = CreationOptions), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "A second factor exists and was not passed in the last 5 minutes"),
        (status = 409, body = Problem)))]
pub async fn start_registration(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
) -> Result<Json<CreationOptions>, Problem> {
    let service = passkeys(&state, &configured)?;
    let options = blocking(move || service.start_registration(&session)).await?;
    Ok(Json(CreationOptions(options)))
}

#[utoipa::path(post, path = "/api/v1/me/passkeys/register/finish", request_body = FinishRegistrationRequest,
    responses((status = 201, body = PasskeyView), (status = 400, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem)))]
pub async fn finish_registration(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<FinishRegistrationRequest>,
) -> Result<(StatusCode, Json<PasskeyView>), Problem> {
    let service = passkeys(&state, &configured)?;
    let summary = blocking(move || {
        service.finish_registration(&session, &body.credential, body.label.as_deref())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(summary.into())))
}

#[utoipa::path(get, path = "/api/v1/me/passkeys",
    responses((status = 200, body = Vec<PasskeyView>), (status = 401, body = Problem)))]
pub async fn list_passkeys(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
) -> Result<Json<Vec<PasskeyView>>, Problem> {
    let service = passkeys(&state, &configured)?;
    let summaries = blocking(move || service.list(&session)).await?;
    Ok(Json(summaries.into_iter().map(PasskeyView::from).collect()))
}

#[utoipa::path(delete, path = "/api/v1/me/passkeys/{passkey_id}", params(("passkey_id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove_passkey(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
    Path(passkey_id): Path<String>,
) -> Result<StatusCode, Problem> {
    let target: PasskeyId = passkey_id.parse().map_err(|_| not_found())?;
    let service = passkeys(&state, &configured)?;
    blocking(move || service.remove(&session, target)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/sessions/current/passkey/start",
    responses((status = 200, body = RequestOptions), (status = 401, body = Problem),
        (status = 403, body = Problem, description = "No passkey is registered")))]
pub async fn start_authentication(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
) -> Result<Json<RequestOptions>, Problem> {
    let service = passkeys(&state, &configured)?;
    let options = blocking(move || service.start_authentication(&session)).await?;
    Ok(Json(RequestOptions(options)))
}

#[utoipa::path(post, path = "/api/v1/sessions/current/passkey/finish", request_body = FinishAuthenticationRequest,
    responses((status = 200, body = PasskeyPassed), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 429, body = Problem)))]
pub async fn finish_authentication(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<FinishAuthenticationRequest>,
) -> Result<Json<PasskeyPassed>, Problem> {
    let service = passkeys(&state, &configured)?;
    let rotated =
        blocking(move || service.finish_authentication(&session, &body.credential)).await?;
    Ok(Json(rotated.into()))
}

fn confirmation_id(text: &str) -> Result<uuid::Uuid, Problem> {
    uuid::Uuid::parse_str(text).map_err(|_| Problem::from(MoneyError::ConfirmationInvalid))
}

/// Starts a passkey approval of one charge confirmation (dynamic linking): the challenge is
/// kept with the confirmation's id, amount and payee, and only an assertion answering it
/// passes that confirmation.
#[utoipa::path(post, path = "/api/v1/charges/confirmations/{confirmation_id}/passkey/start",
    params(("confirmation_id" = uuid::Uuid, Path)),
    responses((status = 200, body = RequestOptions), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem, description = "No passkey is registered")))]
pub async fn start_confirmation(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
    Path(confirmation_id_text): Path<String>,
) -> Result<Json<RequestOptions>, Problem> {
    let id = confirmation_id(&confirmation_id_text)?;
    let passkeys = passkeys(&state, &configured)?;
    let money = crate::api::money::money(&state);
    let confirmation = {
        let session = session.clone();
        crate::api::money::blocking(move || money.open_confirmation(&session, id)).await?
    };
    let approved = MoneyService::approval_text(&confirmation);
    let options = blocking(move || passkeys.start_approval(&session, &approved)).await?;
    Ok(Json(RequestOptions(options)))
}

/// Passes a charge confirmation with the passkey assertion made for it.
#[utoipa::path(post, path = "/api/v1/charges/confirmations/{confirmation_id}/passkey/finish",
    request_body = FinishAuthenticationRequest, params(("confirmation_id" = uuid::Uuid, Path)),
    responses((status = 200, description = "The confirmation, now confirmed"), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
pub async fn finish_confirmation(
    State(state): State<AppState>,
    Extension(configured): Extension<Configured>,
    Authenticated(session): Authenticated,
    Path(confirmation_id_text): Path<String>,
    ApiJson(body): ApiJson<FinishAuthenticationRequest>,
) -> Result<Json<Confirmation>, Problem> {
    let id = confirmation_id(&confirmation_id_text)?;
    let passkeys = passkeys(&state, &configured)?;
    let money = crate::api::money::money(&state);
    let confirmed = crate::api::money::blocking(move || {
        money.confirm_with(&session, id, |approved| {
            passkeys
                .finish_approval(&session, approved, &body.credential)
                .map_err(|error| match error {
                    PasskeyError::RateLimited { retry_after_ms } => {
                        MoneyError::ConfirmationRateLimited { retry_after_ms }
                    }
                    PasskeyError::Store(store) => MoneyError::Store(store),
                    PasskeyError::Internal(_) | PasskeyError::Notify(_) => {
                        MoneyError::Internal(error.to_string())
                    }
                    _ => MoneyError::ConfirmationCodeInvalid,
                })
        })
    })
    .await?;
    Ok(Json(confirmed))
}
