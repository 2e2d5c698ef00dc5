-- Bank links (issue 4): Kinko's registration at each bank, link attempts in flight, the links
-- themselves, the fenced-in legacy method's attempts, alerts for operators and banks, and the
-- banks' webhook events already handled.

-- Kinko's own client key (ES256) for private_key_jwt, sealed with the secret box; one row.
CREATE TABLE banking_client_keys (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    sealed_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
-- Kinko's client id at each bank issuer (a real bank assigns it out of band).
CREATE TABLE banking_clients (
    issuer TEXT PRIMARY KEY NOT NULL,
    client_id TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
-- One row per authorization started: the PKCE verifier and the DPoP key stay here, sealed,
-- and the state is stored hashed. Single use, short-lived.
CREATE TABLE banking_link_attempts (
    state_hash TEXT PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    bank_code TEXT NOT NULL,
    sealed_verifier BLOB NOT NULL,
    sealed_dpop_key BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX banking_link_attempts_user ON banking_link_attempts (user_id, created_at);
CREATE TABLE banking_links (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    bank_code TEXT NOT NULL,
    -- The bank's pairwise account reference: one wallet per bank account.
    account_ref TEXT NOT NULL,
    account_label TEXT NOT NULL,
    method TEXT NOT NULL CHECK (method IN ('oauth', 'legacy')),
    -- The bank's id of the consent (oauth only).
    bank_link_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'unlinked', 'revoked_by_bank', 'cut_for_fraud', 'refused')),
    sealed_refresh_token BLOB,
    sealed_dpop_key BLOB,
    created_at INTEGER NOT NULL,
    ended_at INTEGER,
    end_reason TEXT
);
CREATE UNIQUE INDEX banking_links_one_wallet_per_account ON banking_links (bank_code, account_ref)
    WHERE status = 'active';
CREATE INDEX banking_links_user ON banking_links (user_id, created_at);
CREATE INDEX banking_links_bank ON banking_links (bank_code, created_at);
CREATE INDEX banking_links_bank_link_id ON banking_links (bank_link_id);
-- Legacy attempts: never the PIN, only keyed hashes (HMAC under the secret box's key) of
-- the account and of the PIN value, so the detector can see one PIN sprayed on many accounts.
CREATE TABLE banking_legacy_attempts (
    id BLOB PRIMARY KEY NOT NULL,
    bank_code TEXT NOT NULL,
    account_key TEXT NOT NULL,
    pin_key TEXT NOT NULL,
    user_id BLOB NOT NULL,
    ip TEXT NOT NULL,
    device TEXT NOT NULL,
    matched INTEGER NOT NULL CHECK (matched IN (0, 1)),
    at INTEGER NOT NULL
);
CREATE INDEX banking_legacy_attempts_bank ON banking_legacy_attempts (bank_code, at);
CREATE INDEX banking_legacy_attempts_user ON banking_legacy_attempts (user_id, at);
CREATE INDEX banking_legacy_attempts_ip ON banking_legacy_attempts (ip, at);
CREATE INDEX banking_legacy_attempts_device ON banking_legacy_attempts (device, at);
-- A wallet with failures on two distinct accounts tries the legacy method no more until an
-- operator reviews it.
CREATE TABLE banking_legacy_blocks (
    user_id BLOB PRIMARY KEY NOT NULL,
    blocked_at INTEGER NOT NULL,
    reason TEXT NOT NULL
);
-- What operators and the bank must look at: a detector firing, a fraud report.
CREATE TABLE banking_alerts (
    id BLOB PRIMARY KEY NOT NULL,
    bank_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    user_id BLOB,
    link_id BLOB,
    detail TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    created_at INTEGER NOT NULL
);
CREATE INDEX banking_alerts_bank ON banking_alerts (bank_code, created_at);
-- Webhook events handled (by the bank's event id): a retry is answered, not redone.
CREATE TABLE banking_webhook_events (
    jti TEXT PRIMARY KEY NOT NULL,
    issuer TEXT NOT NULL,
    event TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
