//! The customer's side at the bank (BANK-PROTOCOL §10) as plain functions: the bank's own
//! sign-in sessions (a random cookie value, stored only as its hash), what the customer page
//! shows (accounts, links, debits, notices), and lifting the legacy verify lock.

use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};

use crate::client_auth;
use crate::links::{self, Link};
use crate::oauth::{AuthenticatedCustomer, Bank, LOGIN_FRESHNESS_MS, OAuthError};
use crate::random::{self, stored_hash};
use crate::store::{self, Account, Notice};

/// A session lasts as long as a login counts for consent.
pub const SESSION_LIFETIME_MS: i64 = LOGIN_FRESHNESS_MS;

/// One link as the customer page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    pub link: Link,
    pub client_name: String,
}

/// One debit as the customer page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitView {
    pub id: uuid::Uuid,
    pub client_name: String,
    pub amount_yen: i64,
    pub description: String,
    pub status: String,
    pub created_at_ms: i64,
    pub reported: bool,
}

/// One account with what hangs on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub account: Account,
    pub label: String,
    pub legacy_locked: bool,
    pub links: Vec<LinkView>,
    pub debits: Vec<DebitView>,
}

/// Everything the customer page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub online_id: String,
    pub accounts: Vec<AccountView>,
    pub notices: Vec<Notice>,
}

impl Bank {
    /// Opens a session for a customer who just signed in; answers the cookie value.
    pub fn open_session(&self, customer: &AuthenticatedCustomer) -> Result<String, OAuthError> {
        let token = random::token()?;
        self.database().transaction(|tx: &mut dyn Tx| {
            // Expired sessions go as new ones come: the table stays small.
            tx.execute(
                "DELETE FROM bank_customer_sessions WHERE expires_at_ms < $1",
                &[customer.authenticated_at_ms().into()],
            )?;
            tx.execute(
                "INSERT INTO bank_customer_sessions (token_hash, customer_id,
                 authenticated_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)",
                &[
                    stored_hash(&token).into(),
                    Value::Uuid(customer.customer_id().as_u128()),
                    customer.authenticated_at_ms().into(),
                    (customer.authenticated_at_ms() + SESSION_LIFETIME_MS).into(),
                ],
            )?;
            Ok::<_, OAuthError>(())
        })?;
        Ok(token)
    }

    /// The signed-in customer behind a session cookie, while the session lasts.
    pub fn session(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<Option<AuthenticatedCustomer>, StoreError> {
        let row = self.database().transaction(|tx: &mut dyn Tx| {
            tx.query_opt(
                "SELECT customer_id, authenticated_at_ms FROM bank_customer_sessions
                 WHERE token_hash = $1 AND expires_at_ms > $2",
                &[stored_hash(token).into(), now_ms.into()],
            )
        })?;
        row.map(|row| {
            Ok(AuthenticatedCustomer::restored(
                uuid::Uuid::from_u128(row.uuid(0)?),
                row.int(1)?,
            ))
        })
        .transpose()
    }

    /// Signs out: the session is gone.
    pub fn close_session(&self, token: &str) -> Result<(), StoreError> {
        self.database().transaction(|tx: &mut dyn Tx| {
            tx.execute(
                "DELETE FROM bank_customer_sessions WHERE token_hash = $1",
                &[stored_hash(token).into()],
            )?;
            Ok(())
        })
    }

    /// What the customer page shows.
    pub fn customer_overview(&self, customer_id: uuid::Uuid) -> Result<Overview, StoreError> {
        self.database().transaction(|tx: &mut dyn Tx| {
            let online_id = tx
                .query_one(
                    "SELECT online_id FROM bank_customers WHERE id = $1",
                    &[Value::Uuid(customer_id.as_u128())],
                )?
                .text(0)?;
            let all_links = links::links_of(tx, customer_id)?;
            let mut accounts = Vec::new();
            for account in store::accounts_of(tx, customer_id)? {
                let legacy_locked = tx
                    .query_opt(
                        "SELECT locked_at_ms FROM bank_legacy_locks WHERE account_id = $1",
                        &[Value::Uuid(account.id.as_u128())],
                    )?
                    .map(|row| row.opt_int(0))
                    .transpose()?
                    .flatten()
                    .is_some();
                let mut link_views = Vec::new();
                for link in all_links
                    .iter()
                    .filter(|link| link.account_id == account.id)
                {
                    link_views.push(LinkView {
                        client_name: client_name(tx, &link.client_id)?,
                        link: link.clone(),
                    });
                }
                let rows = tx.query(
                    "SELECT id, client_id, amount_yen, description, status, created_at_ms,
                     reported_at_ms FROM bank_payments
                     WHERE account_id = $1 AND kind = 'debit'
                     ORDER BY created_at_ms DESC, id DESC",
                    &[Value::Uuid(account.id.as_u128())],
                )?;
                let mut debits = Vec::new();
                for row in rows {
                    debits.push(DebitView {
                        id: uuid::Uuid::from_u128(row.uuid(0)?),
                        client_name: client_name(tx, &row.text(1)?)?,
                        amount_yen: row.int(2)?,
                        description: row.text(3)?,
                        status: row.text(4)?,
                        created_at_ms: row.int(5)?,
                        reported: row.opt_int(6)?.is_some(),
                    });
                }
                accounts.push(AccountView {
                    label: links::account_label(&account),
                    account,
                    legacy_locked,
                    links: link_views,
                    debits,
                });
            }
            let mut notices = store::notices_of(tx, customer_id)?;
            notices.reverse();
            Ok(Overview {
                online_id,
                accounts,
                notices,
            })
        })
    }

    /// The bank lifts the legacy verify lock of one of the customer's accounts (from the
    /// customer page, after sign-in); the customer is told.
    pub fn lift_legacy_lock(
        &self,
        customer_id: uuid::Uuid,
        account_id: uuid::Uuid,
        now_ms: i64,
    ) -> Result<(), OAuthError> {
        self.database().transaction(|tx: &mut dyn Tx| {
            let account = store::account(tx, account_id)?
                .filter(|account| account.customer_id == customer_id)
                .ok_or(OAuthError::AccountNotFound)?;
            let lifted = tx.execute(
                "UPDATE bank_legacy_locks SET failures = 0, locked_at_ms = NULL
                 WHERE account_id = $1 AND locked_at_ms IS NOT NULL",
                &[Value::Uuid(account_id.as_u128())],
            )?;
            if lifted == 1 {
                store::record_notice(
                    tx,
                    customer_id,
                    "legacy_unlocked",
                    &format!(
                        "{} の口座について、暗証番号などによる本人確認の停止を解除しました。",
                        links::account_label(&account)
                    ),
                    now_ms,
                )?;
            }
            Ok(())
        })
    }
}

fn client_name(tx: &mut dyn Tx, client_id: &str) -> Result<String, StoreError> {
    Ok(
        client_auth::find(tx, client_id)?
            .map_or_else(|| client_id.to_owned(), |client| client.name),
    )
}
