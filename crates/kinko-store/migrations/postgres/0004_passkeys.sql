-- Passkeys (WebAuthn) as a second factor, owned by kinko-identity's `passkey` module.

-- One row per registered credential. No secret is stored: only the public key and the
-- authenticator's signature counter, inside webauthn-rs's `Passkey` JSON.
CREATE TABLE identity_passkeys (
    id UUID PRIMARY KEY,
    user_id UUID NOT NULL REFERENCES identity_users (id),
    -- The authenticator's credential id: unique across all users, so one credential can
    -- never stand as the second factor of two wallets.
    credential_id BYTEA NOT NULL,
    passkey_json TEXT NOT NULL,
    label TEXT NOT NULL,
    -- The highest signature counter seen: an assertion that does not raise it (when the
    -- authenticator counts) may come from a cloned authenticator and is refused.
    sign_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE UNIQUE INDEX identity_passkeys_credential ON identity_passkeys (credential_id);
CREATE INDEX identity_passkeys_user ON identity_passkeys (user_id);

-- A registration or authentication ceremony in progress: the challenge and its state stay on
-- the server (never in a cookie), one per session and purpose, taken at most once.
CREATE TABLE identity_passkey_ceremonies (
    session_id UUID NOT NULL REFERENCES identity_sessions (id),
    purpose TEXT NOT NULL CHECK (purpose IN ('register', 'authenticate')),
    user_id UUID NOT NULL REFERENCES identity_users (id),
    state_json TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (session_id, purpose)
);
CREATE INDEX identity_passkey_ceremonies_expiry ON identity_passkey_ceremonies (expires_at);
