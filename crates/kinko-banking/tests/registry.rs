//! The partner-bank registry on both stores: seeding is idempotent, defaults keep the legacy
//! PIN method off, each bank's switches change only by an admin or that bank's own partner
//! operator with a reason, a change is audited with before and after, and applies at once.

use kinko_banking::registry::{self, BankCode, BankingError, PolicyChange, SEED_CSV};
use kinko_core::ErrorCode;
use kinko_identity::operator::{Operator, OperatorId, Role};
use kinko_store::sql::{Database, Tx};

fn database(backend: &str) -> (Database, kinko_store::testing::Scratch) {
    kinko_store::testing::database(backend)
}

fn operator(role: Role) -> Operator {
    Operator {
        id: OperatorId::from_u128(0x0192_0000_0000_7000_8000_0000_0000_0abc)
            .unwrap_or_else(|error| panic!("{error}")),
        email: "operator@kinko.example".into(),
        role,
        created_at_ms: 0,
        disabled_at_ms: None,
    }
}

fn code(text: &str) -> BankCode {
    BankCode::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    seeding_is_idempotent_and_safe_by_default,
    switches_belong_to_the_bank_and_are_audited
);

fn seeding_is_idempotent_and_safe_by_default(backend: &str) {
    let (database, _dir) = database(backend);
    let added = database
        .transaction(|tx: &mut dyn Tx| registry::seed(tx, 1_000, SEED_CSV))
        .unwrap_or_else(|error: BankingError| panic!("{error}"));
    assert_eq!(added, 35);
    let again = database
        .transaction(|tx: &mut dyn Tx| registry::seed(tx, 2_000, SEED_CSV))
        .unwrap_or_else(|error: BankingError| panic!("{error}"));
    assert_eq!(again, 0);
    let (banks, policy) = database
        .transaction(|tx: &mut dyn Tx| {
            Ok::<_, BankingError>((
                registry::list_banks(tx)?,
                registry::policy(tx, &code("9900"))?,
            ))
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(banks.len(), 35);
    assert!(policy.linking_enabled && policy.charging_enabled);
    assert!(
        !policy.legacy_enabled,
        "the legacy PIN method is off by default"
    );
    assert_eq!(
        (
            policy.new_link_daily_max_yen,
            policy.new_link_period_days,
            policy.new_link_wait_hours
        ),
        (30_000, 7, 24)
    );
    let missing = database.transaction(|tx: &mut dyn Tx| registry::policy(tx, &code("1234")));
    assert_eq!(
        missing.map_err(|error| error.code()).err(),
        Some("BANK_NOT_FOUND")
    );
}

fn switches_belong_to_the_bank_and_are_audited(backend: &str) {
    let (database, _dir) = database(backend);
    database
        .transaction(|tx: &mut dyn Tx| registry::seed(tx, 1_000, SEED_CSV))
        .unwrap_or_else(|error: BankingError| panic!("{error}"));
    let switch_off = PolicyChange {
        linking_enabled: Some(false),
        charging_enabled: Some(false),
        ..PolicyChange::default()
    };
    let reason = "fraud reports from customers this morning";
    let partner = operator(Role::BankPartner {
        bank_code: "0040".into(),
    });

    // The bank's own operator switches its linking and charging off in one request.
    let changed = database
        .transaction(|tx: &mut dyn Tx| {
            registry::change_policy(tx, 5_000, &partner, &code("0040"), &switch_off, reason)
        })
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!changed.linking_enabled && !changed.charging_enabled);
    assert_eq!(changed.version, 2);
    let read_back = database
        .transaction(|tx: &mut dyn Tx| registry::policy(tx, &code("0040")))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(read_back, changed, "the next request sees the change");

    // …but not another bank's, and never without a reason; support staff cannot at all.
    let refusals = [
        (
            operator(Role::BankPartner {
                bank_code: "0040".into(),
            }),
            "0001",
            reason,
            "OPERATOR_FORBIDDEN",
        ),
        (
            operator(Role::Support),
            "0040",
            reason,
            "OPERATOR_FORBIDDEN",
        ),
        (
            operator(Role::Admin),
            "0040",
            "because",
            "OPERATOR_REASON_REQUIRED",
        ),
    ];
    for (who, bank, why, expected) in refusals {
        let outcome = database.transaction(|tx: &mut dyn Tx| {
            registry::change_policy(tx, 6_000, &who, &code(bank), &switch_off, why)
        });
        assert_eq!(
            outcome.map_err(|error| error.code()).err(),
            Some(expected),
            "{bank}"
        );
    }
    let untouched = database
        .transaction(|tx: &mut dyn Tx| registry::policy(tx, &code("0001")))
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(untouched.linking_enabled && untouched.version == 1);

    // Inconsistent limits are refused and change nothing.
    let bad = PolicyChange {
        charge_max_yen: Some(999_999_999),
        ..PolicyChange::default()
    };
    let outcome = database.transaction(|tx: &mut dyn Tx| {
        registry::change_policy(
            tx,
            7_000,
            &operator(Role::Admin),
            &code("0001"),
            &bad,
            reason,
        )
    });
    assert_eq!(
        outcome.map_err(|error| error.code()).err(),
        Some("BANK_LIMITS_INVALID")
    );

    // The change is in the audit log with who, why, before and after, and the chain holds.
    let entries = database
        .transaction(|tx: &mut dyn Tx| kinko_audit::entries_after(tx, 0, 100))
        .unwrap_or_else(|error| panic!("{error}"));
    let entry = entries
        .iter()
        .find(|entry| entry.action == "bank.policy_changed")
        .unwrap_or_else(|| panic!("no audit entry"));
    assert_eq!(entry.subject_id, "0040");
    assert_eq!(entry.reason, reason);
    assert!(
        entry.detail.contains("\"linking_enabled\":true")
            && entry.detail.contains("\"linking_enabled\":false"),
        "{}",
        entry.detail
    );
    assert_eq!(
        entries
            .iter()
            .filter(|entry| entry.action == "bank.policy_changed")
            .count(),
        1,
        "refused changes leave no entry"
    );
    let report = kinko_audit::verify(&database).unwrap_or_else(|error| panic!("{error}"));
    assert!(report.is_intact());
}
