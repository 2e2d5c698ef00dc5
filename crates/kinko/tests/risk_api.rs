//! Money out scored by the risk engine (`KINKO_RISK_RULES`), over real HTTP against the sandbox
//! bank, on both stores. The mule chain — a victim's account freshly linked to an attacker's
//! wallet, charged, passed by P2P to a mule, or withdrawn — leaves with ¥0: the P2P and the
//! withdrawal are refused with the rule's reason and nothing moves (wallets, bank, books), and
//! each decision is stored with its rules and feature values. The same flows with money that is
//! not held go through, and a runaway rule stops at its circuit breaker.

mod bank_support;
mod support;

use bank_support::{balance, charge, customer, linked, start_with};
use serde_json::{Value, json};
use support::{HttpResponse, Server, http_with, json_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    the_mule_chain_leaves_with_nothing,
    money_that_is_not_held_still_moves,
    a_runaway_rule_stops_at_its_breaker,
);

fn post(kinko: &Server, token: &str, path: &str, key: &str, body: Value) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        path,
        Some(&body.to_string()),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
}

/// The stored decisions, oldest first: (flow, outcome, decision JSON).
fn decisions(kinko: &Server) -> Vec<(String, String, Value)> {
    let argument = |name: &str| {
        kinko
            .store
            .iter()
            .position(|argument| argument == name)
            .and_then(|index| kinko.store.get(index + 1))
    };
    let location = kinko_store::StoreLocation::choose(
        argument("--data-dir").map(std::path::Path::new),
        argument("--database-url").map(String::as_str),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let database =
        kinko_store::sql::Database::open(&location).unwrap_or_else(|error| panic!("{error}"));
    let rows = database
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query(
                "SELECT flow, outcome, decision FROM risk_decisions ORDER BY created_at, id",
                &[],
            )
        })
        .unwrap_or_else(|error: kinko_ledger::StoreError| panic!("{error}"));
    rows.iter()
        .map(|row| {
            let text = |index| row.text(index).unwrap_or_else(|error| panic!("{error}"));
            let decision = serde_json::from_str(&text(2)).unwrap_or_else(|error| panic!("{error}"));
            (text(0), text(1), decision)
        })
        .collect()
}

fn set_handle(kinko: &Server, token: &str, handle: &str) {
    let response = kinko.call(
        "PUT",
        "/api/v1/me/handle",
        Some(json!({ "handle": handle })),
        Some(token),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

/// An attacker's wallet with the victim's (hanako's) account linked just now and ¥10,000
/// charged from it, and a mule wallet `@taro`: (attacker token, link id, mule token).
fn chain(pair: &bank_support::Pair) -> (String, String, String) {
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (attacker, link_id) = linked(pair, &admin_token, 0);
    let charged = charge(kinko, &attacker, "charge-1", &link_id, 10_000);
    assert_eq!(charged.status, 201, "{}", charged.body);
    let mule = bank_support::wallet(kinko, "taro@example.jp", "090-2222-3333", "SANDBOX-ID-0002");
    set_handle(kinko, &mule, "taro");
    (attacker, link_id, mule)
}

fn the_mule_chain_leaves_with_nothing(backend: &str) {
    // Unset: the server's default (the shipped rules) must be what stops the chain.
    let pair = start_with(backend, &[("KINKO_RISK_RULES", support::UNSET)]);
    let kinko = &pair.kinko;
    let victim = customer(0);
    let at_bank_before = pair.bank.balance(&victim, "0001");
    let (attacker, link_id, mule) = chain(&pair);
    assert_eq!(pair.bank.balance(&victim, "0001"), at_bank_before - 10_000);

    let pass_on = post(
        kinko,
        &attacker,
        "/api/v1/transfers",
        "p2p-1",
        json!({ "to_handle": "taro", "amount_yen": 9_000 }),
    );
    kinko.assert_problem(&pass_on, 403, "MONEY_RISK_DECLINED");
    let title = json_of(&pass_on)["title"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(title.contains("72 hours"), "{title}");

    let cash_out = post(
        kinko,
        &attacker,
        "/api/v1/withdrawals",
        "out-1",
        json!({ "link_id": link_id, "amount_yen": 9_000 }),
    );
    kinko.assert_problem(&cash_out, 403, "MONEY_RISK_DECLINED");

    // Nothing moved: both wallets, the mule's history, the bank, the books.
    assert_eq!(balance(kinko, &attacker)["balance_yen"], 10_000);
    assert_eq!(balance(kinko, &mule)["balance_yen"], 0);
    let history = json_of(&kinko.call("GET", "/api/v1/wallet/history", None, Some(&mule)));
    assert_eq!(history["movements"], json!([]), "{history}");
    assert_eq!(pair.bank.balance(&victim, "0001"), at_bank_before - 10_000);
    kinko.assert_books_balance();

    // Both refusals are stored with the rule that acted and the values that made it fire.
    let stored = decisions(kinko);
    let flows: Vec<(&str, &str)> = stored
        .iter()
        .map(|(flow, outcome, _)| (flow.as_str(), outcome.as_str()))
        .collect();
    assert_eq!(
        flows,
        [("p2p", "deny"), ("withdrawal", "deny")],
        "{stored:?}"
    );
    let firings = stored[0].2["firings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let held = firings
        .iter()
        .find(|firing| firing["rule_id"] == "held-money-cannot-leave")
        .unwrap_or_else(|| panic!("{stored:?}"));
    assert_eq!(held["effect"], "acted");
    assert_eq!(
        held["features"],
        json!([
            ["amount", 9_000],
            ["balance", 10_000],
            ["user.charge_young.sum_72h", 10_000],
            ["user.p2p_in.sum_72h", 0]
        ])
    );
}

/// Writes `rules` to a file in `dir` and answers its path.
fn rule_file(dir: &tempfile::TempDir, rules: &str) -> String {
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, rules).unwrap_or_else(|error| panic!("{error}"));
    path.display().to_string()
}

fn money_that_is_not_held_still_moves(backend: &str) {
    // The shipped rules with no hold on young links' money (as if the link were old).
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let shipped = include_str!("../../../rules/default.toml");
    let rules = shipped.replace("young_link_days = 7", "young_link_days = 0");
    assert_ne!(rules, shipped);
    let path = rule_file(&dir, &rules);
    let pair = start_with(backend, &[("KINKO_RISK_RULES", path.as_str())]);
    let kinko = &pair.kinko;
    let (sender, link_id, receiver) = chain(&pair);

    let sent = post(
        kinko,
        &sender,
        "/api/v1/transfers",
        "p2p-1",
        json!({ "to_handle": "taro", "amount_yen": 3_000 }),
    );
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(json_of(&sent)["status"], "posted");
    // A replay of the same request is answered as before, not scored again.
    let again = post(
        kinko,
        &sender,
        "/api/v1/transfers",
        "p2p-1",
        json!({ "to_handle": "taro", "amount_yen": 3_000 }),
    );
    assert_eq!(
        json_of(&again)["id"],
        json_of(&sent)["id"],
        "{}",
        again.body
    );
    let out = post(
        kinko,
        &sender,
        "/api/v1/withdrawals",
        "out-1",
        json!({ "link_id": link_id, "amount_yen": 1_000 }),
    );
    assert_eq!(out.status, 201, "{}", out.body);
    assert_eq!(balance(kinko, &sender)["balance_yen"], 6_000);
    assert_eq!(balance(kinko, &receiver)["balance_yen"], 3_000);

    // The receiver's money came by P2P: it is held, whatever the link rules say.
    set_handle(kinko, &sender, "hanako");
    let back = post(
        kinko,
        &receiver,
        "/api/v1/transfers",
        "back-1",
        json!({ "to_handle": "hanako", "amount_yen": 3_000 }),
    );
    kinko.assert_problem(&back, 403, "MONEY_RISK_DECLINED");
    assert_eq!(balance(kinko, &receiver)["balance_yen"], 3_000);
    kinko.assert_books_balance();
}

fn a_runaway_rule_stops_at_its_breaker(backend: &str) {
    // A mistaken rule that denies every transfer, capped at 2 denials an hour: the third
    // transfer goes through (and the decision says so in the log) instead of every honest
    // user being blocked.
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let path = rule_file(
        &dir,
        r#"version = "runaway-1"
[[rule]]
id = "deny-everything"
events = ["p2p"]
when = ["amount > 0"]
outcome = "deny"
breaker = { max = 2, per = "1h" }
reason_en = "No."
reason_ja = "いいえ。"
"#,
    );
    let pair = start_with(backend, &[("KINKO_RISK_RULES", path.as_str())]);
    let kinko = &pair.kinko;
    let (sender, _, receiver) = chain(&pair);
    let statuses: Vec<u16> = (0..3)
        .map(|index| {
            post(
                kinko,
                &sender,
                "/api/v1/transfers",
                &format!("p2p-{index}"),
                json!({ "to_handle": "taro", "amount_yen": 1_000 }),
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [403, 403, 201]);
    assert_eq!(balance(kinko, &receiver)["balance_yen"], 1_000);
    // Not silent: the third decision is stored with the breaker open.
    let effects: Vec<(String, Value)> = decisions(kinko)
        .into_iter()
        .map(|(_, outcome, decision)| (outcome, decision["firings"][0]["effect"].clone()))
        .collect();
    assert_eq!(
        effects,
        [
            ("deny".to_owned(), json!("acted")),
            ("deny".to_owned(), json!("acted")),
            ("allow".to_owned(), json!("breaker_open")),
        ]
    );
    kinko.assert_books_balance();
}
