//! Passkeys over real HTTP against `kinko serve`, on both stores, with a software authenticator
//! (webauthn-authenticator-rs's `SoftPasskey`) producing real registration and assertion
//! responses. Proves: a registered passkey passes the second factor on a new sign-in (the
//! money gate stops asking for a step-up); an answer from another origin is refused; a
//! replayed assertion is refused, with or without a new challenge; an assertion made for one
//! user's challenge does not pass another user's; adding a passkey to a protected account
//! needs a fresh second factor; one user cannot delete another's passkey.

mod bank_support;
mod support;

use kinko_identity::passkey::{CreationChallengeResponse, RequestChallengeResponse, Url};
use serde_json::{Value, json};
use support::{HttpResponse, Server, json_of};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// The relying party the test servers are configured with.
const RP_ID: &str = "localhost";
const ORIGIN: &str = "http://localhost:8080";
/// A page on another port of the same host: the browser would sign for it, the server must not
/// accept it.
const OTHER_ORIGIN: &str = "http://localhost:9999";

fn start(backend: &str) -> Server {
    Server::start(
        backend,
        &[("KINKO_RP_ID", RP_ID), ("KINKO_RP_ORIGIN", ORIGIN)],
    )
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_owned()
}

fn url(origin: &str) -> Url {
    Url::parse(origin).unwrap_or_else(|error| panic!("{error}"))
}

impl Server {
    /// Signs up with both contacts verified; returns a session token.
    fn signed_in_user(&self, email: &str, phone_e164: &str) -> String {
        self.active_user(email, phone_e164);
        self.token(email)
    }

    /// Registers a passkey from `authenticator`; returns its id.
    fn register_passkey(
        &self,
        token: &str,
        authenticator: &mut SoftPasskey,
        label: &str,
    ) -> String {
        let credential = self.registration_response(token, authenticator);
        let finished = self.call(
            "POST",
            "/api/v1/me/passkeys/register/finish",
            Some(json!({ "credential": credential, "label": label })),
            Some(token),
        );
        assert_eq!(finished.status, 201, "{}", finished.body);
        let view = json_of(&finished);
        assert_eq!(view["label"], label);
        assert_eq!(view["last_used_at_ms"], Value::Null);
        text(&view["passkey_id"])
    }

    /// Starts a registration and lets the authenticator answer it at the expected origin.
    fn registration_response(&self, token: &str, authenticator: &mut SoftPasskey) -> Value {
        let started = self.call(
            "POST",
            "/api/v1/me/passkeys/register/start",
            None,
            Some(token),
        );
        assert_eq!(started.status, 200, "{}", started.body);
        let options: CreationChallengeResponse = serde_json::from_str(&started.body)
            .unwrap_or_else(|error| panic!("{error}: {}", started.body));
        let credential = authenticator
            .do_registration(url(ORIGIN), options)
            .unwrap_or_else(|error| panic!("soft passkey registration: {error:?}"));
        serde_json::to_value(&credential).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts an assertion on the session and lets the authenticator answer it at `origin`.
    fn assertion(&self, token: &str, authenticator: &mut SoftPasskey, origin: &str) -> Value {
        self.assertion_started_at(
            "/api/v1/sessions/current/passkey/start",
            token,
            authenticator,
            origin,
        )
    }

    /// Starts a passkey approval of a charge confirmation and lets the authenticator answer it.
    fn confirmation_assertion(
        &self,
        token: &str,
        authenticator: &mut SoftPasskey,
        confirmation: &str,
    ) -> Value {
        self.assertion_started_at(
            &format!("/api/v1/charges/confirmations/{confirmation}/passkey/start"),
            token,
            authenticator,
            ORIGIN,
        )
    }

    /// Starts an assertion at `path` and lets the authenticator answer it at `origin`.
    fn assertion_started_at(
        &self,
        path: &str,
        token: &str,
        authenticator: &mut SoftPasskey,
        origin: &str,
    ) -> Value {
        let started = self.call("POST", path, None, Some(token));
        assert_eq!(started.status, 200, "{}", started.body);
        let options: RequestChallengeResponse = serde_json::from_str(&started.body)
            .unwrap_or_else(|error| panic!("{error}: {}", started.body));
        let credential = authenticator
            .do_authentication(url(origin), options)
            .unwrap_or_else(|error| panic!("soft passkey assertion: {error:?}"));
        serde_json::to_value(&credential).unwrap_or_else(|error| panic!("{error}"))
    }

    fn finish_confirmation(
        &self,
        token: &str,
        confirmation: &str,
        credential: &Value,
    ) -> HttpResponse {
        self.call(
            "POST",
            &format!("/api/v1/charges/confirmations/{confirmation}/passkey/finish"),
            Some(json!({ "credential": credential })),
            Some(token),
        )
    }

    fn finish_assertion(&self, token: &str, credential: &Value) -> HttpResponse {
        self.call(
            "POST",
            "/api/v1/sessions/current/passkey/finish",
            Some(json!({ "credential": credential })),
            Some(token),
        )
    }

    fn gate_reasons(&self, token: &str) -> String {
        let gate = self.call("GET", "/api/v1/me/money-gate", None, Some(token));
        assert_eq!(gate.status, 200, "{}", gate.body);
        json_of(&gate)["reasons"].to_string()
    }

    fn passkeys(&self, token: &str) -> Vec<Value> {
        let listed = self.call("GET", "/api/v1/me/passkeys", None, Some(token));
        assert_eq!(listed.status, 200, "{}", listed.body);
        json_of(&listed).as_array().cloned().unwrap_or_default()
    }
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    a_passkey_is_a_second_factor_bound_to_origin_challenge_and_user,
    a_passkey_approves_one_large_charge_only
);

fn a_passkey_is_a_second_factor_bound_to_origin_challenge_and_user(backend: &str) {
    let server = start(backend);
    let alice_email = "alice@example.jp";
    let first = server.signed_in_user(alice_email, "+819011112222");
    let fresh = server.enrol_totp(&first).1;

    // Registration, with the TOTP factor just passed.
    let mut alice_key = SoftPasskey::new(true);
    let registration = server.registration_response(&fresh, &mut alice_key);
    let finish = |credential: &Value| {
        server.call(
            "POST",
            "/api/v1/me/passkeys/register/finish",
            Some(json!({ "credential": credential, "label": "Alice's laptop" })),
            Some(&fresh),
        )
    };
    let registered = finish(&registration);
    assert_eq!(registered.status, 201, "{}", registered.body);
    let alice_passkey = text(&json_of(&registered)["passkey_id"]);
    // The ceremony was used up: the same response cannot register again.
    server.assert_problem(&finish(&registration), 400, "PASSKEY_CEREMONY_NOT_FOUND");
    assert!(
        server.messages_to(alice_email).iter().any(|message| {
            message["purpose"] == "second_factor_added"
                && message["subject"].to_string().contains("Passkey")
        }),
        "the registered address is told"
    );
    assert_eq!(server.passkeys(&fresh).len(), 1);

    // A new sign-in has not passed a second factor: money waits for a step-up, and a second
    // passkey cannot be added from it either.
    let stale = server.token(alice_email);
    assert!(
        server
            .gate_reasons(&stale)
            .contains("SESSION_STEP_UP_REQUIRED")
    );
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/me/passkeys/register/start",
            None,
            Some(&stale),
        ),
        403,
        "SESSION_STEP_UP_REQUIRED",
    );

    // Signed for another origin (a look-alike page): refused, and the session stays as it was.
    let phished = server.assertion(&stale, &mut alice_key, OTHER_ORIGIN);
    server.assert_problem(
        &server.finish_assertion(&stale, &phished),
        401,
        "PASSKEY_ASSERTION_REJECTED",
    );
    assert!(
        server
            .gate_reasons(&stale)
            .contains("SESSION_STEP_UP_REQUIRED")
    );

    // Bob, with no second factor yet, may add a passkey without a step-up.
    let bob_email = "bob@example.jp";
    let bob = server.signed_in_user(bob_email, "+819033334444");
    let mut bob_key = SoftPasskey::new(true);
    server.register_passkey(&bob, &mut bob_key, "Bob's phone");

    // Alice's assertion, made for Alice's challenge, presented on Bob's session (which has a
    // challenge of its own): refused. It did not use up Alice's ceremony.
    let alices_answer = server.assertion(&stale, &mut alice_key, ORIGIN);
    let _bobs_challenge = server.assertion(&bob, &mut bob_key, ORIGIN);
    server.assert_problem(
        &server.finish_assertion(&bob, &alices_answer),
        401,
        "PASSKEY_ASSERTION_REJECTED",
    );
    let passed = server.finish_assertion(&stale, &alices_answer);
    assert_eq!(passed.status, 200, "{}", passed.body);
    let stepped_up = text(&json_of(&passed)["token"]);
    assert_eq!(json_of(&passed)["second_factor_required"], false);
    // Privilege change: the old token is dead, the new one may move money as far as the
    // second factor goes.
    server.assert_problem(
        &server.call("GET", "/api/v1/me", None, Some(&stale)),
        401,
        "SESSION_INVALID",
    );
    let reasons = server.gate_reasons(&stepped_up);
    assert!(!reasons.contains("SESSION_STEP_UP_REQUIRED"), "{reasons}");
    assert!(
        !reasons.contains("IDENTITY_SECOND_FACTOR_REQUIRED"),
        "{reasons}"
    );

    // Replays: with no ceremony open, and against a new challenge.
    server.assert_problem(
        &server.finish_assertion(&stepped_up, &alices_answer),
        400,
        "PASSKEY_CEREMONY_NOT_FOUND",
    );
    let _new_challenge = server.assertion(&stepped_up, &mut alice_key, ORIGIN);
    server.assert_problem(
        &server.finish_assertion(&stepped_up, &alices_answer),
        401,
        "PASSKEY_ASSERTION_REJECTED",
    );
    // A fresh answer still works (the stored counter moved on with the first one).
    let again = server.assertion(&stepped_up, &mut alice_key, ORIGIN);
    let passed = server.finish_assertion(&stepped_up, &again);
    assert_eq!(passed.status, 200, "{}", passed.body);
    let current = text(&json_of(&passed)["token"]);
    let listed = server.passkeys(&current);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["passkey_id"], alice_passkey.as_str());
    assert!(listed[0]["last_used_at_ms"].is_i64(), "{listed:?}");

    // Bob cannot delete Alice's passkey (nor learn that it exists); Alice can.
    let path = format!("/api/v1/me/passkeys/{alice_passkey}");
    server.assert_problem(
        &server.call("DELETE", &path, None, Some(&bob)),
        404,
        "PASSKEY_NOT_FOUND",
    );
    server.assert_problem(
        &server.call("DELETE", "/api/v1/me/passkeys/not-an-id", None, Some(&bob)),
        404,
        "PASSKEY_NOT_FOUND",
    );
    assert_eq!(server.passkeys(&current).len(), 1);
    let removed = server.call("DELETE", &path, None, Some(&current));
    assert_eq!(removed.status, 204, "{}", removed.body);
    assert!(server.passkeys(&current).is_empty());
    server.assert_problem(
        &server.call(
            "POST",
            "/api/v1/sessions/current/passkey/start",
            None,
            Some(&current),
        ),
        403,
        "PASSKEY_NONE_REGISTERED",
    );
    assert!(
        server
            .messages_to(alice_email)
            .iter()
            .any(|message| message["purpose"] == "second_factor_removed")
    );

    // Every step is in the audit chain, which verifies.
    server.assert_audit_chain_intact();
}

/// Dynamic linking with a passkey (THREATS 13): the assertion answers a challenge kept with
/// one confirmation (its amount and payee); presented for another confirmation, or again, it
/// passes nothing, and a charge spends only the confirmation that was passed, once.
fn a_passkey_approves_one_large_charge_only(backend: &str) {
    let pair = bank_support::start_with(
        backend,
        &[
            ("KINKO_RP_ID", RP_ID),
            ("KINKO_RP_ORIGIN", ORIGIN),
            ("KINKO_CHARGE_CONFIRM_ABOVE_YEN", "5000"),
        ],
    );
    let kinko = &pair.kinko;
    let admin_token = kinko.operator_token(&pair.admin, 0);
    let (token, link_id) = bank_support::linked(&pair, &admin_token, 0);
    let mut authenticator = SoftPasskey::new(true);
    kinko.register_passkey(&token, &mut authenticator, "phone");
    let confirmation_of = |amount: i64| {
        let started = kinko.call(
            "POST",
            "/api/v1/charges/confirmations",
            Some(json!({ "link_id": link_id, "amount_yen": amount })),
            Some(&token),
        );
        assert_eq!(started.status, 201, "{}", started.body);
        text(&json_of(&started)["id"])
    };
    let charge_with = |key: &str, amount: i64, confirmation: &str| {
        bank_support::charge_confirmed(kinko, &token, key, &link_id, amount, Some(confirmation))
    };
    let small = confirmation_of(6_000);
    let large = confirmation_of(9_000);

    // An assertion made for the ¥6,000 confirmation does not pass the ¥9,000 one.
    let for_small = kinko.confirmation_assertion(&token, &mut authenticator, &small);
    kinko.assert_problem(
        &kinko.finish_confirmation(&token, &large, &for_small),
        403,
        "MONEY_CONFIRMATION_CODE_INVALID",
    );
    kinko.assert_problem(
        &charge_with("large", 9_000, &large),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    // Its own assertion passes it; the same assertion again passes nothing more.
    let for_small = kinko.confirmation_assertion(&token, &mut authenticator, &small);
    let passed = kinko.finish_confirmation(&token, &small, &for_small);
    assert_eq!(passed.status, 200, "{}", passed.body);
    assert_eq!(json_of(&passed)["status"], "confirmed");
    assert!(text(&json_of(&passed)["message"]).contains("¥6,000"));
    kinko.assert_problem(
        &kinko.finish_confirmation(&token, &small, &for_small),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    // Another amount cannot spend it; its own amount can, once.
    kinko.assert_problem(
        &charge_with("other-amount", 6_001, &small),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    let charged = charge_with("small", 6_000, &small);
    assert_eq!(charged.status, 201, "{}", charged.body);
    assert_eq!(json_of(&charged)["status"], "posted", "{}", charged.body);
    kinko.assert_problem(
        &charge_with("small-again", 6_000, &small),
        403,
        "MONEY_CONFIRMATION_INVALID",
    );
    assert_eq!(bank_support::balance(kinko, &token)["balance_yen"], 6_000);
    kinko.assert_books_balance();
}
