//! Identity: who a user is and how they prove it.
//!
//! Modules (each owns its tables in `migrations/*/0003_identity.sql`):
//! - `password` — argon2id hashing, refusal of common and breached passwords.
//! - `environment` — the one place that decides "sandbox or not" (`KINKO_ENV`).
//! - `codes` — one-time codes sent to a registered e-mail address or phone.
//! - `notify` — the notification outbox; e-mail (SMTP) and SMS gateways; sandbox gateways.
//! - `ratelimit` — limits on every guess and every sign-up, per source.
//! - `secrets` — encryption of secrets at rest (TOTP seeds).
//! - `totp` — TOTP second factor and recovery codes.
//! - `passkey` — WebAuthn passkeys, the other second factor.
//! - `session` — opaque session tokens, devices, freshness for money actions.
//! - `kyc` — eKYC provider trait, the sandbox provider, KYC levels.
//! - `operator` — operator accounts and roles.
//! - `service` — the flows that tie them together: sign-up, login, recovery…

pub mod codes;
pub mod environment;
pub mod kyc;
pub mod notify;
pub mod operator;
pub mod passkey;
pub mod password;
pub mod ratelimit;
pub mod secrets;
pub mod service;
pub mod session;
pub mod totp;
