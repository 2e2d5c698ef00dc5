-- Merchants, QR payments, consumer-presented pay codes and refunds (issue 5).

-- A merchant, onboarded by an operator. The names and city are what Kinko shows a payer,
-- whatever a scanned code says.
CREATE TABLE money_merchants (
    id BLOB PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    name_ja TEXT NOT NULL,
    category_code INTEGER NOT NULL CHECK (category_code BETWEEN 0 AND 9999),
    city TEXT NOT NULL,
    city_ja TEXT,
    postal_code TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_by BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
-- Merchant API keys: only the SHA-256 of the key is kept.
CREATE TABLE money_merchant_keys (
    id BLOB PRIMARY KEY NOT NULL,
    merchant_id BLOB NOT NULL REFERENCES money_merchants (id),
    key_hash BLOB NOT NULL,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX money_merchant_keys_hash ON money_merchant_keys (key_hash);
-- A dynamic code's payment request: the amount the payer is charged comes from here.
CREATE TABLE money_payment_requests (
    merchant_id BLOB NOT NULL REFERENCES money_merchants (id),
    reference TEXT NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'paid')),
    payment_id BLOB,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, reference)
);
-- One row per payment wallet → merchant, written before the ledger is asked; its id is the
-- ledger transfer's. `key_owner` is whoever sent the Idempotency-Key: the payer for a scanned
-- code, the merchant for a redeemed pay code.
CREATE TABLE money_payments (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    merchant_id BLOB NOT NULL REFERENCES money_merchants (id),
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    refunded_yen INTEGER NOT NULL DEFAULT 0 CHECK (refunded_yen >= 0 AND refunded_yen <= amount_yen),
    method TEXT NOT NULL CHECK (method IN ('qr_static', 'qr_dynamic', 'pay_code')),
    reference TEXT,
    key_owner BLOB NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX money_payments_key ON money_payments (key_owner, idempotency_key);
CREATE INDEX money_payments_merchant ON money_payments (merchant_id, created_at);
CREATE INDEX money_payments_status ON money_payments (status, created_at);
-- Refunds merchant → wallet. `refunded_yen` on the payment counts pending and posted ones, so
-- the total can never pass the payment's amount (the CHECK above holds it too).
CREATE TABLE money_refunds (
    id BLOB PRIMARY KEY NOT NULL,
    payment_id BLOB NOT NULL REFERENCES money_payments (id),
    merchant_id BLOB NOT NULL REFERENCES money_merchants (id),
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    reason TEXT,
    created_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX money_refunds_key ON money_refunds (merchant_id, idempotency_key);
CREATE INDEX money_refunds_payment ON money_refunds (payment_id);
CREATE INDEX money_refunds_status ON money_refunds (status, created_at);
-- Redeemed consumer-presented codes: a code's nonce, once.
CREATE TABLE money_pay_codes_used (
    nonce BLOB PRIMARY KEY NOT NULL,
    payment_id BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
-- Credits to a wallet from Kinko's compensation account (confirmed fraud made good, goodwill),
-- by an analyst or admin with a reason; idempotent per operator and key.
CREATE TABLE money_credits (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    operator_id BLOB NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted')),
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX money_credits_key ON money_credits (operator_id, idempotency_key);
