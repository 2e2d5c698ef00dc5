//! The legacy verify method: a client (authenticated by `private_key_jwt`, with no consent
//! from the customer) asks whether branch, account type, account number, cash-card PIN, kana
//! name and birth date all belong together. This is the method the 2020 attacks abused, so
//! the bank fences it in itself:
//! - one answer, match or no match, whichever field was wrong, and the same work (one argon2
//!   check) on every path, unknown accounts included;
//! - its own lock per account after [`FAILURES_MAX`] failures in a row; a locked account
//!   answers no match to everything until the bank lifts the lock, and the customer is told
//!   on the bank's own channel;
//! - every match is told to the customer too, naming the client;
//! - the PIN is only ever held as a `SecretString` (whose `Debug` is redacted) and compared
//!   against its argon2id hash; it is never stored, logged or echoed.

use kinko_store::sql::{Tx, Value};
use secrecy::SecretString;
use subtle::ConstantTimeEq as _;

use crate::client_auth;
use crate::holder::normalize_kana;
use crate::oauth::Bank;
use crate::resource::ResourceError;
use crate::store::{self, AccountKind};

/// Failures in a row on one account before the bank locks the legacy method for it.
pub const FAILURES_MAX: i64 = 5;

/// A legacy verification request. `Debug` shows no PIN.
#[derive(Debug, Clone)]
pub struct LegacyVerifyRequest {
    pub bank_code: String,
    pub branch: String,
    pub account_type: String,
    pub account_number: String,
    pub pin: SecretString,
    pub kana_name: String,
    pub birth_date: String,
}

fn digits(text: &str, length: usize) -> bool {
    text.len() == length && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Shape checks only: they say nothing about any account, so they may answer differently.
fn check_shape(request: &LegacyVerifyRequest) -> Result<AccountKind, ResourceError> {
    use secrecy::ExposeSecret as _;
    if !digits(&request.bank_code, 4) {
        return Err(ResourceError::RequestInvalid("bank_code"));
    }
    if !digits(&request.branch, 3) {
        return Err(ResourceError::RequestInvalid("branch"));
    }
    let kind = AccountKind::parse(&request.account_type)
        .ok_or(ResourceError::RequestInvalid("account_type"))?;
    if !digits(&request.account_number, 7) {
        return Err(ResourceError::RequestInvalid("account_number"));
    }
    if !digits(request.pin.expose_secret(), 4) {
        return Err(ResourceError::RequestInvalid("pin"));
    }
    if request.kana_name.chars().count() > crate::holder::KANA_LENGTH_MAX {
        return Err(ResourceError::RequestInvalid("kana_name"));
    }
    if request.birth_date.len() != 10 {
        return Err(ResourceError::RequestInvalid("birth_date"));
    }
    Ok(kind)
}

impl Bank {
    /// `POST /v1/legacy/verify`: the account's pairwise reference for this client (the same
    /// one a consent by OAuth gives, so a wallet platform keys one account alike whichever way
    /// it was verified) only when every field matches an account that is not locked; `None`
    /// otherwise. Failures count toward the account's lock in the same transaction as the
    /// check, under the lock row's lock, so parallel guesses cannot pass the limit.
    pub fn legacy_verify(
        &self,
        client_assertion: &str,
        request: &LegacyVerifyRequest,
        now_ms: i64,
    ) -> Result<Option<String>, ResourceError> {
        let client = self.authenticate_client(client_assertion, now_ms)?;
        let kind = check_shape(request)?;
        self.database().transaction(|tx: &mut dyn Tx| {
            let found = tx.query_opt(
                "SELECT id, customer_id, holder_kana, birth_date, pin_hash FROM bank_accounts
                 WHERE bank_code = $1 AND branch = $2 AND kind = $3 AND number = $4",
                &[
                    request.bank_code.as_str().into(),
                    request.branch.as_str().into(),
                    kind.as_str().into(),
                    request.account_number.as_str().into(),
                ],
            )?;
            let Some(row) = found else {
                kinko_identity::password::verify_unknown_user(&request.pin);
                return Ok(None);
            };
            let account_id = uuid::Uuid::from_u128(row.uuid(0)?);
            let customer_id = uuid::Uuid::from_u128(row.uuid(1)?);
            tx.execute(
                "INSERT INTO bank_legacy_locks (account_id) VALUES ($1)
                 ON CONFLICT (account_id) DO NOTHING",
                &[Value::Uuid(account_id.as_u128())],
            )?;
            let lock = tx.query_one(
                &format!(
                    "SELECT failures, locked_at_ms FROM bank_legacy_locks WHERE account_id = $1{}",
                    tx.for_update()
                ),
                &[Value::Uuid(account_id.as_u128())],
            )?;
            let locked = lock.opt_int(1)?.is_some();
            // Every check runs, whatever failed first, so the time says nothing either.
            let pin_same = kinko_identity::password::verify_password(&row.text(4)?, &request.pin);
            let kana_same = normalize_kana(&row.text(2)?)
                .as_bytes()
                .ct_eq(normalize_kana(&request.kana_name).as_bytes());
            let birth_same = row
                .text(3)?
                .as_bytes()
                .ct_eq(request.birth_date.trim().as_bytes());
            let all_same = pin_same && bool::from(kana_same & birth_same);
            if locked {
                return Ok(None);
            }
            let account = store::account(tx, account_id)?
                .ok_or_else(|| kinko_ledger::StoreError::new("the account vanished"))?;
            let place = format!(
                "{} 支店 {} ***{}",
                account.branch,
                account.kind.label_ja(),
                account.number.get(4..).unwrap_or_default()
            );
            if all_same {
                tx.execute(
                    "UPDATE bank_legacy_locks SET failures = 0 WHERE account_id = $1",
                    &[Value::Uuid(account_id.as_u128())],
                )?;
                let client_name = client_auth::find(tx, &client.client_id)?
                    .map_or_else(|| client.client_id.clone(), |found| found.name);
                store::record_notice(
                    tx,
                    customer_id,
                    "legacy_verified",
                    &format!(
                        "{client_name} が、暗証番号などにより {place} の口座の本人確認を行いました。\
                         心当たりがない場合はすぐに当行にご連絡ください。"
                    ),
                    now_ms,
                )?;
                return Ok(Some(self.account_ref(&client.client_id, account_id)?));
            }
            let failures = lock.int(0)?.saturating_add(1);
            if failures >= FAILURES_MAX {
                tx.execute(
                    "UPDATE bank_legacy_locks SET failures = $2, locked_at_ms = $3
                     WHERE account_id = $1",
                    &[
                        Value::Uuid(account_id.as_u128()),
                        failures.into(),
                        now_ms.into(),
                    ],
                )?;
                store::record_notice(
                    tx,
                    customer_id,
                    "legacy_locked",
                    &format!(
                        "{place} の口座について、暗証番号などによる本人確認に続けて失敗したため、\
                         この方法での確認を停止しました。心当たりがない場合は当行にご連絡ください。"
                    ),
                    now_ms,
                )?;
            } else {
                tx.execute(
                    "UPDATE bank_legacy_locks SET failures = $2 WHERE account_id = $1",
                    &[Value::Uuid(account_id.as_u128()), failures.into()],
                )?;
            }
            Ok(None)
        })
    }
}
