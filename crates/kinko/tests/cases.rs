//! Cases over real HTTP on both stores (issue 12 items 1–3): analysts work a case through its
//! states (closing needs a label), assignment is capped per analyst, a bank partner sees only
//! its bank's cases (another bank's answers exactly like a missing one), the SLA sweep in
//! `kinko serve` escalates overdue cases once, a bank's fraud report opens exactly one case
//! even when delivered twice, and a `review` rule opens a case and moves nothing — until an
//! analyst snoozes that rule for that customer. Every step is in the case's history and the
//! audit log, whose chain still verifies.

mod bank_support;
mod support;

use std::time::{Duration, Instant};

use bank_support::{
    Browser, approve_at_bank, balance, charge, complete, customer, customer_page, form, linked,
    start, start_link, start_with, wait_for_status, wallet,
};
use kinko_cases::{CaseKind, NewCase};
use serde_json::{Value, json};
use support::{Enrolled, HttpResponse, Server, http_request, http_with, json_of, text_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    an_analyst_works_a_case_from_open_to_closed,
    assignment_is_capped_per_analyst,
    concurrent_assignments_respect_the_cap,
    a_bank_partner_sees_only_its_banks_cases,
    overdue_cases_are_escalated_once,
    a_fraud_report_opens_one_case_even_delivered_twice,
    a_review_opens_a_case_and_a_snooze_lets_one_customer_through,
);

const HOUR_MS: i64 = 3_600_000;

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

/// Opens a case straight in the server's database, as another domain would in its own
/// transaction; answers its id.
fn plant(server: &Server, kind: CaseKind, bank_code: Option<&str>, opened_at_ms: i64) -> String {
    let subject = format!("test:{}", uuid::Uuid::now_v7());
    let case = NewCase {
        kind,
        bank_code: bank_code.map(str::to_owned),
        user_id: Some(uuid::Uuid::now_v7()),
        subject: subject.clone(),
        summary: format!("planted {}", kind.as_str()),
        amount_yen: Some(5_000),
        dedupe_key: subject,
    };
    let opened = server
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            kinko_cases::open_case(tx, &case, opened_at_ms)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(opened.created);
    opened.case_id.to_string()
}

fn operator(server: &Server, admin: &str, email: &str, role: &str, bank: Option<&str>) -> String {
    let enrolled: Enrolled = server.create_operator(admin, email, role, bank);
    server.operator_token(&enrolled, 0)
}

fn get(server: &Server, token: &str, path: &str) -> HttpResponse {
    server.call("GET", path, None, Some(token))
}

fn post(server: &Server, token: &str, path: &str, body: Value) -> HttpResponse {
    server.call("POST", path, Some(body), Some(token))
}

fn ok(response: HttpResponse) -> Value {
    assert_eq!(response.status, 200, "{}", response.body);
    json_of(&response)
}

fn ids(page: &Value) -> Vec<String> {
    page["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .iter()
        .map(|case| text_of(&case["id"]))
        .collect()
}

fn event_kinds(case: &Value) -> Vec<String> {
    case["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}"))
        .iter()
        .map(|event| text_of(&event["kind"]))
        .collect()
}

/// The audit log's actions about one case, oldest first.
fn audited(server: &Server, case_id: &str) -> Vec<String> {
    server
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query(
                "SELECT action FROM audit_log WHERE subject_kind = 'case' AND subject_id = $1
                 ORDER BY seq",
                &[case_id.into()],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .map(|row| row.text(0).unwrap_or_else(|error| panic!("{error}")))
        .collect()
}

fn an_analyst_works_a_case_from_open_to_closed(backend: &str) {
    let (server, admin) = Server::start_with_admin(backend, &[]);
    let admin = server.operator_token(&admin, 0);
    let analyst = operator(&server, &admin, "ana@kinko.example", "analyst", None);
    let now = now_ms();
    let first = plant(&server, CaseKind::Dispute, Some("0001"), now);
    let second = plant(&server, CaseKind::RiskReview, None, now);
    let third = plant(&server, CaseKind::Dispute, Some("0009"), now);

    // The inbox, newest first, in bounded pages; filters.
    let page = ok(get(&server, &analyst, "/api/v1/operator/cases?limit=2"));
    assert_eq!(ids(&page), [third.as_str(), second.as_str()]);
    let next = text_of(&page["next_before"]);
    let page = ok(get(
        &server,
        &analyst,
        &format!("/api/v1/operator/cases?limit=2&before={next}"),
    ));
    assert_eq!(ids(&page), [first.as_str()]);
    assert_eq!(page["next_before"], Value::Null);
    let disputes = ok(get(
        &server,
        &analyst,
        "/api/v1/operator/cases?kind=dispute",
    ));
    assert_eq!(ids(&disputes), [third.as_str(), first.as_str()]);
    for bad in [
        "state=closed",
        "limit=101",
        "limit=0",
        "kind=x",
        "assigned=someone",
    ] {
        server.assert_problem(
            &get(&server, &analyst, &format!("/api/v1/operator/cases?{bad}")),
            400,
            "CASE_FILTER_INVALID",
        );
    }

    let path = format!("/api/v1/operator/cases/{first}");
    let case = ok(get(&server, &analyst, &path));
    assert_eq!(case["state"], "open");
    assert_eq!(event_kinds(&case), ["opened"]);

    // Assign to oneself; the inbox of "mine" has it.
    let case = ok(post(
        &server,
        &analyst,
        &format!("{path}/assign"),
        json!({}),
    ));
    let analyst_id = text_of(&case["assigned_to"]);
    let mine = ok(get(&server, &analyst, "/api/v1/operator/cases?assigned=me"));
    assert_eq!(ids(&mine), [first.as_str()]);
    let unassigned = ok(get(
        &server,
        &analyst,
        "/api/v1/operator/cases?assigned=none",
    ));
    assert_eq!(ids(&unassigned), [third.as_str(), second.as_str()]);
    let by_id = ok(get(
        &server,
        &analyst,
        &format!("/api/v1/operator/cases?assigned={analyst_id}"),
    ));
    assert_eq!(ids(&by_id), [first.as_str()]);

    // A note; a bad one is refused and writes nothing.
    ok(post(
        &server,
        &analyst,
        &format!("{path}/notes"),
        json!({ "text": "called the holder; the debit was not theirs" }),
    ));
    server.assert_problem(
        &post(
            &server,
            &analyst,
            &format!("{path}/notes"),
            json!({ "text": "  " }),
        ),
        400,
        "CASE_NOTE_INVALID",
    );

    // The state machine: no skipping, a label only and always when closing, a reason.
    let state = |body: Value| post(&server, &analyst, &format!("{path}/state"), body);
    let reason = "checked the bank statement";
    server.assert_problem(
        &state(json!({ "state": "resolved", "label": "fraud", "reason": reason })),
        409,
        "CASE_TRANSITION_INVALID",
    );
    server.assert_problem(
        &state(json!({ "state": "investigating", "label": "fraud", "reason": reason })),
        400,
        "CASE_LABEL_NOT_ALLOWED",
    );
    server.assert_problem(
        &state(json!({ "state": "investigating", "reason": "short" })),
        400,
        "OPERATOR_REASON_REQUIRED",
    );
    server.assert_problem(
        &state(json!({ "state": "closed", "reason": reason })),
        400,
        "CASE_FIELD_INVALID",
    );
    let case = ok(state(json!({ "state": "investigating", "reason": reason })));
    assert_eq!(case["state"], "investigating");
    server.assert_problem(
        &state(json!({ "state": "resolved", "reason": reason })),
        400,
        "CASE_LABEL_REQUIRED",
    );
    let case = ok(state(
        json!({ "state": "refunded", "label": "fraud", "reason": reason }),
    ));
    assert_eq!(case["state"], "refunded");
    assert_eq!(case["label"], "fraud");
    assert!(case["closed_at_ms"].as_i64().is_some(), "{case}");
    server.assert_problem(
        &state(json!({ "state": "investigating", "reason": reason })),
        409,
        "CASE_TRANSITION_INVALID",
    );
    server.assert_problem(
        &post(&server, &analyst, &format!("{path}/assign"), json!({})),
        409,
        "CASE_CLOSED",
    );

    // Related cases: both list the link; linking again adds nothing.
    let link = json!({ "other_case_id": second, "reason": "money_chain" });
    ok(post(
        &server,
        &analyst,
        &format!("{path}/links"),
        link.clone(),
    ));
    let case = ok(post(&server, &analyst, &format!("{path}/links"), link));
    assert_eq!(case["links"].as_array().map(Vec::len), Some(1), "{case}");
    assert_eq!(case["links"][0]["other_case_id"], second.as_str());
    let other = ok(get(
        &server,
        &analyst,
        &format!("/api/v1/operator/cases/{second}"),
    ));
    assert_eq!(other["links"][0]["other_case_id"], first.as_str());
    assert_eq!(other["links"][0]["reason"], "money_chain");
    server.assert_problem(
        &post(
            &server,
            &analyst,
            &format!("{path}/links"),
            json!({ "other_case_id": first, "reason": "money_chain" }),
        ),
        400,
        "CASE_LINK_INVALID",
    );
    server.assert_problem(
        &post(
            &server,
            &analyst,
            &format!("{path}/links"),
            json!({ "other_case_id": third, "reason": "same_star_sign" }),
        ),
        400,
        "CASE_FIELD_INVALID",
    );
    server.assert_problem(
        &post(
            &server,
            &analyst,
            &format!("{path}/links"),
            json!({ "other_case_id": uuid::Uuid::now_v7(), "reason": "same_device" }),
        ),
        404,
        "CASE_NOT_FOUND",
    );

    // Every step, in the case's history and the audit log, each by its actor.
    let case = ok(get(&server, &analyst, &path));
    let steps = ["opened", "assigned", "note", "state", "state", "linked"];
    assert_eq!(event_kinds(&case), steps);
    assert_eq!(case["events"][0]["actor"], Value::Null);
    assert_eq!(case["events"][2]["actor"], analyst_id.as_str());
    assert!(
        text_of(&case["events"][4]["detail"]).starts_with("investigating → refunded (fraud)"),
        "{case}"
    );
    let expected: Vec<String> = steps.iter().map(|step| format!("case.{step}")).collect();
    assert_eq!(audited(&server, &first), expected);
    server.assert_audit_chain_intact();
}

fn assignment_is_capped_per_analyst(backend: &str) {
    let (server, admin) =
        Server::start_with_admin(backend, &[("KINKO_CASES_PER_ANALYST_MAX", "2")]);
    let admin = server.operator_token(&admin, 0);
    let ana = operator(&server, &admin, "ana@kinko.example", "analyst", None);
    let ben = operator(&server, &admin, "ben@kinko.example", "analyst", None);
    let support = server.create_operator(&admin, "sue@kinko.example", "support", None);
    let now = now_ms();
    let cases: Vec<String> = (0..3)
        .map(|_| plant(&server, CaseKind::RiskReview, None, now))
        .collect();
    let assign = |token: &str, case: &str, body: Value| {
        post(
            &server,
            token,
            &format!("/api/v1/operator/cases/{case}/assign"),
            body,
        )
    };
    let first = ok(assign(&ana, &cases[0], json!({})));
    let ana_id = text_of(&first["assigned_to"]);
    // Assigning to the same analyst again changes nothing (and is not counted twice).
    ok(assign(&ana, &cases[0], json!({})));
    // Ben hands one to Ana: her second.
    let handed = ok(assign(&ben, &cases[1], json!({ "assignee": ana_id })));
    assert_eq!(handed["assigned_to"], ana_id.as_str());
    let refused = assign(&ana, &cases[2], json!({}));
    server.assert_problem(&refused, 409, "CASE_ASSIGNEE_AT_CAPACITY");
    let unchanged = ok(get(
        &server,
        &ana,
        &format!("/api/v1/operator/cases/{}", cases[2]),
    ));
    assert_eq!(unchanged["assigned_to"], Value::Null);
    assert_eq!(event_kinds(&unchanged), ["opened"]);
    // Not to a support operator, nor to someone who does not exist.
    server.assert_problem(
        &assign(&ben, &cases[2], json!({ "assignee": support.operator_id })),
        400,
        "CASE_ASSIGNEE_INVALID",
    );
    server.assert_problem(
        &assign(&ben, &cases[2], json!({ "assignee": uuid::Uuid::now_v7() })),
        400,
        "CASE_ASSIGNEE_INVALID",
    );
    // Closing one frees a place.
    let path = format!("/api/v1/operator/cases/{}/state", cases[0]);
    ok(post(
        &server,
        &ana,
        &path,
        json!({ "state": "investigating", "reason": "looking at the transfers" }),
    ));
    ok(post(
        &server,
        &ana,
        &path,
        json!({ "state": "rejected", "label": "not_fraud", "reason": "the holder made it" }),
    ));
    let third = ok(assign(&ana, &cases[2], json!({})));
    assert_eq!(third["assigned_to"], ana_id.as_str());
    let mine = ok(get(
        &server,
        &ana,
        "/api/v1/operator/cases?assigned=me&state=open",
    ));
    assert_eq!(ids(&mine), [cases[2].as_str(), cases[1].as_str()]);
}

fn concurrent_assignments_respect_the_cap(backend: &str) {
    // Eight cases assigned to one analyst at once with a cap of one: the assignee's row lock
    // lets exactly one through, whichever it is.
    let (server, admin) =
        Server::start_with_admin(backend, &[("KINKO_CASES_PER_ANALYST_MAX", "1")]);
    let admin = server.operator_token(&admin, 0);
    let ana = operator(&server, &admin, "ana@kinko.example", "analyst", None);
    let now = now_ms();
    let cases: Vec<String> = (0..8)
        .map(|_| plant(&server, CaseKind::Dispute, None, now))
        .collect();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|case| {
                let (server, ana) = (&server, &ana);
                scope.spawn(move || {
                    post(
                        server,
                        ana,
                        &format!("/api/v1/operator/cases/{case}/assign"),
                        json!({}),
                    )
                    .status
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| panic!("a thread panicked"))
            })
            .collect()
    });
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 409).count(),
        7,
        "{statuses:?}"
    );
    let mine = ok(get(&server, &ana, "/api/v1/operator/cases?assigned=me"));
    assert_eq!(ids(&mine).len(), 1);
}

fn a_bank_partner_sees_only_its_banks_cases(backend: &str) {
    let (server, admin) = Server::start_with_admin(backend, &[]);
    let admin = server.operator_token(&admin, 0);
    let partner = operator(
        &server,
        &admin,
        "ops@bank.example",
        "bank_partner",
        Some("0001"),
    );
    let support = operator(&server, &admin, "sue@kinko.example", "support", None);
    let now = now_ms();
    let own = plant(&server, CaseKind::BankFraudReport, Some("0001"), now);
    let other_bank = plant(&server, CaseKind::BankFraudReport, Some("0009"), now);
    let no_bank = plant(&server, CaseKind::RiskReview, None, now);

    let page = ok(get(&server, &partner, "/api/v1/operator/cases"));
    assert_eq!(ids(&page), [own.as_str()]);
    let filtered = ok(get(
        &server,
        &partner,
        "/api/v1/operator/cases?kind=bank_fraud_report&state=open",
    ));
    assert_eq!(ids(&filtered), [own.as_str()]);
    let case = ok(get(
        &server,
        &partner,
        &format!("/api/v1/operator/cases/{own}"),
    ));
    assert_eq!(case["bank_code"], "0001");

    // Another bank's case, a case of no bank and a missing one: one answer, byte for byte.
    let missing = get(
        &server,
        &partner,
        &format!("/api/v1/operator/cases/{}", uuid::Uuid::now_v7()),
    );
    server.assert_problem(&missing, 404, "CASE_NOT_FOUND");
    for hidden in [&other_bank, &no_bank] {
        let answer = get(
            &server,
            &partner,
            &format!("/api/v1/operator/cases/{hidden}"),
        );
        assert_eq!(answer.status, missing.status);
        assert_eq!(answer.body, missing.body);
        assert_eq!(
            answer.header("content-type"),
            missing.header("content-type")
        );
    }
    // A bank partner reads; it does not work cases — refused before any case is looked up.
    for target in [&own, &other_bank] {
        server.assert_problem(
            &post(
                &server,
                &partner,
                &format!("/api/v1/operator/cases/{target}/notes"),
                json!({ "text": "we see it too" }),
            ),
            403,
            "OPERATOR_FORBIDDEN",
        );
    }
    // Support staff see no cases; no token, no cases.
    server.assert_problem(
        &get(&server, &support, "/api/v1/operator/cases"),
        403,
        "OPERATOR_FORBIDDEN",
    );
    server.assert_problem(
        &server.call("GET", "/api/v1/operator/cases", None, None),
        401,
        "OPERATOR_UNAUTHENTICATED",
    );
}

fn overdue_cases_are_escalated_once(backend: &str) {
    let (server, admin) = Server::start_with_admin(backend, &[("KINKO_RECONCILE_EVERY_S", "1")]);
    let admin = server.operator_token(&admin, 0);
    let analyst = operator(&server, &admin, "ana@kinko.example", "analyst", None);
    let now = now_ms();
    // A risk review waits 24 h: opened 25 h ago, it is overdue; opened now, it is not.
    let late = plant(&server, CaseKind::RiskReview, None, now - 25 * HOUR_MS);
    let fresh = plant(&server, CaseKind::RiskReview, None, now);
    let overdue = ok(get(
        &server,
        &analyst,
        "/api/v1/operator/cases?overdue=true",
    ));
    assert_eq!(ids(&overdue), [late.as_str()]);

    let path = format!("/api/v1/operator/cases/{late}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let case = ok(get(&server, &analyst, &path));
        if case["escalated_at_ms"].as_i64().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "never escalated: {case}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // More sweeps run; the case is escalated once, by the platform, and the fresh one not.
    std::thread::sleep(Duration::from_millis(2_500));
    let case = ok(get(&server, &analyst, &path));
    assert_eq!(event_kinds(&case), ["opened", "escalated"]);
    assert_eq!(case["events"][1]["actor"], Value::Null);
    let fresh = ok(get(
        &server,
        &analyst,
        &format!("/api/v1/operator/cases/{fresh}"),
    ));
    assert_eq!(fresh["escalated_at_ms"], Value::Null);
    assert_eq!(audited(&server, &late), ["case.opened", "case.escalated"]);
}

fn a_fraud_report_opens_one_case_even_delivered_twice(backend: &str) {
    let pair = start(backend);
    let kinko = &pair.kinko;
    let hanako = customer(0);
    let mut at_bank = Browser::default();
    let token = wallet(
        kinko,
        "hanako@example.jp",
        "090-1234-5678",
        "SANDBOX-ID-0001",
    );
    let user_id =
        text_of(&json_of(&kinko.call("GET", "/api/v1/me", None, Some(&token)))["user_id"]);
    let url = start_link(kinko, &token, "0001");
    let callback = approve_at_bank(&pair.bank, &mut at_bank, &url, &hanako, "0001");
    let linked = complete(kinko, &token, &callback);
    assert_eq!(linked.status, 201, "{}", linked.body);
    let link_id = text_of(&json_of(&linked)["id"]);

    let admin = kinko.operator_token(&pair.admin, 0);
    let analyst = operator(kinko, &admin, "ana@kinko.example", "analyst", None);
    assert_eq!(
        ids(&ok(get(kinko, &analyst, "/api/v1/operator/cases"))),
        Vec::<String>::new()
    );

    // The holder tells the bank "I did not authorise this"; the bank's webhook arrives.
    let page = customer_page(&pair.bank, &mut at_bank, &hanako);
    let (action, fields) = form(&page, "/report");
    let reported = at_bank.send(&pair.bank.address, "POST", &action, Some(&fields));
    assert!(
        reported.status == 303 || reported.status == 200,
        "{}",
        reported.body
    );
    wait_for_status(kinko, &token, &link_id, "cut_for_fraud");

    let page = ok(get(kinko, &analyst, "/api/v1/operator/cases"));
    let cases = page["cases"].as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), 1, "{page}");
    let case = &cases[0];
    assert_eq!(case["kind"], "bank_fraud_report");
    assert_eq!(case["bank_code"], "0001");
    assert_eq!(case["user_id"], user_id.as_str());
    assert_eq!(case["subject"], format!("bank_link:{link_id}"));
    assert_eq!(case["state"], "open");

    // The same signed event delivered again: answered, and still one case.
    let outbox = pair
        .bank
        .open()
        .outbox()
        .unwrap_or_else(|error| panic!("{error}"));
    let event = outbox
        .iter()
        .find(|event| event.event == "fraud.reported")
        .unwrap_or_else(|| panic!("no fraud report in the bank's outbox"));
    let again = http_request(
        &kinko.address,
        "POST",
        "/api/v1/bank-webhooks",
        "application/jwt",
        Some(&event.jws),
        &[],
    );
    assert!(again.status < 300, "{} {}", again.status, again.body);
    let page = ok(get(kinko, &analyst, "/api/v1/operator/cases"));
    assert_eq!(ids(&page), [text_of(&case["id"])]);
    let case = ok(get(
        kinko,
        &analyst,
        &format!("/api/v1/operator/cases/{}", text_of(&case["id"])),
    ));
    assert_eq!(event_kinds(&case), ["opened"]);

    // The bank's own partner sees it; another bank's partner does not.
    let own = operator(
        kinko,
        &admin,
        "ops@bank.example",
        "bank_partner",
        Some("0001"),
    );
    let foreign = operator(
        kinko,
        &admin,
        "ops@other.example",
        "bank_partner",
        Some("0009"),
    );
    assert_eq!(
        ids(&ok(get(kinko, &own, "/api/v1/operator/cases"))).len(),
        1
    );
    assert_eq!(
        ids(&ok(get(kinko, &foreign, "/api/v1/operator/cases"))),
        Vec::<String>::new()
    );
    kinko.assert_audit_chain_intact();
}

/// Writes `rules` to a file in `dir` and answers its path.
fn rule_file(dir: &tempfile::TempDir, rules: &str) -> String {
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, rules).unwrap_or_else(|error| panic!("{error}"));
    path.display().to_string()
}

fn send(kinko: &Server, token: &str, key: &str, handle: &str, amount_yen: i64) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    http_with(
        &kinko.address,
        "POST",
        "/api/v1/transfers",
        Some(&json!({ "to_handle": handle, "amount_yen": amount_yen }).to_string()),
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

fn a_review_opens_a_case_and_a_snooze_lets_one_customer_through(backend: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let path = rule_file(
        &dir,
        r#"version = "review-1"
[[rule]]
id = "review-p2p"
events = ["p2p"]
when = ["amount > 0"]
outcome = "review"
actions = ["open_case"]
breaker = { max = 100, per = "1h" }
reason_en = "This transfer is on hold for a check."
reason_ja = "確認のため、この送金を保留しました。"
"#,
    );
    let pair = start_with(backend, &[("KINKO_RISK_RULES", path.as_str())]);
    let kinko = &pair.kinko;
    let admin = kinko.operator_token(&pair.admin, 0);
    let (sender, link_id) = linked(&pair, &admin, 0);
    let charged = charge(kinko, &sender, "charge-1", &link_id, 10_000);
    assert_eq!(charged.status, 201, "{}", charged.body);
    let sender_id =
        text_of(&json_of(&kinko.call("GET", "/api/v1/me", None, Some(&sender)))["user_id"]);
    let receiver = wallet(kinko, "taro@example.jp", "090-2222-3333", "SANDBOX-ID-0002");
    set_handle(kinko, &receiver, "taro");
    set_handle(kinko, &sender, "hanako");
    let analyst = operator(kinko, &admin, "ana@kinko.example", "analyst", None);

    // Reviewed: refused, nothing moved, one case about the stored decision.
    let held = send(kinko, &sender, "p2p-1", "taro", 3_000);
    kinko.assert_problem(&held, 403, "MONEY_RISK_DECLINED");
    assert_eq!(balance(kinko, &sender)["balance_yen"], 10_000);
    assert_eq!(balance(kinko, &receiver)["balance_yen"], 0);
    let decision_ids: Vec<String> = kinko
        .database()
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            tx.query(
                "SELECT id, outcome FROM risk_decisions ORDER BY created_at, id",
                &[],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"))
        .iter()
        .map(|row| {
            assert_eq!(row.text(1).unwrap_or_default(), "review");
            uuid::Uuid::from_u128(row.uuid(0).unwrap_or_else(|error| panic!("{error}"))).to_string()
        })
        .collect();
    assert_eq!(decision_ids.len(), 1);
    let page = ok(get(
        kinko,
        &analyst,
        "/api/v1/operator/cases?kind=risk_review",
    ));
    let cases = page["cases"].as_array().cloned().unwrap_or_default();
    assert_eq!(cases.len(), 1, "{page}");
    let case_id = text_of(&cases[0]["id"]);
    assert_eq!(
        cases[0]["subject"],
        format!("risk_decision:{}", decision_ids[0])
    );
    assert_eq!(cases[0]["user_id"], sender_id.as_str());
    assert_eq!(cases[0]["amount_yen"], 3_000);
    assert!(
        text_of(&cases[0]["summary"]).contains("review-p2p"),
        "{page}"
    );

    // The analyst clears the customer and snoozes the rule for them, for a day.
    let snoozes = format!("/api/v1/operator/cases/{case_id}/snoozes");
    server_refuses_bad_snoozes(kinko, &analyst, &snoozes);
    let case = ok(post(
        kinko,
        &analyst,
        &snoozes,
        json!({ "rule_id": "review-p2p", "hours": 24, "reason": "regular rent to a flatmate" }),
    ));
    assert_eq!(case["snoozes"][0]["rule_id"], "review-p2p");
    assert_eq!(event_kinds(&case), ["opened", "rule_snoozed"]);
    let sent = send(kinko, &sender, "p2p-2", "taro", 3_000);
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(balance(kinko, &sender)["balance_yen"], 7_000);
    assert_eq!(balance(kinko, &receiver)["balance_yen"], 3_000);

    // Only for that customer: the receiver sending back is still held, with a case of its own.
    let back = send(kinko, &receiver, "back-1", "hanako", 1_000);
    kinko.assert_problem(&back, 403, "MONEY_RISK_DECLINED");
    assert_eq!(balance(kinko, &receiver)["balance_yen"], 3_000);
    let page = ok(get(
        kinko,
        &analyst,
        "/api/v1/operator/cases?kind=risk_review",
    ));
    let both = ids(&page);
    assert_eq!(both.len(), 2, "{page}");
    kinko.assert_books_balance();

    // The labels feed the rule's precision: one cleared (not fraud), one confirmed (fraud).
    for (case, label) in [(&case_id, "not_fraud"), (&both[0], "fraud")] {
        let path = format!("/api/v1/operator/cases/{case}/state");
        let reason = "reviewed the transfers";
        ok(post(
            kinko,
            &analyst,
            &path,
            json!({ "state": "investigating", "reason": reason }),
        ));
        ok(post(
            kinko,
            &analyst,
            &path,
            json!({ "state": "resolved", "label": label, "reason": reason }),
        ));
    }
    let output = support::kinko()
        .args(["risk", "labels", "--json"])
        .args(&kinko.store)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(output.status.success(), "{output:?}");
    let report: Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(report["cases"], 2, "{report}");
    assert_eq!(report["cases_fraud"], 1, "{report}");
    assert_eq!(
        report["rules"],
        json!([{ "rule_id": "review-p2p", "hits_fraud": 1, "hits_not_fraud": 1, "precision": 0.5 }])
    );
    kinko.assert_audit_chain_intact();
}

fn server_refuses_bad_snoozes(kinko: &Server, analyst: &str, path: &str) {
    for (body, code) in [
        (
            json!({ "rule_id": "Review P2P", "hours": 24, "reason": "regular rent payment" }),
            "CASE_RULE_INVALID",
        ),
        (
            json!({ "rule_id": "review-p2p", "hours": 0, "reason": "regular rent payment" }),
            "CASE_SNOOZE_INVALID",
        ),
        (
            json!({ "rule_id": "review-p2p", "hours": 721, "reason": "regular rent payment" }),
            "CASE_SNOOZE_INVALID",
        ),
        (
            json!({ "rule_id": "review-p2p", "hours": 24, "reason": "ok" }),
            "OPERATOR_REASON_REQUIRED",
        ),
    ] {
        kinko.assert_problem(&post(kinko, analyst, path, body), 400, code);
    }
}
