//! Charges end to end, on both stores: `kinko serve` and `kinko bank-sandbox` on port 0, a
//! wallet linked through the bank's own pages, then charges over real HTTP. Proves: a charge
//! moves money once (ledger, history, CSV and the bank's balance agree), the same
//! `Idempotency-Key` never charges twice and another body under it is refused, 50 parallel
//! charges cannot pass a daily limit, a new link waits, a bank's refusal voids the charge, a
//! crash between the bank's debit and the ledger's post is reconciled with the money moved
//! exactly once, and bad input is problem+json with nothing moved. `kinko check` passes after
//! each test.

mod bank_support;
mod support;

use std::time::{Duration, Instant};

use bank_support::{
    Browser, approve_at_bank, balance, charge, charge_confirmed, complete, customer, linked,
    linked_with_secret, set_policy, start, start_link, start_with, start_with_bank, wallet,
};
use serde_json::{Value, json};
use support::{HttpResponse, Server, http_with, json_of, text_of, totp_code, wrong_code};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    a_charge_moves_money_once,
    parallel_charges_cannot_pass_the_daily_limit,
    a_new_link_waits_and_a_bank_refusal_voids,
    a_crash_after_the_bank_debit_is_reconciled,
    bad_input_moves_nothing,
    a_withdrawal_goes_back_to_the_holders_account,
    a_large_charge_needs_a_code_bound_to_amount_and_link,
    a_debit_the_bank_decides_late_but_in_time_is_posted,
    a_debit_that_reaches_the_bank_after_its_deadline_is_refused_there,
    an_in_doubt_charge_on_an_ended_link_is_settled_past_a_bad_row,
    concurrent_requests_with_one_key_charge_once,
    two_instances_refreshing_one_link_take_turns,
    relinking_an_account_starts_no_limit_afresh,
);

fn a_charge_moves_money_once(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let hanako = customer(0);
    let at_bank_before = pair.bank.balance(&hanako, "0001");
    assert_eq!(balance(kinko, &token)["balance_yen"], 0);

    let first = charge(kinko, &token, "charge-1", &link_id, 12_345);
    assert_eq!(first.status, 201, "{}", first.body);
    let first = json_of(&first);
    assert_eq!(first["status"], "posted", "{first}");
    assert_eq!(first["amount_yen"], 12_345);
    let held = balance(kinko, &token);
    assert_eq!(held["balance_yen"], 12_345, "{held}");
    assert_eq!(held["available_yen"], 12_345, "{held}");
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 12_345);

    // The same key and body: the same charge, no second debit.
    let again = charge(kinko, &token, "charge-1", &link_id, 12_345);
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(json_of(&again)["id"], first["id"]);
    assert_eq!(balance(kinko, &token)["balance_yen"], 12_345);
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 12_345);
    // The same key with another body: refused, nothing moved.
    kinko.assert_problem(
        &charge(kinko, &token, "charge-1", &link_id, 99),
        409,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(balance(kinko, &token)["balance_yen"], 12_345);

    // The owner sees it: the history names the bank and the account's tail; the CSV opens
    // in Excel (BOM) and carries the amount.
    let history = json_of(&kinko.call("GET", "/api/v1/wallet/history", None, Some(&token)));
    let movements = history["movements"].as_array().cloned().unwrap_or_default();
    assert_eq!(movements.len(), 1, "{history}");
    assert_eq!(movements[0]["kind"], "charge");
    assert_eq!(movements[0]["status"], "posted");
    let counterparty = text_of(&movements[0]["counterparty"]);
    assert!(counterparty.contains("みずほ"), "{counterparty}");
    assert!(
        counterparty.contains(&hanako.accounts[0].number[4..]),
        "{counterparty}"
    );
    let csv = kinko.call("GET", "/api/v1/wallet/history.csv", None, Some(&token));
    assert_eq!(csv.status, 200);
    assert!(
        csv.header("content-type")
            .unwrap_or_default()
            .starts_with("text/csv")
    );
    assert!(csv.body.starts_with('\u{feff}'), "no BOM");
    assert!(csv.body.contains(",12345,"), "{}", csv.body);
    // Another wallet sees none of it.
    let other = wallet(kinko, "taro@example.jp", "090-2222-3333", "SANDBOX-ID-0002");
    let theirs = json_of(&kinko.call("GET", "/api/v1/wallet/history", None, Some(&other)));
    assert_eq!(theirs["movements"], json!([]));
    let charge_id = text_of(&first["id"]);
    kinko.assert_problem(
        &kinko.call(
            "GET",
            &format!("/api/v1/charges/{charge_id}"),
            None,
            Some(&other),
        ),
        404,
        "MONEY_CHARGE_NOT_FOUND",
    );
    kinko.assert_problem(
        &charge(kinko, &other, "theirs-1", &link_id, 1_000),
        404,
        "BANK_LINK_NOT_FOUND",
    );
    kinko.assert_books_balance();
}

fn parallel_charges_cannot_pass_the_daily_limit(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    // A new link may take ¥30,000 a day (the default new-link limit).
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let hanako = customer(0);
    let at_bank_before = pair.bank.balance(&hanako, "0001");
    let outcomes: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|index| {
                let token = token.clone();
                let link_id = link_id.clone();
                scope.spawn(move || {
                    let response =
                        charge(kinko, &token, &format!("parallel-{index}"), &link_id, 1_000);
                    (response.status, json_of(&response))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| panic!("a charge thread panicked"))
            })
            .collect()
    });
    let posted = outcomes
        .iter()
        .filter(|(status, body)| *status == 201 && body["status"] == "posted")
        .count();
    let limited = outcomes
        .iter()
        .filter(|(status, body)| *status == 403 && body["code"] == "MONEY_LIMIT_EXCEEDED")
        .count();
    assert_eq!(posted, 30, "{outcomes:?}");
    assert_eq!(limited, 20, "{outcomes:?}");
    assert_eq!(balance(kinko, &token)["balance_yen"], 30_000);
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 30_000);
    kinko.assert_books_balance();
}

fn a_new_link_waits_and_a_bank_refusal_voids(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    // The bank's default: a new link waits 24 hours before its first charge.
    let (token, link_id) = linked(&pair, &admin_token, 24);
    let waiting = charge(kinko, &token, "too-early", &link_id, 1_000);
    kinko.assert_problem(&waiting, 403, "MONEY_NEW_LINK_WAIT");
    assert!(waiting.header("retry-after").is_some());
    set_policy(
        &pair,
        &admin_token,
        "0001",
        json!({ "new_link_wait_hours": 0 }),
    );
    // The holder's account is nearly empty: the bank rejects, the pending charge is voided.
    let hanako = customer(0);
    pair.bank.set_balance(&hanako, "0001", 500);
    let refused = charge(kinko, &token, "too-much", &link_id, 1_000);
    assert_eq!(refused.status, 201, "{}", refused.body);
    let refused = json_of(&refused);
    assert_eq!(refused["status"], "rejected", "{refused}");
    assert_eq!(refused["reason"], "insufficient_funds", "{refused}");
    let held = balance(kinko, &token);
    assert_eq!(held["balance_yen"], 0, "{held}");
    assert_eq!(held["pending_in_yen"], 0, "{held}");
    assert_eq!(pair.bank.balance(&hanako, "0001"), 500);
    // The bank's switch: charging off at this bank.
    set_policy(
        &pair,
        &admin_token,
        "0001",
        json!({ "charging_enabled": false }),
    );
    kinko.assert_problem(
        &charge(kinko, &token, "switched-off", &link_id, 100),
        403,
        "BANK_CHARGING_DISABLED",
    );
    kinko.assert_books_balance();
}

fn a_crash_after_the_bank_debit_is_reconciled(backend: &str) {
    let mut pair = start_with(backend, &[("KINKO_FAILPOINT", "charge_after_bank_debit")]);
    let admin_token = pair.kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let hanako = customer(0);
    let at_bank_before = pair.bank.balance(&hanako, "0001");
    // The server dies between the bank's debit and the ledger's post: no answer comes.
    let body = json!({ "link_id": link_id, "amount_yen": 7_000 }).to_string();
    pair.kinko
        .assert_post_crashes("/api/v1/charges", &body, &token, "crash-1");
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 7_000);
    // Back up, with the reconciler looking at once: the debit is found by its key and posted.
    let issuer = pair.bank.issuer();
    pair.kinko.restart(&[
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_RECONCILE_AFTER_S", "0"),
        ("KINKO_RECONCILE_EVERY_S", "1"),
    ]);
    let kinko = &pair.kinko;
    let deadline = Instant::now() + Duration::from_secs(20);
    while balance(kinko, &token)["balance_yen"] != 7_000 {
        assert!(Instant::now() < deadline, "{}", balance(kinko, &token));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Exactly once: the bank was debited once, and the same request again changes nothing.
    let again = charge(kinko, &token, "crash-1", &link_id, 7_000);
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(json_of(&again)["status"], "posted");
    assert_eq!(balance(kinko, &token)["balance_yen"], 7_000);
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 7_000);
    kinko.assert_books_balance();
}

fn bad_input_moves_nothing(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let bearer = format!("Bearer {token}");
    let post = |body: &str, key: Option<&str>| {
        let mut headers = vec![("Authorization", bearer.as_str())];
        if let Some(key) = key {
            headers.push(("Idempotency-Key", key));
        }
        http_with(
            &kinko.address,
            "POST",
            "/api/v1/charges",
            Some(body),
            &headers,
        )
    };
    let valid = json!({ "link_id": link_id, "amount_yen": 1_000 }).to_string();
    kinko.assert_problem(&post(&valid, None), 400, "IDEMPOTENCY_KEY_INVALID");
    kinko.assert_problem(
        &post(&valid, Some("has space")),
        400,
        "IDEMPOTENCY_KEY_INVALID",
    );
    for (body, code) in [
        (
            json!({ "link_id": link_id, "amount_yen": 0 }),
            "MONEY_AMOUNT_INVALID",
        ),
        (
            json!({ "link_id": link_id, "amount_yen": -5 }),
            "MONEY_AMOUNT_INVALID",
        ),
        (
            json!({ "link_id": link_id, "amount_yen": "1000" }),
            "REQUEST_INVALID",
        ),
        (
            json!({ "link_id": link_id, "amount_yen": 10.5 }),
            "REQUEST_INVALID",
        ),
        (
            json!({ "link_id": "nope", "amount_yen": 1 }),
            "REQUEST_INVALID",
        ),
    ] {
        kinko.assert_problem(&post(&body.to_string(), Some("bad-1")), 400, code);
    }
    kinko.assert_problem(
        &post(
            &json!({ "link_id": uuid_like(), "amount_yen": 1_000 }).to_string(),
            Some("bad-2"),
        ),
        404,
        "BANK_LINK_NOT_FOUND",
    );
    kinko.assert_problem(
        &post(
            &json!({ "link_id": link_id, "amount_yen": 100_001 }).to_string(),
            Some("bad-3"),
        ),
        403,
        "MONEY_LIMIT_EXCEEDED",
    );
    kinko.assert_problem(
        &kinko.call("GET", "/api/v1/wallet", None, None),
        401,
        "SESSION_INVALID",
    );
    kinko.assert_problem(
        &kinko.call(
            "GET",
            "/api/v1/wallet/history?kind=gift",
            None,
            Some(&token),
        ),
        400,
        "MONEY_FILTER_INVALID",
    );
    kinko.assert_problem(
        &kinko.call(
            "GET",
            "/api/v1/wallet/history?cursor=zzz",
            None,
            Some(&token),
        ),
        400,
        "MONEY_CURSOR_INVALID",
    );
    kinko.assert_problem(
        &kinko.call("GET", "/api/v1/wallet/history?limit=0", None, Some(&token)),
        400,
        "MONEY_FILTER_INVALID",
    );
    let held = balance(kinko, &token);
    assert_eq!(held["balance_yen"], 0, "{held}");
    let history = json_of(&kinko.call("GET", "/api/v1/wallet/history", None, Some(&token)));
    assert_eq!(history["movements"], json!([]), "{history}");
    kinko.assert_books_balance();
}

fn withdraw(kinko: &Server, token: &str, key: &str, link_id: &str, amount: i64) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        "/api/v1/withdrawals",
        Some(&json!({ "link_id": link_id, "amount_yen": amount }).to_string()),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
}

fn a_withdrawal_goes_back_to_the_holders_account(backend: &str) {
    let mut pair = start_with(backend, &[("KINKO_PAYOUT_WAIT_H", "72")]);
    let admin_token = pair.kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let hanako = customer(0);
    let at_bank_before = pair.bank.balance(&hanako, "0001");
    assert_eq!(
        charge(&pair.kinko, &token, "in-1", &link_id, 10_000).status,
        201
    );

    // A new link receives no withdrawal for 72 hours (THREATS 21): nothing moves, and the
    // answer says when to come back.
    let early = withdraw(&pair.kinko, &token, "early", &link_id, 1_000);
    pair.kinko
        .assert_problem(&early, 403, "MONEY_PAYOUT_ACCOUNT_WAIT");
    let retry_after: i64 = early
        .header("retry-after")
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_default();
    assert!(
        (71 * 3_600..=72 * 3_600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(balance(&pair.kinko, &token)["balance_yen"], 10_000);
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 10_000);
    // The same server with no wait configured (as if the 72 hours had passed).
    let issuer = pair.bank.issuer();
    pair.kinko.restart(&[
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_PAYOUT_WAIT_H", "0"),
    ]);
    let kinko = &pair.kinko;

    let out = withdraw(kinko, &token, "out-1", &link_id, 4_000);
    assert_eq!(out.status, 201, "{}", out.body);
    let out = json_of(&out);
    assert_eq!(out["status"], "posted", "{out}");
    assert_eq!(out["direction"], "withdrawal");
    assert_eq!(balance(kinko, &token)["balance_yen"], 6_000);
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 6_000);
    // Again with the same key: the same withdrawal, nothing more moves.
    let again = withdraw(kinko, &token, "out-1", &link_id, 4_000);
    assert_eq!(json_of(&again)["id"], out["id"]);
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 6_000);
    // More than the wallet holds: rejected, the reservation never made, the bank untouched.
    let too_much = withdraw(kinko, &token, "out-2", &link_id, 6_001);
    assert_eq!(too_much.status, 201, "{}", too_much.body);
    let too_much = json_of(&too_much);
    assert_eq!(too_much["status"], "rejected", "{too_much}");
    assert_eq!(too_much["reason"], "insufficient_funds");
    let held = balance(kinko, &token);
    assert_eq!(held["balance_yen"], 6_000, "{held}");
    assert_eq!(held["available_yen"], 6_000, "{held}");
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 6_000);
    // Another wallet cannot send this wallet's link anything, nor read its withdrawal.
    let other = wallet(kinko, "taro@example.jp", "090-2222-3333", "SANDBOX-ID-0002");
    kinko.assert_problem(
        &withdraw(kinko, &other, "theirs", &link_id, 1),
        404,
        "BANK_LINK_NOT_FOUND",
    );
    let out_id = text_of(&out["id"]);
    kinko.assert_problem(
        &kinko.call(
            "GET",
            &format!("/api/v1/withdrawals/{out_id}"),
            None,
            Some(&other),
        ),
        404,
        "MONEY_WITHDRAWAL_NOT_FOUND",
    );
    assert_eq!(
        json_of(&kinko.call(
            "GET",
            &format!("/api/v1/withdrawals/{out_id}"),
            None,
            Some(&token)
        ))["status"],
        "posted"
    );
    // The history has both, newest first; the CSV signs them from the wallet's side.
    let history = json_of(&kinko.call(
        "GET",
        "/api/v1/wallet/history?kind=withdrawal",
        None,
        Some(&token),
    ));
    let kinds: Vec<String> = history["movements"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|movement| text_of(&movement["status"]))
        .collect();
    assert_eq!(kinds, vec!["rejected", "posted"], "{history}");
    let csv = kinko.call("GET", "/api/v1/wallet/history.csv", None, Some(&token));
    assert!(csv.body.contains(",-4000,"), "{}", csv.body);
    assert!(csv.body.contains(",10000,"), "{}", csv.body);
    kinko.assert_books_balance();
}

fn uuid_like() -> String {
    "0192f000-0000-7000-8000-000000000abc".to_owned()
}

/// Dynamic linking (THREATS 13): above the threshold a charge needs a confirmation passed
/// with the authenticator for exactly this amount and link; change either, or reuse it, and
/// the charge is refused with nothing moved.
fn a_large_charge_needs_a_code_bound_to_amount_and_link(backend: &str) {
    let pair = start_with(backend, &[("KINKO_CHARGE_CONFIRM_ABOVE_YEN", "5000")]);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (token, link_id, secret) = linked_with_secret(&pair, &admin_token, 0);
    let charge_with = |key: &str, amount: i64, confirmation: Option<&str>| {
        charge_confirmed(kinko, &token, key, &link_id, amount, confirmation)
    };
    // At the threshold no confirmation is needed; above it, it is.
    assert_eq!(charge(kinko, &token, "small", &link_id, 5_000).status, 201);
    kinko.assert_problem(
        &charge_with("big-1", 6_000, None),
        403,
        "MONEY_CONFIRMATION_REQUIRED",
    );
    let started = kinko.call(
        "POST",
        "/api/v1/charges/confirmations",
        Some(json!({ "link_id": link_id, "amount_yen": 6_000 })),
        Some(&token),
    );
    assert_eq!(started.status, 201, "{}", started.body);
    let started = json_of(&started);
    let confirmation = text_of(&started["id"]);
    assert!(text_of(&started["message"]).contains("¥6,000"), "{started}");
    // Not passed yet: refused.
    kinko.assert_problem(
        &charge_with("big-2", 6_000, Some(&confirmation)),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    let path = format!("/api/v1/charges/confirmations/{confirmation}/totp");
    kinko.assert_problem(
        &kinko.call(
            "POST",
            &path,
            Some(json!({ "code": wrong_code(&secret) })),
            Some(&token),
        ),
        403,
        "MONEY_CONFIRMATION_CODE_INVALID",
    );
    let passed = kinko.call(
        "POST",
        &path,
        Some(json!({ "code": totp_code(&secret, 1) })),
        Some(&token),
    );
    assert_eq!(passed.status, 200, "{}", passed.body);
    assert_eq!(json_of(&passed)["status"], "confirmed");
    // Another amount with this confirmation: refused, and the confirmation survives.
    kinko.assert_problem(
        &charge_with("big-3", 6_001, Some(&confirmation)),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    assert_eq!(balance(kinko, &token)["balance_yen"], 5_000);
    let paid = charge_with("big-4", 6_000, Some(&confirmation));
    assert_eq!(paid.status, 201, "{}", paid.body);
    assert_eq!(json_of(&paid)["status"], "posted");
    // Used once: the same confirmation for another charge is refused.
    kinko.assert_problem(
        &charge_with("big-5", 6_000, Some(&confirmation)),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    assert_eq!(balance(kinko, &token)["balance_yen"], 11_000);
    kinko.assert_books_balance();
}

/// A bank that holds every debit for 12 s: Kinko's call times out (10 s) and leaves the charge
/// pending; the reconciler (every second, no wait) asks the bank by key meanwhile and hears
/// 404; then the bank decides. Before deadlines, the reconciler voided the charge on that 404
/// and the bank debited anyway when released: the customer paid, the wallet got nothing.
/// Answers the pair, the wallet's token, the charge as it ended, and the bank balance before.
fn held_debit(backend: &str, order_ttl_s: &str) -> (bank_support::Pair, String, Value, i64) {
    let hold = tempfile::NamedTempFile::new().unwrap_or_else(|error| panic!("{error}"));
    let hold_path = hold.path().to_string_lossy().into_owned();
    let pair = start_with_bank(
        backend,
        &[
            ("KINKO_RECONCILE_AFTER_S", "0"),
            ("KINKO_RECONCILE_EVERY_S", "1"),
            ("KINKO_BANK_ORDER_TTL_S", order_ttl_s),
        ],
        &[("KINKO_SANDBOX_HOLD_PAYMENTS_FILE", hold_path.as_str())],
    );
    let admin_token = pair.kinko.operator_token(&pair.admin, 0);
    // Linking makes no debit, so the hold does not get in its way.
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let at_bank_before = pair.bank.balance(&customer(0), "0001");
    let started = Instant::now();
    std::thread::scope(|scope| {
        let kinko = &pair.kinko;
        let (token, link_id) = (token.clone(), link_id.clone());
        // The request itself gives up at Kinko's request timeout; what matters is the row.
        scope.spawn(move || charge(kinko, &token, "held-1", &link_id, 5_000));
        std::thread::sleep(Duration::from_millis(13_500));
    });
    assert!(started.elapsed() >= Duration::from_secs(13));
    // The reconciler has asked (and heard 404) several times by now; the charge must still
    // be open, since the order could still reach the bank.
    let meanwhile = json_of(&charge(&pair.kinko, &token, "held-1", &link_id, 5_000));
    assert_eq!(meanwhile["status"], "pending", "{meanwhile}");
    assert_eq!(balance(&pair.kinko, &token)["balance_yen"], 0);
    drop(hold);
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let now = json_of(&charge(&pair.kinko, &token, "held-1", &link_id, 5_000));
        if now["status"] != "pending" {
            break now;
        }
        assert!(Instant::now() < deadline, "still pending: {now}");
        std::thread::sleep(Duration::from_millis(200));
    };
    (pair, token, ended, at_bank_before)
}

fn a_debit_the_bank_decides_late_but_in_time_is_posted(backend: &str) {
    let (pair, token, ended, at_bank_before) = held_debit(backend, "60");
    assert_eq!(ended["status"], "posted", "{ended}");
    // Both sides moved once, by the same amount.
    assert_eq!(
        pair.bank.balance(&customer(0), "0001"),
        at_bank_before - 5_000
    );
    assert_eq!(balance(&pair.kinko, &token)["balance_yen"], 5_000);
    let history = json_of(
        &pair
            .kinko
            .call("GET", "/api/v1/wallet/history", None, Some(&token)),
    );
    assert_eq!(history["movements"][0]["status"], "posted", "{history}");
    pair.kinko.assert_books_balance();
}

fn a_debit_that_reaches_the_bank_after_its_deadline_is_refused_there(backend: &str) {
    // The order is good for 5 s; the bank decides it after 12 s.
    let (pair, token, ended, at_bank_before) = held_debit(backend, "5");
    assert_eq!(ended["status"], "rejected", "{ended}");
    assert_eq!(ended["reason"], "order_expired", "{ended}");
    // Neither side moved.
    assert_eq!(pair.bank.balance(&customer(0), "0001"), at_bank_before);
    assert_eq!(balance(&pair.kinko, &token)["balance_yen"], 0);
    let history = json_of(
        &pair
            .kinko
            .call("GET", "/api/v1/wallet/history", None, Some(&token)),
    );
    assert_eq!(history["movements"][0]["status"], "rejected", "{history}");
    pair.kinko.assert_books_balance();
}

/// A charge in doubt (the server died between the bank's debit and the ledger's post) whose
/// link the wallet then ended: the reconciler has no link token any more, and asks the bank
/// with Kinko's client authentication instead. Ahead of it in the queue sits a row that
/// cannot be reconciled (its id is a transfer the ledger holds with other fields): it is
/// logged and skipped, not the end of every sweep. Before, the charge stayed pending forever.
fn an_in_doubt_charge_on_an_ended_link_is_settled_past_a_bad_row(backend: &str) {
    let mut pair = start_with(backend, &[("KINKO_FAILPOINT", "charge_after_bank_debit")]);
    let admin_token = pair.kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let hanako = customer(0);
    let at_bank_before = pair.bank.balance(&hanako, "0001");
    let body = json!({ "link_id": link_id, "amount_yen": 7_000 }).to_string();
    pair.kinko
        .assert_post_crashes("/api/v1/charges", &body, &token, "crash-1");
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 7_000);
    let issuer = pair.bank.issuer();
    // Back up with the reconciler held off; the wallet ends the link meanwhile.
    pair.kinko.restart(&[
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_RECONCILE_AFTER_S", "3600"),
    ]);
    let unlinked = pair.kinko.call(
        "DELETE",
        &format!("/api/v1/bank-links/{link_id}"),
        None,
        Some(&token),
    );
    assert_eq!(unlinked.status, 200, "{}", unlinked.body);
    // An operator's credit, then a pending charge row planted under the credit's id (oldest
    // of all): reserving it is refused by the ledger (`exists_with_different_*`).
    let database = pair.kinko.database();
    let user_id = database
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query_one(
                "SELECT user_id FROM money_bank_transfers WHERE idempotency_key = 'crash-1'",
                &[],
            )?
            .uuid(0)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    let user_id = uuid::Uuid::from_u128(user_id);
    let bearer = format!("Bearer {admin_token}");
    let credited = http_with(
        &pair.kinko.address,
        "POST",
        &format!("/api/v1/operator/users/{user_id}/credits"),
        Some(
            &json!({ "amount_yen": 1_000, "reason": "test funding for a charge test" }).to_string(),
        ),
        &[
            ("Authorization", bearer.as_str()),
            ("Idempotency-Key", "credit-1"),
        ],
    );
    assert_eq!(credited.status, 201, "{}", credited.body);
    let credit_id = uuid::Uuid::parse_str(&text_of(&json_of(&credited)["id"]))
        .unwrap_or_else(|error| panic!("{error}"));
    let planted = database
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.execute(
                "INSERT INTO money_bank_transfers (id, user_id, link_id, bank_code, direction,
                 amount_yen, idempotency_key, request_hash, status, created_at)
                 SELECT $1, user_id, link_id, bank_code, 'charge', 7, 'planted', 'x', 'pending', 0
                 FROM money_bank_transfers WHERE idempotency_key = 'crash-1'",
                &[kinko_store::sql::Value::Uuid(credit_id.as_u128())],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(planted, 1);
    drop(database);
    pair.kinko.restart(&[
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_RECONCILE_AFTER_S", "0"),
        ("KINKO_RECONCILE_EVERY_S", "1"),
    ]);
    let kinko = &pair.kinko;
    let deadline = Instant::now() + Duration::from_secs(20);
    while balance(kinko, &token)["balance_yen"] != 8_000 {
        assert!(Instant::now() < deadline, "{}", balance(kinko, &token));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Posted once, matching the one debit at the bank.
    let settled = json_of(&charge(kinko, &token, "crash-1", &link_id, 7_000));
    assert_eq!(settled["status"], "posted", "{settled}");
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 7_000);
    kinko.assert_books_balance();
}

/// Sixteen charges under one `Idempotency-Key` at once: each answers the one charge (never a
/// 500 from the key's unique index), and the bank and the wallet moved once.
fn concurrent_requests_with_one_key_charge_once(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let at_bank_before = pair.bank.balance(&customer(0), "0001");
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|_| scope.spawn(|| charge(kinko, &token, "same-key", &link_id, 2_000)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("charger panicked")))
            .collect()
    });
    let first = json_of(&answers[0]);
    for answer in &answers {
        // 202 for a request that found the charge while the bank was still being asked.
        assert!(matches!(answer.status, 201 | 202), "{}", answer.body);
        assert_eq!(json_of(answer)["id"], first["id"], "{}", answer.body);
    }
    let settled = json_of(&charge(kinko, &token, "same-key", &link_id, 2_000));
    assert_eq!(settled["status"], "posted", "{settled}");
    assert_eq!(balance(kinko, &token)["balance_yen"], 2_000);
    assert_eq!(
        pair.bank.balance(&customer(0), "0001"),
        at_bank_before - 2_000
    );
    kinko.assert_books_balance();
}

/// Two `kinko serve` processes on one database, neither with an access token for the link:
/// each must refresh before charging. The bank holds both refresh grants (and the debits)
/// until released, so both would decide at once: presenting one refresh token twice reads as
/// theft at the bank and ends the link. With the link's refresh lease the second process
/// waits, then refreshes with the rotated token; both charges post and the link stays active.
fn two_instances_refreshing_one_link_take_turns(backend: &str) {
    let hold = tempfile::NamedTempFile::new().unwrap_or_else(|error| panic!("{error}"));
    let hold_path = hold.path().to_string_lossy().into_owned();
    std::fs::remove_file(hold.path()).unwrap_or_else(|error| panic!("{error}"));
    let mut pair = start_with_bank(
        backend,
        &[],
        &[("KINKO_SANDBOX_HOLD_PAYMENTS_FILE", hold_path.as_str())],
    );
    let admin_token = pair.kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = linked(&pair, &admin_token, 0);
    let at_bank_before = pair.bank.balance(&customer(0), "0001");
    let issuer = pair.bank.issuer();
    let environment = [
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_PAYOUT_WAIT_H", "0"),
    ];
    // No access token cached in either process.
    pair.kinko.restart(&environment);
    let (mut second, second_address) =
        support::spawn_server_with("serve", &pair.kinko.store, &environment);
    std::fs::write(&hold_path, b"hold").unwrap_or_else(|error| panic!("{error}"));
    let bearer = format!("Bearer {token}");
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let handles: Vec<_> = [pair.kinko.address.clone(), second_address.clone()]
            .into_iter()
            .enumerate()
            .map(|(index, address)| {
                let (bearer, link_id) = (bearer.clone(), link_id.clone());
                scope.spawn(move || {
                    let key = format!("instance-{index}");
                    http_with(
                        &address,
                        "POST",
                        "/api/v1/charges",
                        Some(&json!({ "link_id": link_id, "amount_yen": 1_000 }).to_string()),
                        &[
                            ("Authorization", bearer.as_str()),
                            ("Idempotency-Key", key.as_str()),
                        ],
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1_500));
        std::fs::remove_file(&hold_path).unwrap_or_else(|error| panic!("{error}"));
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| panic!("charger panicked")))
            .collect()
    });
    drop(second.kill());
    drop(second.wait());
    for answer in &answers {
        assert_eq!(answer.status, 201, "{}", answer.body);
        assert_eq!(json_of(answer)["status"], "posted", "{}", answer.body);
    }
    let kinko = &pair.kinko;
    let listed = bank_support::links(kinko, &token);
    assert_eq!(listed[0]["status"], "active", "{listed:?}");
    assert_eq!(balance(kinko, &token)["balance_yen"], 2_000);
    assert_eq!(
        pair.bank.balance(&customer(0), "0001"),
        at_bank_before - 2_000
    );
    kinko.assert_books_balance();
}

/// Issue 11 item 5 (D4/D16): the bank's limits hold per bank account. A new link may take
/// ¥30,000 a day; unlinking and linking the same account again made a fresh link with a fresh
/// ¥30,000 (the sums were keyed by link). Now the second link's first charge is refused and
/// the bank's balance moved once.
fn relinking_an_account_starts_no_limit_afresh(backend: &str) {
    let pair = start_with(backend, &[("KINKO_OUTGOING_FREEZE_S", "0")]);
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    set_policy(
        &pair,
        &admin_token,
        "0001",
        json!({ "new_link_wait_hours": 0 }),
    );
    let token = wallet(
        kinko,
        "hanako@example.jp",
        "090-1234-5678",
        "SANDBOX-ID-0001",
    );
    let hanako = customer(0);
    // One browser at the bank: its session spares a second login (a TOTP code is single use).
    let mut at_bank = Browser::default();
    let mut link_account = || {
        let url = start_link(kinko, &token, "0001");
        let callback = approve_at_bank(&pair.bank, &mut at_bank, &url, &hanako, "0001");
        let linked = complete(kinko, &token, &callback);
        assert_eq!(linked.status, 201, "{}", linked.body);
        text_of(&json_of(&linked)["id"])
    };
    let link_id = link_account();
    let at_bank_before = pair.bank.balance(&hanako, "0001");
    let first = charge(kinko, &token, "before-relink", &link_id, 30_000);
    assert_eq!(json_of(&first)["status"], "posted", "{}", first.body);
    let unlinked = kinko.call(
        "DELETE",
        &format!("/api/v1/bank-links/{link_id}"),
        None,
        Some(&token),
    );
    assert_eq!(unlinked.status, 200, "{}", unlinked.body);
    let new_link_id = link_account();
    assert_ne!(new_link_id, link_id);
    let again = charge(kinko, &token, "after-relink", &new_link_id, 1_000);
    kinko.assert_problem(&again, 403, "MONEY_LIMIT_EXCEEDED");
    assert_eq!(pair.bank.balance(&hanako, "0001"), at_bank_before - 30_000);
    assert_eq!(balance(kinko, &token)["balance_yen"], 30_000);
    kinko.assert_books_balance();
}
