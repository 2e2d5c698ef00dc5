//! The engine: a rule set over a feature state. `decide` scores an event before the flow acts
//! (reading the state, counting the breakers); `observe` records it once it happened.
//!
//! The engine holds no lock and does no I/O: a server keeps it behind a mutex, feeds it the
//! events its flows commit, and applies the decision.

use crate::decision::{Decision, Effect, Firing, Outcome};
use crate::event::Event;
use crate::rules::{FailMode, Rule, RuleSet};
use crate::state::{State, Tracked};

/// Memory bound of the feature state, in slots (one slot ≈ one subject × measure; about 100
/// bytes each with a handful of buckets).
pub const SLOTS_MAX_DEFAULT: usize = 16_000_000;

#[derive(Clone, Copy, Debug, Default)]
struct BreakerCount {
    interval_start_s: u64,
    declines: u32,
}

/// The decline circuit breakers' counts, one per rule of a rule set. An engine keeps its own;
/// a caller that builds an engine per decision (from stored history) keeps one `Breakers` for
/// the process and passes it to [`Engine::decide_with`].
#[derive(Clone, Debug)]
pub struct Breakers {
    rules_version: String,
    counts: Vec<BreakerCount>,
}

impl Breakers {
    pub fn new(rules: &RuleSet) -> Self {
        Self {
            rules_version: rules.version.clone(),
            counts: vec![BreakerCount::default(); rules.rules.len()],
        }
    }

    /// Counts for `rules`: started afresh when the rule set changed.
    fn for_rules(&mut self, rules: &RuleSet) -> &mut [BreakerCount] {
        if self.rules_version != rules.version || self.counts.len() != rules.rules.len() {
            *self = Breakers::new(rules);
        }
        &mut self.counts
    }
}

pub struct Engine {
    rules: RuleSet,
    state: State,
    breakers: Breakers,
}

impl Engine {
    pub fn new(rules: RuleSet, slots_max: usize) -> Self {
        let state = State::new(rules.settings.clone(), tracked(&rules), slots_max);
        let breakers = Breakers::new(&rules);
        Self {
            rules,
            state,
            breakers,
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Swaps in a validated rule set; the feature state stays, the breakers start afresh.
    pub fn replace_rules(&mut self, rules: RuleSet) {
        self.state
            .set_rules(rules.settings.clone(), tracked(&rules));
        self.breakers = Breakers::new(&rules);
        self.rules = rules;
    }

    /// Records an event that happened (whatever was decided about it).
    pub fn observe(&mut self, event: &Event) {
        self.state.observe(event);
    }

    /// Scores an event before it acts.
    pub fn decide(&mut self, event: &Event) -> Decision {
        let breakers = self.breakers.for_rules(&self.rules);
        decide(&self.rules, &self.state, breakers, event)
    }

    /// Scores an event, counting declines in `breakers` rather than the engine's own.
    pub fn decide_with(&self, event: &Event, breakers: &mut Breakers) -> Decision {
        decide(
            &self.rules,
            &self.state,
            breakers.for_rules(&self.rules),
            event,
        )
    }
}

fn decide(
    rules: &RuleSet,
    state: &State,
    breakers: &mut [BreakerCount],
    event: &Event,
) -> Decision {
    let flow = event.kind.flow();
    let fail_mode = rules.fail_mode(flow);
    let mut decision = Decision {
        outcome: Outcome::Allow,
        actions: Vec::new(),
        firings: Vec::new(),
        rules_version: rules.version.clone(),
    };
    for (index, rule) in rules.rules.iter().enumerate() {
        if !rule.applies_to(flow) {
            continue;
        }
        let Some(decided) = evaluate(rule, state, event) else {
            continue;
        };
        let effect = match (decided, fail_mode) {
            (true, _) if rule.shadow => Effect::Shadow,
            (true, _) => Effect::Acted,
            (false, _) if rule.shadow => Effect::Shadow,
            (false, FailMode::Closed) => Effect::UndecidedClosed,
            (false, FailMode::Open) => Effect::UndecidedOpen,
        };
        let effect = match (effect, breakers.get_mut(index)) {
            (Effect::Acted | Effect::UndecidedClosed, Some(breaker)) if rule.outcome.declines() => {
                let interval_start_s = event.at_s - event.at_s % rule.breaker.interval_s;
                if breaker.interval_start_s != interval_start_s {
                    *breaker = BreakerCount {
                        interval_start_s,
                        declines: 0,
                    };
                }
                if breaker.declines >= rule.breaker.max {
                    Effect::BreakerOpen
                } else {
                    breaker.declines += 1;
                    effect
                }
            }
            (effect, _) => effect,
        };
        if effect.acts() {
            decision.outcome = decision.outcome.max(rule.outcome);
            for action in &rule.actions {
                if !decision.actions.contains(action) {
                    decision.actions.push(*action);
                }
            }
        }
        decision.firings.push(Firing {
            rule_id: rule.id.clone(),
            outcome: rule.outcome,
            effect,
            features: feature_values(rule, state, event),
            reason_en: rule.reason_en.clone(),
            reason_ja: rule.reason_ja.clone(),
        });
    }
    decision
}

/// `Some(true)`: fired; `Some(false)`: could not be decided (a feature unknown, no condition
/// false); `None`: did not fire.
fn evaluate(rule: &Rule, state: &State, event: &Event) -> Option<bool> {
    let mut undecided = false;
    let mut read = |feature| state.value(feature, event);
    for condition in &rule.conditions {
        match condition.holds(&mut read) {
            Some(true) => {}
            Some(false) => return None,
            None => undecided = true,
        }
    }
    Some(!undecided)
}

fn feature_values(rule: &Rule, state: &State, event: &Event) -> Vec<(String, Option<i64>)> {
    let mut values: Vec<(String, Option<i64>)> = Vec::new();
    for condition in &rule.conditions {
        for (feature, name) in condition.features() {
            if !values.iter().any(|(known, _)| known == name) {
                values.push((name.to_owned(), state.value(feature, event)));
            }
        }
    }
    values
}

/// What the rules read, so the state records only that.
fn tracked(rules: &RuleSet) -> Tracked {
    let mut tracked = Tracked::none();
    for rule in &rules.rules {
        for condition in &rule.conditions {
            for (feature, _) in condition.features() {
                tracked.add(feature);
            }
        }
    }
    tracked
}
