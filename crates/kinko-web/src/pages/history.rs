//! The wallet's history, newest first, filtered by kind, and its CSV download
//! (`MoneyService::history` and `history_csv`, as the API), with "I didn't do this" on every
//! posted row (`MoneyService::dispute`, as `POST /api/v1/history/{id}/dispute`). A movement
//! notice links to its row (`?movement=<id>`).

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use kinko_money::history::HistoryFilter;
use serde::Deserialize;

use super::wallet::{HasCsrf, accept, money, status_text};
use super::{Frame, Lang, PageSession, blocking, error_page, render, yen};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/wallet/history", get(history))
        .route("/wallet/history.csv", get(history_csv))
        .route("/wallet/history/{movement_id}/dispute", post(dispute))
}

#[derive(Deserialize)]
struct DisputeForm {
    csrf: String,
}

impl HasCsrf for DisputeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// "I didn't do this": the wallet's outgoing money stops, the money is followed and held, and a
/// case opens; back to the history with the answer.
async fn dispute(
    State(state): State<AppState>,
    session: PageSession,
    Path(movement_id): Path<String>,
    form: Result<Form<DisputeForm>, FormRejection>,
) -> Response {
    if let Err(refused) = accept(&session, form) {
        return refused;
    }
    let Ok(movement_id) = uuid::Uuid::parse_str(&movement_id) else {
        return error_page(
            session.lang,
            &session.csrf,
            &crate::problem::Problem::from(kinko_money::charge::MoneyError::MovementNotFound),
        );
    };
    let service = money(&state);
    let info = session.session.clone();
    match blocking(move || service.dispute(&info, movement_id)).await {
        Ok(_) => Redirect::to(&format!(
            "/wallet/history?movement={movement_id}&disputed=1"
        ))
        .into_response(),
        Err(problem) => error_page(session.lang, &session.csrf, &problem),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    kind: Option<String>,
    cursor: Option<String>,
    /// The row a notice links to, shown highlighted.
    movement: Option<String>,
    /// Set after a dispute was taken.
    disputed: Option<String>,
}

impl HistoryQuery {
    fn filter(&self, limit: u32) -> HistoryFilter {
        HistoryFilter {
            kind: self.kind.clone().filter(|kind| !kind.is_empty()),
            from_ms: None,
            to_ms: None,
            cursor: self.cursor.clone(),
            limit: Some(limit),
        }
    }
}

struct MovementRow {
    id: String,
    /// Posted: money moved, so the owner may say they did not move it.
    disputable: bool,
    highlighted: bool,
    when: String,
    what: String,
    counterparty: String,
    amount: String,
    status: &'static str,
}

struct KindOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    page: Frame,
    rows: Vec<MovementRow>,
    kinds: Vec<KindOption>,
    csv_href: String,
    older_href: Option<String>,
    disputed: bool,
}

/// Japan time, to the minute.
pub(super) fn japan_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1_000) + 9 * 3_600;
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year}-{month:02}-{day:02} {:02}:{:02}",
        of_day / 3_600,
        of_day % 3_600 / 60
    )
}

async fn history(
    State(state): State<AppState>,
    session: PageSession,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let service = money(&state);
    let info = session.session.clone();
    let filter = query.filter(50);
    let page_of = match blocking(move || service.history(&info, &filter)).await {
        Ok(page_of) => page_of,
        Err(problem) => return error_page(session.lang, &session.csrf, &problem),
    };
    let lang = session.lang;
    let kind_query = query
        .kind
        .as_deref()
        .filter(|kind| !kind.is_empty())
        .map(|kind| format!("kind={}", super::encode_component(kind)));
    let rows = page_of
        .movements
        .into_iter()
        .map(|movement| {
            let outgoing = matches!(
                movement.kind.as_str(),
                "withdrawal" | "payment" | "transfer_out"
            );
            let amount = if outgoing {
                yen(-movement.amount_yen)
            } else {
                yen(movement.amount_yen)
            };
            let id = movement.id.to_string();
            MovementRow {
                highlighted: query.movement.as_deref() == Some(id.as_str()),
                id,
                disputable: movement.status == "posted",
                when: japan_time(movement.created_at_ms),
                what: kind_label(lang, &movement.kind).to_owned(),
                counterparty: movement.counterparty,
                amount,
                status: status_text(lang, &movement.status),
            }
        })
        .collect();
    let kinds = std::iter::once(("", lang.t("history.all")))
        .chain(
            kinko_money::history::KINDS
                .iter()
                .map(|kind| (*kind, kind_label(lang, kind))),
        )
        .map(|(value, label)| KindOption {
            value,
            label,
            selected: query.kind.as_deref().unwrap_or_default() == value,
        })
        .collect();
    let csv_href = match &kind_query {
        Some(kind) => format!("/wallet/history.csv?{kind}"),
        None => "/wallet/history.csv".to_owned(),
    };
    let older_href = page_of.next_cursor.map(|cursor| {
        let cursor = format!("cursor={}", super::encode_component(&cursor));
        match &kind_query {
            Some(kind) => format!("/wallet/history?{kind}&{cursor}"),
            None => format!("/wallet/history?{cursor}"),
        }
    });
    render(
        StatusCode::OK,
        &HistoryPage {
            page: session.frame("/wallet/history"),
            rows,
            kinds,
            csv_href,
            older_href,
            disputed: query.disputed.is_some(),
        },
    )
}

fn kind_label(lang: Lang, kind: &str) -> &'static str {
    match kind {
        "charge" => lang.t("kind.charge"),
        "withdrawal" => lang.t("kind.withdrawal"),
        "payment" => lang.t("kind.payment"),
        "refund" => lang.t("kind.refund"),
        "transfer_in" => lang.t("kind.transfer_in"),
        _ => lang.t("kind.transfer_out"),
    }
}

/// The same CSV as the API's (`MoneyService::history_csv`), as a download.
async fn history_csv(
    State(state): State<AppState>,
    session: PageSession,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let service = money(&state);
    let info = session.session.clone();
    let filter = query.filter(kinko_money::history::PAGE_MAX);
    match blocking(move || service.history_csv(&info, &filter)).await {
        Ok(csv) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"kinko-history.csv\"",
                ),
            ],
            csv,
        )
            .into_response(),
        Err(problem) => error_page(session.lang, &session.csrf, &problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_japan_time() {
        assert_eq!(japan_time(0), "1970-01-01 09:00");
        // 2024-02-29 15:00 UTC is 2024-03-01 00:00 in Japan.
        assert_eq!(japan_time(1_709_218_800_000), "2024-03-01 00:00");
    }
}
