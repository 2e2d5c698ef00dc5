//! The legacy verify endpoint on both stores: a match only when every field is right, one
//! answer whichever field was wrong, the bank's own lock after five failures in a row per
//! account (then no match even for the right data, and the customer told), malformed input
//! refused without counting, client authentication required, and the PIN never shown.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use kinko_bank_sandbox::Bank;
use kinko_bank_sandbox::client_auth::{self, ASSERTION_TYPE};
use kinko_bank_sandbox::http::{HttpState, router};
use kinko_bank_sandbox::jws;
use kinko_bank_sandbox::legacy::LegacyVerifyRequest;
use kinko_bank_sandbox::store::{self, DemoCustomer};
use kinko_core::ManualClock;
use kinko_store::sql::Tx;
use p256::ecdsa::SigningKey;
use secrecy::SecretString;
use tower::ServiceExt as _;

const T0_MS: i64 = 1_790_000_000_000;
const ISSUER: &str = "https://bank.sandbox.test";

struct Fixture {
    bank: Arc<Bank>,
    client_key: SigningKey,
    customers: Vec<DemoCustomer>,
    _dir: kinko_store::testing::Scratch,
}

fn fixture(backend: &str) -> Fixture {
    let (location, dir) = kinko_store::testing::location(backend);
    let bank = Bank::open(&location, ISSUER).unwrap_or_else(|error| panic!("{error}"));
    let customers = store::seed(bank.database(), T0_MS).unwrap_or_else(|error| panic!("{error}"));
    let client_key = common::registered(&bank, "kinko", "Kinko ウォレット");
    Fixture {
        bank: Arc::new(bank),
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
    every_field_right_matches_and_any_wrong_field_does_not,
    five_failures_lock_the_account_and_tell_the_customer,
    malformed_input_and_bad_clients_are_refused_without_counting,
    parallel_guesses_lock_the_account_once,
    legacy_verify_over_http,
);

/// [`right`], where a local of that name hides it.
fn right_of(fixture: &Fixture, index: usize) -> LegacyVerifyRequest {
    right(fixture, index)
}

/// The right data for customer `index`'s first account.
fn right(fixture: &Fixture, index: usize) -> LegacyVerifyRequest {
    let customer = &fixture.customers[index];
    let account = &customer.accounts[0];
    LegacyVerifyRequest {
        bank_code: account.bank_code.clone(),
        branch: account.branch.clone(),
        account_type: account.kind.as_str().to_owned(),
        account_number: account.number.clone(),
        pin: SecretString::from(account.pin.clone()),
        kana_name: customer.holder_kana.clone(),
        birth_date: customer.birth_date.clone(),
    }
}

fn wrong_pin(pin: &str) -> SecretString {
    let first = pin.chars().next().unwrap_or('0');
    let other = if first == '9' { '0' } else { '9' };
    SecretString::from(format!("{other}{}", &pin[1..]))
}

fn assertion(fixture: &Fixture, now_ms: i64) -> String {
    client_auth::make_assertion("kinko", ISSUER, &fixture.client_key, now_ms, 60_000)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn verify(fixture: &Fixture, request: &LegacyVerifyRequest) -> bool {
    verified_ref(fixture, request).is_some()
}

fn verified_ref(fixture: &Fixture, request: &LegacyVerifyRequest) -> Option<String> {
    fixture
        .bank
        .legacy_verify(&assertion(fixture, T0_MS), request, T0_MS)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn notices(fixture: &Fixture, index: usize, kind: &str) -> usize {
    let customer_id = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| store::customer_id(tx, &fixture.customers[index].online_id))
        .unwrap_or_else(|error| panic!("{error}"))
        .unwrap_or_else(|| panic!("no customer"));
    fixture
        .bank
        .notices(customer_id)
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .filter(|notice| notice.kind == kind)
        .count()
}

fn every_field_right_matches_and_any_wrong_field_does_not(backend: &str) {
    let fixture = fixture(backend);
    let right = right(&fixture, 0);
    assert!(verify(&fixture, &right));
    // The customer hears of it.
    assert_eq!(notices(&fixture, 0, "legacy_verified"), 1);
    // The kana name may be written the other Zengin way.
    let spaced = LegacyVerifyRequest {
        kana_name: right.kana_name.replace(' ', "　"),
        ..right.clone()
    };
    // A match names the account by its pairwise reference: the same each time, another for
    // another account.
    let reference = verified_ref(&fixture, &spaced);
    assert!(
        reference.as_ref().is_some_and(|text| text.len() >= 43),
        "{reference:?}"
    );
    assert_eq!(verified_ref(&fixture, &right), reference);
    assert_ne!(verified_ref(&fixture, &right_of(&fixture, 1)), reference);
    let pin = fixture.customers[0].accounts[0].pin.clone();
    let wrong = [
        LegacyVerifyRequest {
            pin: wrong_pin(&pin),
            ..right.clone()
        },
        LegacyVerifyRequest {
            kana_name: "ベツジン ジロウ".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            birth_date: "1901-01-01".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            account_number: "9999999".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            account_type: "toza".to_owned(),
            ..right.clone()
        },
    ];
    // Each wrong field gets the same answer. Three of them count on this account (the
    // other two name no account at all), short of the lock, so the right data still matches.
    for request in &wrong {
        assert!(!verify(&fixture, request));
    }
    assert!(verify(&fixture, &right));
    // Another customer's data on this account does not match.
    let other = self::right(&fixture, 1);
    let mixed = LegacyVerifyRequest {
        kana_name: other.kana_name,
        birth_date: other.birth_date,
        ..right.clone()
    };
    assert!(!verify(&fixture, &mixed));
    // The PIN never shows in a request's debug form.
    assert!(!format!("{right:?}").contains(&pin), "{right:?}");
}

fn five_failures_lock_the_account_and_tell_the_customer(backend: &str) {
    let fixture = fixture(backend);
    let right = right(&fixture, 0);
    let pin = fixture.customers[0].accounts[0].pin.clone();
    let bad_pin = LegacyVerifyRequest {
        pin: wrong_pin(&pin),
        ..right.clone()
    };
    for _ in 0..4 {
        assert!(!verify(&fixture, &bad_pin));
    }
    assert_eq!(notices(&fixture, 0, "legacy_locked"), 0);
    let bad_kana = LegacyVerifyRequest {
        kana_name: "ダレカ".to_owned(),
        ..right.clone()
    };
    assert!(!verify(&fixture, &bad_kana));
    assert_eq!(notices(&fixture, 0, "legacy_locked"), 1);
    // Locked: the right data answers no match, and no one is told of a match.
    assert!(!verify(&fixture, &right));
    assert_eq!(notices(&fixture, 0, "legacy_verified"), 0);
    assert!(!verify(&fixture, &bad_pin));
    assert_eq!(notices(&fixture, 0, "legacy_locked"), 1);
    // Other accounts are not locked.
    assert!(verify(&fixture, &self::right(&fixture, 1)));
}

fn malformed_input_and_bad_clients_are_refused_without_counting(backend: &str) {
    let fixture = fixture(backend);
    let right = right(&fixture, 0);
    let malformed = [
        LegacyVerifyRequest {
            pin: SecretString::from("12a4".to_owned()),
            ..right.clone()
        },
        LegacyVerifyRequest {
            branch: "12".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            account_type: "savings".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            account_number: "12345678".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            birth_date: "1990/1/1".to_owned(),
            ..right.clone()
        },
        LegacyVerifyRequest {
            bank_code: "1".to_owned(),
            ..right.clone()
        },
    ];
    for request in &malformed {
        let error = fixture
            .bank
            .legacy_verify(&assertion(&fixture, T0_MS), request, T0_MS)
            .map_or_else(
                |error| error.code(),
                |matched| panic!("answered {matched:?}"),
            );
        assert_eq!(error, "BANK_REQUEST_INVALID");
    }
    // A client assertion signed by another key is refused before anything is checked.
    let stranger = jws::generate_key().unwrap_or_else(|error| panic!("{error}"));
    let forged = client_auth::make_assertion("kinko", ISSUER, &stranger, T0_MS, 60_000)
        .unwrap_or_else(|error| panic!("{error}"));
    for _ in 0..6 {
        let code = fixture
            .bank
            .legacy_verify(&forged, &right, T0_MS)
            .map_or_else(
                |error| error.code(),
                |matched| panic!("answered {matched:?}"),
            );
        assert_eq!(code, "BANK_OAUTH_CLIENT_ASSERTION_SIGNATURE_INVALID");
    }
    // None of that counted toward the lock.
    assert!(verify(&fixture, &right));
}

fn parallel_guesses_lock_the_account_once(backend: &str) {
    let fixture = fixture(backend);
    let right = right(&fixture, 0);
    let pin = fixture.customers[0].accounts[0].pin.clone();
    // Ten guesses at once, each with a different wrong PIN: none matches, and the lock
    // falls exactly once however they interleave.
    let answers: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|index| {
                let fixture = &fixture;
                let mut guess = format!("{:04}", 9_000 + index);
                if guess == pin {
                    guess = "8888".to_owned();
                }
                let request = LegacyVerifyRequest {
                    pin: SecretString::from(guess),
                    ..right.clone()
                };
                scope.spawn(move || verify(fixture, &request))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("a guess panicked")))
            .collect()
    });
    assert!(answers.iter().all(|matched| !matched));
    assert_eq!(notices(&fixture, 0, "legacy_locked"), 1);
    assert!(!verify(&fixture, &right));
}

fn legacy_verify_over_http(backend: &str) {
    let fixture = Arc::new(fixture(backend));
    let right = right(&fixture, 0);
    let pin = fixture.customers[0].accounts[0].pin.clone();
    // A match names the account by the pairwise reference OAuth gives for this client (read
    // here: the synchronous store can't be used inside the runtime below).
    let reference = fixture
        .bank
        .database()
        .transaction(|tx: &mut dyn Tx| {
            tx.query_one(
                "SELECT id FROM bank_accounts WHERE bank_code = $1 AND number = $2",
                &[
                    right.bank_code.as_str().into(),
                    right.account_number.as_str().into(),
                ],
            )?
            .uuid(0)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let expected_ref = fixture
        .bank
        .account_ref("kinko", uuid::Uuid::from_u128(reference))
        .unwrap_or_else(|error| panic!("{error}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    runtime.block_on(async {
        let answer = post(&fixture, &right, &pin, ASSERTION_TYPE).await;
        assert_eq!(
            answer,
            (
                StatusCode::OK,
                serde_json::json!({"match": true, "account_ref": expected_ref})
            )
        );
        let answer = post(&fixture, &right, "0000", ASSERTION_TYPE).await;
        let expected = pin == "0000";
        assert_eq!(
            answer,
            (StatusCode::OK, serde_json::json!({"match": expected}))
        );
        let (status, json) = post(&fixture, &right, &pin, "bearer").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["code"], "BANK_OAUTH_INVALID_CLIENT");
        assert!(!json.to_string().contains(&pin));
    });
    drop(runtime);
}

async fn post(
    fixture: &Fixture,
    request: &LegacyVerifyRequest,
    pin: &str,
    assertion_type: &str,
) -> (StatusCode, serde_json::Value) {
    let clock = ManualClock::new(u64::try_from(T0_MS).unwrap_or(0) * 1_000_000);
    let app = router(HttpState {
        bank: Arc::clone(&fixture.bank),
        clock: Arc::new(clock),
    });
    let assertion = assertion(fixture, T0_MS);
    let body = serde_urlencoded::to_string([
        ("client_assertion_type", assertion_type),
        ("client_assertion", &assertion),
        ("bank_code", &request.bank_code),
        ("branch", &request.branch),
        ("account_type", &request.account_type),
        ("account_number", &request.account_number),
        ("pin", pin),
        ("kana_name", &request.kana_name),
        ("birth_date", &request.birth_date),
    ])
    .unwrap_or_else(|error| panic!("{error}"));
    let response = app
        .oneshot(
            Request::post("/v1/legacy/verify")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(body))
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
