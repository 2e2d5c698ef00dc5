//! What a wallet's owner sees: the balance (posted, available, incoming pending) from the
//! ledger, and the history of movements, newest first, cursor-paginated, filterable by kind
//! and date, and exportable as CSV that Excel in Japan opens (UTF-8 with a BOM).

use kinko_identity::session::SessionInfo;
use kinko_store::sql::{Tx, Value};
use serde::Serialize;

use crate::accounts;
use crate::charge::{MoneyError, MoneyService};

/// A page holds at most this many movements.
pub const PAGE_MAX: u32 = 200;
/// The kinds of movement a filter may name.
pub const KINDS: &[&str] = &[
    "charge",
    "withdrawal",
    "payment",
    "refund",
    "transfer_in",
    "transfer_out",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Posted: what the wallet holds.
    pub balance_yen: i64,
    /// What can be spent now: posted less what is reserved by pending outgoing movements.
    pub available_yen: i64,
    /// Incoming, not yet posted (a charge waiting for the bank).
    pub pending_in_yen: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Movement {
    pub id: uuid::Uuid,
    pub kind: String,
    pub amount_yen: i64,
    pub status: String,
    /// Who or what is on the other side: the bank and account tail, the merchant, the user.
    pub counterparty: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    pub movements: Vec<Movement>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which movements to list.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub kind: Option<String>,
    /// Inclusive, ms since the epoch.
    pub from_ms: Option<i64>,
    /// Exclusive.
    pub to_ms: Option<i64>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

fn cursor_of(movement: &Movement) -> String {
    format!("{}_{}", movement.created_at_ms, movement.id.simple())
}

fn parse_cursor(cursor: &str) -> Result<(i64, u128), MoneyError> {
    let (at, id) = cursor.split_once('_').ok_or(MoneyError::CursorInvalid)?;
    let at = at.parse().map_err(|_| MoneyError::CursorInvalid)?;
    let id = uuid::Uuid::parse_str(id).map_err(|_| MoneyError::CursorInvalid)?;
    Ok((at, id.as_u128()))
}

impl MoneyService {
    /// The wallet's balance from the ledger (zero before its first movement).
    pub fn balance(&self, session: &SessionInfo) -> Result<Balance, MoneyError> {
        let wallet = accounts::wallet(session.user_id)?;
        let found = self
            .ledger()
            .reader()
            .lookup_accounts(&[wallet])
            .map_err(MoneyError::Store)?;
        let clamp = |value: i128| i64::try_from(value).unwrap_or(i64::MAX);
        Ok(match found.first() {
            None => Balance {
                balance_yen: 0,
                available_yen: 0,
                pending_in_yen: 0,
            },
            Some(account) => Balance {
                balance_yen: clamp(account.credit_balance_posted()),
                available_yen: clamp(account.credit_balance_available()),
                pending_in_yen: clamp(i128::from(account.credits_pending)),
            },
        })
    }

    /// One page of the wallet's movements, newest first.
    pub fn history(
        &self,
        session: &SessionInfo,
        filter: &HistoryFilter,
    ) -> Result<HistoryPage, MoneyError> {
        if let Some(kind) = &filter.kind
            && !KINDS.contains(&kind.as_str())
        {
            return Err(MoneyError::FilterInvalid("kind"));
        }
        let limit = filter.limit.unwrap_or(50);
        if limit == 0 || limit > PAGE_MAX {
            return Err(MoneyError::FilterInvalid("limit"));
        }
        let before = filter.cursor.as_deref().map(parse_cursor).transpose()?;
        let mut sql = String::from(
            "SELECT id, kind, amount_yen, status, counterparty, created_at FROM money_movements
             WHERE user_id = $1",
        );
        let mut params = vec![Value::Uuid(session.user_id)];
        if let Some(kind) = &filter.kind {
            params.push(kind.as_str().into());
            sql.push_str(&format!(" AND kind = ${}", params.len()));
        }
        if let Some(from_ms) = filter.from_ms {
            params.push(from_ms.into());
            sql.push_str(&format!(" AND created_at >= ${}", params.len()));
        }
        if let Some(to_ms) = filter.to_ms {
            params.push(to_ms.into());
            sql.push_str(&format!(" AND created_at < ${}", params.len()));
        }
        if let Some((at, id)) = before {
            params.push(at.into());
            let at_index = params.len();
            params.push(Value::Uuid(id));
            sql.push_str(&format!(
                " AND (created_at < ${at_index} OR (created_at = ${at_index} AND id < ${}))",
                params.len()
            ));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit + 1
        ));
        let rows = self
            .identity_database()
            .read(|tx: &mut dyn Tx| tx.query(&sql, &params))?;
        let mut movements = rows
            .iter()
            .map(|row| {
                Ok(Movement {
                    id: uuid::Uuid::from_u128(row.uuid(0)?),
                    kind: row.text(1)?,
                    amount_yen: row.int(2)?,
                    status: row.text(3)?,
                    counterparty: row.text(4)?,
                    created_at_ms: row.int(5)?,
                })
            })
            .collect::<Result<Vec<_>, kinko_ledger::StoreError>>()?;
        let more = movements.len() > limit as usize;
        movements.truncate(limit as usize);
        let next_cursor = if more {
            movements.last().map(cursor_of)
        } else {
            None
        };
        Ok(HistoryPage {
            movements,
            next_cursor,
        })
    }

    /// Every movement the filter selects, as CSV: UTF-8 with a BOM, CRLF line ends, amounts
    /// signed from the wallet's side, times in Japan time.
    pub fn history_csv(
        &self,
        session: &SessionInfo,
        filter: &HistoryFilter,
    ) -> Result<String, MoneyError> {
        let mut csv = String::from("\u{feff}日時,種類,金額,状態,相手,ID\r\n");
        let mut page_filter = HistoryFilter {
            limit: Some(PAGE_MAX),
            cursor: None,
            ..filter.clone()
        };
        loop {
            let page = self.history(session, &page_filter)?;
            for movement in &page.movements {
                let signed = match movement.kind.as_str() {
                    "charge" | "refund" | "transfer_in" => movement.amount_yen,
                    _ => -movement.amount_yen,
                };
                csv.push_str(&format!(
                    "{},{},{},{},{},{}\r\n",
                    japan_time(movement.created_at_ms),
                    movement.kind,
                    signed,
                    movement.status,
                    csv_field(&movement.counterparty),
                    movement.id
                ));
            }
            match page.next_cursor {
                Some(cursor) => page_filter.cursor = Some(cursor),
                None => return Ok(csv),
            }
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` in Japan time.
fn japan_time(at_ms: i64) -> String {
    let offset = time::UtcOffset::from_hms(9, 0, 0).unwrap_or(time::UtcOffset::UTC);
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000) {
        Ok(moment) => {
            let local = moment.to_offset(offset);
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                local.year(),
                u8::from(local.month()),
                local.day(),
                local.hour(),
                local.minute(),
                local.second()
            )
        }
        Err(_) => at_ms.to_string(),
    }
}

/// Quotes a CSV field when it needs it (RFC 4180), and defuses spreadsheet formulas.
fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if defused.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", defused.replace('"', "\"\""))
    } else {
        defused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(
            csv_field("みずほ銀行 普通 ****011"),
            "みずほ銀行 普通 ****011"
        );
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }

    #[test]
    fn japan_time_is_utc_plus_nine() {
        // 2026-11-25T15:00:00Z is midnight on the 26th in Tokyo.
        assert_eq!(japan_time(1_795_618_800_000), "2026-11-26 00:00:00");
    }
}
