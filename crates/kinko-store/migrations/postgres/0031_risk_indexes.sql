-- The risk engine reads a wallet's last 31 days of P2P, sent and received, before money
-- leaves (kinko-money `risk.rs`): without these, each score scanned every transfer.
CREATE INDEX money_transfers_from_user ON money_transfers (from_user, created_at);
CREATE INDEX money_transfers_to_user ON money_transfers (to_user, created_at);
