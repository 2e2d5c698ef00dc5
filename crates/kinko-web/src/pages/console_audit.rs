//! The console's records: a dashboard (charges, payments and declines per minute over the
//! last hour, drawn here as inline SVG — no script, no CDN), the risk decisions (who, which flow, the outcome, the rules that
//! fired and whether each acted or ran in shadow; for operators who review cases), and the
//! audit log: the newest entries, and the chain's status from a full walk
//! (`kinko_audit::verify`: every entry's hash, every link, no gap, the head names the last
//! entry). Reading goes through `operator::read_audit_log`, the API's call, which checks the
//! operator's permission (admins) and writes the read itself to the log; the walk runs only
//! after that check passed.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use kinko_identity::operator;

use super::console::operator_of;
use super::history::japan_time;
use super::{Frame, Lang, blocking, error_page, render};
use crate::AppState;

/// How many of the newest entries the page shows.
const AUDIT_PAGE_ENTRIES: u32 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console/audit", get(audit))
        .route("/console/risk", get(risk_decisions))
        .route("/console/dashboard", get(dashboard))
}

struct EntryRow {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    subject: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "console_audit.html")]
struct AuditPage {
    page: Frame,
    intact: bool,
    entries_checked: u64,
    head_seq: u64,
    head_hash_hex: String,
    /// Each break, as the verifier words it.
    breaks: Vec<String>,
    entries: Vec<EntryRow>,
}

async fn audit(State(state): State<AppState>, lang: Lang, headers: HeaderMap) -> Response {
    let (token, _) = match operator_of(&state, &headers).await {
        Ok(found) => found,
        Err(to_sign_in) => return to_sign_in,
    };
    let identity = std::sync::Arc::clone(&state.identity);
    let loaded = blocking(move || -> Result<_, crate::problem::Problem> {
        let database = identity.database();
        let now_ms = i64::try_from(identity.clock().now_ms()).unwrap_or(i64::MAX);
        // The permission check (and the read's own entry) first; then the walk.
        operator::read_audit_log(database, now_ms, &token, 0, 1)?;
        let report =
            kinko_audit::verify(database).map_err(kinko_identity::service::IdentityError::from)?;
        let after_seq = report
            .head_seq
            .saturating_sub(u64::from(AUDIT_PAGE_ENTRIES));
        let entries =
            operator::read_audit_log(database, now_ms, &token, after_seq, AUDIT_PAGE_ENTRIES)?;
        Ok((report, entries))
    })
    .await;
    let (report, entries) = match loaded {
        Ok(loaded) => loaded,
        Err(problem) => return error_page(lang, "", &problem),
    };
    render(
        StatusCode::OK,
        &AuditPage {
            page: Frame::new(lang, "", false, "/console/audit"),
            intact: report.is_intact(),
            entries_checked: report.entries_checked,
            head_seq: report.head_seq,
            head_hash_hex: report.head_hash_hex.clone(),
            breaks: report.breaks.iter().map(ToString::to_string).collect(),
            entries: entries
                .into_iter()
                .rev()
                .map(|entry| EntryRow {
                    seq: entry.seq,
                    at: japan_time(entry.at_ms),
                    actor: format!("{}:{}", entry.actor_kind, entry.actor_id),
                    action: entry.action,
                    subject: format!("{}:{}", entry.subject_kind, entry.subject_id),
                    reason: entry.reason,
                })
                .collect(),
        },
    )
}

/// How many decisions the page shows.
const DECISIONS_SHOWN: i64 = 50;

struct DecisionRow {
    at: String,
    user: String,
    flow: String,
    outcome: String,
    rules: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console_risk.html")]
struct RiskPage {
    page: Frame,
    decisions: Vec<DecisionRow>,
}

/// The newest risk decisions, for operators who may review cases.
async fn risk_decisions(State(state): State<AppState>, lang: Lang, headers: HeaderMap) -> Response {
    let (_, signed_in) = match operator_of(&state, &headers).await {
        Ok(found) => found,
        Err(to_sign_in) => return to_sign_in,
    };
    if !signed_in.can(operator::Permission::ReviewCases) {
        let problem = crate::problem::Problem::from(operator::OperatorError::Forbidden);
        return error_page(lang, "", &problem);
    }
    let identity = std::sync::Arc::clone(&state.identity);
    let loaded = blocking(move || {
        kinko_money::decisions::recent_decisions(identity.database(), DECISIONS_SHOWN)
    })
    .await;
    let decisions = match loaded {
        Ok(decisions) => decisions,
        Err(problem) => return error_page(lang, "", &problem),
    };
    render(
        StatusCode::OK,
        &RiskPage {
            page: Frame::new(lang, "", false, "/console/risk"),
            decisions: decisions
                .into_iter()
                .map(|decision| DecisionRow {
                    at: japan_time(decision.created_at_ms),
                    user: decision.user_id.to_string(),
                    flow: decision.flow,
                    outcome: decision.outcome,
                    rules: decision.rules,
                })
                .collect(),
        },
    )
}

/// The chart's drawing area, in SVG user units.
const CHART_WIDTH: u32 = 360;
const CHART_HEIGHT: u32 = 160;

/// A series as SVG polyline points: minute `i` at x = i × width / (n − 1), the count scaled so
/// `max` reaches the top. Integer arithmetic only.
fn chart_points(series: &[u32], max: u32) -> String {
    let last = u32::try_from(series.len().saturating_sub(1))
        .unwrap_or(1)
        .max(1);
    let max = max.max(1);
    series
        .iter()
        .zip(0u32..)
        .map(|(count, index)| {
            let x = index * CHART_WIDTH / last;
            let y = CHART_HEIGHT - count.min(&max) * CHART_HEIGHT / max;
            format!("{x},{y}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Series {
    id: &'static str,
    label: &'static str,
    colour: &'static str,
    points: String,
    total: u32,
}

#[derive(Template)]
#[template(path = "console_dashboard.html")]
struct DashboardPage {
    page: Frame,
    series: Vec<Series>,
    max: u32,
    width: u32,
    height: u32,
}

/// The last hour, per minute, for operators who may review cases.
async fn dashboard(State(state): State<AppState>, lang: Lang, headers: HeaderMap) -> Response {
    let (_, signed_in) = match operator_of(&state, &headers).await {
        Ok(found) => found,
        Err(to_sign_in) => return to_sign_in,
    };
    if !signed_in.can(operator::Permission::ReviewCases) {
        let problem = crate::problem::Problem::from(operator::OperatorError::Forbidden);
        return error_page(lang, "", &problem);
    }
    let identity = std::sync::Arc::clone(&state.identity);
    let loaded = blocking(move || {
        let now_ms = i64::try_from(identity.clock().now_ms()).unwrap_or(i64::MAX);
        kinko_money::decisions::activity(identity.database(), now_ms)
    })
    .await;
    let activity = match loaded {
        Ok(activity) => activity,
        Err(problem) => return error_page(lang, "", &problem),
    };
    let max = [&activity.charges, &activity.payments, &activity.declines]
        .iter()
        .flat_map(|series| series.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let series = [
        ("charges", "console.charges", "#1e6b3a", &activity.charges),
        (
            "payments",
            "console.payments",
            "#2f6fde",
            &activity.payments,
        ),
        (
            "declines",
            "console.declines",
            "#b3261e",
            &activity.declines,
        ),
    ]
    .into_iter()
    .map(|(id, key, colour, counts)| Series {
        id,
        label: lang.t(key),
        colour,
        points: chart_points(counts, max),
        total: counts
            .iter()
            .fold(0u32, |sum, count| sum.saturating_add(*count)),
    })
    .collect();
    render(
        StatusCode::OK,
        &DashboardPage {
            page: Frame::new(lang, "", false, "/console/dashboard"),
            series,
            max,
            width: CHART_WIDTH,
            height: CHART_HEIGHT,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_drawn_left_to_right_and_scaled_to_the_top() {
        assert_eq!(chart_points(&[0, 2, 4], 4), "0,160 180,80 360,0");
        // A flat zero hour stays on the baseline; a count above `max` is clipped to the top.
        assert_eq!(chart_points(&[0, 0], 0), "0,160 360,160");
        assert_eq!(chart_points(&[9], 3), "0,0");
    }
}
