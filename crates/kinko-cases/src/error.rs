//! Every way case work can fail, each with a stable code.

use kinko_core::{ErrorCode, ErrorKind};
use kinko_identity::operator::OperatorError;
use kinko_ledger::StoreError;

use crate::types::CaseState;

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// No such case, or one this operator may not see (a bank partner asking for another
    /// bank's case gets exactly this).
    #[error("no such case")]
    NotFound,
    #[error("a case cannot go from {from} to {to}")]
    TransitionInvalid {
        from: &'static str,
        to: &'static str,
    },
    #[error("closing a case needs a label: fraud or not_fraud")]
    LabelRequired,
    #[error("only closing a case takes a label")]
    LabelNotAllowed,
    #[error("the case is closed")]
    Closed,
    #[error("the assignee already has {max} open cases; reassign or close some first")]
    AssigneeAtCapacity { max: i64 },
    #[error("cases can be assigned only to an active analyst or admin")]
    AssigneeInvalid,
    #[error("a note is 1 to {max} characters")]
    NoteInvalid { max: usize },
    #[error("a case cannot be linked to itself")]
    LinkToItself,
    #[error("the case concerns no wallet")]
    NoUser,
    #[error("a rule id is 1 to 64 lower-case letters, digits, '-', '_' or '.'")]
    RuleInvalid,
    #[error("a rule is snoozed for 1 to {max} hours")]
    SnoozeInvalid { max: i64 },
    #[error("the filter `{0}` is not valid")]
    FilterInvalid(&'static str),
    #[error("the field `{0}` is not valid")]
    FieldInvalid(&'static str),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CaseError {
    pub(crate) fn transition(from: CaseState, to: CaseState) -> Self {
        CaseError::TransitionInvalid {
            from: from.as_str(),
            to: to.as_str(),
        }
    }
}

impl ErrorCode for CaseError {
    fn code(&self) -> &'static str {
        match self {
            CaseError::NotFound => "CASE_NOT_FOUND",
            CaseError::TransitionInvalid { .. } => "CASE_TRANSITION_INVALID",
            CaseError::LabelRequired => "CASE_LABEL_REQUIRED",
            CaseError::LabelNotAllowed => "CASE_LABEL_NOT_ALLOWED",
            CaseError::Closed => "CASE_CLOSED",
            CaseError::AssigneeAtCapacity { .. } => "CASE_ASSIGNEE_AT_CAPACITY",
            CaseError::AssigneeInvalid => "CASE_ASSIGNEE_INVALID",
            CaseError::NoteInvalid { .. } => "CASE_NOTE_INVALID",
            CaseError::LinkToItself => "CASE_LINK_INVALID",
            CaseError::NoUser => "CASE_HAS_NO_USER",
            CaseError::RuleInvalid => "CASE_RULE_INVALID",
            CaseError::SnoozeInvalid { .. } => "CASE_SNOOZE_INVALID",
            CaseError::FilterInvalid(_) => "CASE_FILTER_INVALID",
            CaseError::FieldInvalid(_) => "CASE_FIELD_INVALID",
            CaseError::Operator(error) => error.code(),
            CaseError::Store(_) => "STORE_FAILED",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            CaseError::NotFound => ErrorKind::NotFound,
            CaseError::TransitionInvalid { .. }
            | CaseError::Closed
            | CaseError::AssigneeAtCapacity { .. }
            | CaseError::NoUser => ErrorKind::Conflict,
            CaseError::LabelRequired
            | CaseError::LabelNotAllowed
            | CaseError::AssigneeInvalid
            | CaseError::NoteInvalid { .. }
            | CaseError::LinkToItself
            | CaseError::RuleInvalid
            | CaseError::SnoozeInvalid { .. }
            | CaseError::FilterInvalid(_)
            | CaseError::FieldInvalid(_) => ErrorKind::InvalidInput,
            CaseError::Operator(error) => error.kind(),
            CaseError::Store(_) => ErrorKind::Internal,
        }
    }
}
