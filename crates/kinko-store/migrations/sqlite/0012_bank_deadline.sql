-- Every bank call of a charge or withdrawal has a deadline (ms since the epoch), stored before
-- the call and sent to the bank as the order's `not_after_ms`: Kinko never calls the bank after
-- it, the bank refuses the order after it, and the reconciler concludes "the bank never saw
-- it" only once it has passed by more than a call's timeout. Rows written before this
-- migration have none; the reconciler treats them as created_at + the default time to live.
ALTER TABLE money_bank_transfers ADD COLUMN bank_not_after INTEGER;
