//! The per-day statement (`POST /v1/statements`, `docs/BANK-PROTOCOL.md` section 6): every
//! debit and credit the bank decided for the authenticated client on one Japan-time day,
//! settled or rejected, in the order the bank decided them, a page at a time. It is how a
//! client reconciles its books with the bank's ("three-way": the bank, its rows, its ledger).
//! Authenticated like the payment lookup: `private_key_jwt`, no link token — a statement
//! covers every link, ended or not. A client sees only its own orders.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kinko_banking::client::{STATEMENT_PAGE_ENTRIES_MAX, StatementDay};
use kinko_store::sql::{Tx, Value};
use serde::{Deserialize, Serialize};

use crate::client_auth::{self, ClientAuthError};
use crate::http::{HttpState, blocking, refusal};
use crate::oauth::{Bank, OAuthError};
use crate::resource::ResourceError;

/// One entry of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementEntry {
    pub id: uuid::Uuid,
    /// `debit` or `credit`.
    pub kind: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
    pub bank_code: String,
    pub amount_yen: i64,
    /// `settled` or `rejected`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub decided_at_ms: i64,
}

/// One page of a day's statement; `next_cursor` continues it (`null`: the day is complete so
/// far).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    pub day: String,
    pub entries: Vec<StatementEntry>,
    pub next_cursor: Option<String>,
}

/// Where the previous page stopped: the last entry's decision time and id. Opaque to clients.
fn cursor_text(decided_at_ms: i64, id: uuid::Uuid) -> String {
    format!("{decided_at_ms}.{}", id.simple())
}

fn parse_cursor(text: &str) -> Option<(i64, uuid::Uuid)> {
    let (at, id) = text.split_once('.')?;
    if at.is_empty() || at.len() > 19 || !at.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    if id.len() != 32 {
        return None;
    }
    Some((at.parse().ok()?, uuid::Uuid::try_parse(id).ok()?))
}

impl Bank {
    /// The authenticated client's debits and credits decided on `day`, from `cursor` on, at
    /// most `limit` (1–[`STATEMENT_PAGE_ENTRIES_MAX`], default the maximum).
    pub fn statement(
        &self,
        client_assertion: &str,
        day: &str,
        cursor: Option<&str>,
        limit: Option<&str>,
        now_ms: i64,
    ) -> Result<Statement, ResourceError> {
        let client = self.authenticate_client(client_assertion, now_ms)?;
        let day = StatementDay::parse(day).ok_or(ResourceError::RequestInvalid("day"))?;
        let limit = match limit {
            None => STATEMENT_PAGE_ENTRIES_MAX,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|limit| (1..=STATEMENT_PAGE_ENTRIES_MAX).contains(limit))
                .ok_or(ResourceError::RequestInvalid("limit"))?,
        };
        let after = match cursor {
            None => (i64::MIN, uuid::Uuid::nil()),
            Some(text) => parse_cursor(text).ok_or(ResourceError::RequestInvalid("cursor"))?,
        };
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        let rows = self.database().read(|tx: &mut dyn Tx| {
            tx.query(
                "SELECT p.id, p.kind, p.idempotency_key, a.bank_code, p.amount_yen, p.status,
                        p.reason, p.created_at_ms
                 FROM bank_payments p JOIN bank_accounts a ON a.id = p.account_id
                 WHERE p.client_id = $1 AND p.created_at_ms >= $2 AND p.created_at_ms < $3
                   AND (p.created_at_ms > $4 OR (p.created_at_ms = $4 AND p.id > $5))
                 ORDER BY p.created_at_ms, p.id
                 LIMIT $6",
                &[
                    client.client_id.as_str().into(),
                    day.start_ms().into(),
                    day.end_ms().into(),
                    after.0.into(),
                    Value::Uuid(after.1.as_u128()),
                    fetch.into(),
                ],
            )
        })?;
        let mut entries = rows
            .iter()
            .map(|row| {
                Ok(StatementEntry {
                    id: uuid::Uuid::from_u128(row.uuid(0)?),
                    kind: row.text(1)?,
                    key: row.text(2)?,
                    bank_code: row.text(3)?,
                    amount_yen: row.int(4)?,
                    status: row.text(5)?,
                    reason: row.opt_text(6)?,
                    decided_at_ms: row.int(7)?,
                })
            })
            .collect::<Result<Vec<_>, kinko_ledger::StoreError>>()?;
        let next_cursor = if entries.len() > limit {
            entries.truncate(limit);
            entries
                .last()
                .map(|last| cursor_text(last.decided_at_ms, last.id))
        } else {
            None
        };
        Ok(Statement {
            day: day.to_string(),
            entries,
            next_cursor,
        })
    }
}

/// The statement form: the client's own authentication, the day, and the page.
#[derive(Deserialize)]
pub(crate) struct StatementForm {
    client_assertion_type: String,
    client_assertion: String,
    day: String,
    cursor: Option<String>,
    limit: Option<String>,
}

/// `POST /v1/statements` (form, `private_key_jwt`).
pub(crate) async fn statement(
    State(state): State<HttpState>,
    form: Result<Form<StatementForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return crate::http::resource_refusal(&ResourceError::RequestInvalid("body"))
            .into_response();
    };
    if form.client_assertion_type != client_auth::ASSERTION_TYPE {
        return refusal(
            &OAuthError::InvalidClient(ClientAuthError::Malformed),
            false,
        )
        .into_response();
    }
    let now_ms = state.now_ms();
    let bank = Arc::clone(&state.bank);
    let outcome = blocking(move || {
        bank.statement(
            &form.client_assertion,
            &form.day,
            form.cursor.as_deref(),
            form.limit.as_deref(),
            now_ms,
        )
    })
    .await;
    match outcome {
        Ok(Ok(statement)) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(statement),
        )
            .into_response(),
        Ok(Err(ResourceError::OAuth(error))) => refusal(&error, false).into_response(),
        Ok(Err(error)) => crate::http::resource_refusal(&error).into_response(),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::{cursor_text, parse_cursor};

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(
            parse_cursor(&cursor_text(1_796_482_800_000, id)),
            Some((1_796_482_800_000, id))
        );
        for bad in [
            "",
            ".",
            "12.",
            ".abc",
            "-1.00000000000000000000000000000000",
            "1.xyz",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }
}
