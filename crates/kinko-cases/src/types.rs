//! A case's states, labels and link reasons, each a closed set parsed at the edge.

use serde::Serialize;

/// Where a case stands. `open → investigating → resolved | refunded | rejected`; the last three
/// are closed and final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    Open,
    Investigating,
    /// Closed: handled without money returned (a false alarm cleared, an account fixed).
    Resolved,
    /// Closed: the victim's money was returned.
    Refunded,
    /// Closed: the claim or alert was not upheld.
    Rejected,
}

impl CaseState {
    pub const ALL: [CaseState; 5] = [
        CaseState::Open,
        CaseState::Investigating,
        CaseState::Resolved,
        CaseState::Refunded,
        CaseState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Open => "open",
            CaseState::Investigating => "investigating",
            CaseState::Resolved => "resolved",
            CaseState::Refunded => "refunded",
            CaseState::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    pub fn is_closed(self) -> bool {
        matches!(
            self,
            CaseState::Resolved | CaseState::Refunded | CaseState::Rejected
        )
    }

    /// The only moves allowed: open → investigating, investigating → a closed state.
    pub fn can_become(self, next: CaseState) -> bool {
        match self {
            CaseState::Open => next == CaseState::Investigating,
            CaseState::Investigating => next.is_closed(),
            CaseState::Resolved | CaseState::Refunded | CaseState::Rejected => false,
        }
    }
}

/// What a closed case turned out to be; the risk backtest reads it as ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseLabel {
    Fraud,
    NotFraud,
}

impl CaseLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            CaseLabel::Fraud => "fraud",
            CaseLabel::NotFraud => "not_fraud",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [CaseLabel::Fraud, CaseLabel::NotFraud]
            .into_iter()
            .find(|label| label.as_str() == text)
    }
}

/// Why two cases belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkReason {
    SameDevice,
    SameNetwork,
    SameBankAccount,
    SameIdentity,
    /// Money of one case went on to the wallet of the other.
    MoneyChain,
}

impl LinkReason {
    pub const ALL: [LinkReason; 5] = [
        LinkReason::SameDevice,
        LinkReason::SameNetwork,
        LinkReason::SameBankAccount,
        LinkReason::SameIdentity,
        LinkReason::MoneyChain,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkReason::SameDevice => "same_device",
            LinkReason::SameNetwork => "same_network",
            LinkReason::SameBankAccount => "same_bank_account",
            LinkReason::SameIdentity => "same_identity",
            LinkReason::MoneyChain => "money_chain",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_moves_are_allowed() {
        let allowed: Vec<(CaseState, CaseState)> = CaseState::ALL
            .into_iter()
            .flat_map(|from| CaseState::ALL.into_iter().map(move |to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            [
                (CaseState::Open, CaseState::Investigating),
                (CaseState::Investigating, CaseState::Resolved),
                (CaseState::Investigating, CaseState::Refunded),
                (CaseState::Investigating, CaseState::Rejected),
            ]
        );
    }

    #[test]
    fn names_round_trip() {
        for state in CaseState::ALL {
            assert_eq!(CaseState::parse(state.as_str()), Some(state));
        }
        for reason in LinkReason::ALL {
            assert_eq!(LinkReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(CaseLabel::parse("not_fraud"), Some(CaseLabel::NotFraud));
        assert_eq!(CaseState::parse("closed"), None);
    }
}
