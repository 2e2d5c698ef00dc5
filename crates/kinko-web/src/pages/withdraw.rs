//! Withdrawing to a linked bank account: the form (the account, the amount as people type it,
//! what the wallet can spend), and the step-up the money gate asks for. A session whose second
//! factor is older than the gate allows gets a code field in the form: the code is passed on
//! the session first (`pass_second_factor`, which rotates it), then the withdrawal runs on the
//! rotated session — `MoneyService::withdraw`, the API's own call, idempotent by the form's key.

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kinko_money::ChargeRequest;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::wallet::{LinkRow, accept, amount_problem, link_rows, money, result_page, status_text};
use super::{Frame, PageSession, blocking, error_page, parse_yen, random_token, render, yen};
use crate::AppState;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new().route("/wallet/withdraw", get(withdraw_form).post(withdraw))
}

const STEP_UP: &str = "SESSION_STEP_UP_REQUIRED";

#[derive(Template)]
#[template(path = "withdraw.html")]
struct WithdrawPage {
    page: Frame,
    links: Vec<LinkRow>,
    available: String,
    key: String,
    amount: String,
    /// The form asks for the authenticator's code (the session's second factor is not fresh).
    step_up: bool,
}

async fn withdraw_form(State(state): State<AppState>, session: PageSession) -> Response {
    withdraw_with(&state, &session, None, String::new(), random_token()).await
}

/// Draws the form, with `problem` as its message; the key stays the form's own, so sending
/// it again after an error is still one withdrawal.
async fn withdraw_with(
    state: &AppState,
    session: &PageSession,
    problem: Option<Problem>,
    amount: String,
    key: String,
) -> Response {
    let service = money(state);
    let links = Arc::clone(&state.links);
    let identity = Arc::clone(&state.identity);
    let info = session.session.clone();
    let loaded = blocking(move || -> Result<_, Problem> {
        let balance = service.balance(&info)?;
        let links = links.list_links(&info)?;
        let gate = identity.money_gate(&info, false)?;
        Ok((balance, links, gate))
    })
    .await;
    let (balance, links, gate) = match loaded {
        Ok(loaded) => loaded,
        Err(problem) => return error_page(session.lang, &session.csrf, &problem),
    };
    let mut page = session.frame("/wallet/withdraw");
    let status = match &problem {
        Some(problem) => {
            page = page.with_error(problem.code);
            super::status_of(problem)
        }
        None => StatusCode::OK,
    };
    render(
        status,
        &WithdrawPage {
            page,
            links: link_rows(session.lang, links),
            available: yen(balance.available_yen),
            key,
            amount,
            step_up: gate.reasons.contains(&STEP_UP),
        },
    )
}

#[derive(Deserialize)]
pub(super) struct WithdrawForm {
    csrf: String,
    key: String,
    link_id: uuid::Uuid,
    amount: String,
    /// The authenticator's code, when the form asked for it.
    #[serde(default)]
    code: String,
}

impl super::wallet::HasCsrf for WithdrawForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

async fn withdraw(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<WithdrawForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let Some(amount_yen) = parse_yen(&form.amount) else {
        return withdraw_with(
            &state,
            &session,
            Some(amount_problem()),
            form.amount,
            form.key,
        )
        .await;
    };
    // The step-up first, when the form carried a code: the session rotates, and the rest of
    // this request (and the browser, by the new cookies) goes on with the new one.
    let code = form.code.trim().to_owned();
    let (session, rotated) = if code.is_empty() {
        (session, None)
    } else {
        let identity = Arc::clone(&state.identity);
        let info = session.session.clone();
        let stepped = blocking(move || {
            let rotated = identity.pass_second_factor(&info, Some(&code), None)?;
            let renewed = identity.authenticate(rotated.token.expose_secret())?;
            Ok::<_, kinko_identity::service::IdentityError>((rotated, renewed))
        })
        .await;
        match stepped {
            Ok((rotated, renewed)) => {
                let csrf = rotated.csrf_token.expose_secret().to_owned();
                let session = PageSession {
                    session: renewed,
                    csrf,
                    lang: session.lang,
                };
                (session, Some(rotated))
            }
            Err(problem) => {
                return withdraw_with(&state, &session, Some(problem), form.amount, form.key).await;
            }
        }
    };
    let request = ChargeRequest {
        link_id: form.link_id,
        amount_yen,
        idempotency_key: form.key.clone(),
        confirmation_id: None,
    };
    let service = money(&state);
    let info = session.session.clone();
    let response = match blocking(move || service.withdraw(&info, &request)).await {
        Ok(withdrawn) => {
            let status = status_text(session.lang, &withdrawn.status);
            let detail = match &withdrawn.reason {
                Some(reason) => format!("→ {} — {status} — {reason}", withdrawn.bank_code),
                None => format!("→ {} — {status}", withdrawn.bank_code),
            };
            result_page(&session, &withdrawn.status, withdrawn.amount_yen, detail)
        }
        Err(problem) => withdraw_with(&state, &session, Some(problem), form.amount, form.key).await,
    };
    match rotated {
        Some(rotated) => (super::session_cookies(&rotated), response).into_response(),
        None => response,
    }
}
