//! `/api/v1/operator` routes: the console API for staff and bank-partner operators — sign-in
//! with password and TOTP, sign-out, reading a user's record with a stated reason, reading the
//! audit log, and creating operators.
//!
//! Operator sessions are a world apart from wallet sessions: their tokens have their own prefix
//! and table, a wallet token here is `OPERATOR_UNAUTHENTICATED` (401) and an operator token on
//! a wallet route is `SESSION_INVALID` (401). Permissions are decided by
//! `kinko_identity::operator` (deny by default); each handler passes the bearer token to one
//! flow there, which authenticates it in the same transaction as the action and writes the
//! audit entry — refused attempts included.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use kinko_identity::operator::{
    self, LoginAttempt, Operator, OperatorError, OperatorRequest, OperatorSession, StoredEntry,
    UserRecord,
};
use kinko_identity::service::IdentityService;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::ApiJson;
use crate::problem::Problem;

/// Audit entries per page when the caller does not say.
pub const AUDIT_PAGE_ENTRIES_DEFAULT: u32 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/operator/sessions", post(sign_in))
        .route("/operator/sessions/current", delete(sign_out))
        .route("/operator/users/{user_id}", get(read_user))
        .route("/operator/audit", get(read_audit))
        .route("/operator/operators", post(create_operator))
}

impl From<OperatorError> for Problem {
    fn from(error: OperatorError) -> Self {
        let problem = Problem::from_error(&error, "operator");
        match error {
            OperatorError::RateLimited { retry_after_ms } => problem.retry_after_ms(retry_after_ms),
            _ => problem,
        }
    }
}

/// What every operator flow needs from the shared state, moved onto a blocking thread.
struct Console {
    identity: Arc<IdentityService>,
}

impl Console {
    fn of(state: &AppState) -> Self {
        Self {
            identity: Arc::clone(&state.identity),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.identity.clock().now_ms()).unwrap_or(i64::MAX)
    }
}

/// Runs an operator flow off the async workers (argon2 and SQL block).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OperatorError> + Send + 'static,
) -> Result<T, Problem> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Problem::from),
        Err(error) => {
            tracing::error!(error = %error, "operator task failed");
            Err(Problem::internal())
        }
    }
}

fn unauthenticated() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "OPERATOR_UNAUTHENTICATED",
        "Sign in to the console first: send Authorization: Bearer <operator session token>.",
    )
}

/// The bearer token of a request to an operator route. Only its presence is checked here; the
/// flow authenticates it in the transaction that acts.
pub struct OperatorToken(pub SecretString);

impl FromRequestParts<AppState> for OperatorToken {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, Problem> {
        crate::api::bearer_token(&parts.headers)
            .map(|token| OperatorToken(SecretString::from(token.to_owned())))
            .ok_or_else(unauthenticated)
    }
}

fn query_problem(rejection: &QueryRejection) -> Problem {
    let mut problem = Problem::new(
        StatusCode::BAD_REQUEST,
        "REQUEST_INVALID",
        "The query string is not valid for this endpoint.",
    );
    // Names the parameter and what was wrong with it; quotes no value worth hiding.
    problem.detail = Some(rejection.body_text());
    problem
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorSignInRequest {
    email: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// The 6-digit code the operator's authenticator app shows now. Required: operators
    /// cannot sign in with a password alone.
    totp_code: String,
}

/// An operator as the console shows them.
#[derive(Serialize, ToSchema)]
pub struct OperatorView {
    operator_id: String,
    email: String,
    /// `admin`, `analyst`, `support` or `bank_partner`.
    role: String,
    /// The bank a bank partner acts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    bank_code: Option<String>,
}

impl From<&Operator> for OperatorView {
    fn from(operator: &Operator) -> Self {
        Self {
            operator_id: operator.id.to_string(),
            email: operator.email.clone(),
            role: operator.role.as_str().to_owned(),
            bank_code: operator.role.bank_code().map(str::to_owned),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct OperatorSessionIssued {
    /// The bearer token for `/api/v1/operator/*`: `Authorization: Bearer <token>`. It is
    /// refused on wallet routes.
    token: String,
    /// The session ends then at the latest (and after 15 minutes without use).
    expires_at_ms: i64,
    operator: OperatorView,
}

impl From<OperatorSession> for OperatorSessionIssued {
    fn from(session: OperatorSession) -> Self {
        Self {
            token: session.token.expose_secret().to_owned(),
            expires_at_ms: session.expires_at_ms,
            operator: OperatorView::from(&session.operator),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/operator/sessions", request_body = OperatorSignInRequest,
    responses((status = 201, body = OperatorSessionIssued),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 429, body = Problem)))]
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<OperatorSignInRequest>,
) -> Result<(StatusCode, Json<OperatorSessionIssued>), Problem> {
    let console = Console::of(&state);
    let source_ip = address.ip().to_string();
    let session = blocking(move || {
        operator::sign_in(
            console.identity.database(),
            console.now_ms(),
            &LoginAttempt {
                email: &body.email,
                password: &body.password,
                totp_code: &body.totp_code,
            },
            &source_ip,
            console.identity.secret_box(),
        )
    })
    .await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

#[utoipa::path(delete, path = "/api/v1/operator/sessions/current",
    responses((status = 204), (status = 401, body = Problem)))]
pub async fn sign_out(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
) -> Result<StatusCode, Problem> {
    let console = Console::of(&state);
    blocking(move || operator::sign_out(console.identity.database(), console.now_ms(), &token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReadUserQuery {
    /// Why this user's data is read (ticket number, the user's question): 10 to 500
    /// characters. Written to the audit log with the read.
    reason: Option<String>,
}

/// A user's record for support. The phone number is masked but for its last 4 digits unless
/// the operator may see contacts in full (admins).
#[derive(Serialize, ToSchema)]
pub struct UserRecordView {
    user_id: uuid::Uuid,
    email: String,
    phone: String,
    phone_masked: bool,
    /// `pending`, `active` or `closed`.
    status: String,
    email_verified: bool,
    phone_verified: bool,
    /// `L0` contacts verified, `L1` identity proven.
    kyc_level: String,
    second_factor: bool,
    /// Sessions neither revoked, expired nor idle.
    active_sessions: i64,
    locked_until_ms: Option<i64>,
    outgoing_frozen_until_ms: Option<i64>,
    created_at_ms: i64,
}

impl From<UserRecord> for UserRecordView {
    fn from(record: UserRecord) -> Self {
        Self {
            user_id: record.user_id,
            email: record.email,
            phone: record.phone,
            phone_masked: record.phone_masked,
            status: record.status,
            email_verified: record.email_verified,
            phone_verified: record.phone_verified,
            kyc_level: format!("{:?}", record.kyc_level),
            second_factor: record.second_factor,
            active_sessions: record.active_sessions,
            locked_until_ms: record.locked_until_ms,
            outgoing_frozen_until_ms: record.outgoing_frozen_until_ms,
            created_at_ms: record.created_at_ms,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/operator/users/{user_id}",
    params(("user_id" = uuid::Uuid, Path), ReadUserQuery),
    responses((status = 200, body = UserRecordView),
        (status = 400, description = "`OPERATOR_REASON_REQUIRED`: no reason of 10 to 500 characters", body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "`OPERATOR_FORBIDDEN`: only support and admins read user data", body = Problem),
        (status = 404, body = Problem)))]
pub async fn read_user(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    Path(user_id): Path<String>,
    query: Result<Query<ReadUserQuery>, QueryRejection>,
) -> Result<Json<UserRecordView>, Problem> {
    let Query(query) = query.map_err(|rejection| query_problem(&rejection))?;
    let console = Console::of(&state);
    let record = blocking(move || {
        // A malformed id names no user; it is checked after the token like any other.
        let user_id = uuid::Uuid::parse_str(&user_id).unwrap_or(uuid::Uuid::nil());
        operator::read_user_data(
            console.identity.database(),
            console.now_ms(),
            &token,
            user_id,
            query.reason.as_deref().unwrap_or(""),
        )
    })
    .await?;
    Ok(Json(record.into()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries with a larger sequence number are returned (0, the default, starts at the
    /// beginning).
    after_seq: Option<u64>,
    /// Entries per page, 1 to 500 (default 100).
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryView {
    seq: u64,
    at_ms: i64,
    /// `user`, `operator`, `system` or `bank`.
    actor_kind: String,
    actor_id: String,
    action: String,
    subject_kind: String,
    subject_id: String,
    /// The stated reason (operators) or the rule that fired.
    reason: String,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    /// This entry's chain hash (hex), to anchor outside the database.
    hash: String,
}

impl From<StoredEntry> for AuditEntryView {
    fn from(entry: StoredEntry) -> Self {
        // The detail was serialised from JSON by the audit log; should a row hold something
        // else, it is shown as the text it is rather than hidden.
        let detail = serde_json::from_str(&entry.detail)
            .unwrap_or_else(|_| serde_json::Value::String(entry.detail.clone()));
        Self {
            seq: entry.seq,
            at_ms: entry.at_ms,
            actor_kind: entry.actor_kind,
            actor_id: entry.actor_id,
            action: entry.action,
            subject_kind: entry.subject_kind,
            subject_id: entry.subject_id,
            reason: entry.reason,
            detail,
            hash: entry
                .hash
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntryView>,
    /// Pass as `after_seq` for the next page (equal to the request's when the page is empty).
    next_after_seq: u64,
}

#[utoipa::path(get, path = "/api/v1/operator/audit", params(AuditQuery),
    responses((status = 200, body = AuditPage),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "`OPERATOR_FORBIDDEN`: admins only", body = Problem)))]
pub async fn read_audit(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let Query(query) = query.map_err(|rejection| query_problem(&rejection))?;
    let after_seq = query.after_seq.unwrap_or(0);
    let limit = query.limit.unwrap_or(AUDIT_PAGE_ENTRIES_DEFAULT);
    let console = Console::of(&state);
    let entries = blocking(move || {
        operator::read_audit_log(
            console.identity.database(),
            console.now_ms(),
            &token,
            after_seq,
            limit,
        )
    })
    .await?;
    let next_after_seq = entries.last().map_or(after_seq, |entry| entry.seq);
    Ok(Json(AuditPage {
        entries: entries.into_iter().map(AuditEntryView::from).collect(),
        next_after_seq,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOperatorRequest {
    email: String,
    /// `admin`, `analyst`, `support` or `bank_partner`.
    role: String,
    /// The 4-digit bank code: required for `bank_partner`, refused for the other roles.
    bank_code: Option<String>,
    /// The new operator's first password (hand it over out of band).
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    /// Why this operator is created (ticket, hire): 10 to 500 characters, audited.
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct OperatorCreated {
    operator: OperatorView,
    /// Shown once, here only: show as a QR code for the new operator's authenticator app.
    otpauth_url: String,
    /// The same secret, to type in by hand.
    secret_base32: String,
}

#[utoipa::path(post, path = "/api/v1/operator/operators", request_body = CreateOperatorRequest,
    responses((status = 201, body = OperatorCreated),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "`OPERATOR_FORBIDDEN`: admins only", body = Problem),
        (status = 409, description = "`OPERATOR_EMAIL_TAKEN`", body = Problem)))]
pub async fn create_operator(
    State(state): State<AppState>,
    OperatorToken(token): OperatorToken,
    ApiJson(body): ApiJson<CreateOperatorRequest>,
) -> Result<(StatusCode, Json<OperatorCreated>), Problem> {
    let console = Console::of(&state);
    let created = blocking(move || {
        operator::create_operator_as(
            console.identity.database(),
            console.now_ms(),
            &token,
            &OperatorRequest {
                email: &body.email,
                role: &body.role,
                bank_code: body.bank_code.as_deref(),
                password: &body.password,
                reason: &body.reason,
            },
            console.identity.secret_box(),
        )
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(OperatorCreated {
            operator: OperatorView::from(&created.operator),
            otpauth_url: created.enrolment.otpauth_url().expose_secret().to_owned(),
            secret_base32: created.enrolment.secret_base32().expose_secret().to_owned(),
        }),
    ))
}
