-- Dynamic linking (THREATS requirement 13): a charge above the threshold needs a second factor
-- passed for exactly this amount from exactly this bank link. The row binds them; a charge
-- uses a confirmed row once, and only with the same link and amount.
CREATE TABLE money_confirmations (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    link_id BLOB NOT NULL,
    amount_yen INTEGER NOT NULL CHECK (amount_yen > 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'confirmed', 'used')),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX money_confirmations_user ON money_confirmations (user_id, created_at);
