-- A passkey can approve one thing it is shown (a large charge's confirmation), besides
-- registering and passing the second factor.
ALTER TABLE identity_passkey_ceremonies DROP CONSTRAINT identity_passkey_ceremonies_purpose_check;
ALTER TABLE identity_passkey_ceremonies ADD CONSTRAINT identity_passkey_ceremonies_purpose_check
    CHECK (purpose IN ('register', 'authenticate', 'approve'));
