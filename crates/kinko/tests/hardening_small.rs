//! Issue 13 item 8 over real HTTP, on both stores: merchant names hold only characters a
//! reader sees, handle lookups are limited per wallet, and a till redeems a pay code only up to
//! the ceiling the payer set; a static code printed with another name than Kinko's record is
//! flagged to the payer.

mod support;

use serde_json::json;
use support::{HttpResponse, Server, http_with, json_of, text_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    merchant_names_refuse_invisible_characters,
    handle_lookups_are_limited_per_wallet,
    a_pay_code_is_redeemed_only_up_to_the_payers_ceiling,
    a_static_code_with_another_printed_name_is_flagged,
);

fn onboard(kinko: &Server, admin_token: &str, name_ja: &str, city_ja: &str) -> HttpResponse {
    kinko.call(
        "POST",
        "/api/v1/operator/merchants",
        Some(json!({
            "name": "Cafe Kinko", "name_ja": name_ja, "category_code": 5411, "city": "Tokyo",
            "city_ja": city_ja, "postal_code": "100-0005", "reason": "onboarding ticket 42",
        })),
        Some(admin_token),
    )
}

fn merchant_names_refuse_invisible_characters(backend: &str) {
    let (kinko, admin) = Server::start_with_admin(backend, &[]);
    let admin_token = kinko.operator_token(&admin, 0);
    // Zero-width, bidirectional and control characters, in the Japanese name and city.
    for (name_ja, city_ja) in [
        ("カフェ\u{200B}金庫", "東京"),
        ("カフェ\u{202E}庫金", "東京"),
        ("カフェ\u{2066}金庫\u{2069}", "東京"),
        ("\u{FEFF}カフェ金庫", "東京"),
        ("カフェ金庫", "東\u{200D}京"),
        ("カフェ金庫", "東\u{0007}京"),
    ] {
        let refused = onboard(&kinko, &admin_token, name_ja, city_ja);
        kinko.assert_problem(&refused, 400, "MERCHANT_INVALID");
    }
    let created = onboard(&kinko, &admin_token, "カフェ金庫", "東京");
    assert_eq!(created.status, 201, "{}", created.body);
    let merchant_id = text_of(&json_of(&created)["id"]);
    let key = |label: &str| {
        kinko.call(
            "POST",
            &format!("/api/v1/operator/merchants/{merchant_id}/api-keys"),
            Some(json!({ "label": label, "reason": "onboarding ticket 42" })),
            Some(&admin_token),
        )
    };
    kinko.assert_problem(&key("レジ\u{200B}1"), 400, "MERCHANT_INVALID");
    assert_eq!(key("レジ 1").status, 201);
    // Only the clean merchant was written.
    let rows = kinko
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query_one("SELECT COUNT(*) FROM money_merchants", &[])?
                .int(0)
        })
        .unwrap_or_else(|error| panic!("count merchants: {error}"));
    assert_eq!(rows, 1);
}

fn handle_lookups_are_limited_per_wallet(backend: &str) {
    let kinko = Server::start(backend, &[]);
    kinko.active_user("hanako@example.jp", "090-1111-2222");
    let token = kinko.token("hanako@example.jp");
    let claim = |handle: &str| {
        kinko.call(
            "PUT",
            "/api/v1/me/handle",
            Some(json!({ "handle": handle })),
            Some(&token),
        )
    };
    for index in 0..kinko_money::transfers::HANDLE_LOOKUPS_MAX {
        let claimed = claim(&format!("probe_{index}"));
        assert_eq!(claimed.status, 200, "{}", claimed.body);
    }
    let limited = claim("probe_last");
    kinko.assert_problem(&limited, 429, "MONEY_HANDLE_LOOKUP_RATE_LIMITED");
    let retry_after: i64 = limited
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", limited.header("retry-after")));
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // The refused claim wrote nothing: another wallet can still claim that handle.
    kinko.active_user("taro@example.jp", "090-3333-4444");
    let taro = kinko.token("taro@example.jp");
    let taken = kinko.call(
        "PUT",
        "/api/v1/me/handle",
        Some(json!({ "handle": "probe_last" })),
        Some(&taro),
    );
    assert_eq!(taken.status, 200, "{}", taken.body);
}

fn balance_of(kinko: &Server, token: &str) -> i64 {
    let response = kinko.call("GET", "/api/v1/wallet", None, Some(token));
    assert_eq!(response.status, 200, "{}", response.body);
    json_of(&response)["balance_yen"]
        .as_i64()
        .unwrap_or_else(|| panic!("{}", response.body))
}

fn a_pay_code_is_redeemed_only_up_to_the_payers_ceiling(backend: &str) {
    let (kinko, admin) = Server::start_with_admin(backend, &[("KINKO_OUTGOING_FREEZE_S", "0")]);
    let admin_token = kinko.operator_token(&admin, 0);
    let user_id = kinko.active_user("hanako@example.jp", "090-1234-5678");
    let (_, hanako) = kinko.enrol_totp(&kinko.token("hanako@example.jp"));
    let bearer = format!("Bearer {admin_token}");
    let credited = http_with(
        &kinko.address,
        "POST",
        &format!("/api/v1/operator/users/{user_id}/credits"),
        Some(&json!({ "amount_yen": 5_000, "reason": "test funding for a pay code" }).to_string()),
        &[
            ("Authorization", bearer.as_str()),
            ("Idempotency-Key", "fund-1"),
        ],
    );
    assert_eq!(credited.status, 201, "{}", credited.body);
    let created = onboard(&kinko, &admin_token, "カフェ金庫", "東京");
    assert_eq!(created.status, 201, "{}", created.body);
    let merchant_id = text_of(&json_of(&created)["id"]);
    let key = kinko.call(
        "POST",
        &format!("/api/v1/operator/merchants/{merchant_id}/api-keys"),
        Some(json!({ "label": "till 1", "reason": "onboarding ticket 42" })),
        Some(&admin_token),
    );
    assert_eq!(key.status, 201, "{}", key.body);
    let key = format!("Bearer {}", text_of(&json_of(&key)["key"]));
    // The ceiling is required and within the payment range.
    for body in [None, Some(json!({})), Some(json!({ "max_amount_yen": 0 }))] {
        let refused = kinko.call("POST", "/api/v1/pay-codes", body, Some(&hanako));
        assert_eq!(refused.status, 400, "{}", refused.body);
    }
    let issued = kinko.call(
        "POST",
        "/api/v1/pay-codes",
        Some(json!({ "max_amount_yen": 1_000 })),
        Some(&hanako),
    );
    assert_eq!(issued.status, 201, "{}", issued.body);
    let code = text_of(&json_of(&issued)["code"]);
    let redeem = |idempotency: &str, amount: i64| {
        http_with(
            &kinko.address,
            "POST",
            "/api/v1/merchant/pay-codes/redeem",
            Some(&json!({ "code": code, "amount_yen": amount }).to_string()),
            &[
                ("Authorization", key.as_str()),
                ("Idempotency-Key", idempotency),
            ],
        )
    };
    kinko.assert_problem(&redeem("till-1", 1_001), 403, "PAY_CODE_ABOVE_CEILING");
    kinko.assert_problem(&redeem("till-2", 999_999), 403, "PAY_CODE_ABOVE_CEILING");
    assert_eq!(balance_of(&kinko, &hanako), 5_000);
    let paid = redeem("till-3", 1_000);
    assert_eq!(paid.status, 201, "{}", paid.body);
    assert_eq!(json_of(&paid)["status"], "posted", "{}", paid.body);
    assert_eq!(balance_of(&kinko, &hanako), 4_000);
    kinko.assert_books_balance();
}

fn a_static_code_with_another_printed_name_is_flagged(backend: &str) {
    let (kinko, admin) = Server::start_with_admin(backend, &[]);
    let admin_token = kinko.operator_token(&admin, 0);
    kinko.active_user("hanako@example.jp", "090-1234-5678");
    let hanako = kinko.token("hanako@example.jp");
    let created = onboard(&kinko, &admin_token, "カフェ金庫", "東京");
    assert_eq!(created.status, 201, "{}", created.body);
    let merchant_id: uuid::Uuid = text_of(&json_of(&created)["id"])
        .parse()
        .unwrap_or_else(|error| panic!("merchant id: {error}"));
    let code = |name: &str, name_ja: &str| {
        let details = kinko_qr::MerchantDetails {
            merchant_id: merchant_id.as_u128(),
            category_code: 5411,
            name: name.to_owned(),
            city: "Tokyo".to_owned(),
            postal_code: "1000005".to_owned(),
            name_ja: name_ja.to_owned(),
            city_ja: Some("東京".to_owned()),
            store_label: None,
            terminal_label: None,
            foreign_accounts: Vec::new(),
        };
        let qr = kinko_qr::MerchantQr::new(details, kinko_qr::Payment::Static)
            .unwrap_or_else(|error| panic!("code: {error}"));
        kinko_qr::encode(&qr)
    };
    let resolve = |qr: String| {
        let resolved = kinko.call(
            "POST",
            "/api/v1/payments/resolve",
            Some(json!({ "qr": qr })),
            Some(&hanako),
        );
        assert_eq!(resolved.status, 200, "{}", resolved.body);
        json_of(&resolved)
    };
    let genuine = resolve(code("Cafe Kinko", "カフェ金庫"));
    assert_eq!(genuine["printed_name_differs"], false, "{genuine}");
    for (name, name_ja) in [("Cafe Kinko", "カフェ銀行"), ("Bank Cafe", "カフェ金庫")] {
        let relabelled = resolve(code(name, name_ja));
        assert_eq!(relabelled["printed_name_differs"], true, "{relabelled}");
        // The payer is shown Kinko's record, not what the sticker says.
        assert_eq!(relabelled["merchant_name"], "Cafe Kinko", "{relabelled}");
        assert_eq!(relabelled["merchant_name_ja"], "カフェ金庫", "{relabelled}");
    }
}
