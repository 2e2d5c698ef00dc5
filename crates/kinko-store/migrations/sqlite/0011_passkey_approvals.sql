-- A passkey can approve one thing it is shown (a large charge's confirmation), besides
-- registering and passing the second factor. SQLite cannot change a CHECK in place: the table
-- is made again. Ceremonies live five minutes; one in flight at upgrade is simply started again.
DROP TABLE identity_passkey_ceremonies;
CREATE TABLE identity_passkey_ceremonies (
    session_id BLOB NOT NULL REFERENCES identity_sessions (id),
    purpose TEXT NOT NULL CHECK (purpose IN ('register', 'authenticate', 'approve')),
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    state_json TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, purpose)
);
CREATE INDEX identity_passkey_ceremonies_expiry ON identity_passkey_ceremonies (expires_at);
