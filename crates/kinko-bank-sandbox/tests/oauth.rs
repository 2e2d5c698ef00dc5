//! The sandbox bank's authorization server on both stores: the happy path PAR → login and
//! consent → code → DPoP-bound token → resource, and drill D10's attacks (a replayed code, a
//! missing or wrong PKCE verifier, an authorization request without PAR, a token without its
//! DPoP key, an expired code, a client assertion with a wrong key or a replayed jti), each
//! refused with its stable code.

mod common;

use kinko_bank_sandbox::client_auth::{self, ASSERTION_TYPE};
use kinko_bank_sandbox::jws;
use kinko_bank_sandbox::oauth::{
    self, AuthenticatedCustomer, AuthorizationRequest, AuthorizationResponse, TokenRequest,
    TokenResponse,
};
use kinko_bank_sandbox::{Bank, OAuthError, dpop, pkce, store};
use kinko_store::sql::Tx;
use p256::ecdsa::SigningKey;
use secrecy::SecretString;

const T0_MS: i64 = 1_790_000_000_000;
const ISSUER: &str = "https://bank.sandbox.test";
const CLIENT_ID: &str = "kinko";
use common::REDIRECT_URI;
const RESOURCE_URL: &str = "https://bank.sandbox.test/v1/holder-match";

struct Fixture {
    bank: Bank,
    client_key: SigningKey,
    customers: Vec<store::DemoCustomer>,
    _dir: kinko_store::testing::Scratch,
}

fn fixture(backend: &str) -> Fixture {
    let (location, dir) = kinko_store::testing::location(backend);
    let bank = Bank::open(&location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let customers = store::seed(bank.database(), T0_MS).unwrap_or_else(|error| panic!("{error}"));
    let client_key = common::registered(&bank, CLIENT_ID, "Kinko ウォレット");
    Fixture {
        bank,
        client_key,
        customers,
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
    happy_path_par_login_consent_token_resource,
    seed_matches_the_kyc_identities_and_runs_twice,
    authorization_without_par_is_refused,
    a_pushed_request_is_checked_and_single_use,
    a_replayed_code_is_refused_and_revokes_its_token,
    a_missing_or_wrong_pkce_verifier_is_refused,
    a_token_without_its_dpop_key_is_refused,
    the_token_endpoint_requires_a_dpop_proof,
    an_expired_code_is_refused,
    a_client_assertion_with_a_wrong_key_or_replayed_jti_is_refused,
    the_bank_login_needs_both_factors_and_the_customers_own_account,
    a_totp_code_is_good_once_and_failures_lock_the_login,
);

fn assertion(fixture: &Fixture, now_ms: i64) -> String {
    client_auth::make_assertion(CLIENT_ID, ISSUER, &fixture.client_key, now_ms, 60_000)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn verifier() -> String {
    // 43 unreserved characters: the shortest verifier RFC 7636 allows.
    kinko_bank_sandbox::random::token().unwrap_or_else(|error| panic!("{error}"))
}

fn request(verifier: &str, bank_code: &str) -> AuthorizationRequest {
    AuthorizationRequest {
        response_type: "code".to_owned(),
        client_id: CLIENT_ID.to_owned(),
        redirect_uri: REDIRECT_URI.to_owned(),
        scope: "holder_match debits".to_owned(),
        code_challenge: pkce::challenge_for(verifier),
        code_challenge_method: "S256".to_owned(),
        state: "state-123".to_owned(),
        bank_code: bank_code.to_owned(),
    }
}

fn push(fixture: &Fixture, verifier: &str, now_ms: i64) -> String {
    let bank_code = &fixture.customers[0].accounts[0].bank_code;
    fixture
        .bank
        .push_authorization_request(
            &assertion(fixture, now_ms),
            &request(verifier, bank_code),
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"))
        .request_uri
}

fn login(fixture: &Fixture, index: usize, now_ms: i64) -> AuthenticatedCustomer {
    let customer = &fixture.customers[index];
    let code =
        oauth::totp_code(&customer.totp_secret, now_ms).unwrap_or_else(|| panic!("no TOTP code"));
    fixture
        .bank
        .authenticate_customer(
            &customer.online_id,
            &SecretString::from(customer.password.clone()),
            &code,
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The customer's account at `bank_code`.
fn account_id(fixture: &Fixture, customer: &AuthenticatedCustomer, bank_code: &str) -> uuid::Uuid {
    fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| store::accounts_of(tx, customer.customer_id()))
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .find(|account| account.bank_code == bank_code)
        .unwrap_or_else(|| panic!("no account at {bank_code}"))
        .id
}

/// PAR, login and consent by customer 0 for their home account: a code and its verifier.
fn code(fixture: &Fixture, now_ms: i64) -> (AuthorizationResponse, String) {
    let verifier = verifier();
    let request_uri = push(fixture, &verifier, now_ms);
    let customer = login(fixture, 0, now_ms);
    let bank_code = fixture.customers[0].accounts[0].bank_code.clone();
    let account = account_id(fixture, &customer, &bank_code);
    let response = fixture
        .bank
        .authorize(CLIENT_ID, Some(&request_uri), &customer, account, now_ms)
        .unwrap_or_else(|error| panic!("{error}"));
    (response, verifier)
}

fn token_request(
    fixture: &Fixture,
    code: &str,
    verifier: Option<&str>,
    now_ms: i64,
) -> TokenRequest {
    TokenRequest {
        grant_type: "authorization_code".to_owned(),
        code: code.to_owned(),
        redirect_uri: REDIRECT_URI.to_owned(),
        code_verifier: verifier.map(str::to_owned),
        client_assertion_type: ASSERTION_TYPE.to_owned(),
        client_assertion: assertion(fixture, now_ms),
    }
}

fn token_proof(fixture: &Fixture, key: &SigningKey, now_ms: i64) -> String {
    dpop::make_proof(key, "POST", &fixture.bank.token_endpoint(), None, now_ms)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn exchange(
    fixture: &Fixture,
    code: &str,
    verifier: Option<&str>,
    key: &SigningKey,
    now_ms: i64,
) -> Result<TokenResponse, OAuthError> {
    let proof = token_proof(fixture, key, now_ms);
    fixture.bank.exchange_code(
        &token_request(fixture, code, verifier, now_ms),
        Some(&proof),
        now_ms,
    )
}

fn resource_proof(key: &SigningKey, token: &str, now_ms: i64) -> String {
    dpop::make_proof(key, "POST", RESOURCE_URL, Some(token), now_ms)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn use_token(
    fixture: &Fixture,
    token: &str,
    proof: Option<&str>,
    now_ms: i64,
) -> Result<oauth::ResourceGrant, OAuthError> {
    fixture
        .bank
        .authorize_resource(token, proof, "POST", RESOURCE_URL, now_ms)
}

fn refused<T: std::fmt::Debug>(outcome: Result<T, OAuthError>) -> OAuthError {
    match outcome {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(error) => error,
    }
}

fn dpop_key() -> SigningKey {
    jws::generate_key().unwrap_or_else(|error| panic!("{error}"))
}

fn happy_path_par_login_consent_token_resource(backend: &str) {
    let fixture = fixture(backend);
    let verifier = verifier();
    let request_uri = push(&fixture, &verifier, T0_MS);
    assert!(request_uri.starts_with(oauth::REQUEST_URI_PREFIX));

    // The consent page knows who asks, for what, at which bank.
    let pending = fixture
        .bank
        .authorization_request(CLIENT_ID, Some(&request_uri), T0_MS + 1_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(pending.client_name, "Kinko ウォレット");
    assert_eq!(pending.scope, "holder_match debits");
    let bank_code = fixture.customers[0].accounts[0].bank_code.clone();
    assert_eq!(pending.bank_code, bank_code);

    let customer = login(&fixture, 0, T0_MS + 2_000);
    let account = account_id(&fixture, &customer, &bank_code);
    let response = fixture
        .bank
        .authorize(
            CLIENT_ID,
            Some(&request_uri),
            &customer,
            account,
            T0_MS + 3_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(response.state, "state-123");
    assert_eq!(response.redirect_uri, REDIRECT_URI);
    assert_eq!(response.iss, ISSUER);

    let key = dpop_key();
    let token = exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + 4_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(token.token_type, "DPoP");
    assert_eq!(token.scope, "holder_match debits");

    let proof = resource_proof(&key, &token.access_token, T0_MS + 5_000);
    let grant = use_token(&fixture, &token.access_token, Some(&proof), T0_MS + 5_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(grant.account_id, account);
    assert_eq!(grant.customer_id, customer.customer_id());
    assert_eq!(grant.client_id, CLIENT_ID);

    // The bank told its customer, on the address it has on file, of the request and the link.
    let notices = fixture
        .bank
        .notices(customer.customer_id())
        .unwrap_or_else(|error| panic!("{error}"));
    let kinds: Vec<&str> = notices.iter().map(|notice| notice.kind.as_str()).collect();
    assert_eq!(kinds, ["link_requested", "link_created"]);
    let registered = format!("email:{}", fixture.customers[0].email);
    assert!(notices.iter().all(|notice| notice.channel == registered));
    assert!(
        notices
            .iter()
            .all(|notice| notice.body.contains("Kinko ウォレット"))
    );
    // The notice names the account without spelling out its number.
    let number = &fixture.customers[0].accounts[0].number;
    assert!(
        notices
            .iter()
            .all(|notice| !notice.body.contains(number.as_str()))
    );
}

fn seed_matches_the_kyc_identities_and_runs_twice(backend: &str) {
    let fixture = fixture(backend);
    for (_, _, kana, birth, _) in kinko_identity::kyc::SANDBOX_IDENTITIES {
        let customer = fixture
            .customers
            .iter()
            .find(|customer| customer.holder_kana == *kana)
            .unwrap_or_else(|| panic!("no demo customer for {kana}"));
        assert_eq!(customer.birth_date, *birth);
    }
    let again =
        store::seed(fixture.bank.database(), T0_MS + 1).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(again, fixture.customers);
    let (accounts, banks) = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            let accounts = tx
                .query_one("SELECT COUNT(*) FROM bank_accounts", &[])?
                .int(0)?;
            let banks = tx
                .query_one("SELECT COUNT(DISTINCT bank_code) FROM bank_accounts", &[])?
                .int(0)?;
            Ok::<_, kinko_ledger::StoreError>((accounts, banks))
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let expected: usize = fixture
        .customers
        .iter()
        .map(|customer| customer.accounts.len())
        .sum();
    assert_eq!(usize::try_from(accounts).ok(), Some(expected));
    assert_eq!(banks, 3);
    // Every partner bank of the registry is hosted, so any of them can be linked.
    let hosted = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| tx.query_one("SELECT COUNT(*) FROM bank_banks", &[])?.int(0))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(hosted, 35);
    // The PIN is stored hashed: no row holds it in clear.
    let pin = fixture.customers[0].accounts[0].pin.clone();
    let clear = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            tx.query_one(
                "SELECT COUNT(*) FROM bank_accounts WHERE pin_hash = $1",
                &[pin.as_str().into()],
            )?
            .int(0)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(clear, 0);
}

fn authorization_without_par_is_refused(backend: &str) {
    let fixture = fixture(backend);
    let error = refused(fixture.bank.authorization_request(CLIENT_ID, None, T0_MS));
    assert_eq!(error.code(), "BANK_OAUTH_PAR_REQUIRED");
    assert_eq!(error.oauth_error(), "invalid_request");

    let customer = login(&fixture, 0, T0_MS);
    let bank_code = fixture.customers[0].accounts[0].bank_code.clone();
    let account = account_id(&fixture, &customer, &bank_code);
    let error = refused(
        fixture
            .bank
            .authorize(CLIENT_ID, None, &customer, account, T0_MS),
    );
    assert_eq!(error.code(), "BANK_OAUTH_PAR_REQUIRED");

    // A request_uri the bank never issued is no better.
    let forged = format!("{}forged", oauth::REQUEST_URI_PREFIX);
    let error =
        refused(
            fixture
                .bank
                .authorize(CLIENT_ID, Some(&forged), &customer, account, T0_MS),
        );
    assert_eq!(error.code(), "BANK_OAUTH_REQUEST_URI_INVALID");
}

/// One way to spoil a pushed request.
type Change = dyn Fn(&mut AuthorizationRequest);

fn a_pushed_request_is_checked_and_single_use(backend: &str) {
    let fixture = fixture(backend);
    let verifier = verifier();
    let bank_code = fixture.customers[0].accounts[0].bank_code.clone();
    let push_with = |change: &Change| {
        let mut request = request(&verifier, &bank_code);
        change(&mut request);
        fixture
            .bank
            .push_authorization_request(&assertion(&fixture, T0_MS), &request, T0_MS)
    };
    let cases: [(&Change, &str); 6] = [
        (
            &|r| r.redirect_uri = "https://evil.test/cb".to_owned(),
            "BANK_OAUTH_REDIRECT_URI_INVALID",
        ),
        (
            &|r| r.code_challenge_method = "plain".to_owned(),
            "BANK_OAUTH_PKCE_METHOD_UNSUPPORTED",
        ),
        (
            &|r| r.code_challenge = "short".to_owned(),
            "BANK_OAUTH_PKCE_CHALLENGE_MALFORMED",
        ),
        (
            &|r| r.scope = "everything".to_owned(),
            "BANK_OAUTH_SCOPE_INVALID",
        ),
        (
            &|r| r.response_type = "token".to_owned(),
            "BANK_OAUTH_UNSUPPORTED_RESPONSE_TYPE",
        ),
        (
            &|r| r.client_id = "someone-else".to_owned(),
            "BANK_OAUTH_CLIENT_MISMATCH",
        ),
    ];
    for (change, code) in cases {
        assert_eq!(refused(push_with(change)).code(), code);
    }

    // Single use: the second consent on the same request_uri fails.
    let request_uri = push(&fixture, &verifier, T0_MS);
    let customer = login(&fixture, 0, T0_MS);
    let account = account_id(&fixture, &customer, &bank_code);
    fixture
        .bank
        .authorize(CLIENT_ID, Some(&request_uri), &customer, account, T0_MS)
        .unwrap_or_else(|error| panic!("{error}"));
    let error =
        refused(
            fixture
                .bank
                .authorize(CLIENT_ID, Some(&request_uri), &customer, account, T0_MS),
        );
    assert_eq!(error.code(), "BANK_OAUTH_REQUEST_URI_INVALID");

    // Expired after 90 s.
    let request_uri = push(&fixture, &verifier, T0_MS);
    let late_ms = T0_MS + oauth::PUSHED_REQUEST_LIFETIME_MS;
    let late_customer = login(&fixture, 0, late_ms);
    let error = refused(fixture.bank.authorize(
        CLIENT_ID,
        Some(&request_uri),
        &late_customer,
        account,
        late_ms,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_REQUEST_URI_INVALID");
}

fn a_replayed_code_is_refused_and_revokes_its_token(backend: &str) {
    let fixture = fixture(backend);
    let (response, verifier) = code(&fixture, T0_MS);
    let key = dpop_key();
    let token = exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + 1_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let proof = resource_proof(&key, &token.access_token, T0_MS + 1_500);
    use_token(&fixture, &token.access_token, Some(&proof), T0_MS + 1_500)
        .unwrap_or_else(|error| panic!("{error}"));

    let error = refused(exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + 2_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_CODE_REPLAYED");
    assert_eq!(error.oauth_error(), "invalid_grant");

    // The token the first use issued is revoked.
    let proof = resource_proof(&key, &token.access_token, T0_MS + 3_000);
    let error = refused(use_token(
        &fixture,
        &token.access_token,
        Some(&proof),
        T0_MS + 3_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");
}

fn a_missing_or_wrong_pkce_verifier_is_refused(backend: &str) {
    let fixture = fixture(backend);
    let (response, verifier) = code(&fixture, T0_MS);
    let key = dpop_key();
    let error = refused(exchange(
        &fixture,
        &response.code,
        None,
        &key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_PKCE_VERIFIER_MISSING");
    assert_eq!(error.oauth_error(), "invalid_grant");
    let other = self::verifier();
    let error = refused(exchange(
        &fixture,
        &response.code,
        Some(&other),
        &key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_PKCE_MISMATCH");
    let error = refused(exchange(
        &fixture,
        &response.code,
        Some("too-short"),
        &key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_PKCE_VERIFIER_MALFORMED");
    // The refusals changed nothing: the rightful client still gets its token.
    exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + 2_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

fn a_token_without_its_dpop_key_is_refused(backend: &str) {
    let fixture = fixture(backend);
    let (response, verifier) = code(&fixture, T0_MS);
    let key = dpop_key();
    let token = exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + 1_000,
    )
    .unwrap_or_else(|error| panic!("{error}"))
    .access_token;
    let now_ms = T0_MS + 2_000;

    let error = refused(use_token(&fixture, &token, None, now_ms));
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_MISSING");

    // A thief's own key: a valid proof, but not for the key the token is bound to.
    let thief = dpop_key();
    let error = refused(use_token(
        &fixture,
        &token,
        Some(&resource_proof(&thief, &token, now_ms)),
        now_ms,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_KEY_MISMATCH");
    assert_eq!(error.oauth_error(), "invalid_token");

    // The right key, but a proof for another method, another URL, without `ath`, or stale.
    let proofs = [
        dpop::make_proof(&key, "GET", RESOURCE_URL, Some(&token), now_ms),
        dpop::make_proof(
            &key,
            "POST",
            "https://bank.sandbox.test/v1/debits",
            Some(&token),
            now_ms,
        ),
        dpop::make_proof(&key, "POST", RESOURCE_URL, None, now_ms),
        dpop::make_proof(
            &key,
            "POST",
            RESOURCE_URL,
            Some(&token),
            now_ms - 61_000 * 2,
        ),
    ];
    for proof in proofs {
        let proof = proof.unwrap_or_else(|error| panic!("{error}"));
        let error = refused(use_token(&fixture, &token, Some(&proof), now_ms));
        assert_eq!(error.code(), "BANK_OAUTH_DPOP_INVALID");
        assert_eq!(error.oauth_error(), "invalid_dpop_proof");
    }

    // A proof is good once.
    let proof = resource_proof(&key, &token, now_ms);
    use_token(&fixture, &token, Some(&proof), now_ms).unwrap_or_else(|error| panic!("{error}"));
    let error = refused(use_token(&fixture, &token, Some(&proof), now_ms + 1));
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_REPLAYED");

    // A forged token with a good proof is nothing.
    let forged = "A".repeat(43);
    let error = refused(use_token(
        &fixture,
        &forged,
        Some(&resource_proof(&key, &forged, now_ms)),
        now_ms,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");

    // And the token expires.
    let late_ms = T0_MS + 1_000 + oauth::ACCESS_TOKEN_LIFETIME_MS;
    let error = refused(use_token(
        &fixture,
        &token,
        Some(&resource_proof(&key, &token, late_ms)),
        late_ms,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_TOKEN_INVALID");
}

fn the_token_endpoint_requires_a_dpop_proof(backend: &str) {
    let fixture = fixture(backend);
    let (response, verifier) = code(&fixture, T0_MS);
    let request = token_request(&fixture, &response.code, Some(&verifier), T0_MS + 1_000);
    let error = refused(fixture.bank.exchange_code(&request, None, T0_MS + 1_000));
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_MISSING");
    // A proof made for the resource URL is not one for the token endpoint.
    let key = dpop_key();
    let wrong = dpop::make_proof(&key, "POST", RESOURCE_URL, None, T0_MS + 1_000)
        .unwrap_or_else(|error| panic!("{error}"));
    let request = token_request(&fixture, &response.code, Some(&verifier), T0_MS + 1_000);
    let error = refused(
        fixture
            .bank
            .exchange_code(&request, Some(&wrong), T0_MS + 1_000),
    );
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_INVALID");
    // A proof whose header key is tampered with no longer verifies.
    let good = token_proof(&fixture, &key, T0_MS + 1_000);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let other = token_proof(&fixture, &dpop_key(), T0_MS + 1_000);
    parts[0] = other.split('.').next().unwrap_or_default().to_owned();
    let tampered = parts.join(".");
    let request = token_request(&fixture, &response.code, Some(&verifier), T0_MS + 1_000);
    let error = refused(
        fixture
            .bank
            .exchange_code(&request, Some(&tampered), T0_MS + 1_000),
    );
    assert_eq!(error.code(), "BANK_OAUTH_DPOP_INVALID");
    // None of it spent the code.
    exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + 2_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

fn an_expired_code_is_refused(backend: &str) {
    let fixture = fixture(backend);
    let (response, verifier) = code(&fixture, T0_MS);
    let key = dpop_key();
    let error = refused(exchange(
        &fixture,
        &response.code,
        Some(&verifier),
        &key,
        T0_MS + oauth::CODE_LIFETIME_MS + 1,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_CODE_EXPIRED");
    assert_eq!(error.oauth_error(), "invalid_grant");
    // A code that was never issued.
    let error = refused(exchange(
        &fixture,
        "never-issued",
        Some(&verifier),
        &key,
        T0_MS + 1_000,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_CODE_INVALID");
}

fn a_client_assertion_with_a_wrong_key_or_replayed_jti_is_refused(backend: &str) {
    let fixture = fixture(backend);
    let verifier = verifier();
    let bank_code = fixture.customers[0].accounts[0].bank_code.clone();
    let request = request(&verifier, &bank_code);
    let push = |assertion: &str| {
        fixture
            .bank
            .push_authorization_request(assertion, &request, T0_MS)
    };

    let stranger = dpop_key();
    let wrong_key = client_auth::make_assertion(CLIENT_ID, ISSUER, &stranger, T0_MS, 60_000)
        .unwrap_or_else(|error| panic!("{error}"));
    let error = refused(push(&wrong_key));
    assert_eq!(
        error.code(),
        "BANK_OAUTH_CLIENT_ASSERTION_SIGNATURE_INVALID"
    );
    assert_eq!(error.oauth_error(), "invalid_client");

    let once = assertion(&fixture, T0_MS);
    push(&once).unwrap_or_else(|error| panic!("{error}"));
    let error = refused(push(&once));
    assert_eq!(error.code(), "BANK_OAUTH_CLIENT_ASSERTION_REPLAYED");

    let too_long =
        client_auth::make_assertion(CLIENT_ID, ISSUER, &fixture.client_key, T0_MS, 10 * 60_000)
            .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        refused(push(&too_long)).code(),
        "BANK_OAUTH_CLIENT_ASSERTION_EXPIRED"
    );
    let expired = client_auth::make_assertion(
        CLIENT_ID,
        ISSUER,
        &fixture.client_key,
        T0_MS - 120_000,
        60_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        refused(push(&expired)).code(),
        "BANK_OAUTH_CLIENT_ASSERTION_EXPIRED"
    );
    let other_audience = client_auth::make_assertion(
        CLIENT_ID,
        "https://other-bank.test",
        &fixture.client_key,
        T0_MS,
        60_000,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        refused(push(&other_audience)).code(),
        "BANK_OAUTH_INVALID_CLIENT"
    );
    let unknown = client_auth::make_assertion("nobody", ISSUER, &fixture.client_key, T0_MS, 60_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(refused(push(&unknown)).code(), "BANK_OAUTH_INVALID_CLIENT");
    assert_eq!(
        refused(push("not.a.jwt")).code(),
        "BANK_OAUTH_INVALID_CLIENT"
    );

    // The token endpoint checks the assertion type and the assertion too.
    let (response, verifier) = code(&fixture, T0_MS);
    let key = dpop_key();
    let mut request = token_request(&fixture, &response.code, Some(&verifier), T0_MS);
    request.client_assertion = wrong_key;
    let error = refused(fixture.bank.exchange_code(
        &request,
        Some(&token_proof(&fixture, &key, T0_MS)),
        T0_MS,
    ));
    assert_eq!(
        error.code(),
        "BANK_OAUTH_CLIENT_ASSERTION_SIGNATURE_INVALID"
    );
}

fn the_bank_login_needs_both_factors_and_the_customers_own_account(backend: &str) {
    let fixture = fixture(backend);
    let customer = &fixture.customers[0];
    let good_code =
        oauth::totp_code(&customer.totp_secret, T0_MS).unwrap_or_else(|| panic!("no code"));
    let wrong_code = format!(
        "{:06}",
        (good_code.parse::<u32>().unwrap_or(0) + 1) % 1_000_000
    );
    let attempts = [
        (
            customer.online_id.as_str(),
            "wrong-password-here",
            good_code.as_str(),
        ),
        (
            customer.online_id.as_str(),
            customer.password.as_str(),
            wrong_code.as_str(),
        ),
        (
            "nobody-here",
            customer.password.as_str(),
            good_code.as_str(),
        ),
    ];
    for (online_id, password, code) in attempts {
        let error = refused(fixture.bank.authenticate_customer(
            online_id,
            &SecretString::from(password.to_owned()),
            code,
            T0_MS,
        ));
        assert_eq!(error.code(), "BANK_LOGIN_FAILED");
    }

    // Customer 1 cannot consent with customer 0's account, nor with an account at another bank.
    let verifier = verifier();
    let request_uri = push(&fixture, &verifier, T0_MS);
    let other = login(&fixture, 1, T0_MS);
    let owner = login(&fixture, 0, T0_MS);
    let bank_code = fixture.customers[0].accounts[0].bank_code.clone();
    let owners_account = account_id(&fixture, &owner, &bank_code);
    let error = refused(fixture.bank.authorize(
        CLIENT_ID,
        Some(&request_uri),
        &other,
        owners_account,
        T0_MS,
    ));
    assert_eq!(error.code(), "BANK_OAUTH_ACCOUNT_NOT_ELIGIBLE");
    let request_uri = push(&fixture, &verifier, T0_MS);
    let second_bank = fixture.customers[0].accounts[1].bank_code.clone();
    let elsewhere = account_id(&fixture, &owner, &second_bank);
    let error =
        refused(
            fixture
                .bank
                .authorize(CLIENT_ID, Some(&request_uri), &owner, elsewhere, T0_MS),
        );
    assert_eq!(error.code(), "BANK_OAUTH_ACCOUNT_NOT_ELIGIBLE");
    // A login from long ago does not consent.
    let late_ms = T0_MS + oauth::LOGIN_FRESHNESS_MS + 1;
    let error = refused(fixture.bank.authorize(
        CLIENT_ID,
        Some(&request_uri),
        &owner,
        owners_account,
        late_ms,
    ));
    assert_eq!(error.code(), "BANK_LOGIN_STALE");
}

fn a_totp_code_is_good_once_and_failures_lock_the_login(backend: &str) {
    let fixture = fixture(backend);
    let customer = &fixture.customers[2];
    let attempt = |password: &str, now_ms: i64| {
        let code = oauth::totp_code(&customer.totp_secret, now_ms)
            .unwrap_or_else(|| panic!("no TOTP code"));
        fixture.bank.authenticate_customer(
            &customer.online_id,
            &SecretString::from(password.to_owned()),
            &code,
            now_ms,
        )
    };
    let signed_in = attempt(&customer.password, T0_MS).unwrap_or_else(|error| panic!("{error}"));
    // The same code again, in the same 30 s step: refused.
    assert_eq!(
        refused(attempt(&customer.password, T0_MS + 1_000)).code(),
        "BANK_LOGIN_FAILED"
    );

    // Five failures in a row lock the login, whatever comes next, and the customer is told.
    let start_ms = T0_MS + 60_000;
    for failure in 0..oauth::LOGIN_FAILURES_MAX {
        let error = refused(attempt("wrong-password-here", start_ms + failure * 30_000));
        assert_eq!(error.code(), "BANK_LOGIN_FAILED");
    }
    let locked_ms = start_ms + oauth::LOGIN_FAILURES_MAX * 30_000;
    assert_eq!(
        refused(attempt(&customer.password, locked_ms)).code(),
        "BANK_LOGIN_FAILED"
    );
    let notices = fixture
        .bank
        .notices(signed_in.customer_id())
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        notices
            .iter()
            .filter(|notice| notice.kind == "login_locked")
            .count(),
        1
    );
    // After the lock, the right password and a fresh code open it again.
    let open_ms = locked_ms + oauth::LOGIN_LOCK_MS;
    attempt(&customer.password, open_ms).unwrap_or_else(|error| panic!("{error}"));
}
