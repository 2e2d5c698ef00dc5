-- Merchants, QR payments, consumer-presented pay codes and refunds (issue 5).

-- A merchant, onboarded by an operator. The names and city are what Kinko shows a payer,
-- whatever a scanned code says.
CREATE TABLE money_merchants (
    id UUID PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    name_ja TEXT NOT NULL,
    category_code BIGINT NOT NULL CHECK (category_code BETWEEN 0 AND 9999),
    city TEXT NOT NULL,
    city_ja TEXT,
    postal_code TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_by UUID NOT NULL,
    created_at BIGINT NOT NULL
);
-- Merchant API keys: only the SHA-256 of the key is kept.
CREATE TABLE money_merchant_keys (
    id UUID PRIMARY KEY NOT NULL,
    merchant_id UUID NOT NULL REFERENCES money_merchants (id),
    key_hash BYTEA NOT NULL,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX money_merchant_keys_hash ON money_merchant_keys (key_hash);
-- A dynamic code's payment request: the amount the payer is charged comes from here.
CREATE TABLE money_payment_requests (
    merchant_id UUID NOT NULL REFERENCES money_merchants (id),
    reference TEXT NOT NULL,
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'paid')),
    payment_id UUID,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, reference)
);
-- One row per payment wallet → merchant, written before the ledger is asked; its id is the
-- ledger transfer's. `key_owner` is whoever sent the Idempotency-Key: the payer for a scanned
-- code, the merchant for a redeemed pay code.
CREATE TABLE money_payments (
    id UUID PRIMARY KEY NOT NULL,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    merchant_id UUID NOT NULL REFERENCES money_merchants (id),
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    refunded_yen BIGINT NOT NULL DEFAULT 0 CHECK (refunded_yen >= 0 AND refunded_yen <= amount_yen),
    method TEXT NOT NULL CHECK (method IN ('qr_static', 'qr_dynamic', 'pay_code')),
    reference TEXT,
    key_owner UUID NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    reason TEXT,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX money_payments_key ON money_payments (key_owner, idempotency_key);
CREATE INDEX money_payments_merchant ON money_payments (merchant_id, created_at);
CREATE INDEX money_payments_status ON money_payments (status, created_at);
-- Refunds merchant → wallet. `refunded_yen` on the payment counts pending and posted ones, so
-- the total can never pass the payment's amount (the CHECK above holds it too).
CREATE TABLE money_refunds (
    id UUID PRIMARY KEY NOT NULL,
    payment_id UUID NOT NULL REFERENCES money_payments (id),
    merchant_id UUID NOT NULL REFERENCES money_merchants (id),
    user_id UUID NOT NULL REFERENCES identity_users (id),
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    reason TEXT,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX money_refunds_key ON money_refunds (merchant_id, idempotency_key);
CREATE INDEX money_refunds_payment ON money_refunds (payment_id);
CREATE INDEX money_refunds_status ON money_refunds (status, created_at);
-- Redeemed consumer-presented codes: a code's nonce, once.
CREATE TABLE money_pay_codes_used (
    nonce BYTEA PRIMARY KEY NOT NULL,
    payment_id UUID NOT NULL,
    expires_at BIGINT NOT NULL
);
-- Credits to a wallet from Kinko's compensation account (confirmed fraud made good, goodwill),
-- by an analyst or admin with a reason; idempotent per operator and key.
CREATE TABLE money_credits (
    id UUID PRIMARY KEY NOT NULL,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    operator_id UUID NOT NULL,
    amount_yen BIGINT NOT NULL CHECK (amount_yen > 0),
    reason TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted')),
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX money_credits_key ON money_credits (operator_id, idempotency_key);
