//! The bank's account resources on both stores: holder match (match / no match and nothing
//! more, kana normalised, scope enforced), debits and credits under an Idempotency-Key
//! (retries get the saved answer, a reused key with another body is refused, a debit beyond
//! the balance is rejected and kept, concurrent debits never overdraw, every debit told to
//! the customer), lookup by key for reconciliation, and the same over HTTP.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kinko_bank_sandbox::client_auth;
use kinko_bank_sandbox::holder::HolderMatchRequest;
use kinko_bank_sandbox::http::{HttpState, router};
use kinko_bank_sandbox::jws;
use kinko_bank_sandbox::oauth::{self, ResourceGrant, TokenRequest};
use kinko_bank_sandbox::payments::{PaymentKind, PaymentRequest, PaymentResult, PaymentStatus};
use kinko_bank_sandbox::resource::ResourceError;
use kinko_bank_sandbox::{Bank, dpop, pkce, store};
use kinko_core::ManualClock;
use kinko_store::sql::{Tx, Value};
use p256::ecdsa::SigningKey;
use secrecy::SecretString;
use tower::ServiceExt as _;

const T0_MS: i64 = 1_790_000_000_000;
const ISSUER: &str = "https://bank.sandbox.test";
use common::REDIRECT_URI;
const RESOURCE_URL: &str = "https://bank.sandbox.test/v1/debits";

struct Fixture {
    bank: Arc<Bank>,
    client_key: SigningKey,
    other_client_key: SigningKey,
    customers: Vec<store::DemoCustomer>,
    _dir: kinko_store::testing::Scratch,
}

fn fixture(backend: &str) -> Fixture {
    let (location, dir) = kinko_store::testing::location(backend);
    let bank = Bank::open(&location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let customers = store::seed(bank.database(), T0_MS).unwrap_or_else(|error| panic!("{error}"));
    let client_key = common::registered(&bank, "kinko", "Kinko ウォレット");
    let other_client_key = common::registered(&bank, "other", "Other Pay");
    Fixture {
        bank: Arc::new(bank),
        client_key,
        other_client_key,
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
    holder_match_answers_match_or_no_match_and_nothing_more,
    holder_match_needs_its_scope_and_answers_for_the_tokens_account_only,
    a_debit_settles_once_per_key_and_tells_the_customer,
    a_debit_beyond_the_balance_is_rejected_and_kept,
    a_reused_key_with_another_body_is_refused,
    bad_payment_input_is_refused_and_changes_nothing,
    credits_need_their_scope_and_add_to_the_balance,
    lookup_by_key_is_for_the_same_client_and_account,
    fifty_parallel_debits_never_overdraw,
    resources_over_http,
);

/// An access token with its DPoP key for one of a customer's accounts.
struct Token {
    access_token: String,
    key: SigningKey,
    account_id: uuid::Uuid,
    customer_id: uuid::Uuid,
}

/// PAR, login, consent and token exchange by `client_id` for customer `customer`'s account
/// `account` with `scope`.
fn token(
    fixture: &Fixture,
    client_id: &str,
    customer: usize,
    account: usize,
    scope: &str,
    now_ms: i64,
) -> Token {
    let client_key = if client_id == "kinko" {
        &fixture.client_key
    } else {
        &fixture.other_client_key
    };
    let assertion = || {
        client_auth::make_assertion(client_id, ISSUER, client_key, now_ms, 60_000)
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let demo = &fixture.customers[customer];
    let bank_code = demo.accounts[account].bank_code.clone();
    let verifier = kinko_bank_sandbox::random::token().unwrap_or_else(|error| panic!("{error}"));
    let request_uri = fixture
        .bank
        .push_authorization_request(
            &assertion(),
            &oauth::AuthorizationRequest {
                response_type: "code".to_owned(),
                client_id: client_id.to_owned(),
                redirect_uri: REDIRECT_URI.to_owned(),
                scope: scope.to_owned(),
                code_challenge: pkce::challenge_for(&verifier),
                code_challenge_method: "S256".to_owned(),
                state: "s".to_owned(),
                bank_code: bank_code.clone(),
            },
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"))
        .request_uri;
    // Each login spends a TOTP step: log in at a step of its own.
    let login_ms = now_ms;
    let code = oauth::totp_code(&demo.totp_secret, login_ms).unwrap_or_else(|| panic!("no TOTP"));
    let customer_login = fixture
        .bank
        .authenticate_customer(
            &demo.online_id,
            &SecretString::from(demo.password.clone()),
            &code,
            login_ms,
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
    let issued = fixture
        .bank
        .exchange_code(
            &TokenRequest {
                grant_type: "authorization_code".to_owned(),
                code: response.code,
                redirect_uri: REDIRECT_URI.to_owned(),
                code_verifier: Some(verifier),
                client_assertion_type: client_auth::ASSERTION_TYPE.to_owned(),
                client_assertion: assertion(),
            },
            Some(&proof),
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    Token {
        access_token: issued.access_token,
        key,
        account_id,
        customer_id: customer_login.customer_id(),
    }
}

/// The grant a token gives with a fresh proof.
fn grant(fixture: &Fixture, token: &Token, now_ms: i64) -> ResourceGrant {
    let proof = dpop::make_proof(
        &token.key,
        "POST",
        RESOURCE_URL,
        Some(&token.access_token),
        now_ms,
    )
    .unwrap_or_else(|error| panic!("{error}"));
    fixture
        .bank
        .authorize_resource(
            &token.access_token,
            Some(&proof),
            "POST",
            RESOURCE_URL,
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"))
}

fn holder(kana_name: &str, birth_date: &str) -> HolderMatchRequest {
    HolderMatchRequest {
        kana_name: kana_name.to_owned(),
        birth_date: birth_date.to_owned(),
    }
}

fn paying(amount_yen: i64, description: &str) -> PaymentRequest {
    PaymentRequest {
        amount_yen,
        description: description.to_owned(),
        not_after_ms: None,
    }
}

fn refused<T: std::fmt::Debug>(outcome: Result<T, ResourceError>) -> ResourceError {
    match outcome {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(error) => error,
    }
}

fn balance_yen(fixture: &Fixture, account_id: uuid::Uuid) -> i64 {
    fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| store::account(tx, account_id))
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("no account"))
        .balance_yen
}

fn set_balance(fixture: &Fixture, account_id: uuid::Uuid, balance_yen: i64) {
    fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE bank_accounts SET balance_yen = $2 WHERE id = $1",
                &[Value::Uuid(account_id.as_u128()), balance_yen.into()],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
}

fn notice_kinds(fixture: &Fixture, customer_id: uuid::Uuid, kind: &str) -> Vec<String> {
    fixture
        .bank
        .notices(customer_id)
        .unwrap_or_else(|error| panic!("{error}"))
        .into_iter()
        .filter(|notice| notice.kind == kind)
        .map(|notice| notice.body)
        .collect()
}

fn holder_match_answers_match_or_no_match_and_nothing_more(backend: &str) {
    let fixture = fixture(backend);
    let token = token(&fixture, "kinko", 0, 0, "holder_match", T0_MS);
    let grant = grant(&fixture, &token, T0_MS + 1_000);
    let demo = &fixture.customers[0];
    let matches = |request: HolderMatchRequest| {
        fixture
            .bank
            .holder_match(&grant, &request)
            .unwrap_or_else(|error| panic!("{error}"))
    };
    assert!(matches(holder(&demo.holder_kana, &demo.birth_date)));
    // The same name written another way: half-width, hiragana, no space, spaces around.
    let half_width = half_width_of(&demo.holder_kana);
    assert!(
        matches(holder(&half_width, &demo.birth_date)),
        "{half_width}"
    );
    let no_space: String = demo.holder_kana.chars().filter(|c| *c != ' ').collect();
    assert!(matches(holder(&no_space, &demo.birth_date)));
    let hiragana: String = demo
        .holder_kana
        .chars()
        .map(|c| match c {
            '\u{30A1}'..='\u{30F6}' => char::from_u32(u32::from(c) - 0x60).unwrap_or(c),
            other => other,
        })
        .collect();
    assert!(matches(holder(&hiragana, &demo.birth_date)), "{hiragana}");
    // Another name or another birth date: no match.
    assert!(!matches(holder("ベツジン ジロウ", &demo.birth_date)));
    assert!(!matches(holder(&demo.holder_kana, "1970-01-02")));
    assert!(!matches(holder("", &demo.birth_date)));
    let other = &fixture.customers[1];
    assert!(!matches(holder(&other.holder_kana, &other.birth_date)));
    // Malformed input is refused, not answered.
    let error = refused(
        fixture
            .bank
            .holder_match(&grant, &holder(&"ア".repeat(101), &demo.birth_date)),
    );
    assert_eq!(error.code(), "BANK_REQUEST_INVALID");
}

/// Full-width katakana to half-width for the kana the demo names use (test helper).
fn half_width_of(kana: &str) -> String {
    const FULL: &str = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワン";
    const HALF: &str = "ｱｲｳｴｵｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓﾔﾕﾖﾗﾘﾙﾚﾛﾜﾝ";
    const VOICED: &str = "ガギグゲゴザジズゼゾダヂヅデドバビブベボ";
    const VOICED_BASE: &str = "ｶｷｸｹｺｻｼｽｾｿﾀﾁﾂﾃﾄﾊﾋﾌﾍﾎ";
    let mut out = String::new();
    for c in kana.chars() {
        if let Some(index) = FULL.chars().position(|f| f == c) {
            out.extend(HALF.chars().nth(index));
        } else if let Some(index) = VOICED.chars().position(|f| f == c) {
            out.extend(VOICED_BASE.chars().nth(index));
            out.push('ﾞ');
        } else {
            out.push(c);
        }
    }
    out
}

fn holder_match_needs_its_scope_and_answers_for_the_tokens_account_only(backend: &str) {
    let fixture = fixture(backend);
    let demo = &fixture.customers[0];
    // A token without holder_match is refused.
    let debits_only = token(&fixture, "kinko", 0, 0, "debits", T0_MS);
    let grant_without = grant(&fixture, &debits_only, T0_MS + 1_000);
    let error = refused(
        fixture
            .bank
            .holder_match(&grant_without, &holder(&demo.holder_kana, &demo.birth_date)),
    );
    assert_eq!(error.code(), "BANK_SCOPE_MISSING");
    // A token for another customer's account cannot confirm this customer's identity.
    let other = token(&fixture, "kinko", 1, 0, "holder_match", T0_MS + 30_000);
    let other_grant = grant(&fixture, &other, T0_MS + 31_000);
    let matched = fixture
        .bank
        .holder_match(&other_grant, &holder(&demo.holder_kana, &demo.birth_date))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!matched);
    // A grant that does not come from a token for that account is refused.
    let forged = ResourceGrant {
        account_id: other.account_id,
        ..grant(&fixture, &debits_only, T0_MS + 32_000)
    };
    let forged = ResourceGrant {
        scope: "holder_match".to_owned(),
        ..forged
    };
    let error = refused(
        fixture
            .bank
            .holder_match(&forged, &holder(&demo.holder_kana, &demo.birth_date)),
    );
    assert_eq!(error.code(), "BANK_PAYMENT_NOT_FOUND");
    // A token presented without its proof never reaches the check.
    let error = fixture
        .bank
        .authorize_resource(
            &other.access_token,
            None,
            "POST",
            RESOURCE_URL,
            T0_MS + 33_000,
        )
        .map(|_| ())
        .map_err(ResourceError::from);
    assert_eq!(refused(error).code(), "BANK_OAUTH_DPOP_MISSING");
}

fn a_debit_settles_once_per_key_and_tells_the_customer(backend: &str) {
    let fixture = fixture(backend);
    let token = token(&fixture, "kinko", 0, 0, "holder_match debits", T0_MS);
    let grant = grant(&fixture, &token, T0_MS + 1_000);
    set_balance(&fixture, token.account_id, 10_000);
    let first = fixture
        .bank
        .debit(
            &grant,
            "charge-1",
            &paying(3_000, "チャージ"),
            T0_MS + 2_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(first.status, PaymentStatus::Settled);
    assert_eq!(first.balance_after_yen, Some(7_000));
    assert_eq!(first.reason, None);
    // A retry with the same key and body: the same answer, no second debit.
    let retry = fixture
        .bank
        .debit(
            &grant,
            "charge-1",
            &paying(3_000, "チャージ"),
            T0_MS + 3_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(retry, first);
    assert_eq!(balance_yen(&fixture, token.account_id), 7_000);
    // The customer is told once, with the amount and the wallet's name.
    let notices = notice_kinds(&fixture, token.customer_id, "debit_settled");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("3,000円"), "{}", notices[0]);
    assert!(notices[0].contains("Kinko ウォレット"), "{}", notices[0]);
    // Another key is another debit.
    let second = fixture
        .bank
        .debit(
            &grant,
            "charge-2",
            &paying(3_000, "チャージ"),
            T0_MS + 4_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_ne!(second.id, first.id);
    assert_eq!(second.balance_after_yen, Some(4_000));
    assert_eq!(balance_yen(&fixture, token.account_id), 4_000);
}

fn a_debit_beyond_the_balance_is_rejected_and_kept(backend: &str) {
    let fixture = fixture(backend);
    let token = token(&fixture, "kinko", 0, 0, "debits", T0_MS);
    let grant = grant(&fixture, &token, T0_MS + 1_000);
    set_balance(&fixture, token.account_id, 1_000);
    let rejected = fixture
        .bank
        .debit(&grant, "big", &paying(1_001, "チャージ"), T0_MS + 2_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(rejected.status, PaymentStatus::Rejected);
    assert_eq!(rejected.reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(rejected.balance_after_yen, None);
    assert_eq!(balance_yen(&fixture, token.account_id), 1_000);
    // Money arrives; the retry still gets the saved rejection, not a late success.
    set_balance(&fixture, token.account_id, 50_000);
    let retry = fixture
        .bank
        .debit(&grant, "big", &paying(1_001, "チャージ"), T0_MS + 3_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(retry, rejected);
    assert_eq!(balance_yen(&fixture, token.account_id), 50_000);
    assert_eq!(
        fixture
            .bank
            .payment(&grant, PaymentKind::Debit, "big")
            .unwrap_or_else(|error| panic!("{error}")),
        rejected
    );
    // The whole balance can go: exactly to zero is fine.
    let all = fixture
        .bank
        .debit(&grant, "all", &paying(50_000, "チャージ"), T0_MS + 4_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(all.balance_after_yen, Some(0));
    assert_eq!(
        notice_kinds(&fixture, token.customer_id, "debit_rejected").len(),
        1
    );
}

fn a_reused_key_with_another_body_is_refused(backend: &str) {
    let fixture = fixture(backend);
    let token = token(&fixture, "kinko", 0, 0, "debits", T0_MS);
    let grant = grant(&fixture, &token, T0_MS + 1_000);
    let before = balance_yen(&fixture, token.account_id);
    fixture
        .bank
        .debit(&grant, "key-1", &paying(1_000, "チャージ"), T0_MS + 2_000)
        .unwrap_or_else(|error| panic!("{error}"));
    for other in [paying(2_000, "チャージ"), paying(1_000, "別の用途")] {
        let error = refused(fixture.bank.debit(&grant, "key-1", &other, T0_MS + 3_000));
        assert_eq!(error.code(), "BANK_IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(balance_yen(&fixture, token.account_id), before - 1_000);
    // The same key on the credit side is a key of its own.
    let credit_token = self::token(&fixture, "kinko", 0, 0, "credits", T0_MS + 30_000);
    let credit_grant = self::grant(&fixture, &credit_token, T0_MS + 31_000);
    let credit = fixture
        .bank
        .credit(
            &credit_grant,
            "key-1",
            &paying(500, "払い戻し"),
            T0_MS + 32_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(credit.status, PaymentStatus::Settled);
}

fn bad_payment_input_is_refused_and_changes_nothing(backend: &str) {
    let fixture = fixture(backend);
    let token = token(&fixture, "kinko", 0, 0, "debits", T0_MS);
    let grant = grant(&fixture, &token, T0_MS + 1_000);
    let before = balance_yen(&fixture, token.account_id);
    let long_key = "k".repeat(256);
    let cases: Vec<(&str, PaymentRequest, &str)> = vec![
        ("ok-key", paying(0, "チャージ"), "BANK_REQUEST_INVALID"),
        ("ok-key", paying(-5, "チャージ"), "BANK_REQUEST_INVALID"),
        ("ok-key", paying(100, ""), "BANK_REQUEST_INVALID"),
        ("ok-key", paying(100, "a\nb"), "BANK_REQUEST_INVALID"),
        (
            "ok-key",
            paying(100, &"x".repeat(141)),
            "BANK_REQUEST_INVALID",
        ),
        ("", paying(100, "チャージ"), "BANK_IDEMPOTENCY_KEY_INVALID"),
        (
            "has space",
            paying(100, "チャージ"),
            "BANK_IDEMPOTENCY_KEY_INVALID",
        ),
        (
            &long_key,
            paying(100, "チャージ"),
            "BANK_IDEMPOTENCY_KEY_INVALID",
        ),
    ];
    for (key, request, code) in cases {
        let error = refused(fixture.bank.debit(&grant, key, &request, T0_MS + 2_000));
        assert_eq!(error.code(), code, "{key:?} {request:?}");
    }
    assert_eq!(balance_yen(&fixture, token.account_id), before);
    let error = refused(fixture.bank.payment(&grant, PaymentKind::Debit, "ok-key"));
    assert_eq!(error.code(), "BANK_PAYMENT_NOT_FOUND");
}

fn credits_need_their_scope_and_add_to_the_balance(backend: &str) {
    let fixture = fixture(backend);
    let debits = token(&fixture, "kinko", 0, 0, "debits", T0_MS);
    let debit_grant = grant(&fixture, &debits, T0_MS + 1_000);
    let error = refused(fixture.bank.credit(
        &debit_grant,
        "c1",
        &paying(100, "払い戻し"),
        T0_MS + 2_000,
    ));
    assert_eq!(error.code(), "BANK_SCOPE_MISSING");
    let credits = token(&fixture, "kinko", 0, 0, "credits", T0_MS + 30_000);
    let credit_grant = grant(&fixture, &credits, T0_MS + 31_000);
    let error = refused(fixture.bank.debit(
        &credit_grant,
        "d1",
        &paying(100, "チャージ"),
        T0_MS + 32_000,
    ));
    assert_eq!(error.code(), "BANK_SCOPE_MISSING");
    set_balance(&fixture, credits.account_id, 1_000);
    let credit = fixture
        .bank
        .credit(
            &credit_grant,
            "c1",
            &paying(2_500, "払い戻し"),
            T0_MS + 33_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(credit.balance_after_yen, Some(3_500));
    // An overflowing credit is rejected, never wrapped.
    set_balance(&fixture, credits.account_id, i64::MAX - 10);
    let overflow = fixture
        .bank
        .credit(&credit_grant, "c2", &paying(11, "払い戻し"), T0_MS + 34_000)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(overflow.status, PaymentStatus::Rejected);
    assert_eq!(overflow.reason.as_deref(), Some("balance_limit"));
    assert_eq!(balance_yen(&fixture, credits.account_id), i64::MAX - 10);
}

fn lookup_by_key_is_for_the_same_client_and_account(backend: &str) {
    let fixture = fixture(backend);
    let mine = token(&fixture, "kinko", 0, 0, "debits credits", T0_MS);
    let my_grant = grant(&fixture, &mine, T0_MS + 1_000);
    let debit = fixture
        .bank
        .debit(
            &my_grant,
            "recon-1",
            &paying(1_234, "チャージ"),
            T0_MS + 2_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    let found = fixture
        .bank
        .payment(&my_grant, PaymentKind::Debit, "recon-1")
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(found, debit);
    let error = refused(
        fixture
            .bank
            .payment(&my_grant, PaymentKind::Credit, "recon-1"),
    );
    assert_eq!(error.code(), "BANK_PAYMENT_NOT_FOUND");
    let error = refused(
        fixture
            .bank
            .payment(&my_grant, PaymentKind::Debit, "recon-2"),
    );
    assert_eq!(error.code(), "BANK_PAYMENT_NOT_FOUND");
    // Another client on the same account does not see it, and may use the same key.
    let theirs = token(&fixture, "other", 0, 0, "debits", T0_MS + 30_000);
    let their_grant = grant(&fixture, &theirs, T0_MS + 31_000);
    let error = refused(
        fixture
            .bank
            .payment(&their_grant, PaymentKind::Debit, "recon-1"),
    );
    assert_eq!(error.code(), "BANK_PAYMENT_NOT_FOUND");
    let their_debit = fixture
        .bank
        .debit(
            &their_grant,
            "recon-1",
            &paying(1, "テスト"),
            T0_MS + 32_000,
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_ne!(their_debit.id, debit.id);
    let notices = notice_kinds(&fixture, mine.customer_id, "debit_settled");
    assert!(
        notices.iter().any(|body| body.contains("Other Pay")),
        "{notices:?}"
    );
}

fn fifty_parallel_debits_never_overdraw(backend: &str) {
    let fixture = fixture(backend);
    let token = token(&fixture, "kinko", 0, 0, "debits", T0_MS);
    let grant = grant(&fixture, &token, T0_MS + 1_000);
    set_balance(&fixture, token.account_id, 10_000);
    let results: Vec<PaymentResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|index| {
                let bank = Arc::clone(&fixture.bank);
                let grant = grant.clone();
                scope.spawn(move || {
                    bank.debit(
                        &grant,
                        &format!("parallel-{index}"),
                        &paying(1_000, "チャージ"),
                        T0_MS + 2_000,
                    )
                    .unwrap_or_else(|error| panic!("{error}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("a debit panicked")))
            .collect()
    });
    let settled = results
        .iter()
        .filter(|result| result.status == PaymentStatus::Settled)
        .count();
    assert_eq!(settled, 10);
    assert!(
        results
            .iter()
            .filter(|result| result.status == PaymentStatus::Rejected)
            .all(|result| result.reason.as_deref() == Some("insufficient_funds"))
    );
    assert_eq!(balance_yen(&fixture, token.account_id), 0);
    let mut balances: Vec<i64> = results
        .iter()
        .filter_map(|result| result.balance_after_yen)
        .collect();
    balances.sort_unstable();
    assert_eq!(
        balances,
        (0..10).map(|step| step * 1_000).collect::<Vec<_>>()
    );
}

/// The same over HTTP: holder match, a debit with its key, the replay, the 409, the lookup,
/// and the refusals without a proof, without a key or with a malformed body.
fn resources_over_http(backend: &str) {
    let fixture = Arc::new(fixture(backend));
    let token = token(&fixture, "kinko", 0, 0, "holder_match debits", T0_MS);
    set_balance(&fixture, token.account_id, 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    runtime.block_on(over_http(Arc::clone(&fixture), &token));
    drop(runtime);
    // Two requests with one key debited once; the refused ones not at all.
    assert_eq!(balance_yen(&fixture, token.account_id), 6_000);
}

async fn send(
    fixture: &Fixture,
    token: &Token,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
    with_proof: bool,
) -> (StatusCode, serde_json::Value) {
    let now_ms = T0_MS + 5_000;
    let clock = ManualClock::new(u64::try_from(now_ms).unwrap_or(0) * 1_000_000);
    let app = router(HttpState {
        bank: Arc::clone(&fixture.bank),
        clock: Arc::new(clock),
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::AUTHORIZATION,
            format!("DPoP {}", token.access_token),
        );
    if with_proof {
        let proof = dpop::make_proof(
            &token.key,
            method,
            &format!("{ISSUER}{path}"),
            Some(&token.access_token),
            now_ms,
        )
        .unwrap_or_else(|error| panic!("{error}"));
        builder = builder.header("DPoP", proof);
    }
    if let Some(key) = key {
        builder = builder.header("Idempotency-Key", key);
    }
    let request = builder
        .body(Body::from(body.to_owned()))
        .unwrap_or_else(|error| panic!("{error}"));
    let response = app
        .oneshot(request)
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

async fn over_http(fixture: Arc<Fixture>, token: &Token) {
    let demo = fixture.customers[0].clone();
    let body = serde_json::json!({"kana_name": demo.holder_kana, "birth_date": demo.birth_date})
        .to_string();
    let (status, json) = send(
        &fixture,
        token,
        "POST",
        "/v1/holder-match",
        None,
        &body,
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json, serde_json::json!({"match": true}));
    let wrong =
        serde_json::json!({"kana_name": demo.holder_kana, "birth_date": "1900-01-01"}).to_string();
    let (status, json) = send(
        &fixture,
        token,
        "POST",
        "/v1/holder-match",
        None,
        &wrong,
        true,
    )
    .await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, serde_json::json!({"match": false}))
    );
    let (status, json) = send(
        &fixture,
        token,
        "POST",
        "/v1/holder-match",
        None,
        &body,
        false,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["code"], "BANK_OAUTH_DPOP_MISSING");
    let (status, json) = send(&fixture, token, "POST", "/v1/holder-match", None, "{", true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["code"], "BANK_REQUEST_INVALID");

    let debit = r#"{"amount_yen": 4000, "description": "チャージ"}"#;
    let (status, first) = send(
        &fixture,
        token,
        "POST",
        "/v1/debits",
        Some("http-1"),
        debit,
        true,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["status"], "settled");
    assert_eq!(first["balance_after_yen"], 6_000);
    let (status, again) = send(
        &fixture,
        token,
        "POST",
        "/v1/debits",
        Some("http-1"),
        debit,
        true,
    )
    .await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    let other = r#"{"amount_yen": 5000, "description": "チャージ"}"#;
    let (status, json) = send(
        &fixture,
        token,
        "POST",
        "/v1/debits",
        Some("http-1"),
        other,
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(json["code"], "BANK_IDEMPOTENCY_KEY_REUSED");
    let (status, json) = send(&fixture, token, "POST", "/v1/debits", None, debit, true).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["code"], "BANK_IDEMPOTENCY_KEY_INVALID");
    let fraction = r#"{"amount_yen": 1.5, "description": "チャージ"}"#;
    let (status, json) = send(
        &fixture,
        token,
        "POST",
        "/v1/debits",
        Some("http-2"),
        fraction,
        true,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["code"], "BANK_REQUEST_INVALID");
    let (status, json) = send(
        &fixture,
        token,
        "POST",
        "/v1/credits",
        Some("http-3"),
        debit,
        true,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json["code"], "BANK_SCOPE_MISSING");
    let (status, json) = send(&fixture, token, "GET", "/v1/debits/http-1", None, "", true).await;
    assert_eq!((status, &json), (StatusCode::OK, &first));
    let (status, json) = send(&fixture, token, "GET", "/v1/debits/unknown", None, "", true).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["code"], "BANK_PAYMENT_NOT_FOUND");
}
