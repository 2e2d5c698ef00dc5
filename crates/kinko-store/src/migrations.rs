//! Embedded migrations, one set per backend with the same version names.
//!
//! A migration is applied once, in version order, inside a transaction together with its row
//! in `schema_migrations`. `tests::both_backends_have_the_same_migrations` fails when the two
//! sets drift apart.

/// (version, SQL) in order.
pub type Migration = (&'static str, &'static str);

pub const SQLITE: &[Migration] = &[
    (
        "0001_ledger",
        include_str!("../migrations/sqlite/0001_ledger.sql"),
    ),
    (
        "0002_audit",
        include_str!("../migrations/sqlite/0002_audit.sql"),
    ),
    (
        "0003_identity",
        include_str!("../migrations/sqlite/0003_identity.sql"),
    ),
    (
        "0004_passkeys",
        include_str!("../migrations/sqlite/0004_passkeys.sql"),
    ),
    (
        "0005_banking",
        include_str!("../migrations/sqlite/0005_banking.sql"),
    ),
    (
        "0006_bank_links",
        include_str!("../migrations/sqlite/0006_bank_links.sql"),
    ),
    (
        "0007_money",
        include_str!("../migrations/sqlite/0007_money.sql"),
    ),
    (
        "0008_transfers",
        include_str!("../migrations/sqlite/0008_transfers.sql"),
    ),
    (
        "0009_merchants",
        include_str!("../migrations/sqlite/0009_merchants.sql"),
    ),
    (
        "0010_confirmations",
        include_str!("../migrations/sqlite/0010_confirmations.sql"),
    ),
    (
        "0011_passkey_approvals",
        include_str!("../migrations/sqlite/0011_passkey_approvals.sql"),
    ),
    (
        "0012_bank_deadline",
        include_str!("../migrations/sqlite/0012_bank_deadline.sql"),
    ),
    (
        "0013_ledger_failed",
        include_str!("../migrations/sqlite/0013_ledger_failed.sql"),
    ),
    (
        "0014_link_refresh_lease",
        include_str!("../migrations/sqlite/0014_link_refresh_lease.sql"),
    ),
    (
        "0015_account_limits",
        include_str!("../migrations/sqlite/0015_account_limits.sql"),
    ),
    (
        "0016_movement_notices",
        include_str!("../migrations/sqlite/0016_movement_notices.sql"),
    ),
    (
        "0020_contact_notices",
        include_str!("../migrations/sqlite/0020_contact_notices.sql"),
    ),
    (
        "0021_kyc_bindings",
        include_str!("../migrations/sqlite/0021_kyc_bindings.sql"),
    ),
    (
        "0030_risk_decisions",
        include_str!("../migrations/sqlite/0030_risk_decisions.sql"),
    ),
    (
        "0031_risk_indexes",
        include_str!("../migrations/sqlite/0031_risk_indexes.sql"),
    ),
    (
        "0050_credit_approvals",
        include_str!("../migrations/sqlite/0050_credit_approvals.sql"),
    ),
    (
        "0060_pay_code_ceilings",
        include_str!("../migrations/sqlite/0060_pay_code_ceilings.sql"),
    ),
    (
        "0070_cases",
        include_str!("../migrations/sqlite/0070_cases.sql"),
    ),
    (
        "0071_case_work",
        include_str!("../migrations/sqlite/0071_case_work.sql"),
    ),
    (
        "0080_disputes",
        include_str!("../migrations/sqlite/0080_disputes.sql"),
    ),
    (
        "0095_reconciliation_runs",
        include_str!("../migrations/sqlite/0095_reconciliation_runs.sql"),
    ),
];

pub const POSTGRES: &[Migration] = &[
    (
        "0001_ledger",
        include_str!("../migrations/postgres/0001_ledger.sql"),
    ),
    (
        "0002_audit",
        include_str!("../migrations/postgres/0002_audit.sql"),
    ),
    (
        "0003_identity",
        include_str!("../migrations/postgres/0003_identity.sql"),
    ),
    (
        "0004_passkeys",
        include_str!("../migrations/postgres/0004_passkeys.sql"),
    ),
    (
        "0005_banking",
        include_str!("../migrations/postgres/0005_banking.sql"),
    ),
    (
        "0006_bank_links",
        include_str!("../migrations/postgres/0006_bank_links.sql"),
    ),
    (
        "0007_money",
        include_str!("../migrations/postgres/0007_money.sql"),
    ),
    (
        "0008_transfers",
        include_str!("../migrations/postgres/0008_transfers.sql"),
    ),
    (
        "0009_merchants",
        include_str!("../migrations/postgres/0009_merchants.sql"),
    ),
    (
        "0010_confirmations",
        include_str!("../migrations/postgres/0010_confirmations.sql"),
    ),
    (
        "0011_passkey_approvals",
        include_str!("../migrations/postgres/0011_passkey_approvals.sql"),
    ),
    (
        "0012_bank_deadline",
        include_str!("../migrations/postgres/0012_bank_deadline.sql"),
    ),
    (
        "0013_ledger_failed",
        include_str!("../migrations/postgres/0013_ledger_failed.sql"),
    ),
    (
        "0014_link_refresh_lease",
        include_str!("../migrations/postgres/0014_link_refresh_lease.sql"),
    ),
    (
        "0015_account_limits",
        include_str!("../migrations/postgres/0015_account_limits.sql"),
    ),
    (
        "0016_movement_notices",
        include_str!("../migrations/postgres/0016_movement_notices.sql"),
    ),
    (
        "0020_contact_notices",
        include_str!("../migrations/postgres/0020_contact_notices.sql"),
    ),
    (
        "0021_kyc_bindings",
        include_str!("../migrations/postgres/0021_kyc_bindings.sql"),
    ),
    (
        "0030_risk_decisions",
        include_str!("../migrations/postgres/0030_risk_decisions.sql"),
    ),
    (
        "0031_risk_indexes",
        include_str!("../migrations/postgres/0031_risk_indexes.sql"),
    ),
    (
        "0050_credit_approvals",
        include_str!("../migrations/postgres/0050_credit_approvals.sql"),
    ),
    (
        "0060_pay_code_ceilings",
        include_str!("../migrations/postgres/0060_pay_code_ceilings.sql"),
    ),
    (
        "0070_cases",
        include_str!("../migrations/postgres/0070_cases.sql"),
    ),
    (
        "0071_case_work",
        include_str!("../migrations/postgres/0071_case_work.sql"),
    ),
    (
        "0080_disputes",
        include_str!("../migrations/postgres/0080_disputes.sql"),
    ),
    (
        "0095_reconciliation_runs",
        include_str!("../migrations/postgres/0095_reconciliation_runs.sql"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(backend: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .map(|entry| {
                let entry = entry.unwrap_or_else(|error| panic!("{error}"));
                entry
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".sql")
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let sqlite = files_in("sqlite");
        let postgres = files_in("postgres");
        assert_eq!(
            sqlite, postgres,
            "migrations/sqlite and migrations/postgres differ"
        );
        let embedded_sqlite: Vec<&str> = SQLITE.iter().map(|(version, _)| *version).collect();
        let embedded_postgres: Vec<&str> = POSTGRES.iter().map(|(version, _)| *version).collect();
        assert_eq!(
            embedded_sqlite, sqlite,
            "a SQLite migration file is not embedded"
        );
        assert_eq!(
            embedded_postgres, postgres,
            "a PostgreSQL migration file is not embedded"
        );
    }

    #[test]
    fn versions_are_in_order_and_unique() {
        for set in [SQLITE, POSTGRES] {
            let versions: Vec<&str> = set.iter().map(|(version, _)| *version).collect();
            let mut sorted = versions.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(versions, sorted);
        }
    }
}
