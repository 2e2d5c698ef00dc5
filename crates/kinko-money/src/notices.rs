//! A notice for every movement (THREATS 16; issue 11 item 6): when a charge, withdrawal,
//! payment, refund or P2P transfer has moved money, its owner hears of it — in Japanese and
//! English, with the amount, the counterparty and where to say "I didn't do this".
//!
//! The notices are an outbox over the history: a sweep finds posted movements not yet
//! announced, and in one transaction marks each (`notified_at`, only while still unmarked) and
//! queues its message. Every flow that writes history is covered, present and future, without
//! touching the flows; several processes sweep at once and each movement is announced once.

use kinko_core::Money;
use kinko_identity::notify::{self, Channel, Message};
use kinko_store::sql::{Tx, Value};

use crate::charge::MoneyError;
use crate::service::{MoneyService, internal};

/// How many movements one sweep announces at most; the rest wait for the next.
pub const NOTICES_PER_SWEEP_MAX: i64 = 500;

/// The subject and body of a movement's notice.
fn wording(kind: &str, amount: &str, counterparty: &str) -> Option<(String, String, String)> {
    let cp = if counterparty.is_empty() {
        "—"
    } else {
        counterparty
    };
    let (ja, en) = match kind {
        "charge" => (
            format!("{cp} から {amount} をチャージしました"),
            format!("You charged {amount} from {cp}"),
        ),
        "withdrawal" => (
            format!("{cp} へ {amount} を出金しました"),
            format!("You withdrew {amount} to {cp}"),
        ),
        "payment" => (
            format!("{cp} に {amount} を支払いました"),
            format!("You paid {amount} to {cp}"),
        ),
        "refund" => (
            format!("{cp} から {amount} の返金を受けました"),
            format!("{cp} refunded {amount} to you"),
        ),
        "transfer_in" => (
            format!("{cp} から {amount} を受け取りました"),
            format!("You received {amount} from {cp}"),
        ),
        "transfer_out" => (
            format!("{cp} に {amount} を送りました"),
            format!("You sent {amount} to {cp}"),
        ),
        _ => return None,
    };
    let subject = format!("{ja} / {en}");
    Some((kind.to_owned(), subject, format!("{ja}\n\n{en}")))
}

impl MoneyService {
    /// Announces up to [`NOTICES_PER_SWEEP_MAX`] posted movements not yet announced, by
    /// e-mail; `dispute_url` is the page where the owner can say "I didn't do this" (the
    /// movement's id is appended). Answers how many were announced.
    pub fn send_movement_notices(&self, dispute_url: &str) -> Result<usize, MoneyError> {
        let now_ms = self.now_ms();
        let database = self.identity_database();
        let due = database.read(|tx: &mut dyn Tx| {
            tx.query(
                "SELECT id FROM money_movements WHERE notified_at IS NULL AND status = 'posted'
                 ORDER BY updated_at, id LIMIT $1",
                &[NOTICES_PER_SWEEP_MAX.into()],
            )
        })?;
        let mut sent = 0;
        for row in due {
            let id = row.uuid(0)?;
            let announced =
                database.transaction(|tx: &mut dyn Tx| announce(tx, now_ms, id, dispute_url))?;
            if announced {
                sent += 1;
            }
        }
        Ok(sent)
    }
}

/// Marks one movement announced and queues its notice, unless another sweep did first.
fn announce(tx: &mut dyn Tx, now_ms: i64, id: u128, dispute_url: &str) -> Result<bool, MoneyError> {
    let claimed = tx.execute(
        "UPDATE money_movements SET notified_at = $2
         WHERE id = $1 AND notified_at IS NULL AND status = 'posted'",
        &[Value::Uuid(id), now_ms.into()],
    )?;
    if claimed == 0 {
        return Ok(false);
    }
    let row = tx.query_one(
        "SELECT m.kind, m.amount_yen, m.counterparty, u.email FROM money_movements m
         JOIN identity_users u ON u.id = m.user_id WHERE m.id = $1",
        &[Value::Uuid(id)],
    )?;
    let amount = Money::yen(row.int(1)?).to_string();
    let Some((kind, subject, text)) = wording(&row.text(0)?, &amount, &row.text(2)?) else {
        return Ok(false);
    };
    let movement = uuid::Uuid::from_u128(id);
    let body = format!(
        "{text}\n\n心当たりがない場合は、こちらから「身に覚えがない」と申告してください / \
         If this was not you, tell us here:\n{dispute_url}{movement}"
    );
    notify::enqueue(
        tx,
        now_ms,
        &Message {
            channel: Channel::Email,
            destination: row.text(3)?,
            purpose: format!("movement_{kind}"),
            subject,
            body,
        },
    )
    .map_err(internal)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::wording;

    #[test]
    fn every_kind_of_movement_has_words_in_both_languages() {
        for kind in [
            "charge",
            "withdrawal",
            "payment",
            "refund",
            "transfer_in",
            "transfer_out",
        ] {
            let (_, subject, body) =
                wording(kind, "¥1,234", "みずほ銀行").unwrap_or_else(|| panic!("{kind}"));
            assert!(
                subject.contains("¥1,234") && subject.contains("みずほ銀行"),
                "{subject}"
            );
            // Japanese first, then English, in both the subject and the body.
            let (ja, en) = body.split_once("\n\n").unwrap_or_else(|| panic!("{body}"));
            assert!(ja.contains("しました") || ja.contains("ました"), "{ja}");
            assert!(en.starts_with("You ") || en.contains(" refunded "), "{en}");
            assert_eq!(subject, format!("{ja} / {en}"));
        }
        assert!(wording("something_else", "¥1", "x").is_none());
    }
}
