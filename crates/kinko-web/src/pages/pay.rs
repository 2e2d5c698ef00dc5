//! Paying a merchant: its code pasted, the payee from Kinko's records shown to check, the
//! payment (`MoneyService::resolve_qr` and `pay`, as the API); and the wallet's own one-time pay
//! code as a QR image (`issue_pay_code`).

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::wallet::{HasCsrf, accept, amount_problem, money, result_page, status_text};
use super::{
    Frame, Lang, PageSession, blocking, error_page, parse_yen, random_token, render, status_of, yen,
};
use crate::AppState;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallet/pay", get(pay_form).post(pay_quote))
        .route("/wallet/pay/confirm", post(pay))
        .route("/wallet/paycode", post(pay_code))
}

impl HasCsrf for QuoteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl HasCsrf for PayForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl HasCsrf for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

#[derive(Template)]
#[template(path = "pay.html")]
struct PayPage {
    page: Frame,
    qr: String,
}

async fn pay_form(session: PageSession) -> Response {
    render(
        StatusCode::OK,
        &PayPage {
            page: session.frame("/wallet/pay"),
            qr: String::new(),
        },
    )
}

#[derive(Deserialize)]
struct QuoteForm {
    csrf: String,
    qr: String,
}

#[derive(Template)]
#[template(path = "pay_confirm.html")]
struct PayConfirmPage {
    page: Frame,
    qr: String,
    merchant: String,
    /// The amount of a dynamic code; a static one lets the payer type it.
    amount: Option<String>,
    key: String,
}

/// Reads the code and shows the merchant's name from Kinko's records for the payer to check.
async fn pay_quote(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<QuoteForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let qr = form.qr.trim().to_owned();
    quote(&state, &session, qr, None).await
}

async fn quote(
    state: &AppState,
    session: &PageSession,
    qr: String,
    problem: Option<Problem>,
) -> Response {
    let service = money(state);
    let code = qr.clone();
    match blocking(move || service.resolve_qr(&code)).await {
        Ok(quote) => {
            let mut page = session.frame("/wallet/pay");
            let status = match &problem {
                Some(problem) => {
                    page = page.with_error(problem.code);
                    status_of(problem)
                }
                None => StatusCode::OK,
            };
            let merchant = match session.lang {
                Lang::Ja => quote.merchant_name_ja,
                Lang::En => quote.merchant_name,
            };
            render(
                status,
                &PayConfirmPage {
                    page,
                    qr,
                    merchant,
                    amount: quote.amount_yen.map(yen),
                    key: random_token(),
                },
            )
        }
        Err(problem) => {
            let page = session.frame("/wallet/pay").with_error(problem.code);
            render(status_of(&problem), &PayPage { page, qr })
        }
    }
}

#[derive(Deserialize)]
struct PayForm {
    csrf: String,
    qr: String,
    key: String,
    amount: Option<String>,
}

async fn pay(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<PayForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let amount_yen = match form.amount.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => match parse_yen(text) {
            Some(amount) => Some(amount),
            None => return quote(&state, &session, form.qr, Some(amount_problem())).await,
        },
    };
    let request = kinko_money::payments::PayRequest {
        qr: form.qr.clone(),
        amount_yen,
        idempotency_key: form.key,
    };
    let service = money(&state);
    let info = session.session.clone();
    match blocking(move || service.pay(&info, &request)).await {
        Ok(payment) => {
            let merchant = match session.lang {
                Lang::Ja => payment.merchant_name_ja,
                Lang::En => payment.merchant_name,
            };
            let detail = format!(
                "{merchant} — {}",
                status_text(session.lang, &payment.status)
            );
            result_page(&session, &payment.status, payment.amount_yen, detail)
        }
        Err(problem) => quote(&state, &session, form.qr, Some(problem)).await,
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

#[derive(Template)]
#[template(path = "paycode.html")]
struct PayCodePage {
    page: Frame,
    qr_svg: String,
    code: String,
    seconds: i64,
}

/// A one-time code for the shop's till to read (consumer-presented), as a QR image: the
/// `MoneyService::issue_pay_code` the API's `POST /pay-codes` calls.
async fn pay_code(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    if let Err(refused) = accept(&session, form) {
        return refused;
    }
    let service = money(&state);
    let info = session.session.clone();
    let issued = match blocking(move || {
        service.issue_pay_code(&info, kinko_money::payments::PAY_CODE_DEFAULT_MAX_YEN)
    })
    .await
    {
        Ok(issued) => issued,
        Err(problem) => return error_page(session.lang, &session.csrf, &problem),
    };
    let qr_svg = match kinko_qr::render::svg(&issued.code) {
        Ok(svg) => super::account::inline_svg(&svg),
        Err(error) => {
            tracing::error!(error = %error, "drawing a pay code failed");
            String::new()
        }
    };
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis())
            .unwrap_or_default(),
    )
    .unwrap_or(i64::MAX);
    render(
        StatusCode::OK,
        &PayCodePage {
            page: session.frame("/wallet/pay"),
            qr_svg,
            code: issued.code,
            seconds: ((issued.expires_at_ms - now_ms) / 1_000).max(0),
        },
    )
}
