//! The wallet: home (balance and what is left to set up), eKYC, bank links (to the bank and
//! back), charges with their confirmation above the threshold, and sending to a handle (paying
//! is in `pay.rs`, the history in `history.rs`). Each handler calls the service function
//! the API calls (`MoneyService`, `LinkService`, `IdentityService`).

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use kinko_money::{ChargeRequest, MoneyService};
use serde::Deserialize;

use super::{
    ErrorPage, Frame, Lang, PageSession, blocking, csrf_refused, error_page, parse_yen,
    random_token, render, status_of, yen,
};
use crate::AppState;
use crate::problem::Problem;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallet", get(home))
        .route("/wallet/kyc", get(kyc_form).post(kyc))
        .route("/wallet/links", get(links_page).post(start_link))
        .route("/wallet/links/finish", get(finish_link))
        .route("/wallet/charge", get(charge_form).post(charge))
        .route("/wallet/charge/confirm", post(charge_confirmed))
        .route("/wallet/send", get(send_form).post(send))
        .route("/wallet/handle", post(set_handle))
}

pub(super) fn money(state: &AppState) -> Arc<MoneyService> {
    Arc::clone(&state.money)
}

fn form_problem() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "FORM_INVALID",
        "The form is not valid.",
    )
}

pub(super) fn amount_problem() -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "MONEY_AMOUNT_INVALID",
        "The amount is not valid.",
    )
}

/// Parses a signed-in form and checks its CSRF token; the `Err` is the page to answer.
pub(super) fn accept<T>(
    session: &PageSession,
    form: Result<Form<T>, FormRejection>,
) -> Result<T, Response>
where
    T: HasCsrf,
{
    let Ok(Form(form)) = form else {
        return Err(error_page(session.lang, &session.csrf, &form_problem()));
    };
    if session.check_csrf(form.csrf()).is_err() {
        return Err(csrf_refused(session.lang, &session.csrf));
    }
    Ok(form)
}

pub(super) trait HasCsrf {
    fn csrf(&self) -> &str;
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

has_csrf!(
    KycForm,
    LinkForm,
    ChargeForm,
    ConfirmForm,
    SendForm,
    HandleForm
);

/// A movement's outcome, in words.
pub(super) fn status_text(lang: Lang, status: &str) -> &'static str {
    match status {
        "posted" => lang.t("status.posted"),
        "pending" => lang.t("status.pending"),
        "rejected" => lang.t("status.rejected"),
        _ => lang.t("status.voided"),
    }
}

#[derive(Template)]
#[template(path = "result.html")]
struct ResultPage {
    page: Frame,
    heading: &'static str,
    amount: String,
    detail: String,
}

pub(super) fn result_page(
    session: &PageSession,
    status: &str,
    amount_yen: i64,
    detail: String,
) -> Response {
    let lang = session.lang;
    let heading = match status {
        "posted" => lang.t("result.done"),
        "pending" => lang.t("result.pending"),
        _ => lang.t("result.rejected"),
    };
    let code = if status == "rejected" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render(
        code,
        &ResultPage {
            page: session.frame("/wallet"),
            heading,
            amount: yen(amount_yen),
            detail,
        },
    )
}

pub(super) struct LinkRow {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) status: &'static str,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    page: Frame,
    balance: String,
    available: String,
    pending_in: String,
    second_factor: bool,
    kyc_done: bool,
    links: Vec<LinkRow>,
    /// Why money cannot move now, in words; empty when it can.
    blockers: Vec<String>,
    step_up: bool,
}

async fn home(State(state): State<AppState>, session: PageSession) -> Response {
    let money = money(&state);
    let links = Arc::clone(&state.links);
    let identity = Arc::clone(&state.identity);
    let info = session.session.clone();
    let loaded = blocking(move || -> Result<_, Problem> {
        let balance = money.balance(&info)?;
        let profile = identity.profile(&info)?;
        let gate = identity.money_gate(&info, false)?;
        let links = links.list_links(&info)?;
        Ok((balance, profile, gate, links))
    })
    .await;
    let (balance, profile, gate, links) = match loaded {
        Ok(loaded) => loaded,
        Err(problem) => return error_page(session.lang, &session.csrf, &problem),
    };
    let lang = session.lang;
    render(
        StatusCode::OK,
        &HomePage {
            page: session.frame("/wallet"),
            balance: yen(balance.balance_yen),
            available: yen(balance.available_yen),
            pending_in: yen(balance.pending_in_yen),
            second_factor: profile.second_factor,
            kyc_done: format!("{:?}", profile.kyc_level) != "L0",
            links: link_rows(lang, links),
            step_up: gate.reasons.contains(&"SESSION_STEP_UP_REQUIRED"),
            blockers: gate.reasons.iter().map(|code| lang.error(code)).collect(),
        },
    )
}

pub(super) fn link_rows(lang: Lang, links: Vec<kinko_banking::links::LinkView>) -> Vec<LinkRow> {
    links
        .into_iter()
        .filter(|link| link.status == "active")
        .map(|link| LinkRow {
            id: link.id.to_string(),
            label: link.account_label,
            status: if link.status == "active" {
                lang.t("status.posted")
            } else {
                lang.t("status.voided")
            },
        })
        .collect()
}

#[derive(Template)]
#[template(path = "kyc.html")]
struct KycPage {
    page: Frame,
}

async fn kyc_form(session: PageSession) -> Response {
    render(
        StatusCode::OK,
        &KycPage {
            page: session.frame("/wallet/kyc"),
        },
    )
}

#[derive(Deserialize)]
struct KycForm {
    csrf: String,
    reference: String,
}

async fn kyc(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<KycForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let identity = Arc::clone(&state.identity);
    let info = session.session.clone();
    match blocking(move || identity.submit_kyc(&info, form.reference.trim())).await {
        Ok(record) => {
            let key = match record.outcome {
                "verified" => "kyc.verified",
                "review" => "kyc.review",
                _ => "kyc.rejected",
            };
            let mut page = session.frame("/wallet/kyc");
            if record.outcome == "verified" {
                page = page.with_notice(key);
            } else {
                page.error = Some(session.lang.t(key).to_owned());
            }
            render(StatusCode::OK, &KycPage { page })
        }
        Err(problem) => {
            let page = session.frame("/wallet/kyc").with_error(problem.code);
            render(status_of(&problem), &KycPage { page })
        }
    }
}

struct BankOption {
    code: String,
    name: String,
}

#[derive(Template)]
#[template(path = "links.html")]
struct LinksPage {
    page: Frame,
    links: Vec<LinkRow>,
    banks: Vec<BankOption>,
}

async fn links_page(State(state): State<AppState>, session: PageSession) -> Response {
    links_with(&state, &session, None).await
}

async fn links_with(state: &AppState, session: &PageSession, problem: Option<Problem>) -> Response {
    let links = Arc::clone(&state.links);
    let info = session.session.clone();
    let listed = blocking(move || links.list_links(&info)).await;
    let banks = crate::api::banks::bank_views(state).await;
    let (links, banks) = match (listed, banks) {
        (Ok(links), Ok(banks)) => (links, banks),
        (Err(problem), _) | (_, Err(problem)) => {
            return error_page(session.lang, &session.csrf, &problem);
        }
    };
    let mut page = session.frame("/wallet/links");
    let status = match &problem {
        Some(problem) => {
            page = page.with_error(problem.code);
            status_of(problem)
        }
        None => StatusCode::OK,
    };
    render(
        status,
        &LinksPage {
            page,
            links: link_rows(session.lang, links),
            banks: banks
                .into_iter()
                .filter(|bank| bank.linking_enabled)
                .map(|bank| BankOption {
                    name: format!("{} ({})", bank.name_ja, bank.bank_code),
                    code: bank.bank_code,
                })
                .collect(),
        },
    )
}

#[derive(Deserialize)]
struct LinkForm {
    csrf: String,
    bank_code: String,
}

#[derive(Template)]
#[template(path = "redirect.html")]
pub struct RedirectPage {
    pub page: Frame,
    pub message: &'static str,
    pub target: String,
}

/// Starts a link and sends the browser to the bank. A page rather than a 303: the policy's
/// `form-action 'self'` would stop a form's redirect to another site, and a link the browser
/// follows needs no exception to it.
async fn start_link(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<LinkForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let links = Arc::clone(&state.links);
    let info = session.session.clone();
    match blocking(move || links.start_link(&info, &form.bank_code)).await {
        Ok(started) => render(
            StatusCode::OK,
            &RedirectPage {
                page: session.frame("/wallet/links"),
                message: session.lang.t("links.going"),
                target: started.authorization_url,
            },
        ),
        Err(problem) => links_with(&state, &session, Some(problem)).await,
    }
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// The bank's redirect back arrives from another site, so the browser leaves the
/// SameSite=Strict session cookie behind (issue 13, item 9). The API's callback answers such a
/// cookie-less browser with this page, which sends it on to `/wallet/links/finish` from this
/// site: that navigation carries the cookie. The session cookie stays Strict, and the state
/// (single use, bound to the user who started the attempt) still decides whose link it is.
pub fn bounce(lang: Lang, query: &CallbackQuery) -> Response {
    let mut target = String::from("/wallet/links/finish?");
    let mut pairs = Vec::new();
    for (name, value) in [
        ("state", &query.state),
        ("code", &query.code),
        ("iss", &query.iss),
        ("error", &query.error),
    ] {
        if let Some(value) = value {
            pairs.push(format!("{name}={}", super::encode_component(value)));
        }
    }
    target.push_str(&pairs.join("&"));
    render(
        StatusCode::OK,
        &RedirectPage {
            page: Frame::new(lang, "", false, "/wallet/links"),
            message: lang.t("links.returning"),
            target,
        },
    )
}

/// Completes a link with what the bank sent back, on the signed-in session.
async fn finish_link(
    State(state): State<AppState>,
    session: PageSession,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let (Some(link_state), Some(code), Some(iss), None) =
        (query.state, query.code, query.iss, query.error)
    else {
        let problem = Problem::from(kinko_banking::links::LinkError::LinkFailed);
        return links_with(&state, &session, Some(problem)).await;
    };
    let links = Arc::clone(&state.links);
    let info = session.session.clone();
    match blocking(move || links.complete_link(&info, &link_state, &code, &iss)).await {
        Ok(link) => {
            let page = session.frame("/wallet/links").with_notice("links.linked");
            let message = link.account_label;
            render(StatusCode::OK, &ErrorPage { page, message })
        }
        Err(problem) => links_with(&state, &session, Some(problem)).await,
    }
}

#[derive(Template)]
#[template(path = "charge.html")]
struct ChargePage {
    page: Frame,
    links: Vec<LinkRow>,
    key: String,
    amount: String,
}

async fn charge_form(State(state): State<AppState>, session: PageSession) -> Response {
    charge_with(&state, &session, None, String::new()).await
}

async fn charge_with(
    state: &AppState,
    session: &PageSession,
    problem: Option<Problem>,
    amount: String,
) -> Response {
    let links = Arc::clone(&state.links);
    let info = session.session.clone();
    let listed = match blocking(move || links.list_links(&info)).await {
        Ok(listed) => listed,
        Err(problem) => return error_page(session.lang, &session.csrf, &problem),
    };
    let mut page = session.frame("/wallet/charge");
    let status = match &problem {
        Some(problem) => {
            page = page.with_error(problem.code);
            status_of(problem)
        }
        None => StatusCode::OK,
    };
    render(
        status,
        &ChargePage {
            page,
            links: link_rows(session.lang, listed),
            key: random_token(),
            amount,
        },
    )
}

#[derive(Deserialize)]
struct ChargeForm {
    csrf: String,
    key: String,
    link_id: uuid::Uuid,
    amount: String,
}

#[derive(Template)]
#[template(path = "charge_confirm.html")]
struct ChargeConfirmPage {
    page: Frame,
    message: String,
    confirmation_id: String,
    link_id: String,
    amount_yen: i64,
    key: String,
}

async fn charge(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<ChargeForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let Some(amount_yen) = parse_yen(&form.amount) else {
        return charge_with(&state, &session, Some(amount_problem()), form.amount).await;
    };
    let request = ChargeRequest {
        link_id: form.link_id,
        amount_yen,
        idempotency_key: form.key.clone(),
        confirmation_id: None,
    };
    let service = money(&state);
    let info = session.session.clone();
    match blocking(move || service.charge(&info, &request)).await {
        Ok(charged) => charged_page(&session, charged),
        Err(problem) if problem.code == "MONEY_CONFIRMATION_REQUIRED" => {
            // Above the threshold: the amount and account are confirmed with a second factor,
            // for this charge only (dynamic linking).
            let service = money(&state);
            let info = session.session.clone();
            let link_id = form.link_id;
            match blocking(move || service.start_confirmation(&info, link_id, amount_yen)).await {
                Ok(confirmation) => render(
                    StatusCode::OK,
                    &ChargeConfirmPage {
                        page: session.frame("/wallet/charge"),
                        message: confirmation.message,
                        confirmation_id: confirmation.id.to_string(),
                        link_id: link_id.to_string(),
                        amount_yen,
                        key: form.key,
                    },
                ),
                Err(problem) => charge_with(&state, &session, Some(problem), form.amount).await,
            }
        }
        Err(problem) => charge_with(&state, &session, Some(problem), form.amount).await,
    }
}

fn charged_page(session: &PageSession, charged: kinko_money::Charge) -> Response {
    let detail = match &charged.reason {
        Some(reason) => format!("{} — {reason}", status_text(session.lang, &charged.status)),
        None => status_text(session.lang, &charged.status).to_owned(),
    };
    result_page(session, &charged.status, charged.amount_yen, detail)
}

#[derive(Deserialize)]
struct ConfirmForm {
    csrf: String,
    key: String,
    link_id: uuid::Uuid,
    amount_yen: i64,
    confirmation_id: uuid::Uuid,
    code: String,
}

async fn charge_confirmed(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<ConfirmForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = money(&state);
    let info = session.session.clone();
    let code = form.code.trim().to_owned();
    let request = ChargeRequest {
        link_id: form.link_id,
        amount_yen: form.amount_yen,
        idempotency_key: form.key.clone(),
        confirmation_id: Some(form.confirmation_id),
    };
    let confirmation_id = form.confirmation_id;
    let done = blocking(move || {
        service.confirm_with_totp(&info, confirmation_id, &code)?;
        service.charge(&info, &request)
    })
    .await;
    match done {
        Ok(charged) => charged_page(&session, charged),
        Err(problem) if problem.code == "MONEY_CONFIRMATION_CODE_INVALID" => {
            let service = money(&state);
            let info = session.session.clone();
            let message = blocking(move || service.open_confirmation(&info, confirmation_id))
                .await
                .map(|confirmation| confirmation.message)
                .unwrap_or_default();
            let page = session.frame("/wallet/charge").with_error(problem.code);
            render(
                status_of(&problem),
                &ChargeConfirmPage {
                    page,
                    message,
                    confirmation_id: confirmation_id.to_string(),
                    link_id: form.link_id.to_string(),
                    amount_yen: form.amount_yen,
                    key: form.key,
                },
            )
        }
        Err(problem) => {
            charge_with(&state, &session, Some(problem), form.amount_yen.to_string()).await
        }
    }
}

#[derive(Template)]
#[template(path = "send.html")]
struct SendPage {
    page: Frame,
    key: String,
    handle: String,
    amount: String,
}

async fn send_form(session: PageSession) -> Response {
    render(
        StatusCode::OK,
        &SendPage {
            page: session.frame("/wallet/send"),
            key: random_token(),
            handle: String::new(),
            amount: String::new(),
        },
    )
}

#[derive(Deserialize)]
struct SendForm {
    csrf: String,
    key: String,
    handle: String,
    amount: String,
    note: String,
}

async fn send(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<SendForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let refuse = |problem: &Problem, form: &SendForm| {
        let page = session.frame("/wallet/send").with_error(problem.code);
        render(
            status_of(problem),
            &SendPage {
                page,
                key: form.key.clone(),
                handle: form.handle.clone(),
                amount: form.amount.clone(),
            },
        )
    };
    let Some(amount_yen) = parse_yen(&form.amount) else {
        return refuse(&amount_problem(), &form);
    };
    let request = kinko_money::transfers::SendRequest {
        to_handle: form.handle.trim().trim_start_matches('@').to_owned(),
        amount_yen,
        note: form.note.clone(),
        idempotency_key: form.key.clone(),
    };
    let service = money(&state);
    let info = session.session.clone();
    match blocking(move || service.send(&info, &request)).await {
        Ok(sent) => {
            let detail = format!(
                "@{} — {}",
                sent.to_handle,
                status_text(session.lang, &sent.status)
            );
            result_page(&session, &sent.status, sent.amount_yen, detail)
        }
        Err(problem) => refuse(&problem, &form),
    }
}

#[derive(Deserialize)]
struct HandleForm {
    csrf: String,
    handle: String,
}

async fn set_handle(
    State(state): State<AppState>,
    session: PageSession,
    form: Result<Form<HandleForm>, FormRejection>,
) -> Response {
    let form = match accept(&session, form) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let service = money(&state);
    let info = session.session.clone();
    let result = blocking(move || service.set_handle(&info, form.handle.trim())).await;
    let page = session.frame("/wallet/send");
    let (status, page) = match &result {
        Ok(_) => (StatusCode::OK, page.with_notice("handle.done")),
        Err(problem) => (status_of(problem), page.with_error(problem.code)),
    };
    render(
        status,
        &SendPage {
            page,
            key: random_token(),
            handle: String::new(),
            amount: String::new(),
        },
    )
}
