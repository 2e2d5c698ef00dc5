//! The one place that decides whether this process is a sandbox.
//!
//! Every sandbox part — the sandbox eKYC provider, the sandbox notification gateways, the
//! unauthenticated `/api/v1/sandbox/outbox`, open `/metrics`, the seeded partner banks — is
//! switched on by [`Environment::Sandbox`] and by nothing else. `KINKO_ENV` must be set: an
//! unset, empty or unknown value refuses to start rather than guessing (fail closed), so a
//! forgotten variable or `KINKO_ENV=prod` can never turn a production server into a sandbox.
//! `kinko demo` passes [`Environment::Sandbox`] itself; `kinko serve` reads [`from_env`].

use kinko_core::{ErrorCode, ErrorKind};

/// The deployment, as `KINKO_ENV` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Real users: no sandbox part runs, and every setting a real deployment needs is required.
    Production,
    /// Development, tests, the demo: the sandbox parts run; no real user is served.
    Sandbox,
}

impl Environment {
    pub fn is_sandbox(self) -> bool {
        self == Environment::Sandbox
    }
}

/// The variable that decides.
pub const VARIABLE: &str = "KINKO_ENV";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error(
        "KINKO_ENV is not set: set KINKO_ENV=production (with KINKO_NOTIFY=smtp and its \
         KINKO_SMTP_* settings, KINKO_RP_ID and KINKO_RP_ORIGIN, KINKO_SECRET_KEY or \
         KINKO_SECRET_KEY_FILE) or KINKO_ENV=sandbox for development and tests (sandbox eKYC, \
         sandbox notifier and /api/v1/sandbox/outbox; never with real users)"
    )]
    NotSet,
    #[error("KINKO_ENV must be production or sandbox, not {0:?}")]
    Unknown(String),
}

impl ErrorCode for EnvironmentError {
    fn code(&self) -> &'static str {
        match self {
            EnvironmentError::NotSet => "ENVIRONMENT_NOT_SET",
            EnvironmentError::Unknown(_) => "ENVIRONMENT_UNKNOWN",
        }
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Parses a `KINKO_ENV` value: only `production` and `sandbox` (any case, trimmed).
pub fn parse(value: Option<&str>) -> Result<Environment, EnvironmentError> {
    let Some(value) = value else {
        return Err(EnvironmentError::NotSet);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "production" => Ok(Environment::Production),
        "sandbox" => Ok(Environment::Sandbox),
        "" => Err(EnvironmentError::NotSet),
        _ => Err(EnvironmentError::Unknown(value.to_owned())),
    }
}

/// Reads `KINKO_ENV` from the process environment.
pub fn from_env() -> Result<Environment, EnvironmentError> {
    match std::env::var(VARIABLE) {
        Ok(value) => parse(Some(&value)),
        Err(std::env::VarError::NotPresent) => parse(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(EnvironmentError::Unknown("(not UTF-8)".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_sandbox_is_a_sandbox() {
        assert_eq!(parse(Some("sandbox")), Ok(Environment::Sandbox));
        assert_eq!(parse(Some(" Sandbox ")), Ok(Environment::Sandbox));
        assert_eq!(parse(Some("production")), Ok(Environment::Production));
        assert_eq!(parse(Some("PRODUCTION")), Ok(Environment::Production));
        // Unset or empty is not a default: the server refuses to start and says what to set.
        assert_eq!(parse(None), Err(EnvironmentError::NotSet));
        assert_eq!(parse(Some("  ")), Err(EnvironmentError::NotSet));
        // The values that once meant "not production" are refused, not guessed.
        for value in ["prod", "development", "demo", "test", "staging"] {
            assert_eq!(
                parse(Some(value)),
                Err(EnvironmentError::Unknown(value.to_owned())),
                "{value}"
            );
        }
        let message = EnvironmentError::NotSet.to_string();
        assert!(message.contains("KINKO_ENV=production"), "{message}");
        assert!(message.contains("KINKO_ENV=sandbox"), "{message}");
    }
}
