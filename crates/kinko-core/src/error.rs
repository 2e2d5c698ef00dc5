//! Error kinds and stable error codes.
//!
//! Every expected failure in Kinko has a code such as `LEDGER_EXCEEDS_CREDITS`. Codes are part
//! of the public contract (API clients and operators match on them), so they never change once
//! released; the kind decides the HTTP status family.

/// What sort of failure an error is; the web layer maps kinds to HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (400/422).
    InvalidInput,
    /// The named object does not exist, or the caller may not know that it does (404).
    NotFound,
    /// No valid credentials or session (401).
    Unauthenticated,
    /// Authenticated, but not allowed to do this now, e.g. a fresh second factor is needed (403).
    Forbidden,
    /// Too many attempts from this source or on this account; retry later (429).
    RateLimited,
    /// The request conflicts with the current state (409).
    Conflict,
    /// The service is overloaded or a dependency is down; retry later (503).
    Unavailable,
    /// A bug or a broken invariant; the details go to the log, never to the client (500).
    Internal,
}

/// An error with a stable, documented, SCREAMING_SNAKE_CASE code.
pub trait ErrorCode {
    fn code(&self) -> &'static str;
    fn kind(&self) -> ErrorKind;
}
