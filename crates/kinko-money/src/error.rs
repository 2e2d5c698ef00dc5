//! Every way a money flow can fail, each with a stable code for the API.

use kinko_core::{ErrorCode, ErrorKind};
use kinko_identity::service::IdentityError;

use crate::accounts;

#[derive(Debug, thiserror::Error)]
pub enum MoneyError {
    /// The wallet may not move money now (KYC, second factor, step-up, freeze).
    #[error("the wallet cannot move money now: {0}")]
    Gate(&'static str),
    /// The risk engine reviewed or denied the action; the rule's reason in plain words.
    #[error("{0}")]
    RiskDeclined(String),
    #[error("the amount must be a whole number of yen above zero")]
    AmountInvalid,
    #[error("send an Idempotency-Key header of 1–255 visible ASCII characters")]
    IdempotencyKeyInvalid,
    #[error("this Idempotency-Key was used with another request")]
    IdempotencyKeyReused,
    #[error("no such bank link")]
    LinkNotFound,
    #[error("the bank link is not active")]
    LinkInactive,
    #[error("charging is suspended at this bank")]
    ChargingDisabled,
    #[error("the {0} limit does not allow this amount")]
    LimitExceeded(&'static str),
    #[error("a new link waits before its first charge; try again later")]
    NewLinkWait { retry_after_ms: i64 },
    #[error("money can be withdrawn to a newly linked account only after a wait; try again later")]
    PayoutAccountWait { retry_after_ms: i64 },
    #[error("the bank cannot be reached now")]
    BankUnavailable,
    #[error("the history cursor is not valid")]
    CursorInvalid,
    #[error("a handle is 3–20 letters a–z, digits and _")]
    HandleInvalid,
    #[error("this handle belongs to another wallet")]
    HandleTaken,
    #[error("no wallet has this handle")]
    RecipientNotFound,
    #[error("a wallet cannot send money to itself")]
    RecipientInvalid,
    #[error("the note is at most 100 characters, without control characters")]
    NoteInvalid,
    #[error("the merchant's details are not valid: {0}")]
    MerchantInvalid(String),
    #[error("no such merchant")]
    MerchantNotFound,
    #[error("the merchant does not accept payments now")]
    MerchantInactive,
    #[error("send a merchant API key: Authorization: Bearer kmk_…")]
    MerchantUnauthenticated,
    #[error("the QR code is not valid: {0}")]
    Qr(#[from] kinko_qr::QrError),
    #[error("the payment code is not valid: {0}")]
    PayCode(#[from] kinko_qr::CodeError),
    #[error("this payment code was already used")]
    PayCodeUsed,
    #[error("the amount is above the ceiling the payer set for this code")]
    PayCodeAboveCeiling,
    #[error("this code's payment request is unknown, paid or expired")]
    PaymentRequestUnavailable,
    #[error("the amount in the code is not the amount of the payment request")]
    AmountMismatch,
    #[error("a static code needs the amount the payer typed; a dynamic one carries its own")]
    AmountRequired,
    #[error("the reference is 1–25 letters, digits, - and _")]
    ReferenceInvalid,
    #[error("this merchant already has a payment request with this reference")]
    ReferenceTaken,
    #[error("no such payment")]
    PaymentNotFound,
    #[error("only a posted payment can be refunded")]
    PaymentNotRefundable,
    #[error("the refunds would exceed the payment")]
    RefundExceedsPayment,
    #[error(
        "a charge of this size needs a confirmation with your authenticator: send confirmation_id"
    )]
    ConfirmationRequired,
    #[error(
        "the confirmation is unknown, expired, not passed, used, or for another amount or link"
    )]
    ConfirmationInvalid,
    #[error("the authenticator code or passkey did not pass for this confirmation")]
    ConfirmationCodeInvalid,
    #[error("too many codes tried; try again later")]
    ConfirmationRateLimited { retry_after_ms: i64 },
    #[error("too many handles looked up; try again later")]
    HandleLookupRateLimited { retry_after_ms: i64 },
    #[error("the {0} filter is not valid")]
    FilterInvalid(&'static str),
    #[error("no such credit")]
    CreditNotFound,
    #[error("a credit is decided by a second operator, not the one who proposed it")]
    CreditSecondOperatorRequired,
    #[error("this credit was already decided")]
    CreditAlreadyDecided,
    #[error("no such movement in this wallet's history")]
    MovementNotFound,
    #[error("no such case")]
    CaseNotFound,
    #[error("no such hold")]
    HoldNotFound,
    #[error("this case has no bank debit to make good")]
    CaseHasNoBankDebit,
    #[error("the refunds would exceed what the bank debited")]
    VictimRefundExceedsCharge,
    #[error("a refund of this case is already under way")]
    VictimRefundInFlight,
    #[error("no such refund")]
    VictimRefundNotFound,
    #[error("a refund is approved by a second operator, not the one who proposed it")]
    VictimRefundSecondOperatorRequired,
    #[error("this refund was already decided")]
    VictimRefundAlreadyDecided,
    #[error(transparent)]
    Operator(#[from] kinko_identity::operator::OperatorError),
    #[error("storage failed: {0}")]
    Store(#[from] kinko_ledger::StoreError),
    #[error("an internal step failed: {0}")]
    Internal(String),
}

impl From<IdentityError> for MoneyError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Store(store) => MoneyError::Store(store),
            other => MoneyError::Internal(other.to_string()),
        }
    }
}

impl From<kinko_banking::registry::BankingError> for MoneyError {
    fn from(error: kinko_banking::registry::BankingError) -> Self {
        match error {
            kinko_banking::registry::BankingError::Store(store) => MoneyError::Store(store),
            other => MoneyError::Internal(other.to_string()),
        }
    }
}

impl From<accounts::AccountsError> for MoneyError {
    fn from(error: accounts::AccountsError) -> Self {
        MoneyError::Internal(error.to_string())
    }
}

impl From<kinko_ledger::LedgerError> for MoneyError {
    fn from(error: kinko_ledger::LedgerError) -> Self {
        MoneyError::Internal(error.to_string())
    }
}

impl ErrorCode for MoneyError {
    fn code(&self) -> &'static str {
        match self {
            MoneyError::Gate(reason) => reason,
            MoneyError::RiskDeclined(_) => "MONEY_RISK_DECLINED",
            MoneyError::AmountInvalid => "MONEY_AMOUNT_INVALID",
            MoneyError::IdempotencyKeyInvalid => "IDEMPOTENCY_KEY_INVALID",
            MoneyError::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            MoneyError::LinkNotFound => "BANK_LINK_NOT_FOUND",
            MoneyError::LinkInactive => "BANK_LINK_INACTIVE",
            MoneyError::ChargingDisabled => "BANK_CHARGING_DISABLED",
            MoneyError::LimitExceeded(_) => "MONEY_LIMIT_EXCEEDED",
            MoneyError::NewLinkWait { .. } => "MONEY_NEW_LINK_WAIT",
            MoneyError::PayoutAccountWait { .. } => "MONEY_PAYOUT_ACCOUNT_WAIT",
            MoneyError::BankUnavailable => "BANK_UNAVAILABLE",
            MoneyError::CursorInvalid => "MONEY_CURSOR_INVALID",
            MoneyError::HandleInvalid => "MONEY_HANDLE_INVALID",
            MoneyError::HandleTaken => "MONEY_HANDLE_TAKEN",
            MoneyError::RecipientNotFound => "MONEY_RECIPIENT_NOT_FOUND",
            MoneyError::RecipientInvalid => "MONEY_RECIPIENT_INVALID",
            MoneyError::NoteInvalid => "MONEY_NOTE_INVALID",
            MoneyError::FilterInvalid(_) => "MONEY_FILTER_INVALID",
            MoneyError::MerchantInvalid(_) => "MERCHANT_INVALID",
            MoneyError::ConfirmationRequired => "MONEY_CONFIRMATION_REQUIRED",
            MoneyError::ConfirmationInvalid => "MONEY_CONFIRMATION_INVALID",
            MoneyError::ConfirmationCodeInvalid => "MONEY_CONFIRMATION_CODE_INVALID",
            MoneyError::ConfirmationRateLimited { .. } => "MONEY_CONFIRMATION_RATE_LIMITED",
            MoneyError::HandleLookupRateLimited { .. } => "MONEY_HANDLE_LOOKUP_RATE_LIMITED",
            MoneyError::MerchantNotFound => "MERCHANT_NOT_FOUND",
            MoneyError::MerchantInactive => "MERCHANT_INACTIVE",
            MoneyError::MerchantUnauthenticated => "MERCHANT_UNAUTHENTICATED",
            MoneyError::Qr(error) => error.code(),
            MoneyError::Operator(error) => error.code(),
            MoneyError::PayCode(error) => error.code(),
            MoneyError::PayCodeUsed => "PAY_CODE_USED",
            MoneyError::PayCodeAboveCeiling => "PAY_CODE_ABOVE_CEILING",
            MoneyError::PaymentRequestUnavailable => "PAYMENT_REQUEST_UNAVAILABLE",
            MoneyError::AmountMismatch => "PAYMENT_AMOUNT_MISMATCH",
            MoneyError::AmountRequired => "PAYMENT_AMOUNT_REQUIRED",
            MoneyError::ReferenceInvalid => "PAYMENT_REFERENCE_INVALID",
            MoneyError::ReferenceTaken => "PAYMENT_REFERENCE_TAKEN",
            MoneyError::PaymentNotFound => "PAYMENT_NOT_FOUND",
            MoneyError::PaymentNotRefundable => "PAYMENT_NOT_REFUNDABLE",
            MoneyError::RefundExceedsPayment => "REFUND_EXCEEDS_PAYMENT",
            MoneyError::CreditNotFound => "CREDIT_NOT_FOUND",
            MoneyError::CreditSecondOperatorRequired => "CREDIT_SECOND_OPERATOR_REQUIRED",
            MoneyError::CreditAlreadyDecided => "CREDIT_ALREADY_DECIDED",
            MoneyError::MovementNotFound => "MONEY_MOVEMENT_NOT_FOUND",
            MoneyError::CaseNotFound => "CASE_NOT_FOUND",
            MoneyError::HoldNotFound => "HOLD_NOT_FOUND",
            MoneyError::CaseHasNoBankDebit => "CASE_NO_BANK_DEBIT",
            MoneyError::VictimRefundExceedsCharge => "VICTIM_REFUND_EXCEEDS_CHARGE",
            MoneyError::VictimRefundInFlight => "VICTIM_REFUND_IN_FLIGHT",
            MoneyError::VictimRefundNotFound => "VICTIM_REFUND_NOT_FOUND",
            MoneyError::VictimRefundSecondOperatorRequired => {
                "VICTIM_REFUND_SECOND_OPERATOR_REQUIRED"
            }
            MoneyError::VictimRefundAlreadyDecided => "VICTIM_REFUND_ALREADY_DECIDED",
            MoneyError::Store(_) | MoneyError::Internal(_) => "INTERNAL",
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            MoneyError::Gate(_)
            | MoneyError::RiskDeclined(_)
            | MoneyError::ChargingDisabled
            | MoneyError::LimitExceeded(_)
            | MoneyError::NewLinkWait { .. }
            | MoneyError::PayoutAccountWait { .. } => ErrorKind::Forbidden,
            MoneyError::AmountInvalid
            | MoneyError::IdempotencyKeyInvalid
            | MoneyError::CursorInvalid
            | MoneyError::FilterInvalid(_)
            | MoneyError::HandleInvalid
            | MoneyError::RecipientInvalid
            | MoneyError::NoteInvalid
            | MoneyError::MerchantInvalid(_)
            | MoneyError::Qr(_)
            | MoneyError::PayCode(_)
            | MoneyError::AmountRequired
            | MoneyError::ReferenceInvalid => ErrorKind::InvalidInput,
            MoneyError::MerchantUnauthenticated => ErrorKind::Unauthenticated,
            MoneyError::Operator(error) => error.kind(),
            MoneyError::MerchantNotFound
            | MoneyError::PaymentNotFound
            | MoneyError::CreditNotFound => ErrorKind::NotFound,
            MoneyError::CreditSecondOperatorRequired
            | MoneyError::VictimRefundSecondOperatorRequired => ErrorKind::Forbidden,
            MoneyError::MovementNotFound
            | MoneyError::CaseNotFound
            | MoneyError::HoldNotFound
            | MoneyError::VictimRefundNotFound => ErrorKind::NotFound,
            MoneyError::CaseHasNoBankDebit
            | MoneyError::VictimRefundExceedsCharge
            | MoneyError::VictimRefundInFlight
            | MoneyError::VictimRefundAlreadyDecided => ErrorKind::Conflict,
            MoneyError::CreditAlreadyDecided => ErrorKind::Conflict,
            MoneyError::MerchantInactive
            | MoneyError::ConfirmationRequired
            | MoneyError::ConfirmationInvalid
            | MoneyError::ConfirmationCodeInvalid
            | MoneyError::PayCodeAboveCeiling => ErrorKind::Forbidden,
            MoneyError::ConfirmationRateLimited { .. }
            | MoneyError::HandleLookupRateLimited { .. } => ErrorKind::RateLimited,
            MoneyError::PayCodeUsed
            | MoneyError::ReferenceTaken
            | MoneyError::PaymentRequestUnavailable
            | MoneyError::AmountMismatch
            | MoneyError::PaymentNotRefundable
            | MoneyError::RefundExceedsPayment => ErrorKind::Conflict,
            MoneyError::HandleTaken => ErrorKind::Conflict,
            MoneyError::RecipientNotFound => ErrorKind::NotFound,
            MoneyError::IdempotencyKeyReused | MoneyError::LinkInactive => ErrorKind::Conflict,
            MoneyError::LinkNotFound => ErrorKind::NotFound,
            MoneyError::BankUnavailable => ErrorKind::Unavailable,
            MoneyError::Store(_) | MoneyError::Internal(_) => ErrorKind::Internal,
        }
    }
}
