//! The operator console API over real HTTP against `kinko serve`, on both stores. The first
//! admin is made with `kinko admin create-operator` (a child process; its TOTP secret is read
//! from what it prints) and everything else through the API:
//! - sign-in needs e-mail, password *and* a current TOTP code, each failure answers the same,
//!   a code is accepted once, and sign-in is rate-limited per address and per source;
//! - operator and wallet sessions are not interchangeable, in either direction;
//! - support reads a user's record only with a stated reason, sees the phone masked, and the
//!   read is in the audit log with that reason (the chain still verifies); admins see it all;
//! - analysts and bank partners cannot read user data, and their attempts are on record;
//! - an admin creates operators (with a reason), who can then sign in.

mod support;

use serde_json::{Value, json};
use support::{
    Enrolled, HttpResponse, OPERATOR_PASSWORD, Server, away_from_hour_boundary, encode, json_of,
    kinko, text_of, totp_code, wrong_code,
};

const REASON: &str = "ticket 4711: user asks why their payment failed";

fn start_with_admin(backend: &str) -> (Server, Enrolled) {
    Server::start_with_admin(backend, &[])
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    sign_in_needs_password_and_a_fresh_totp_code,
    operator_and_wallet_sessions_are_not_interchangeable,
    support_reads_need_a_reason_and_are_audited,
    analysts_and_bank_partners_cannot_read_user_data,
    sign_in_is_rate_limited_per_address_and_per_source,
    a_bank_switches_its_own_linking_off_in_one_request,
);
impl Server {
    fn read_user(&self, token: &str, user_id: &str, reason: Option<&str>) -> HttpResponse {
        let query = reason
            .map(|reason| format!("?reason={}", encode(reason)))
            .unwrap_or_default();
        self.call(
            "GET",
            &format!("/api/v1/operator/users/{user_id}{query}"),
            None,
            Some(token),
        )
    }

    /// The whole audit log as an admin sees it, in pages of 20. Each read adds an entry
    /// after the page it returned, so the walk stops at the first page that is not full.
    fn audit_entries(&self, admin_token: &str) -> Vec<Value> {
        const PAGE: usize = 20;
        let mut entries = Vec::new();
        let mut after_seq = 0;
        loop {
            let response = self.call(
                "GET",
                &format!("/api/v1/operator/audit?after_seq={after_seq}&limit={PAGE}"),
                None,
                Some(admin_token),
            );
            assert_eq!(response.status, 200, "{}", response.body);
            let page = json_of(&response);
            let page_entries = page["entries"].as_array().cloned().unwrap_or_default();
            let full = page_entries.len() == PAGE;
            after_seq = page["next_after_seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no next_after_seq in {page}"));
            entries.extend(page_entries);
            if !full {
                let seqs: Vec<u64> = entries
                    .iter()
                    .filter_map(|entry| entry["seq"].as_u64())
                    .collect();
                assert!(
                    seqs.windows(2).all(|pair| pair[1] == pair[0] + 1) && seqs.first() == Some(&1),
                    "pages skip or repeat entries: {seqs:?}"
                );
                return entries;
            }
        }
    }
}
fn sign_in_needs_password_and_a_fresh_totp_code(backend: &str) {
    let (server, admin) = start_with_admin(backend);

    // No code at all: the request does not even parse.
    let no_code = server.call(
        "POST",
        "/api/v1/operator/sessions",
        Some(json!({ "email": admin.email, "password": OPERATOR_PASSWORD })),
        None,
    );
    server.assert_problem(&no_code, 400, "REQUEST_INVALID");

    // A wrong code, a wrong password with the right code, an unknown address: one answer.
    let failures = [
        server.sign_in_with(
            &admin.email,
            OPERATOR_PASSWORD,
            &wrong_code(&admin.secret_base32),
        ),
        server.sign_in_with(
            &admin.email,
            "not the password at all",
            &totp_code(&admin.secret_base32, 0),
        ),
        server.sign_in_with(
            "nobody@kinko.example",
            OPERATOR_PASSWORD,
            &totp_code(&admin.secret_base32, 0),
        ),
    ];
    let first = json_of(&failures[0]);
    for failure in &failures {
        server.assert_problem(failure, 401, "OPERATOR_LOGIN_FAILED");
        assert_eq!(
            json_of(failure)["title"],
            first["title"],
            "{}",
            failure.body
        );
    }

    let code = totp_code(&admin.secret_base32, 0);
    let signed_in = server.sign_in_with(&admin.email, OPERATOR_PASSWORD, &code);
    assert_eq!(signed_in.status, 201, "{}", signed_in.body);
    let body = json_of(&signed_in);
    assert_eq!(body["operator"]["role"], "admin");
    assert_eq!(body["operator"]["email"], "root@kinko.example");
    let token = text_of(&body["token"]);

    // The same code again is a replay.
    server.assert_problem(
        &server.sign_in_with(&admin.email, OPERATOR_PASSWORD, &code),
        401,
        "OPERATOR_LOGIN_FAILED",
    );
    // The next step's code opens a second session.
    let second = server.operator_token(&admin, 1);

    // Sign-out ends that session only.
    let signed_out = server.call(
        "DELETE",
        "/api/v1/operator/sessions/current",
        None,
        Some(&token),
    );
    assert_eq!(signed_out.status, 204, "{}", signed_out.body);
    server.assert_problem(
        &server.call("GET", "/api/v1/operator/audit", None, Some(&token)),
        401,
        "OPERATOR_UNAUTHENTICATED",
    );
    server.assert_problem(
        &server.call(
            "DELETE",
            "/api/v1/operator/sessions/current",
            None,
            Some(&token),
        ),
        401,
        "OPERATOR_UNAUTHENTICATED",
    );

    // Every attempt is on record, with its cause (which the caller was not told).
    let entries = server.audit_entries(&second);
    let causes: Vec<String> = entries
        .iter()
        .filter(|entry| entry["action"] == "operator.login_failed")
        .map(|entry| entry["detail"]["cause"].to_string())
        .collect();
    assert_eq!(
        causes,
        vec!["\"code\"", "\"password\"", "\"unknown_email\"", "\"code\""],
        "{entries:?}"
    );
    let count = |action: &str| {
        entries
            .iter()
            .filter(|entry| entry["action"] == action)
            .count()
    };
    assert_eq!(count("operator.login"), 2);
    assert_eq!(count("operator.logout"), 1);
}

fn operator_and_wallet_sessions_are_not_interchangeable(backend: &str) {
    let (server, admin) = start_with_admin(backend);
    let (user_id, wallet_token) = server.wallet_user("hanako@example.jp", "+819012345678");
    let operator_token = server.operator_token(&admin, 0);

    // A wallet token on every operator route: 401, and nothing read or written.
    for (method, path, body) in [
        (
            "GET",
            format!("/api/v1/operator/users/{user_id}?reason={}", encode(REASON)),
            None,
        ),
        ("GET", "/api/v1/operator/audit".to_owned(), None),
        (
            "POST",
            "/api/v1/operator/operators".to_owned(),
            Some(json!({
                "email": "mallory@kinko.example",
                "role": "admin",
                "password": OPERATOR_PASSWORD,
                "reason": "I would like to be an admin",
            })),
        ),
        (
            "DELETE",
            "/api/v1/operator/sessions/current".to_owned(),
            None,
        ),
    ] {
        let response = server.call(method, &path, body, Some(&wallet_token));
        server.assert_problem(&response, 401, "OPERATOR_UNAUTHENTICATED");
        let anonymous = server.call(method, &path, None, None);
        server.assert_problem(&anonymous, 401, "OPERATOR_UNAUTHENTICATED");
    }

    // An operator token on wallet routes: 401 too.
    for path in ["/api/v1/me", "/api/v1/sessions", "/api/v1/me/money-gate"] {
        let response = server.call("GET", path, None, Some(&operator_token));
        server.assert_problem(&response, 401, "SESSION_INVALID");
    }

    // The routes are in the API document.
    let document = server.call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(document.status, 200, "{}", document.body);
    let paths = &json_of(&document)["paths"];
    for path in [
        "/api/v1/operator/sessions",
        "/api/v1/operator/sessions/current",
        "/api/v1/operator/users/{user_id}",
        "/api/v1/operator/audit",
        "/api/v1/operator/operators",
    ] {
        assert!(paths.get(path).is_some(), "{path} missing from {paths}");
    }

    // Both tokens still work where they belong.
    assert_eq!(
        server
            .call("GET", "/api/v1/me", None, Some(&wallet_token))
            .status,
        200
    );
    let entries = server.audit_entries(&operator_token);
    assert!(
        !entries
            .iter()
            .any(|entry| entry["action"] == "operator.read_user"
                || entry["action"] == "operator.logout"
                || (entry["action"] == "operator.created" && entry["actor_kind"] != "system")),
        "{entries:?}"
    );
}

fn support_reads_need_a_reason_and_are_audited(backend: &str) {
    let (server, admin) = start_with_admin(backend);
    let (user_id, _wallet_token) = server.wallet_user("hanako@example.jp", "+819012345678");
    let admin_token = server.operator_token(&admin, 0);

    // Creating an operator needs a reason and a good password, and a new address.
    let support_request = |reason: &str, password: &str| {
        json!({
            "email": "Support@Kinko.example",
            "role": "support",
            "password": password,
            "reason": reason,
        })
    };
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/operators",
            Some(support_request("", OPERATOR_PASSWORD)),
            Some(&admin_token),
        ),
        400,
        "OPERATOR_REASON_REQUIRED",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/operators",
            Some(support_request("new hire, onboarding ticket 12", "short")),
            Some(&admin_token),
        ),
        400,
        "PASSWORD_TOO_SHORT",
    );
    let support = server.create_operator(&admin_token, "Support@Kinko.example", "support", None);
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/operators",
            Some(support_request(
                "new hire, onboarding ticket 12",
                OPERATOR_PASSWORD,
            )),
            Some(&admin_token),
        ),
        409,
        "OPERATOR_EMAIL_TAKEN",
    );

    // The new operator signs in with the enrolment they were shown (address normalised).
    assert_eq!(support.email, "support@kinko.example");
    let support_token = server.operator_token(&support, 0);
    let support_id = support.operator_id.clone();

    // No reason, or one too short to say anything: refused, and nothing is read.
    for reason in [None, Some(""), Some("because"), Some("          x")] {
        server.assert_problem(
            &server.read_user(&support_token, &user_id, reason),
            400,
            "OPERATOR_REASON_REQUIRED",
        );
    }
    let response = server.read_user(&support_token, &user_id, Some(REASON));
    assert_eq!(response.status, 200, "{}", response.body);
    let record = json_of(&response);
    assert_eq!(record["user_id"], user_id.as_str());
    assert_eq!(record["email"], "hanako@example.jp");
    assert_eq!(record["phone"], "*********5678", "{record}");
    assert_eq!(record["phone_masked"], true);
    assert_eq!(record["status"], "active");
    assert_eq!(record["kyc_level"], "L0");
    assert_eq!(record["second_factor"], false);
    assert_eq!(record["active_sessions"], 1);

    // An unknown or malformed id is a 404, with a reason as for any read.
    let unknown = "0190a6e0-0000-7000-8000-000000000000";
    for id in [unknown, "not-a-uuid"] {
        server.assert_problem(
            &server.read_user(&support_token, id, Some(REASON)),
            404,
            "USER_NOT_FOUND",
        );
    }

    // An admin sees the number in full.
    let response = server.read_user(&admin_token, &user_id, Some("fraud review FR-2026-001"));
    assert_eq!(response.status, 200, "{}", response.body);
    let record = json_of(&response);
    assert_eq!(record["phone"], "+819012345678");
    assert_eq!(record["phone_masked"], false);

    // Support may neither read the audit log nor create operators; both tries are recorded.
    server.assert_problem(
        &server.call("GET", "/api/v1/operator/audit", None, Some(&support_token)),
        403,
        "OPERATOR_FORBIDDEN",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/operators",
            Some(json!({
                "email": "friend@kinko.example",
                "role": "admin",
                "password": OPERATOR_PASSWORD,
                "reason": "my friend needs access",
            })),
            Some(&support_token),
        ),
        403,
        "OPERATOR_FORBIDDEN",
    );

    // The log: exactly one read by support, with its stated reason; the admin's read with its
    // own; the creation with the admin as actor; the refusals; and the audit reads themselves.
    let entries = server.audit_entries(&admin_token);
    let reads: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "operator.read_user")
        .collect();
    assert_eq!(reads.len(), 2, "{reads:?}");
    assert_eq!(reads[0]["actor_kind"], "operator");
    assert_eq!(reads[0]["actor_id"], support_id.as_str());
    assert_eq!(reads[0]["subject_kind"], "user");
    assert_eq!(reads[0]["subject_id"], user_id.as_str());
    assert_eq!(reads[0]["reason"], REASON);
    assert_eq!(reads[0]["detail"]["phone_masked"], true);
    assert_eq!(reads[1]["reason"], "fraud review FR-2026-001");
    assert_eq!(reads[1]["actor_id"], admin.operator_id.as_str());

    let created: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["action"] == "operator.created")
        .collect();
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(created[0]["actor_kind"], "system");
    assert_eq!(created[1]["actor_kind"], "operator");
    assert_eq!(created[1]["actor_id"], admin.operator_id.as_str());
    assert_eq!(created[1]["subject_id"], support_id.as_str());
    assert_eq!(created[1]["reason"], "new hire, onboarding ticket 12");

    let refused: Vec<String> = entries
        .iter()
        .filter(|entry| entry["action"] == "operator.refused")
        .map(|entry| {
            assert_eq!(entry["actor_id"], support_id.as_str());
            entry["detail"]["attempted"].to_string()
        })
        .collect();
    assert_eq!(
        refused,
        vec!["\"operator.read_audit\"", "\"operator.create\""]
    );
    // Reading the log is itself on record, after the page it returned.
    assert!(
        !entries
            .iter()
            .any(|entry| entry["action"] == "operator.read_audit"),
        "{entries:?}"
    );
    let again = server.audit_entries(&admin_token);
    let audit_reads: Vec<&Value> = again[entries.len()..]
        .iter()
        .filter(|entry| entry["action"] == "operator.read_audit")
        .collect();
    assert!(!audit_reads.is_empty(), "{again:?}");
    for read in audit_reads {
        assert_eq!(read["actor_id"], admin.operator_id.as_str());
    }

    // The chain holds with all of it in.
    let verified = kinko()
        .args(["audit", "verify", "--json"])
        .args(&server.store)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let report: Value = serde_json::from_slice(&verified.stdout)
        .unwrap_or_else(|error| panic!("{error}: {:?}", verified));
    assert_eq!(verified.status.code(), Some(0), "{report}");
    assert_eq!(report["intact"], true);
}

fn analysts_and_bank_partners_cannot_read_user_data(backend: &str) {
    let (server, admin) = start_with_admin(backend);
    let (user_id, _wallet_token) = server.wallet_user("taro@example.jp", "+818011112222");
    let admin_token = server.operator_token(&admin, 0);

    // A bank code goes with bank_partner, and only with it.
    for (role, bank_code) in [("bank_partner", None), ("analyst", Some("0005"))] {
        let response = server.call(
            "POST",
            "/api/v1/operator/operators",
            Some(json!({
                "email": "someone@kinko.example",
                "role": role,
                "bank_code": bank_code,
                "password": OPERATOR_PASSWORD,
                "reason": "new hire, onboarding ticket 12",
            })),
            Some(&admin_token),
        );
        server.assert_problem(&response, 400, "OPERATOR_INVALID_BANK_CODE");
    }
    let analyst = server.create_operator(&admin_token, "analyst@kinko.example", "analyst", None);
    let partner = server.create_operator(
        &admin_token,
        "partner@bank.example",
        "bank_partner",
        Some("0005"),
    );

    for operator in [&analyst, &partner] {
        let token = server.operator_token(operator, 0);
        server.assert_problem(
            &server.read_user(&token, &user_id, Some(REASON)),
            403,
            "OPERATOR_FORBIDDEN",
        );
        server.assert_problem(
            &server.call("GET", "/api/v1/operator/audit", None, Some(&token)),
            403,
            "OPERATOR_FORBIDDEN",
        );
    }

    let entries = server.audit_entries(&admin_token);
    assert!(
        !entries
            .iter()
            .any(|entry| entry["action"] == "operator.read_user"),
        "{entries:?}"
    );
    let refused_reads: Vec<String> = entries
        .iter()
        .filter(|entry| {
            entry["action"] == "operator.refused"
                && entry["detail"]["attempted"] == "operator.read_user"
        })
        .map(|entry| {
            assert_eq!(entry["subject_id"], user_id.as_str());
            text_of(&entry["detail"]["role"])
        })
        .collect();
    assert_eq!(refused_reads, vec!["analyst", "bank_partner"]);
}

fn sign_in_is_rate_limited_per_address_and_per_source(backend: &str) {
    // The limits count in fixed one-hour windows: do not start right before one turns.
    away_from_hour_boundary(30);
    let (server, admin) = start_with_admin(backend);
    let attempt = |email: &str| {
        server.sign_in_with(
            email,
            "not the password at all",
            &wrong_code(&admin.secret_base32),
        )
    };

    // 20 attempts per address and hour, then 429 — the same for an operator's address and for
    // one that is nobody's, so the limit does not tell them apart.
    for email in [admin.email.as_str(), "nobody@kinko.example"] {
        for _ in 0..20 {
            server.assert_problem(&attempt(email), 401, "OPERATOR_LOGIN_FAILED");
        }
        server.assert_problem(&attempt(email), 429, "RATE_LIMITED");
    }

    // 50 per source address and hour, whatever the addresses: 42 so far.
    for _ in 0..8 {
        server.assert_problem(
            &attempt("third@kinko.example"),
            401,
            "OPERATOR_LOGIN_FAILED",
        );
    }
    server.assert_problem(&attempt("third@kinko.example"), 429, "RATE_LIMITED");
    // …and then even the right password and code wait.
    server.assert_problem(
        &server.sign_in_with(
            &admin.email,
            OPERATOR_PASSWORD,
            &totp_code(&admin.secret_base32, 0),
        ),
        429,
        "RATE_LIMITED",
    );
}

/// The 2020 lesson: a bank could only ask for everything to stop. Here its own operator flips
/// its own switches, effective at once, with a reason in the audit log — and cannot touch
/// another bank's.
fn a_bank_switches_its_own_linking_off_in_one_request(backend: &str) {
    let (server, admin) = start_with_admin(backend);
    let admin_token = server.operator_token(&admin, 0);
    let partner = server.create_operator(
        &admin_token,
        "ops@aeon.example",
        "bank_partner",
        Some("0040"),
    );
    let partner_token = server.operator_token(&partner, 0);
    let banks = json_of(&server.call("GET", "/api/v1/banks", None, None));
    assert_eq!(banks.as_array().map(Vec::len), Some(35), "{banks}");
    let aeon = |banks: &Value| {
        banks
            .as_array()
            .and_then(|all| all.iter().find(|bank| bank["bank_code"] == "0040").cloned())
            .unwrap_or_default()
    };
    assert_eq!(aeon(&banks)["linking_enabled"], true);

    let body = json!({ "linking_enabled": false, "charging_enabled": false, "reason": "customers report debits they did not make" });
    let changed = server.call(
        "POST",
        "/api/v1/operator/banks/0040/policy",
        Some(body.clone()),
        Some(&partner_token),
    );
    assert_eq!(changed.status, 200, "{}", changed.body);
    let banks = json_of(&server.call("GET", "/api/v1/banks", None, None));
    assert_eq!(
        aeon(&banks)["linking_enabled"],
        false,
        "effective on the next request"
    );
    assert_eq!(aeon(&banks)["charging_enabled"], false);

    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/banks/0001/policy",
            Some(body.clone()),
            Some(&partner_token),
        ),
        403,
        "OPERATOR_FORBIDDEN",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/banks/0040/policy",
            Some(json!({ "legacy_enabled": true, "reason": "why" })),
            Some(&partner_token),
        ),
        400,
        "OPERATOR_REASON_REQUIRED",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/banks/0040/policy",
            Some(json!({ "charge_max_yen": -5, "reason": "a long enough reason here" })),
            Some(&partner_token),
        ),
        400,
        "BANK_LIMITS_INVALID",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/banks/12345/policy",
            Some(body.clone()),
            Some(&admin_token),
        ),
        400,
        "BANK_CODE_INVALID",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/operator/banks/0040/policy",
            Some(body),
            None,
        ),
        401,
        "OPERATOR_UNAUTHENTICATED",
    );

    let entries = server.audit_entries(&admin_token);
    let change = entries
        .iter()
        .find(|entry| entry["action"] == "bank.policy_changed")
        .unwrap_or_else(|| panic!("no audit entry"));
    assert_eq!(change["subject_id"], "0040");
    assert_eq!(
        change["reason"],
        "customers report debits they did not make"
    );
    assert_eq!(
        change["actor_id"],
        Value::String(partner.operator_id.clone())
    );
}
