//! Merchants and payments end to end over real HTTP, on both stores: onboarding and API keys,
//! paying static and dynamic merchant codes, D11 (malformed TLV, wrong CRC, an amount altered
//! with a recomputed CRC, an unknown merchant), consumer-presented pay codes used once,
//! refunds that never exceed the payment (also when they race), parallel payments that never
//! overdraw, and no route that lets one party reach another's payments. Wallets are funded by
//! an operator's credit from the compensation account. `kinko check` passes after each test.

mod support;

use kinko_qr::{MerchantQr, Payment as QrPayment};
use serde_json::{Value, json};
use support::{HttpResponse, Server, http_with, json_of, text_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    a_static_code_pays_the_merchant_once,
    dynamic_codes_are_paid_at_the_recorded_amount_once,
    tampered_codes_are_refused_and_move_nothing,
    pay_codes_work_once,
    refunds_never_exceed_the_payment,
    parallel_payments_never_overdraw,
    no_one_reaches_anothers_payments,
    credits_need_a_reviewer_and_a_reason,
    credits_beyond_the_solo_threshold_need_a_second_operator,
    a_crash_after_the_ledger_is_finished_by_the_reconciler,
    a_payment_refused_for_funds_never_posts_later,
    concurrent_requests_with_one_key_pay_and_refund_once,
    a_crash_while_onboarding_leaves_no_merchant_without_its_account,
);

struct World {
    kinko: Server,
    admin_token: String,
    /// A second admin: credits beyond the first one's solo threshold need its approval.
    approver_token: String,
}

fn world(backend: &str) -> World {
    world_with(backend, &[])
}

fn world_with(backend: &str, environment: &[(&str, &str)]) -> World {
    // No freeze after enrolling TOTP: these wallets pay right after setting it up.
    let mut env = vec![("KINKO_OUTGOING_FREEZE_S", "0")];
    env.extend_from_slice(environment);
    let (kinko, admin) = Server::start_with_admin(backend, &env);
    let admin_token = kinko.operator_token(&admin, 0);
    let approver = kinko.create_operator(&admin_token, "approver@kinko.example", "admin", None);
    let approver_token = kinko.operator_token(&approver, 0);
    World {
        kinko,
        admin_token,
        approver_token,
    }
}

/// Credits `amount_yen` to `user_id` as the admin, with the approver's approval when the
/// admin's credits of the day are beyond the solo threshold; the credit is posted.
fn credit(world: &World, user_id: &str, amount_yen: i64, key: &str) {
    let kinko = &world.kinko;
    let credited = post(
        kinko,
        &format!("/api/v1/operator/users/{user_id}/credits"),
        &world.admin_token,
        key,
        json!({ "amount_yen": amount_yen, "reason": "test funding for a payment test" }),
    );
    let credit = json_of(&credited);
    if credited.status == 202 {
        assert_eq!(credit["status"], "awaiting_approval", "{credit}");
        let approved = decide(world, &world.approver_token, &credit, "approve");
        assert_eq!(approved.status, 200, "{}", approved.body);
        assert_eq!(json_of(&approved)["status"], "posted", "{}", approved.body);
    } else {
        assert_eq!(credited.status, 201, "{}", credited.body);
        assert_eq!(credit["status"], "posted", "{credit}");
    }
}

/// `operator_token` approves or rejects `credit`.
fn decide(world: &World, operator_token: &str, credit: &Value, decision: &str) -> HttpResponse {
    world.kinko.call(
        "POST",
        &format!(
            "/api/v1/operator/credits/{}/{decision}",
            text_of(&credit["id"])
        ),
        Some(json!({ "reason": "checked against fraud case 7" })),
        Some(operator_token),
    )
}

/// A wallet with TOTP, stepped up, credited with `funds_yen`: (user id, session token).
fn funded_wallet(world: &World, email: &str, phone: &str, funds_yen: i64) -> (String, String) {
    let kinko = &world.kinko;
    let user_id = kinko.active_user(email, phone);
    let token = kinko.token(email);
    let (_, fresh) = kinko.enrol_totp(&token);
    if funds_yen > 0 {
        credit(world, &user_id, funds_yen, &format!("fund-{user_id}"));
    }
    (user_id, fresh)
}

/// A merchant and its API key.
fn merchant(world: &World, name: &str, name_ja: &str) -> (String, String) {
    let kinko = &world.kinko;
    let created = kinko.call(
        "POST",
        "/api/v1/operator/merchants",
        Some(json!({
            "name": name, "name_ja": name_ja, "category_code": 5411, "city": "Tokyo",
            "city_ja": "東京", "postal_code": "100-0005", "reason": "onboarding ticket 42",
        })),
        Some(&world.admin_token),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let merchant_id = text_of(&json_of(&created)["id"]);
    let key = kinko.call(
        "POST",
        &format!("/api/v1/operator/merchants/{merchant_id}/api-keys"),
        Some(json!({ "label": "レジ 1", "reason": "onboarding ticket 42" })),
        Some(&world.admin_token),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    let key = text_of(&json_of(&key)["key"]);
    assert!(key.starts_with("kmk_"), "{key}");
    (merchant_id, key)
}

/// A POST with a bearer token and an `Idempotency-Key`.
fn post(kinko: &Server, path: &str, token: &str, key: &str, body: Value) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        path,
        Some(&body.to_string()),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
}

fn balance_of(kinko: &Server, token: &str) -> i64 {
    let response = kinko.call("GET", "/api/v1/wallet", None, Some(token));
    assert_eq!(response.status, 200, "{}", response.body);
    json_of(&response)["balance_yen"]
        .as_i64()
        .unwrap_or_else(|| panic!("{}", response.body))
}

fn static_code(kinko: &Server, merchant_key: &str) -> String {
    let response = kinko.call("GET", "/api/v1/merchant/qr", None, Some(merchant_key));
    assert_eq!(response.status, 200, "{}", response.body);
    let body = json_of(&response);
    assert!(text_of(&body["svg"]).starts_with("<?xml") || text_of(&body["svg"]).contains("<svg"));
    text_of(&body["payload"])
}

fn a_static_code_pays_the_merchant_once(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (merchant_id, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let payload = static_code(kinko, &key);
    // The payer sees the merchant as Kinko records it before paying.
    let quote = kinko.call(
        "POST",
        "/api/v1/payments/resolve",
        Some(json!({ "qr": payload })),
        Some(&hanako),
    );
    assert_eq!(quote.status, 200, "{}", quote.body);
    let quote = json_of(&quote);
    assert_eq!(quote["kind"], "static");
    assert_eq!(quote["merchant_name_ja"], "きんこマート");
    assert_eq!(quote["merchant_id"], merchant_id.as_str());
    assert_eq!(quote["amount_yen"], Value::Null);
    // A static code needs the amount the payer typed.
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/payments",
            &hanako,
            "no-amount",
            json!({ "qr": payload }),
        ),
        400,
        "PAYMENT_AMOUNT_REQUIRED",
    );
    let body = json!({ "qr": payload, "amount_yen": 1_200 });
    let paid = post(kinko, "/api/v1/payments", &hanako, "pay-1", body.clone());
    assert_eq!(paid.status, 201, "{}", paid.body);
    let paid = json_of(&paid);
    assert_eq!(paid["status"], "posted", "{paid}");
    assert_eq!(paid["method"], "qr_static");
    assert_eq!(balance_of(kinko, &hanako), 8_800);
    // The same key and body: the saved answer, nothing more moves.
    let again = json_of(&post(kinko, "/api/v1/payments", &hanako, "pay-1", body));
    assert_eq!(again["id"], paid["id"], "{again}");
    assert_eq!(balance_of(kinko, &hanako), 8_800);
    // The same key, another body: 409.
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/payments",
            &hanako,
            "pay-1",
            json!({ "qr": payload, "amount_yen": 1_300 }),
        ),
        409,
        "IDEMPOTENCY_KEY_REUSED",
    );
    // More than the wallet holds: rejected and recorded, nothing moves.
    let too_much = json_of(&post(
        kinko,
        "/api/v1/payments",
        &hanako,
        "pay-2",
        json!({ "qr": payload, "amount_yen": 9_000 }),
    ));
    assert_eq!(too_much["status"], "rejected", "{too_much}");
    assert_eq!(too_much["reason"], "insufficient_funds");
    assert_eq!(balance_of(kinko, &hanako), 8_800);
    // The payer's history names the merchant; the merchant sees both attempts.
    let history = json_of(&kinko.call(
        "GET",
        "/api/v1/wallet/history?kind=payment",
        None,
        Some(&hanako),
    ));
    let movements = history["movements"].as_array().cloned().unwrap_or_default();
    assert_eq!(movements.len(), 2, "{history}");
    assert!(
        movements
            .iter()
            .all(|movement| movement["counterparty"] == "きんこマート"),
        "{history}"
    );
    let theirs = json_of(&kinko.call("GET", "/api/v1/merchant/payments", None, Some(&key)));
    let statuses: Vec<Value> = theirs
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|payment| payment["status"].clone())
        .collect();
    assert_eq!(
        statuses,
        vec![json!("rejected"), json!("posted")],
        "{theirs}"
    );
    assert!(!theirs.to_string().contains("hanako"), "{theirs}");
    kinko.assert_books_balance();
}

fn payment_request(kinko: &Server, key: &str, amount_yen: i64) -> Value {
    let response = kinko.call(
        "POST",
        "/api/v1/merchant/payment-requests",
        Some(json!({ "amount_yen": amount_yen })),
        Some(key),
    );
    assert_eq!(response.status, 201, "{}", response.body);
    json_of(&response)
}

fn dynamic_codes_are_paid_at_the_recorded_amount_once(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let request = payment_request(kinko, &key, 3_000);
    let payload = text_of(&request["payload"]);
    let quote = json_of(&kinko.call(
        "POST",
        "/api/v1/payments/resolve",
        Some(json!({ "qr": payload })),
        Some(&hanako),
    ));
    assert_eq!(quote["kind"], "dynamic", "{quote}");
    assert_eq!(quote["amount_yen"], 3_000);
    // A typed amount that is not the recorded one is refused.
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/payments",
            &hanako,
            "d-0",
            json!({ "qr": payload, "amount_yen": 30 }),
        ),
        409,
        "PAYMENT_AMOUNT_MISMATCH",
    );
    let paid = json_of(&post(
        kinko,
        "/api/v1/payments",
        &hanako,
        "d-1",
        json!({ "qr": payload }),
    ));
    assert_eq!(paid["status"], "posted", "{paid}");
    assert_eq!(paid["amount_yen"], 3_000);
    assert_eq!(paid["reference"], request["reference"]);
    // The sale is paid: the same code again (another key) is refused.
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/payments",
            &hanako,
            "d-2",
            json!({ "qr": payload }),
        ),
        409,
        "PAYMENT_REQUEST_UNAVAILABLE",
    );
    assert_eq!(balance_of(kinko, &hanako), 7_000);
    // A sale the wallet cannot cover stays open: after a top-up it can be paid.
    let (taro_id, taro) = funded_wallet(&world, "taro@example.jp", "090-2222-3333", 1_000);
    let big = payment_request(kinko, &key, 5_000);
    let big_payload = text_of(&big["payload"]);
    let short = json_of(&post(
        kinko,
        "/api/v1/payments",
        &taro,
        "b-1",
        json!({ "qr": big_payload }),
    ));
    assert_eq!(short["status"], "rejected", "{short}");
    credit(&world, &taro_id, 4_000, "top-up-taro");
    let paid = json_of(&post(
        kinko,
        "/api/v1/payments",
        &taro,
        "b-2",
        json!({ "qr": big_payload }),
    ));
    assert_eq!(paid["status"], "posted", "{paid}");
    assert_eq!(balance_of(kinko, &taro), 0);
    kinko.assert_books_balance();
}

fn tampered_codes_are_refused_and_move_nothing(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let request = payment_request(kinko, &key, 3_000);
    let payload = text_of(&request["payload"]);
    let decoded = kinko_qr::decode(&payload).unwrap_or_else(|error| panic!("{error}"));
    // The amount altered to ¥30 and the CRC recomputed: a valid payload, refused by the server.
    let altered = kinko_qr::encode(
        &MerchantQr::new(
            decoded.details().clone(),
            QrPayment::Dynamic {
                amount_yen: 30,
                reference: text_of(&request["reference"]),
            },
        )
        .unwrap_or_else(|error| panic!("{error}")),
    );
    assert!(kinko_qr::decode(&altered).is_ok());
    // A static code for a merchant Kinko does not know (a swapped sticker, say).
    let mut stranger = decoded.details().clone();
    stranger.merchant_id = uuid::Uuid::now_v7().as_u128();
    let unknown = kinko_qr::encode(
        &MerchantQr::new(stranger, QrPayment::Static).unwrap_or_else(|error| panic!("{error}")),
    );
    // One character of the CRC changed; a length that runs past the end.
    let crc_at = payload.len() - 1;
    let flipped = if payload.ends_with('0') { "1" } else { "0" };
    let wrong_crc = format!("{}{flipped}", &payload[..crc_at]);
    let malformed = format!("000299{}", &payload[6..]);
    let cases = [
        (altered.as_str(), 409, "PAYMENT_AMOUNT_MISMATCH"),
        (unknown.as_str(), 404, "MERCHANT_NOT_FOUND"),
        (wrong_crc.as_str(), 400, "QR_CRC_MISMATCH"),
        ("000201zz", 400, "QR_MALFORMED_TLV"),
        (malformed.as_str(), 400, "QR_MALFORMED_TLV"),
        ("", 400, "QR_MALFORMED_TLV"),
    ];
    for (index, (code, status, expected)) in cases.iter().enumerate() {
        let resolved = kinko.call(
            "POST",
            "/api/v1/payments/resolve",
            Some(json!({ "qr": code })),
            Some(&hanako),
        );
        let paid = post(
            kinko,
            "/api/v1/payments",
            &hanako,
            &format!("t-{index}"),
            json!({ "qr": code, "amount_yen": 30 }),
        );
        for response in [&resolved, &paid] {
            assert_eq!(response.status, *status, "{code}: {}", response.body);
            if *expected != "QR_MALFORMED_TLV" {
                kinko.assert_problem(response, *status, expected);
            } else {
                let got = text_of(&json_of(response)["code"]);
                assert!(got.starts_with("QR_"), "{code}: {}", response.body);
            }
        }
    }
    // Bad bodies are problem+json too.
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/payments",
            &hanako,
            "bad-1",
            json!({ "qr": 7 }),
        ),
        400,
        "REQUEST_INVALID",
    );
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/payments",
            &hanako,
            "bad-2",
            json!({ "qr": request["payload"], "amount_yen": -5 }),
        ),
        400,
        "MONEY_AMOUNT_INVALID",
    );
    kinko.assert_problem(
        &kinko.call(
            "POST",
            "/api/v1/payments",
            Some(json!({ "qr": request["payload"] })),
            Some(&hanako),
        ),
        400,
        "IDEMPOTENCY_KEY_INVALID",
    );
    // Nothing moved, and the sale is still open at its real amount.
    assert_eq!(balance_of(kinko, &hanako), 10_000);
    let paid = json_of(&post(
        kinko,
        "/api/v1/payments",
        &hanako,
        "real",
        json!({ "qr": payload }),
    ));
    assert_eq!(paid["amount_yen"], 3_000, "{paid}");
    kinko.assert_books_balance();
}

fn pay_codes_work_once(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let issued = kinko.call(
        "POST",
        "/api/v1/pay-codes",
        Some(json!({ "max_amount_yen": 500 })),
        Some(&hanako),
    );
    assert_eq!(issued.status, 201, "{}", issued.body);
    let issued = json_of(&issued);
    let code = text_of(&issued["code"]);
    assert!(text_of(&issued["svg"]).contains("<svg"), "{issued}");
    let redeem = |idempotency: &str, code: &str, amount: i64| {
        post(
            kinko,
            "/api/v1/merchant/pay-codes/redeem",
            &key,
            idempotency,
            json!({ "code": code, "amount_yen": amount }),
        )
    };
    let paid = redeem("till-1", &code, 500);
    assert_eq!(paid.status, 201, "{}", paid.body);
    let paid = json_of(&paid);
    assert_eq!(paid["status"], "posted", "{paid}");
    assert_eq!(paid["method"], "pay_code");
    // The till retries with the same key: the same payment.
    assert_eq!(json_of(&redeem("till-1", &code, 500))["id"], paid["id"]);
    // The same code under another key: used.
    kinko.assert_problem(&redeem("till-2", &code, 500), 409, "PAY_CODE_USED");
    // A forged code (one character changed) and garbage.
    let mut forged: Vec<char> = code.chars().collect();
    forged[40] = if forged[40] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let refused = redeem("till-3", &forged, 500);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        text_of(&json_of(&refused)["code"]).starts_with("PAY_CODE_"),
        "{}",
        refused.body
    );
    kinko.assert_problem(
        &redeem("till-4", "not-a-code", 500),
        400,
        "PAY_CODE_MALFORMED",
    );
    // A wallet token is not a merchant key.
    kinko.assert_problem(
        &post(
            kinko,
            "/api/v1/merchant/pay-codes/redeem",
            &hanako,
            "till-5",
            json!({ "code": code, "amount_yen": 1 }),
        ),
        401,
        "MERCHANT_UNAUTHENTICATED",
    );
    assert_eq!(balance_of(kinko, &hanako), 9_500);
    kinko.assert_books_balance();
}

fn refunds_never_exceed_the_payment(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let (_, other_key) = merchant(&world, "Other Shop", "よその店");
    let payload = static_code(kinko, &key);
    let pay = |idempotency: &str| {
        let paid = json_of(&post(
            kinko,
            "/api/v1/payments",
            &hanako,
            idempotency,
            json!({ "qr": payload, "amount_yen": 1_000 }),
        ));
        assert_eq!(paid["status"], "posted", "{paid}");
        text_of(&paid["id"])
    };
    let first = pay("p-1");
    let refund = |payment: &str, idempotency: &str, amount: i64, merchant_key: &str| {
        post(
            kinko,
            &format!("/api/v1/merchant/payments/{payment}/refunds"),
            merchant_key,
            idempotency,
            json!({ "amount_yen": amount }),
        )
    };
    let partial = refund(&first, "r-1", 400, &key);
    assert_eq!(partial.status, 201, "{}", partial.body);
    assert_eq!(json_of(&partial)["status"], "posted");
    // A retry of the same refund refunds nothing more.
    assert_eq!(
        json_of(&refund(&first, "r-1", 400, &key))["id"],
        json_of(&partial)["id"]
    );
    assert_eq!(
        json_of(&refund(&first, "r-2", 600, &key))["status"],
        "posted"
    );
    kinko.assert_problem(
        &refund(&first, "r-3", 1, &key),
        409,
        "REFUND_EXCEEDS_PAYMENT",
    );
    // Another merchant cannot refund (or see) this payment.
    kinko.assert_problem(
        &refund(&first, "r-4", 1, &other_key),
        404,
        "PAYMENT_NOT_FOUND",
    );
    assert_eq!(balance_of(kinko, &hanako), 10_000);
    // 20 refunds of ¥100 race on a ¥1,000 payment: exactly 10 go through.
    let second = pay("p-2");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|index| {
                let (second, key) = (second.clone(), key.clone());
                let refund = &refund;
                scope.spawn(move || refund(&second, &format!("race-{index}"), 100, &key).status)
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| panic!("a refund panicked"))
            })
            .collect()
    });
    let posted = statuses.iter().filter(|status| **status == 201).count();
    let refused = statuses.iter().filter(|status| **status == 409).count();
    assert_eq!((posted, refused), (10, 10), "{statuses:?}");
    assert_eq!(balance_of(kinko, &hanako), 10_000);
    // The payer sees the refunds on the payment and in the history.
    let seen = json_of(&kinko.call(
        "GET",
        &format!("/api/v1/payments/{second}"),
        None,
        Some(&hanako),
    ));
    assert_eq!(seen["refunded_yen"], 1_000, "{seen}");
    assert_eq!(seen["refunds"].as_array().map(Vec::len), Some(10), "{seen}");
    kinko.assert_books_balance();
}

fn parallel_payments_never_overdraw(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 2_500);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let payload = static_code(kinko, &key);
    // 10,000 payments of ¥1 from 16 threads against ¥2,500: exactly 2,500 go through.
    let threads = 16;
    let per_thread = 10_000 / threads;
    let posted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (hanako, payload) = (hanako.clone(), payload.clone());
                scope.spawn(move || {
                    let mut posted = 0;
                    for index in 0..per_thread {
                        let paid = post(
                            kinko,
                            "/api/v1/payments",
                            &hanako,
                            &format!("race-{thread}-{index}"),
                            json!({ "qr": payload, "amount_yen": 1 }),
                        );
                        assert_eq!(paid.status, 201, "{}", paid.body);
                        match text_of(&json_of(&paid)["status"]).as_str() {
                            "posted" => posted += 1,
                            "rejected" => {}
                            other => panic!("unexpected status {other}"),
                        }
                    }
                    posted
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("a payer panicked")))
            .sum()
    });
    assert_eq!(posted, 2_500);
    assert_eq!(balance_of(kinko, &hanako), 0);
    kinko.assert_books_balance();
}

fn no_one_reaches_anothers_payments(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 5_000);
    let (_, taro) = funded_wallet(&world, "taro@example.jp", "090-2222-3333", 0);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let payload = static_code(kinko, &key);
    let paid = json_of(&post(
        kinko,
        "/api/v1/payments",
        &hanako,
        "mine",
        json!({ "qr": payload, "amount_yen": 700 }),
    ));
    let id = text_of(&paid["id"]);
    // Taro cannot read Hanako's payment; nobody without a session can.
    kinko.assert_problem(
        &kinko.call("GET", &format!("/api/v1/payments/{id}"), None, Some(&taro)),
        404,
        "PAYMENT_NOT_FOUND",
    );
    kinko.assert_problem(
        &kinko.call("GET", &format!("/api/v1/payments/{id}"), None, None),
        401,
        "SESSION_INVALID",
    );
    // A merchant key is not a wallet session, an operator token not a merchant key.
    kinko.assert_problem(
        &kinko.call("GET", "/api/v1/wallet", None, Some(&key)),
        401,
        "SESSION_INVALID",
    );
    kinko.assert_problem(
        &kinko.call(
            "GET",
            "/api/v1/merchant/payments",
            None,
            Some(&world.admin_token),
        ),
        401,
        "MERCHANT_UNAUTHENTICATED",
    );
    kinko.assert_problem(
        &kinko.call("GET", "/api/v1/merchant/payments", None, None),
        401,
        "MERCHANT_UNAUTHENTICATED",
    );
    // Only admins onboard merchants; an analyst is refused and nothing is created.
    let analyst = kinko.create_operator(&world.admin_token, "ana@kinko.example", "analyst", None);
    let analyst_token = kinko.operator_token(&analyst, 0);
    kinko.assert_problem(
        &kinko.call(
            "POST",
            "/api/v1/operator/merchants",
            Some(json!({
                "name": "Shady", "name_ja": "怪しい店", "category_code": 5999, "city": "Tokyo",
                "postal_code": "1000005", "reason": "I would like a shop",
            })),
            Some(&analyst_token),
        ),
        403,
        "OPERATOR_FORBIDDEN",
    );
    // Onboarding checks the details and wants a reason.
    // A non-ASCII name where the QR code needs ASCII; a postal code of 2 digits.
    for body in [
        json!({ "name": "名前", "name_ja": "店", "category_code": 5411, "city": "Tokyo",
                "postal_code": "1000005", "reason": "onboarding ticket 42" }),
        json!({ "name": "Shop", "name_ja": "店", "category_code": 5411, "city": "Tokyo",
                "postal_code": "12", "reason": "onboarding ticket 42" }),
    ] {
        let refused = kinko.call(
            "POST",
            "/api/v1/operator/merchants",
            Some(body),
            Some(&world.admin_token),
        );
        kinko.assert_problem(&refused, 400, "MERCHANT_INVALID");
    }
    assert_eq!(balance_of(kinko, &hanako), 4_300);
    assert_eq!(balance_of(kinko, &taro), 0);
    kinko.assert_books_balance();
}

fn credits_need_a_reviewer_and_a_reason(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (user_id, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 0);
    let support = kinko.create_operator(&world.admin_token, "sup@kinko.example", "support", None);
    let support_token = kinko.operator_token(&support, 0);
    let path = format!("/api/v1/operator/users/{user_id}/credits");
    let body = json!({ "amount_yen": 5_000, "reason": "fraud case 7 made good" });
    kinko.assert_problem(
        &post(kinko, &path, &support_token, "c-1", body.clone()),
        403,
        "OPERATOR_FORBIDDEN",
    );
    kinko.assert_problem(
        &post(kinko, &path, &hanako, "c-1", body.clone()),
        401,
        "OPERATOR_UNAUTHENTICATED",
    );
    kinko.assert_problem(
        &post(
            kinko,
            &path,
            &world.admin_token,
            "c-2",
            json!({ "amount_yen": 5_000, "reason": "" }),
        ),
        400,
        "OPERATOR_REASON_REQUIRED",
    );
    assert_eq!(balance_of(kinko, &hanako), 0);
    let credited = post(kinko, &path, &world.admin_token, "c-3", body.clone());
    assert_eq!(credited.status, 201, "{}", credited.body);
    let again = post(kinko, &path, &world.admin_token, "c-3", body);
    assert_eq!(json_of(&again)["id"], json_of(&credited)["id"]);
    assert_eq!(balance_of(kinko, &hanako), 5_000);
    // The credit is in the audit log with who and why.
    let audit = kinko.call(
        "GET",
        "/api/v1/operator/audit?limit=500",
        None,
        Some(&world.admin_token),
    );
    assert!(audit.body.contains("wallet.credited"), "{}", audit.body);
    assert!(
        audit.body.contains("fraud case 7 made good"),
        "{}",
        audit.body
    );
    kinko.assert_books_balance();
}

/// Four eyes: an operator's credits summing beyond the solo threshold (¥10,000 a day by
/// default) move nothing until another admin approves — not the proposer, not an analyst —
/// and splitting a credit into small ones does not escape it. Approving twice moves it once;
/// a rejected credit moves nothing. The wallet's balance and the ledger agree throughout.
fn credits_beyond_the_solo_threshold_need_a_second_operator(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (user_id, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 0);
    let analyst = kinko.create_operator(&world.admin_token, "ana@kinko.example", "analyst", None);
    let analyst_token = kinko.operator_token(&analyst, 0);
    let path = format!("/api/v1/operator/users/{user_id}/credits");
    let propose = |token: &str, key: &str, amount_yen: i64| {
        post(
            kinko,
            &path,
            token,
            key,
            json!({ "amount_yen": amount_yen, "reason": "fraud case 7 made good" }),
        )
    };

    // One large credit waits: nothing in the wallet, nothing in its history.
    let proposed = propose(&world.admin_token, "big", 50_000);
    assert_eq!(proposed.status, 202, "{}", proposed.body);
    let big = json_of(&proposed);
    assert_eq!(big["status"], "awaiting_approval", "{big}");
    assert_eq!(balance_of(kinko, &hanako), 0);
    let history = kinko.call("GET", "/api/v1/wallet/history", None, Some(&hanako));
    assert!(
        !history.body.contains(&text_of(&big["id"])),
        "{}",
        history.body
    );
    let waiting = kinko.call(
        "GET",
        "/api/v1/operator/credits",
        None,
        Some(&analyst_token),
    );
    assert_eq!(waiting.status, 200, "{}", waiting.body);
    assert!(
        waiting.body.contains(&text_of(&big["id"])),
        "{}",
        waiting.body
    );

    // Not the proposer, not an analyst; an unknown credit is not found.
    let own = decide(&world, &world.admin_token, &big, "approve");
    kinko.assert_problem(&own, 403, "CREDIT_SECOND_OPERATOR_REQUIRED");
    let by_analyst = decide(&world, &analyst_token, &big, "approve");
    kinko.assert_problem(&by_analyst, 403, "OPERATOR_FORBIDDEN");
    let unknown = decide(
        &world,
        &world.approver_token,
        &json!({ "id": uuid_like() }),
        "approve",
    );
    kinko.assert_problem(&unknown, 404, "CREDIT_NOT_FOUND");
    assert_eq!(balance_of(kinko, &hanako), 0);

    // The second admin approves: the money moves, once, even when approved again.
    let approved = decide(&world, &world.approver_token, &big, "approve");
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(json_of(&approved)["status"], "posted", "{}", approved.body);
    let again = decide(&world, &world.approver_token, &big, "approve");
    assert_eq!(again.status, 200, "{}", again.body);
    kinko.assert_problem(
        &decide(&world, &world.approver_token, &big, "reject"),
        409,
        "CREDIT_ALREADY_DECIDED",
    );
    assert_eq!(balance_of(kinko, &hanako), 50_000);

    // Splitting: ¥6,000 passes alone, the next ¥6,000 (¥12,000 in a day) waits — and the
    // analyst's own solo allowance is separate from the admin's.
    let small = propose(&world.admin_token, "s-1", 6_000);
    assert_eq!(small.status, 201, "{}", small.body);
    let split = propose(&world.admin_token, "s-2", 6_000);
    assert_eq!(split.status, 202, "{}", split.body);
    let analyst_small = propose(&analyst_token, "a-1", 9_000);
    assert_eq!(analyst_small.status, 201, "{}", analyst_small.body);
    assert_eq!(balance_of(kinko, &hanako), 65_000);

    // A rejected credit moves nothing and can't be approved afterwards.
    let split = json_of(&split);
    let rejected = decide(&world, &world.approver_token, &split, "reject");
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    assert_eq!(
        json_of(&rejected)["status"],
        "rejected",
        "{}",
        rejected.body
    );
    kinko.assert_problem(
        &decide(&world, &world.approver_token, &split, "approve"),
        409,
        "CREDIT_ALREADY_DECIDED",
    );
    assert_eq!(balance_of(kinko, &hanako), 65_000);

    let audit = kinko.call(
        "GET",
        "/api/v1/operator/audit?limit=500",
        None,
        Some(&world.admin_token),
    );
    for action in [
        "wallet.credit_proposed",
        "wallet.credit_approved",
        "wallet.credit_rejected",
    ] {
        assert!(audit.body.contains(action), "{action}: {}", audit.body);
    }
    kinko.assert_books_balance();
}

fn uuid_like() -> String {
    "0190f3a0-0000-7000-8000-000000000000".to_owned()
}

/// The server dies after the ledger moved the money and before the payment row says so: the
/// payer hears nothing; after a restart the reconciler finds the transfer by the row's id and
/// marks the payment posted, and the same request again moves nothing more.
fn a_crash_after_the_ledger_is_finished_by_the_reconciler(backend: &str) {
    let mut world = world_with(backend, &[("KINKO_FAILPOINT", "payment_after_ledger")]);
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let payload = static_code(&world.kinko, &key);
    let body = json!({ "qr": payload, "amount_yen": 2_500 });
    world
        .kinko
        .assert_post_crashes("/api/v1/payments", &body.to_string(), &hanako, "crash-1");
    world.kinko.restart(&[
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_RECONCILE_AFTER_S", "0"),
        ("KINKO_RECONCILE_EVERY_S", "1"),
    ]);
    let kinko = &world.kinko;
    assert_eq!(balance_of(kinko, &hanako), 7_500);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let theirs = json_of(&kinko.call("GET", "/api/v1/merchant/payments", None, Some(&key)));
        if theirs[0]["status"] == "posted" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{theirs}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let again = post(kinko, "/api/v1/payments", &hanako, "crash-1", body);
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(json_of(&again)["status"], "posted");
    assert_eq!(balance_of(kinko, &hanako), 7_500);
    kinko.assert_books_balance();
}

/// A payment the ledger refused for funds, whose refusal never reached its row (the process
/// died right after the ledger answered): after a top-up, a replay with the same
/// `Idempotency-Key` (and the reconciler) must still find it refused — the ledger keeps the
/// failed id (`id_already_failed`) — so the sale is paid once, by the payment that was
/// acknowledged, and rows, history and ledger agree.
fn a_payment_refused_for_funds_never_posts_later(backend: &str) {
    let mut world = world_with(backend, &[("KINKO_FAILPOINT", "payment_after_ledger")]);
    let (user_id, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 1_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let sale = payment_request(&world.kinko, &key, 3_000);
    let payload = text_of(&sale["payload"]);
    let body = json!({ "qr": payload });
    world
        .kinko
        .assert_post_crashes("/api/v1/payments", &body.to_string(), &hanako, "short-1");
    // Back up with the reconciler held off, so the replay is the first to resubmit the id.
    world.kinko.restart(&[
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_RECONCILE_AFTER_S", "3600"),
    ]);
    let kinko = &world.kinko;
    let topped = post(
        kinko,
        &format!("/api/v1/operator/users/{user_id}/credits"),
        &world.admin_token,
        "top-up-hanako",
        json!({ "amount_yen": 5_000, "reason": "test funding for a payment test" }),
    );
    assert_eq!(topped.status, 201, "{}", topped.body);
    assert_eq!(balance_of(kinko, &hanako), 6_000);
    // The replay after the top-up answers what the first attempt was: refused.
    let again = json_of(&post(
        kinko,
        "/api/v1/payments",
        &hanako,
        "short-1",
        body.clone(),
    ));
    assert_eq!(again["status"], "rejected", "{again}");
    assert_eq!(again["reason"], "insufficient_funds", "{again}");
    assert_eq!(balance_of(kinko, &hanako), 6_000);
    // The sale is open again, and is paid once, by another payment.
    let paid = json_of(&post(
        kinko,
        "/api/v1/payments",
        &hanako,
        "short-2",
        body.clone(),
    ));
    assert_eq!(paid["status"], "posted", "{paid}");
    kinko.assert_problem(
        &post(kinko, "/api/v1/payments", &hanako, "short-3", body.clone()),
        409,
        "PAYMENT_REQUEST_UNAVAILABLE",
    );
    let replayed = json_of(&post(kinko, "/api/v1/payments", &hanako, "short-1", body));
    assert_eq!(replayed["status"], "rejected", "{replayed}");
    assert_eq!(balance_of(kinko, &hanako), 3_000);
    let theirs = json_of(&kinko.call("GET", "/api/v1/merchant/payments", None, Some(&key)));
    let statuses: Vec<&str> = theirs
        .as_array()
        .unwrap_or_else(|| panic!("{theirs}"))
        .iter()
        .map(|payment| payment["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|status| **status == "posted")
            .count(),
        1,
        "{theirs}"
    );
    // The payer's history says the same as the rows.
    let history = json_of(&kinko.call("GET", "/api/v1/wallet/history", None, Some(&hanako)));
    let payments: Vec<&str> = history["movements"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .filter(|movement| movement["kind"] == "payment")
        .map(|movement| movement["status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(payments, vec!["posted", "rejected"], "{history}");
    kinko.assert_books_balance();
}

/// Sixteen requests under one `Idempotency-Key` at once, for a payment and then for a refund:
/// each answers the one saved movement (never a 500 from the key's unique index), and the
/// money moved once.
fn concurrent_requests_with_one_key_pay_and_refund_once(backend: &str) {
    let world = world(backend);
    let kinko = &world.kinko;
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 10_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let payload = static_code(kinko, &key);
    let all_at_once = |call: &(dyn Fn() -> HttpResponse + Sync)| -> Vec<HttpResponse> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16).map(|_| scope.spawn(call)).collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap_or_else(|_| panic!("caller panicked")))
                .collect()
        })
    };
    let body = json!({ "qr": payload, "amount_yen": 1_500 });
    let paid = all_at_once(&|| post(kinko, "/api/v1/payments", &hanako, "same-pay", body.clone()));
    let payment = json_of(&paid[0]);
    for answer in &paid {
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(json_of(answer)["id"], payment["id"], "{}", answer.body);
    }
    assert_eq!(balance_of(kinko, &hanako), 8_500);
    let path = format!(
        "/api/v1/merchant/payments/{}/refunds",
        text_of(&payment["id"])
    );
    let refunded = all_at_once(&|| {
        post(
            kinko,
            &path,
            &key,
            "same-refund",
            json!({ "amount_yen": 500 }),
        )
    });
    let refund = json_of(&refunded[0]);
    for answer in &refunded {
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(json_of(answer)["id"], refund["id"], "{}", answer.body);
    }
    assert_eq!(balance_of(kinko, &hanako), 9_000);
    kinko.assert_books_balance();
}

/// Onboarding writes a ledger account (the merchant's payable) and a row. The server dies
/// between the two: no merchant may exist without its account (one that did took payments
/// the ledger refused). The operator onboards again and the merchant can be paid.
fn a_crash_while_onboarding_leaves_no_merchant_without_its_account(backend: &str) {
    let mut world = world_with(
        backend,
        &[("KINKO_FAILPOINT", "merchant_onboarding_midway")],
    );
    let body = json!({
        "name": "Kinko Mart", "name_ja": "きんこマート", "category_code": 5411, "city": "Tokyo",
        "city_ja": "東京", "postal_code": "100-0005", "reason": "onboarding ticket 42",
    });
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world.kinko.call(
            "POST",
            "/api/v1/operator/merchants",
            Some(body.clone()),
            Some(&world.admin_token),
        )
    }));
    if let Ok(answer) = crashed {
        assert!(answer.status >= 500, "{}", answer.body);
    }
    world.kinko.restart(&[("KINKO_OUTGOING_FREEZE_S", "0")]);
    let merchants = world
        .kinko
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query_one("SELECT COUNT(*) FROM money_merchants", &[])?
                .int(0)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        merchants, 0,
        "a merchant was written without its payable account"
    );
    let (_, hanako) = funded_wallet(&world, "hanako@example.jp", "090-1234-5678", 5_000);
    let (_, key) = merchant(&world, "Kinko Mart", "きんこマート");
    let payload = static_code(&world.kinko, &key);
    let paid = json_of(&post(
        &world.kinko,
        "/api/v1/payments",
        &hanako,
        "after-crash",
        json!({ "qr": payload, "amount_yen": 1_000 }),
    ));
    assert_eq!(paid["status"], "posted", "{paid}");
    world.kinko.assert_books_balance();
}
