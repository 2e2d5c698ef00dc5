//! The sandbox bank: a stand-in for the partner banks in development, tests, the demo and the
//! drill. It keeps its own store (customers, accounts, notices, OAuth state) apart from
//! Kinko's, hosts any number of bank codes, and runs an OAuth 2.0 authorization server in the
//! FAPI 2.0 shape (DESIGN §6): pushed authorization requests (RFC 9126), PKCE S256,
//! single-use codes valid ≤ 60 s, `private_key_jwt` client authentication (RFC 7523) and
//! DPoP-bound access tokens (RFC 9449); and the account resources those tokens open: holder
//! match, debits and credits under an Idempotency-Key, and the fenced-in legacy verify
//! method with the bank's own per-account lock; links with refresh-token rotation and
//! revocation, signed webhooks to clients, and the customer's own pages (login, consent,
//! links, debits, reports). It is also the reference a real bank implements
//! (`docs/BANK-PROTOCOL.md`).

pub mod client_auth;
pub mod customer;
pub mod dpop;
mod drill;
pub mod holder;
pub mod http;
pub mod legacy;
pub mod links;
pub mod oauth;
pub mod pages;
pub mod payments;
pub mod pkce;
pub mod resource;
pub mod statement;
pub mod store;
pub mod webhooks;

pub use kinko_banking::protocol::{jws, random};
pub use oauth::{Bank, OAuthError};
