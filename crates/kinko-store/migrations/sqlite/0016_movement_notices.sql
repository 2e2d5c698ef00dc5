-- A notice for every movement (issue 11 item 6): the history is the notices' outbox. A posted
-- movement with no notified_at has not been announced yet; what moved before this release is
-- not announced now.
ALTER TABLE money_movements ADD COLUMN notified_at INTEGER;
UPDATE money_movements SET notified_at = updated_at;
CREATE INDEX money_movements_unnotified ON money_movements (updated_at) WHERE notified_at IS NULL;
