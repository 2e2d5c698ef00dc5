//! What the sandbox bank's tests share: registering a client (Kinko, or another wallet) with a
//! key of its own. Each test file's store comes from `kinko_store::testing::location`.

#![allow(dead_code)]

use kinko_bank_sandbox::Bank;
use kinko_bank_sandbox::client_auth::Client;
use kinko_bank_sandbox::jws::{self, Jwk};
use p256::ecdsa::SigningKey;

/// Where the bank sends every test client's browsers back.
pub const REDIRECT_URI: &str = "https://kinko.test/bank/callback";

/// A fresh ES256 key for a client.
pub fn client_key() -> SigningKey {
    jws::generate_key().unwrap_or_else(|error| panic!("{error}"))
}

/// Registers `client_id` (shown to customers as `name`) with `key`, redirecting to
/// [`REDIRECT_URI`] and sending webhooks to `webhook_url` if given. Registering again updates.
pub fn register(
    bank: &Bank,
    client_id: &str,
    name: &str,
    key: &SigningKey,
    webhook_url: Option<String>,
) {
    bank.register_client(&Client {
        client_id: client_id.to_owned(),
        name: name.to_owned(),
        jwk: Jwk::from_verifying_key(key.verifying_key()).unwrap_or_else(|error| panic!("{error}")),
        redirect_uris: vec![REDIRECT_URI.to_owned()],
        webhook_url,
    })
    .unwrap_or_else(|error| panic!("{error}"));
}

/// Registers `client_id` with a fresh key and no webhooks; returns the key.
pub fn registered(bank: &Bank, client_id: &str, name: &str) -> SigningKey {
    let key = client_key();
    register(bank, client_id, name, &key, None);
    key
}
