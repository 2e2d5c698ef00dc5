//! What the bank's protected resources (holder match, debits, credits) share: the refusals
//! they answer with beyond the OAuth ones, and the scope check every one of them runs on the
//! grant a DPoP-bound token gave.

use kinko_ledger::StoreError;

use crate::OAuthError;
use crate::oauth::ResourceGrant;

/// A refusal at a protected resource, each with a stable code.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The token or its proof was refused.
    #[error(transparent)]
    OAuth(OAuthError),
    #[error("the token does not carry the scope `{0}`")]
    ScopeMissing(&'static str),
    #[error("the request is malformed: {0}")]
    RequestInvalid(&'static str),
    #[error("the Idempotency-Key header is missing or not 1-255 visible ASCII characters")]
    IdempotencyKeyInvalid,
    #[error("the Idempotency-Key was already used with another request")]
    IdempotencyKeyReused,
    #[error("no such payment for this client and account")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<OAuthError> for ResourceError {
    fn from(error: OAuthError) -> Self {
        match error {
            OAuthError::Store(store) => ResourceError::Store(store),
            other => ResourceError::OAuth(other),
        }
    }
}

impl ResourceError {
    /// The stable code for logs, tests and the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            ResourceError::OAuth(error) => error.code(),
            ResourceError::ScopeMissing(_) => "BANK_SCOPE_MISSING",
            ResourceError::RequestInvalid(_) => "BANK_REQUEST_INVALID",
            ResourceError::IdempotencyKeyInvalid => "BANK_IDEMPOTENCY_KEY_INVALID",
            ResourceError::IdempotencyKeyReused => "BANK_IDEMPOTENCY_KEY_REUSED",
            ResourceError::NotFound => "BANK_PAYMENT_NOT_FOUND",
            ResourceError::Store(_) => "BANK_STORE_FAILED",
        }
    }

    /// The error name (RFC 6750 §3.1 for scope, RFC 6749 names otherwise).
    pub fn error_name(&self) -> &'static str {
        match self {
            ResourceError::OAuth(error) => error.oauth_error(),
            ResourceError::ScopeMissing(_) => "insufficient_scope",
            ResourceError::RequestInvalid(_) | ResourceError::IdempotencyKeyInvalid => {
                "invalid_request"
            }
            ResourceError::IdempotencyKeyReused => "conflict",
            ResourceError::NotFound => "not_found",
            ResourceError::Store(_) => "server_error",
        }
    }
}

/// Refuses a grant whose token was not issued with `scope` (space-separated, RFC 6749 §3.3).
pub fn require_scope(grant: &ResourceGrant, scope: &'static str) -> Result<(), ResourceError> {
    if grant.scope.split(' ').any(|granted| granted == scope) {
        Ok(())
    } else {
        Err(ResourceError::ScopeMissing(scope))
    }
}
