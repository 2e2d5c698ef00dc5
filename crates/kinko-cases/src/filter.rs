//! The inbox's filters: parsed from the query string's text into typed values, bounded.

use crate::CaseKind;
use crate::error::CaseError;
use crate::service::{PAGE_DEFAULT, PAGE_MAX};
use crate::types::CaseState;

/// Whose cases to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assigned {
    Me,
    Nobody,
    To(uuid::Uuid),
}

/// The inbox's filters, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFilter {
    pub state: Option<CaseState>,
    pub kind: Option<CaseKind>,
    pub assigned: Option<Assigned>,
    /// Only open or investigating cases past their due time.
    pub overdue: bool,
    /// Cases older than this one (the previous page's `next_before`).
    pub before: Option<uuid::Uuid>,
    pub limit: i64,
}

/// The filters as the query string gives them.
#[derive(Debug, Clone, Default)]
pub struct FilterText<'a> {
    pub state: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// `me`, `none`, or an operator id.
    pub assigned: Option<&'a str>,
    pub overdue: Option<bool>,
    pub before: Option<&'a str>,
    pub limit: Option<i64>,
}

impl CaseFilter {
    pub fn parse(text: &FilterText<'_>) -> Result<Self, CaseError> {
        let state = text
            .state
            .map(|state| CaseState::parse(state).ok_or(CaseError::FilterInvalid("state")))
            .transpose()?;
        let kind = text
            .kind
            .map(|kind| CaseKind::parse(kind).ok_or(CaseError::FilterInvalid("kind")))
            .transpose()?;
        let assigned = text
            .assigned
            .map(|assigned| match assigned {
                "me" => Ok(Assigned::Me),
                "none" => Ok(Assigned::Nobody),
                id => uuid::Uuid::parse_str(id)
                    .map(Assigned::To)
                    .map_err(|_| CaseError::FilterInvalid("assigned")),
            })
            .transpose()?;
        let before = text
            .before
            .map(|id| uuid::Uuid::parse_str(id).map_err(|_| CaseError::FilterInvalid("before")))
            .transpose()?;
        let limit = text.limit.unwrap_or(PAGE_DEFAULT);
        if !(1..=PAGE_MAX).contains(&limit) {
            return Err(CaseError::FilterInvalid("limit"));
        }
        Ok(CaseFilter {
            state,
            kind,
            assigned,
            overdue: text.overdue.unwrap_or(false),
            before,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_parsed_and_bounded() {
        let parsed = CaseFilter::parse(&FilterText {
            state: Some("investigating"),
            kind: Some("bank_fraud_report"),
            assigned: Some("me"),
            overdue: Some(true),
            before: None,
            limit: Some(10),
        });
        assert!(
            matches!(&parsed, Ok(filter) if filter.state == Some(CaseState::Investigating)
                && filter.kind == Some(CaseKind::BankFraudReport)
                && filter.assigned == Some(Assigned::Me)
                && filter.overdue && filter.limit == 10),
            "{parsed:?}"
        );
        for (text, field) in [
            (
                FilterText {
                    state: Some("closed"),
                    ..FilterText::default()
                },
                "state",
            ),
            (
                FilterText {
                    limit: Some(PAGE_MAX + 1),
                    ..FilterText::default()
                },
                "limit",
            ),
            (
                FilterText {
                    limit: Some(0),
                    ..FilterText::default()
                },
                "limit",
            ),
            (
                FilterText {
                    assigned: Some("someone"),
                    ..FilterText::default()
                },
                "assigned",
            ),
        ] {
            assert!(
                matches!(CaseFilter::parse(&text), Err(CaseError::FilterInvalid(name)) if name == field),
                "{field}"
            );
        }
    }
}
