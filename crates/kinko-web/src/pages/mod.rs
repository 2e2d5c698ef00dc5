//! The pages: server-rendered HTML for people in a browser, Japanese first and English.
//!
//! The shape follows Kanidm's view layer: one module per area (`account` for signing up and in,
//! `wallet` for the wallet), askama templates beside them (`templates/`, compile-checked and
//! auto-escaping), security headers as a layer on this router only. A handler parses the form,
//! calls the same service function the API calls, and renders the result; there is no second
//! code path and no SQL here. Nothing needs JavaScript and nothing comes from a CDN.
//!
//! Sessions are the API's: the HttpOnly `kinko_session` cookie (SameSite=Strict). The session's
//! CSRF token, which the store keeps only hashed, rides in a second HttpOnly cookie so a page
//! can put it in its forms; every state-changing form carries it and the handler checks it
//! against the session's hash. Forms before sign-in carry a random token that must equal
//! their own cookie (double submit). Money forms carry an idempotency key made when the form
//! was drawn, so sending a form twice is one movement.

pub mod account;
pub mod compensation;
pub mod console;
pub mod console_audit;
pub mod history;
pub mod i18n;
pub mod pay;
pub mod security;
mod texts;
pub mod wallet;
pub mod withdraw;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use kinko_identity::service::IdentityService;
use kinko_identity::session::SessionInfo;
use rand::RngCore;
use serde::Deserialize;

pub use i18n::Lang;

use crate::AppState;
use crate::api::identity::SESSION_COOKIE;
use crate::problem::Problem;

/// The cookie that holds the session's CSRF token for the page's forms (HttpOnly).
pub const CSRF_COOKIE: &str = "kinko_csrf";
/// The cookie of the forms shown before sign-in (double submit).
pub const PRE_CSRF_COOKIE: &str = "kinko_form";
/// The device token of this browser (long-lived): a known device at the next sign-in.
pub const DEVICE_COOKIE: &str = "kinko_device";
/// The language the switch chose.
pub const LANG_COOKIE: &str = "kinko_lang";
/// A device cookie lives a year; the device is still revocable from the security page.
const DEVICE_COOKIE_MAX_AGE_S: i64 = 365 * 24 * 3_600;

/// The policy of every page: nothing but this origin's stylesheet and inline images (QR codes
/// are inline SVG), no script at all, forms only to this origin, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("static/kinko.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/kinko.css", get(stylesheet))
        .route("/lang/{code}", get(switch_language))
        .merge(account::router())
        .merge(console::router())
        .merge(console_audit::router())
        .merge(wallet::router())
        .merge(pay::router())
        .merge(history::router())
        .merge(withdraw::router())
        .merge(compensation::router())
        .merge(security::router())
        .layer(middleware::map_response(security_headers))
}

/// What every page's frame needs: its language, the CSRF token for its forms, whether someone
/// is signed in (the navigation), where the language switch leads back to, and a message.
pub struct Frame {
    pub lang: Lang,
    pub csrf: String,
    pub signed_in: bool,
    /// `/lang/en?next=…` for this page.
    pub switch_href: String,
    pub error: Option<String>,
    pub notice: Option<String>,
}

impl Frame {
    pub fn new(lang: Lang, csrf: &str, signed_in: bool, path: &str) -> Self {
        Self {
            lang,
            csrf: csrf.to_owned(),
            signed_in,
            switch_href: format!("/lang/{}?next={}", lang.other().code(), encode(path)),
            error: None,
            notice: None,
        }
    }

    pub fn t(&self, key: &str) -> &'static str {
        self.lang.t(key)
    }

    pub fn with_error(mut self, code: &str) -> Self {
        self.error = Some(self.lang.error(code));
        self
    }

    pub fn with_notice(mut self, key: &str) -> Self {
        self.notice = Some(self.lang.t(key).to_owned());
        self
    }
}

/// `¥1,234`.
pub fn yen(amount_yen: i64) -> String {
    kinko_core::Money::yen(amount_yen).to_string()
}

/// Parses an amount as people type it: `1000`, `1,000`, `¥1,000`, full-width digits.
pub fn parse_yen(text: &str) -> Option<i64> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | '，' | '¥' | '￥' | ' ' | '円'))
        .map(|c| match c {
            '０'..='９' => {
                char::from_u32(u32::from(c) - u32::from('０') + u32::from('0')).unwrap_or(c)
            }
            other => other,
        })
        .collect();
    if digits.is_empty() || digits.len() > 12 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().filter(|amount| *amount > 0)
}

/// Percent-encodes a path for a query parameter (`/` kept).
fn encode(text: &str) -> String {
    percent_encode(text, b"-_./")
}

/// Percent-encodes a query parameter's value.
pub fn encode_component(text: &str) -> String {
    percent_encode(text, b"-_.~")
}

fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A local path to go back to: starts with one `/`, never `//` or `/\` (another site).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && path.len() <= 200 =>
        {
            path
        }
        _ => "/",
    }
}

/// 128 random bits, hex: a form token or an idempotency key.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty() && value.len() <= 256)
}

/// A `Set-Cookie` value: always HttpOnly, Secure (browsers accept it on `http://localhost`),
/// SameSite=Strict, whole site. `max_age_s` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, max_age_s: i64) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!("{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}"),
    )
}

/// The cookies of a new or rotated session (appended: one `Set-Cookie` each).
pub fn session_cookies(
    session: &kinko_identity::session::NewSession,
) -> AppendHeaders<Vec<(header::HeaderName, String)>> {
    use secrecy::ExposeSecret;
    let lifetime_s = kinko_identity::session::SESSION_ABSOLUTE_LIFETIME_MS / 1_000;
    let mut cookies = vec![
        set_cookie(SESSION_COOKIE, session.token.expose_secret(), lifetime_s),
        set_cookie(CSRF_COOKIE, session.csrf_token.expose_secret(), lifetime_s),
    ];
    if let Some(device) = &session.device_token {
        cookies.push(set_cookie(
            DEVICE_COOKIE,
            device.expose_secret(),
            DEVICE_COOKIE_MAX_AGE_S,
        ));
    }
    AppendHeaders(cookies)
}

/// Renders a template with a status; a template that fails to render is logged and answered
/// with a plain 500.
pub fn render<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(error = %error, "rendering a page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
        }
    }
}

/// The HTTP status a page answers for a failed service call.
pub fn status_of(problem: &Problem) -> StatusCode {
    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Runs a blocking service call (argon2, SQL, the bank) off the async workers; the error is
/// the API's problem, whose stable code the page turns into a sentence.
pub async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Problem>
where
    T: Send + 'static,
    E: Into<Problem> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(error) => {
            tracing::error!(error = %error, "a page's task failed");
            Err(Problem::internal())
        }
    }
}

impl FromRequestParts<AppState> for Lang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let chosen = cookie(&parts.headers, LANG_COOKIE).and_then(|code| Lang::parse(&code));
        let accepted = || {
            parts
                .headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|value| value.to_str().ok())
                .and_then(Lang::from_accept_language)
        };
        Ok(chosen.or_else(accepted).unwrap_or(Lang::Ja))
    }
}

/// A signed-in page: the session (checked against the store) and its CSRF token for forms.
/// Without a valid session the browser goes to the sign-in page.
pub struct PageSession {
    pub session: SessionInfo,
    pub csrf: String,
    pub lang: Lang,
}

impl PageSession {
    pub fn frame(&self, path: &str) -> Frame {
        Frame::new(self.lang, &self.csrf, true, path)
    }

    /// Checks a form's CSRF token against the session's (constant time, in the store's hash).
    pub fn check_csrf(&self, presented: &str) -> Result<(), Problem> {
        self.session
            .check_csrf(presented)
            .map_err(|error| Problem::from(kinko_identity::service::IdentityError::from(error)))
    }
}

impl FromRequestParts<AppState> for PageSession {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let lang = Lang::from_request_parts(parts, state)
            .await
            .unwrap_or(Lang::Ja);
        let to_sign_in = || Redirect::to("/signin").into_response();
        let (Some(token), Some(csrf)) = (
            cookie(&parts.headers, SESSION_COOKIE),
            cookie(&parts.headers, CSRF_COOKIE),
        ) else {
            return Err(to_sign_in());
        };
        let identity: Arc<IdentityService> = Arc::clone(&state.identity);
        match blocking(move || identity.authenticate(&token)).await {
            Ok(session) => Ok(PageSession {
                session,
                csrf,
                lang,
            }),
            Err(problem) if problem.status == 401 => Err(to_sign_in()),
            Err(problem) => Err(error_page(lang, "", &problem)),
        }
    }
}

/// The pre-sign-in form token: the one in the cookie, or a new one to set.
pub struct FormToken {
    pub value: String,
    pub is_new: bool,
}

impl FormToken {
    pub fn of(headers: &HeaderMap) -> Self {
        match cookie(headers, PRE_CSRF_COOKIE) {
            Some(value) => Self {
                value,
                is_new: false,
            },
            None => Self {
                value: random_token(),
                is_new: true,
            },
        }
    }

    /// A form before sign-in must carry the token of its own cookie.
    pub fn check(headers: &HeaderMap, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        cookie(headers, PRE_CSRF_COOKIE)
            .is_some_and(|value| bool::from(value.as_bytes().ct_eq(presented.as_bytes())))
    }

    /// Adds the cookie to a response when it is new.
    pub fn attach(&self, response: Response) -> Response {
        if self.is_new {
            ([set_cookie(PRE_CSRF_COOKIE, &self.value, 3_600)], response).into_response()
        } else {
            response
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub page: Frame,
    pub message: String,
}

/// A page that says what went wrong, in the page's language, with the problem's status.
pub fn error_page(lang: Lang, csrf: &str, problem: &Problem) -> Response {
    let page = Frame::new(lang, csrf, !csrf.is_empty(), "/");
    let message = lang.error(problem.code);
    render(status_of(problem), &ErrorPage { page, message })
}

/// The answer to a form whose CSRF token does not match: nothing was done.
pub fn csrf_refused(lang: Lang, csrf: &str) -> Response {
    let page = Frame::new(lang, csrf, !csrf.is_empty(), "/");
    let message = lang.t("error.csrf").to_owned();
    render(StatusCode::FORBIDDEN, &ErrorPage { page, message })
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The bank's code and state come back in a query string: never pass it on.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// The language switch: remembers the choice for a year and goes back to the page.
async fn switch_language(Path(code): Path<String>, Query(query): Query<NextQuery>) -> Response {
    let Some(lang) = Lang::parse(&code) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let next = local_path(query.next.as_deref()).to_owned();
    (
        [(
            header::SET_COOKIE,
            format!(
                "{LANG_COOKIE}={}; Path=/; Secure; SameSite=Lax; Max-Age=31536000",
                lang.code()
            ),
        )],
        Redirect::to(&next),
    )
        .into_response()
}

/// `/`: a browser goes to its wallet (or the sign-in page); anything else gets the JSON index.
pub async fn root(state: State<AppState>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        return Redirect::to("/wallet").into_response();
    }
    Json(serde_json::json!({
        "name": "Kinko (金庫)",
        "store": state.store_kind,
        "links": { "wallet": "/wallet", "health": "/healthz", "metrics": "/metrics" },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_as_people_type_them() {
        assert_eq!(parse_yen("1000"), Some(1_000));
        assert_eq!(parse_yen(" ¥45,000 "), Some(45_000));
        assert_eq!(parse_yen("１２３円"), Some(123));
        assert_eq!(parse_yen("0"), None);
        assert_eq!(parse_yen("-5"), None);
        assert_eq!(parse_yen("1.5"), None);
        assert_eq!(parse_yen("9999999999999"), None);
        assert_eq!(yen(1_234), "¥1,234");
    }

    #[test]
    fn the_switch_goes_back_only_to_this_site() {
        assert_eq!(local_path(Some("/wallet?x=1")), "/wallet?x=1");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(None), "/");
        assert_eq!(
            encode("/wallet/history?kind=charge"),
            "/wallet/history%3Fkind%3Dcharge"
        );
    }
}
