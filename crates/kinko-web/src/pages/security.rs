//! The security page: where the wallet is signed in (each other session with a button that
//! ends it, and one that ends them all), the browsers and apps it knows (each revocable), a
//! freeze of the wallet's outgoing money for a day or a week, and the security notices Kinko
//! sent. Each action is the `IdentityService` call the API makes (`revoke_session`,
//! `revoke_device`) or the holder's own-safety calls (`service::own_safety`).

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use kinko_identity::service::IdentityService;
use kinko_identity::service::own_safety::FREEZE_HOURS_ALLOWED;
use serde::Deserialize;

use super::history::japan_time;
use super::wallet::{HasCsrf, accept};
use super::{Frame, PageSession, blocking, error_page, render};
use crate::AppState;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallet/security", get(security))
        .route("/wallet/security/sessions", post(end_session))
        .route("/wallet/security/sign-out-everywhere", post(end_others))
        .route("/wallet/security/devices", post(forget_device))
        .route("/wallet/security/freeze", post(freeze))
}

fn identity(state: &AppState) -> Arc<IdentityService> {
    Arc::clone(&state.identity)
}

struct SessionRow {
    id: String,
    device: String,
    since: String,
    current: bool,
}

struct DeviceRow {
    id: String,
    label: String,
    since: String,
    trusted: bool,
}

struct NoticeRow {
    what: &'static str,
    when: String,
}

#[derive(Template)]
#[template(path = "security.html")]
struct SecurityPage {
    page: Frame,
    sessions: Vec<SessionRow>,
    devices: Vec<DeviceRow>,
    notices: Vec<NoticeRow>,
    /// When the wallet's outgoing money is frozen until, in Japan time; empty when it is not.
    frozen_until: String,
    freeze_hours: Vec<(i64, &'static str)>,
}

/// Where this wallet is signed in, its devices, its freeze and its notices.
async fn security(State(state): State<AppState>, session: PageSession) -> Response {
    security_with(&state, &session, Ok(None)).await
}

/// Draws the page with a notice (`Ok(Some(key))`) or an error (`Err(problem)`).
async fn security_with(
    state: &AppState,
    session: &PageSession,
    outcome: Result<Option<&str>, Problem>,
) -> Response {
    let service = identity(state);
    let info = session.session.clone();
    let current = info.session_id;
    let loaded = blocking(move || {
        let sessions = service.list_sessions(&info)?;
        let devices = service.list_devices(&info)?;
        let profile = service.profile(&info)?;
        let notices = service.security_notices(&info)?;
        Ok::<_, kinko_identity::service::IdentityError>((sessions, devices, profile, notices))
    })
    .await;
    let (sessions, devices, profile, notices) = match loaded {
        Ok(loaded) => loaded,
        Err(problem) => return error_page(session.lang, &session.csrf, &problem),
    };
    let lang = session.lang;
    let mut page = session.frame("/wallet/security");
    let status = match &outcome {
        Ok(Some(key)) => {
            page = page.with_notice(key);
            StatusCode::OK
        }
        Ok(None) => StatusCode::OK,
        Err(problem) => {
            page = page.with_error(problem.code);
            super::status_of(problem)
        }
    };
    let now_ms = i64::try_from(state.identity.clock().now_ms()).unwrap_or(i64::MAX);
    let frozen_until = profile
        .outgoing_frozen_until_ms
        .filter(|until| *until > now_ms)
        .map(japan_time)
        .unwrap_or_default();
    render(
        status,
        &SecurityPage {
            page,
            sessions: sessions
                .into_iter()
                .map(|summary| SessionRow {
                    id: summary.session_id.to_string(),
                    device: summary.device_label,
                    since: japan_time(summary.created_at),
                    current: summary.session_id == current,
                })
                .collect(),
            devices: devices
                .into_iter()
                .map(|device| DeviceRow {
                    id: device.device_id.to_string(),
                    label: device.label,
                    since: japan_time(device.first_seen_at),
                    trusted: device.trusted_at.is_some(),
                })
                .collect(),
            notices: notices
                .into_iter()
                .map(|notice| NoticeRow {
                    what: lang.t(&format!("notice.{}", notice.purpose)),
                    when: japan_time(notice.created_at_ms),
                })
                .collect(),
            frozen_until,
            freeze_hours: FREEZE_HOURS_ALLOWED
                .iter()
                .map(|hours| {
                    let label = if *hours == 24 {
                        lang.t("security.freeze_day")
                    } else {
                        lang.t("security.freeze_week")
                    };
                    (*hours, label)
                })
                .collect(),
        },
    )
}

#[derive(Deserialize)]
struct EndSessionForm {
    csrf: String,
    session_id: String,
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

#[derive(Deserialize)]
struct DeviceForm {
    csrf: String,
    device_id: String,
}

#[derive(Deserialize)]
struct FreezeForm {
    csrf: String,
    hours: i64,
}

macro_rules! has_csrf {
    ($($form:ty),*) => {
        $(impl HasCsrf for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })*
    };
}

has_csrf!(EndSessionForm, CsrfForm, DeviceForm, FreezeForm);

fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found.")
}

async fn end_session(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<EndSessionForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let Ok(target) = form.session_id.parse() else {
        return security_with(&state, &session, Err(not_found())).await;
    };
    let service = identity(&state);
    let info = session.session.clone();
    let outcome = blocking(move || service.revoke_session(&info, target))
        .await
        .map(|()| Some("security.ended"));
    security_with(&state, &session, outcome).await
}

/// Signs out every session but this one.
async fn end_others(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if let Err(refused) = accept(&session, form) {
        return refused;
    }
    let service = identity(&state);
    let info = session.session.clone();
    let outcome = blocking(move || service.sign_out_everywhere_else(&info))
        .await
        .map(|_| Some("security.ended_all"));
    security_with(&state, &session, outcome).await
}

/// Forgets a device: its sessions end and its next sign-in is a new device's.
async fn forget_device(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<DeviceForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let Ok(target) = form.device_id.parse() else {
        return security_with(&state, &session, Err(not_found())).await;
    };
    let service = identity(&state);
    let info = session.session.clone();
    let outcome = blocking(move || service.revoke_device(&info, target))
        .await
        .map(|()| Some("security.device_forgotten"));
    security_with(&state, &session, outcome).await
}

/// Freezes the wallet's outgoing money for a day or a week.
async fn freeze(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<FreezeForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = identity(&state);
    let info = session.session.clone();
    let hours = form.hours;
    let outcome = blocking(move || service.freeze_own_wallet(&info, hours))
        .await
        .map(|_| Some("security.frozen"));
    security_with(&state, &session, outcome).await
}
