//! Backtest: replay an event log through a rule set and report, per rule, what fired, which
//! outcomes would change, and how precise it is against fraud labels. Pure: the caller reads
//! the log (`kinko risk backtest`).
//!
//! A log line is an [`Event`] as JSON plus, optionally, `"label": "fraud" | "honest"` (known
//! later) and `"outcome"`: what was decided at the time (absent: `allow`). Every event is
//! recorded into the state (it happened); events before `since_s` only warm the state up.

use serde::{Deserialize, Serialize};

use crate::decision::Outcome;
use crate::engine::Engine;
use crate::event::Event;
use crate::rules::RuleSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Fraud,
    Honest,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LogLine {
    #[serde(flatten)]
    pub event: Event,
    #[serde(default)]
    pub label: Option<Label>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

/// Per rule, over the reported events.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RuleReport {
    pub rule_id: String,
    pub shadow: bool,
    /// Events on which the rule fired (whatever its effect).
    pub hits: u64,
    pub hits_fraud: u64,
    pub hits_honest: u64,
    /// Fraud hits over labelled hits; `None` without labelled hits.
    pub precision: Option<f64>,
    /// Events where this rule acted and the decision differs from the recorded outcome.
    pub changed: u64,
    /// Fraud events the rule did not fire on.
    pub missed_fraud: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub rules_version: String,
    pub events: u64,
    pub events_fraud: u64,
    pub events_honest: u64,
    /// Events whose decision differs from the recorded outcome.
    pub changed: u64,
    /// Decisions per outcome, in the order allow, challenge, review, deny.
    pub outcomes: [u64; 4],
    pub rules: Vec<RuleReport>,
}

/// Replays `lines` (in the order given; a log is kept in time order) through `rules`.
pub fn backtest(
    rules: RuleSet,
    lines: impl IntoIterator<Item = LogLine>,
    since_s: u64,
    slots_max: usize,
) -> Report {
    let mut report = Report {
        rules_version: rules.version.clone(),
        rules: rules
            .rules
            .iter()
            .map(|rule| RuleReport {
                rule_id: rule.id.clone(),
                shadow: rule.shadow,
                ..RuleReport::default()
            })
            .collect(),
        ..Report::default()
    };
    let mut engine = Engine::new(rules, slots_max);
    for line in lines {
        if line.event.at_s < since_s {
            engine.observe(&line.event);
            continue;
        }
        let decision = engine.decide(&line.event);
        engine.observe(&line.event);
        report.events += 1;
        match line.label {
            Some(Label::Fraud) => report.events_fraud += 1,
            Some(Label::Honest) => report.events_honest += 1,
            None => {}
        }
        let recorded = line.outcome.unwrap_or(Outcome::Allow);
        let changed = decision.outcome != recorded;
        report.changed += u64::from(changed);
        if let Some(count) = report.outcomes.get_mut(decision.outcome as usize) {
            *count += 1;
        }
        for rule_report in &mut report.rules {
            let firing = decision.fired(&rule_report.rule_id);
            match firing {
                Some(firing) => {
                    rule_report.hits += 1;
                    match line.label {
                        Some(Label::Fraud) => rule_report.hits_fraud += 1,
                        Some(Label::Honest) => rule_report.hits_honest += 1,
                        None => {}
                    }
                    if changed && firing.effect.acts() {
                        rule_report.changed += 1;
                    }
                }
                None if line.label == Some(Label::Fraud) => rule_report.missed_fraud += 1,
                None => {}
            }
        }
    }
    for rule_report in &mut report.rules {
        let labelled = rule_report.hits_fraud + rule_report.hits_honest;
        if labelled > 0 {
            // Counts of events: far below 2^52, exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let precision = rule_report.hits_fraud as f64 / labelled as f64;
            rule_report.precision = Some(precision);
        }
    }
    report
}
