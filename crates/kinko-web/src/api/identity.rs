//! `/api/v1` identity routes: sign-up and contact verification, sessions, second factors,
//! recovery, KYC, devices, and the money gate. Each handler parses the body into typed values
//! (unknown fields are refused: a recovery request that names a destination is a 400), calls
//! one service function on a blocking thread (argon2 and SQL are blocking), and maps the result.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use kinko_identity::notify::Channel;
use kinko_identity::service::{IdentityError, IdentityService, Possession, Source};
use kinko_identity::session::{NewSession, SessionInfo};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::problem::Problem;

/// The header a client uses to present its device token.
pub const DEVICE_HEADER: &str = "x-kinko-device";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", post(sign_up))
        .route("/signup/{user_id}/verify", post(verify_contact))
        .route("/sessions", post(log_in).get(list_sessions))
        .route("/sessions/current", delete(log_out))
        .route("/sessions/current/second-factor", post(second_factor))
        .route("/sessions/{session_id}", delete(revoke_session))
        .route("/devices", get(list_devices))
        .route("/devices/{device_id}", delete(revoke_device))
        .route("/me", get(me))
        .route("/me/totp", post(begin_totp))
        .route("/me/totp/confirm", post(confirm_totp))
        .route("/me/password", post(change_password))
        .route("/me/email", post(start_email_change))
        .route("/me/email/confirm", post(confirm_email_change))
        .route("/me/phone", post(start_phone_change))
        .route("/me/phone/confirm", post(confirm_phone_change))
        .route("/me/kyc", post(submit_kyc))
        .route("/me/money-gate", get(money_gate))
        .route("/recovery", post(start_recovery))
        .route("/recovery/complete", post(complete_recovery))
}

impl From<IdentityError> for Problem {
    fn from(error: IdentityError) -> Self {
        let problem = Problem::from_error(&error, "identity");
        match error {
            IdentityError::RateLimited { retry_after_ms } => problem.retry_after_ms(retry_after_ms),
            _ => problem,
        }
    }
}

/// Runs a blocking service call off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, IdentityError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "identity task failed");
            Err(Problem::internal())
        }
    }
}

fn identity(state: &AppState) -> Arc<IdentityService> {
    Arc::clone(&state.identity)
}

pub(crate) fn source(headers: &HeaderMap, address: SocketAddr) -> Source {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    Source {
        ip: address.ip().to_string(),
        device_token: header_text(DEVICE_HEADER).filter(|token| token.len() <= 128),
        device_label: header_text(header::USER_AGENT.as_str())
            .unwrap_or_else(|| "unknown client".to_owned())
            .chars()
            .take(120)
            .collect(),
    }
}

/// The cookie that carries the session token for pages (HttpOnly: scripts never see it).
pub const SESSION_COOKIE: &str = "kinko_session";
/// The header a cookie-authenticated, state-changing request must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A request authenticated by `Authorization: Bearer <session token>` (API clients) or by the
/// session cookie (pages). A cookie rides along on every request the browser makes, so with a
/// cookie a state-changing request must also carry the session's CSRF token in `X-CSRF-Token`.
pub struct Authenticated(pub SessionInfo);

/// A request's session token (and, with a cookie on a state-changing request, the CSRF token
/// it must carry), read from the headers without touching the store. Handlers on the hot path
/// take this and call [`SessionCredentials::authenticate`] on the blocking thread they already
/// use, saving a thread hop per request; others take [`Authenticated`].
pub struct SessionCredentials {
    token: String,
    csrf: Option<String>,
}

impl SessionCredentials {
    fn from_parts(parts: &Parts) -> Result<Self, Problem> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned);
        if let Some(token) = bearer {
            return Ok(Self { token, csrf: None });
        }
        let token = session_cookie(&parts.headers).ok_or_else(|| {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "SESSION_INVALID",
                "Sign in first: send Authorization: Bearer <session token>.",
            )
        })?;
        let changes_state = !matches!(parts.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        let csrf = changes_state.then(|| {
            parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        });
        Ok(Self { token, csrf })
    }

    /// The session, checked against the store (blocking: call it off the async workers).
    pub fn authenticate(&self, identity: &IdentityService) -> Result<SessionInfo, Problem> {
        let session = identity.authenticate(&self.token)?;
        if let Some(presented) = &self.csrf {
            session
                .check_csrf(presented)
                .map_err(|error| Problem::from(IdentityError::from(error)))?;
        }
        Ok(session)
    }
}

impl FromRequestParts<AppState> for SessionCredentials {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Problem> {
        Self::from_parts(parts)
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let credentials = SessionCredentials::from_parts(parts)?;
        let service = identity(state);
        match tokio::task::spawn_blocking(move || credentials.authenticate(&service)).await {
            Ok(session) => Ok(Authenticated(session?)),
            Err(error) => {
                tracing::error!(error = %error, "identity task failed");
                Err(Problem::internal())
            }
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUpRequest {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// International form (+819012345678) or Japanese domestic form (090-1234-5678).
    phone: String,
}

#[derive(Serialize, ToSchema)]
pub struct SignUpAccepted {
    /// Quote it when verifying the codes sent to the e-mail address and the phone.
    user_id: uuid::Uuid,
}

#[utoipa::path(post, path = "/api/v1/signup", request_body = SignUpRequest,
    responses((status = 202, body = SignUpAccepted), (status = 400, body = Problem), (status = 429, body = Problem)))]
pub async fn sign_up(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignUpRequest>,
) -> Result<(StatusCode, Json<SignUpAccepted>), Problem> {
    let service = identity(&state);
    let source = source(&headers, address);
    let user_id =
        blocking(move || service.sign_up(&body.email, &body.password, &body.phone, &source))
            .await?;
    Ok((StatusCode::ACCEPTED, Json(SignUpAccepted { user_id })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ContactChannel {
    Email,
    Sms,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyContactRequest {
    channel: ContactChannel,
    code: String,
}

#[utoipa::path(post, path = "/api/v1/signup/{user_id}/verify", request_body = VerifyContactRequest,
    params(("user_id" = uuid::Uuid, Path)),
    responses((status = 200, body = ProfileView), (status = 400, body = Problem)))]
pub async fn verify_contact(
    State(state): State<AppState>,
    Path(user_id): Path<uuid::Uuid>,
    ApiJson(body): ApiJson<VerifyContactRequest>,
) -> Result<Json<kinko_identity::service::UserProfile>, Problem> {
    let service = identity(&state);
    let channel = match body.channel {
        ContactChannel::Email => Channel::Email,
        ContactChannel::Sms => Channel::Sms,
    };
    let profile = blocking(move || service.verify_contact(user_id, channel, &body.code)).await?;
    Ok(Json(profile))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogInRequest {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

#[derive(Serialize, ToSchema)]
pub struct SessionIssued {
    /// The bearer token: `Authorization: Bearer <token>`. Also set as the HttpOnly session
    /// cookie for pages.
    token: String,
    /// For cookie-authenticated pages: send it in `X-CSRF-Token` on every state change.
    csrf_token: String,
    session_id: String,
    /// Present when this sign-in registered a new device: send it back in `X-Kinko-Device`.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_token: Option<String>,
    /// True when a second factor must still be passed before money moves.
    second_factor_required: bool,
}

fn issued(session: NewSession, second_factor_required: bool) -> SessionIssued {
    SessionIssued {
        token: session.token.expose_secret().to_owned(),
        csrf_token: session.csrf_token.expose_secret().to_owned(),
        session_id: session.session_id.to_string(),
        device_token: session
            .device_token
            .map(|token| token.expose_secret().to_owned()),
        second_factor_required,
    }
}

#[utoipa::path(post, path = "/api/v1/sessions", request_body = LogInRequest,
    responses((status = 201, body = SessionIssued), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn log_in(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LogInRequest>,
) -> Result<(StatusCode, SessionIssued), Problem> {
    let service = identity(&state);
    let source = source(&headers, address);
    let signed_in = blocking(move || service.log_in(&body.email, &body.password, &source)).await?;
    Ok((
        StatusCode::CREATED,
        issued(signed_in.session, signed_in.second_factor_required),
    ))
}

#[utoipa::path(delete, path = "/api/v1/sessions/current", responses((status = 204), (status = 401, body = Problem)))]
pub async fn log_out(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<StatusCode, Problem> {
    let service = identity(&state);
    let target = session.session_id;
    blocking(move || service.revoke_session(&session, target)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorRequest {
    totp_code: Option<String>,
    recovery_code: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/sessions/current/second-factor", request_body = SecondFactorRequest,
    responses((status = 200, body = SessionIssued), (status = 401, body = Problem)))]
pub async fn second_factor(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<SecondFactorRequest>,
) -> Result<SessionIssued, Problem> {
    let service = identity(&state);
    let rotated = blocking(move || {
        service.pass_second_factor(
            &session,
            body.totp_code.as_deref(),
            body.recovery_code.as_deref(),
        )
    })
    .await?;
    Ok(issued(rotated, false))
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    session_id: String,
    device_id: String,
    device_label: String,
    created_at_ms: i64,
    last_seen_at_ms: i64,
    current: bool,
}

#[utoipa::path(get, path = "/api/v1/sessions", responses((status = 200, body = Vec<SessionView>), (status = 401, body = Problem)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<Vec<SessionView>>, Problem> {
    let service = identity(&state);
    let current = session.session_id;
    let sessions = blocking(move || service.list_sessions(&session)).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|summary| SessionView {
                current: summary.session_id == current,
                session_id: summary.session_id.to_string(),
                device_id: summary.device_id.to_string(),
                device_label: summary.device_label,
                created_at_ms: summary.created_at,
                last_seen_at_ms: summary.last_seen_at,
            })
            .collect(),
    ))
}

fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "There is no such object among yours.",
    )
}

#[utoipa::path(delete, path = "/api/v1/sessions/{session_id}", params(("session_id" = String, Path)), responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(session_id): Path<String>,
) -> Result<StatusCode, Problem> {
    let target = session_id.parse().map_err(|_| not_found())?;
    let service = identity(&state);
    blocking(move || service.revoke_session(&session, target)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    device_id: String,
    label: String,
    first_seen_at_ms: i64,
    trusted: bool,
}

#[utoipa::path(get, path = "/api/v1/devices", responses((status = 200, body = Vec<DeviceView>), (status = 401, body = Problem)))]
pub async fn list_devices(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<Vec<DeviceView>>, Problem> {
    let service = identity(&state);
    let devices = blocking(move || service.list_devices(&session)).await?;
    Ok(Json(
        devices
            .into_iter()
            .map(|device| DeviceView {
                device_id: device.device_id.to_string(),
                label: device.label,
                first_seen_at_ms: device.first_seen_at,
                trusted: device.trusted_at.is_some(),
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/devices/{device_id}", params(("device_id" = String, Path)), responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke_device(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    Path(device_id): Path<String>,
) -> Result<StatusCode, Problem> {
    let target = device_id.parse().map_err(|_| not_found())?;
    let service = identity(&state);
    blocking(move || service.revoke_device(&session, target)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/me", responses((status = 200, body = ProfileView), (status = 401, body = Problem)))]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<ProfileView>, Problem> {
    let service = identity(&state);
    Ok(Json(
        blocking(move || service.profile(&session)).await?.into(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Show as a QR code for the authenticator app.
    otpauth_url: String,
    /// The same secret, to type in by hand.
    secret_base32: String,
}

#[utoipa::path(post, path = "/api/v1/me/totp", responses((status = 200, body = TotpEnrolment), (status = 409, body = Problem)))]
pub async fn begin_totp(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<TotpEnrolment>, Problem> {
    let service = identity(&state);
    let enrolment = blocking(move || service.begin_totp(&session)).await?;
    Ok(Json(TotpEnrolment {
        otpauth_url: enrolment.otpauth_url.expose_secret().to_owned(),
        secret_base32: enrolment.secret_base32.expose_secret().to_owned(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmTotpRequest {
    code: String,
}

#[derive(Serialize, ToSchema)]
pub struct TotpConfirmed {
    /// Shown once: each works once in place of the authenticator app.
    recovery_codes: Vec<String>,
    /// The session token changed (privilege change): use this one from now on.
    session: SessionIssued,
}

#[utoipa::path(post, path = "/api/v1/me/totp/confirm", request_body = ConfirmTotpRequest, responses((status = 200, body = TotpConfirmed), (status = 401, body = Problem)))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ConfirmTotpRequest>,
) -> Result<Json<TotpConfirmed>, Problem> {
    let service = identity(&state);
    let (recovery_codes, rotated) =
        blocking(move || service.confirm_totp(&session, &body.code)).await?;
    Ok(Json(TotpConfirmed {
        recovery_codes,
        session: issued(rotated, false),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    current_password: SecretString,
    #[schema(value_type = String, format = Password)]
    new_password: SecretString,
}

#[utoipa::path(post, path = "/api/v1/me/password", request_body = ChangePasswordRequest, responses((status = 204), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 429, body = Problem)))]
pub async fn change_password(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, Problem> {
    let service = identity(&state);
    blocking(move || service.change_password(&session, &body.current_password, &body.new_password))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactChangeRequest {
    /// The new e-mail address or phone number; a code goes to it.
    new_value: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactConfirmRequest {
    code: String,
}

async fn start_change(
    state: AppState,
    session: SessionInfo,
    channel: Channel,
    new_value: String,
) -> Result<StatusCode, Problem> {
    let service = identity(&state);
    blocking(move || service.start_contact_change(&session, channel, &new_value)).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn confirm_change(
    state: AppState,
    session: SessionInfo,
    channel: Channel,
    code: String,
) -> Result<Json<ProfileView>, Problem> {
    let service = identity(&state);
    let profile =
        blocking(move || service.confirm_contact_change(&session, channel, &code)).await?;
    Ok(Json(profile.into()))
}

#[utoipa::path(post, path = "/api/v1/me/email", request_body = ContactChangeRequest, responses((status = 202), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn start_email_change(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ContactChangeRequest>,
) -> Result<StatusCode, Problem> {
    start_change(state, session, Channel::Email, body.new_value).await
}

#[utoipa::path(post, path = "/api/v1/me/email/confirm", request_body = ContactConfirmRequest, responses((status = 200, body = ProfileView), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub async fn confirm_email_change(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ContactConfirmRequest>,
) -> Result<Json<ProfileView>, Problem> {
    confirm_change(state, session, Channel::Email, body.code).await
}

#[utoipa::path(post, path = "/api/v1/me/phone", request_body = ContactChangeRequest, responses((status = 202), (status = 400, body = Problem), (status = 403, body = Problem)))]
pub async fn start_phone_change(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ContactChangeRequest>,
) -> Result<StatusCode, Problem> {
    start_change(state, session, Channel::Sms, body.new_value).await
}

#[utoipa::path(post, path = "/api/v1/me/phone/confirm", request_body = ContactConfirmRequest, responses((status = 200, body = ProfileView), (status = 400, body = Problem), (status = 409, body = Problem)))]
pub async fn confirm_phone_change(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<ContactConfirmRequest>,
) -> Result<Json<ProfileView>, Problem> {
    confirm_change(state, session, Channel::Sms, body.code).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycRequest {
    /// The eKYC provider's reference for what the user submitted.
    document_reference: String,
}

#[utoipa::path(post, path = "/api/v1/me/kyc", request_body = KycRequest, responses((status = 200, body = KycRecordView), (status = 503, body = Problem)))]
pub async fn submit_kyc(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
    ApiJson(body): ApiJson<KycRequest>,
) -> Result<Json<KycRecordView>, Problem> {
    let service = identity(&state);
    // The wallet's level after the outcome: a held change of identity leaves an L1 wallet L1.
    let (record, profile) = blocking(move || {
        let record = service.submit_kyc(&session, &body.document_reference)?;
        Ok::<_, kinko_identity::service::IdentityError>((record, service.profile(&session)?))
    })
    .await?;
    Ok(Json(KycRecordView {
        record_id: record.id,
        outcome: record.outcome.to_owned(),
        kyc_level: format!("{:?}", profile.kyc_level),
    }))
}

#[utoipa::path(get, path = "/api/v1/me/money-gate", responses((status = 200, body = MoneyGateView), (status = 401, body = Problem)))]
pub async fn money_gate(
    State(state): State<AppState>,
    Authenticated(session): Authenticated,
) -> Result<Json<MoneyGateView>, Problem> {
    let service = identity(&state);
    let gate = blocking(move || service.money_gate(&session, true)).await?;
    Ok(Json(MoneyGateView {
        allowed: gate.allowed,
        reasons: gate.reasons.into_iter().map(str::to_owned).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRecoveryRequest {
    /// The registered address. There is deliberately no field for where to send the codes.
    email: String,
}

#[utoipa::path(post, path = "/api/v1/recovery", request_body = StartRecoveryRequest, responses((status = 202), (status = 400, body = Problem), (status = 429, body = Problem)))]
pub async fn start_recovery(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartRecoveryRequest>,
) -> Result<StatusCode, Problem> {
    let service = identity(&state);
    let source = source(&headers, address);
    blocking(move || service.start_recovery(&body.email, &source)).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRecoveryRequest {
    email: String,
    email_code: String,
    /// Exactly one possession factor: the code sent to the registered phone, a TOTP code,
    /// or a recovery code.
    sms_code: Option<String>,
    totp_code: Option<String>,
    recovery_code: Option<String>,
    #[schema(value_type = String, format = Password)]
    new_password: SecretString,
}

#[utoipa::path(post, path = "/api/v1/recovery/complete", request_body = CompleteRecoveryRequest, responses((status = 204), (status = 400, body = Problem), (status = 429, body = Problem)))]
pub async fn complete_recovery(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CompleteRecoveryRequest>,
) -> Result<StatusCode, Problem> {
    let service = identity(&state);
    let source = source(&headers, address);
    blocking(move || {
        let possession = match (&body.sms_code, &body.totp_code, &body.recovery_code) {
            (Some(code), None, None) => Possession::SmsCode(code),
            (None, Some(code), None) => Possession::TotpCode(code),
            (None, None, Some(code)) => Possession::RecoveryCode(code),
            _ => return Err(IdentityError::RecoveryFailed),
        };
        service.complete_recovery(
            &body.email,
            &body.email_code,
            possession,
            &body.new_password,
            &source,
        )
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's profile as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = ProfileView)]
pub struct ProfileView {
    user_id: uuid::Uuid,
    email: String,
    phone: String,
    status: String,
    email_verified: bool,
    phone_verified: bool,
    /// `L0` contacts verified, `L1` identity proven.
    kyc_level: String,
    second_factor: bool,
    outgoing_frozen_until_ms: Option<i64>,
}

impl From<kinko_identity::service::UserProfile> for ProfileView {
    fn from(profile: kinko_identity::service::UserProfile) -> Self {
        Self {
            user_id: profile.user_id,
            email: profile.email,
            phone: profile.phone,
            status: profile.status,
            email_verified: profile.email_verified,
            phone_verified: profile.phone_verified,
            kyc_level: format!("{:?}", profile.kyc_level),
            second_factor: profile.second_factor,
            outgoing_frozen_until_ms: profile.outgoing_frozen_until_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MoneyGateView {
    allowed: bool,
    /// Stable codes of every reason money may not move now.
    reasons: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KycRecordView {
    record_id: uuid::Uuid,
    /// `verified`, `rejected` or `review`.
    outcome: String,
    kyc_level: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    destination: String,
}

#[derive(Serialize, ToSchema)]
pub struct OutboxView {
    channel: String,
    purpose: String,
    subject: String,
    body: String,
    created_at_ms: i64,
}

/// Sandbox only: the messages "sent" to a destination, newest first.
pub fn sandbox_router() -> Router<AppState> {
    Router::new().route("/sandbox/outbox", get(sandbox_outbox))
}

#[utoipa::path(get, path = "/api/v1/sandbox/outbox", params(OutboxQuery),
    responses((status = 200, body = Vec<OutboxView>)))]
pub async fn sandbox_outbox(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<OutboxQuery>,
) -> Result<Json<Vec<OutboxView>>, Problem> {
    let service = identity(&state);
    let messages = blocking(move || {
        kinko_identity::notify::read_outbox(service.database(), &query.destination, 20)
            .map_err(IdentityError::from)
    })
    .await?;
    Ok(Json(
        messages
            .into_iter()
            .map(|message| OutboxView {
                channel: message.channel.as_str().to_owned(),
                purpose: message.purpose,
                subject: message.subject,
                body: message.body,
                created_at_ms: message.created_at_ms,
            })
            .collect(),
    ))
}

impl IntoResponse for SessionIssued {
    /// The JSON body, and the session cookie: HttpOnly (no script reads it), Secure (never over
    /// plain HTTP, except to localhost), SameSite=Strict (never sent by another site's page).
    fn into_response(self) -> Response {
        let cookie = format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            self.token,
            kinko_identity::session::SESSION_ABSOLUTE_LIFETIME_MS / 1_000
        );
        ([(header::SET_COOKIE, cookie)], Json(self)).into_response()
    }
}
