-- Four eyes on credits (issue 12): a credit above the solo threshold waits for a second
-- operator.
ALTER TABLE money_credits DROP CONSTRAINT money_credits_status_check;
ALTER TABLE money_credits ADD CONSTRAINT money_credits_status_check
    CHECK (status IN ('awaiting_approval', 'pending', 'posted', 'rejected'));
-- The second operator who approved or rejected it, never the proposer.
ALTER TABLE money_credits ADD COLUMN decided_by UUID;
ALTER TABLE money_credits ADD COLUMN decided_at BIGINT;
ALTER TABLE money_credits ADD COLUMN decision_reason TEXT;
ALTER TABLE money_credits ADD CONSTRAINT money_credits_second_operator
    CHECK (decided_by IS NULL OR decided_by <> operator_id);
-- What one operator credited alone in the last day (the solo threshold is a sum).
CREATE INDEX money_credits_by_operator ON money_credits (operator_id, created_at);
