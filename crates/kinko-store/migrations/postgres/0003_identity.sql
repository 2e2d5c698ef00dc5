-- Identity: users, one-time codes, second factors, sessions and devices, KYC, operators, and
-- the notification outbox. Times are ms since the epoch. Secrets are stored hashed
-- (passwords: argon2id PHC strings; codes and tokens: SHA-256) or encrypted (TOTP secrets).
CREATE TABLE identity_users (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    email_verified_at BIGINT,
    phone TEXT NOT NULL,
    phone_verified_at BIGINT,
    password_hash TEXT NOT NULL,
    -- pending (contacts not yet verified), active, closed
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'closed')),
    kyc_level BIGINT NOT NULL DEFAULT 0 CHECK (kyc_level BETWEEN 0 AND 1),
    -- Login failures in the current hour window, and the lock they caused.
    failures_window_start BIGINT NOT NULL DEFAULT 0,
    failures_count BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    -- After recovery or a credential change, outgoing money waits (⟨24 h⟩).
    outgoing_frozen_until BIGINT,
    -- A contact change waiting for its code: the new address or number is used only once
    -- proven, and the old one is told.
    pending_email TEXT,
    pending_phone TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX identity_users_email ON identity_users (email);
-- One phone number, one active wallet.
CREATE UNIQUE INDEX identity_users_active_phone ON identity_users (phone)
    WHERE phone_verified_at IS NOT NULL AND status <> 'closed';

CREATE TABLE identity_codes (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    purpose TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    code_hash BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX identity_codes_user ON identity_codes (user_id, purpose);

CREATE TABLE identity_totp (
    user_id UUID PRIMARY KEY REFERENCES identity_users (id),
    secret_encrypted BYTEA NOT NULL,
    confirmed_at BIGINT,
    -- The last time step accepted: a code is never accepted twice.
    last_step BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE identity_recovery_codes (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    code_hash BYTEA NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX identity_recovery_codes_user ON identity_recovery_codes (user_id);

CREATE TABLE identity_devices (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    -- SHA-256 of the device token the client keeps (cookie or header): a device is
    -- recognised by a secret, never by its id, which appears in logs and lists.
    token_hash BYTEA NOT NULL,
    label TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    -- Set once a second factor was passed on this device: only then may money move from it.
    trusted_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX identity_devices_user ON identity_devices (user_id);
CREATE UNIQUE INDEX identity_devices_token ON identity_devices (token_hash);

CREATE TABLE identity_sessions (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    device_id UUID NOT NULL REFERENCES identity_devices (id),
    token_hash BYTEA NOT NULL,
    csrf_hash BYTEA,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    second_factor_at BIGINT,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX identity_sessions_token ON identity_sessions (token_hash);
CREATE INDEX identity_sessions_user ON identity_sessions (user_id);

CREATE TABLE identity_kyc_records (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('verified', 'rejected', 'review')),
    legal_name TEXT,
    kana_name TEXT,
    birth_date TEXT,
    address TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX identity_kyc_records_user ON identity_kyc_records (user_id, created_at);
-- KYC records are immutable: re-proofing adds a record.
CREATE FUNCTION identity_kyc_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'KYC records are immutable'; END $$;
CREATE TRIGGER identity_kyc_immutable BEFORE UPDATE OR DELETE ON identity_kyc_records
FOR EACH ROW EXECUTE FUNCTION identity_kyc_immutable();

CREATE TABLE identity_operators (
    id UUID PRIMARY KEY,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'support', 'bank_partner')),
    -- Only for bank_partner: the one bank this operator acts for.
    bank_code TEXT,
    totp_secret_encrypted BYTEA NOT NULL,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    -- Failed logins in the current hour window; at the bound the account waits for the next.
    failures_window_start BIGINT NOT NULL DEFAULT 0,
    failures_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    disabled_at BIGINT,
    CHECK ((role = 'bank_partner') = (bank_code IS NOT NULL))
);
CREATE UNIQUE INDEX identity_operators_email ON identity_operators (email);

CREATE TABLE identity_operator_sessions (
    id UUID PRIMARY KEY,
    operator_id UUID NOT NULL REFERENCES identity_operators (id),
    token_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX identity_operator_sessions_token ON identity_operator_sessions (token_hash);
CREATE INDEX identity_operator_sessions_operator ON identity_operator_sessions (operator_id);

-- Messages to users, written in the same transaction as the change that causes them; a
-- sender delivers them (SMTP, SMS) or, in the sandbox, they stay here for the demo and tests.
CREATE TABLE notify_outbox (
    id UUID PRIMARY KEY,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    destination TEXT NOT NULL,
    purpose TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    -- No delivery is tried before this time: the back-off after a failure, and the lease
    -- that keeps two senders from sending one message at once.
    next_attempt_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX notify_outbox_unsent ON notify_outbox (created_at) WHERE sent_at IS NULL;
CREATE INDEX notify_outbox_destination ON notify_outbox (destination, created_at);

-- Fixed-window counters for rate limits that must hold across processes (sign-ups per IP…).
CREATE TABLE rate_limit_windows (
    bucket TEXT PRIMARY KEY NOT NULL,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL
);
