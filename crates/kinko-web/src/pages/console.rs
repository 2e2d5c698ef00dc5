//! The operator console (a first part): sign-in with password and authenticator code, and the
//! partner banks with their switches — one click to turn linking or charging off or on, with a
//! reason, audited. A bank-partner operator sees only its own bank. The sign-in is the API's
//! `operator::sign_in`, the switch the API's `change_policy_as`; the operator's token rides in
//! an HttpOnly, SameSite=Strict cookie scoped to `/console`, and every form carries the
//! double-submit token.

use std::net::SocketAddr;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use kinko_banking::registry::PolicyChange;
use kinko_identity::operator::{self, LoginAttempt, Role};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{FormToken, Frame, Lang, blocking, cookie, csrf_refused, render, status_of};
use crate::AppState;
use crate::problem::Problem;

/// The operator's session token (HttpOnly, Strict, only sent to `/console`).
pub const OPERATOR_COOKIE: &str = "kinko_operator";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/signin", get(sign_in_form).post(sign_in))
        .route("/console", get(banks))
        .route("/console/banks/{bank_code}", post(switch))
}

#[derive(Template)]
#[template(path = "console_signin.html")]
struct SignInPage {
    page: Frame,
}

async fn sign_in_form(lang: Lang, headers: HeaderMap) -> Response {
    let token = FormToken::of(&headers);
    let page = Frame::new(lang, &token.value, false, "/console/signin");
    token.attach(render(StatusCode::OK, &SignInPage { page }))
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: String,
    email: String,
    password: SecretString,
    code: String,
}

async fn sign_in(
    State(state): State<AppState>,
    lang: Lang,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let token = FormToken::of(&headers);
    let refuse = |problem: &Problem| {
        let page =
            Frame::new(lang, &token.value, false, "/console/signin").with_error(problem.code);
        render(status_of(problem), &SignInPage { page })
    };
    let Ok(Form(form)) = form else {
        return refuse(&Problem::new(
            StatusCode::BAD_REQUEST,
            "FORM_INVALID",
            "The form is not valid.",
        ));
    };
    if !FormToken::check(&headers, &form.csrf) {
        return csrf_refused(lang, "");
    }
    let identity = std::sync::Arc::clone(&state.identity);
    let source_ip = address.ip().to_string();
    let signed_in = blocking(move || {
        let now_ms = i64::try_from(identity.clock().now_ms()).unwrap_or(i64::MAX);
        operator::sign_in(
            identity.database(),
            now_ms,
            &LoginAttempt {
                email: &form.email,
                password: &form.password,
                totp_code: form.code.trim(),
            },
            &source_ip,
            identity.secret_box(),
        )
    })
    .await;
    match signed_in {
        Ok(session) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{OPERATOR_COOKIE}={}; Path=/console; HttpOnly; Secure; SameSite=Strict",
                    session.token.expose_secret()
                ),
            )],
            Redirect::to("/console"),
        )
            .into_response(),
        Err(problem) => refuse(&problem),
    }
}

struct BankRow {
    code: String,
    name: String,
    linking: bool,
    charging: bool,
}

#[derive(Template)]
#[template(path = "console_banks.html")]
struct BanksPage {
    page: Frame,
    operator: String,
    banks: Vec<BankRow>,
}

/// The operator behind the cookie, or the sign-in page.
pub(super) async fn operator_of(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(SecretString, operator::Operator), Response> {
    let Some(token) = cookie(headers, OPERATOR_COOKIE) else {
        return Err(Redirect::to("/console/signin").into_response());
    };
    let token = SecretString::from(token);
    let identity = std::sync::Arc::clone(&state.identity);
    let presented = token.clone();
    let found = blocking(move || {
        let now_ms = i64::try_from(identity.clock().now_ms()).unwrap_or(i64::MAX);
        identity
            .database()
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                operator::authenticate(tx, now_ms, &presented)
            })
    })
    .await;
    match found {
        Ok(found) => Ok((token, found)),
        Err(_) => Err(Redirect::to("/console/signin").into_response()),
    }
}

async fn banks(State(state): State<AppState>, lang: Lang, headers: HeaderMap) -> Response {
    banks_with(&state, lang, &headers, None).await
}

async fn banks_with(
    state: &AppState,
    lang: Lang,
    headers: &HeaderMap,
    outcome: Option<Result<(), Problem>>,
) -> Response {
    let (_, signed_in) = match operator_of(state, headers).await {
        Ok(found) => found,
        Err(to_sign_in) => return to_sign_in,
    };
    let token = FormToken::of(headers);
    let mut page = Frame::new(lang, &token.value, false, "/console");
    let mut status = StatusCode::OK;
    match &outcome {
        Some(Ok(())) => page = page.with_notice("console.switched"),
        Some(Err(problem)) => {
            status = status_of(problem);
            page = page.with_error(problem.code);
        }
        None => {}
    }
    let own_bank = match &signed_in.role {
        Role::BankPartner { bank_code } => Some(bank_code.clone()),
        _ => None,
    };
    let views = match crate::api::banks::bank_views(state).await {
        Ok(views) => views,
        Err(problem) => return super::error_page(lang, "", &problem),
    };
    let banks = views
        .into_iter()
        .filter(|bank| own_bank.as_deref().is_none_or(|own| own == bank.bank_code))
        .map(|bank| BankRow {
            name: bank.name_ja.clone(),
            linking: bank.linking_enabled,
            charging: bank.charging_enabled,
            code: bank.bank_code,
        })
        .collect();
    token.attach(render(
        status,
        &BanksPage {
            page,
            operator: signed_in.email,
            banks,
        },
    ))
}

#[derive(Deserialize)]
struct SwitchForm {
    csrf: String,
    /// `linking` or `charging`.
    switch: String,
    /// `on` or `off`.
    to: String,
    reason: String,
}

/// One click: a switch of one bank, on or off, with the reason the audit entry keeps.
async fn switch(
    State(state): State<AppState>,
    lang: Lang,
    headers: HeaderMap,
    Path(bank_code): Path<String>,
    form: Result<Form<SwitchForm>, FormRejection>,
) -> Response {
    let (token, _) = match operator_of(&state, &headers).await {
        Ok(found) => found,
        Err(to_sign_in) => return to_sign_in,
    };
    let Ok(Form(form)) = form else {
        let problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "FORM_INVALID",
            "The form is not valid.",
        );
        return banks_with(&state, lang, &headers, Some(Err(problem))).await;
    };
    if !FormToken::check(&headers, &form.csrf) {
        return csrf_refused(lang, "");
    }
    let on = form.to == "on";
    let mut change = PolicyChange::default();
    match form.switch.as_str() {
        "linking" => change.linking_enabled = Some(on),
        "charging" => change.charging_enabled = Some(on),
        _ => {
            let problem = Problem::new(
                StatusCode::BAD_REQUEST,
                "FORM_INVALID",
                "The form is not valid.",
            );
            return banks_with(&state, lang, &headers, Some(Err(problem))).await;
        }
    }
    let outcome =
        crate::api::banks::change_policy_as(&state, token, bank_code, change, form.reason)
            .await
            .map(|_| ());
    banks_with(&state, lang, &headers, Some(outcome)).await
}
