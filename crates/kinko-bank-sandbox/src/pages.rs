//! The bank's own pages (BANK-PROTOCOL §10), in Japanese and English (Japanese unless
//! `lang=en` or the browser's first `Accept-Language` is English): the login and consent
//! steps of `GET /oauth/authorize`, and the customer page with its links, debits, notices and
//! the buttons that end or report a link or a debit and lift the legacy lock.
//!
//! HTML is built from escaped strings (every value goes through [`escape`]) rather than a
//! template engine: a dozen small pages do not earn a proc-macro dependency. Every form
//! carries a CSRF token that must equal the `bank_csrf` cookie (double submit; both
//! `HttpOnly; SameSite=Lax`); the sign-in is a `bank_session` cookie whose random value the
//! bank stores only as a hash.
//!
//! The flow, for a client or a test walking it with plain HTTP and a cookie jar:
//! 1. `GET /oauth/authorize?client_id=…&request_uri=…` → the login form;
//! 2. `POST /oauth/authorize/login` (`csrf_token`, `client_id`, `request_uri`, `online_id`,
//!    `password`, `totp_code`) → `303` back to step 1's URL with the session cookie, which now
//!    shows the consent form;
//! 3. `POST /oauth/authorize/consent` (`csrf_token`, `client_id`, `request_uri`,
//!    `account_id`, `decision` = `approve` | `deny`) → `303` to the client's redirect URI.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::customer::Overview;
use crate::http::{HttpState, blocking, form_encode, refusal};
use crate::links::FraudReport;
use crate::oauth::{AuthenticatedCustomer, LOGIN_FRESHNESS_MS, OAuthError, PendingAuthorization};
use crate::store::Account;

/// The session cookie: who signed in at the bank.
pub const SESSION_COOKIE: &str = "bank_session";
/// The CSRF cookie the hidden `csrf_token` input must match.
pub const CSRF_COOKIE: &str = "bank_csrf";

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/oauth/authorize", get(authorize_page))
        .route("/oauth/authorize/login", post(authorize_login))
        .route("/oauth/authorize/consent", post(authorize_consent))
        .route(
            "/customer/login",
            get(customer_login_page).post(customer_login),
        )
        .route("/customer/logout", post(customer_logout))
        .route("/customer", get(customer_page))
        .route("/customer/links/{id}/revoke", post(revoke_link))
        .route("/customer/links/{id}/report", post(report_link))
        .route("/customer/debits/{id}/report", post(report_debit))
        .route("/customer/accounts/{id}/unlock-legacy", post(unlock_legacy))
}

/// The page language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    /// `lang=en|ja` wins; else the first language of `Accept-Language`; else Japanese.
    pub fn choose(asked: Option<&str>, headers: &HeaderMap) -> Self {
        match asked {
            Some("en") => return Lang::En,
            Some("ja") => return Lang::Ja,
            _ => {}
        }
        let first = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .map(|tag| tag.trim().to_ascii_lowercase());
        match first {
            Some(tag) if tag == "en" || tag.starts_with("en-") || tag.starts_with("en;") => {
                Lang::En
            }
            _ => Lang::Ja,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    fn pick(self, ja: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }

    /// `&lang=en` for URLs when English, so the next page keeps it.
    fn query_suffix(self) -> &'static str {
        match self {
            Lang::Ja => "",
            Lang::En => "&lang=en",
        }
    }
}

/// HTML-escapes text for element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// `¥1,234`.
pub fn yen(amount_yen: i64) -> String {
    format!("¥{}", crate::payments::grouped(amount_yen))
}

/// A moment as `2026-11-26 02:45` in Japan time (UTC+9, no daylight saving).
pub fn jst(ms: i64) -> String {
    let seconds = ms.div_euclid(1_000) + 9 * 3_600;
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3_600,
        of_day % 3_600 / 60
    )
}

fn scope_label(lang: Lang, scope: &str) -> String {
    scope
        .split(' ')
        .map(|word| match word {
            "holder_match" => lang.pick("口座名義の確認", "holder match"),
            "debits" => lang.pick("口座からの引き落とし", "debits"),
            "credits" => lang.pick("口座への入金", "credits"),
            _ => "?",
        })
        .collect::<Vec<_>>()
        .join(lang.pick("、", ", "))
}

fn account_line(lang: Lang, account: &Account) -> String {
    let kind = match (lang, account.kind) {
        (Lang::Ja, kind) => kind.label_ja(),
        (Lang::En, crate::store::AccountKind::Futsu) => "Ordinary",
        (Lang::En, crate::store::AccountKind::Toza) => "Current",
    };
    format!(
        "{} {} {} {}",
        escape(&account.bank_code),
        escape(&account.branch),
        kind,
        escape(&crate::oauth::masked(&account.number))
    )
}

/// The hidden CSRF input, exactly as clients and tests look for it.
fn csrf_input(token: &str) -> String {
    format!(
        r#"<input type="hidden" name="csrf_token" value="{}">"#,
        escape(token)
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        r#"<input type="hidden" name="{}" value="{}">"#,
        escape(name),
        escape(value)
    )
}

fn document(lang: Lang, title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
header {{ border-bottom: 3px solid #0a4; margin-bottom: 1rem; }}
label {{ display: block; margin: .5rem 0; }}
input[type=text], input[type=password] {{ width: 16rem; }}
table {{ border-collapse: collapse; width: 100%; margin: .5rem 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3rem; text-align: left; }}
.error {{ color: #b00; }}
form.inline {{ display: inline; }}
</style>
</head>
<body>
<header><h1>{bank}</h1></header>
{body}
</body>
</html>
"#,
        lang = lang.code(),
        title = escape(title),
        bank = lang.pick("サンドボックス銀行", "Sandbox Bank"),
    )
}

/// The cookies of a request, by name.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(name: &str, value: &str, max_age_s: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_s}"
    ))
    .ok()
}

/// A page answer: HTML, never cached, never framed, no referrer (URLs carry request URIs).
struct Page {
    status: StatusCode,
    html: String,
    cookies: Vec<HeaderValue>,
    location: Option<String>,
}

impl Page {
    fn html(status: StatusCode, html: String) -> Self {
        Self {
            status,
            html,
            cookies: Vec::new(),
            location: None,
        }
    }

    fn see_other(location: String) -> Self {
        Self {
            status: StatusCode::SEE_OTHER,
            html: String::new(),
            cookies: Vec::new(),
            location: Some(location),
        }
    }

    fn with_cookie(mut self, cookie: Option<HeaderValue>) -> Self {
        self.cookies.extend(cookie);
        self
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.html).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        for cookie in self.cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
        if let Some(location) = self.location
            && let Ok(value) = HeaderValue::from_str(&location)
        {
            headers.insert(header::LOCATION, value);
        }
        response
    }
}

fn error_page(lang: Lang, status: StatusCode, message: &str, code: &str) -> Page {
    let body = format!(
        r#"<p class="error">{}</p><p><small>{}</small></p>"#,
        escape(message),
        escape(code)
    );
    Page::html(status, document(lang, message, &body))
}

fn failed(lang: Lang) -> Page {
    error_page(
        lang,
        StatusCode::INTERNAL_SERVER_ERROR,
        lang.pick(
            "ただいま処理できません。",
            "The bank cannot answer right now.",
        ),
        "BANK_INTERNAL",
    )
}

fn refused_page(lang: Lang, error: &OAuthError) -> Page {
    match error {
        OAuthError::Store(_) | OAuthError::Random(_) => {
            tracing::error!(code = error.code(), error = %error, "bank page failed");
            failed(lang)
        }
        OAuthError::LinkNotFound | OAuthError::DebitNotFound | OAuthError::AccountNotFound => {
            error_page(
                lang,
                StatusCode::NOT_FOUND,
                lang.pick("見つかりません。", "Not found."),
                error.code(),
            )
        }
        _ => error_page(
            lang,
            StatusCode::BAD_REQUEST,
            lang.pick("お手続きを続けられません。", "This request cannot go on."),
            error.code(),
        ),
    }
}

/// The CSRF token of this browser: the cookie's, or a fresh one to set.
fn csrf_token(headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), OAuthError> {
    if let Some(token) = cookie(headers, CSRF_COOKIE).filter(|token| {
        token.len() == 43
            && token
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    }) {
        return Ok((token, None));
    }
    let token = crate::random::token()?;
    let cookie = set_cookie(CSRF_COOKIE, &token, 24 * 3_600);
    Ok((token, cookie))
}

/// Double submit: the form's token equals the cookie's.
fn csrf_valid(headers: &HeaderMap, submitted: Option<&str>) -> bool {
    match (cookie(headers, CSRF_COOKIE), submitted) {
        (Some(cookie), Some(submitted)) if !cookie.is_empty() => {
            bool::from(cookie.as_bytes().ct_eq(submitted.as_bytes()))
        }
        _ => false,
    }
}

fn csrf_refused(lang: Lang) -> Page {
    error_page(
        lang,
        StatusCode::FORBIDDEN,
        lang.pick(
            "フォームの有効期限が切れました。もう一度お試しください。",
            "This form has expired. Please try again.",
        ),
        "BANK_CSRF_INVALID",
    )
}

/// The signed-in customer, if the session cookie names a live session.
async fn signed_in(
    state: &HttpState,
    headers: &HeaderMap,
) -> Result<Option<AuthenticatedCustomer>, ()> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    match blocking(move || bank.session(&token, now_ms)).await {
        Ok(Ok(customer)) => Ok(customer),
        Ok(Err(error)) => {
            tracing::error!(error = %error, "reading a bank session failed");
            Err(())
        }
        Err(_) => Err(()),
    }
}

fn login_form(
    lang: Lang,
    action: &str,
    csrf: &str,
    extra_hidden: &str,
    heading: &str,
    error: Option<&str>,
) -> String {
    let error = error
        .map(|message| format!(r#"<p class="error">{}</p>"#, escape(message)))
        .unwrap_or_default();
    format!(
        r#"<h2>{heading}</h2>
{error}<form method="post" action="{action}">
{csrf}
{extra_hidden}{lang_input}
<label>{online_id_label} <input type="text" name="online_id" autocomplete="username" required></label>
<label>{password_label} <input type="password" name="password" autocomplete="current-password" required></label>
<label>{totp_label} <input type="text" name="totp_code" inputmode="numeric" autocomplete="one-time-code" required></label>
<button type="submit">{submit}</button>
</form>"#,
        heading = escape(heading),
        action = escape(action),
        csrf = csrf_input(csrf),
        lang_input = hidden("lang", lang.code()),
        online_id_label = lang.pick("オンラインバンキングID", "Online banking ID"),
        password_label = lang.pick("パスワード", "Password"),
        totp_label = lang.pick("ワンタイムパスワード", "One-time code"),
        submit = lang.pick("ログイン", "Sign in"),
    )
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: String,
    request_uri: Option<String>,
    lang: Option<String>,
}

fn authorize_hidden(client_id: &str, request_uri: &str) -> String {
    format!(
        "{}\n{}\n",
        hidden("client_id", client_id),
        hidden("request_uri", request_uri)
    )
}

fn authorize_url(client_id: &str, request_uri: &str, lang: Lang) -> String {
    format!(
        "/oauth/authorize?client_id={}&request_uri={}{}",
        form_encode(client_id),
        form_encode(request_uri),
        lang.query_suffix()
    )
}

fn login_page_for(
    lang: Lang,
    pending: &PendingAuthorization,
    request_uri: &str,
    csrf: &str,
    error: Option<&str>,
) -> String {
    let intro = match lang {
        Lang::Ja => format!(
            "<p>{} が口座連携を求めています。当行のオンラインバンキングにログインしてください。</p>",
            escape(&pending.client_name)
        ),
        Lang::En => format!(
            "<p>{} asks to link your account. Sign in to the bank's online banking.</p>",
            escape(&pending.client_name)
        ),
    };
    let form = login_form(
        lang,
        "/oauth/authorize/login",
        csrf,
        &authorize_hidden(&pending.client_id, request_uri),
        lang.pick("ログイン", "Sign in"),
        error,
    );
    document(
        lang,
        lang.pick("ログイン", "Sign in"),
        &format!("{intro}\n{form}"),
    )
}

fn consent_page(
    lang: Lang,
    pending: &PendingAuthorization,
    request_uri: &str,
    csrf: &str,
    accounts: &[Account],
) -> String {
    let choices: String = accounts
        .iter()
        .enumerate()
        .map(|(index, account)| {
            format!(
                r#"<label><input type="radio" name="account_id" value="{}"{}> {}</label>
"#,
                account.id,
                if index == 0 { " checked" } else { "" },
                account_line(lang, account)
            )
        })
        .collect();
    let choices = if accounts.is_empty() {
        format!(
            r#"<p class="error">{}</p>"#,
            lang.pick(
                "この銀行にお客さまの口座がありません。",
                "You hold no account at this bank."
            )
        )
    } else {
        choices
    };
    let asks = match lang {
        Lang::Ja => format!(
            "<p><strong>{}</strong> が、次の内容での口座連携を求めています：{}</p>",
            escape(&pending.client_name),
            escape(&scope_label(lang, &pending.scope))
        ),
        Lang::En => format!(
            "<p><strong>{}</strong> asks to link an account for: {}</p>",
            escape(&pending.client_name),
            escape(&scope_label(lang, &pending.scope))
        ),
    };
    let body = format!(
        r#"<h2>{title}</h2>
{asks}
<form method="post" action="/oauth/authorize/consent">
{csrf}
{hidden}{lang_input}
<fieldset><legend>{choose}</legend>
{choices}</fieldset>
<button type="submit" name="decision" value="approve">{approve}</button>
<button type="submit" name="decision" value="deny">{deny}</button>
</form>"#,
        title = lang.pick("口座連携の確認", "Link your account"),
        csrf = csrf_input(csrf),
        hidden = authorize_hidden(&pending.client_id, request_uri),
        lang_input = hidden("lang", lang.code()),
        choose = lang.pick("連携する口座", "Account to link"),
        approve = lang.pick("許可する", "Approve"),
        deny = lang.pick("許可しない", "Deny"),
    );
    document(
        lang,
        lang.pick("口座連携の確認", "Link your account"),
        &body,
    )
}

/// `GET /oauth/authorize`: the login form, or, once signed in, the consent form. A request
/// that did not come through PAR is refused as JSON (a protocol error, not a page).
async fn authorize_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<AuthorizeQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return refusal(&OAuthError::RequestInvalid("query"), false).into_response();
    };
    let lang = Lang::choose(query.lang.as_deref(), &headers);
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let client_id = query.client_id.clone();
    let request_uri = query.request_uri.clone();
    let pending = match blocking(move || {
        bank.authorization_request(&client_id, request_uri.as_deref(), now_ms)
    })
    .await
    {
        Ok(Ok(pending)) => pending,
        Ok(Err(error)) => return refusal(&error, false).into_response(),
        Err(error) => return error.into_response(),
    };
    let request_uri = query.request_uri.unwrap_or_default();
    let (csrf, csrf_cookie) = match csrf_token(&headers) {
        Ok(pair) => pair,
        Err(error) => return refused_page(lang, &error).into_response(),
    };
    let customer = match signed_in(&state, &headers).await {
        Ok(customer) => customer,
        Err(()) => return failed(lang).into_response(),
    };
    let fresh =
        customer.filter(|customer| now_ms - customer.authenticated_at_ms() <= LOGIN_FRESHNESS_MS);
    let html = match fresh {
        None => login_page_for(lang, &pending, &request_uri, &csrf, None),
        Some(customer) => {
            let bank = Arc::clone(&state.bank);
            let bank_code = pending.bank_code.clone();
            let accounts = blocking(move || {
                bank.database()
                    .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                        crate::store::accounts_of(tx, customer.customer_id())
                    })
            })
            .await;
            match accounts {
                Ok(Ok(accounts)) => {
                    let eligible: Vec<Account> = accounts
                        .into_iter()
                        .filter(|account| account.bank_code == bank_code)
                        .collect();
                    consent_page(lang, &pending, &request_uri, &csrf, &eligible)
                }
                _ => return failed(lang).into_response(),
            }
        }
    };
    Page::html(StatusCode::OK, html)
        .with_cookie(csrf_cookie)
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    csrf_token: Option<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    request_uri: String,
    #[serde(default)]
    online_id: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    totp_code: String,
    lang: Option<String>,
}

/// Checks both factors and opens the session; answers the cookie to set, or the refusal.
async fn sign_in(
    state: &HttpState,
    online_id: String,
    password: String,
    totp_code: String,
) -> Result<Result<HeaderValue, OAuthError>, ()> {
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        let password = SecretString::from(password);
        let customer = bank.authenticate_customer(&online_id, &password, &totp_code, now_ms)?;
        bank.open_session(&customer)
    })
    .await
    .map_err(|_| ())?;
    Ok(outcome.and_then(|token| {
        set_cookie(
            SESSION_COOKIE,
            &token,
            crate::customer::SESSION_LIFETIME_MS / 1_000,
        )
        .ok_or(OAuthError::RequestInvalid("cookie"))
    }))
}

fn login_failed_message(lang: Lang) -> &'static str {
    lang.pick(
        "ログインできませんでした。入力内容をご確認ください。続けて失敗するとしばらくログインできなくなります。",
        "Sign-in failed. Check what you entered; repeated failures lock the sign-in for a while.",
    )
}

/// `POST /oauth/authorize/login`: both factors → the session cookie and back to the
/// authorization page, which now shows the consent form.
async fn authorize_login(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return csrf_refused(Lang::choose(None, &headers)).into_response();
    };
    let lang = Lang::choose(form.lang.as_deref(), &headers);
    if !csrf_valid(&headers, form.csrf_token.as_deref()) {
        return csrf_refused(lang).into_response();
    }
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let (client_id, request_uri) = (form.client_id.clone(), form.request_uri.clone());
    let pending =
        match blocking(move || bank.authorization_request(&client_id, Some(&request_uri), now_ms))
            .await
        {
            Ok(Ok(pending)) => pending,
            Ok(Err(error)) => return refused_page(lang, &error).into_response(),
            Err(_) => return failed(lang).into_response(),
        };
    match sign_in(&state, form.online_id, form.password, form.totp_code).await {
        Ok(Ok(cookie)) => Page::see_other(authorize_url(&form.client_id, &form.request_uri, lang))
            .with_cookie(Some(cookie))
            .into_response(),
        Ok(Err(OAuthError::LoginFailed)) => {
            let csrf = form.csrf_token.unwrap_or_default();
            Page::html(
                StatusCode::UNAUTHORIZED,
                login_page_for(
                    lang,
                    &pending,
                    &form.request_uri,
                    &csrf,
                    Some(login_failed_message(lang)),
                ),
            )
            .into_response()
        }
        Ok(Err(error)) => refused_page(lang, &error).into_response(),
        Err(()) => failed(lang).into_response(),
    }
}

#[derive(Deserialize)]
struct ConsentForm {
    csrf_token: Option<String>,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    request_uri: String,
    account_id: Option<String>,
    #[serde(default)]
    decision: String,
    lang: Option<String>,
}

fn redirect_with(redirect_uri: &str, parameters: &[(&str, &str)]) -> String {
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let query: Vec<String> = parameters
        .iter()
        .map(|(name, value)| format!("{name}={}", form_encode(value)))
        .collect();
    format!("{redirect_uri}{separator}{}", query.join("&"))
}

/// `POST /oauth/authorize/consent`: approve → the code; deny → `access_denied`; both back
/// to the client's redirect URI with `state` and `iss`.
async fn authorize_consent(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return csrf_refused(Lang::choose(None, &headers)).into_response();
    };
    let lang = Lang::choose(form.lang.as_deref(), &headers);
    if !csrf_valid(&headers, form.csrf_token.as_deref()) {
        return csrf_refused(lang).into_response();
    }
    let customer = match signed_in(&state, &headers).await {
        Ok(Some(customer)) => customer,
        Ok(None) => {
            return Page::see_other(authorize_url(&form.client_id, &form.request_uri, lang))
                .into_response();
        }
        Err(()) => return failed(lang).into_response(),
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let (client_id, request_uri) = (form.client_id.clone(), form.request_uri.clone());
    let location = match form.decision.as_str() {
        "deny" => blocking(move || bank.deny(&client_id, Some(&request_uri), now_ms))
            .await
            .map(|outcome| {
                outcome.map(|denial| {
                    redirect_with(
                        &denial.redirect_uri,
                        &[
                            ("error", "access_denied"),
                            ("state", &denial.state),
                            ("iss", &denial.iss),
                        ],
                    )
                })
            }),
        "approve" => {
            let Some(account_id) = form
                .account_id
                .as_deref()
                .and_then(|id| uuid::Uuid::parse_str(id).ok())
            else {
                return refused_page(lang, &OAuthError::AccountNotEligible).into_response();
            };
            blocking(move || {
                bank.authorize(
                    &client_id,
                    Some(&request_uri),
                    &customer,
                    account_id,
                    now_ms,
                )
            })
            .await
            .map(|outcome| {
                outcome.map(|response| {
                    redirect_with(
                        &response.redirect_uri,
                        &[
                            ("code", &response.code),
                            ("state", &response.state),
                            ("iss", &response.iss),
                        ],
                    )
                })
            })
        }
        _ => return refused_page(lang, &OAuthError::RequestInvalid("decision")).into_response(),
    };
    match location {
        Ok(Ok(location)) => Page::see_other(location).into_response(),
        Ok(Err(OAuthError::LoginStale)) => {
            Page::see_other(authorize_url(&form.client_id, &form.request_uri, lang)).into_response()
        }
        Ok(Err(error)) => refused_page(lang, &error).into_response(),
        Err(_) => failed(lang).into_response(),
    }
}

#[derive(Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

fn customer_url(lang: Lang) -> String {
    match lang {
        Lang::Ja => "/customer".to_owned(),
        Lang::En => "/customer?lang=en".to_owned(),
    }
}

fn customer_login_url(lang: Lang) -> String {
    match lang {
        Lang::Ja => "/customer/login".to_owned(),
        Lang::En => "/customer/login?lang=en".to_owned(),
    }
}

fn customer_login_html(lang: Lang, csrf: &str, error: Option<&str>) -> String {
    let form = login_form(
        lang,
        "/customer/login",
        csrf,
        "",
        lang.pick("オンラインバンキング ログイン", "Online banking sign-in"),
        error,
    );
    document(lang, lang.pick("ログイン", "Sign in"), &form)
}

/// `GET /customer/login`.
async fn customer_login_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, QueryRejection>,
) -> Response {
    let lang = Lang::choose(
        query.ok().and_then(|Query(query)| query.lang).as_deref(),
        &headers,
    );
    match signed_in(&state, &headers).await {
        Ok(Some(_)) => return Page::see_other(customer_url(lang)).into_response(),
        Ok(None) => {}
        Err(()) => return failed(lang).into_response(),
    }
    match csrf_token(&headers) {
        Ok((csrf, cookie)) => Page::html(StatusCode::OK, customer_login_html(lang, &csrf, None))
            .with_cookie(cookie)
            .into_response(),
        Err(error) => refused_page(lang, &error).into_response(),
    }
}

/// `POST /customer/login` (`csrf_token`, `online_id`, `password`, `totp_code`).
async fn customer_login(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return csrf_refused(Lang::choose(None, &headers)).into_response();
    };
    let lang = Lang::choose(form.lang.as_deref(), &headers);
    if !csrf_valid(&headers, form.csrf_token.as_deref()) {
        return csrf_refused(lang).into_response();
    }
    match sign_in(&state, form.online_id, form.password, form.totp_code).await {
        Ok(Ok(cookie)) => Page::see_other(customer_url(lang))
            .with_cookie(Some(cookie))
            .into_response(),
        Ok(Err(OAuthError::LoginFailed)) => Page::html(
            StatusCode::UNAUTHORIZED,
            customer_login_html(
                lang,
                &form.csrf_token.unwrap_or_default(),
                Some(login_failed_message(lang)),
            ),
        )
        .into_response(),
        Ok(Err(error)) => refused_page(lang, &error).into_response(),
        Err(()) => failed(lang).into_response(),
    }
}

#[derive(Deserialize)]
struct ActionForm {
    csrf_token: Option<String>,
    lang: Option<String>,
}

/// `POST /customer/logout`.
async fn customer_logout(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let lang = Lang::choose(
        form.as_ref()
            .ok()
            .and_then(|Form(form)| form.lang.as_deref()),
        &headers,
    );
    let submitted = form.ok().and_then(|Form(form)| form.csrf_token);
    if !csrf_valid(&headers, submitted.as_deref()) {
        return csrf_refused(lang).into_response();
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let bank = Arc::clone(&state.bank);
        if !matches!(
            blocking(move || bank.close_session(&token)).await,
            Ok(Ok(()))
        ) {
            return failed(lang).into_response();
        }
    }
    Page::see_other(customer_login_url(lang))
        .with_cookie(set_cookie(SESSION_COOKIE, "", 0))
        .into_response()
}

fn action_form(action: &str, csrf: &str, lang: Lang, label: &str) -> String {
    format!(
        r#"<form class="inline" method="post" action="{}">{}{}<button type="submit">{}</button></form>"#,
        escape(action),
        csrf_input(csrf),
        hidden("lang", lang.code()),
        escape(label)
    )
}

fn link_state(lang: Lang, reason: Option<&str>, ended: bool) -> &'static str {
    if !ended {
        return lang.pick("有効", "active");
    }
    match reason {
        Some("customer_revoked") => lang.pick("解除（お客さま）", "revoked by you"),
        Some("customer_reported") => lang.pick("停止（不正の申告）", "stopped (reported)"),
        Some("client_revoked") => lang.pick("解除（連携先）", "revoked by the client"),
        _ => lang.pick("停止（当行）", "stopped by the bank"),
    }
}

fn overview_html(lang: Lang, overview: &Overview, csrf: &str) -> String {
    let mut body = format!(
        "<p>{} <strong>{}</strong></p>\n{}\n",
        lang.pick("ログイン中：", "Signed in as"),
        escape(&overview.online_id),
        action_form(
            "/customer/logout",
            csrf,
            lang,
            lang.pick("ログアウト", "Sign out")
        )
    );
    let report_label = lang.pick("身に覚えがない", "I did not authorise this");
    for view in &overview.accounts {
        body.push_str(&format!(
            "<section>\n<h2>{} — {}</h2>\n",
            account_line(lang, &view.account),
            yen(view.account.balance_yen)
        ));
        if view.legacy_locked {
            body.push_str(&format!(
                "<p>{} {}</p>\n",
                lang.pick(
                    "暗証番号などによる本人確認は停止中です。",
                    "The cash-card PIN method is locked."
                ),
                action_form(
                    &format!("/customer/accounts/{}/unlock-legacy", view.account.id),
                    csrf,
                    lang,
                    lang.pick(
                        "暗証番号による確認の停止を解除",
                        "Unlock cash-card PIN method"
                    ),
                )
            ));
        }
        body.push_str(&format!("<h3>{}</h3>\n", lang.pick("連携", "Links")));
        if view.links.is_empty() {
            body.push_str(&format!(
                "<p>{}</p>\n",
                lang.pick("連携はありません。", "No links.")
            ));
        } else {
            body.push_str(&format!(
                "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>\n",
                lang.pick("連携先", "Client"),
                lang.pick("内容", "Scope"),
                lang.pick("開始", "Since"),
                lang.pick("状態", "State"),
            ));
            for link in &view.links {
                let ended = link.link.ended_at_ms.is_some();
                let actions = if ended {
                    String::new()
                } else {
                    format!(
                        "{} {}",
                        action_form(
                            &format!("/customer/links/{}/revoke", link.link.id),
                            csrf,
                            lang,
                            lang.pick("解除", "Revoke"),
                        ),
                        action_form(
                            &format!("/customer/links/{}/report", link.link.id),
                            csrf,
                            lang,
                            report_label,
                        )
                    )
                };
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    escape(&link.client_name),
                    escape(&scope_label(lang, &link.link.scope)),
                    jst(link.link.created_at_ms),
                    link_state(lang, link.link.end_reason.as_deref(), ended),
                    actions
                ));
            }
            body.push_str("</table>\n");
        }
        body.push_str(&format!("<h3>{}</h3>\n", lang.pick("引き落とし", "Debits")));
        if view.debits.is_empty() {
            body.push_str(&format!(
                "<p>{}</p>\n",
                lang.pick("引き落としはありません。", "No debits.")
            ));
        } else {
            body.push_str("<table>\n");
            for debit in &view.debits {
                let status = match debit.status.as_str() {
                    "settled" => lang.pick("引き落とし済み", "settled"),
                    _ => lang.pick("残高不足でお断り", "rejected"),
                };
                let action = if debit.reported {
                    lang.pick("申告済み", "reported").to_owned()
                } else {
                    action_form(
                        &format!("/customer/debits/{}/report", debit.id),
                        csrf,
                        lang,
                        report_label,
                    )
                };
                body.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                    jst(debit.created_at_ms),
                    escape(&debit.client_name),
                    escape(&debit.description),
                    yen(debit.amount_yen),
                    status,
                    action
                ));
            }
            body.push_str("</table>\n");
        }
        body.push_str("</section>\n");
    }
    body.push_str(&format!(
        "<h2>{}</h2>\n<ul>\n",
        lang.pick("お知らせ", "Notices")
    ));
    for notice in &overview.notices {
        body.push_str(&format!(
            "<li>{} {}</li>\n",
            jst(notice.created_at_ms),
            escape(&notice.body)
        ));
    }
    body.push_str("</ul>\n");
    document(lang, lang.pick("お客さまのページ", "Your accounts"), &body)
}

/// `GET /customer`: accounts, links, debits and notices of the signed-in customer.
async fn customer_page(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<LangQuery>, QueryRejection>,
) -> Response {
    let lang = Lang::choose(
        query.ok().and_then(|Query(query)| query.lang).as_deref(),
        &headers,
    );
    let customer = match signed_in(&state, &headers).await {
        Ok(Some(customer)) => customer,
        Ok(None) => return Page::see_other(customer_login_url(lang)).into_response(),
        Err(()) => return failed(lang).into_response(),
    };
    let (csrf, cookie) = match csrf_token(&headers) {
        Ok(pair) => pair,
        Err(error) => return refused_page(lang, &error).into_response(),
    };
    let bank = Arc::clone(&state.bank);
    match blocking(move || bank.customer_overview(customer.customer_id())).await {
        Ok(Ok(overview)) => Page::html(StatusCode::OK, overview_html(lang, &overview, &csrf))
            .with_cookie(cookie)
            .into_response(),
        Ok(Err(error)) => {
            tracing::error!(error = %error, "the customer page failed");
            failed(lang).into_response()
        }
        Err(_) => failed(lang).into_response(),
    }
}

/// The customer's actions: CSRF, sign-in and an id in the path, then one bank function,
/// then back to the customer page.
async fn customer_action(
    state: HttpState,
    headers: HeaderMap,
    id: Result<Path<uuid::Uuid>, axum::extract::rejection::PathRejection>,
    form: Result<Form<ActionForm>, FormRejection>,
    action: impl FnOnce(&crate::Bank, uuid::Uuid, uuid::Uuid, i64) -> Result<(), OAuthError>
    + Send
    + 'static,
) -> Response {
    let form = form.ok().map(|Form(form)| form);
    let lang = Lang::choose(
        form.as_ref().and_then(|form| form.lang.as_deref()),
        &headers,
    );
    if !csrf_valid(&headers, form.and_then(|form| form.csrf_token).as_deref()) {
        return csrf_refused(lang).into_response();
    }
    let customer = match signed_in(&state, &headers).await {
        Ok(Some(customer)) => customer,
        Ok(None) => return Page::see_other(customer_login_url(lang)).into_response(),
        Err(()) => return failed(lang).into_response(),
    };
    let Ok(Path(id)) = id else {
        return refused_page(lang, &OAuthError::LinkNotFound).into_response();
    };
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    match blocking(move || action(&bank, customer.customer_id(), id, now_ms)).await {
        Ok(Ok(())) => Page::see_other(customer_url(lang)).into_response(),
        Ok(Err(error)) => refused_page(lang, &error).into_response(),
        Err(_) => failed(lang).into_response(),
    }
}

type IdPath = Result<Path<uuid::Uuid>, axum::extract::rejection::PathRejection>;

/// `POST /customer/links/{id}/revoke`.
async fn revoke_link(
    State(state): State<HttpState>,
    headers: HeaderMap,
    id: IdPath,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    customer_action(state, headers, id, form, |bank, customer, id, now_ms| {
        bank.revoke_link_by_customer(customer, id, now_ms)
    })
    .await
}

/// `POST /customer/links/{id}/report`.
async fn report_link(
    State(state): State<HttpState>,
    headers: HeaderMap,
    id: IdPath,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    customer_action(state, headers, id, form, |bank, customer, id, now_ms| {
        bank.report_fraud(customer, FraudReport::Link(id), now_ms)
    })
    .await
}

/// `POST /customer/debits/{id}/report`.
async fn report_debit(
    State(state): State<HttpState>,
    headers: HeaderMap,
    id: IdPath,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    customer_action(state, headers, id, form, |bank, customer, id, now_ms| {
        bank.report_fraud(customer, FraudReport::Debit(id), now_ms)
    })
    .await
}

/// `POST /customer/accounts/{id}/unlock-legacy`.
async fn unlock_legacy(
    State(state): State<HttpState>,
    headers: HeaderMap,
    id: IdPath,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    customer_action(state, headers, id, form, |bank, customer, id, now_ms| {
        bank.lift_legacy_lock(customer, id, now_ms)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn amounts_and_times_read_as_customers_expect() {
        assert_eq!(yen(1_234), "¥1,234");
        assert_eq!(yen(1_234_567), "¥1,234,567");
        assert_eq!(yen(0), "¥0");
        // 2026-11-24 17:45 UTC is 2026-11-25 02:45 in Japan.
        assert_eq!(jst(1_795_542_300_000), "2026-11-25 02:45");
        assert_eq!(jst(0), "1970-01-01 09:00");
    }

    #[test]
    fn english_only_when_asked() {
        let mut headers = HeaderMap::new();
        assert_eq!(Lang::choose(None, &headers), Lang::Ja);
        assert_eq!(Lang::choose(Some("en"), &headers), Lang::En);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("en-US,en;q=0.9,ja;q=0.8"),
        );
        assert_eq!(Lang::choose(None, &headers), Lang::En);
        assert_eq!(Lang::choose(Some("ja"), &headers), Lang::Ja);
        headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("ja,en;q=0.5"),
        );
        assert_eq!(Lang::choose(None, &headers), Lang::Ja);
    }
}
