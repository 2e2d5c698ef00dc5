//! The sandbox bank over HTTP on both stores: metadata, PAR, the authorization endpoint's
//! refusal of a request without PAR, the login and consent pages (with their cookies and
//! CSRF tokens) → redirect with code, state and iss,
//! the token endpoint with `private_key_jwt` and DPoP, and a protected resource that refuses
//! a token without its DPoP proof. Also: a replayed code over HTTP, and malformed input
//! answered with JSON and a stable code.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kinko_bank_sandbox::client_auth::{self, ASSERTION_TYPE};
use kinko_bank_sandbox::http::{HttpState, router};
use kinko_bank_sandbox::jws;
use kinko_bank_sandbox::store::{self, DemoCustomer};
use kinko_bank_sandbox::{Bank, dpop, oauth, pkce};
use kinko_core::ManualClock;
use kinko_store::sql::Tx;
use p256::ecdsa::SigningKey;
use tower::ServiceExt as _;

const T0_MS: u64 = 1_790_000_000_000;
const ISSUER: &str = "https://bank.sandbox.test";
use common::REDIRECT_URI;

struct Fixture {
    bank: Arc<Bank>,
    clock: ManualClock,
    client_key: SigningKey,
    customer: DemoCustomer,
    account_id: uuid::Uuid,
    _dir: kinko_store::testing::Scratch,
}

fn fixture(backend: &str) -> Fixture {
    let (location, dir) = kinko_store::testing::location(backend);
    let bank = Bank::open(&location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let customers = store::seed(bank.database(), 0).unwrap_or_else(|error| panic!("{error}"));
    let client_key = common::registered(&bank, "kinko", "Kinko");
    let customer = customers[0].clone();
    let account_id = bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            let id = store::customer_id(tx, &customer.online_id)?
                .unwrap_or_else(|| panic!("no customer"));
            store::accounts_of(tx, id)
        })
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .find(|account| account.bank_code == customer.accounts[0].bank_code)
        .unwrap_or_else(|| panic!("no account"))
        .id;
    Fixture {
        bank: Arc::new(bank),
        clock: ManualClock::new(T0_MS * 1_000_000),
        client_key,
        customer,
        account_id,
        _dir: dir,
    }
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::run("sqlite", super::$name); })+ }
        mod postgres { $(#[test] fn $name() { super::run("postgres", super::$name); })+ }
    };
}

both!(
    the_flow_over_http,
    attacks_over_http_are_refused,
    the_drill_reads_every_balance
);

/// Builds the store outside the async runtime (the synchronous PostgreSQL client runs its
/// own) and drops it there too.
fn run<F: std::future::Future<Output = ()>>(backend: &str, test: fn(Arc<Fixture>) -> F) {
    let fixture = Arc::new(fixture(backend));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    runtime.block_on(test(Arc::clone(&fixture)));
    drop(runtime);
    drop(fixture);
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: serde_json::Value,
    body: String,
}

async fn send(fixture: &Fixture, request: Request<Body>) -> Answer {
    let app = router(HttpState {
        bank: Arc::clone(&fixture.bank),
        clock: Arc::new(fixture.clock.clone()),
    });
    let response = app
        .oneshot(request)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        headers,
        json,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A browser's cookies: what `Set-Cookie` said, sent back as `Cookie`.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn keep(&mut self, answer: &Answer) {
        for value in answer.headers.get_all(header::SET_COOKIE) {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.0.retain(|(kept, _)| kept != name);
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The value of the page's hidden CSRF input.
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

async fn page(fixture: &Fixture, jar: &mut Jar, path: &str) -> Answer {
    let answer = send(
        fixture,
        Request::get(path)
            .header(header::COOKIE, jar.header())
            .body(Body::empty())
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;
    jar.keep(&answer);
    answer
}

async fn submit(fixture: &Fixture, jar: &mut Jar, path: &str, fields: &[(&str, &str)]) -> Answer {
    let mut request = form(path, fields, None);
    if let Ok(value) = header::HeaderValue::from_str(&jar.header()) {
        request.headers_mut().insert(header::COOKIE, value);
    }
    let answer = send(fixture, request).await;
    jar.keep(&answer);
    answer
}

fn location(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    answer.headers[header::LOCATION]
        .to_str()
        .unwrap_or_else(|error| panic!("{error}"))
        .to_owned()
}

fn form(path: &str, fields: &[(&str, &str)], dpop: Option<&str>) -> Request<Body> {
    let body = serde_urlencoded::to_string(fields).unwrap_or_else(|error| panic!("{error}"));
    let mut builder =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(proof) = dpop {
        builder = builder.header("DPoP", proof);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|error| panic!("{error}"))
}

fn now_ms(fixture: &Fixture) -> i64 {
    i64::try_from(kinko_core::Clock::now_ms(&fixture.clock))
        .unwrap_or_else(|error| panic!("{error}"))
}

fn assertion(fixture: &Fixture) -> String {
    client_auth::make_assertion(
        "kinko",
        ISSUER,
        &fixture.client_key,
        now_ms(fixture),
        60_000,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// PAR, then login + consent: the code from the redirect, and the verifier.
async fn pushed_and_consented(fixture: &Fixture) -> (String, String) {
    let verifier = kinko_bank_sandbox::random::token().unwrap_or_else(|error| panic!("{error}"));
    let challenge = pkce::challenge_for(&verifier);
    let assertion = assertion(fixture);
    let pushed = send(
        fixture,
        form(
            "/oauth/par",
            &[
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
                ("response_type", "code"),
                ("client_id", "kinko"),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "holder_match"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
                ("state", "xyz 1"),
                ("bank_code", &fixture.customer.accounts[0].bank_code),
            ],
            None,
        ),
    )
    .await;
    assert_eq!(pushed.status, StatusCode::CREATED, "{}", pushed.json);
    let request_uri = pushed.json["request_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_uri"))
        .to_owned();

    // The bank's pages, as a browser walks them: login form, sign-in, consent form, approve.
    let mut jar = Jar::default();
    let authorize_path = format!(
        "/oauth/authorize?client_id=kinko&request_uri={}",
        kinko_banking::client::query_encode(&request_uri)
    );
    let login_page = page(fixture, &mut jar, &authorize_path).await;
    assert_eq!(login_page.status, StatusCode::OK, "{}", login_page.body);
    assert!(login_page.body.contains(r#"name="totp_code""#));
    let csrf = csrf_of(&login_page.body);
    let totp = oauth::totp_code(&fixture.customer.totp_secret, now_ms(fixture))
        .unwrap_or_else(|| panic!("no TOTP"));
    let signed_in = submit(
        fixture,
        &mut jar,
        "/oauth/authorize/login",
        &[
            ("csrf_token", &csrf),
            ("client_id", "kinko"),
            ("request_uri", &request_uri),
            ("online_id", &fixture.customer.online_id),
            ("password", &fixture.customer.password),
            ("totp_code", &totp),
        ],
    )
    .await;
    let back = location(&signed_in);
    let consent_page = page(fixture, &mut jar, &back).await;
    assert_eq!(consent_page.status, StatusCode::OK, "{}", consent_page.body);
    let account_id = fixture.account_id.to_string();
    assert!(
        consent_page
            .body
            .contains(&format!(r#"name="account_id" value="{account_id}""#)),
        "{}",
        consent_page.body
    );
    let csrf = csrf_of(&consent_page.body);
    let consent = submit(
        fixture,
        &mut jar,
        "/oauth/authorize/consent",
        &[
            ("csrf_token", &csrf),
            ("client_id", "kinko"),
            ("request_uri", &request_uri),
            ("account_id", &account_id),
            ("decision", "approve"),
        ],
    )
    .await;
    let location = location(&consent);
    let query = location
        .strip_prefix(&format!("{REDIRECT_URI}?"))
        .unwrap_or_else(|| panic!("redirect to {location}"));
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query).unwrap_or_else(|error| panic!("{error}"));
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("no {name} in {location}"))
    };
    assert_eq!(get("state"), "xyz 1");
    assert_eq!(get("iss"), ISSUER);
    (get("code"), verifier)
}

async fn exchange(
    fixture: &Fixture,
    code: &str,
    verifier: &str,
    key: Option<&SigningKey>,
) -> Answer {
    let assertion = assertion(fixture);
    let proof = key.map(|key| {
        dpop::make_proof(
            key,
            "POST",
            &format!("{ISSUER}/oauth/token"),
            None,
            now_ms(fixture),
        )
        .unwrap_or_else(|error| panic!("{error}"))
    });
    send(
        fixture,
        form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ],
            proof.as_deref(),
        ),
    )
    .await
}

async fn grant(fixture: &Fixture, token: &str, key: Option<&SigningKey>) -> Answer {
    let mut builder =
        Request::get("/v1/grant").header(header::AUTHORIZATION, format!("DPoP {token}"));
    if let Some(key) = key {
        let proof = dpop::make_proof(
            key,
            "GET",
            &format!("{ISSUER}/v1/grant"),
            Some(token),
            now_ms(fixture),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        builder = builder.header("DPoP", proof);
    }
    send(
        fixture,
        builder
            .body(Body::empty())
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await
}

async fn the_flow_over_http(fixture: Arc<Fixture>) {
    let metadata = send(
        &fixture,
        Request::get("/.well-known/oauth-authorization-server")
            .body(Body::empty())
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;
    assert_eq!(metadata.status, StatusCode::OK);
    assert_eq!(metadata.json["require_pushed_authorization_requests"], true);
    assert_eq!(
        metadata.json["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );

    let (code, verifier) = pushed_and_consented(&fixture).await;
    fixture.clock.advance_ms(1_000);
    let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let token = exchange(&fixture, &code, &verifier, Some(&key)).await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.json);
    assert_eq!(token.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(token.json["token_type"], "DPoP");
    let access_token = token.json["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let granted = grant(&fixture, &access_token, Some(&key)).await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.json);
    assert_eq!(granted.json["account_id"], fixture.account_id.to_string());
    assert_eq!(granted.json["scope"], "holder_match");
}

async fn attacks_over_http_are_refused(fixture: Arc<Fixture>) {
    // An authorization request without PAR.
    let without_par = send(
        &fixture,
        Request::get("/oauth/authorize?client_id=kinko&response_type=code&redirect_uri=https%3A%2F%2Fkinko.test%2Fbank%2Fcallback")
            .body(Body::empty())
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;
    assert_eq!(without_par.status, StatusCode::BAD_REQUEST);
    assert_eq!(without_par.json["code"], "BANK_OAUTH_PAR_REQUIRED");

    // Malformed input: JSON with a stable code, not a framework's plain text.
    let malformed = send(
        &fixture,
        form(
            "/oauth/token",
            &[("grant_type", "authorization_code")],
            None,
        ),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json["code"], "BANK_OAUTH_INVALID_REQUEST");

    let (code, verifier) = pushed_and_consented(&fixture).await;
    let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    // No DPoP proof at the token endpoint.
    let no_proof = exchange(&fixture, &code, &verifier, None).await;
    assert_eq!(no_proof.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_proof.json["error"], "invalid_dpop_proof");
    assert_eq!(no_proof.json["code"], "BANK_OAUTH_DPOP_MISSING");
    // A wrong verifier.
    let wrong = exchange(&fixture, &code, &"x".repeat(43), Some(&key)).await;
    assert_eq!(wrong.json["code"], "BANK_OAUTH_PKCE_MISMATCH");
    assert_eq!(wrong.json["error"], "invalid_grant");

    let token = exchange(&fixture, &code, &verifier, Some(&key)).await;
    assert_eq!(token.status, StatusCode::OK, "{}", token.json);
    let access_token = token.json["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // The token without its proof.
    let bare = grant(&fixture, &access_token, None).await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bare.json["code"], "BANK_OAUTH_DPOP_MISSING");
    assert!(bare.headers.contains_key(header::WWW_AUTHENTICATE));
    // The token with a proof from another key.
    let thief = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let stolen = grant(&fixture, &access_token, Some(&thief)).await;
    assert_eq!(stolen.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stolen.json["code"], "BANK_OAUTH_DPOP_KEY_MISMATCH");

    // The code replayed: refused, and the token it issued no longer works.
    let replay = exchange(&fixture, &code, &verifier, Some(&key)).await;
    assert_eq!(replay.json["code"], "BANK_OAUTH_CODE_REPLAYED");
    fixture.clock.advance_ms(1);
    let after = grant(&fixture, &access_token, Some(&key)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.json["code"], "BANK_OAUTH_TOKEN_INVALID");

    // An expired code. (The next login waits for a new TOTP step: a code is good once.)
    fixture.clock.advance_ms(30_000);
    let (code, verifier) = pushed_and_consented(&fixture).await;
    fixture.clock.advance_ms(61_000);
    let expired = exchange(&fixture, &code, &verifier, Some(&key)).await;
    assert_eq!(expired.json["code"], "BANK_OAUTH_CODE_EXPIRED");
}

/// `GET /sandbox/balances` (sandbox only, for `kinko drill`): every seeded account with its
/// balance as the bank's own store holds it.
async fn the_drill_reads_every_balance(fixture: Arc<Fixture>) {
    let answer = send(
        &fixture,
        Request::get("/sandbox/balances")
            .body(Body::empty())
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let listed = answer.json.as_array().cloned().unwrap_or_default();
    let seeded: Vec<_> = store::demo_customers()
        .into_iter()
        .flat_map(|customer| customer.accounts)
        .collect();
    assert_eq!(listed.len(), seeded.len(), "{}", answer.body);
    for account in seeded {
        let row = listed
            .iter()
            .find(|row| row["bank_code"] == account.bank_code && row["number"] == account.number)
            .unwrap_or_else(|| panic!("{} {} not listed", account.bank_code, account.number));
        assert_eq!(row["branch"], account.branch);
        assert_eq!(row["balance_yen"], account.balance_yen);
    }
}
