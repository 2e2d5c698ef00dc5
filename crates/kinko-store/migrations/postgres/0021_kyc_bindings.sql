-- One identity backs one wallet (issue 11 item 5): a verified eKYC identity, as a keyed hash
-- of its legal name, kana name and birth date, is bound to the first wallet that proved it.
-- Another wallet proving the same identity, or this wallet proving another, goes to review.
CREATE TABLE identity_kyc_bindings (
    identity_key TEXT PRIMARY KEY NOT NULL,
    user_id UUID NOT NULL UNIQUE REFERENCES identity_users (id),
    bound_at BIGINT NOT NULL
);
