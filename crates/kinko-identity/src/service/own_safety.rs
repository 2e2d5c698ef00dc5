//! What a wallet holder can do for their own safety from a signed-in session: sign out every
//! other session at once, freeze the wallet's outgoing money for a while, and read the
//! security notices Kinko sent them. A freeze set here is the same column the credential
//! changes and a bank's fraud report set (`identity_users.outgoing_frozen_until`), and like
//! them it never shortens a freeze already in place: someone holding a stolen session cannot
//! use it to lift one. It ends by itself; support can end it earlier.

use kinko_audit::Actor;
use kinko_store::sql::{Tx, Value};

use super::{IdentityError, IdentityService, audit, send, user_by_id};
use crate::notify::Channel;
use crate::session::{self, SessionInfo};

/// How long a holder may freeze their wallet at once: a day, or a week.
pub const FREEZE_HOURS_ALLOWED: [i64; 2] = [24, 7 * 24];

/// The notices a holder may read back on the security page: about their security, never one
/// that carries a code (a session thief must not read a recovery or new-device code here).
pub const SECURITY_NOTICE_PURPOSES: [&str; 9] = [
    "account_locked",
    "account_recovered",
    "password_changed",
    "second_factor_added",
    "bank_link_created",
    "bank_link_ended",
    "bank_link_attempt_elsewhere",
    "bank_fraud_reported",
    "wallet_frozen",
];

/// How many notices the page shows.
pub const SECURITY_NOTICES_MAX: i64 = 10;

/// One security notice sent to the holder: why (its purpose) and when.
#[derive(Debug, Clone)]
pub struct SecurityNotice {
    pub purpose: String,
    pub channel: String,
    pub created_at_ms: i64,
}

impl IdentityService {
    /// Ends every live session of the holder but this one; returns how many ended. Audited.
    pub fn sign_out_everywhere_else(&self, session: &SessionInfo) -> Result<u64, IdentityError> {
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            let ended =
                session::revoke_all_except(tx, now_ms, session.user_id, Some(session.session_id))?;
            audit(
                tx,
                now_ms,
                Actor::User(session.user_id),
                "sessions.revoked_others",
                session.user_id,
                serde_json::json!({ "ended": ended }),
            )?;
            Ok(ended)
        })
    }

    /// Freezes the wallet's outgoing money (payments, transfers, withdrawals) for `hours`
    /// (one of [`FREEZE_HOURS_ALLOWED`]), never shortening a longer freeze. Returns when the
    /// freeze ends. Audited, and the holder's e-mail is told.
    pub fn freeze_own_wallet(
        &self,
        session: &SessionInfo,
        hours: i64,
    ) -> Result<i64, IdentityError> {
        if !FREEZE_HOURS_ALLOWED.contains(&hours) {
            return Err(IdentityError::NotFound);
        }
        let now_ms = self.now_ms();
        let until_ms = now_ms.saturating_add(hours.saturating_mul(3_600_000));
        self.db.transaction(|tx: &mut dyn Tx| {
            let user = user_by_id(tx, session.user_id)?.ok_or(IdentityError::NotFound)?;
            let frozen_until_ms = user.outgoing_frozen_until.map_or(until_ms, |current| current.max(until_ms));
            tx.execute(
                "UPDATE identity_users SET outgoing_frozen_until = $2 WHERE id = $1",
                &[Value::Uuid(user.id), Value::Int(frozen_until_ms)],
            )?;
            audit(
                tx,
                now_ms,
                Actor::User(user.id),
                "wallet.frozen_by_holder",
                user.id,
                serde_json::json!({ "hours": hours, "frozen_until_ms": frozen_until_ms }),
            )?;
            send(
                tx,
                now_ms,
                Channel::Email,
                &user.email,
                "wallet_frozen",
                "Kinko: ウォレットを凍結しました / Your wallet is frozen",
                "ご本人の操作でウォレットからの送金・支払い・出金を止めました。心当たりがなければサポートへ。 / You froze money leaving your wallet. Not you? Contact support.",
            )?;
            Ok(frozen_until_ms)
        })
    }

    /// The latest security notices sent to the holder's e-mail address or phone, newest first.
    pub fn security_notices(
        &self,
        session: &SessionInfo,
    ) -> Result<Vec<SecurityNotice>, IdentityError> {
        self.db.read(|tx: &mut dyn Tx| {
            let user = super::user_read(tx, session.user_id)?.ok_or(IdentityError::NotFound)?;
            let placeholders: Vec<String> = (0..SECURITY_NOTICE_PURPOSES.len())
                .map(|index| format!("${}", index + 4))
                .collect();
            let mut params = vec![
                Value::from(user.email.as_str()),
                Value::from(user.phone.as_str()),
                Value::Int(SECURITY_NOTICES_MAX),
            ];
            params.extend(
                SECURITY_NOTICE_PURPOSES
                    .iter()
                    .map(|purpose| Value::from(*purpose)),
            );
            let rows = tx.query(
                &format!(
                    "SELECT purpose, channel, created_at FROM notify_outbox
                     WHERE destination IN ($1, $2) AND purpose IN ({})
                     ORDER BY created_at DESC, id DESC LIMIT $3",
                    placeholders.join(", ")
                ),
                &params,
            )?;
            rows.iter()
                .map(|row| {
                    Ok(SecurityNotice {
                        purpose: row.text(0)?,
                        channel: row.text(1)?,
                        created_at_ms: row.int(2)?,
                    })
                })
                .collect()
        })
    }
}
