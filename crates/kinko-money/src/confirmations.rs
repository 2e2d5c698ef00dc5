//! Dynamic linking for large charges (THREATS requirement 13, PSD2 RTS art. 5): a charge
//! above the threshold needs a second factor passed for exactly that amount from exactly that
//! bank link. The wallet asks for a confirmation (the server records link and amount and
//! answers what the user is approving, in words), the user passes their authenticator code
//! for it, and the charge then names the confirmation: it is used once, and only by a charge
//! of the same link and amount — change either and the charge is refused.

use kinko_identity::session::SessionInfo;
use kinko_store::sql::{Tx, Value};
use serde::Serialize;

use crate::charge::{MoneyService, counterparty_label};
use crate::error::MoneyError;

/// Charges above this many yen need a confirmation, unless the operator sets another
/// threshold (`KINKO_CHARGE_CONFIRM_ABOVE_YEN`).
pub const CHARGE_CONFIRM_ABOVE_YEN_DEFAULT: i64 = 30_000;
/// How long a confirmation can be passed and then used.
pub const CONFIRMATION_LIFETIME_MS: i64 = 5 * 60 * 1_000;

/// What the user approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confirmation {
    pub id: uuid::Uuid,
    pub link_id: uuid::Uuid,
    pub amount_yen: i64,
    /// The bank and account the money comes from, as the user knows it.
    pub payee: String,
    /// What the authenticator code approves, in Japanese and English.
    pub message: String,
    /// `open`, `confirmed` or `used`.
    pub status: String,
    pub expires_at_ms: i64,
}

fn message(amount_yen: i64, payee: &str) -> String {
    let amount = kinko_core::Money::yen(amount_yen);
    format!("{payee} から {amount} をチャージ / Charge {amount} from {payee}")
}

impl MoneyService {
    /// Starts a confirmation of a charge of `amount_yen` from `link_id`.
    pub fn start_confirmation(
        &self,
        session: &SessionInfo,
        link_id: uuid::Uuid,
        amount_yen: i64,
    ) -> Result<Confirmation, MoneyError> {
        self.gate(session, true)?;
        if amount_yen <= 0 {
            return Err(MoneyError::AmountInvalid);
        }
        let now_ms = self.clock_ms();
        let id = uuid::Uuid::now_v7();
        let expires_at_ms = now_ms + CONFIRMATION_LIFETIME_MS;
        let payee = self.identity_database().transaction(|tx: &mut dyn Tx| {
            let link = tx
                .query_opt(
                    "SELECT status FROM banking_links WHERE id = $1 AND user_id = $2",
                    &[Value::Uuid(link_id.as_u128()), Value::Uuid(session.user_id)],
                )?
                .ok_or(MoneyError::LinkNotFound)?;
            if link.text(0)? != "active" {
                return Err(MoneyError::LinkInactive);
            }
            tx.execute(
                "INSERT INTO money_confirmations (id, user_id, link_id, amount_yen, status,
                 expires_at, created_at) VALUES ($1, $2, $3, $4, 'open', $5, $6)",
                &[
                    Value::Uuid(id.as_u128()),
                    Value::Uuid(session.user_id),
                    Value::Uuid(link_id.as_u128()),
                    amount_yen.into(),
                    expires_at_ms.into(),
                    now_ms.into(),
                ],
            )?;
            Ok(counterparty_label(tx, link_id)?)
        })?;
        Ok(Confirmation {
            id,
            link_id,
            amount_yen,
            message: message(amount_yen, &payee),
            payee,
            status: "open".to_owned(),
            expires_at_ms,
        })
    }

    /// Passes the user's authenticator code for the confirmation `id`.
    pub fn confirm_with_totp(
        &self,
        session: &SessionInfo,
        id: uuid::Uuid,
        totp_code: &str,
    ) -> Result<Confirmation, MoneyError> {
        self.confirm_with(session, id, |approved| {
            self.identity()
                .confirm_with_totp(session, totp_code, approved)
                .map_err(|error| match error {
                    kinko_identity::service::IdentityError::Store(store) => {
                        MoneyError::Store(store)
                    }
                    kinko_identity::service::IdentityError::RateLimited { retry_after_ms } => {
                        MoneyError::ConfirmationRateLimited { retry_after_ms }
                    }
                    _ => MoneyError::ConfirmationCodeInvalid,
                })
        })
    }

    /// The user's open, unexpired confirmation `id`, before a second factor is asked for it.
    pub fn open_confirmation(
        &self,
        session: &SessionInfo,
        id: uuid::Uuid,
    ) -> Result<Confirmation, MoneyError> {
        let now_ms = self.clock_ms();
        let found = self.identity_database().read(|tx: &mut dyn Tx| {
            let row = tx
                .query_opt(
                    "SELECT link_id, amount_yen, status, expires_at FROM money_confirmations
                     WHERE id = $1 AND user_id = $2",
                    &[Value::Uuid(id.as_u128()), Value::Uuid(session.user_id)],
                )?
                .ok_or(MoneyError::ConfirmationInvalid)?;
            let link_id = uuid::Uuid::from_u128(row.uuid(0)?);
            let amount_yen = row.int(1)?;
            let payee = counterparty_label(tx, link_id)?;
            Ok::<_, MoneyError>(Confirmation {
                id,
                link_id,
                amount_yen,
                message: message(amount_yen, &payee),
                payee,
                status: row.text(2)?,
                expires_at_ms: row.int(3)?,
            })
        })?;
        if found.status != "open" || found.expires_at_ms <= now_ms {
            return Err(MoneyError::ConfirmationInvalid);
        }
        Ok(found)
    }

    /// What a second factor signs for the confirmation: its id and the words the user approves.
    pub fn approval_text(confirmation: &Confirmation) -> String {
        format!("{}: {}", confirmation.id, confirmation.message)
    }

    /// Passes the confirmation `id` with a second factor that `verify` checks for the approval
    /// text (see [`MoneyService::approval_text`]); the TOTP route and the passkey route both
    /// come here.
    pub fn confirm_with(
        &self,
        session: &SessionInfo,
        id: uuid::Uuid,
        verify: impl FnOnce(&str) -> Result<(), MoneyError>,
    ) -> Result<Confirmation, MoneyError> {
        let mut confirmation = self.open_confirmation(session, id)?;
        verify(&Self::approval_text(&confirmation))?;
        // Only an open one turns confirmed: a second pass of the same confirmation changes
        // nothing and the charge still spends it once.
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "UPDATE money_confirmations SET status = 'confirmed' WHERE id = $1 AND status = 'open'",
                &[Value::Uuid(id.as_u128())],
            )
        })?;
        confirmation.status = "confirmed".to_owned();
        Ok(confirmation)
    }
}

/// Spends a confirmation for a charge, in the charge's transaction: only a confirmed, unexpired
/// confirmation of this user, this link and this amount, once.
pub(crate) fn spend(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
    confirmation_id: Option<uuid::Uuid>,
    link_id: uuid::Uuid,
    amount_yen: i64,
) -> Result<(), MoneyError> {
    let id = confirmation_id.ok_or(MoneyError::ConfirmationRequired)?;
    let spent = tx.execute(
        "UPDATE money_confirmations SET status = 'used'
         WHERE id = $1 AND user_id = $2 AND link_id = $3 AND amount_yen = $4
           AND status = 'confirmed' AND expires_at > $5",
        &[
            Value::Uuid(id.as_u128()),
            Value::Uuid(user_id),
            Value::Uuid(link_id.as_u128()),
            amount_yen.into(),
            now_ms.into(),
        ],
    )?;
    if spent == 1 {
        Ok(())
    } else {
        Err(MoneyError::ConfirmationInvalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_names_amount_and_payee_in_both_languages() {
        let text = message(30_001, "みずほ銀行 ****1234");
        assert_eq!(
            text,
            "みずほ銀行 ****1234 から ¥30,001 をチャージ / Charge ¥30,001 from みずほ銀行 ****1234"
        );
    }
}
