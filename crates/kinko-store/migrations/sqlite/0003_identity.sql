-- Identity: users, one-time codes, second factors, sessions and devices, KYC, operators, and
-- the notification outbox. Times are ms since the epoch. Secrets are stored hashed
-- (passwords: argon2id PHC strings; codes and tokens: SHA-256) or encrypted (TOTP secrets).
CREATE TABLE identity_users (
    id BLOB PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    email_verified_at INTEGER,
    phone TEXT NOT NULL,
    phone_verified_at INTEGER,
    password_hash TEXT NOT NULL,
    -- pending (contacts not yet verified), active, closed
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'closed')),
    kyc_level INTEGER NOT NULL DEFAULT 0 CHECK (kyc_level BETWEEN 0 AND 1),
    -- Login failures in the current hour window, and the lock they caused.
    failures_window_start INTEGER NOT NULL DEFAULT 0,
    failures_count INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    -- After recovery or a credential change, outgoing money waits (⟨24 h⟩).
    outgoing_frozen_until INTEGER,
    -- A contact change waiting for its code: the new address or number is used only once
    -- proven, and the old one is told.
    pending_email TEXT,
    pending_phone TEXT,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX identity_users_email ON identity_users (email);
-- One phone number, one active wallet.
CREATE UNIQUE INDEX identity_users_active_phone ON identity_users (phone)
    WHERE phone_verified_at IS NOT NULL AND status <> 'closed';

CREATE TABLE identity_codes (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    purpose TEXT NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    code_hash BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX identity_codes_user ON identity_codes (user_id, purpose);

CREATE TABLE identity_totp (
    user_id BLOB PRIMARY KEY NOT NULL REFERENCES identity_users (id),
    secret_encrypted BLOB NOT NULL,
    confirmed_at INTEGER,
    -- The last time step accepted: a code is never accepted twice.
    last_step INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE identity_recovery_codes (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    code_hash BLOB NOT NULL,
    used_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX identity_recovery_codes_user ON identity_recovery_codes (user_id);

CREATE TABLE identity_devices (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    -- SHA-256 of the device token the client keeps (cookie or header): a device is
    -- recognised by a secret, never by its id, which appears in logs and lists.
    token_hash BLOB NOT NULL,
    label TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    -- Set once a second factor was passed on this device: only then may money move from it.
    trusted_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX identity_devices_user ON identity_devices (user_id);
CREATE UNIQUE INDEX identity_devices_token ON identity_devices (token_hash);

CREATE TABLE identity_sessions (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    device_id BLOB NOT NULL REFERENCES identity_devices (id),
    token_hash BLOB NOT NULL,
    csrf_hash BLOB,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    second_factor_at INTEGER,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX identity_sessions_token ON identity_sessions (token_hash);
CREATE INDEX identity_sessions_user ON identity_sessions (user_id);

CREATE TABLE identity_kyc_records (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    provider TEXT NOT NULL,
    reference TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('verified', 'rejected', 'review')),
    legal_name TEXT,
    kana_name TEXT,
    birth_date TEXT,
    address TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX identity_kyc_records_user ON identity_kyc_records (user_id, created_at);
-- KYC records are immutable: re-proofing adds a record.
CREATE TRIGGER identity_kyc_no_update BEFORE UPDATE ON identity_kyc_records
BEGIN SELECT RAISE(ABORT, 'KYC records are immutable'); END;
CREATE TRIGGER identity_kyc_no_delete BEFORE DELETE ON identity_kyc_records
BEGIN SELECT RAISE(ABORT, 'KYC records are immutable'); END;

CREATE TABLE identity_operators (
    id BLOB PRIMARY KEY NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'support', 'bank_partner')),
    -- Only for bank_partner: the one bank this operator acts for.
    bank_code TEXT,
    totp_secret_encrypted BLOB NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    -- Failed logins in the current hour window; at the bound the account waits for the next.
    failures_window_start INTEGER NOT NULL DEFAULT 0,
    failures_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    disabled_at INTEGER,
    CHECK ((role = 'bank_partner') = (bank_code IS NOT NULL))
);
CREATE UNIQUE INDEX identity_operators_email ON identity_operators (email);

CREATE TABLE identity_operator_sessions (
    id BLOB PRIMARY KEY NOT NULL,
    operator_id BLOB NOT NULL REFERENCES identity_operators (id),
    token_hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE UNIQUE INDEX identity_operator_sessions_token ON identity_operator_sessions (token_hash);
CREATE INDEX identity_operator_sessions_operator ON identity_operator_sessions (operator_id);

-- Messages to users, written in the same transaction as the change that causes them; a
-- sender delivers them (SMTP, SMS) or, in the sandbox, they stay here for the demo and tests.
CREATE TABLE notify_outbox (
    id BLOB PRIMARY KEY NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    destination TEXT NOT NULL,
    purpose TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- No delivery is tried before this time: the back-off after a failure, and the lease
    -- that keeps two senders from sending one message at once.
    next_attempt_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX notify_outbox_unsent ON notify_outbox (created_at) WHERE sent_at IS NULL;
CREATE INDEX notify_outbox_destination ON notify_outbox (destination, created_at);

-- Fixed-window counters for rate limits that must hold across processes (sign-ups per IP…).
CREATE TABLE rate_limit_windows (
    bucket TEXT PRIMARY KEY NOT NULL,
    window_start INTEGER NOT NULL,
    hits INTEGER NOT NULL
);
