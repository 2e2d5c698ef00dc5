//! Issue 13 over real HTTP, on both stores: no enumeration oracle in recovery, every password
//! and code guess limited (also through a stolen session), and no lock-out weapon — the
//! holder on a trusted device with a second factor still signs in.

mod support;

use serde_json::json;
use support::{PASSWORD, Server, http_with, json_of};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    recovery_complete_answers_the_same_for_any_address_and_is_throttled,
    recovery_start_is_throttled_for_any_address,
    password_guesses_through_a_session_are_limited_and_counted,
    the_holder_signs_in_from_a_trusted_device_while_the_account_is_throttled,
    sign_up_sms_is_limited_per_number_and_prefix_and_country,
    a_taken_address_answers_like_a_free_one_at_verify,
    a_pending_sign_up_never_squats_an_address,
    the_forwarded_address_counts_only_from_a_trusted_proxy,
    recovery_is_told_to_the_registered_phone_too,
    contact_change_notices_go_to_the_contacts_before_the_first_change,
);

const NEW_PASSWORD: &str = "a brand new passphrase 2026";

fn complete(server: &Server, email: &str, new_password: &str) -> support::HttpResponse {
    server.call(
        "POST",
        "/api/v1/recovery/complete",
        Some(json!({
            "email": email, "email_code": "12345678", "sms_code": "12345678",
            "new_password": new_password,
        })),
        None,
    )
}

/// Before: a registered address got `PASSWORD_TOO_SHORT` and an unknown one
/// `IDENTITY_RECOVERY_FAILED` (an oracle), and guesses were never throttled.
fn recovery_complete_answers_the_same_for_any_address_and_is_throttled(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("taro@example.jp", "+818011112222");
    for email in ["taro@example.jp", "nobody@example.jp"] {
        server.assert_problem(
            &complete(&server, email, "short"),
            400,
            "PASSWORD_TOO_SHORT",
        );
    }
    // Guessing the codes of one address from one network: ten answers, then 429, for an
    // unknown address exactly as for a registered one.
    for email in ["nobody@example.jp", "taro@example.jp"] {
        for _ in 0..10 {
            server.assert_problem(
                &complete(&server, email, NEW_PASSWORD),
                400,
                "IDENTITY_RECOVERY_FAILED",
            );
        }
        server.assert_problem(&complete(&server, email, NEW_PASSWORD), 429, "RATE_LIMITED");
    }
    server.assert_audit_chain_intact();
}

/// Before: only a registered address ever met the per-user 429, so it told which addresses
/// have accounts.
fn recovery_start_is_throttled_for_any_address(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("taro@example.jp", "+818011112222");
    for email in ["nobody@example.jp", "taro@example.jp"] {
        for _ in 0..5 {
            let started = server.call(
                "POST",
                "/api/v1/recovery",
                Some(json!({ "email": email })),
                None,
            );
            assert_eq!(started.status, 202, "{}", started.body);
        }
        let limited = server.call(
            "POST",
            "/api/v1/recovery",
            Some(json!({ "email": email })),
            None,
        );
        server.assert_problem(&limited, 429, "RATE_LIMITED");
    }
}

/// Before: `PUT /me/password` compared the current password without limit or count, so a
/// thief holding a session token could recover the password by guessing.
fn password_guesses_through_a_session_are_limited_and_counted(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("hana@example.jp", "+818055556666");
    let token = server.token("hana@example.jp");
    let change = |current: &str| {
        server.call(
            "POST",
            "/api/v1/me/password",
            Some(json!({ "current_password": current, "new_password": NEW_PASSWORD })),
            Some(&token),
        )
    };
    for attempt in 0..10 {
        server.assert_problem(
            &change(&format!("guess number {attempt}")),
            401,
            "IDENTITY_LOGIN_FAILED",
        );
    }
    server.assert_problem(&change("guess number 10"), 429, "RATE_LIMITED");
    // Even the right password waits now: the limit is not an oracle either.
    server.assert_problem(&change(PASSWORD), 429, "RATE_LIMITED");
    server.assert_audit_chain_intact();
}

/// Before: 100 failed logins by anyone locked the account for an hour, holder included.
fn the_holder_signs_in_from_a_trusted_device_while_the_account_is_throttled(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("victim@example.jp", "+817033334444");
    let signed_in = json_of(&server.log_in("victim@example.jp", PASSWORD));
    let device = signed_in["device_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no device token: {signed_in}"))
        .to_owned();
    let token = signed_in["token"].as_str().unwrap_or_default().to_owned();
    // Setting up TOTP passes it on this device: the device is trusted from now on.
    server.enrol_totp(&token);
    for attempt in 0..100 {
        let failed = server.log_in("victim@example.jp", &format!("leaked password {attempt}"));
        server.assert_problem(&failed, 401, "IDENTITY_LOGIN_FAILED");
    }
    // Throttled: without the trusted device even the right password fails…
    server.assert_problem(
        &server.log_in("victim@example.jp", PASSWORD),
        401,
        "IDENTITY_LOGIN_FAILED",
    );
    // …with it the holder signs in, and must still pass the second factor for money.
    let body = json!({ "email": "victim@example.jp", "password": PASSWORD }).to_string();
    let holder = http_with(
        &server.address,
        "POST",
        "/api/v1/sessions",
        Some(&body),
        &[("X-Kinko-Device", &device)],
    );
    assert_eq!(holder.status, 201, "{}", holder.body);
    assert_eq!(json_of(&holder)["second_factor_required"], true);
    // A wrong password from the trusted device is still a failure.
    let body = json!({ "email": "victim@example.jp", "password": "not it at all 123" }).to_string();
    let wrong = http_with(
        &server.address,
        "POST",
        "/api/v1/sessions",
        Some(&body),
        &[("X-Kinko-Device", &device)],
    );
    server.assert_problem(&wrong, 401, "IDENTITY_LOGIN_FAILED");
}

/// SMS pumping: sign-up codes only to the countries Kinko serves, a few per number and per
/// run of numbers. Before: any number, any count up to the per-IP limit.
fn sign_up_sms_is_limited_per_number_and_prefix_and_country(backend: &str) {
    support::away_from_hour_boundary(60);
    let server = Server::start(backend, &[]);
    let sign_up = |index: usize, phone: &str| {
        server.call(
            "POST",
            "/api/v1/signup",
            Some(json!({ "email": format!("pump{index}@example.jp"), "password": PASSWORD, "phone": phone })),
            None,
        )
    };
    server.assert_problem(
        &sign_up(0, "+447700900123"),
        400,
        "IDENTITY_PHONE_COUNTRY_NOT_ALLOWED",
    );
    assert!(server.messages_to("+447700900123").is_empty());
    for index in 1..=3 {
        assert_eq!(sign_up(index, "+819011110000").status, 202);
    }
    server.assert_problem(&sign_up(4, "+819011110000"), 429, "RATE_LIMITED");
    // A run of numbers sharing all but the last four digits: ten an hour.
    for index in 0..6 {
        let response = sign_up(10 + index, &format!("+81902222{index:04}"));
        assert_eq!(response.status, 202, "{}", response.body);
    }
    for index in 6..10 {
        assert_eq!(
            sign_up(10 + index, &format!("+81902222{index:04}")).status,
            202
        );
    }
    server.assert_problem(&sign_up(30, "+819022229999"), 429, "RATE_LIMITED");
    assert!(server.messages_to("+819022229999").is_empty());
}

fn sign_up_id(server: &Server, email: &str, phone: &str) -> String {
    let response = server.call(
        "POST",
        "/api/v1/signup",
        Some(json!({ "email": email, "password": PASSWORD, "phone": phone })),
        None,
    );
    assert_eq!(response.status, 202, "{}", response.body);
    json_of(&response)["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn verify(server: &Server, user_id: &str, channel: &str, code: &str) -> support::HttpResponse {
    server.call(
        "POST",
        &format!("/api/v1/signup/{user_id}/verify"),
        Some(json!({ "channel": channel, "code": code })),
        None,
    )
}

/// Before: the id handed out for a taken address answered `CODE_INVALID` for ever, a real
/// one `CODE_EXPIRED` after five wrong tries.
fn a_taken_address_answers_like_a_free_one_at_verify(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("taken@example.jp", "+819044440000");
    let fake = sign_up_id(&server, "taken@example.jp", "+819044441111");
    let real = sign_up_id(&server, "free@example.jp", "+819044442222");
    let wrong = if server.code_sent("free@example.jp", "verify_email") == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let answers = |user_id: &str| {
        (0..6)
            .map(|_| {
                let response = verify(&server, user_id, "email", wrong);
                (response.status, json_of(&response)["code"].clone())
            })
            .collect::<Vec<_>>()
    };
    let (fake_answers, real_answers) = (answers(&fake), answers(&real));
    assert_eq!(fake_answers, real_answers);
    assert_eq!(real_answers[5].1, "CODE_EXPIRED", "{real_answers:?}");
}

/// Before: a pending sign-up held its address for ever; the owner's own sign-up got a fake id.
fn a_pending_sign_up_never_squats_an_address(backend: &str) {
    let server = Server::start(backend, &[("KINKO_PENDING_SIGNUP_TTL_S", "1")]);
    let squatter = sign_up_id(&server, "owner@example.jp", "+819066660001");
    let squatter_code = server.code_sent("+819066660001", "verify_phone");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let owner = sign_up_id(&server, "owner@example.jp", "+819066660002");
    // The squatter's code is dead (on whichever id the owner got).
    for user_id in [&squatter, &owner] {
        assert_eq!(verify(&server, user_id, "sms", &squatter_code).status, 400);
    }
    let email_code = server.code_sent("owner@example.jp", "verify_email");
    let phone_code = server.code_sent("+819066660002", "verify_phone");
    assert_eq!(verify(&server, &owner, "email", &email_code).status, 200);
    let done = verify(&server, &owner, "sms", &phone_code);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(json_of(&done)["status"], "active");
    assert_eq!(json_of(&done)["phone"], "+819066660002");
    server.assert_audit_chain_intact();
}

fn start_recovery_from(server: &Server, forwarded_for: &str) -> u16 {
    let body = json!({ "email": "taro@example.jp" }).to_string();
    http_with(
        &server.address,
        "POST",
        "/api/v1/recovery",
        Some(&body),
        &[("X-Forwarded-For", forwarded_for)],
    )
    .status
}

/// `KINKO_TRUSTED_PROXIES`: behind a proxy, limits key on the client's network; without the
/// setting, a client's own `X-Forwarded-For` changes nothing.
fn the_forwarded_address_counts_only_from_a_trusted_proxy(backend: &str) {
    let direct = Server::start(backend, &[]);
    for index in 0..5 {
        assert_eq!(
            start_recovery_from(&direct, &format!("198.51.{index}.1")),
            202
        );
    }
    assert_eq!(
        start_recovery_from(&direct, "203.0.113.9"),
        429,
        "the header was believed"
    );
    drop(direct);

    let proxied = Server::start(backend, &[("KINKO_TRUSTED_PROXIES", "127.0.0.1, ::1")]);
    for index in 0..5 {
        assert_eq!(
            start_recovery_from(&proxied, &format!("198.51.100.{index}")),
            202
        );
    }
    // Another address in the same /24 is the same source…
    assert_eq!(start_recovery_from(&proxied, "198.51.100.200"), 429);
    // …another network is not, and a spoofed left-hand entry changes nothing.
    assert_eq!(
        start_recovery_from(&proxied, "198.51.100.7, 203.0.113.9"),
        202
    );
}

/// Before: only the e-mail address heard of a recovery, and whoever recovered may hold it.
fn recovery_is_told_to_the_registered_phone_too(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("taro@example.jp", "+818011112222");
    let started = server.call(
        "POST",
        "/api/v1/recovery",
        Some(json!({ "email": "taro@example.jp" })),
        None,
    );
    assert_eq!(started.status, 202);
    let email_code = server.code_sent("taro@example.jp", "recovery");
    let sms_code = server.code_sent("+818011112222", "recovery_phone");
    let done = server.call(
        "POST",
        "/api/v1/recovery/complete",
        Some(json!({ "email": "taro@example.jp", "email_code": email_code, "sms_code": sms_code, "new_password": NEW_PASSWORD })),
        None,
    );
    assert_eq!(done.status, 204, "{}", done.body);
    assert!(
        server
            .messages_to("+818011112222")
            .iter()
            .any(|message| message["purpose"] == "account_recovered"),
        "{:?}",
        server.messages_to("+818011112222")
    );
}

fn change_contact(server: &Server, token: &str, what: &str, new_value: &str, purpose: &str) {
    let started = server.call(
        "POST",
        &format!("/api/v1/me/{what}"),
        Some(json!({ "new_value": new_value })),
        Some(token),
    );
    assert_eq!(started.status, 202, "{}", started.body);
    let code = server.code_sent(new_value, purpose);
    let confirmed = server.call(
        "POST",
        &format!("/api/v1/me/{what}/confirm"),
        Some(json!({ "code": code })),
        Some(token),
    );
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
}

/// Before: a thief who changed the e-mail first received the phone change's notice on the
/// address they had just set.
fn contact_change_notices_go_to_the_contacts_before_the_first_change(backend: &str) {
    let server = Server::start(backend, &[]);
    server.active_user("holder@example.jp", "+819077770000");
    let token = server.token("holder@example.jp");
    change_contact(&server, &token, "email", "thief@example.jp", "verify_email");
    change_contact(&server, &token, "phone", "+819077779999", "verify_phone");
    let purposes = |destination: &str| {
        server
            .messages_to(destination)
            .iter()
            .map(|message| message["purpose"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    let holder = purposes("holder@example.jp");
    assert!(holder.contains(&"email_changed".to_owned()), "{holder:?}");
    assert!(holder.contains(&"phone_changed".to_owned()), "{holder:?}");
    let thief = purposes("thief@example.jp");
    assert!(!thief.contains(&"phone_changed".to_owned()), "{thief:?}");
    assert!(purposes("+819077770000").contains(&"phone_changed".to_owned()));
}
