//! Feature names as a rule file writes them, parsed once into [`FeatureRef`]s.
//!
//! - `amount`, `balance` — the event's amount and the wallet's balance before it (yen).
//! - `user.kyc_level`, `receiver.kyc_level`, `user.age_hours`, `link.age_hours`,
//!   `device.age_hours` (since the engine first saw it), `link.legacy` (1 for the PIN method),
//!   `merchant.high_risk` (1 for a category in `settings.high_risk_categories`).
//! - `user.hours_since_<contact_change|factor_change|recovery|new_device>` — 1,000,000 if never.
//! - `<role>.<measure>.<stat>_<window>`: windowed history *before* this event, e.g.
//!   `user.p2p_out.sum_24h`, `receiver.p2p_in.distinct_users_24h`,
//!   `net.link_attempt_fail.distinct_accounts_10m`. Windows: `<n>m`, `<n>h`, `<n>d`, ≤ 31 days.

use crate::event::Flow;
use crate::window::HORIZON_S;

/// "Never happened", in hours: larger than any threshold.
pub const NEVER_HOURS: i64 = 1_000_000;

/// What kind of subject a key names; part of the storage key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    User,
    Device,
    Net,
    Bank,
    BankAccount,
    Merchant,
    Pair,
    Pin,
}

/// How a rule names a subject of the event. `receiver` is a user (the same history as when
/// that user acts); `pair` is sender → receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Receiver,
    Pair,
    Device,
    Net,
    Bank,
    BankAccount,
    Merchant,
    Pin,
}

impl Role {
    const NAMES: [(&'static str, Role); 9] = [
        ("user", Role::User),
        ("receiver", Role::Receiver),
        ("pair", Role::Pair),
        ("device", Role::Device),
        ("net", Role::Net),
        ("bank", Role::Bank),
        ("bank_account", Role::BankAccount),
        ("merchant", Role::Merchant),
        ("pin", Role::Pin),
    ];

    pub fn space(self) -> Space {
        match self {
            Role::User | Role::Receiver => Space::User,
            Role::Pair => Space::Pair,
            Role::Device => Space::Device,
            Role::Net => Space::Net,
            Role::Bank => Space::Bank,
            Role::BankAccount => Space::BankAccount,
            Role::Merchant => Space::Merchant,
            Role::Pin => Space::Pin,
        }
    }

    /// Whether events of `flow` name this subject at all (a rule file is checked against it).
    pub fn defined_for(self, flow: Flow) -> bool {
        match self {
            Role::User | Role::Device | Role::Net => true,
            Role::Receiver | Role::Pair => flow == Flow::P2p,
            Role::Bank | Role::BankAccount => matches!(
                flow,
                Flow::LinkAttempt | Flow::Link | Flow::Charge | Flow::Withdrawal
            ),
            Role::Merchant => matches!(flow, Flow::Payment | Flow::Refund),
            Role::Pin => flow == Flow::LinkAttempt,
        }
    }
}

/// What is counted. Each event records into the measures of its kind (`state.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    SignIn,
    SignInFail,
    Recovery,
    FactorChange,
    ContactChange,
    LinkAttempt,
    LinkAttemptFail,
    LegacyFail,
    Link,
    Charge,
    /// Charges through a link younger than `settings.young_link_days`.
    ChargeYoung,
    Payment,
    PaymentHighRisk,
    P2pOut,
    P2pIn,
    PayCode,
    Withdrawal,
    Refund,
}

impl Measure {
    const NAMES: [(&'static str, Measure); 18] = [
        ("sign_in", Measure::SignIn),
        ("sign_in_fail", Measure::SignInFail),
        ("recovery", Measure::Recovery),
        ("factor_change", Measure::FactorChange),
        ("contact_change", Measure::ContactChange),
        ("link_attempt", Measure::LinkAttempt),
        ("link_attempt_fail", Measure::LinkAttemptFail),
        ("legacy_fail", Measure::LegacyFail),
        ("link", Measure::Link),
        ("charge", Measure::Charge),
        ("charge_young", Measure::ChargeYoung),
        ("payment", Measure::Payment),
        ("payment_high_risk", Measure::PaymentHighRisk),
        ("p2p_out", Measure::P2pOut),
        ("p2p_in", Measure::P2pIn),
        ("pay_code", Measure::PayCode),
        ("withdrawal", Measure::Withdrawal),
        ("refund", Measure::Refund),
    ];
}

/// Whom a distinct count counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Member {
    Users,
    Accounts,
}

/// The distinct sets the engine keeps (anything else would cost memory for nothing).
pub const TRACKED_DISTINCT: [(Space, Measure, Member); 12] = [
    (Space::User, Measure::P2pIn, Member::Users),
    (Space::User, Measure::P2pOut, Member::Users),
    (Space::User, Measure::LinkAttemptFail, Member::Accounts),
    (Space::Device, Measure::LinkAttemptFail, Member::Accounts),
    (Space::Net, Measure::LinkAttemptFail, Member::Accounts),
    (Space::Pin, Measure::LinkAttemptFail, Member::Accounts),
    (Space::Bank, Measure::LegacyFail, Member::Accounts),
    (Space::BankAccount, Measure::LinkAttempt, Member::Users),
    (Space::BankAccount, Measure::Link, Member::Users),
    (Space::BankAccount, Measure::Charge, Member::Users),
    (Space::Net, Measure::SignInFail, Member::Users),
    (Space::Device, Measure::SignInFail, Member::Users),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    Count,
    Sum,
    Distinct(Member),
}

/// A moment remembered per user (or per device, for `FirstSeen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Moment {
    ContactChange,
    FactorChange,
    Recovery,
    NewDevice,
    FirstSeen,
}

/// A feature a condition reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureRef {
    Amount,
    Balance,
    KycLevel(Role),
    UserAgeHours,
    LinkAgeHours,
    LinkLegacy,
    DeviceAgeHours,
    MerchantHighRisk,
    HoursSince(Moment),
    Window {
        role: Role,
        measure: Measure,
        stat: Stat,
        window_s: u64,
    },
}

impl FeatureRef {
    /// Parses a feature name; the error says what is wrong in words for the analyst.
    pub fn parse(name: &str) -> Result<FeatureRef, String> {
        let simple = match name {
            "amount" => Some(FeatureRef::Amount),
            "balance" => Some(FeatureRef::Balance),
            "user.kyc_level" => Some(FeatureRef::KycLevel(Role::User)),
            "receiver.kyc_level" => Some(FeatureRef::KycLevel(Role::Receiver)),
            "user.age_hours" => Some(FeatureRef::UserAgeHours),
            "link.age_hours" => Some(FeatureRef::LinkAgeHours),
            "link.legacy" => Some(FeatureRef::LinkLegacy),
            "device.age_hours" => Some(FeatureRef::DeviceAgeHours),
            "merchant.high_risk" => Some(FeatureRef::MerchantHighRisk),
            "user.hours_since_contact_change" => {
                Some(FeatureRef::HoursSince(Moment::ContactChange))
            }
            "user.hours_since_factor_change" => Some(FeatureRef::HoursSince(Moment::FactorChange)),
            "user.hours_since_recovery" => Some(FeatureRef::HoursSince(Moment::Recovery)),
            "user.hours_since_new_device" => Some(FeatureRef::HoursSince(Moment::NewDevice)),
            _ => None,
        };
        if let Some(feature) = simple {
            return Ok(feature);
        }
        let mut parts = name.split('.');
        let (Some(role), Some(measure), Some(stat), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("unknown feature `{name}`"));
        };
        let role = Role::NAMES
            .iter()
            .find(|(text, _)| *text == role)
            .map(|(_, role)| *role)
            .ok_or_else(|| format!("unknown subject `{role}` in `{name}`"))?;
        let measure = Measure::NAMES
            .iter()
            .find(|(text, _)| *text == measure)
            .map(|(_, measure)| *measure)
            .ok_or_else(|| format!("unknown measure `{measure}` in `{name}`"))?;
        let (stat_name, window) = stat
            .rsplit_once('_')
            .ok_or_else(|| format!("`{name}` needs <stat>_<window>, e.g. sum_24h"))?;
        let stat = match stat_name {
            "count" => Stat::Count,
            "sum" => Stat::Sum,
            "distinct_users" => Stat::Distinct(Member::Users),
            "distinct_accounts" => Stat::Distinct(Member::Accounts),
            other => return Err(format!("unknown statistic `{other}` in `{name}`")),
        };
        if let Stat::Distinct(member) = stat
            && !TRACKED_DISTINCT.contains(&(role.space(), measure, member))
        {
            return Err(format!("`{name}`: that distinct count is not kept"));
        }
        let window_s = parse_duration_s(window).map_err(|error| format!("`{name}`: {error}"))?;
        Ok(FeatureRef::Window {
            role,
            measure,
            stat,
            window_s,
        })
    }

    /// The subject the feature needs, if any, to check it against a rule's flows.
    pub fn role(self) -> Option<Role> {
        match self {
            FeatureRef::Amount | FeatureRef::Balance => None,
            FeatureRef::KycLevel(role) => Some(role),
            FeatureRef::UserAgeHours | FeatureRef::HoursSince(_) => Some(Role::User),
            FeatureRef::LinkAgeHours | FeatureRef::LinkLegacy => Some(Role::Bank),
            FeatureRef::DeviceAgeHours => Some(Role::Device),
            FeatureRef::MerchantHighRisk => Some(Role::Merchant),
            FeatureRef::Window { role, .. } => Some(role),
        }
    }

    /// Whether events of `flow` carry this feature.
    pub fn defined_for(self, flow: Flow) -> bool {
        match self {
            FeatureRef::Amount => !matches!(
                flow,
                Flow::SignIn
                    | Flow::Recovery
                    | Flow::FactorChange
                    | Flow::ContactChange
                    | Flow::LinkAttempt
                    | Flow::Link
            ),
            FeatureRef::Balance => matches!(
                flow,
                Flow::Charge | Flow::Payment | Flow::P2p | Flow::PayCode | Flow::Withdrawal
            ),
            FeatureRef::LinkAgeHours => matches!(flow, Flow::Charge | Flow::Withdrawal),
            FeatureRef::LinkLegacy => {
                matches!(
                    flow,
                    Flow::LinkAttempt | Flow::Link | Flow::Charge | Flow::Withdrawal
                )
            }
            FeatureRef::MerchantHighRisk => flow == Flow::Payment,
            other => other.role().is_none_or(|role| role.defined_for(flow)),
        }
    }
}

/// `10m`, `1h`, `24h`, `30d` → seconds; at least a minute, at most 31 days.
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let (digits, unit_s) = if let Some(digits) = text.strip_suffix('m') {
        (digits, 60)
    } else if let Some(digits) = text.strip_suffix('h') {
        (digits, 3_600)
    } else if let Some(digits) = text.strip_suffix('d') {
        (digits, 86_400)
    } else {
        return Err(format!("duration `{text}` needs a unit: m, h or d"));
    };
    let value: u64 = digits.parse().map_err(|_| {
        format!(
            "duration `{text}` is not a whole number of {}",
            &text[digits.len()..]
        )
    })?;
    let seconds = value
        .checked_mul(unit_s)
        .filter(|seconds| (60..=HORIZON_S).contains(seconds))
        .ok_or_else(|| format!("duration `{text}` must be between 1m and 31d"))?;
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_or_say_why_not() {
        assert_eq!(
            FeatureRef::parse("user.p2p_out.sum_24h"),
            Ok(FeatureRef::Window {
                role: Role::User,
                measure: Measure::P2pOut,
                stat: Stat::Sum,
                window_s: 86_400
            })
        );
        assert!(FeatureRef::parse("receiver.p2p_in.distinct_users_24h").is_ok());
        for (bad, says) in [
            ("usr.p2p_out.sum_24h", "unknown subject"),
            ("user.p2p.sum_24h", "unknown measure"),
            ("user.p2p_out.avg_24h", "unknown statistic"),
            ("user.p2p_out.sum_24", "needs a unit"),
            ("user.p2p_out.sum_40d", "between 1m and 31d"),
            ("merchant.payment.distinct_accounts_1h", "not kept"),
            ("balance_now", "unknown feature"),
        ] {
            let error = FeatureRef::parse(bad).err().unwrap_or_default();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
