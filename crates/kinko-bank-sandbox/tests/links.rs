//! Links, refresh, revocation and webhooks on both stores (BANK-PROTOCOL §8, §9): a code
//! exchange makes a link with a pairwise account_ref; refresh rotates and a reused refresh
//! token ends the link; refresh needs the link's key and client; RFC 7009 revocation ends the
//! link without a webhook; the customer's revoke and reports end the link and queue the right
//! event; webhooks verify with the published key and are retried until the client says 2xx;
//! client registration keeps the id of a known key; the bank's secrets survive a restart.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kinko_bank_sandbox::client_auth;
use kinko_bank_sandbox::http::{HttpState, router};
use kinko_bank_sandbox::jws::{self, Jwk};
use kinko_bank_sandbox::links::FraudReport;
use kinko_bank_sandbox::oauth::{self, RefreshRequest, TokenRequest, TokenResponse};
use kinko_bank_sandbox::payments::PaymentRequest;
use kinko_bank_sandbox::webhooks::{self, OutboxEvent};
use kinko_bank_sandbox::{Bank, OAuthError, dpop, pkce, store};
use kinko_core::ManualClock;
use kinko_store::StoreLocation;
use kinko_store::sql::Tx;
use p256::ecdsa::SigningKey;
use secrecy::SecretString;
use tower::ServiceExt as _;

const T0_MS: i64 = 1_790_000_000_000;
const ISSUER: &str = "https://bank.sandbox.test";
use common::REDIRECT_URI;
const RESOURCE_URL: &str = "https://bank.sandbox.test/v1/grant";

struct Fixture {
    bank: Arc<Bank>,
    location: StoreLocation,
    client_key: SigningKey,
    other_client_key: SigningKey,
    customers: Vec<store::DemoCustomer>,
    _dir: kinko_store::testing::Scratch,
}

fn fixture(backend: &str) -> Fixture {
    let (location, dir) = kinko_store::testing::location(backend);
    let bank = Bank::open(&location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let customers = store::seed(bank.database(), T0_MS).unwrap_or_else(|error| panic!("{error}"));
    let client_key = common::client_key();
    let other_client_key = common::client_key();
    let fixture = Fixture {
        bank: Arc::new(bank),
        location,
        client_key,
        other_client_key,
        customers,
        _dir: dir,
    };
    register(&fixture, "kinko", None);
    register(&fixture, "other", None);
    fixture
}

fn register(fixture: &Fixture, client_id: &str, webhook_url: Option<String>) {
    let key = if client_id == "kinko" {
        &fixture.client_key
    } else {
        &fixture.other_client_key
    };
    common::register(
        &fixture.bank,
        client_id,
        &format!("{client_id} wallet"),
        key,
        webhook_url,
    );
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    a_code_exchange_makes_a_link_with_a_pairwise_account_ref,
    refresh_rotates_and_a_reused_refresh_token_ends_the_link,
    refresh_needs_the_links_key_and_client,
    client_revocation_ends_the_link_without_a_webhook,
    a_token_dies_with_its_link_even_if_not_revoked_itself,
    the_customer_ends_or_reports_links_and_debits_and_the_client_hears_of_it,
    webhooks_verify_with_the_published_key_and_are_retried_until_accepted,
    the_delivery_loop_delivers_on_its_own,
    client_registration_keeps_the_id_of_a_known_key,
    the_banks_secrets_survive_a_restart,
);

fn key_of<'a>(fixture: &'a Fixture, client_id: &str) -> &'a SigningKey {
    if client_id == "kinko" {
        &fixture.client_key
    } else {
        &fixture.other_client_key
    }
}

fn assertion(fixture: &Fixture, client_id: &str, now_ms: i64) -> String {
    client_auth::make_assertion(
        client_id,
        ISSUER,
        key_of(fixture, client_id),
        now_ms,
        60_000,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// A link made by `client_id` for customer `customer`'s first account, with its DPoP key.
/// Each call logs the customer in: callers space calls by a TOTP step (30 s).
struct Linked {
    tokens: TokenResponse,
    key: SigningKey,
    customer_id: uuid::Uuid,
    account_id: uuid::Uuid,
}

fn link(fixture: &Fixture, client_id: &str, customer: usize, now_ms: i64) -> Linked {
    let demo = &fixture.customers[customer];
    let bank_code = demo.accounts[0].bank_code.clone();
    let verifier = kinko_bank_sandbox::random::token().unwrap_or_else(|error| panic!("{error}"));
    let request_uri = fixture
        .bank
        .push_authorization_request(
            &assertion(fixture, client_id, now_ms),
            &oauth::AuthorizationRequest {
                response_type: "code".to_owned(),
                client_id: client_id.to_owned(),
                redirect_uri: REDIRECT_URI.to_owned(),
                scope: "holder_match debits".to_owned(),
                code_challenge: pkce::challenge_for(&verifier),
                code_challenge_method: "S256".to_owned(),
                state: "s".to_owned(),
                bank_code: bank_code.clone(),
            },
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"))
        .request_uri;
    let code = oauth::totp_code(&demo.totp_secret, now_ms).unwrap_or_else(|| panic!("no TOTP"));
    let customer_login = fixture
        .bank
        .authenticate_customer(
            &demo.online_id,
            &SecretString::from(demo.password.clone()),
            &code,
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let account_id = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| store::accounts_of(tx, customer_login.customer_id()))
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .find(|candidate| candidate.bank_code == bank_code)
        .unwrap_or_else(|| panic!("no account at {bank_code}"))
        .id;
    let response = fixture
        .bank
        .authorize(
            client_id,
            Some(&request_uri),
            &customer_login,
            account_id,
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let proof = dpop::make_proof(&key, "POST", &fixture.bank.token_endpoint(), None, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    let tokens = fixture
        .bank
        .exchange_code(
            &TokenRequest {
                grant_type: "authorization_code".to_owned(),
                code: response.code,
                redirect_uri: REDIRECT_URI.to_owned(),
                code_verifier: Some(verifier),
                client_assertion_type: client_auth::ASSERTION_TYPE.to_owned(),
                client_assertion: assertion(fixture, client_id, now_ms),
            },
            Some(&proof),
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    Linked {
        tokens,
        key,
        customer_id: customer_login.customer_id(),
        account_id,
    }
}

fn refresh(
    fixture: &Fixture,
    client_id: &str,
    refresh_token: &str,
    key: &SigningKey,
    now_ms: i64,
) -> Result<TokenResponse, OAuthError> {
    let proof = dpop::make_proof(key, "POST", &fixture.bank.token_endpoint(), None, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    fixture.bank.refresh(
        &RefreshRequest {
            grant_type: "refresh_token".to_owned(),
            refresh_token: refresh_token.to_owned(),
            client_assertion_type: client_auth::ASSERTION_TYPE.to_owned(),
            client_assertion: assertion(fixture, client_id, now_ms),
        },
        Some(&proof),
        now_ms,
    )
}

fn use_token(
    fixture: &Fixture,
    access_token: &str,
    key: &SigningKey,
    now_ms: i64,
) -> Result<oauth::ResourceGrant, OAuthError> {
    let proof = dpop::make_proof(key, "GET", RESOURCE_URL, Some(access_token), now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    fixture
        .bank
        .authorize_resource(access_token, Some(&proof), "GET", RESOURCE_URL, now_ms)
}

fn refused<T: std::fmt::Debug>(outcome: Result<T, OAuthError>) -> OAuthError {
    match outcome {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(error) => error,
    }
}

fn end_reason(fixture: &Fixture, link_id: uuid::Uuid) -> Option<String> {
    fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| kinko_bank_sandbox::links::link(tx, link_id))
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("no link {link_id}"))
        .end_reason
}

fn outbox(fixture: &Fixture) -> Vec<OutboxEvent> {
    fixture
        .bank
        .outbox()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn claims_of(event: &OutboxEvent) -> serde_json::Map<String, serde_json::Value> {
    jws::unverified_claims(&event.jws).unwrap_or_else(|error| panic!("{error}"))
}

fn notice_count(fixture: &Fixture, customer_id: uuid::Uuid, kind: &str) -> usize {
    fixture
        .bank
        .notices(customer_id)
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .filter(|notice| notice.kind == kind)
        .count()
}

fn a_code_exchange_makes_a_link_with_a_pairwise_account_ref(backend: &str) {
    let fixture = fixture(backend);
    let first = link(&fixture, "kinko", 0, T0_MS);
    assert_eq!(first.tokens.refresh_token.len(), 43);
    assert_ne!(first.tokens.refresh_token, first.tokens.access_token);
    let account = &fixture.customers[0].accounts[0];
    let last_three = &account.number[4..];
    assert_eq!(
        first.tokens.account_label,
        format!(
            "{} {} ****{last_three}",
            account.kind.label_ja(),
            account.branch
        )
    );
    let grant = use_token(&fixture, &first.tokens.access_token, &first.key, T0_MS)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(grant.link_id, first.tokens.link_id);

    // The same account linked again by the same client: a new link, the same account_ref.
    let again = link(&fixture, "kinko", 0, T0_MS + 30_000);
    assert_ne!(again.tokens.link_id, first.tokens.link_id);
    assert_eq!(again.tokens.account_ref, first.tokens.account_ref);
    // Another client gets another value for the same account; another account another too.
    let other_client = link(&fixture, "other", 0, T0_MS + 60_000);
    assert_eq!(other_client.account_id, first.account_id);
    assert_ne!(other_client.tokens.account_ref, first.tokens.account_ref);
    let other_account = link(&fixture, "kinko", 1, T0_MS + 60_000);
    assert_ne!(other_account.tokens.account_ref, first.tokens.account_ref);
    assert_eq!(first.tokens.account_ref.len(), 43);
}

fn refresh_rotates_and_a_reused_refresh_token_ends_the_link(backend: &str) {
    let fixture = fixture(backend);
    let linked = link(&fixture, "kinko", 0, T0_MS);
    let first_refresh = linked.tokens.refresh_token.clone();
    let rotated = refresh(
        &fixture,
        "kinko",
        &first_refresh,
        &linked.key,
        T0_MS + 1_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_ne!(rotated.refresh_token, first_refresh);
    assert_ne!(rotated.access_token, linked.tokens.access_token);
    assert_eq!(rotated.link_id, linked.tokens.link_id);
    assert_eq!(rotated.account_ref, linked.tokens.account_ref);
    use_token(&fixture, &rotated.access_token, &linked.key, T0_MS + 2_000)
        .unwrap_or_else(|error| panic!("{error}"));
    // The newest refresh token works once more.
    let rotated = refresh(
        &fixture,
        "kinko",
        &rotated.refresh_token,
        &linked.key,
        T0_MS + 3_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));

    // The first refresh token comes back: it was copied. Refused, and the link ends.
    let error = refused(refresh(
        &fixture,
        "kinko",
        &first_refresh,
        &linked.key,
        T0_MS + 4_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REFRESH_TOKEN_INVALID");
    assert_eq!(error.oauth_error(), "invalid_grant");
    assert_eq!(
        end_reason(&fixture, linked.tokens.link_id).as_deref(),
        Some("refresh_token_reused")
    );
    // Every token of the link is dead: the newest refresh token and the access tokens.
    let error = refused(refresh(
        &fixture,
        "kinko",
        &rotated.refresh_token,
        &linked.key,
        T0_MS + 5_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REFRESH_TOKEN_INVALID");
    for access_token in [&rotated.access_token, &linked.tokens.access_token] {
        let error = refused(use_token(
            &fixture,
            access_token,
            &linked.key,
            T0_MS + 6_000,
        ));
        assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");
    }
    // The client hears of it (the bank ended the link); the customer too.
    let events = outbox(&fixture);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "link.revoked");
    assert_eq!(claims_of(&events[0])["reason"], "bank_revoked");
    assert_eq!(notice_count(&fixture, linked.customer_id, "link_ended"), 1);
}

fn refresh_needs_the_links_key_and_client(backend: &str) {
    let fixture = fixture(backend);
    let linked = link(&fixture, "kinko", 0, T0_MS);
    let refresh_token = linked.tokens.refresh_token.clone();
    let thief = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let error = refused(refresh(
        &fixture,
        "kinko",
        &refresh_token,
        &thief,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REFRESH_TOKEN_INVALID");
    let error = refused(refresh(
        &fixture,
        "other",
        &refresh_token,
        &linked.key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REFRESH_TOKEN_INVALID");
    let error = refused(refresh(
        &fixture,
        "kinko",
        &"A".repeat(43),
        &linked.key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REFRESH_TOKEN_INVALID");
    // No DPoP proof at all.
    let error = refused(fixture.bank.refresh(
        &RefreshRequest {
            grant_type: "refresh_token".to_owned(),
            refresh_token: refresh_token.clone(),
            client_assertion_type: client_auth::ASSERTION_TYPE.to_owned(),
            client_assertion: assertion(&fixture, "kinko", T0_MS + 1_000),
        },
        None,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_MISSING");
    // None of it rotated or ended anything: the rightful client still refreshes.
    assert_eq!(end_reason(&fixture, linked.tokens.link_id), None);
    refresh(
        &fixture,
        "kinko",
        &refresh_token,
        &linked.key,
        T0_MS + 2_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

fn a_token_dies_with_its_link_even_if_not_revoked_itself(backend: &str) {
    let fixture = fixture(backend);
    let linked = link(&fixture, "kinko", 0, T0_MS);
    use_token(
        &fixture,
        &linked.tokens.access_token,
        &linked.key,
        T0_MS + 1_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    // The link row alone says ended (as after a race with a refresh that issued a token
    // after the revocation): the resource check still refuses the token.
    fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE bank_links SET ended_at_ms = $1, end_reason = 'customer_revoked'",
                &[(T0_MS + 1_500).into()],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let error = refused(use_token(
        &fixture,
        &linked.tokens.access_token,
        &linked.key,
        T0_MS + 2_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");
}

async fn post_form(bank: &Arc<Bank>, path: &str, fields: &[(&str, &str)]) -> StatusCode {
    let body = serde_urlencoded::to_string(fields).unwrap_or_else(|error| panic!("{error}"));
    let app = router(HttpState {
        bank: Arc::clone(bank),
        clock: Arc::new(ManualClock::new(
            u64::try_from(T0_MS).unwrap_or_default() * 1_000_000,
        )),
    });
    app.oneshot(
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap_or_else(|error| panic!("{error}")),
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
    .status()
}

fn client_revocation_ends_the_link_without_a_webhook(backend: &str) {
    let fixture = fixture(backend);
    let linked = link(&fixture, "kinko", 0, T0_MS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let revoke = |client_id: &str, token: &str| {
        let assertion = assertion(&fixture, client_id, T0_MS);
        runtime.block_on(post_form(
            &fixture.bank,
            "/oauth/revoke",
            &[
                ("client_assertion_type", client_auth::ASSERTION_TYPE),
                ("client_assertion", &assertion),
                ("token", token),
                ("token_type_hint", "refresh_token"),
            ],
        ))
    };
    // Another client's revocation of this token, or an unknown token: 200, nothing changes.
    assert_eq!(
        revoke("other", &linked.tokens.refresh_token),
        StatusCode::OK
    );
    assert_eq!(revoke("kinko", "no-such-token"), StatusCode::OK);
    assert_eq!(end_reason(&fixture, linked.tokens.link_id), None);
    // Without client authentication: refused.
    let unauthenticated = runtime.block_on(post_form(
        &fixture.bank,
        "/oauth/revoke",
        &[
            ("client_assertion_type", client_auth::ASSERTION_TYPE),
            ("client_assertion", "not.a.jwt"),
            ("token", &linked.tokens.refresh_token),
        ],
    ));
    assert_eq!(unauthenticated, StatusCode::UNAUTHORIZED);

    assert_eq!(
        revoke("kinko", &linked.tokens.refresh_token),
        StatusCode::OK
    );
    assert_eq!(
        end_reason(&fixture, linked.tokens.link_id).as_deref(),
        Some("client_revoked")
    );
    let error = refused(use_token(
        &fixture,
        &linked.tokens.access_token,
        &linked.key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");
    let error = refused(refresh(
        &fixture,
        "kinko",
        &linked.tokens.refresh_token,
        &linked.key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REFRESH_TOKEN_INVALID");
    // The customer is told; the client that asked gets no webhook.
    assert_eq!(notice_count(&fixture, linked.customer_id, "link_ended"), 1);
    assert!(outbox(&fixture).is_empty());
    // Revoking again is still 200 and tells nobody twice.
    assert_eq!(
        revoke("kinko", &linked.tokens.refresh_token),
        StatusCode::OK
    );
    assert_eq!(notice_count(&fixture, linked.customer_id, "link_ended"), 1);
}

fn debit(fixture: &Fixture, linked: &Linked, key: &str, now_ms: i64) -> uuid::Uuid {
    let url = "https://bank.sandbox.test/v1/debits";
    let proof = dpop::make_proof(
        &linked.key,
        "POST",
        url,
        Some(&linked.tokens.access_token),
        now_ms,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let grant = fixture
        .bank
        .authorize_resource(
            &linked.tokens.access_token,
            Some(&proof),
            "POST",
            url,
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    fixture
        .bank
        .debit(
            &grant,
            key,
            &PaymentRequest {
                amount_yen: 1_200,
                description: "Kinko チャージ".to_owned(),
                not_after_ms: None,
            },
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"))
        .id
}

fn the_customer_ends_or_reports_links_and_debits_and_the_client_hears_of_it(backend: &str) {
    let fixture = fixture(backend);
    let revoked = link(&fixture, "kinko", 0, T0_MS);
    let reported = link(&fixture, "kinko", 0, T0_MS + 30_000);
    let paying = link(&fixture, "kinko", 0, T0_MS + 60_000);
    let stranger = link(&fixture, "kinko", 1, T0_MS + 60_000);
    let now_ms = T0_MS + 61_000;

    // Nobody ends another customer's link.
    let error = refused(fixture.bank.revoke_link_by_customer(
        stranger.customer_id,
        revoked.tokens.link_id,
        now_ms,
    ));
    assert_eq!(error.code(), "BANK_LINK_NOT_FOUND");
    let error = refused(fixture.bank.report_fraud(
        stranger.customer_id,
        FraudReport::Link(reported.tokens.link_id),
        now_ms,
    ));
    assert_eq!(error.code(), "BANK_LINK_NOT_FOUND");
    assert!(outbox(&fixture).is_empty());

    fixture
        .bank
        .revoke_link_by_customer(revoked.customer_id, revoked.tokens.link_id, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    fixture
        .bank
        .report_fraud(
            reported.customer_id,
            FraudReport::Link(reported.tokens.link_id),
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let payment_id = debit(&fixture, &paying, "debit-key-1", now_ms);
    let error = refused(fixture.bank.report_fraud(
        stranger.customer_id,
        FraudReport::Debit(payment_id),
        now_ms,
    ));
    assert_eq!(error.code(), "BANK_DEBIT_NOT_FOUND");
    fixture
        .bank
        .report_fraud(paying.customer_id, FraudReport::Debit(payment_id), now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    // A second report of the same debit or link, and a second revoke, add nothing.
    fixture
        .bank
        .report_fraud(paying.customer_id, FraudReport::Debit(payment_id), now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    fixture
        .bank
        .report_fraud(
            reported.customer_id,
            FraudReport::Link(reported.tokens.link_id),
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    fixture
        .bank
        .revoke_link_by_customer(revoked.customer_id, revoked.tokens.link_id, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));

    let events = outbox(&fixture);
    let summary: Vec<(String, uuid::Uuid, String, Option<String>)> = events
        .iter()
        .map(|event| {
            let claims = claims_of(event);
            (
                event.event.clone(),
                event.link_id,
                claims["reason"].as_str().unwrap_or_default().to_owned(),
                claims
                    .get("payment_key")
                    .and_then(|key| key.as_str())
                    .map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "link.revoked".to_owned(),
                revoked.tokens.link_id,
                "customer_revoked".to_owned(),
                None
            ),
            (
                "fraud.reported".to_owned(),
                reported.tokens.link_id,
                "customer_reported".to_owned(),
                None
            ),
            (
                "fraud.reported".to_owned(),
                paying.tokens.link_id,
                "customer_reported".to_owned(),
                Some("debit-key-1".to_owned())
            ),
        ]
    );
    for event in &events {
        assert_eq!(event.client_id, "kinko");
        assert_eq!(claims_of(event)["aud"], "kinko");
        assert_eq!(claims_of(event)["iss"], ISSUER);
    }
    // Each of those links is over, with its tokens; the stranger's link is untouched.
    for (linked, reason) in [
        (&revoked, "customer_revoked"),
        (&reported, "customer_reported"),
        (&paying, "customer_reported"),
    ] {
        assert_eq!(
            end_reason(&fixture, linked.tokens.link_id).as_deref(),
            Some(reason)
        );
        let error = refused(use_token(
            &fixture,
            &linked.tokens.access_token,
            &linked.key,
            now_ms + 1_000,
        ));
        assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");
    }
    use_token(
        &fixture,
        &stranger.tokens.access_token,
        &stranger.key,
        now_ms + 1_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

/// A client's webhook endpoint on port 0: refuses the first `failures` deliveries with 500,
/// then accepts; keeps every (content type, body) it got.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<(String, String)>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn receiver(failures: usize) -> Receiver {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let failures_left = Arc::new(AtomicUsize::new(failures));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|error| panic!("{error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let kept = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = Arc::clone(&kept);
            let failures_left = Arc::clone(&failures_left);
            async move {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if let Ok(mut list) = kept.lock() {
                    list.push((content_type, body));
                }
                let failing = failures_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok();
                if failing {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    runtime.spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            panic!("{error}");
        }
    });
    Receiver {
        url: format!("http://{address}/hook"),
        received,
        runtime: Some(runtime),
    }
}

fn received(receiver: &Receiver) -> Vec<(String, String)> {
    receiver
        .received
        .lock()
        .map(|list| list.clone())
        .unwrap_or_default()
}

fn webhooks_verify_with_the_published_key_and_are_retried_until_accepted(backend: &str) {
    let fixture = fixture(backend);
    let hook = receiver(1);
    register(&fixture, "kinko", Some(hook.url.clone()));
    let linked = link(&fixture, "kinko", 0, T0_MS);
    fixture
        .bank
        .revoke_link_by_customer(linked.customer_id, linked.tokens.link_id, T0_MS)
        .unwrap_or_else(|error| panic!("{error}"));
    let agent = webhooks::delivery_agent();
    let deliver = |now_ms: i64| {
        fixture
            .bank
            .deliver_due_webhooks(&agent, now_ms)
            .unwrap_or_else(|error| panic!("{error}"))
    };

    // First attempt: the client answers 500. The event waits 1 s.
    let round = deliver(T0_MS);
    assert_eq!((round.attempted, round.delivered), (1, 0));
    let event = outbox(&fixture).remove(0);
    assert_eq!(event.attempts, 1);
    assert_eq!(
        event.next_attempt_at_ms,
        Some(T0_MS + webhooks::BACKOFF_FIRST_MS)
    );
    assert_eq!(event.last_status.as_deref(), Some("500"));
    assert_eq!(deliver(T0_MS + 500).attempted, 0);
    // Second attempt, when due: accepted, and never sent again.
    let round = deliver(T0_MS + webhooks::BACKOFF_FIRST_MS);
    assert_eq!((round.attempted, round.delivered), (1, 1));
    assert_eq!(deliver(T0_MS + 3_600_000).attempted, 0);
    let event = outbox(&fixture).remove(0);
    assert_eq!(
        event.delivered_at_ms,
        Some(T0_MS + webhooks::BACKOFF_FIRST_MS)
    );

    // Both attempts carried the same JWS, as application/jwt.
    let bodies = received(&hook);
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0].0, "application/jwt");
    assert_eq!(bodies[0].1, event.jws);

    // It verifies with the key published at jwks_uri, named by its kid.
    let jwks = fixture.bank.jwks();
    let published = &jwks["keys"][0];
    assert_eq!(published["use"], "sig");
    assert_eq!(published["alg"], "ES256");
    assert!(published.get("d").is_none());
    let jwk = Jwk::from_json(published).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(published["kid"], jwk.thumbprint());
    let verified =
        jws::verify_with_jwk(&bodies[0].1, &jwk).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(verified.header["typ"], "bank-event+jwt");
    assert_eq!(verified.header["kid"], published["kid"]);
    let claims = verified.claims;
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "kinko");
    assert_eq!(claims["event"], "link.revoked");
    assert_eq!(claims["reason"], "customer_revoked");
    assert_eq!(claims["link_id"], linked.tokens.link_id.to_string());
    assert_eq!(claims["account_ref"], linked.tokens.account_ref);
    assert_eq!(claims["iat"], T0_MS / 1_000);
    assert_eq!(claims["jti"], event.jti);
    // Another key does not verify it.
    let stranger = Jwk::from_verifying_key(
        jws::generate_key()
            .unwrap_or_else(|error| panic!("{error}"))
            .verifying_key(),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(jws::verify_with_jwk(&bodies[0].1, &stranger).is_err());

    // The backoff doubles and stops growing at 5 minutes.
    assert_eq!(webhooks::backoff_ms(1), 1_000);
    assert_eq!(webhooks::backoff_ms(2), 2_000);
    assert_eq!(webhooks::backoff_ms(3), 4_000);
    assert_eq!(webhooks::backoff_ms(30), webhooks::BACKOFF_CAP_MS);
}

fn the_delivery_loop_delivers_on_its_own(backend: &str) {
    let fixture = fixture(backend);
    let hook = receiver(0);
    register(&fixture, "kinko", Some(hook.url.clone()));
    let linked = link(&fixture, "kinko", 0, T0_MS);
    fixture
        .bank
        .report_fraud(
            linked.customer_id,
            FraudReport::Link(linked.tokens.link_id),
            T0_MS,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let clock = ManualClock::new(u64::try_from(T0_MS).unwrap_or_default() * 1_000_000);
    let deliveries = webhooks::DeliveryLoop::spawn(Arc::clone(&fixture.bank), Arc::new(clock))
        .unwrap_or_else(|error| panic!("{error}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while outbox(&fixture)[0].delivered_at_ms.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    deliveries.stop();
    let bodies = received(&hook);
    assert_eq!(bodies.len(), 1);
    let claims = jws::unverified_claims(&bodies[0].1).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(claims["event"], "fraud.reported");
}

async fn register_over_http(
    bank: &Arc<Bank>,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let app = router(HttpState {
        bank: Arc::clone(bank),
        clock: Arc::new(ManualClock::new(0)),
    });
    let response = app
        .oneshot(
            Request::post("/sandbox/clients")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap_or_else(|error| panic!("{error}")),
        )
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn client_registration_keeps_the_id_of_a_known_key(backend: &str) {
    let fixture = fixture(backend);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let key = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let jwk = Jwk::from_verifying_key(key.verifying_key())
        .unwrap_or_else(|error| panic!("{error}"))
        .to_json();
    let metadata = |redirect: &str, webhook: &str| {
        serde_json::json!({
            "client_name": "Kinko",
            "jwks": {"keys": [jwk.clone()]},
            "redirect_uris": [redirect],
            "webhook_url": webhook,
        })
    };
    let (status, answer) = runtime.block_on(register_over_http(
        &fixture.bank,
        metadata(
            "http://127.0.0.1:8080/bank/callback",
            "http://127.0.0.1:8080/bank/webhook",
        ),
    ));
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let client_id = answer["client_id"].as_str().unwrap_or_default().to_owned();
    assert!(!client_id.is_empty());
    let (status, again) = runtime.block_on(register_over_http(
        &fixture.bank,
        metadata(
            "https://kinko.example/bank/callback",
            "https://kinko.example/bank/webhook",
        ),
    ));
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["client_id"], client_id.as_str());
    let stored = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| client_auth::find(tx, &client_id))
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("not registered"));
    assert_eq!(
        stored.redirect_uris,
        ["https://kinko.example/bank/callback"]
    );
    assert_eq!(
        stored.webhook_url.as_deref(),
        Some("https://kinko.example/bank/webhook")
    );
    // The registered client authenticates with its key.
    client_auth::make_assertion(&client_id, ISSUER, &key, T0_MS, 60_000)
        .map_err(|error| error.to_string())
        .and_then(|assertion| {
            fixture
                .bank
                .revoke(client_auth::ASSERTION_TYPE, &assertion, "nothing", T0_MS)
                .map_err(|error| error.to_string())
        })
        .unwrap_or_else(|error| panic!("{error}"));

    // A private key, plain http to another host, no redirect URI, or no name: refused.
    let mut private = jwk.clone();
    private["d"] = serde_json::Value::from("c2VjcmV0");
    let bad = [
        serde_json::json!({"client_name": "x", "jwks": {"keys": [private]},
            "redirect_uris": ["https://a.example/cb"]}),
        metadata("http://kinko.example/cb", "https://kinko.example/hook"),
        metadata("https://kinko.example/cb", "http://kinko.example/hook"),
        serde_json::json!({"client_name": "x", "jwks": {"keys": [jwk.clone()]},
            "redirect_uris": []}),
        serde_json::json!({"client_name": " ", "jwks": {"keys": [jwk.clone()]},
            "redirect_uris": ["https://a.example/cb"]}),
        serde_json::json!({"client_name": "x"}),
    ];
    for body in bad {
        let (status, answer) = runtime.block_on(register_over_http(&fixture.bank, body.clone()));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["code"], "BANK_CLIENT_METADATA_INVALID", "{body}");
        assert_eq!(answer["error"], "invalid_client_metadata");
    }
}

fn the_banks_secrets_survive_a_restart(backend: &str) {
    let fixture = fixture(backend);
    let account_id = uuid::Uuid::now_v7();
    let before = (
        fixture.bank.jwks(),
        fixture
            .bank
            .account_ref("kinko", account_id)
            .unwrap_or_else(|error| panic!("{error}")),
    );
    let reopened = Bank::open(&fixture.location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let after = (
        reopened.jwks(),
        reopened
            .account_ref("kinko", account_id)
            .unwrap_or_else(|error| panic!("{error}")),
    );
    assert_eq!(before, after);
    assert_ne!(
        before.1,
        reopened
            .account_ref("other", account_id)
            .unwrap_or_else(|error| panic!("{error}"))
    );
}
