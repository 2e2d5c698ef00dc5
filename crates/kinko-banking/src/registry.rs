//! The partner-bank registry and per-bank policies (kill switches and limits).

use kinko_audit::{Actor, AuditEntry};
use kinko_core::{ErrorCode, ErrorKind};
use kinko_identity::operator::{Operator, OperatorError, Permission, require_reason};
use kinko_ledger::StoreError;
use kinko_store::sql::{Row, Tx, Value};

/// A Zengin bank code: exactly four ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct BankCode(String);

impl BankCode {
    pub fn parse(text: &str) -> Result<Self, BankingError> {
        if text.len() == 4 && text.bytes().all(|byte| byte.is_ascii_digit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(BankingError::BankCodeInvalid)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BankCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BankingError {
    #[error("a bank code is four digits")]
    BankCodeInvalid,
    #[error("no partner bank has this code")]
    BankNotFound,
    #[error("the limits are inconsistent: {0}")]
    LimitsInvalid(&'static str),
    #[error("the policy changed meanwhile; read it again")]
    PolicyChanged,
    #[error("the partner-bank list is malformed at line {line}")]
    RegistryMalformed { line: usize },
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ErrorCode for BankingError {
    fn code(&self) -> &'static str {
        match self {
            BankingError::BankCodeInvalid => "BANK_CODE_INVALID",
            BankingError::BankNotFound => "BANK_NOT_FOUND",
            BankingError::LimitsInvalid(_) => "BANK_LIMITS_INVALID",
            BankingError::PolicyChanged => "BANK_POLICY_CHANGED",
            BankingError::RegistryMalformed { .. } => "BANK_REGISTRY_MALFORMED",
            BankingError::Operator(error) => error.code(),
            BankingError::Store(_) => "INTERNAL",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            BankingError::BankCodeInvalid | BankingError::LimitsInvalid(_) => {
                ErrorKind::InvalidInput
            }
            BankingError::BankNotFound => ErrorKind::NotFound,
            BankingError::PolicyChanged => ErrorKind::Conflict,
            BankingError::Operator(error) => error.kind(),
            BankingError::RegistryMalformed { .. } | BankingError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// A partner bank as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartnerBank {
    pub code: BankCode,
    pub name_ja: String,
    /// As the Zengin system spells it (no small kana).
    pub name_kana: String,
    pub name_roma: String,
}

/// The partner banks of the seed case, embedded so the demo and the tests need no files.
pub const SEED_CSV: &str = include_str!("../data/banks.csv");

/// Parses the registry CSV (header `bank_code,name_ja,name_kana_zengin,name_roma,…`).
pub fn parse_registry(csv: &str) -> Result<Vec<PartnerBank>, BankingError> {
    let mut banks = Vec::new();
    for (index, line) in csv.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let malformed = || BankingError::RegistryMalformed { line: index + 1 };
        if fields.len() < 4 {
            return Err(malformed());
        }
        let code = BankCode::parse(fields[0].trim()).map_err(|_| malformed())?;
        let text = |position: usize| -> Result<String, BankingError> {
            let value = fields[position].trim();
            if value.is_empty() {
                Err(malformed())
            } else {
                Ok(value.to_owned())
            }
        };
        banks.push(PartnerBank {
            code,
            name_ja: text(1)?,
            name_kana: text(2)?,
            name_roma: text(3)?,
        });
    }
    Ok(banks)
}

/// One bank's switches and limits, in yen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BankPolicy {
    pub bank_code: BankCode,
    pub linking_enabled: bool,
    pub charging_enabled: bool,
    /// The account-number + PIN method of 2020: off unless a bank insists and an operator
    /// enables it (THREATS.md 9).
    pub legacy_enabled: bool,
    pub charge_max_yen: i64,
    pub daily_max_yen: i64,
    pub monthly_max_yen: i64,
    /// A new link's reduced daily limit, for how long, and the wait before its first charge
    /// (THREATS.md 12: ⟨¥30,000⟩/day for ⟨7⟩ days, ⟨24 h⟩).
    pub new_link_daily_max_yen: i64,
    pub new_link_period_days: i64,
    pub new_link_wait_hours: i64,
    /// Bumped by every change, for optimistic concurrency between two operators.
    pub version: i64,
    pub updated_at_ms: i64,
}

impl BankPolicy {
    /// The defaults a partner bank starts with.
    pub fn default_for(bank_code: BankCode, now_ms: i64) -> Self {
        Self {
            bank_code,
            linking_enabled: true,
            charging_enabled: true,
            legacy_enabled: false,
            charge_max_yen: 100_000,
            daily_max_yen: 200_000,
            monthly_max_yen: 500_000,
            new_link_daily_max_yen: 30_000,
            new_link_period_days: 7,
            new_link_wait_hours: 24,
            version: 1,
            updated_at_ms: now_ms,
        }
    }

    fn validate(&self) -> Result<(), BankingError> {
        let limits = [
            self.charge_max_yen,
            self.daily_max_yen,
            self.monthly_max_yen,
            self.new_link_daily_max_yen,
        ];
        if limits
            .iter()
            .any(|limit| !(0..=100_000_000).contains(limit))
        {
            return Err(BankingError::LimitsInvalid(
                "limits are between ¥0 and ¥100,000,000",
            ));
        }
        if self.charge_max_yen > self.daily_max_yen || self.daily_max_yen > self.monthly_max_yen {
            return Err(BankingError::LimitsInvalid(
                "per charge ≤ per day ≤ per month",
            ));
        }
        if self.new_link_daily_max_yen > self.daily_max_yen {
            return Err(BankingError::LimitsInvalid(
                "a new link's daily limit is at most the daily limit",
            ));
        }
        if !(0..=90).contains(&self.new_link_period_days)
            || !(0..=24 * 30).contains(&self.new_link_wait_hours)
        {
            return Err(BankingError::LimitsInvalid(
                "a new link's period is 0–90 days and its wait 0–720 hours",
            ));
        }
        Ok(())
    }
}

/// What an operator changes; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    pub linking_enabled: Option<bool>,
    pub charging_enabled: Option<bool>,
    pub legacy_enabled: Option<bool>,
    pub charge_max_yen: Option<i64>,
    pub daily_max_yen: Option<i64>,
    pub monthly_max_yen: Option<i64>,
    pub new_link_daily_max_yen: Option<i64>,
    pub new_link_period_days: Option<i64>,
    pub new_link_wait_hours: Option<i64>,
}

impl PolicyChange {
    fn apply(&self, policy: &BankPolicy) -> BankPolicy {
        let mut changed = policy.clone();
        let pick_bool = |new: Option<bool>, old: bool| new.unwrap_or(old);
        let pick = |new: Option<i64>, old: i64| new.unwrap_or(old);
        changed.linking_enabled = pick_bool(self.linking_enabled, policy.linking_enabled);
        changed.charging_enabled = pick_bool(self.charging_enabled, policy.charging_enabled);
        changed.legacy_enabled = pick_bool(self.legacy_enabled, policy.legacy_enabled);
        changed.charge_max_yen = pick(self.charge_max_yen, policy.charge_max_yen);
        changed.daily_max_yen = pick(self.daily_max_yen, policy.daily_max_yen);
        changed.monthly_max_yen = pick(self.monthly_max_yen, policy.monthly_max_yen);
        changed.new_link_daily_max_yen =
            pick(self.new_link_daily_max_yen, policy.new_link_daily_max_yen);
        changed.new_link_period_days = pick(self.new_link_period_days, policy.new_link_period_days);
        changed.new_link_wait_hours = pick(self.new_link_wait_hours, policy.new_link_wait_hours);
        changed
    }
}

const POLICY_COLUMNS: &str = "bank_code, linking_enabled, charging_enabled, legacy_enabled, \
     charge_max_yen, daily_max_yen, monthly_max_yen, new_link_daily_max_yen, \
     new_link_period_days, new_link_wait_hours, version, updated_at";

fn policy_from(row: &Row) -> Result<BankPolicy, BankingError> {
    Ok(BankPolicy {
        bank_code: BankCode::parse(&row.text(0)?)?,
        linking_enabled: row.bool(1)?,
        charging_enabled: row.bool(2)?,
        legacy_enabled: row.bool(3)?,
        charge_max_yen: row.int(4)?,
        daily_max_yen: row.int(5)?,
        monthly_max_yen: row.int(6)?,
        new_link_daily_max_yen: row.int(7)?,
        new_link_period_days: row.int(8)?,
        new_link_wait_hours: row.int(9)?,
        version: row.int(10)?,
        updated_at_ms: row.int(11)?,
    })
}

/// Adds the banks of `csv` that are not registered yet, each with the default policy.
/// Existing banks and their policies are left as they are. Returns how many were added.
pub fn seed(tx: &mut dyn Tx, now_ms: i64, csv: &str) -> Result<u64, BankingError> {
    let mut added = 0;
    for bank in parse_registry(csv)? {
        let inserted = tx.execute(
            "INSERT INTO banking_partner_banks (code, name_ja, name_kana, name_roma, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO NOTHING",
            &[
                bank.code.as_str().into(),
                bank.name_ja.as_str().into(),
                bank.name_kana.as_str().into(),
                bank.name_roma.as_str().into(),
                Value::Int(now_ms),
            ],
        )?;
        if inserted == 1 {
            let policy = BankPolicy::default_for(bank.code.clone(), now_ms);
            write_policy(tx, &policy, true)?;
            added += 1;
        }
    }
    Ok(added)
}

fn policy_values(policy: &BankPolicy) -> Vec<Value> {
    vec![
        policy.bank_code.as_str().into(),
        policy.linking_enabled.into(),
        policy.charging_enabled.into(),
        policy.legacy_enabled.into(),
        Value::Int(policy.charge_max_yen),
        Value::Int(policy.daily_max_yen),
        Value::Int(policy.monthly_max_yen),
        Value::Int(policy.new_link_daily_max_yen),
        Value::Int(policy.new_link_period_days),
        Value::Int(policy.new_link_wait_hours),
        Value::Int(policy.version),
        Value::Int(policy.updated_at_ms),
    ]
}

fn write_policy(tx: &mut dyn Tx, policy: &BankPolicy, insert: bool) -> Result<(), BankingError> {
    let sql = if insert {
        format!(
            "INSERT INTO banking_policies ({POLICY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )
    } else {
        // Only the version read before the change may be replaced: two operators changing
        // one bank at once cannot silently undo each other.
        "UPDATE banking_policies SET linking_enabled = $2, charging_enabled = $3,
            legacy_enabled = $4, charge_max_yen = $5, daily_max_yen = $6, monthly_max_yen = $7,
            new_link_daily_max_yen = $8, new_link_period_days = $9, new_link_wait_hours = $10,
            version = $11, updated_at = $12
         WHERE bank_code = $1 AND version = $11 - 1"
            .to_owned()
    };
    let changed = tx.execute(&sql, &policy_values(policy))?;
    if changed == 1 {
        Ok(())
    } else {
        Err(BankingError::PolicyChanged)
    }
}

pub fn list_banks(tx: &mut dyn Tx) -> Result<Vec<PartnerBank>, BankingError> {
    tx.query(
        "SELECT code, name_ja, name_kana, name_roma FROM banking_partner_banks ORDER BY code",
        &[],
    )?
    .iter()
    .map(|row| {
        Ok(PartnerBank {
            code: BankCode::parse(&row.text(0)?)?,
            name_ja: row.text(1)?,
            name_kana: row.text(2)?,
            name_roma: row.text(3)?,
        })
    })
    .collect()
}

/// The policy in force at this moment: read on every request, so a change applies to the
/// very next one.
pub fn policy(tx: &mut dyn Tx, bank_code: &BankCode) -> Result<BankPolicy, BankingError> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM banking_policies WHERE bank_code = $1");
    let row = tx
        .query_opt(&sql, &[bank_code.as_str().into()])?
        .ok_or(BankingError::BankNotFound)?;
    policy_from(&row)
}

/// Changes a bank's policy: an admin, or that bank's own bank-partner operator, with a
/// stated reason. The audit entry holds who, why, and the settings before and after.
pub fn change_policy(
    tx: &mut dyn Tx,
    now_ms: i64,
    operator: &Operator,
    bank_code: &BankCode,
    change: &PolicyChange,
    reason: &str,
) -> Result<BankPolicy, BankingError> {
    operator.require(Permission::ManageBanks {
        bank_code: bank_code.as_str().to_owned(),
    })?;
    require_reason(reason)?;
    let sql = format!(
        "SELECT {POLICY_COLUMNS} FROM banking_policies WHERE bank_code = $1{}",
        tx.for_update()
    );
    let row = tx
        .query_opt(&sql, &[bank_code.as_str().into()])?
        .ok_or(BankingError::BankNotFound)?;
    let before = policy_from(&row)?;
    let mut after = change.apply(&before);
    after.validate()?;
    after.version = before.version + 1;
    after.updated_at_ms = now_ms;
    write_policy(tx, &after, false)?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::Operator(operator.id.as_u128()),
            action: "bank.policy_changed",
            subject_kind: "bank",
            subject_id: bank_code.as_str(),
            reason: reason.trim(),
            detail: serde_json::json!({ "before": before, "after": after }),
        },
    )?;
    Ok(after)
}

/// An automatic rule (the legacy method's detector) switches the legacy method off at one
/// bank: effective on the next request like an operator's change, audited as the system with
/// the rule as the reason. Answers whether it was on (and is now off).
pub fn switch_off_legacy(
    tx: &mut dyn Tx,
    now_ms: i64,
    bank_code: &BankCode,
    rule: &str,
    detail: serde_json::Value,
) -> Result<bool, BankingError> {
    let sql = format!(
        "SELECT {POLICY_COLUMNS} FROM banking_policies WHERE bank_code = $1{}",
        tx.for_update()
    );
    let row = tx
        .query_opt(&sql, &[bank_code.as_str().into()])?
        .ok_or(BankingError::BankNotFound)?;
    let before = policy_from(&row)?;
    if !before.legacy_enabled {
        return Ok(false);
    }
    let mut after = before.clone();
    after.legacy_enabled = false;
    after.version = before.version + 1;
    after.updated_at_ms = now_ms;
    write_policy(tx, &after, false)?;
    kinko_audit::append(
        tx,
        now_ms,
        &AuditEntry {
            actor: Actor::System,
            action: "bank.legacy_switched_off",
            subject_kind: "bank",
            subject_id: bank_code.as_str(),
            reason: rule,
            detail: serde_json::json!({ "rule": rule, "evidence": detail, "after": after }),
        },
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_lists_the_35_partner_banks() {
        let banks = parse_registry(SEED_CSV).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(banks.len(), 35);
        assert!(
            banks
                .iter()
                .any(|bank| bank.code.as_str() == "9900" && bank.name_ja == "ゆうちょ銀行")
        );
        let mut codes: Vec<&str> = banks.iter().map(|bank| bank.code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 35, "bank codes are unique");
    }

    #[test]
    fn bank_codes_are_four_digits() {
        assert!(BankCode::parse("0001").is_ok());
        for bad in ["1", "00001", "abcd", "０００１", ""] {
            assert!(BankCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_malformed_registry_names_its_line() {
        let csv = "bank_code,name_ja,name_kana_zengin,name_roma\n0001,みずほ銀行,ミズホ,mizuho\nXX,bad,bad,bad\n";
        assert!(matches!(
            parse_registry(csv),
            Err(BankingError::RegistryMalformed { line: 3 })
        ));
    }

    #[test]
    fn limits_must_be_consistent() {
        let policy = BankPolicy::default_for(BankCode("0001".into()), 0);
        assert!(policy.validate().is_ok());
        let cases = [
            PolicyChange {
                charge_max_yen: Some(300_000),
                ..PolicyChange::default()
            },
            PolicyChange {
                daily_max_yen: Some(-1),
                ..PolicyChange::default()
            },
            PolicyChange {
                new_link_daily_max_yen: Some(250_000),
                ..PolicyChange::default()
            },
            PolicyChange {
                new_link_wait_hours: Some(10_000),
                ..PolicyChange::default()
            },
        ];
        for change in cases {
            assert!(change.apply(&policy).validate().is_err(), "{change:?}");
        }
    }
}
