-- Case work (issue 12): links between related cases, and a rule snoozed for one customer.

-- Two cases an analyst found related, stored once per direction so either case lists it.
CREATE TABLE case_links (
    case_id BLOB NOT NULL REFERENCES cases (id),
    other_case_id BLOB NOT NULL REFERENCES cases (id),
    reason TEXT NOT NULL CHECK (reason IN ('same_device', 'same_network', 'same_bank_account', 'same_identity', 'money_chain')),
    linked_by BLOB NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (case_id, other_case_id),
    CHECK (case_id <> other_case_id)
);

-- While until_at is ahead, the risk engine records rule_id for user_id and does not act on
-- it (a rule that keeps stopping one customer an analyst has cleared).
CREATE TABLE risk_snoozes (
    id BLOB PRIMARY KEY,
    rule_id TEXT NOT NULL,
    user_id BLOB NOT NULL,
    until_at INTEGER NOT NULL,
    case_id BLOB NOT NULL REFERENCES cases (id),
    created_by BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX risk_snoozes_by_user ON risk_snoozes (user_id, until_at);

-- An analyst's open cases are counted for the cap on assignment.
CREATE INDEX cases_by_assignee ON cases (assigned_to, state);
