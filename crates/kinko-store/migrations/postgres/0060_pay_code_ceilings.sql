-- The ceiling the payer set when showing a consumer-presented code, by the code's nonce: a
-- merchant redeeming above it is refused (issue 13 item 8).
CREATE TABLE money_pay_code_ceilings (
    nonce BYTEA PRIMARY KEY NOT NULL,
    max_amount_yen BIGINT NOT NULL CHECK (max_amount_yen > 0),
    expires_at BIGINT NOT NULL
);
