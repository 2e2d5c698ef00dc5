//! What the engine answers: an outcome, actions, and for each rule that fired, how it took
//! effect and the feature values that made it fire — for operators — plus plain words for
//! the user (Japanese and English).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Ordered by severity: the decision is the most severe outcome among the rules that act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    /// Step up: a second factor bound to this action (amount and payee).
    Challenge,
    /// Hold the money and open a case.
    Review,
    Deny,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Allow,
        Outcome::Challenge,
        Outcome::Review,
        Outcome::Deny,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Challenge => "challenge",
            Outcome::Review => "review",
            Outcome::Deny => "deny",
        }
    }

    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.name() == name)
    }

    /// Denials and holds: what the circuit breaker caps.
    pub fn declines(self) -> bool {
        matches!(self, Outcome::Review | Outcome::Deny)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Side effects a decision asks the flow to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No money leaves the wallet until an operator releases it.
    FreezeOutgoing,
    /// Money arriving in the wallet is held.
    HoldIncoming,
    /// The legacy PIN method is suspended at the event's bank (operators and the bank alerted).
    SuspendLegacyAtBank,
    /// The source (network, device) is blocked for a while.
    BlockSource,
    /// A case is opened for an operator.
    OpenCase,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::FreezeOutgoing,
        Action::HoldIncoming,
        Action::SuspendLegacyAtBank,
        Action::BlockSource,
        Action::OpenCase,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::FreezeOutgoing => "freeze_outgoing",
            Action::HoldIncoming => "hold_incoming",
            Action::SuspendLegacyAtBank => "suspend_legacy_at_bank",
            Action::BlockSource => "block_source",
            Action::OpenCase => "open_case",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.name() == name)
    }
}

/// How a rule that fired took effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// It acted: its outcome and actions count.
    Acted,
    /// Shadow mode: recorded only.
    Shadow,
    /// Its breaker was open (too many declines this interval): recorded only.
    BreakerOpen,
    /// A feature was unknown and the flow fails closed: it acted as if it fired.
    UndecidedClosed,
    /// A feature was unknown and the flow fails open: recorded only.
    UndecidedOpen,
}

impl Effect {
    pub fn acts(self) -> bool {
        matches!(self, Effect::Acted | Effect::UndecidedClosed)
    }
}

/// One rule that fired (or could not be decided).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Firing {
    pub rule_id: String,
    pub outcome: Outcome,
    pub effect: Effect,
    /// Each feature the rule read, with its value (`None`: unknown).
    pub features: Vec<(String, Option<i64>)>,
    #[serde(skip)]
    pub reason_en: String,
    #[serde(skip)]
    pub reason_ja: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Japanese,
    English,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub outcome: Outcome,
    pub actions: Vec<Action>,
    pub firings: Vec<Firing>,
    pub rules_version: String,
}

impl Decision {
    /// What the user is told, in plain words: the reasons of the rules that acted, or nothing
    /// when the action is allowed.
    pub fn user_reason(&self, language: Language) -> Option<String> {
        let reasons: Vec<&str> = self
            .firings
            .iter()
            .filter(|firing| firing.effect.acts() && firing.outcome != Outcome::Allow)
            .map(|firing| match language {
                Language::Japanese => firing.reason_ja.as_str(),
                Language::English => firing.reason_en.as_str(),
            })
            .collect();
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join(match language {
                Language::Japanese => "",
                Language::English => " ",
            }))
        }
    }

    /// The rules that acted.
    pub fn acting_rules(&self) -> impl Iterator<Item = &Firing> {
        self.firings.iter().filter(|firing| firing.effect.acts())
    }

    pub fn fired(&self, rule_id: &str) -> Option<&Firing> {
        self.firings.iter().find(|firing| firing.rule_id == rule_id)
    }
}
