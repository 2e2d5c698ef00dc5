//! The bank's pages over real HTTP (a server on port 0, a plain HTTP client with a cookie
//! jar, as Kinko's end-to-end tests walk them), on both stores: PAR → login form → sign-in →
//! consent → redirect with a code that exchanges; deny → `access_denied`; every form refused
//! without its CSRF token; English on request; the customer page's revoke, reports and
//! legacy unlock, each with its effect and its event.

mod common;

use std::sync::Arc;

use kinko_bank_sandbox::client_auth;
use kinko_bank_sandbox::http::{HttpState, router};
use kinko_bank_sandbox::jws;
use kinko_bank_sandbox::oauth;
use kinko_bank_sandbox::payments::PaymentRequest;
use kinko_bank_sandbox::{Bank, dpop, pkce, store};
use kinko_banking::client::query_encode;
use kinko_core::ManualClock;
use kinko_store::sql::{Tx, Value};
use p256::ecdsa::SigningKey;

const T0_MS: u64 = 1_790_000_000_000;
use common::REDIRECT_URI;

struct Server {
    bank: Arc<Bank>,
    clock: ManualClock,
    issuer: String,
    client_key: SigningKey,
    customers: Vec<store::DemoCustomer>,
    agent: ureq::Agent,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: kinko_store::testing::Scratch,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn server(backend: &str) -> Server {
    let (location, dir) = kinko_store::testing::location(backend);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|error| panic!("{error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let issuer = format!("http://{address}");
    let bank = Arc::new(Bank::open(&location, &issuer).unwrap_or_else(|error| panic!("{error}")));
    let customers = store::seed(bank.database(), 0).unwrap_or_else(|error| panic!("{error}"));
    let client_key = common::registered(&bank, "kinko", "Kinko <ウォレット>");
    let clock = ManualClock::new(T0_MS * 1_000_000);
    let app = router(HttpState {
        bank: Arc::clone(&bank),
        clock: Arc::new(clock.clone()),
    });
    runtime.spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            panic!("{error}");
        }
    });
    Server {
        bank,
        clock,
        issuer,
        client_key,
        customers,
        agent: ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into(),
        runtime: Some(runtime),
        _dir: dir,
    }
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    the_page_flow_yields_a_code_that_exchanges,
    deny_sends_the_browser_back_with_access_denied,
    every_form_is_refused_without_its_csrf_token,
    pages_are_japanese_unless_english_is_asked_for,
    the_customer_page_revokes_reports_and_unlocks,
);

fn now_ms(server: &Server) -> i64 {
    i64::try_from(kinko_core::Clock::now_ms(&server.clock))
        .unwrap_or_else(|error| panic!("{error}"))
}

struct Answer {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

/// A browser: cookies kept from `Set-Cookie`, sent back as `Cookie`.
#[derive(Default)]
struct Browser {
    cookies: Vec<(String, String)>,
    accept_language: Option<String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, response: &mut ureq::http::Response<ureq::Body>) -> Answer {
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::to_owned)
            .collect();
        for cookie in &set_cookies {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(kept, _)| kept != name);
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        Answer {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            set_cookies,
            body: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    fn get(&mut self, server: &Server, path: &str) -> Answer {
        let mut request = server
            .agent
            .get(&format!("{}{path}", server.issuer))
            .header("Cookie", &self.cookie_header());
        if let Some(language) = &self.accept_language {
            request = request.header("Accept-Language", language);
        }
        let mut response = request.call().unwrap_or_else(|error| panic!("{error}"));
        self.keep(&mut response)
    }

    fn post(&mut self, server: &Server, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut response = server
            .agent
            .post(&format!("{}{path}", server.issuer))
            .header("Cookie", &self.cookie_header())
            .send_form(fields.iter().copied())
            .unwrap_or_else(|error| panic!("{error}"));
        self.keep(&mut response)
    }
}

/// The hidden CSRF input's value, found as Kinko's end-to-end tests find it.
fn csrf_of(html: &str) -> String {
    let marker = r#"<input type="hidden" name="csrf_token" value=""#;
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF input in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn assertion(server: &Server) -> String {
    client_auth::make_assertion(
        "kinko",
        &server.issuer,
        &server.client_key,
        now_ms(server),
        60_000,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// PAR over HTTP: the request_uri and the PKCE verifier.
fn push(server: &Server, customer: usize) -> (String, String) {
    let verifier = kinko_bank_sandbox::random::token().unwrap_or_else(|error| panic!("{error}"));
    let challenge = pkce::challenge_for(&verifier);
    let assertion = assertion(server);
    let mut response = server
        .agent
        .post(&format!("{}/oauth/par", server.issuer))
        .send_form([
            ("client_assertion_type", client_auth::ASSERTION_TYPE),
            ("client_assertion", &assertion),
            ("response_type", "code"),
            ("client_id", "kinko"),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "holder_match debits"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "st&te"),
            (
                "bank_code",
                &server.customers[customer].accounts[0].bank_code,
            ),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(response.status().as_u16(), 201);
    let answer: serde_json::Value = response
        .body_mut()
        .read_json()
        .unwrap_or_else(|error| panic!("{error}"));
    let request_uri = answer["request_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_uri"))
        .to_owned();
    (request_uri, verifier)
}

fn totp(server: &Server, customer: usize) -> String {
    oauth::totp_code(&server.customers[customer].totp_secret, now_ms(server))
        .unwrap_or_else(|| panic!("no TOTP"))
}

fn account_id(server: &Server, customer: usize) -> uuid::Uuid {
    let demo = &server.customers[customer];
    server
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            let id =
                store::customer_id(tx, &demo.online_id)?.unwrap_or_else(|| panic!("no customer"));
            store::accounts_of(tx, id)
        })
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .find(|account| account.bank_code == demo.accounts[0].bank_code)
        .unwrap_or_else(|| panic!("no account"))
        .id
}

fn query_value(location: &str, name: &str) -> Option<String> {
    let query = location.split_once('?').map(|(_, query)| query)?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    pairs
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// Walks login and consent to the consent form: the browser, the consent page's HTML.
fn signed_in_to_consent(server: &Server, customer: usize, request_uri: &str) -> (Browser, Answer) {
    let mut browser = Browser::default();
    let authorize = format!(
        "/oauth/authorize?client_id=kinko&request_uri={}",
        query_encode(request_uri)
    );
    let login = browser.get(server, &authorize);
    assert_eq!(login.status, 200, "{}", login.body);
    let csrf = csrf_of(&login.body);
    let demo = &server.customers[customer];
    let code = totp(server, customer);
    let signed_in = browser.post(
        server,
        "/oauth/authorize/login",
        &[
            ("csrf_token", &csrf),
            ("client_id", "kinko"),
            ("request_uri", request_uri),
            ("online_id", &demo.online_id),
            ("password", &demo.password),
            ("totp_code", &code),
        ],
    );
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let session = signed_in
        .set_cookies
        .iter()
        .find(|cookie| cookie.starts_with("bank_session="))
        .unwrap_or_else(|| panic!("no session cookie"));
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{session}");
    }
    let back = signed_in.location.unwrap_or_default();
    assert_eq!(back, authorize);
    let consent = browser.get(server, &back);
    assert_eq!(consent.status, 200, "{}", consent.body);
    (browser, consent)
}

fn the_page_flow_yields_a_code_that_exchanges(backend: &str) {
    let server = server(backend);
    let (request_uri, verifier) = push(&server, 0);
    let (mut browser, consent) = signed_in_to_consent(&server, 0, &request_uri);
    // The consent page names the client (escaped), the scope, and the accounts to choose.
    assert!(
        consent.body.contains("Kinko &lt;ウォレット&gt;"),
        "{}",
        consent.body
    );
    assert!(!consent.body.contains("Kinko <ウォレット>"));
    assert!(consent.body.contains("口座名義の確認"));
    let account = account_id(&server, 0).to_string();
    assert!(
        consent
            .body
            .contains(&format!(r#"name="account_id" value="{account}""#))
    );
    // The customer's account at another bank code is not offered.
    let elsewhere = server
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            let id = store::customer_id(tx, &server.customers[0].online_id)?
                .unwrap_or_else(|| panic!("no customer"));
            store::accounts_of(tx, id)
        })
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .find(|candidate| candidate.bank_code != server.customers[0].accounts[0].bank_code)
        .unwrap_or_else(|| panic!("no second account"));
    assert!(!consent.body.contains(&elsewhere.id.to_string()));

    let csrf = csrf_of(&consent.body);
    let approved = browser.post(
        &server,
        "/oauth/authorize/consent",
        &[
            ("csrf_token", &csrf),
            ("client_id", "kinko"),
            ("request_uri", &request_uri),
            ("account_id", &account),
            ("decision", "approve"),
        ],
    );
    assert_eq!(approved.status, 303, "{}", approved.body);
    let location = approved.location.unwrap_or_default();
    assert!(
        location.starts_with(&format!("{REDIRECT_URI}?")),
        "{location}"
    );
    assert_eq!(query_value(&location, "state").as_deref(), Some("st&te"));
    assert_eq!(query_value(&location, "iss"), Some(server.issuer.clone()));
    let code = query_value(&location, "code").unwrap_or_else(|| panic!("no code in {location}"));

    // The code exchanges at the token endpoint, over HTTP, for a link.
    let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let token_url = format!("{}/oauth/token", server.issuer);
    let proof = dpop::make_proof(&key, "POST", &token_url, None, now_ms(&server))
        .unwrap_or_else(|error| panic!("{error}"));
    let assertion = assertion(&server);
    let mut response = server
        .agent
        .post(&token_url)
        .header("DPoP", &proof)
        .send_form([
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", &verifier),
            ("client_assertion_type", client_auth::ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status().as_u16();
    let tokens: serde_json::Value = response
        .body_mut()
        .read_json()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "DPoP");
    assert!(tokens["refresh_token"].is_string());
    assert!(tokens["link_id"].is_string());
    assert!(tokens["account_ref"].is_string());

    // The refresh grant over HTTP, by the same key.
    let proof = dpop::make_proof(&key, "POST", &token_url, None, now_ms(&server))
        .unwrap_or_else(|error| panic!("{error}"));
    let assertion = self::assertion(&server);
    let mut response = server
        .agent
        .post(&token_url)
        .header("DPoP", &proof)
        .send_form([
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                tokens["refresh_token"].as_str().unwrap_or_default(),
            ),
            ("client_assertion_type", client_auth::ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status().as_u16();
    let refreshed: serde_json::Value = response
        .body_mut()
        .read_json()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(refreshed["link_id"], tokens["link_id"]);
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);

    // The metadata names the new endpoints.
    let mut response = server
        .agent
        .get(&format!(
            "{}/.well-known/oauth-authorization-server",
            server.issuer
        ))
        .call()
        .unwrap_or_else(|error| panic!("{error}"));
    let metadata: serde_json::Value = response
        .body_mut()
        .read_json()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        metadata["revocation_endpoint"],
        format!("{}/oauth/revoke", server.issuer)
    );
    assert_eq!(
        metadata["jwks_uri"],
        format!("{}/.well-known/jwks.json", server.issuer)
    );
    assert_eq!(
        metadata["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
}

fn deny_sends_the_browser_back_with_access_denied(backend: &str) {
    let server = server(backend);
    let (request_uri, _) = push(&server, 0);
    let (mut browser, consent) = signed_in_to_consent(&server, 0, &request_uri);
    let csrf = csrf_of(&consent.body);
    let denied = browser.post(
        &server,
        "/oauth/authorize/consent",
        &[
            ("csrf_token", &csrf),
            ("client_id", "kinko"),
            ("request_uri", &request_uri),
            ("decision", "deny"),
        ],
    );
    assert_eq!(denied.status, 303, "{}", denied.body);
    let location = denied.location.unwrap_or_default();
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    assert_eq!(
        query_value(&location, "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(query_value(&location, "state").as_deref(), Some("st&te"));
    assert_eq!(query_value(&location, "iss"), Some(server.issuer.clone()));
    assert_eq!(query_value(&location, "code"), None);
    // The request is spent: approving it now is refused.
    let account = account_id(&server, 0).to_string();
    let late = browser.post(
        &server,
        "/oauth/authorize/consent",
        &[
            ("csrf_token", &csrf),
            ("client_id", "kinko"),
            ("request_uri", &request_uri),
            ("account_id", &account),
            ("decision", "approve"),
        ],
    );
    assert_eq!(late.status, 400, "{}", late.body);
    assert!(late.body.contains("BANK_OAUTH_REQUEST_URI_INVALID"));
}

fn every_form_is_refused_without_its_csrf_token(backend: &str) {
    let server = server(backend);
    let (request_uri, _) = push(&server, 0);
    let mut browser = Browser::default();
    let login = browser.get(
        &server,
        &format!(
            "/oauth/authorize?client_id=kinko&request_uri={}",
            query_encode(&request_uri)
        ),
    );
    let csrf = csrf_of(&login.body);
    let demo = &server.customers[0];
    let code = totp(&server, 0);
    let fields = |token: Option<&str>| {
        let mut fields = vec![
            ("client_id", "kinko".to_owned()),
            ("request_uri", request_uri.clone()),
            ("online_id", demo.online_id.clone()),
            ("password", demo.password.clone()),
            ("totp_code", code.clone()),
        ];
        if let Some(token) = token {
            fields.push(("csrf_token", token.to_owned()));
        }
        fields
    };
    let post = |browser: &mut Browser, fields: &[(&str, String)]| {
        let borrowed: Vec<(&str, &str)> = fields
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        browser.post(&server, "/oauth/authorize/login", &borrowed)
    };
    // No token, a wrong token, and the right token from a browser without the cookie.
    let missing = post(&mut browser, &fields(None));
    assert_eq!(missing.status, 403, "{}", missing.body);
    assert!(missing.body.contains("BANK_CSRF_INVALID"));
    let wrong = post(&mut browser, &fields(Some(&"x".repeat(43))));
    assert_eq!(wrong.status, 403);
    let mut cookieless = Browser::default();
    let stolen = post(&mut cookieless, &fields(Some(&csrf)));
    assert_eq!(stolen.status, 403);
    assert!(
        stolen
            .set_cookies
            .iter()
            .all(|cookie| !cookie.starts_with("bank_session="))
    );
    // None of it signed anyone in or spent the one-time code: the real form still works.
    let signed_in = post(&mut browser, &fields(Some(&csrf)));
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);

    // Consent and the customer's own actions are refused without it too.
    let account = account_id(&server, 0).to_string();
    let consent = browser.post(
        &server,
        "/oauth/authorize/consent",
        &[
            ("client_id", "kinko"),
            ("request_uri", &request_uri),
            ("account_id", &account),
            ("decision", "approve"),
        ],
    );
    assert_eq!(consent.status, 403);
    let revoke = browser.post(
        &server,
        &format!("/customer/links/{}/revoke", uuid::Uuid::now_v7()),
        &[("csrf_token", "forged")],
    );
    assert_eq!(revoke.status, 403);
    let login = Browser::default().post(
        &server,
        "/customer/login",
        &[
            ("online_id", &demo.online_id),
            ("password", &demo.password),
            ("totp_code", &code),
        ],
    );
    assert_eq!(login.status, 403);
}

fn pages_are_japanese_unless_english_is_asked_for(backend: &str) {
    let server = server(backend);
    let mut browser = Browser::default();
    let japanese = browser.get(&server, "/customer/login");
    assert_eq!(japanese.status, 200);
    assert!(japanese.body.contains(r#"<html lang="ja">"#));
    assert!(japanese.body.contains("ログイン"));
    let csrf_cookie = japanese
        .set_cookies
        .iter()
        .find(|cookie| cookie.starts_with("bank_csrf="))
        .unwrap_or_else(|| panic!("no CSRF cookie"));
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(csrf_cookie.contains(attribute), "{csrf_cookie}");
    }
    let english = browser.get(&server, "/customer/login?lang=en");
    assert!(english.body.contains(r#"<html lang="en">"#));
    assert!(english.body.contains("Sign in"));
    assert!(english.body.contains(r#"name="lang" value="en""#));
    let mut american = Browser {
        accept_language: Some("en-US,en;q=0.9".to_owned()),
        ..Browser::default()
    };
    let (request_uri, _) = push(&server, 0);
    let login = american.get(
        &server,
        &format!(
            "/oauth/authorize?client_id=kinko&request_uri={}",
            query_encode(&request_uri)
        ),
    );
    assert!(login.body.contains(r#"<html lang="en">"#), "{}", login.body);
    assert!(login.body.contains("asks to link your account"));
    // A request that skipped PAR is a protocol error, not a page.
    let no_par = browser.get(
        &server,
        "/oauth/authorize?client_id=kinko&response_type=code",
    );
    assert_eq!(no_par.status, 400);
    assert!(no_par.body.contains("BANK_OAUTH_PAR_REQUIRED"));
}

/// Customer 0 links their account to Kinko by the Bank functions and Kinko debits ¥1,200
/// under `payment_key`.
fn linked_with_a_debit(server: &Server, payment_key: &str) -> (uuid::Uuid, uuid::Uuid) {
    let (request_uri, verifier) = push(server, 0);
    let demo = &server.customers[0];
    let customer = server
        .bank
        .authenticate_customer(
            &demo.online_id,
            &secrecy::SecretString::from(demo.password.clone()),
            &totp(server, 0),
            now_ms(server),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let response = server
        .bank
        .authorize(
            "kinko",
            Some(&request_uri),
            &customer,
            account_id(server, 0),
            now_ms(server),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let proof = dpop::make_proof(
        &key,
        "POST",
        &server.bank.token_endpoint(),
        None,
        now_ms(server),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let tokens = server
        .bank
        .exchange_code(
            &oauth::TokenRequest {
                grant_type: "authorization_code".to_owned(),
                code: response.code,
                redirect_uri: REDIRECT_URI.to_owned(),
                code_verifier: Some(verifier),
                client_assertion_type: client_auth::ASSERTION_TYPE.to_owned(),
                client_assertion: assertion(server),
            },
            Some(&proof),
            now_ms(server),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let url = format!("{}/v1/debits", server.issuer);
    let proof = dpop::make_proof(
        &key,
        "POST",
        &url,
        Some(&tokens.access_token),
        now_ms(server),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let grant = server
        .bank
        .authorize_resource(
            &tokens.access_token,
            Some(&proof),
            "POST",
            &url,
            now_ms(server),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let payment = server
        .bank
        .debit(
            &grant,
            payment_key,
            &PaymentRequest {
                amount_yen: 1_200,
                description: "チャージ <1>".to_owned(),
                not_after_ms: None,
            },
            now_ms(server),
        )
        .unwrap_or_else(|error| panic!("{error}"));
    (tokens.link_id, payment.id)
}

fn the_customer_page_revokes_reports_and_unlocks(backend: &str) {
    let server = server(backend);
    let (first_link, _) = linked_with_a_debit(&server, "charge-1");
    server.clock.advance_ms(30_000);
    let (second_link, payment_id) = linked_with_a_debit(&server, "charge-2");
    server.clock.advance_ms(30_000);
    // The legacy verify method is locked on the account.
    let account = account_id(&server, 0);
    server
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "INSERT INTO bank_legacy_locks (account_id, failures, locked_at_ms)
                 VALUES ($1, 5, $2)",
                &[Value::Uuid(account.as_u128()), 1_i64.into()],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));

    let mut browser = Browser::default();
    // Not signed in: the customer page sends the browser to the login.
    let away = browser.get(&server, "/customer");
    assert_eq!(away.status, 303);
    assert_eq!(away.location.as_deref(), Some("/customer/login"));
    let login = browser.get(&server, "/customer/login");
    let csrf = csrf_of(&login.body);
    let demo = &server.customers[0];
    let failed = browser.post(
        &server,
        "/customer/login",
        &[
            ("csrf_token", &csrf),
            ("online_id", &demo.online_id),
            ("password", "wrong-password-here"),
            ("totp_code", &totp(&server, 0)),
        ],
    );
    assert_eq!(failed.status, 401);
    let signed_in = browser.post(
        &server,
        "/customer/login",
        &[
            ("csrf_token", &csrf),
            ("online_id", &demo.online_id),
            ("password", &demo.password),
            ("totp_code", &totp(&server, 0)),
        ],
    );
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    assert_eq!(signed_in.location.as_deref(), Some("/customer"));

    let page = browser.get(&server, "/customer");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Kinko &lt;ウォレット&gt;"));
    assert!(page.body.contains("¥1,200"));
    assert!(page.body.contains("チャージ &lt;1&gt;"));
    for action in [
        format!("/customer/links/{first_link}/revoke"),
        format!("/customer/links/{first_link}/report"),
        format!("/customer/debits/{payment_id}/report"),
        format!("/customer/accounts/{account}/unlock-legacy"),
    ] {
        assert!(page.body.contains(&action), "no {action} in {}", page.body);
    }
    let csrf = csrf_of(&page.body);

    let revoked = browser.post(
        &server,
        &format!("/customer/links/{first_link}/revoke"),
        &[("csrf_token", &csrf)],
    );
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    assert_eq!(revoked.location.as_deref(), Some("/customer"));
    let reported = browser.post(
        &server,
        &format!("/customer/debits/{payment_id}/report"),
        &[("csrf_token", &csrf)],
    );
    assert_eq!(reported.status, 303, "{}", reported.body);
    let unlocked = browser.post(
        &server,
        &format!("/customer/accounts/{account}/unlock-legacy"),
        &[("csrf_token", &csrf)],
    );
    assert_eq!(unlocked.status, 303, "{}", unlocked.body);
    // Someone else's (or no such) link: 404, nothing happens.
    let unknown = browser.post(
        &server,
        &format!("/customer/links/{}/report", uuid::Uuid::now_v7()),
        &[("csrf_token", &csrf)],
    );
    assert_eq!(unknown.status, 404);

    let events: Vec<(String, uuid::Uuid, Option<String>)> = server
        .bank
        .outbox()
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .map(|event| {
            let claims =
                jws::unverified_claims(&event.jws).unwrap_or_else(|error| panic!("{error}"));
            (
                event.event.clone(),
                event.link_id,
                claims
                    .get("payment_key")
                    .and_then(|key| key.as_str())
                    .map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("link.revoked".to_owned(), first_link, None),
            (
                "fraud.reported".to_owned(),
                second_link,
                Some("charge-2".to_owned())
            ),
        ]
    );
    let locked = server
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            tx.query_one(
                "SELECT locked_at_ms FROM bank_legacy_locks WHERE account_id = $1",
                &[Value::Uuid(account.as_u128())],
            )?
            .opt_int(0)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(locked, None);
    // The page now shows both links ended, the debit reported, the lock gone, and notices.
    let page = browser.get(&server, "/customer?lang=en");
    assert!(page.body.contains("revoked by you"), "{}", page.body);
    assert!(page.body.contains("stopped (reported)"));
    assert!(page.body.contains(">reported<"));
    assert!(!page.body.contains("unlock-legacy"));
    assert!(!page.body.contains("/revoke\""));

    // Signing out ends the session.
    let csrf = csrf_of(&page.body);
    let out = browser.post(&server, "/customer/logout", &[("csrf_token", &csrf)]);
    assert_eq!(out.status, 303);
    assert_eq!(browser.get(&server, "/customer").status, 303);
}
