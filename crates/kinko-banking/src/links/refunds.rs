//! Refunds to a victim's bank account: a credit into the account one of Kinko's settled
//! debits took from, asked with Kinko's client authentication, so an ended link is no obstacle.

use super::*;
use crate::client::{BankPayment, PaymentOrder};

impl LinkService {
    /// Pays back the debit Kinko made under `original_key` at `bank_code`, under `order.key`
    /// (the bank keeps the answer: the same key never pays twice). Never after
    /// `order.not_after_ms`.
    pub fn bank_refund(
        &self,
        bank_code: &str,
        original_key: &str,
        order: &PaymentOrder<'_>,
    ) -> Result<BankPayment, LinkError> {
        let client = self
            .banks
            .for_bank(bank_code)
            .ok_or(LinkError::BankUnavailable)?;
        let now_ms = self.now_ms();
        if now_ms >= order.not_after_ms {
            return Err(LinkError::DeadlinePassed);
        }
        client
            .refund_by_client(original_key, order, now_ms)
            .map_err(bank_failure_kept)
    }
}
