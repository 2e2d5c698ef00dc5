//! Disputes end to end, on both stores, over HTTP against the sandbox bank (issue 12 items 2
//! and 3): "I didn't do this" freezes the wallet, opens a case, follows the money by P2P and
//! holds what each wallet it reached still has — and nothing else; a bank's fraud report does
//! the same for the wallet that charged. The ledger (balances through the API, `kinko check`),
//! Kinko's rows and the bank's balance are compared after each.

mod bank_support;
mod support;

use std::time::{Duration, Instant};

use bank_support::{Browser, balance, charge, customer, form, linked, start_with};
use serde_json::{Value, json};
use support::{HttpResponse, Server, http_with, json_of, text_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    a_dispute_holds_what_the_chain_still_has,
    another_wallets_entry_answers_like_a_missing_one,
    a_refund_above_the_threshold_waits_for_a_second_operator,
    a_crash_in_the_middle_of_a_refund_is_resumed_not_doubled,
    a_bank_fraud_report_is_contained_like_a_dispute,
    disputing_a_transfer_out_follows_it_from_the_recipient,
);

/// The risk rules are tested on their own; here the mule chain must get through to be
/// followed.
const ENVIRONMENT: &[(&str, &str)] = &[("KINKO_RISK_RULES", "off")];

fn send(kinko: &Server, token: &str, key: &str, to: &str, amount: i64) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        "/api/v1/transfers",
        Some(&json!({ "to_handle": to, "amount_yen": amount, "note": "" }).to_string()),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
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

fn dispute(kinko: &Server, token: &str, entry_id: &str) -> HttpResponse {
    kinko.call(
        "POST",
        &format!("/api/v1/history/{entry_id}/dispute"),
        None,
        Some(token),
    )
}

fn posted(response: &HttpResponse) -> Value {
    assert_eq!(response.status, 201, "{}", response.body);
    let body = json_of(response);
    assert_eq!(body["status"], "posted", "{body}");
    body
}

/// (balance, available) of a wallet, from the ledger through the API.
fn funds(kinko: &Server, token: &str) -> (i64, i64) {
    let wallet = balance(kinko, token);
    (
        wallet["balance_yen"].as_i64().unwrap_or(-1),
        wallet["available_yen"].as_i64().unwrap_or(-1),
    )
}

/// The victim's wallet (hanako, linked to her account at 0001) and three more: taro and jiro
/// form the mule chain, saburo was paid before the disputed charge and must stay untouched.
struct Chain {
    hanako: String,
    taro: String,
    jiro: String,
    saburo: String,
    /// The disputed charge's id (its history entry has the same id).
    charge_id: String,
    /// hanako's ¥8,000 to taro (her history entry has the same id).
    mule_id: String,
}

/// hanako charges ¥3,000 and pays saburo ¥2,000; then the disputed ¥10,000 charge, of which
/// ¥8,000 go to taro and ¥5,000 of those on to jiro.
fn chain(pair: &bank_support::Pair) -> Chain {
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (hanako, link_id) = linked(pair, &admin_token, 0);
    let taro = bank_support::wallet(kinko, "taro@example.jp", "090-2222-3333", "SANDBOX-ID-0002");
    let jiro = bank_support::wallet(kinko, "jiro@example.jp", "090-3333-4444", "SANDBOX-ID-0003");
    let saburo = bank_support::wallet(
        kinko,
        "saburo@example.jp",
        "090-4444-5555",
        "SANDBOX-ID-0004",
    );
    set_handle(kinko, &hanako, "hanako");
    set_handle(kinko, &taro, "taro");
    set_handle(kinko, &jiro, "jiro");
    set_handle(kinko, &saburo, "saburo");
    posted(&charge(kinko, &hanako, "own-1", &link_id, 3_000));
    posted(&send(kinko, &hanako, "rent-1", "saburo", 2_000));
    // Each step a moment apart: following reads "after the money arrived" by time.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let disputed = posted(&charge(kinko, &hanako, "stolen-1", &link_id, 10_000));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mule = posted(&send(kinko, &hanako, "mule-1", "taro", 8_000));
    std::thread::sleep(std::time::Duration::from_millis(5));
    posted(&send(kinko, &taro, "mule-2", "jiro", 5_000));
    Chain {
        hanako,
        taro,
        jiro,
        saburo,
        charge_id: text_of(&disputed["id"]),
        mule_id: text_of(&mule["id"]),
    }
}

fn a_dispute_holds_what_the_chain_still_has(backend: &str) {
    let pair = start_with(backend, ENVIRONMENT);
    let kinko = &pair.kinko;
    let victim = customer(0);
    let bank_before = pair.bank.balance(&victim, "0001");
    let chain = chain(&pair);
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 13_000);
    assert_eq!(funds(kinko, &chain.hanako), (3_000, 3_000));
    assert_eq!(funds(kinko, &chain.taro), (3_000, 3_000));
    assert_eq!(funds(kinko, &chain.jiro), (5_000, 5_000));
    assert_eq!(funds(kinko, &chain.saburo), (2_000, 2_000));

    let disputed = dispute(kinko, &chain.hanako, &chain.charge_id);
    assert_eq!(disputed.status, 201, "{}", disputed.body);
    let disputed = json_of(&disputed);
    assert_eq!(disputed["amount_yen"], 10_000, "{disputed}");
    // hanako kept ¥2,000 of it, taro ¥3,000, jiro ¥5,000: all of it is still there.
    assert_eq!(disputed["held_yen"], 10_000, "{disputed}");
    let case_id = text_of(&disputed["case_id"]);

    // The same entry again: the same dispute and case, nothing held twice.
    let again = dispute(kinko, &chain.hanako, &chain.charge_id);
    assert_eq!(again.status, 201, "{}", again.body);
    let again = json_of(&again);
    assert_eq!(again["id"], disputed["id"]);
    assert_eq!(again["case_id"], disputed["case_id"]);
    assert_eq!(again["held_yen"], 10_000);

    // Held money stays in the wallet but cannot be spent; saburo, paid before, is untouched.
    assert_eq!(funds(kinko, &chain.hanako), (3_000, 1_000));
    assert_eq!(funds(kinko, &chain.taro), (3_000, 0));
    assert_eq!(funds(kinko, &chain.jiro), (5_000, 0));
    assert_eq!(funds(kinko, &chain.saburo), (2_000, 2_000));

    // Every wallet the money reached is frozen; saburo is not.
    for (token, key) in [
        (&chain.hanako, "after-1"),
        (&chain.taro, "after-2"),
        (&chain.jiro, "after-3"),
    ] {
        kinko.assert_problem(
            &send(kinko, token, key, "saburo", 100),
            403,
            "IDENTITY_OUTGOING_FROZEN",
        );
    }
    posted(&send(kinko, &chain.saburo, "free-1", "hanako", 500));
    assert_eq!(funds(kinko, &chain.saburo), (1_500, 1_500));
    // The owners are told: the disputer that the dispute was received, the wallets held why.
    assert!(
        bank_support::purposes(kinko, "hanako@example.jp").contains(&"dispute_received".to_owned())
    );
    for email in ["taro@example.jp", "jiro@example.jp"] {
        assert!(
            bank_support::purposes(kinko, email).contains(&"money_held_for_review".to_owned()),
            "{email}"
        );
    }
    assert!(
        !bank_support::purposes(kinko, "saburo@example.jp")
            .contains(&"money_held_for_review".to_owned())
    );
    assert_eq!(funds(kinko, &chain.hanako), (3_500, 1_500));

    // The operators see the holds, one per wallet, as the ledger has them.
    let admin_token = kinko.operator_token(&pair.admin, 1);
    let listed = kinko.call(
        "GET",
        &format!("/api/v1/operator/cases/{case_id}/holds"),
        None,
        Some(&admin_token),
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    let holds = json_of(&listed);
    let mut amounts: Vec<(i64, i64, String)> = holds
        .as_array()
        .unwrap_or_else(|| panic!("{holds}"))
        .iter()
        .map(|hold| {
            (
                hold["depth"].as_i64().unwrap_or(-1),
                hold["amount_yen"].as_i64().unwrap_or(-1),
                text_of(&hold["status"]),
            )
        })
        .collect();
    amounts.sort();
    assert_eq!(
        amounts,
        vec![
            (0, 2_000, "held".to_owned()),
            (1, 3_000, "held".to_owned()),
            (2, 5_000, "held".to_owned()),
        ]
    );
    // The rows agree: one dispute, one case of kind dispute, three holds summing to ¥10,000.
    let database = kinko.database();
    let (disputes, cases, held) = database
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            let disputes = tx
                .query_one("SELECT COUNT(*) FROM money_disputes", &[])?
                .int(0)?;
            let cases = tx
                .query_one("SELECT COUNT(*) FROM cases WHERE kind = 'dispute'", &[])?
                .int(0)?;
            let held = tx
                .query_one(
                    "SELECT CAST(SUM(amount_yen) AS BIGINT) FROM money_holds WHERE status = 'held'",
                    &[],
                )?
                .int(0)?;
            Ok::<_, kinko_ledger::StoreError>((disputes, cases, held))
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!((disputes, cases, held), (1, 1, 10_000));

    // Releasing jiro's hold gives him his ¥5,000 back (he stays frozen until reviewed).
    let jiro_hold = holds
        .as_array()
        .and_then(|all| all.iter().find(|hold| hold["depth"] == 2))
        .map(|hold| text_of(&hold["id"]))
        .unwrap_or_else(|| panic!("{holds}"));
    let released = kinko.call(
        "POST",
        &format!("/api/v1/operator/holds/{jiro_hold}/release"),
        Some(json!({ "reason": "case 12: jiro sold a bicycle, receipt on file" })),
        Some(&admin_token),
    );
    assert_eq!(released.status, 200, "{}", released.body);
    assert_eq!(json_of(&released)["status"], "released");
    assert_eq!(funds(kinko, &chain.jiro), (5_000, 5_000));

    // Nothing moved at the bank by the dispute; the books balance.
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 13_000);
    kinko.assert_books_balance();
    kinko.assert_audit_chain_intact();
}

fn another_wallets_entry_answers_like_a_missing_one(backend: &str) {
    let pair = start_with(backend, ENVIRONMENT);
    let kinko = &pair.kinko;
    let chain = chain(&pair);
    let theirs = dispute(kinko, &chain.saburo, &chain.charge_id);
    let missing = dispute(kinko, &chain.saburo, &uuid::Uuid::now_v7().to_string());
    kinko.assert_problem(&theirs, 404, "MONEY_MOVEMENT_NOT_FOUND");
    kinko.assert_problem(&missing, 404, "MONEY_MOVEMENT_NOT_FOUND");
    let strip = |response: &HttpResponse| {
        let mut body = json_of(response);
        body.as_object_mut()
            .map(|object| object.remove("request_id"));
        body.as_object_mut().map(|object| object.remove("instance"));
        body
    };
    assert_eq!(strip(&theirs), strip(&missing));
    // Nothing was frozen or held: saburo still sends, hanako's money is all available.
    posted(&send(kinko, &chain.saburo, "free-1", "hanako", 500));
    assert_eq!(funds(kinko, &chain.hanako), (3_500, 3_500));
    kinko.assert_books_balance();
}

/// The chain disputed: (case id, the holds as listed for operators, the admin's token).
fn disputed_chain(pair: &bank_support::Pair) -> (Chain, String, Value, String) {
    let kinko = &pair.kinko;
    let chain = chain(pair);
    let disputed = dispute(kinko, &chain.hanako, &chain.charge_id);
    assert_eq!(disputed.status, 201, "{}", disputed.body);
    let case_id = text_of(&json_of(&disputed)["case_id"]);
    let admin_token = kinko.operator_token(&pair.admin, 1);
    let listed = kinko.call(
        "GET",
        &format!("/api/v1/operator/cases/{case_id}/holds"),
        None,
        Some(&admin_token),
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    (chain, case_id, json_of(&listed), admin_token)
}

fn propose_refund(
    kinko: &Server,
    token: &str,
    case_id: &str,
    key: &str,
    amount: i64,
) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        &format!("/api/v1/operator/cases/{case_id}/refunds"),
        Some(
            &json!({ "amount_yen": amount, "reason": "case 12: confirmed fraud, victim's statement on file" })
                .to_string(),
        ),
        &[("Authorization", bearer.as_str()), ("Idempotency-Key", key)],
    )
}

fn approve_refund(kinko: &Server, token: &str, refund_id: &str) -> HttpResponse {
    kinko.call(
        "POST",
        &format!("/api/v1/operator/victim-refunds/{refund_id}/approve"),
        Some(json!({ "reason": "checked the bank's statement and the chain" })),
        Some(token),
    )
}

/// A refund row: (status, from_holds_yen, from_compensation_yen).
type RefundRow = (String, Option<i64>, Option<i64>);

/// Every refund row, and the holds' statuses, sorted.
fn refund_rows(kinko: &Server) -> (Vec<RefundRow>, Vec<String>) {
    kinko
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            let refunds = tx
                .query(
                    "SELECT status, from_holds_yen, from_compensation_yen FROM money_victim_refunds",
                    &[],
                )?
                .iter()
                .map(|row| Ok((row.text(0)?, row.opt_int(1)?, row.opt_int(2)?)))
                .collect::<Result<Vec<_>, kinko_ledger::StoreError>>()?;
            let mut holds = tx
                .query("SELECT status FROM money_holds", &[])?
                .iter()
                .map(|row| row.text(0))
                .collect::<Result<Vec<_>, _>>()?;
            holds.sort();
            Ok::<_, kinko_ledger::StoreError>((refunds, holds))
        })
        .unwrap_or_else(|error| panic!("{error}"))
}

fn a_refund_above_the_threshold_waits_for_a_second_operator(backend: &str) {
    let environment = [
        ("KINKO_RISK_RULES", "off"),
        ("KINKO_CREDIT_APPROVAL_ABOVE_YEN", "5000"),
    ];
    let pair = start_with(backend, &environment);
    let kinko = &pair.kinko;
    let victim = customer(0);
    let bank_before = pair.bank.balance(&victim, "0001");
    let (chain, case_id, _, root) = disputed_chain(&pair);
    let second = kinko.create_operator(&root, "second@kinko.example", "admin", None);
    let second_token = kinko.operator_token(&second, 0);

    // More than the bank debited: refused, nothing written.
    kinko.assert_problem(
        &propose_refund(kinko, &root, &case_id, "too-much", 10_001),
        409,
        "VICTIM_REFUND_EXCEEDS_CHARGE",
    );
    let proposed = propose_refund(kinko, &root, &case_id, "refund-1", 10_000);
    assert_eq!(proposed.status, 202, "{}", proposed.body);
    let proposed = json_of(&proposed);
    assert_eq!(proposed["status"], "awaiting_approval", "{proposed}");
    let refund_id = text_of(&proposed["id"]);
    // Nothing moved: not at the bank, not in the wallets (the holds still hold).
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 13_000);
    assert_eq!(funds(kinko, &chain.taro), (3_000, 0));
    // The proposer cannot approve their own refund; nothing moves.
    kinko.assert_problem(
        &approve_refund(kinko, &root, &refund_id),
        403,
        "VICTIM_REFUND_SECOND_OPERATOR_REQUIRED",
    );
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 13_000);
    // A second refund of the case cannot start meanwhile.
    kinko.assert_problem(
        &propose_refund(kinko, &second_token, &case_id, "refund-2", 1_000),
        409,
        "VICTIM_REFUND_IN_FLIGHT",
    );

    // The second operator approves: the holds come back and pay the victim's bank account.
    let approved = approve_refund(kinko, &second_token, &refund_id);
    assert_eq!(approved.status, 200, "{}", approved.body);
    let approved = json_of(&approved);
    assert_eq!(approved["status"], "posted", "{approved}");
    assert_eq!(approved["from_holds_yen"], 10_000, "{approved}");
    assert_eq!(approved["from_compensation_yen"], 0, "{approved}");
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 3_000);
    // Approving again changes nothing: paid exactly once.
    let again = approve_refund(kinko, &second_token, &refund_id);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(json_of(&again)["status"], "posted");
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 3_000);

    // The ledger: what each wallet kept of the stolen money left it; saburo is untouched.
    assert_eq!(funds(kinko, &chain.hanako), (1_000, 1_000));
    assert_eq!(funds(kinko, &chain.taro), (0, 0));
    assert_eq!(funds(kinko, &chain.jiro), (0, 0));
    assert_eq!(funds(kinko, &chain.saburo), (2_000, 2_000));
    // The rows agree.
    let (refunds, holds) = refund_rows(kinko);
    assert_eq!(refunds, vec![("posted".to_owned(), Some(10_000), Some(0))]);
    assert_eq!(holds, vec!["returned", "returned", "returned"]);
    // The victim has their money back: the case closed itself as refunded, labelled fraud.
    let case = kinko.call(
        "GET",
        &format!("/api/v1/operator/cases/{case_id}"),
        None,
        Some(&root),
    );
    assert_eq!(case.status, 200, "{}", case.body);
    let case = json_of(&case);
    assert_eq!(
        (case["state"].as_str(), case["label"].as_str()),
        (Some("refunded"), Some("fraud")),
        "{case}"
    );
    kinko.assert_books_balance();
    kinko.assert_audit_chain_intact();
}

fn a_crash_in_the_middle_of_a_refund_is_resumed_not_doubled(backend: &str) {
    let mut environment = vec![
        ("KINKO_RISK_RULES", "off"),
        ("KINKO_FAILPOINT", "victim_refund_after_bank_credit"),
    ];
    let mut pair = start_with(backend, &environment);
    let victim = customer(0);
    let bank_before = pair.bank.balance(&victim, "0001");
    let (chain, case_id, holds, root) = disputed_chain(&pair);
    // jiro's ¥5,000 is released (an innocent buyer): the refund takes ¥5,000 from the other
    // holds and ¥5,000 from the compensation account.
    let jiro_hold = holds
        .as_array()
        .and_then(|all| all.iter().find(|hold| hold["depth"] == 2))
        .map(|hold| text_of(&hold["id"]))
        .unwrap_or_else(|| panic!("{holds}"));
    let released = pair.kinko.call(
        "POST",
        &format!("/api/v1/operator/holds/{jiro_hold}/release"),
        Some(json!({ "reason": "case 12: jiro sold a bicycle, receipt on file" })),
        Some(&root),
    );
    assert_eq!(released.status, 200, "{}", released.body);

    // The server dies after the bank paid and before the ledger posted: no answer comes.
    let body = json!({ "amount_yen": 10_000, "reason": "case 12: confirmed fraud" }).to_string();
    pair.kinko.assert_post_crashes(
        &format!("/api/v1/operator/cases/{case_id}/refunds"),
        &body,
        &root,
        "refund-crash",
    );
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 3_000);
    let (refunds, _) = refund_rows(&pair.kinko);
    assert_eq!(
        refunds,
        vec![("pending".to_owned(), Some(5_000), Some(5_000))]
    );

    // Back up, with the reconciler looking at once: it finds the bank's answer and posts.
    environment.retain(|(name, _)| *name != "KINKO_FAILPOINT");
    let issuer = pair.bank.issuer();
    environment.extend([
        ("KINKO_BANK_SANDBOX_URL", issuer.as_str()),
        ("KINKO_OUTGOING_FREEZE_S", "0"),
        ("KINKO_RECONCILE_AFTER_S", "0"),
        ("KINKO_RECONCILE_EVERY_S", "1"),
    ]);
    pair.kinko.restart(&environment);
    let kinko = &pair.kinko;
    let deadline = Instant::now() + Duration::from_secs(30);
    while refund_rows(kinko).0.first().map(|row| row.0.as_str()) != Some("posted") {
        assert!(Instant::now() < deadline, "{:?}", refund_rows(kinko));
        std::thread::sleep(Duration::from_millis(200));
    }
    // The operator's retry (the session outlived the crash) answers the same refund; the bank
    // paid exactly once.
    let again = http_with(
        &kinko.address,
        "POST",
        &format!("/api/v1/operator/cases/{case_id}/refunds"),
        Some(&body),
        &[
            ("Authorization", format!("Bearer {root}").as_str()),
            ("Idempotency-Key", "refund-crash"),
        ],
    );
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(json_of(&again)["status"], "posted", "{}", again.body);
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 3_000);
    let (refunds, holds) = refund_rows(kinko);
    assert_eq!(
        refunds,
        vec![("posted".to_owned(), Some(5_000), Some(5_000))]
    );
    assert_eq!(holds, vec!["released", "returned", "returned"]);
    assert_eq!(funds(kinko, &chain.hanako), (1_000, 1_000));
    assert_eq!(funds(kinko, &chain.taro), (0, 0));
    assert_eq!(funds(kinko, &chain.jiro), (5_000, 5_000));
    kinko.assert_books_balance();
}

fn a_bank_fraud_report_is_contained_like_a_dispute(backend: &str) {
    let pair = start_with(backend, ENVIRONMENT);
    let kinko = &pair.kinko;
    let victim = customer(0);
    let bank_before = pair.bank.balance(&victim, "0001");
    let chain = chain(&pair);
    // The holder reports the link at the bank ("I did not authorise this"): the bank's webhook
    // cuts it, and Kinko contains it — every charge through the link (¥13,000) is followed.
    let mut at_bank = Browser::default();
    let page = bank_page(&pair.bank, &mut at_bank, &victim);
    let (action, fields) = form(&page, "/report");
    let reported = at_bank.send(&pair.bank.address, "POST", &action, Some(&fields));
    assert!(
        reported.status == 303 || reported.status == 200,
        "{}",
        reported.body
    );
    let database = kinko.database();
    let held = || {
        database
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                let mut rows = tx
                    .query("SELECT depth, amount_yen, status FROM money_holds", &[])?
                    .iter()
                    .map(|row| Ok((row.int(0)?, row.int(1)?, row.text(2)?)))
                    .collect::<Result<Vec<_>, kinko_ledger::StoreError>>()?;
                rows.sort();
                Ok::<_, kinko_ledger::StoreError>(rows)
            })
            .unwrap_or_else(|error| panic!("{error}"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while held().iter().filter(|hold| hold.2 == "held").count() < 4 {
        assert!(Instant::now() < deadline, "{:?}", held());
        std::thread::sleep(Duration::from_millis(100));
    }
    // hanako kept ¥3,000, taro ¥3,000, saburo (paid after the first charge) ¥2,000, jiro ¥5,000.
    assert_eq!(
        held(),
        vec![
            (0, 3_000, "held".to_owned()),
            (1, 2_000, "held".to_owned()),
            (1, 3_000, "held".to_owned()),
            (2, 5_000, "held".to_owned()),
        ]
    );
    assert_eq!(funds(kinko, &chain.hanako), (3_000, 0));
    assert_eq!(funds(kinko, &chain.taro), (3_000, 0));
    assert_eq!(funds(kinko, &chain.jiro), (5_000, 0));
    assert_eq!(funds(kinko, &chain.saburo), (2_000, 0));
    kinko.assert_problem(
        &send(kinko, &chain.taro, "after-1", "saburo", 100),
        403,
        "IDENTITY_OUTGOING_FROZEN",
    );
    // One case, the report's, and containing again (the reconciler's sweep) adds nothing.
    let cases = database
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query_one(
                "SELECT COUNT(*) FROM cases WHERE kind = 'bank_fraud_report'",
                &[],
            )?
            .int(0)
        })
        .unwrap_or_else(|error: kinko_ledger::StoreError| panic!("{error}"));
    assert_eq!(cases, 1);
    assert_eq!(pair.bank.balance(&victim, "0001"), bank_before - 13_000);
    kinko.assert_books_balance();
}

/// The bank's customer page, signed in with the code one step ahead (linking spent this
/// step's code, and the bank takes each code once).
fn bank_page(
    bank: &bank_support::BankSandbox,
    browser: &mut Browser,
    customer: &kinko_bank_sandbox::store::DemoCustomer,
) -> String {
    let login = browser.send(&bank.address, "GET", "/customer/login", None);
    assert_eq!(login.status, 200, "{}", login.body);
    let (action, mut fields) = form(&login.body, "/customer/login");
    fields.push(("online_id".into(), customer.online_id.clone()));
    fields.push(("password".into(), customer.password.clone()));
    fields.push(("totp_code".into(), bank_support::bank_code(customer, 1)));
    let signed_in = browser.send(&bank.address, "POST", &action, Some(&fields));
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = browser.send(&bank.address, "GET", "/customer", None);
    assert_eq!(page.status, 200, "{}", page.body);
    page.body
}

/// A stolen session sent hanako's money to taro: she disputes the transfer, not the charge.
/// The money is followed from taro; her own wallet is frozen but not held.
fn disputing_a_transfer_out_follows_it_from_the_recipient(backend: &str) {
    let pair = start_with(backend, ENVIRONMENT);
    let kinko = &pair.kinko;
    let chain = chain(&pair);
    let disputed = dispute(kinko, &chain.hanako, &chain.mule_id);
    assert_eq!(disputed.status, 201, "{}", disputed.body);
    let disputed = json_of(&disputed);
    assert_eq!(disputed["amount_yen"], 8_000, "{disputed}");
    assert_eq!(disputed["held_yen"], 8_000, "{disputed}");
    assert_eq!(funds(kinko, &chain.hanako), (3_000, 3_000));
    assert_eq!(funds(kinko, &chain.taro), (3_000, 0));
    assert_eq!(funds(kinko, &chain.jiro), (5_000, 0));
    assert_eq!(funds(kinko, &chain.saburo), (2_000, 2_000));
    kinko.assert_problem(
        &send(kinko, &chain.hanako, "after-1", "saburo", 100),
        403,
        "IDENTITY_OUTGOING_FROZEN",
    );
    kinko.assert_books_balance();
}
