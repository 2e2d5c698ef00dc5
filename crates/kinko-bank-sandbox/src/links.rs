//! Links (BANK-PROTOCOL §8): every code exchange creates one — one customer's consent for one
//! account to one client, with its scope and the client's DPoP key — and every token of it
//! lives only while the link does. The refresh grant rotates the refresh token and treats a
//! rotated one presented again as copied (the link ends); the client ends a link with RFC 7009
//! revocation; the customer ends one, or reports it or one of its debits, at the bank, and the
//! client hears of it by a signed webhook.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use kinko_ledger::StoreError;
use kinko_store::sql::{Database, Row, Tx, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::client_auth::{self, Client, ClientAuthError};
use crate::dpop;
use crate::oauth::{ACCESS_TOKEN_LIFETIME_MS, Bank, OAuthError, RefreshRequest, TokenResponse};
use crate::random::{self, RandomError, stored_hash};
use crate::store::{self, Account};

const ACCOUNT_REF_KEY_SETTING: &str = "account_ref_key";

/// The account_ref HMAC key: 256 random bits, made at the bank's first start and kept.
pub(crate) fn load_account_ref_key(database: &Database) -> Result<Vec<u8>, StoreError> {
    let encoded = store::setting_or_generate(database, ACCOUNT_REF_KEY_SETTING, || {
        let mut key = [0u8; 32];
        random::fill(&mut key).map_err(|error| StoreError::new(error.to_string()))?;
        Ok(URL_SAFE_NO_PAD.encode(key))
    })?;
    URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .filter(|key| key.len() == 32)
        .ok_or_else(|| StoreError::new("bank_settings.account_ref_key is unusable"))
}

/// Why a link ended. Stored as `end_reason`; the webhook's `reason` is coarser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The customer pressed Revoke at the bank.
    CustomerRevoked,
    /// The customer said they did not authorise the link or one of its debits.
    CustomerReported,
    /// The client revoked it (RFC 7009).
    ClientRevoked,
    /// A rotated refresh token came back: it was copied.
    RefreshTokenReused,
    /// The code that made it was presented again (RFC 6749 §4.1.2).
    CodeReplayed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CustomerRevoked => "customer_revoked",
            EndReason::CustomerReported => "customer_reported",
            EndReason::ClientRevoked => "client_revoked",
            EndReason::RefreshTokenReused => "refresh_token_reused",
            EndReason::CodeReplayed => "code_replayed",
        }
    }

    /// The `reason` claim of the webhook the client gets; none when the client asked.
    pub fn webhook_reason(self) -> Option<&'static str> {
        match self {
            EndReason::CustomerRevoked => Some("customer_revoked"),
            EndReason::CustomerReported => Some("customer_reported"),
            EndReason::RefreshTokenReused | EndReason::CodeReplayed => Some("bank_revoked"),
            EndReason::ClientRevoked => None,
        }
    }
}

/// A link as the bank keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: uuid::Uuid,
    pub client_id: String,
    pub customer_id: uuid::Uuid,
    pub account_id: uuid::Uuid,
    pub scope: String,
    pub jkt: String,
    pub code_hash: String,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
}

const LINK_COLUMNS: &str = "id, client_id, customer_id, account_id, scope, jkt, code_hash, \
                            created_at_ms, ended_at_ms, end_reason";

fn link_from_row(row: &Row) -> Result<Link, StoreError> {
    Ok(Link {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        client_id: row.text(1)?,
        customer_id: uuid::Uuid::from_u128(row.uuid(2)?),
        account_id: uuid::Uuid::from_u128(row.uuid(3)?),
        scope: row.text(4)?,
        jkt: row.text(5)?,
        code_hash: row.text(6)?,
        created_at_ms: row.int(7)?,
        ended_at_ms: row.opt_int(8)?,
        end_reason: row.opt_text(9)?,
    })
}

/// The link `id`, under its row lock.
pub fn link(tx: &mut dyn Tx, id: uuid::Uuid) -> Result<Option<Link>, StoreError> {
    tx.query_opt(
        &format!(
            "SELECT {LINK_COLUMNS} FROM bank_links WHERE id = $1{}",
            tx.for_update()
        ),
        &[Value::Uuid(id.as_u128())],
    )?
    .as_ref()
    .map(link_from_row)
    .transpose()
}

/// Every link of a customer, newest first.
pub fn links_of(tx: &mut dyn Tx, customer_id: uuid::Uuid) -> Result<Vec<Link>, StoreError> {
    tx.query(
        &format!(
            "SELECT {LINK_COLUMNS} FROM bank_links WHERE customer_id = $1
             ORDER BY created_at_ms DESC, id DESC"
        ),
        &[Value::Uuid(customer_id.as_u128())],
    )?
    .iter()
    .map(link_from_row)
    .collect()
}

/// What the wallet may show of an account: type, branch, last three digits.
pub fn account_label(account: &Account) -> String {
    format!(
        "{} {} {}",
        account.kind.label_ja(),
        account.branch,
        crate::oauth::masked(&account.number)
    )
}

/// The random halves of a token answer, drawn before the transaction (drawing can fail).
pub(crate) struct FreshTokens {
    access_token: String,
    refresh_token: String,
}

impl FreshTokens {
    pub(crate) fn new() -> Result<Self, RandomError> {
        Ok(Self {
            access_token: random::token()?,
            refresh_token: random::token()?,
        })
    }
}

/// Makes the link a code exchange creates, and tells the customer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_link(
    tx: &mut dyn Tx,
    client: &Client,
    customer_id: uuid::Uuid,
    account_id: uuid::Uuid,
    scope: &str,
    jkt: &str,
    code_hash: &str,
    now_ms: i64,
) -> Result<Link, StoreError> {
    let link = Link {
        id: uuid::Uuid::now_v7(),
        client_id: client.client_id.clone(),
        customer_id,
        account_id,
        scope: scope.to_owned(),
        jkt: jkt.to_owned(),
        code_hash: code_hash.to_owned(),
        created_at_ms: now_ms,
        ended_at_ms: None,
        end_reason: None,
    };
    tx.execute(
        "INSERT INTO bank_links (id, client_id, customer_id, account_id, scope, jkt, code_hash,
         created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            Value::Uuid(link.id.as_u128()),
            link.client_id.as_str().into(),
            Value::Uuid(customer_id.as_u128()),
            Value::Uuid(account_id.as_u128()),
            scope.into(),
            jkt.into(),
            code_hash.into(),
            now_ms.into(),
        ],
    )?;
    store::record_notice(
        tx,
        customer_id,
        "link_created",
        &format!(
            "{} との口座連携が有効になりました（{scope}）。心当たりがない場合はすぐに解除してください。",
            client.name
        ),
        now_ms,
    )?;
    Ok(link)
}

fn client_name(tx: &mut dyn Tx, client_id: &str) -> Result<String, StoreError> {
    Ok(
        client_auth::find(tx, client_id)?
            .map_or_else(|| client_id.to_owned(), |client| client.name),
    )
}

/// Ends a live link: every token of it dies, and the customer is told. `None` when it had
/// ended already (nothing changes, nobody is told twice).
pub(crate) fn end_link(
    tx: &mut dyn Tx,
    link_id: uuid::Uuid,
    reason: EndReason,
    now_ms: i64,
) -> Result<Option<Link>, StoreError> {
    let ended = tx.execute(
        "UPDATE bank_links SET ended_at_ms = $2, end_reason = $3
         WHERE id = $1 AND ended_at_ms IS NULL",
        &[
            Value::Uuid(link_id.as_u128()),
            now_ms.into(),
            reason.as_str().into(),
        ],
    )?;
    if ended != 1 {
        return Ok(None);
    }
    tx.execute(
        "UPDATE bank_oauth_tokens SET revoked_at_ms = $2
         WHERE link_id = $1 AND revoked_at_ms IS NULL",
        &[Value::Uuid(link_id.as_u128()), now_ms.into()],
    )?;
    let link = link(tx, link_id)?.ok_or_else(|| StoreError::new("the ended link vanished"))?;
    let name = client_name(tx, &link.client_id)?;
    let place = store::account(tx, link.account_id)?
        .map(|account| account_label(&account))
        .unwrap_or_default();
    let body = match reason {
        EndReason::CustomerRevoked => {
            format!("{name} との口座連携（{place}）を、お客さまのご操作により解除しました。")
        }
        EndReason::CustomerReported => format!(
            "{name} との口座連携（{place}）について「身に覚えがない」とのご連絡を受け、連携を停止しました。\
             {name} にもお知らせしました。"
        ),
        EndReason::ClientRevoked => {
            format!("{name} が口座連携（{place}）を解除しました。")
        }
        EndReason::RefreshTokenReused | EndReason::CodeReplayed => format!(
            "{name} との口座連携（{place}）に不正利用のおそれがあるため、当行が連携を停止しました。"
        ),
    };
    store::record_notice(tx, link.customer_id, "link_ended", &body, now_ms)?;
    Ok(Some(link))
}

/// What the customer asks the bank to report as not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FraudReport {
    /// The whole link.
    Link(uuid::Uuid),
    /// One debit (the bank's payment id), and with it the link that made it.
    Debit(uuid::Uuid),
}

impl Bank {
    /// The pairwise account reference: BASE64URL(HMAC-SHA-256(bank key, client id ‖ account
    /// id as 16 bytes)). The account id has a fixed length, so the input is unambiguous.
    pub fn account_ref(
        &self,
        client_id: &str,
        account_id: uuid::Uuid,
    ) -> Result<String, StoreError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.account_ref_key)
            .map_err(|_| StoreError::new("the account_ref key is unusable"))?;
        mac.update(client_id.as_bytes());
        mac.update(account_id.as_bytes());
        Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// Stores a fresh access and refresh token for the link and answers them.
    pub(crate) fn issue_tokens(
        &self,
        tx: &mut dyn Tx,
        link: &Link,
        tokens: &FreshTokens,
        now_ms: i64,
    ) -> Result<TokenResponse, StoreError> {
        tx.execute(
            "INSERT INTO bank_oauth_tokens (token_hash, code_hash, client_id, customer_id,
             account_id, scope, jkt, issued_at_ms, expires_at_ms, link_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                stored_hash(&tokens.access_token).into(),
                link.code_hash.as_str().into(),
                link.client_id.as_str().into(),
                Value::Uuid(link.customer_id.as_u128()),
                Value::Uuid(link.account_id.as_u128()),
                link.scope.as_str().into(),
                link.jkt.as_str().into(),
                now_ms.into(),
                (now_ms + ACCESS_TOKEN_LIFETIME_MS).into(),
                Value::Uuid(link.id.as_u128()),
            ],
        )?;
        tx.execute(
            "INSERT INTO bank_refresh_tokens (token_hash, link_id, issued_at_ms)
             VALUES ($1, $2, $3)",
            &[
                stored_hash(&tokens.refresh_token).into(),
                Value::Uuid(link.id.as_u128()),
                now_ms.into(),
            ],
        )?;
        let account = store::account(tx, link.account_id)?
            .ok_or_else(|| StoreError::new("the link's account vanished"))?;
        Ok(TokenResponse {
            access_token: tokens.access_token.clone(),
            token_type: "DPoP",
            expires_in: ACCESS_TOKEN_LIFETIME_MS / 1_000,
            scope: link.scope.clone(),
            refresh_token: tokens.refresh_token.clone(),
            link_id: link.id,
            account_ref: self.account_ref(&link.client_id, link.account_id)?,
            account_label: account_label(&account),
        })
    }

    /// Ends a link and, when the client did not ask for it, queues the `link.revoked` event.
    pub(crate) fn end_link_with_event(
        &self,
        tx: &mut dyn Tx,
        link_id: uuid::Uuid,
        reason: EndReason,
        now_ms: i64,
    ) -> Result<Option<Link>, StoreError> {
        let Some(link) = end_link(tx, link_id, reason, now_ms)? else {
            return Ok(None);
        };
        if let Some(webhook_reason) = reason.webhook_reason() {
            self.enqueue_event(tx, &link, "link.revoked", webhook_reason, None, now_ms)?;
        }
        Ok(Some(link))
    }

    /// The refresh grant: client authentication, a proof by the link's key, and a refresh
    /// token that has not been rotated → new access and refresh tokens. A rotated token
    /// presented again ends the link.
    pub fn refresh(
        &self,
        request: &RefreshRequest,
        dpop_proof: Option<&str>,
        now_ms: i64,
    ) -> Result<TokenResponse, OAuthError> {
        if request.grant_type != "refresh_token" {
            return Err(OAuthError::UnsupportedGrantType);
        }
        if request.client_assertion_type != client_auth::ASSERTION_TYPE {
            return Err(OAuthError::InvalidClient(ClientAuthError::Malformed));
        }
        let client = self.authenticate_client(&request.client_assertion, now_ms)?;
        let proof = dpop::verify(
            self.database(),
            dpop_proof,
            "POST",
            &self.token_endpoint(),
            None,
            now_ms,
        )?;
        let tokens = FreshTokens::new()?;
        let token_hash = stored_hash(&request.refresh_token);
        type Outcome = Result<TokenResponse, OAuthError>;
        // The outer Ok commits: a reuse ends the link although the request fails.
        self.database()
            .transaction(|tx: &mut dyn Tx| -> Result<Outcome, StoreError> {
                let Some(row) = tx.query_opt(
                    &format!(
                        "SELECT link_id, rotated_at_ms FROM bank_refresh_tokens
                         WHERE token_hash = $1{}",
                        tx.for_update()
                    ),
                    &[token_hash.as_str().into()],
                )?
                else {
                    return Ok(Err(OAuthError::RefreshTokenInvalid));
                };
                let link_id = uuid::Uuid::from_u128(row.uuid(0)?);
                let Some(link) = link(tx, link_id)? else {
                    return Ok(Err(OAuthError::RefreshTokenInvalid));
                };
                if link.client_id != client.client_id || link.ended_at_ms.is_some() {
                    return Ok(Err(OAuthError::RefreshTokenInvalid));
                }
                if row.opt_int(1)?.is_some() {
                    self.end_link_with_event(tx, link.id, EndReason::RefreshTokenReused, now_ms)?;
                    return Ok(Err(OAuthError::RefreshTokenInvalid));
                }
                if !bool::from(proof.jkt.as_bytes().ct_eq(link.jkt.as_bytes())) {
                    return Ok(Err(OAuthError::RefreshTokenInvalid));
                }
                let rotated = tx.execute(
                    "UPDATE bank_refresh_tokens SET rotated_at_ms = $2
                     WHERE token_hash = $1 AND rotated_at_ms IS NULL",
                    &[token_hash.as_str().into(), now_ms.into()],
                )?;
                if rotated != 1 {
                    return Ok(Err(OAuthError::RefreshTokenInvalid));
                }
                Ok(Ok(self.issue_tokens(tx, &link, &tokens, now_ms)?))
            })?
    }

    /// RFC 7009 revocation by the client: a refresh token of this client ends its link (the
    /// customer is told; no webhook goes back to the client); an access token of this client
    /// dies alone. Anything else changes nothing, and the answer is the same (§2.2).
    pub fn revoke(
        &self,
        client_assertion_type: &str,
        client_assertion: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<(), OAuthError> {
        if client_assertion_type != client_auth::ASSERTION_TYPE {
            return Err(OAuthError::InvalidClient(ClientAuthError::Malformed));
        }
        let client = self.authenticate_client(client_assertion, now_ms)?;
        let token_hash = stored_hash(token);
        self.database().transaction(|tx: &mut dyn Tx| {
            let refresh = tx.query_opt(
                "SELECT r.link_id FROM bank_refresh_tokens r
                 JOIN bank_links l ON l.id = r.link_id
                 WHERE r.token_hash = $1 AND l.client_id = $2",
                &[token_hash.as_str().into(), client.client_id.as_str().into()],
            )?;
            if let Some(row) = refresh {
                end_link(
                    tx,
                    uuid::Uuid::from_u128(row.uuid(0)?),
                    EndReason::ClientRevoked,
                    now_ms,
                )?;
                return Ok(());
            }
            tx.execute(
                "UPDATE bank_oauth_tokens SET revoked_at_ms = $3
                 WHERE token_hash = $1 AND client_id = $2 AND revoked_at_ms IS NULL",
                &[
                    token_hash.as_str().into(),
                    client.client_id.as_str().into(),
                    now_ms.into(),
                ],
            )?;
            Ok(())
        })
    }

    /// The customer ends one of their links at the bank: its tokens die at once and the
    /// client gets `link.revoked`. Ending an ended link changes nothing.
    pub fn revoke_link_by_customer(
        &self,
        customer_id: uuid::Uuid,
        link_id: uuid::Uuid,
        now_ms: i64,
    ) -> Result<(), OAuthError> {
        self.database().transaction(|tx: &mut dyn Tx| {
            link(tx, link_id)?
                .filter(|link| link.customer_id == customer_id)
                .ok_or(OAuthError::LinkNotFound)?;
            self.end_link_with_event(tx, link_id, EndReason::CustomerRevoked, now_ms)?;
            Ok(())
        })
    }

    /// The customer did not authorise a link, or a debit: the bank ends the link first, then
    /// sends `fraud.reported` (with the debit's `Idempotency-Key` as `payment_key`). A second
    /// report of the same debit changes nothing.
    pub fn report_fraud(
        &self,
        customer_id: uuid::Uuid,
        report: FraudReport,
        now_ms: i64,
    ) -> Result<(), OAuthError> {
        self.database().transaction(|tx: &mut dyn Tx| {
            let (link_id, payment_key) = match report {
                FraudReport::Link(link_id) => (link_id, None),
                FraudReport::Debit(payment_id) => {
                    let row = tx
                        .query_opt(
                            &format!(
                                "SELECT p.link_id, p.idempotency_key, p.reported_at_ms
                                 FROM bank_payments p
                                 JOIN bank_accounts a ON a.id = p.account_id
                                 WHERE p.id = $1 AND p.kind = 'debit' AND a.customer_id = $2{}",
                                tx.for_update()
                            ),
                            &[
                                Value::Uuid(payment_id.as_u128()),
                                Value::Uuid(customer_id.as_u128()),
                            ],
                        )?
                        .ok_or(OAuthError::DebitNotFound)?;
                    if row.opt_int(2)?.is_some() {
                        return Ok(());
                    }
                    tx.execute(
                        "UPDATE bank_payments SET reported_at_ms = $2 WHERE id = $1",
                        &[Value::Uuid(payment_id.as_u128()), now_ms.into()],
                    )?;
                    // A debit from before links were recorded names no link: nothing to end.
                    let Some(link_id) = row.opt_uuid(0)? else {
                        return Ok(());
                    };
                    (uuid::Uuid::from_u128(link_id), Some(row.text(1)?))
                }
            };
            let link = link(tx, link_id)?
                .filter(|link| link.customer_id == customer_id)
                .ok_or(OAuthError::LinkNotFound)?;
            let ended_now = end_link(tx, link.id, EndReason::CustomerReported, now_ms)?;
            let reported_before =
                link.end_reason.as_deref() == Some(EndReason::CustomerReported.as_str());
            if ended_now.is_none() && reported_before && payment_key.is_none() {
                // The same link reported twice: the client has heard of it already.
                return Ok(());
            }
            self.enqueue_event(
                tx,
                &link,
                "fraud.reported",
                "customer_reported",
                payment_key.as_deref(),
                now_ms,
            )?;
            Ok(())
        })
    }
}
