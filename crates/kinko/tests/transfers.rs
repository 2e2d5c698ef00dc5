//! Person-to-person transfers end to end, on both stores: handles, sending by handle with an
//! `Idempotency-Key`, both sides' histories, parallel sends that can never overdraw, and bad
//! input with nothing moved. `kinko check` passes after each test.

mod bank_support;
mod support;

use bank_support::{balance, charge, linked, start};
use serde_json::{Value, json};
use support::{HttpResponse, Server, http_with, json_of, text_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    money_goes_to_the_handle_once,
    parallel_sends_never_overdraw,
    bad_input_moves_nothing,
    concurrent_requests_with_one_key_send_once,
);

fn send(kinko: &Server, token: &str, key: &str, body: Value) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        "/api/v1/transfers",
        Some(&body.to_string()),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
}

fn set_handle(kinko: &Server, token: &str, handle: &str) -> HttpResponse {
    kinko.call(
        "PUT",
        "/api/v1/me/handle",
        Some(json!({ "handle": handle })),
        Some(token),
    )
}

/// Hanako with ¥10,000 charged and the handle `hanako`; Taro with `taro`.
fn two_wallets(kinko: &Server, pair: &bank_support::Pair) -> (String, String) {
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (hanako, link_id) = linked(pair, &admin_token, 0);
    assert_eq!(charge(kinko, &hanako, "fund", &link_id, 10_000).status, 201);
    let taro = bank_support::wallet(kinko, "taro@example.jp", "090-2222-3333", "SANDBOX-ID-0002");
    assert_eq!(set_handle(kinko, &hanako, "@Hanako").status, 200);
    assert_eq!(set_handle(kinko, &taro, "taro").status, 200);
    (hanako, taro)
}

fn money_goes_to_the_handle_once(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let (hanako, taro) = two_wallets(kinko, &pair);
    let sent = send(
        kinko,
        &hanako,
        "lunch-1",
        json!({ "to_handle": "@taro", "amount_yen": 3_000, "note": "ランチ代" }),
    );
    assert_eq!(sent.status, 201, "{}", sent.body);
    let sent = json_of(&sent);
    assert_eq!(sent["status"], "posted", "{sent}");
    assert_eq!(balance(kinko, &hanako)["balance_yen"], 7_000);
    assert_eq!(balance(kinko, &taro)["balance_yen"], 3_000);
    // The same key and body again: the same transfer, nothing more moves.
    let again = send(
        kinko,
        &hanako,
        "lunch-1",
        json!({ "to_handle": "taro", "amount_yen": 3_000, "note": "ランチ代" }),
    );
    assert_eq!(json_of(&again)["id"], sent["id"], "{}", again.body);
    assert_eq!(balance(kinko, &taro)["balance_yen"], 3_000);
    // The same key, another body: refused.
    kinko.assert_problem(
        &send(
            kinko,
            &hanako,
            "lunch-1",
            json!({ "to_handle": "taro", "amount_yen": 3_001 }),
        ),
        409,
        "IDEMPOTENCY_KEY_REUSED",
    );
    // More than the wallet holds: rejected, nothing moves.
    let too_much = json_of(&send(
        kinko,
        &hanako,
        "too-much",
        json!({ "to_handle": "taro", "amount_yen": 7_001 }),
    ));
    assert_eq!(too_much["status"], "rejected", "{too_much}");
    assert_eq!(too_much["reason"], "insufficient_funds");
    assert_eq!(balance(kinko, &hanako)["balance_yen"], 7_000);
    // Each side sees its half: Taro the money in from @hanako, Hanako the money out to @taro.
    let theirs = json_of(&kinko.call("GET", "/api/v1/wallet/history", None, Some(&taro)));
    let movements = theirs["movements"].as_array().cloned().unwrap_or_default();
    assert_eq!(movements.len(), 1, "{theirs}");
    assert_eq!(movements[0]["kind"], "transfer_in");
    assert_eq!(movements[0]["counterparty"], "@hanako");
    assert_eq!(movements[0]["amount_yen"], 3_000);
    let mine = json_of(&kinko.call(
        "GET",
        "/api/v1/wallet/history?kind=transfer_out&limit=1",
        None,
        Some(&hanako),
    ));
    let newest = &mine["movements"][0];
    assert_eq!(newest["counterparty"], "@taro", "{mine}");
    assert_eq!(newest["status"], "rejected", "{mine}");
    // The next page continues from the cursor.
    let cursor = text_of(&mine["next_cursor"]);
    let older = json_of(&kinko.call(
        "GET",
        &format!("/api/v1/wallet/history?kind=transfer_out&limit=1&cursor={cursor}"),
        None,
        Some(&hanako),
    ));
    assert_eq!(older["movements"][0]["status"], "posted", "{older}");
    assert_eq!(older["next_cursor"], Value::Null, "{older}");
    kinko.assert_books_balance();
}

fn parallel_sends_never_overdraw(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let (hanako, taro) = two_wallets(kinko, &pair);
    // 60 sends of ¥250 against ¥10,000: exactly 40 can go through, however they race.
    let statuses: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..60)
            .map(|index| {
                let hanako = hanako.clone();
                scope.spawn(move || {
                    let response = send(
                        kinko,
                        &hanako,
                        &format!("race-{index}"),
                        json!({ "to_handle": "taro", "amount_yen": 250 }),
                    );
                    text_of(&json_of(&response)["status"])
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("a send panicked")))
            .collect()
    });
    let posted = statuses.iter().filter(|status| *status == "posted").count();
    let rejected = statuses
        .iter()
        .filter(|status| *status == "rejected")
        .count();
    assert_eq!((posted, rejected), (40, 20), "{statuses:?}");
    assert_eq!(balance(kinko, &hanako)["balance_yen"], 0);
    assert_eq!(balance(kinko, &taro)["balance_yen"], 10_000);
    kinko.assert_books_balance();
}

fn bad_input_moves_nothing(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let (hanako, taro) = two_wallets(kinko, &pair);
    kinko.assert_problem(
        &set_handle(kinko, &taro, "hanako"),
        409,
        "MONEY_HANDLE_TAKEN",
    );
    for bad in ["ab", "has space", "ハナコ"] {
        kinko.assert_problem(&set_handle(kinko, &taro, bad), 400, "MONEY_HANDLE_INVALID");
    }
    for (body, status, code) in [
        (
            json!({ "to_handle": "nobody_here", "amount_yen": 1 }),
            404,
            "MONEY_RECIPIENT_NOT_FOUND",
        ),
        (
            json!({ "to_handle": "hanako", "amount_yen": 1 }),
            400,
            "MONEY_RECIPIENT_INVALID",
        ),
        (
            json!({ "to_handle": "taro", "amount_yen": 0 }),
            400,
            "MONEY_AMOUNT_INVALID",
        ),
        (
            json!({ "to_handle": "taro", "amount_yen": -1 }),
            400,
            "MONEY_AMOUNT_INVALID",
        ),
        (
            json!({ "to_handle": "taro", "amount_yen": 1, "note": "x".repeat(101) }),
            400,
            "MONEY_NOTE_INVALID",
        ),
        (
            json!({ "to_handle": "taro", "amount_yen": 1, "note": "bell\u{7}" }),
            400,
            "MONEY_NOTE_INVALID",
        ),
        (json!({ "to_handle": "taro" }), 400, "REQUEST_INVALID"),
        (
            json!({ "to_handle": "taro", "amount_yen": 1, "memo": "x" }),
            400,
            "REQUEST_INVALID",
        ),
    ] {
        kinko.assert_problem(&send(kinko, &hanako, "bad", body), status, code);
    }
    let bearer = format!("Bearer {hanako}");
    kinko.assert_problem(
        &http_with(
            &kinko.address,
            "POST",
            "/api/v1/transfers",
            Some(&json!({ "to_handle": "taro", "amount_yen": 1 }).to_string()),
            &[("Authorization", bearer.as_str())],
        ),
        400,
        "IDEMPOTENCY_KEY_INVALID",
    );
    kinko.assert_problem(
        &kinko.call(
            "POST",
            "/api/v1/transfers",
            Some(json!({ "to_handle": "taro", "amount_yen": 1 })),
            None,
        ),
        401,
        "SESSION_INVALID",
    );
    assert_eq!(balance(kinko, &hanako)["balance_yen"], 10_000);
    assert_eq!(balance(kinko, &taro)["balance_yen"], 0);
    kinko.assert_books_balance();
}

/// Sixteen requests with one `Idempotency-Key` at once: every one answers the one transfer
/// (on PostgreSQL the losers used to hit the key's unique index: a 500), and it moved once.
fn concurrent_requests_with_one_key_send_once(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let (hanako, taro) = two_wallets(kinko, &pair);
    let body = json!({ "to_handle": "taro", "amount_yen": 1_000, "note": "" });
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| send(kinko, &hanako, "same-key", body.clone())))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("sender panicked")))
            .collect()
    });
    let first = json_of(&answers[0]);
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(json_of(answer)["id"], first["id"], "{}", answer.body);
    }
    assert_eq!(balance(kinko, &hanako)["balance_yen"], 9_000);
    assert_eq!(balance(kinko, &taro)["balance_yen"], 1_000);
    kinko.assert_books_balance();
}
