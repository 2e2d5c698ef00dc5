//! Operators on both stores: creation writes an audit entry in the same transaction, sign-in
//! needs password and a fresh TOTP code and answers the same for every failure, codes are not
//! accepted twice, failures are bounded per hour, and sessions end on idle, age, sign-out and
//! disabling.

use kinko_audit::StoredEntry;
use kinko_identity::operator::{
    self, CreatedBy, CreatedOperator, LOGIN_FAILURES_PER_HOUR_MAX, LoginAttempt, NewOperator,
    OPERATOR_SESSION_IDLE_MS, OPERATOR_SESSION_LIFETIME_MS, Operator, OperatorError,
    OperatorSession, Permission, Role,
};
use kinko_identity::password::hash_password;
use kinko_identity::secrets::SecretBox;
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Tx, Value};
use secrecy::{ExposeSecret, SecretString};

const T0_MS: i64 = 1_767_225_600_000;
const STEP_MS: i64 = 30_000;
const PASSWORD: &str = "correct horse battery staple";
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn database(backend: &str) -> (Database, kinko_store::testing::Scratch) {
    kinko_store::testing::database(backend)
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    a_created_operator_signs_in_and_is_audited,
    every_sign_in_failure_answers_the_same_and_is_audited,
    a_code_is_accepted_once,
    failures_are_bounded_per_hour,
    sessions_end_on_idle_age_sign_out_and_disabling,
    creation_is_checked_and_rolls_back_with_its_audit_entry,
    only_operator_managers_create_operators,
);

fn secret_box() -> SecretBox {
    SecretBox::from_key_hex(KEY_HEX).unwrap_or_else(|error| panic!("{error}"))
}

fn create(database: &Database, email: &str, role: Role) -> CreatedOperator {
    let password_hash =
        hash_password(&SecretString::from(PASSWORD)).unwrap_or_else(|error| panic!("{error}"));
    database
        .transaction(|tx: &mut dyn Tx| {
            operator::create_operator(
                tx,
                T0_MS,
                CreatedBy::Cli,
                "bootstrap via CLI",
                &NewOperator {
                    email,
                    password_hash: password_hash.clone(),
                    role: role.clone(),
                },
                &secret_box(),
            )
        })
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The code an authenticator app enrolled with `created` shows at `now_ms`.
fn code_at(created: &CreatedOperator, now_ms: i64) -> String {
    let secret =
        totp_rs::Secret::try_from_base32(created.enrolment.secret_base32().expose_secret())
            .unwrap_or_else(|error| panic!("{error}"));
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    totp.generate(u64::try_from(now_ms / 1_000).unwrap_or(0))
        .to_string()
}

fn login(
    database: &Database,
    now_ms: i64,
    email: &str,
    password: &str,
    code: &str,
) -> Result<OperatorSession, OperatorError> {
    operator::operator_login(
        database,
        now_ms,
        &LoginAttempt {
            email,
            password: &SecretString::from(password),
            totp_code: code,
        },
        &secret_box(),
    )
}

fn authenticate(
    database: &Database,
    now_ms: i64,
    token: &SecretString,
) -> Result<Operator, OperatorError> {
    database.transaction(|tx: &mut dyn Tx| operator::authenticate(tx, now_ms, token))
}

fn audit_entries(database: &Database) -> Vec<StoredEntry> {
    database
        .transaction(|tx: &mut dyn Tx| kinko_audit::entries_after(tx, 0, 1_000))
        .unwrap_or_else(|error: StoreError| panic!("{error}"))
}

fn count(database: &Database, sql: &str) -> i64 {
    database
        .transaction(|tx: &mut dyn Tx| tx.query_one(sql, &[]))
        .and_then(|row| row.int(0))
        .unwrap_or_else(|error| panic!("{error}"))
}

fn a_created_operator_signs_in_and_is_audited(backend: &str) {
    let (database, _dir) = database(backend);
    let created = create(&database, " Root@Example.com ", Role::Admin);
    let url = created.enrolment.otpauth_url().expose_secret().to_owned();
    assert!(
        url.starts_with("otpauth://totp/Kinko:root%40example.com?"),
        "{url}"
    );
    assert!(url.contains(created.enrolment.secret_base32().expose_secret()));

    // The secret is stored sealed, not in clear.
    let sealed = database
        .transaction(|tx: &mut dyn Tx| {
            tx.query_one(
                "SELECT totp_secret_encrypted FROM identity_operators WHERE id = $1",
                &[Value::Uuid(created.id.as_u128())],
            )
        })
        .and_then(|row| row.bytes(0))
        .unwrap_or_else(|error| panic!("{error}"));
    let raw = totp_rs::Secret::try_from_base32(created.enrolment.secret_base32().expose_secret())
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        !sealed
            .windows(raw.as_bytes().len())
            .any(|window| window == raw.as_bytes())
    );

    let now_ms = T0_MS + 60_000;
    let session = login(
        &database,
        now_ms,
        "root@example.com",
        PASSWORD,
        &code_at(&created, now_ms),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(session.operator.id, created.id);
    assert_eq!(session.operator.role, Role::Admin);
    assert_eq!(session.expires_at_ms, now_ms + OPERATOR_SESSION_LIFETIME_MS);
    assert!(session.token.expose_secret().starts_with("kinko_o_"));
    let operator = authenticate(&database, now_ms + 1_000, &session.token)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(operator.email, "root@example.com");
    assert!(operator.can(Permission::ManageOperators));
    // Only the token's hash is stored.
    let stored_tokens = count(&database, "SELECT COUNT(*) FROM identity_operator_sessions");
    assert_eq!(stored_tokens, 1);

    let entries = audit_entries(&database);
    let actions: Vec<&str> = entries.iter().map(|entry| entry.action.as_str()).collect();
    assert_eq!(actions, vec!["operator.created", "operator.login"]);
    assert_eq!(entries[0].actor_kind, "system");
    assert_eq!(entries[0].reason, "bootstrap via CLI");
    assert_eq!(entries[0].subject_id, created.id.to_string());
    assert!(
        !entries[0].detail.contains("example.com"),
        "no e-mail in the log"
    );
    assert_eq!(entries[1].actor_kind, "operator");
    assert!(
        kinko_audit::verify(&database)
            .unwrap_or_else(|error| panic!("{error}"))
            .is_intact()
    );
}

fn every_sign_in_failure_answers_the_same_and_is_audited(backend: &str) {
    let (database, _dir) = database(backend);
    let created = create(&database, "analyst@example.com", Role::Analyst);
    let now_ms = T0_MS + 60_000;
    let good_code = code_at(&created, now_ms);
    let wrong_code = if good_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    let attempts = [
        (
            "nobody@example.com",
            PASSWORD,
            good_code.as_str(),
            "unknown_email",
        ),
        (
            "not an address",
            PASSWORD,
            good_code.as_str(),
            "unknown_email",
        ),
        (
            "analyst@example.com",
            "wrong password here",
            good_code.as_str(),
            "password",
        ),
        ("analyst@example.com", PASSWORD, wrong_code, "code"),
        ("analyst@example.com", PASSWORD, "", "code"),
        // A code from ten minutes ago is outside the ±1 step window.
        (
            "analyst@example.com",
            PASSWORD,
            &code_at(&created, now_ms - 10 * 60_000),
            "code",
        ),
    ];
    for (email, password, code, _) in &attempts {
        let outcome = login(&database, now_ms, email, password, code);
        assert!(
            matches!(outcome, Err(OperatorError::LoginFailed)),
            "{email} {password}: {outcome:?}"
        );
    }
    assert_eq!(
        count(&database, "SELECT COUNT(*) FROM identity_operator_sessions"),
        0
    );
    let failures: Vec<StoredEntry> = audit_entries(&database)
        .into_iter()
        .filter(|entry| entry.action == "operator.login_failed")
        .collect();
    assert_eq!(failures.len(), attempts.len());
    for (entry, (_, _, _, cause)) in failures.iter().zip(attempts.iter()) {
        assert!(
            entry.detail.contains(cause),
            "{} should say {cause}",
            entry.detail
        );
        assert!(!entry.detail.contains("example.com"));
    }
    // Codes, passwords and addresses never reach the log.
    for entry in audit_entries(&database) {
        for secret in [PASSWORD, good_code.as_str(), "nobody@example.com"] {
            assert!(
                !format!("{entry:?}").contains(secret),
                "{secret} leaked into {entry:?}"
            );
        }
    }
    // A disabled operator fails the same way, even with everything right.
    database
        .transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE identity_operators SET disabled_at = $1",
                &[Value::Int(now_ms)],
            )
        })
        .unwrap_or_else(|error: StoreError| panic!("{error}"));
    let outcome = login(
        &database,
        now_ms + STEP_MS,
        "analyst@example.com",
        PASSWORD,
        &code_at(&created, now_ms + STEP_MS),
    );
    assert!(
        matches!(outcome, Err(OperatorError::LoginFailed)),
        "{outcome:?}"
    );
}

fn a_code_is_accepted_once(backend: &str) {
    let (database, _dir) = database(backend);
    let created = create(&database, "support@example.com", Role::Support);
    let now_ms = T0_MS + 60_000;
    let code = code_at(&created, now_ms);
    login(&database, now_ms, "support@example.com", PASSWORD, &code)
        .unwrap_or_else(|error| panic!("{error}"));
    // The same code again, in the same step and in the next (where it is still in the window).
    for later_ms in [now_ms + 1_000, now_ms + STEP_MS] {
        let replay = login(&database, later_ms, "support@example.com", PASSWORD, &code);
        assert!(
            matches!(replay, Err(OperatorError::LoginFailed)),
            "{replay:?}"
        );
    }
    // The previous step's code is older than the one used: refused too.
    let older = code_at(&created, now_ms - STEP_MS);
    let outcome = login(
        &database,
        now_ms + 2_000,
        "support@example.com",
        PASSWORD,
        &older,
    );
    assert!(
        matches!(outcome, Err(OperatorError::LoginFailed)),
        "{outcome:?}"
    );
    // The next step's code works.
    let next_ms = now_ms + STEP_MS;
    login(
        &database,
        next_ms,
        "support@example.com",
        PASSWORD,
        &code_at(&created, next_ms),
    )
    .unwrap_or_else(|error| panic!("{error}"));
}

fn failures_are_bounded_per_hour(backend: &str) {
    let (database, _dir) = database(backend);
    let created = create(
        &database,
        "bank@example.com",
        Role::BankPartner {
            bank_code: "0005".into(),
        },
    );
    let start_ms = T0_MS + 60_000;
    for attempt in 0..LOGIN_FAILURES_PER_HOUR_MAX {
        let outcome = login(
            &database,
            start_ms + attempt,
            "bank@example.com",
            "wrong password here",
            "000000",
        );
        assert!(matches!(outcome, Err(OperatorError::LoginFailed)));
    }
    // Everything right, but the hour's failures are spent.
    let locked_ms = start_ms + 5 * 60_000;
    let outcome = login(
        &database,
        locked_ms,
        "bank@example.com",
        PASSWORD,
        &code_at(&created, locked_ms),
    );
    assert!(
        matches!(outcome, Err(OperatorError::LoginFailed)),
        "{outcome:?}"
    );
    let last = audit_entries(&database)
        .pop()
        .unwrap_or_else(|| panic!("no audit entry"));
    assert!(last.detail.contains("locked"), "{}", last.detail);
    // An hour after the window opened, sign-in works again.
    let later_ms = start_ms + 60 * 60_000;
    let session = login(
        &database,
        later_ms,
        "bank@example.com",
        PASSWORD,
        &code_at(&created, later_ms),
    )
    .unwrap_or_else(|error| panic!("{error}"));
    assert!(session.operator.can(Permission::ManageBanks {
        bank_code: "0005".into()
    }));
    assert!(!session.operator.can(Permission::ManageBanks {
        bank_code: "0001".into()
    }));
}

fn sessions_end_on_idle_age_sign_out_and_disabling(backend: &str) {
    let (database, _dir) = database(backend);
    let admin = create(&database, "admin@example.com", Role::Admin);
    let support = create(&database, "support@example.com", Role::Support);
    let sign_in = |created: &CreatedOperator, email: &str, now_ms: i64| {
        login(
            &database,
            now_ms,
            email,
            PASSWORD,
            &code_at(created, now_ms),
        )
        .unwrap_or_else(|error| panic!("{error}"))
    };
    let unauthenticated = |outcome: Result<Operator, OperatorError>| {
        assert!(
            matches!(outcome, Err(OperatorError::Unauthenticated)),
            "{outcome:?}"
        );
    };

    // Idle: used once, then left alone for the idle timeout.
    let t1 = T0_MS + 60_000;
    let idle = sign_in(&support, "support@example.com", t1);
    authenticate(&database, t1 + 60_000, &idle.token).unwrap_or_else(|error| panic!("{error}"));
    unauthenticated(authenticate(
        &database,
        t1 + 60_000 + OPERATOR_SESSION_IDLE_MS,
        &idle.token,
    ));

    // Age: used every ten minutes, it still ends at its absolute lifetime.
    let t2 = t1 + OPERATOR_SESSION_IDLE_MS + 2 * STEP_MS;
    let busy = sign_in(&support, "support@example.com", t2);
    let mut now_ms = t2;
    while now_ms + 10 * 60_000 < t2 + OPERATOR_SESSION_LIFETIME_MS {
        now_ms += 10 * 60_000;
        authenticate(&database, now_ms, &busy.token).unwrap_or_else(|error| panic!("{error}"));
    }
    unauthenticated(authenticate(
        &database,
        t2 + OPERATOR_SESSION_LIFETIME_MS,
        &busy.token,
    ));

    // Sign-out.
    let t3 = t2 + OPERATOR_SESSION_LIFETIME_MS + STEP_MS;
    let signed_out = sign_in(&support, "support@example.com", t3);
    database
        .transaction(|tx: &mut dyn Tx| operator::operator_logout(tx, t3 + 1, &signed_out.token))
        .unwrap_or_else(|error| panic!("{error}"));
    unauthenticated(authenticate(&database, t3 + 2, &signed_out.token));

    // Garbage and unknown tokens.
    unauthenticated(authenticate(
        &database,
        t3,
        &SecretString::from("kinko_o_nope"),
    ));
    unauthenticated(authenticate(
        &database,
        t3,
        &SecretString::from(format!("kinko_o_{}", "A".repeat(43))),
    ));

    // Disabling ends the operator's sessions; a support operator cannot disable anyone, and
    // an admin needs a reason.
    let t4 = t3 + STEP_MS;
    let active = sign_in(&support, "support@example.com", t4);
    let admin_session = sign_in(&admin, "admin@example.com", t4);
    let support_operator = active.operator.clone();
    let refused = database.transaction(|tx: &mut dyn Tx| {
        operator::disable_operator(tx, t4, &support_operator, admin.id, "the reason is long")
    });
    assert!(
        matches!(refused, Err(OperatorError::Forbidden)),
        "{refused:?}"
    );
    let no_reason = database.transaction(|tx: &mut dyn Tx| {
        operator::disable_operator(tx, t4, &admin_session.operator, support.id, "because")
    });
    assert!(
        matches!(no_reason, Err(OperatorError::ReasonRequired)),
        "{no_reason:?}"
    );
    database
        .transaction(|tx: &mut dyn Tx| {
            operator::disable_operator(
                tx,
                t4 + 1,
                &admin_session.operator,
                support.id,
                "left the company (ticket 42)",
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
    unauthenticated(authenticate(&database, t4 + 2, &active.token));
    authenticate(&database, t4 + 2, &admin_session.token).unwrap_or_else(|error| panic!("{error}"));
    let last = audit_entries(&database)
        .pop()
        .unwrap_or_else(|| panic!("no audit entry"));
    assert_eq!(last.action, "operator.disabled");
    assert_eq!(last.reason, "left the company (ticket 42)");
    assert_eq!(last.actor_id, admin.id.to_string());
}

fn creation_is_checked_and_rolls_back_with_its_audit_entry(backend: &str) {
    let (database, _dir) = database(backend);
    create(&database, "root@example.com", Role::Admin);
    let attempt = |email: &str, role: Role| {
        database.transaction(|tx: &mut dyn Tx| {
            operator::create_operator(
                tx,
                T0_MS,
                CreatedBy::Cli,
                "bootstrap via CLI",
                &NewOperator {
                    email,
                    password_hash: "$argon2id$not-used".into(),
                    role: role.clone(),
                },
                &secret_box(),
            )
        })
    };
    let cases: Vec<(&str, Role, &str)> = vec![
        ("ROOT@example.com", Role::Admin, "OPERATOR_EMAIL_TAKEN"),
        ("bad address", Role::Admin, "OPERATOR_INVALID_EMAIL"),
        (
            "bank@example.com",
            Role::BankPartner {
                bank_code: "12".into(),
            },
            "OPERATOR_INVALID_BANK_CODE",
        ),
    ];
    for (email, role, code) in cases {
        let outcome = attempt(email, role);
        assert_eq!(
            outcome
                .as_ref()
                .map(|_| ())
                .map_err(kinko_core::ErrorCode::code),
            Err(code),
            "{email}"
        );
    }
    // A creation whose surrounding transaction fails leaves neither operator nor entry.
    let outcome: Result<(), OperatorError> = database.transaction(|tx: &mut dyn Tx| {
        operator::create_operator(
            tx,
            T0_MS,
            CreatedBy::Cli,
            "bootstrap via CLI",
            &NewOperator {
                email: "ghost@example.com",
                password_hash: "$argon2id$not-used".into(),
                role: Role::Support,
            },
            &secret_box(),
        )?;
        Err(OperatorError::Forbidden)
    });
    assert!(outcome.is_err());
    assert_eq!(
        count(&database, "SELECT COUNT(*) FROM identity_operators"),
        1
    );
    assert_eq!(audit_entries(&database).len(), 1);
}

fn only_operator_managers_create_operators(backend: &str) {
    let (database, _dir) = database(backend);
    let admin = create(&database, "root@example.com", Role::Admin);
    let analyst = create(&database, "analyst@example.com", Role::Analyst);
    let now_ms = T0_MS + 60_000;
    let admin_operator = login(
        &database,
        now_ms,
        "root@example.com",
        PASSWORD,
        &code_at(&admin, now_ms),
    )
    .unwrap_or_else(|error| panic!("{error}"))
    .operator;
    let analyst_operator = login(
        &database,
        now_ms,
        "analyst@example.com",
        PASSWORD,
        &code_at(&analyst, now_ms),
    )
    .unwrap_or_else(|error| panic!("{error}"))
    .operator;
    let by = |creator: &Operator, email: &str, reason: &str| {
        database.transaction(|tx: &mut dyn Tx| {
            operator::create_operator(
                tx,
                now_ms,
                CreatedBy::Operator(creator),
                reason,
                &NewOperator {
                    email,
                    password_hash: "$argon2id$not-used".into(),
                    role: Role::Support,
                },
                &secret_box(),
            )
        })
    };
    let refused = by(
        &analyst_operator,
        "a@example.com",
        "new support hire, ticket 7",
    );
    assert!(
        matches!(refused, Err(OperatorError::Forbidden)),
        "{refused:?}"
    );
    let no_reason = by(&admin_operator, "a@example.com", "");
    assert!(
        matches!(no_reason, Err(OperatorError::ReasonRequired)),
        "{no_reason:?}"
    );
    let created = by(
        &admin_operator,
        "a@example.com",
        "new support hire, ticket 7",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let last = audit_entries(&database)
        .pop()
        .unwrap_or_else(|| panic!("no audit entry"));
    assert_eq!(
        (last.action.as_str(), last.actor_kind.as_str()),
        ("operator.created", "operator")
    );
    assert_eq!(last.actor_id, admin.id.to_string());
    assert_eq!(last.subject_id, created.id.to_string());
    assert_eq!(last.reason, "new support hire, ticket 7");
}
