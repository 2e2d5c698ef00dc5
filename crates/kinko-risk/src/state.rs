//! The engine's feature state: windowed series, distinct sets and remembered moments per
//! subject, in one bounded map. Events are recorded after they happened (`observe`); a decision
//! reads the state as it was before its event (`value`).
//!
//! Bounded: at most `slots_max` slots. When full, slots idle past the 31-day horizon are swept;
//! if it is still full the state is *saturated*: new subjects are not recorded, and a feature of
//! a subject the state does not hold reads as "unknown", so the flow's fail mode decides
//! rather than a silent zero.

use std::collections::HashMap;

use crate::event::{Event, EventKind, Key, LinkMethod};
use crate::features::{FeatureRef, Measure, Member, Moment, NEVER_HOURS, Role, Space, Stat};
use crate::window::{Distinct, HORIZON_S, Series};

/// What the state needs from the rule file to classify events as it records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// A charge through a link younger than this counts as `charge_young`.
    pub young_link_s: u64,
    /// Merchant categories whose payments count as `payment_high_risk`.
    pub high_risk_categories: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum SlotKind {
    Series(Measure),
    Distinct(Measure, Member),
    Moment(Moment),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SlotKey {
    key: u128,
    space: Space,
    kind: SlotKind,
}

#[derive(Clone, Debug)]
enum Slot {
    Series(Series),
    Distinct(Distinct),
    Moment(u64),
}

impl Slot {
    fn newest_s(&self) -> u64 {
        match self {
            Slot::Series(series) => series.newest_s(),
            Slot::Distinct(distinct) => distinct.newest_s(),
            Slot::Moment(at_s) => *at_s,
        }
    }
}

/// The series and distinct sets a rule set reads: only those are recorded, so memory goes to
/// what some rule uses. A rule added later starts counting from its load (a backtest replays
/// the whole log, so it sees full history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracked {
    series: Vec<bool>,
    distinct: Vec<bool>,
    device_first_seen: bool,
}

const MEASURES: usize = 18;
const SPACES: usize = 8;

impl Tracked {
    pub fn none() -> Self {
        Self {
            series: vec![false; SPACES * MEASURES],
            distinct: vec![false; SPACES * MEASURES * 2],
            device_first_seen: false,
        }
    }

    pub fn add(&mut self, feature: FeatureRef) {
        match feature {
            FeatureRef::Window {
                role,
                measure,
                stat,
                ..
            } => {
                let index = role.space() as usize * MEASURES + measure as usize;
                match stat {
                    Stat::Count | Stat::Sum => {
                        if let Some(flag) = self.series.get_mut(index) {
                            *flag = true;
                        }
                    }
                    Stat::Distinct(member) => {
                        if let Some(flag) = self.distinct.get_mut(index * 2 + member as usize) {
                            *flag = true;
                        }
                    }
                }
            }
            FeatureRef::DeviceAgeHours => self.device_first_seen = true,
            _ => {}
        }
    }

    fn series(&self, space: Space, measure: Measure) -> bool {
        self.series
            .get(space as usize * MEASURES + measure as usize)
            .copied()
            .unwrap_or(false)
    }

    fn distinct(&self, space: Space, measure: Measure, member: Member) -> bool {
        self.distinct
            .get((space as usize * MEASURES + measure as usize) * 2 + member as usize)
            .copied()
            .unwrap_or(false)
    }
}

pub struct State {
    slots: HashMap<SlotKey, Slot>,
    tracked: Tracked,
    slots_max: usize,
    saturated: bool,
    settings: Settings,
    last_sweep_s: u64,
}

impl State {
    pub fn new(settings: Settings, tracked: Tracked, slots_max: usize) -> Self {
        Self {
            slots: HashMap::new(),
            tracked,
            slots_max,
            saturated: false,
            settings,
            last_sweep_s: 0,
        }
    }

    pub fn set_rules(&mut self, settings: Settings, tracked: Tracked) {
        self.settings = settings;
        self.tracked = tracked;
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn is_saturated(&self) -> bool {
        self.saturated
    }

    /// Records an event that happened.
    pub fn observe(&mut self, event: &Event) {
        let at_s = event.at_s;
        let user = event.actor.user;
        let mut subjects: Vec<(Space, Key)> = Vec::with_capacity(6);
        subjects.push((Space::User, user));
        if let Some(device) = event.actor.device {
            subjects.push((Space::Device, device));
            if self.tracked.device_first_seen
                && !self
                    .slots
                    .contains_key(&moment_key(Space::Device, device, Moment::FirstSeen))
            {
                self.set_moment(Space::Device, device, Moment::FirstSeen, at_s);
            }
        }
        if let Some(ip) = event.actor.ip {
            subjects.push((Space::Net, Key::network(ip)));
        }
        match &event.kind {
            EventKind::SignIn {
                success,
                new_device,
            } => {
                let measure = if *success {
                    Measure::SignIn
                } else {
                    Measure::SignInFail
                };
                self.record(&subjects, measure, at_s, 0);
                if !*success {
                    for (space, key) in &subjects {
                        self.record_distinct(*space, *key, measure, Member::Users, user, at_s);
                    }
                }
                if *success && *new_device {
                    self.set_moment(Space::User, user, Moment::NewDevice, at_s);
                }
            }
            EventKind::Recovery => {
                self.record(&subjects, Measure::Recovery, at_s, 0);
                self.set_moment(Space::User, user, Moment::Recovery, at_s);
            }
            EventKind::FactorChange => {
                self.record(&subjects, Measure::FactorChange, at_s, 0);
                self.set_moment(Space::User, user, Moment::FactorChange, at_s);
            }
            EventKind::ContactChange => {
                self.record(&subjects, Measure::ContactChange, at_s, 0);
                self.set_moment(Space::User, user, Moment::ContactChange, at_s);
            }
            EventKind::LinkAttempt {
                bank,
                bank_account,
                method,
                success,
                pin,
            } => {
                subjects.push((Space::Bank, *bank));
                subjects.push((Space::BankAccount, *bank_account));
                if let Some(pin) = pin {
                    subjects.push((Space::Pin, *pin));
                }
                self.record(&subjects, Measure::LinkAttempt, at_s, 0);
                self.record_distinct(
                    Space::BankAccount,
                    *bank_account,
                    Measure::LinkAttempt,
                    Member::Users,
                    user,
                    at_s,
                );
                if !*success {
                    self.record(&subjects, Measure::LinkAttemptFail, at_s, 0);
                    for (space, key) in &subjects {
                        self.record_distinct(
                            *space,
                            *key,
                            Measure::LinkAttemptFail,
                            Member::Accounts,
                            *bank_account,
                            at_s,
                        );
                    }
                    if *method == LinkMethod::Legacy {
                        self.record(&subjects, Measure::LegacyFail, at_s, 0);
                        self.record_distinct(
                            Space::Bank,
                            *bank,
                            Measure::LegacyFail,
                            Member::Accounts,
                            *bank_account,
                            at_s,
                        );
                    }
                }
            }
            EventKind::Link {
                bank, bank_account, ..
            } => {
                subjects.push((Space::Bank, *bank));
                subjects.push((Space::BankAccount, *bank_account));
                self.record(&subjects, Measure::Link, at_s, 0);
                self.record_distinct(
                    Space::BankAccount,
                    *bank_account,
                    Measure::Link,
                    Member::Users,
                    user,
                    at_s,
                );
            }
            EventKind::Charge {
                bank,
                bank_account,
                link_created_s,
                amount_minor,
                ..
            } => {
                subjects.push((Space::Bank, *bank));
                subjects.push((Space::BankAccount, *bank_account));
                self.record(&subjects, Measure::Charge, at_s, *amount_minor);
                if at_s.saturating_sub(*link_created_s) < self.settings.young_link_s {
                    self.record(&subjects[..1], Measure::ChargeYoung, at_s, *amount_minor);
                }
                self.record_distinct(
                    Space::BankAccount,
                    *bank_account,
                    Measure::Charge,
                    Member::Users,
                    user,
                    at_s,
                );
            }
            EventKind::Payment {
                merchant,
                category,
                amount_minor,
                ..
            } => {
                subjects.push((Space::Merchant, *merchant));
                self.record(&subjects, Measure::Payment, at_s, *amount_minor);
                if self.is_high_risk(category) {
                    self.record(&subjects, Measure::PaymentHighRisk, at_s, *amount_minor);
                }
            }
            EventKind::P2p {
                receiver,
                amount_minor,
                ..
            } => {
                self.record(&subjects, Measure::P2pOut, at_s, *amount_minor);
                self.record(
                    &[(Space::User, *receiver)],
                    Measure::P2pIn,
                    at_s,
                    *amount_minor,
                );
                self.record(
                    &[(Space::Pair, Key::pair(user, *receiver))],
                    Measure::P2pOut,
                    at_s,
                    *amount_minor,
                );
                let p2p_out = Measure::P2pOut;
                self.record_distinct(Space::User, user, p2p_out, Member::Users, *receiver, at_s);
                let p2p_in = Measure::P2pIn;
                self.record_distinct(Space::User, *receiver, p2p_in, Member::Users, user, at_s);
            }
            EventKind::PayCode { amount_minor, .. } => {
                self.record(&subjects, Measure::PayCode, at_s, *amount_minor);
            }
            EventKind::Withdrawal {
                bank,
                bank_account,
                amount_minor,
                ..
            } => {
                subjects.push((Space::Bank, *bank));
                subjects.push((Space::BankAccount, *bank_account));
                self.record(&subjects, Measure::Withdrawal, at_s, *amount_minor);
            }
            EventKind::Refund {
                merchant,
                amount_minor,
            } => {
                subjects.push((Space::Merchant, *merchant));
                self.record(&subjects, Measure::Refund, at_s, *amount_minor);
            }
        }
    }

    pub fn is_high_risk(&self, category: &str) -> bool {
        self.settings
            .high_risk_categories
            .iter()
            .any(|high_risk| high_risk == category)
    }

    /// The value of a feature for `event`, before it is recorded. `None`: the engine cannot
    /// tell (the event lacks the subject, or the state is saturated and does not hold it).
    pub fn value(&self, feature: FeatureRef, event: &Event) -> Option<i64> {
        let at_s = event.at_s;
        match feature {
            FeatureRef::Amount => event.kind.amount_minor(),
            FeatureRef::Balance => event.kind.balance_minor(),
            FeatureRef::KycLevel(Role::Receiver) => match &event.kind {
                EventKind::P2p {
                    receiver_kyc_level, ..
                } => Some(i64::from(*receiver_kyc_level)),
                _ => None,
            },
            FeatureRef::KycLevel(_) => Some(i64::from(event.actor.kyc_level)),
            FeatureRef::UserAgeHours => Some(hours_between(event.actor.user_created_s, at_s)),
            FeatureRef::LinkAgeHours => match &event.kind {
                EventKind::Charge { link_created_s, .. }
                | EventKind::Withdrawal { link_created_s, .. } => {
                    Some(hours_between(*link_created_s, at_s))
                }
                _ => None,
            },
            FeatureRef::LinkLegacy => match &event.kind {
                EventKind::LinkAttempt { method, .. }
                | EventKind::Link { method, .. }
                | EventKind::Charge { method, .. }
                | EventKind::Withdrawal { method, .. } => {
                    Some(i64::from(*method == LinkMethod::Legacy))
                }
                _ => None,
            },
            FeatureRef::MerchantHighRisk => match &event.kind {
                EventKind::Payment { category, .. } => Some(i64::from(self.is_high_risk(category))),
                _ => None,
            },
            FeatureRef::DeviceAgeHours => {
                let device = event.actor.device?;
                match self
                    .slots
                    .get(&moment_key(Space::Device, device, Moment::FirstSeen))
                {
                    Some(Slot::Moment(first_s)) => Some(hours_between(*first_s, at_s)),
                    _ if self.saturated => None,
                    _ => Some(0),
                }
            }
            FeatureRef::HoursSince(moment) => {
                let user = event.actor.user;
                match self.slots.get(&moment_key(Space::User, user, moment)) {
                    Some(Slot::Moment(last_s)) => Some(hours_between(*last_s, at_s)),
                    _ if self.saturated => None,
                    _ => Some(NEVER_HOURS),
                }
            }
            FeatureRef::Window {
                role,
                measure,
                stat,
                window_s,
            } => {
                let key = role_key(role, event)?;
                let kind = match stat {
                    Stat::Count | Stat::Sum => SlotKind::Series(measure),
                    Stat::Distinct(member) => SlotKind::Distinct(measure, member),
                };
                let slot_key = SlotKey {
                    key: key.as_u128(),
                    space: role.space(),
                    kind,
                };
                match (self.slots.get(&slot_key), stat) {
                    (Some(Slot::Series(series)), Stat::Count) => {
                        Some(series.totals(at_s, window_s).count)
                    }
                    (Some(Slot::Series(series)), Stat::Sum) => {
                        Some(series.totals(at_s, window_s).sum)
                    }
                    (Some(Slot::Distinct(distinct)), Stat::Distinct(_)) => {
                        Some(distinct.count(at_s, window_s))
                    }
                    (Some(_), _) => None,
                    (None, _) if self.saturated => None,
                    (None, _) => Some(0),
                }
            }
        }
    }

    fn record(&mut self, subjects: &[(Space, Key)], measure: Measure, at_s: u64, amount: i64) {
        for (space, key) in subjects {
            if !self.tracked.series(*space, measure) {
                continue;
            }
            let slot_key = SlotKey {
                key: key.as_u128(),
                space: *space,
                kind: SlotKind::Series(measure),
            };
            if let Some(Slot::Series(series)) =
                self.slot(slot_key, at_s, || Slot::Series(Series::default()))
            {
                series.add(at_s, amount);
            }
        }
    }

    fn record_distinct(
        &mut self,
        space: Space,
        key: Key,
        measure: Measure,
        member: Member,
        who: Key,
        at_s: u64,
    ) {
        if !self.tracked.distinct(space, measure, member) {
            return;
        }
        let slot_key = SlotKey {
            key: key.as_u128(),
            space,
            kind: SlotKind::Distinct(measure, member),
        };
        if let Some(Slot::Distinct(distinct)) =
            self.slot(slot_key, at_s, || Slot::Distinct(Distinct::default()))
        {
            distinct.add(who.as_u128(), at_s);
        }
    }

    fn set_moment(&mut self, space: Space, key: Key, moment: Moment, at_s: u64) {
        let slot_key = moment_key(space, key, moment);
        if let Some(Slot::Moment(last_s)) = self.slot(slot_key, at_s, || Slot::Moment(at_s)) {
            *last_s = (*last_s).max(at_s);
        }
    }

    /// The slot for `slot_key`, made if there is room (sweeping idle slots once per hour of
    /// event time when full).
    fn slot(
        &mut self,
        slot_key: SlotKey,
        at_s: u64,
        make: impl FnOnce() -> Slot,
    ) -> Option<&mut Slot> {
        if self.slots.len() >= self.slots_max && !self.slots.contains_key(&slot_key) {
            if at_s.saturating_sub(self.last_sweep_s) >= 3_600 {
                self.last_sweep_s = at_s;
                let horizon_s = at_s.saturating_sub(HORIZON_S);
                self.slots.retain(|_, slot| slot.newest_s() >= horizon_s);
            }
            self.saturated = self.slots.len() >= self.slots_max;
            if self.saturated {
                return None;
            }
        }
        Some(self.slots.entry(slot_key).or_insert_with(make))
    }
}

fn moment_key(space: Space, key: Key, moment: Moment) -> SlotKey {
    SlotKey {
        key: key.as_u128(),
        space,
        kind: SlotKind::Moment(moment),
    }
}

fn hours_between(from_s: u64, to_s: u64) -> i64 {
    i64::try_from(to_s.saturating_sub(from_s) / 3_600).unwrap_or(i64::MAX)
}

/// The key a role names in this event, if the event has that subject.
pub fn role_key(role: Role, event: &Event) -> Option<Key> {
    let kind = &event.kind;
    match role {
        Role::User => Some(event.actor.user),
        Role::Device => event.actor.device,
        Role::Net => event.actor.ip.map(Key::network),
        Role::Receiver => match kind {
            EventKind::P2p { receiver, .. } => Some(*receiver),
            _ => None,
        },
        Role::Pair => match kind {
            EventKind::P2p { receiver, .. } => Some(Key::pair(event.actor.user, *receiver)),
            _ => None,
        },
        Role::Bank => match kind {
            EventKind::LinkAttempt { bank, .. }
            | EventKind::Link { bank, .. }
            | EventKind::Charge { bank, .. }
            | EventKind::Withdrawal { bank, .. } => Some(*bank),
            _ => None,
        },
        Role::BankAccount => match kind {
            EventKind::LinkAttempt { bank_account, .. }
            | EventKind::Link { bank_account, .. }
            | EventKind::Charge { bank_account, .. }
            | EventKind::Withdrawal { bank_account, .. } => Some(*bank_account),
            _ => None,
        },
        Role::Merchant => match kind {
            EventKind::Payment { merchant, .. } | EventKind::Refund { merchant, .. } => {
                Some(*merchant)
            }
            _ => None,
        },
        Role::Pin => match kind {
            EventKind::LinkAttempt { pin, .. } => *pin,
            _ => None,
        },
    }
}
