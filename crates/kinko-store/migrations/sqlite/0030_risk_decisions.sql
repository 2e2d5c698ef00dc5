-- Risk decisions (issue 11): every scored action on which a rule fired — acting, in shadow
-- mode, held back by its breaker, or undecidable — with the rules and the feature values
-- that made them fire (JSON, as `kinko_risk::Decision` serialises), for operators and cases.
CREATE TABLE risk_decisions (
    id BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL REFERENCES identity_users (id),
    flow TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('allow', 'challenge', 'review', 'deny')),
    rules_version TEXT NOT NULL,
    decision TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX risk_decisions_user ON risk_decisions (user_id, created_at);
