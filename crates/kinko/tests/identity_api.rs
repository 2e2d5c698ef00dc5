//! Identity over real HTTP against `kinko serve`, on both stores: sign-up with both contacts
//! verified by code, login, TOTP, the money gate, KYC, recovery (and the 7pay tricks it must
//! refuse), credential stuffing, rate limits, and that user A can never touch user B's
//! sessions or devices. Codes are read from the sandbox outbox, as the demo does.

mod support;

use serde_json::{Value, json};
use support::{HttpResponse, PASSWORD, Server, http_with, json_of, totp_code};

fn start(backend: &str) -> Server {
    Server::start(backend, &[])
}

/// A server whose post-change freeze lasts `seconds` instead of 24 hours.
fn start_with_freeze(backend: &str, seconds: &str) -> Server {
    Server::start(backend, &[("KINKO_OUTGOING_FREEZE_S", seconds)])
}

impl Server {
    fn call_from_device(
        &self,
        method: &str,
        path: &str,
        body: Value,
        device: &str,
    ) -> HttpResponse {
        http_with(
            &self.address,
            method,
            path,
            Some(&body.to_string()),
            &[("X-Kinko-Device", device)],
        )
    }
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    sign_up_login_second_factor_kyc_and_the_money_gate,
    bad_input_is_problem_json_and_stores_nothing,
    recovery_refuses_injected_destinations_and_knowledge_alone,
    credential_stuffing_hits_the_lock,
    no_route_lets_user_a_touch_user_b,
    one_phone_one_wallet_and_no_enumeration,
    cookie_sessions_need_the_csrf_token_to_change_state,
    sign_ups_are_rate_limited_per_source,
    contact_changes_prove_the_new_contact_and_tell_the_old,
    one_identity_backs_one_wallet_and_a_change_is_reviewed,
);

fn sign_up_login_second_factor_kyc_and_the_money_gate(backend: &str) {
    let server = start_with_freeze(backend, "2");
    server.active_user("hanako@example.jp", "090-1234-5678");
    let token = server.token("hanako@example.jp");

    let gate = json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&token)));
    assert_eq!(gate["allowed"], false);
    let reasons = gate["reasons"].to_string();
    assert!(
        reasons.contains("IDENTITY_SECOND_FACTOR_REQUIRED")
            && reasons.contains("IDENTITY_KYC_REQUIRED"),
        "{gate}"
    );

    let (secret, rotated) = server.enrol_totp(&token);
    // Confirming was a privilege change: the old token is dead (no session fixation).
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, Some(&token)),
        401,
        "SESSION_INVALID",
    );
    let me = json_of(&server.call("GET", "/api/v1/me", None, Some(&rotated)));
    assert_eq!(me["second_factor"], true);
    assert_eq!(me["phone"], "+819012345678");

    // The code that confirmed the factor cannot be used again.
    let replay = server.call(
        "POST",
        "/api/v1/sessions/current/second-factor",
        Some(json!({ "totp_code": totp_code(&secret, 0) })),
        Some(&rotated),
    );
    server.assert_problem(&replay, 401, "IDENTITY_SECOND_FACTOR_INVALID");

    // Adding a factor freezes outgoing money (here for 2 s instead of 24 h) and tells the
    // registered address.
    let gate = json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&rotated)));
    assert_eq!(
        gate["reasons"],
        json!(["IDENTITY_OUTGOING_FROZEN", "IDENTITY_KYC_REQUIRED"]),
        "{gate}"
    );
    assert!(
        server
            .messages_to("hanako@example.jp")
            .iter()
            .any(|message| message["purpose"] == "second_factor_added")
    );
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let gate = json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&rotated)));
    assert_eq!(gate["reasons"], json!(["IDENTITY_KYC_REQUIRED"]), "{gate}");

    let rejected = json_of(&server.call(
        "POST",
        "/api/v1/me/kyc",
        Some(json!({ "document_reference": "SANDBOX-REJECT-1" })),
        Some(&rotated),
    ));
    assert_eq!(rejected["outcome"], "rejected");
    let verified = json_of(&server.call(
        "POST",
        "/api/v1/me/kyc",
        Some(json!({ "document_reference": "SANDBOX-ID-0001" })),
        Some(&rotated),
    ));
    assert_eq!(verified["outcome"], "verified");
    assert_eq!(verified["kyc_level"], "L1");
    let gate = json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&rotated)));
    assert_eq!(gate["allowed"], true, "{gate}");

    // A new sign-in (another device) has no second factor yet: money waits for it.
    let other = json_of(&server.log_in("hanako@example.jp", PASSWORD));
    assert_eq!(other["second_factor_required"], true);
    let other_token = other["token"].as_str().unwrap_or_default().to_owned();
    let gate = json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&other_token)));
    assert_eq!(
        gate["reasons"],
        json!(["SESSION_STEP_UP_REQUIRED"]),
        "{gate}"
    );
    let passed = server.call(
        "POST",
        "/api/v1/sessions/current/second-factor",
        Some(json!({ "totp_code": totp_code(&secret, 1) })),
        Some(&other_token),
    );
    assert_eq!(passed.status, 200, "{}", passed.body);
    let fresh = json_of(&passed)["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&fresh)))["allowed"],
        true
    );
    assert!(
        server
            .messages_to("hanako@example.jp")
            .iter()
            .any(|message| message["purpose"] == "new_device")
    );

    // The audit chain holds every step and verifies.
    server.assert_audit_chain_intact();
}

fn bad_input_is_problem_json_and_stores_nothing(backend: &str) {
    let server = start(backend);
    let signup = |body: &str| http_with(&server.address, "POST", "/api/v1/signup", Some(body), &[]);
    server.assert_problem(&signup("{not json"), 400, "REQUEST_INVALID");
    server.assert_problem(
        &signup(r#"{"email":"a@example.jp","password":"x"}"#),
        400,
        "REQUEST_INVALID",
    );
    server.assert_problem(
        &signup(&json!({ "email": "a@example.jp", "password": PASSWORD, "phone": "09011112222", "birth_date": "1990-01-01" }).to_string()),
        400,
        "REQUEST_INVALID",
    );
    let cases = [
        (
            json!({ "email": "not-an-address", "password": PASSWORD, "phone": "09011112222" }),
            "IDENTITY_EMAIL_INVALID",
        ),
        (
            json!({ "email": "a@example.jp", "password": PASSWORD, "phone": "12" }),
            "IDENTITY_PHONE_INVALID",
        ),
        (
            json!({ "email": "a@example.jp", "password": "short", "phone": "09011112222" }),
            "PASSWORD_TOO_SHORT",
        ),
        (
            json!({ "email": "a@example.jp", "password": "password1234", "phone": "09011112222" }),
            "PASSWORD_TOO_COMMON",
        ),
        (
            json!({ "email": "longaddress@example.jp", "password": "longaddress@example.jp", "phone": "09011112222" }),
            "PASSWORD_EQUALS_EMAIL",
        ),
    ];
    for (body, code) in cases {
        server.assert_problem(
            &server.call("POST", "/api/v1/signup", Some(body), None),
            400,
            code,
        );
    }
    // Nothing was stored and nothing was sent.
    assert!(server.messages_to("a@example.jp").is_empty());
    server.assert_problem(
        &server.log_in("a@example.jp", PASSWORD),
        401,
        "IDENTITY_LOGIN_FAILED",
    );
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, Some("kinko_s_forged")),
        401,
        "SESSION_INVALID",
    );
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, None),
        401,
        "SESSION_INVALID",
    );
}

fn recovery_refuses_injected_destinations_and_knowledge_alone(backend: &str) {
    let server = start(backend);
    server.active_user("taro@example.jp", "+818011112222");
    let (secret, token) = server.enrol_totp(&server.token("taro@example.jp"));
    let sent_before = server.messages_to("taro@example.jp").len();

    // 7pay: a reset that names another address fails and sends nothing anywhere.
    for field in ["send_to", "destination", "email_to", "phone"] {
        let injected = server.call(
            "POST",
            "/api/v1/recovery",
            Some(json!({ "email": "taro@example.jp", field: "attacker@evil.example" })),
            None,
        );
        server.assert_problem(&injected, 400, "REQUEST_INVALID");
    }
    assert!(server.messages_to("attacker@evil.example").is_empty());
    assert_eq!(server.messages_to("taro@example.jp").len(), sent_before);

    // Unknown and known addresses get the same answer.
    assert_eq!(
        server
            .call(
                "POST",
                "/api/v1/recovery",
                Some(json!({ "email": "nobody@example.jp" })),
                None
            )
            .status,
        202
    );
    assert_eq!(
        server
            .call(
                "POST",
                "/api/v1/recovery",
                Some(json!({ "email": "taro@example.jp" })),
                None
            )
            .status,
        202
    );
    assert!(server.messages_to("nobody@example.jp").is_empty());
    let email_code = server.code_sent("taro@example.jp", "recovery");

    // Knowledge alone (e-mail, birth date, phone) is not even a request the API understands;
    // the e-mail code without a possession factor fails.
    let knowledge = json!({ "email": "taro@example.jp", "email_code": email_code, "birth_date": "1985-11-23", "phone": "+818011112222", "new_password": "a brand new passphrase 2026" });
    server.assert_problem(
        &server.call("POST", "/api/v1/recovery/complete", Some(knowledge), None),
        400,
        "REQUEST_INVALID",
    );
    let no_possession = json!({ "email": "taro@example.jp", "email_code": email_code, "new_password": "a brand new passphrase 2026" });
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/recovery/complete",
            Some(no_possession),
            None,
        ),
        400,
        "IDENTITY_RECOVERY_FAILED",
    );
    let wrong_totp = json!({ "email": "taro@example.jp", "email_code": email_code, "totp_code": "000000", "new_password": "a brand new passphrase 2026" });
    server.assert_problem(
        &server.call("POST", "/api/v1/recovery/complete", Some(wrong_totp), None),
        400,
        "IDENTITY_RECOVERY_FAILED",
    );

    // With the registered phone's code it works: other sessions end, the old channel is told,
    // and outgoing money is frozen.
    assert_eq!(
        server
            .call(
                "POST",
                "/api/v1/recovery",
                Some(json!({ "email": "taro@example.jp" })),
                None
            )
            .status,
        202
    );
    let email_code = server.code_sent("taro@example.jp", "recovery");
    let sms_code = server.code_sent("+818011112222", "recovery_phone");
    let complete = json!({ "email": "taro@example.jp", "email_code": email_code, "sms_code": sms_code, "new_password": "a brand new passphrase 2026" });
    let done = server.call("POST", "/api/v1/recovery/complete", Some(complete), None);
    assert_eq!(done.status, 204, "{}", done.body);
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, Some(&token)),
        401,
        "SESSION_INVALID",
    );
    assert!(
        server
            .messages_to("taro@example.jp")
            .iter()
            .any(|message| message["purpose"] == "account_recovered")
    );
    server.assert_problem(
        &server.log_in("taro@example.jp", PASSWORD),
        401,
        "IDENTITY_LOGIN_FAILED",
    );
    let signed_in = json_of(&server.log_in("taro@example.jp", "a brand new passphrase 2026"));
    let new_token = signed_in["token"].as_str().unwrap_or_default().to_owned();
    let passed = server.call(
        "POST",
        "/api/v1/sessions/current/second-factor",
        Some(json!({ "totp_code": totp_code(&secret, 1) })),
        Some(&new_token),
    );
    let fresh = json_of(&passed)["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let gate = json_of(&server.call("GET", "/api/v1/me/money-gate", None, Some(&fresh)));
    assert!(
        gate["reasons"]
            .to_string()
            .contains("IDENTITY_OUTGOING_FROZEN"),
        "{gate}"
    );
}

fn credential_stuffing_hits_the_lock(backend: &str) {
    let server = start(backend);
    server.active_user("victim@example.jp", "+817033334444");
    for attempt in 0..100 {
        let response = server.log_in(
            "victim@example.jp",
            &format!("leaked password number {attempt}"),
        );
        server.assert_problem(&response, 401, "IDENTITY_LOGIN_FAILED");
    }
    // Locked now: even the right password gets the same answer, and the holder was told.
    server.assert_problem(
        &server.log_in("victim@example.jp", PASSWORD),
        401,
        "IDENTITY_LOGIN_FAILED",
    );
    assert!(
        server
            .messages_to("victim@example.jp")
            .iter()
            .any(|message| message["purpose"] == "account_locked")
    );
    // An unknown address answers exactly the same.
    let unknown = server.log_in("nobody@example.jp", PASSWORD);
    server.assert_problem(&unknown, 401, "IDENTITY_LOGIN_FAILED");
}

fn no_route_lets_user_a_touch_user_b(backend: &str) {
    let server = start(backend);
    server.active_user("a@example.jp", "+819000000001");
    server.active_user("b@example.jp", "+819000000002");
    let a = server.token("a@example.jp");
    let b = server.token("b@example.jp");
    let b_sessions = json_of(&server.call("GET", "/api/v1/sessions", None, Some(&b)));
    let b_session = b_sessions[0]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let b_devices = json_of(&server.call("GET", "/api/v1/devices", None, Some(&b)));
    let b_device = b_devices[0]["device_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    server.assert_problem(
        &server.call(
            "DELETE",
            &format!("/api/v1/sessions/{b_session}"),
            None,
            Some(&a),
        ),
        404,
        "SESSION_NOT_FOUND",
    );
    server.assert_problem(
        &server.call(
            "DELETE",
            &format!("/api/v1/devices/{b_device}"),
            None,
            Some(&a),
        ),
        404,
        "DEVICE_NOT_FOUND",
    );
    // A sees only its own.
    let a_sessions = json_of(&server.call("GET", "/api/v1/sessions", None, Some(&a)));
    assert!(!a_sessions.to_string().contains(&b_session));
    assert_eq!(
        json_of(&server.call("GET", "/api/v1/me", None, Some(&b)))["email"],
        "b@example.jp"
    );
    // B revokes its own session: it ends.
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/api/v1/sessions/{b_session}"),
                None,
                Some(&b)
            )
            .status,
        204
    );
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, Some(&b)),
        401,
        "SESSION_INVALID",
    );
    // A device token of B presented by A's sign-in is ignored: A gets a new device.
    let first = json_of(&server.log_in("b@example.jp", PASSWORD));
    let b_device_token = first["device_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let a_again = server.call_from_device(
        "POST",
        "/api/v1/sessions",
        json!({ "email": "a@example.jp", "password": PASSWORD }),
        &b_device_token,
    );
    assert!(
        json_of(&a_again)["device_token"].is_string(),
        "B's device token must not sign A in on B's device"
    );
}

fn one_phone_one_wallet_and_no_enumeration(backend: &str) {
    let server = start(backend);
    server.active_user("first@example.jp", "+819055556666");
    // The same e-mail again: the same answer, no code, a notice to the owner.
    let again = server.call(
        "POST",
        "/api/v1/signup",
        Some(
            json!({ "email": "first@example.jp", "password": PASSWORD, "phone": "+819099990000" }),
        ),
        None,
    );
    assert_eq!(again.status, 202);
    assert!(server.messages_to("+819099990000").is_empty());
    assert!(
        server
            .messages_to("first@example.jp")
            .iter()
            .any(|message| message["purpose"] == "signup_existing")
    );
    // The same phone for a second wallet: refused when the phone is verified.
    let second = server.call(
        "POST",
        "/api/v1/signup",
        Some(
            json!({ "email": "second@example.jp", "password": PASSWORD, "phone": "+819055556666" }),
        ),
        None,
    );
    assert_eq!(second.status, 202);
    let user_id = json_of(&second)["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let sms_code = server.code_sent("+819055556666", "verify_phone");
    let verify = server.call(
        "POST",
        &format!("/api/v1/signup/{user_id}/verify"),
        Some(json!({ "channel": "sms", "code": sms_code })),
        None,
    );
    server.assert_problem(&verify, 409, "IDENTITY_PHONE_IN_USE");
    // Wrong codes are counted: after 5 the code is dead.
    let email_code = server.code_sent("second@example.jp", "verify_email");
    let wrong = if email_code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..5 {
        let response = server.call(
            "POST",
            &format!("/api/v1/signup/{user_id}/verify"),
            Some(json!({ "channel": "email", "code": wrong })),
            None,
        );
        assert_eq!(response.status, 400, "{}", response.body);
    }
    let late = server.call(
        "POST",
        &format!("/api/v1/signup/{user_id}/verify"),
        Some(json!({ "channel": "email", "code": email_code })),
        None,
    );
    server.assert_problem(&late, 400, "CODE_EXPIRED");
}

fn cookie_sessions_need_the_csrf_token_to_change_state(backend: &str) {
    let server = start(backend);
    server.active_user("cookie@example.jp", "+819011112222");
    let signed_in = server.log_in("cookie@example.jp", PASSWORD);
    let set_cookie = signed_in
        .header("set-cookie")
        .unwrap_or_default()
        .to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
    let csrf = json_of(&signed_in)["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let with = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut all = vec![("Cookie", cookie.as_str())];
        all.extend_from_slice(headers);
        http_with(&server.address, method, path, None, &all)
    };
    assert_eq!(
        with("GET", "/api/v1/me", &[]).status,
        200,
        "a cookie reads without a CSRF token"
    );
    server.assert_problem(
        &with("POST", "/api/v1/me/totp", &[]),
        403,
        "SESSION_CSRF_INVALID",
    );
    server.assert_problem(
        &with(
            "POST",
            "/api/v1/me/totp",
            &[("X-CSRF-Token", "kinko_c_forged")],
        ),
        403,
        "SESSION_CSRF_INVALID",
    );
    let enrolled = with(
        "POST",
        "/api/v1/me/totp",
        &[("X-CSRF-Token", csrf.as_str())],
    );
    assert_eq!(enrolled.status, 200, "{}", enrolled.body);
}

fn sign_ups_are_rate_limited_per_source(backend: &str) {
    support::away_from_hour_boundary(60);
    let server = start(backend);
    let mut statuses = Vec::new();
    let mut last = None;
    for index in 0..21 {
        let body = json!({ "email": format!("bulk{index}@example.jp"), "password": PASSWORD, "phone": format!("+8190{index:04}{index:04}") });
        let response = server.call("POST", "/api/v1/signup", Some(body), None);
        statuses.push(response.status);
        last = Some(response);
    }
    assert!(
        statuses[..20].iter().all(|status| *status == 202),
        "{statuses:?}"
    );
    assert_eq!(
        statuses[20], 429,
        "the 21st sign-up from one address within the hour"
    );
    let limited = last.unwrap_or_else(|| panic!("no response"));
    let retry_after: i64 = limited
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..=3_600).contains(&retry_after),
        "Retry-After: {:?}",
        limited.header("retry-after")
    );
    assert!(
        server.messages_to("bulk20@example.jp").is_empty(),
        "a refused sign-up sends nothing"
    );
}

fn contact_changes_prove_the_new_contact_and_tell_the_old(backend: &str) {
    let server = start(backend);
    server.active_user("old@example.jp", "+819012340000");
    server.active_user("taken@example.jp", "+819012349999");
    let token = server.token("old@example.jp");
    let other_session = server.token("old@example.jp");

    let started = server.call(
        "POST",
        "/api/v1/me/email",
        Some(json!({ "new_value": "new@example.jp" })),
        Some(&token),
    );
    assert_eq!(started.status, 202, "{}", started.body);
    // Nothing changes until the new address proves itself.
    assert_eq!(
        json_of(&server.call("GET", "/api/v1/me", None, Some(&token)))["email"],
        "old@example.jp"
    );
    let code = server.code_sent("new@example.jp", "verify_email");
    let confirmed = server.call(
        "POST",
        "/api/v1/me/email/confirm",
        Some(json!({ "code": code })),
        Some(&token),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert_eq!(json_of(&confirmed)["email"], "new@example.jp");
    assert!(json_of(&confirmed)["outgoing_frozen_until_ms"].is_i64());
    // The old address was told; the other session ended.
    assert!(
        server
            .messages_to("old@example.jp")
            .iter()
            .any(|message| message["purpose"] == "email_changed")
    );
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, Some(&other_session)),
        401,
        "SESSION_INVALID",
    );
    server.assert_problem(
        &server.log_in("old@example.jp", PASSWORD),
        401,
        "IDENTITY_LOGIN_FAILED",
    );
    assert_eq!(server.log_in("new@example.jp", PASSWORD).status, 201);

    // A phone number already holding an active wallet cannot be moved onto this one.
    let started = server.call(
        "POST",
        "/api/v1/me/phone",
        Some(json!({ "new_value": "+819012349999" })),
        Some(&token),
    );
    assert_eq!(started.status, 202, "{}", started.body);
    let code = server.code_sent("+819012349999", "verify_phone");
    let refused = server.call(
        "POST",
        "/api/v1/me/phone/confirm",
        Some(json!({ "code": code })),
        Some(&token),
    );
    server.assert_problem(&refused, 409, "IDENTITY_PHONE_IN_USE");
    // The e-mail code was used up: confirming again is refused, not a silent success.
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/me/email/confirm",
            Some(json!({ "code": "12345678" })),
            Some(&token),
        ),
        400,
        "CODE_EXPIRED",
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/me/email",
            Some(json!({ "new_value": "not an address" })),
            Some(&token),
        ),
        400,
        "IDENTITY_EMAIL_INVALID",
    );
}

fn kyc(server: &Server, token: &str, reference: &str) -> Value {
    let response = server.call(
        "POST",
        "/api/v1/me/kyc",
        Some(json!({ "document_reference": reference })),
        Some(token),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    json_of(&response)
}

/// Issue 11 item 5 (D13): a second wallet proving an identity that backs a wallet already, or
/// a wallet proving someone else, went straight to L1 with the new identity (the newest record
/// won). Now both are held for review, with a case opened and the identity's wallet told.
fn one_identity_backs_one_wallet_and_a_change_is_reviewed(backend: &str) {
    let server = start(backend);
    server.active_user("hanako@example.jp", "090-1234-5678");
    server.active_user("taro@example.jp", "090-2222-3333");
    let hanako = server.token("hanako@example.jp");
    let taro = server.token("taro@example.jp");
    let proved = kyc(&server, &hanako, "SANDBOX-ID-0001");
    assert_eq!(
        (proved["outcome"].as_str(), proved["kyc_level"].as_str()),
        (Some("verified"), Some("L1"))
    );

    // A second wallet with hanako's identity: held, not L1, and hanako hears of it.
    let second = kyc(&server, &taro, "SANDBOX-ID-0001");
    assert_eq!(
        (second["outcome"].as_str(), second["kyc_level"].as_str()),
        (Some("review"), Some("L0")),
        "{second}"
    );
    assert!(
        server
            .messages_to("hanako@example.jp")
            .iter()
            .any(|message| message["purpose"] == "kyc_identity_elsewhere")
    );
    // Taro's own identity is his.
    let own = kyc(&server, &taro, "SANDBOX-ID-0002");
    assert_eq!(own["outcome"], "verified", "{own}");

    // Hanako's wallet proving someone else (an identity swap): held; she stays L1 as herself.
    let swap = kyc(&server, &hanako, "SANDBOX-ID-0003");
    assert_eq!(
        (swap["outcome"].as_str(), swap["kyc_level"].as_str()),
        (Some("review"), Some("L1")),
        "{swap}"
    );
    // Nor can the swap take an identity another wallet holds.
    let taken = kyc(&server, &hanako, "SANDBOX-ID-0002");
    assert_eq!(taken["outcome"], "review", "{taken}");
    // Proving herself again is fine.
    assert_eq!(
        kyc(&server, &hanako, "SANDBOX-ID-0001")["outcome"],
        "verified"
    );

    // What was held waits for an operator: one case each, and hanako's identity is unchanged.
    let database = server.database();
    let (cases, current) = database
        .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
            let cases = tx
                .query_one(
                    "SELECT COUNT(*) FROM cases WHERE kind = 'risk_review'
                     AND subject LIKE 'kyc_record:%'",
                    &[],
                )?
                .int(0)?;
            let current = tx
                .query_one(
                    "SELECT r.kana_name FROM identity_kyc_records r
                     JOIN identity_users u ON u.id = r.user_id
                     WHERE u.email = $1 AND r.outcome = 'verified'
                     ORDER BY r.created_at DESC, r.id DESC LIMIT 1",
                    &["hanako@example.jp".into()],
                )?
                .text(0)?;
            Ok::<_, kinko_ledger::StoreError>((cases, current))
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(cases, 3);
    assert_eq!(current, "ヤマダ ハナコ");

    // Made-up sandbox persons give tests and the drill as many wallets as they need.
    server.active_user("someone@example.jp", "090-3333-4444");
    let someone = server.token("someone@example.jp");
    assert_eq!(
        kyc(&server, &someone, "SANDBOX-PERSON-42")["outcome"],
        "verified"
    );
}
