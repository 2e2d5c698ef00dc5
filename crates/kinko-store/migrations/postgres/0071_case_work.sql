-- Case work (issue 12): links between related cases, and a rule snoozed for one customer.

-- Two cases an analyst found related, stored once per direction so either case lists it.
CREATE TABLE case_links (
    case_id UUID NOT NULL REFERENCES cases (id),
    other_case_id UUID NOT NULL REFERENCES cases (id),
    reason TEXT NOT NULL CHECK (reason IN ('same_device', 'same_network', 'same_bank_account', 'same_identity', 'money_chain')),
    linked_by UUID NOT NULL,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (case_id, other_case_id),
    CHECK (case_id <> other_case_id)
);

-- While until_at is ahead, the risk engine records rule_id for user_id and does not act on
-- it (a rule that keeps stopping one customer an analyst has cleared).
CREATE TABLE risk_snoozes (
    id UUID PRIMARY KEY,
    rule_id TEXT NOT NULL,
    user_id UUID NOT NULL,
    until_at BIGINT NOT NULL,
    case_id UUID NOT NULL REFERENCES cases (id),
    created_by UUID NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX risk_snoozes_by_user ON risk_snoozes (user_id, until_at);

-- An analyst's open cases are counted for the cap on assignment.
CREATE INDEX cases_by_assignee ON cases (assigned_to, state);
