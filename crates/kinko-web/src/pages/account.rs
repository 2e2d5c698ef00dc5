//! Signing up and in: the sign-up form, the e-mail and SMS codes, sign-in with the second
//! factor, sign-out, and setting up the authenticator app (TOTP, with its QR code). Each
//! handler calls the `IdentityService` function the API calls.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, extract::Path};
use kinko_identity::notify::Channel;
use kinko_identity::service::{IdentityService, Source};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::wallet::{HasCsrf, accept};
use super::{
    DEVICE_COOKIE, ErrorPage, FormToken, Frame, Lang, PageSession, blocking, cookie, csrf_refused,
    error_page, render, session_cookies, set_cookie, status_of,
};
use crate::AppState;
use crate::api::identity::SESSION_COOKIE;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", get(sign_up_form).post(sign_up))
        .route("/signup/{user_id}/verify", get(verify_form).post(verify))
        .route("/signin", get(sign_in_form).post(sign_in))
        .route(
            "/signin/second-factor",
            get(second_factor_form).post(second_factor),
        )
        .route("/signout", post(sign_out))
        .route("/wallet/totp", get(totp_start).post(totp_begin))
        .route("/wallet/totp/confirm", post(totp_confirm))
}

fn identity(state: &AppState) -> Arc<IdentityService> {
    Arc::clone(&state.identity)
}

/// The API's source (address, user agent), with this browser's device cookie.
fn page_source(headers: &HeaderMap, address: SocketAddr) -> Source {
    let mut source = crate::api::identity::source(headers, address);
    source.device_token = cookie(headers, DEVICE_COOKIE);
    source
}

/// Parses a form shown before sign-in and checks its double-submit token; the `Err` is the
/// page to answer (the signed-in forms' counterpart is `wallet::accept`).
fn accept_public<T: HasCsrf>(
    lang: Lang,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<T, Response> {
    let Ok(Form(form)) = form else {
        return Err(error_page(lang, "", &form_problem()));
    };
    if !FormToken::check(headers, form.csrf()) {
        return Err(csrf_refused(lang, ""));
    }
    Ok(form)
}

/// A form that does not parse is answered like a wrong entry, not with axum's plain text.
fn form_problem() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "FORM_INVALID",
        "The form is not valid.",
    )
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignUpPage {
    page: Frame,
    email: String,
    phone: String,
}

async fn sign_up_form(lang: Lang, headers: HeaderMap) -> Response {
    let token = FormToken::of(&headers);
    let page = Frame::new(lang, &token.value, false, "/signup");
    token.attach(render(
        StatusCode::OK,
        &SignUpPage {
            page,
            email: String::new(),
            phone: String::new(),
        },
    ))
}

#[derive(Deserialize)]
struct SignUpForm {
    csrf: String,
    email: String,
    password: SecretString,
    phone: String,
}

async fn sign_up(
    State(state): State<AppState>,
    lang: Lang,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<SignUpForm>, FormRejection>,
) -> Response {
    let token = FormToken::of(&headers);
    let form = match accept_public(lang, &headers, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = identity(&state);
    let source = page_source(&headers, address);
    let (email, phone) = (form.email.clone(), form.phone.clone());
    match blocking(move || service.sign_up(&form.email, &form.password, &form.phone, &source)).await
    {
        Ok(user_id) => Redirect::to(&format!("/signup/{user_id}/verify")).into_response(),
        Err(problem) => {
            let page = Frame::new(lang, &token.value, false, "/signup").with_error(problem.code);
            render(status_of(&problem), &SignUpPage { page, email, phone })
        }
    }
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    page: Frame,
    action: String,
}

async fn verify_form(lang: Lang, headers: HeaderMap, Path(user_id): Path<uuid::Uuid>) -> Response {
    let token = FormToken::of(&headers);
    let action = format!("/signup/{user_id}/verify");
    let page = Frame::new(lang, &token.value, false, &action);
    token.attach(render(StatusCode::OK, &VerifyPage { page, action }))
}

#[derive(Deserialize)]
struct VerifyForm {
    csrf: String,
    email_code: String,
    sms_code: String,
}

/// Both codes in one form: the e-mail's, then the SMS's, each checked as the API checks it.
async fn verify(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(user_id): Path<uuid::Uuid>,
    form: Result<Form<VerifyForm>, FormRejection>,
) -> Response {
    let token = FormToken::of(&headers);
    let form = match accept_public(lang, &headers, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = identity(&state);
    let verified = blocking(move || {
        service.verify_contact(user_id, Channel::Email, form.email_code.trim())?;
        service.verify_contact(user_id, Channel::Sms, form.sms_code.trim())
    })
    .await;
    match verified {
        Ok(_) => {
            let page = Frame::new(lang, &token.value, false, "/signin").with_notice("verify.done");
            render(
                StatusCode::OK,
                &SignInPage {
                    page,
                    email: String::new(),
                },
            )
        }
        Err(problem) => {
            let action = format!("/signup/{user_id}/verify");
            let page = Frame::new(lang, &token.value, false, &action).with_error(problem.code);
            render(status_of(&problem), &VerifyPage { page, action })
        }
    }
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    page: Frame,
    email: String,
}

async fn sign_in_form(lang: Lang, headers: HeaderMap) -> Response {
    let token = FormToken::of(&headers);
    let page = Frame::new(lang, &token.value, false, "/signin");
    token.attach(render(
        StatusCode::OK,
        &SignInPage {
            page,
            email: String::new(),
        },
    ))
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: String,
    email: String,
    password: SecretString,
}

async fn sign_in(
    State(state): State<AppState>,
    lang: Lang,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let token = FormToken::of(&headers);
    let form = match accept_public(lang, &headers, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = identity(&state);
    let source = page_source(&headers, address);
    let email = form.email.clone();
    match blocking(move || service.log_in(&form.email, &form.password, &source)).await {
        Ok(signed_in) => {
            let next = if signed_in.second_factor_required {
                "/signin/second-factor"
            } else {
                "/wallet"
            };
            (session_cookies(&signed_in.session), Redirect::to(next)).into_response()
        }
        Err(problem) => {
            let page = Frame::new(lang, &token.value, false, "/signin").with_error(problem.code);
            render(status_of(&problem), &SignInPage { page, email })
        }
    }
}

#[derive(Template)]
#[template(path = "second_factor.html")]
struct SecondFactorPage {
    page: Frame,
}

async fn second_factor_form(session: PageSession) -> Response {
    let page = session.frame("/signin/second-factor");
    render(StatusCode::OK, &SecondFactorPage { page })
}

#[derive(Deserialize)]
struct CodeForm {
    csrf: String,
    code: String,
}

/// Passes the second factor (TOTP code, or a recovery code when it is not six digits):
/// marks the device trusted and rotates the session, whose new cookies go back.
async fn second_factor(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = identity(&state);
    let info = session.session.clone();
    let code = form.code.trim().to_owned();
    let passed = blocking(move || {
        if code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()) {
            service.pass_second_factor(&info, Some(&code), None)
        } else {
            service.pass_second_factor(&info, None, Some(&code))
        }
    })
    .await;
    match passed {
        Ok(rotated) => (session_cookies(&rotated), Redirect::to("/wallet")).into_response(),
        Err(problem) => {
            let page = session
                .frame("/signin/second-factor")
                .with_error(problem.code);
            render(status_of(&problem), &SecondFactorPage { page })
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
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

has_csrf!(SignUpForm, VerifyForm, SignInForm, CodeForm, CsrfForm);

async fn sign_out(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if let Err(refused) = accept(&session, form) {
        return refused;
    }
    let service = identity(&state);
    let info = session.session.clone();
    let target = info.session_id;
    if let Err(problem) = blocking(move || service.revoke_session(&info, target)).await {
        return error_page(session.lang, &session.csrf, &problem);
    }
    (
        AppendHeaders([
            set_cookie(SESSION_COOKIE, "", 0),
            set_cookie(super::CSRF_COOKIE, "", 0),
        ]),
        Redirect::to("/signin"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "totp.html")]
struct TotpPage {
    page: Frame,
    /// Empty before the set-up starts.
    qr_svg: String,
    secret: String,
    recovery_codes: Vec<String>,
}

async fn totp_start(session: PageSession) -> Response {
    let page = session.frame("/wallet/totp");
    render(
        StatusCode::OK,
        &TotpPage {
            page,
            qr_svg: String::new(),
            secret: String::new(),
            recovery_codes: Vec::new(),
        },
    )
}

/// Starts the set-up (a POST: it writes a pending secret) and shows its QR code.
async fn totp_begin(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if let Err(refused) = accept(&session, form) {
        return refused;
    }
    let service = identity(&state);
    let info = session.session.clone();
    match blocking(move || service.begin_totp(&info)).await {
        Ok(enrolment) => {
            let qr_svg = match kinko_qr::render::svg(enrolment.otpauth_url.expose_secret()) {
                Ok(svg) => inline_svg(&svg),
                Err(error) => {
                    tracing::error!(error = %error, "drawing the TOTP QR code failed");
                    String::new()
                }
            };
            let page = session.frame("/wallet/totp");
            render(
                StatusCode::OK,
                &TotpPage {
                    page,
                    qr_svg,
                    secret: enrolment.secret_base32.expose_secret().to_owned(),
                    recovery_codes: Vec::new(),
                },
            )
        }
        Err(problem) => error_page(session.lang, &session.csrf, &problem),
    }
}

/// The SVG element of an SVG document (the XML declaration has no place inside HTML).
pub fn inline_svg(document: &str) -> String {
    document
        .find("<svg")
        .map_or_else(String::new, |start| document[start..].to_owned())
}

async fn totp_confirm(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = identity(&state);
    let info = session.session.clone();
    match blocking(move || service.confirm_totp(&info, form.code.trim())).await {
        Ok((recovery_codes, rotated)) => {
            // The session rotated: this page's forms carry the new session's token.
            let page = Frame::new(
                session.lang,
                rotated.csrf_token.expose_secret(),
                true,
                "/wallet/totp",
            )
            .with_notice("totp.done");
            let body = render(
                StatusCode::OK,
                &TotpPage {
                    page,
                    qr_svg: String::new(),
                    secret: String::new(),
                    recovery_codes,
                },
            );
            (session_cookies(&rotated), body).into_response()
        }
        Err(problem) => {
            let page = session.frame("/wallet/totp");
            let message = session.lang.error(problem.code);
            render(status_of(&problem), &ErrorPage { page, message })
        }
    }
}
