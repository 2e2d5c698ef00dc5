-- Cases (issue 12): one inbox for risk reviews, bank fraud reports, user disputes and
-- reconciliation mismatches.
CREATE TABLE cases (
    id UUID PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('risk_review', 'bank_fraud_report', 'dispute', 'reconciliation')),
    state TEXT NOT NULL CHECK (state IN ('open', 'investigating', 'resolved', 'refunded', 'rejected')),
    -- The bank whose account the case concerns, if any: bank partners see only their own.
    bank_code TEXT,
    -- The wallet the case is about, if any.
    user_id UUID,
    -- What opened it, e.g. 'risk_decision:<id>', 'bank_alert:<id>', 'dispute:<id>'.
    subject TEXT NOT NULL,
    summary TEXT NOT NULL,
    amount_yen BIGINT,
    -- Opening the same subject twice (a retried webhook, a replayed dispute) finds the first case.
    dedupe_key TEXT NOT NULL UNIQUE,
    assigned_to UUID,
    label TEXT CHECK (label IS NULL OR label IN ('fraud', 'not_fraud')),
    opened_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    escalated_at BIGINT,
    closed_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX cases_by_state ON cases (state, due_at);
CREATE INDEX cases_by_bank ON cases (bank_code, opened_at);
CREATE INDEX cases_by_user ON cases (user_id, opened_at);

-- Every step on a case (opened, assigned, note, state, label, link, escalation): its history.
CREATE TABLE case_events (
    id UUID PRIMARY KEY,
    case_id UUID NOT NULL REFERENCES cases (id),
    at BIGINT NOT NULL,
    -- The operator, or NULL for the platform itself.
    actor UUID,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX case_events_by_case ON case_events (case_id, at);
