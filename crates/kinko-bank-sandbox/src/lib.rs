//! The sandbox bank: a stand-in for the partner banks in development, tests, the demo and the
//! drill. It keeps its own store (customers, accounts, notices, OAuth state) apart from
//! Kinko's, hosts any number of bank codes, and runs an OAuth 2.0 authorization server in the
//! FAPI 2.0 shape (DESIGN §6): pushed authorization requests (RFC 9126), PKCE S256,
//! single-use codes valid ≤ 60 s, `private_key_jwt` client authentication (RFC 7523) and
//! DPoP-bound access tokens (RFC 9449). It is also the reference a real bank implements.

pub mod client_auth;
pub mod dpop;
pub mod http;
pub mod jws;
pub mod oauth;
pub mod pkce;
pub mod random;
pub mod store;

pub use oauth::{Bank, OAuthError};
