//! Three-way reconciliation (issue 10 item 6): every movement that crosses to a bank —
//! charges (debits at the bank) and withdrawals (credits), the only rows that move money
//! there — compared on three sides: the bank's statement of the day, Kinko's row
//! (`money_bank_transfers`), and the ledger (the pending transfer with the row's id and its
//! post or void, id ^ 1).
//!
//! A movement still in its in-doubt window (a `pending` row before its deadline plus
//! [`BANK_ANSWER_MARGIN_MS`]: the order may still be on its way, and the reconciler has not
//! had its turn) is counted, not judged. Everything else must agree:
//!
//! | row | ledger | bank |
//! |---|---|---|
//! | `posted` | pending transfer and its post, both for the row's amount | `settled`, same kind and amount |
//! | `rejected` / `voided` | nothing, or the pending transfer and its void | nothing, or `rejected` |
//! | `pending` (past its window) | — | — : the reconciler should have finished it |
//!
//! The bank side needs a statement per Japan-time day; a row made near midnight may be
//! decided the next day, and a bank clock up to [`BANK_CLOCK_SKEW_MAX_MS`] behind Kinko's may
//! put it on the day before, so the neighbouring days are read too (and only the day's own
//! rows and entries are judged). Everything is read first and nothing is written unless the
//! whole comparison succeeded (`record`).

use std::collections::{HashMap, HashSet};

use kinko_banking::client::{
    BankClient, BankClientError, PaymentKind, StatementDay, StatementEntry,
};
use kinko_cases::{CaseKind, NewCase};
use kinko_identity::secrets::SecretBox;
use kinko_ledger::{LedgerReader, StoreError, Transfer, TransferFlags, TransferId};
use kinko_store::sql::{Database, Row, Tx, Value};
use serde::Serialize;

use crate::charge::{BANK_ANSWER_MARGIN_MS, BANK_CLOCK_SKEW_MAX_MS, BANK_ORDER_TTL_S_DEFAULT};

/// Rows or statement entries one day may hold at most: beyond it the run refuses rather than
/// judge half a day.
pub const DAY_ENTRIES_MAX: usize = 1_000_000;
/// Mismatches kept in detail on a recorded run (all are counted, and each opens its case).
pub const RUN_MISMATCHES_KEPT_MAX: usize = 1_000;
/// Ids asked of the ledger in one lookup.
const LEDGER_LOOKUP_CHUNK: usize = 1_000;

/// What disagrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    /// The bank has an order under Kinko's client that no row of Kinko's explains.
    BankOnly,
    /// A row says money moved at the bank; the bank has no such order.
    KinkoOnly,
    /// Both have it, with another amount or kind (debit/credit).
    AmountDiffers,
    /// Both have it, one settled and the other not (or a row left pending past its window).
    StatusDiffers,
    /// The row and the ledger disagree.
    LedgerDiffers,
}

impl MismatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::BankOnly => "bank_only",
            MismatchKind::KinkoOnly => "kinko_only",
            MismatchKind::AmountDiffers => "amount_differs",
            MismatchKind::StatusDiffers => "status_differs",
            MismatchKind::LedgerDiffers => "ledger_differs",
        }
    }

    pub const ALL: [MismatchKind; 5] = [
        MismatchKind::BankOnly,
        MismatchKind::KinkoOnly,
        MismatchKind::AmountDiffers,
        MismatchKind::StatusDiffers,
        MismatchKind::LedgerDiffers,
    ];
}

/// One disagreement, named by the movement's key (the row's id, which is the bank's
/// `Idempotency-Key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub kind: MismatchKind,
    pub key: String,
    pub bank_code: Option<String>,
    pub user_id: Option<uuid::Uuid>,
    /// The row's amount, else the bank's.
    pub amount_yen: Option<i64>,
    /// What each side says, in words.
    pub detail: String,
}

/// What a run compared and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The Japan-time days judged, `YYYY-MM-DD`.
    pub days: Vec<String>,
    /// Whether the bank's statements took part (else rows against the ledger only).
    pub with_bank: bool,
    pub rows_checked: u64,
    pub bank_entries_checked: u64,
    /// Movements still in their in-doubt window: not judged yet.
    pub in_doubt: u64,
    pub mismatches: Vec<Mismatch>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Mismatches per kind, every kind present (0 included).
    pub fn counts(&self) -> Vec<(MismatchKind, u64)> {
        MismatchKind::ALL
            .iter()
            .map(|kind| {
                let count = self
                    .mismatches
                    .iter()
                    .filter(|mismatch| mismatch.kind == *kind)
                    .count();
                (*kind, u64::try_from(count).unwrap_or(u64::MAX))
            })
            .collect()
    }
}

/// Why a run could not be made. Nothing is written on any of these.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The bank could not be reached, refused, or answered something that is not a statement.
    #[error("the bank at {issuer}: {error}")]
    Bank {
        issuer: String,
        error: BankClientError,
    },
    /// Kinko is not set up at that bank (no registration, no client key).
    #[error("{0}")]
    NotConfigured(String),
    #[error("a day holds more than {DAY_ENTRIES_MAX} movements")]
    TooLarge,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A charge's or withdrawal's row, as the comparison needs it.
#[derive(Debug, Clone)]
struct BankRow {
    id: uuid::Uuid,
    user_id: uuid::Uuid,
    bank_code: String,
    kind: PaymentKind,
    amount_yen: i64,
    status: String,
    /// The order's deadline (created + the default time to live for rows from before
    /// deadlines were stored).
    not_after_ms: i64,
}

const ROW_COLUMNS: &str =
    "id, user_id, bank_code, direction, amount_yen, status, created_at, bank_not_after";

fn row_from(row: &Row) -> Result<BankRow, StoreError> {
    let created_at_ms = row.int(6)?;
    let kind = match row.text(3)?.as_str() {
        "charge" => PaymentKind::Debit,
        "withdrawal" => PaymentKind::Credit,
        other => return Err(StoreError::new(format!("unknown direction {other}"))),
    };
    Ok(BankRow {
        id: uuid::Uuid::from_u128(row.uuid(0)?),
        user_id: uuid::Uuid::from_u128(row.uuid(1)?),
        bank_code: row.text(2)?,
        kind,
        amount_yen: row.int(4)?,
        status: row.text(5)?,
        not_after_ms: row
            .opt_int(7)?
            .unwrap_or_else(|| created_at_ms.saturating_add(BANK_ORDER_TTL_S_DEFAULT * 1_000)),
    })
}

impl BankRow {
    /// Still in doubt: pending, and the order could still reach the bank or be decided.
    fn in_doubt(&self, now_ms: i64) -> bool {
        self.status == "pending"
            && now_ms <= self.not_after_ms.saturating_add(BANK_ANSWER_MARGIN_MS)
    }

    fn mismatch(&self, kind: MismatchKind, detail: String) -> Mismatch {
        Mismatch {
            kind,
            key: self.id.to_string(),
            bank_code: Some(self.bank_code.clone()),
            user_id: Some(self.user_id),
            amount_yen: Some(self.amount_yen),
            detail,
        }
    }
}

/// The rows made on `day`.
fn rows_of_day(database: &Database, day: StatementDay) -> Result<Vec<BankRow>, ReconcileError> {
    let limit = i64::try_from(DAY_ENTRIES_MAX)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let rows = database.read(|tx: &mut dyn Tx| {
        tx.query(
            &format!(
                "SELECT {ROW_COLUMNS} FROM money_bank_transfers
                 WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id LIMIT $3"
            ),
            &[day.start_ms().into(), day.end_ms().into(), limit.into()],
        )?
        .iter()
        .map(row_from)
        .collect::<Result<Vec<_>, _>>()
    })?;
    if rows.len() > DAY_ENTRIES_MAX {
        return Err(ReconcileError::TooLarge);
    }
    Ok(rows)
}

/// The rows with these ids, wherever their day (the bank's entries near midnight).
fn rows_by_id(
    database: &Database,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, BankRow>, ReconcileError> {
    let mut found = HashMap::new();
    database.read(|tx: &mut dyn Tx| {
        for id in ids {
            if let Some(row) = tx.query_opt(
                &format!("SELECT {ROW_COLUMNS} FROM money_bank_transfers WHERE id = $1"),
                &[Value::Uuid(id.as_u128())],
            )? {
                let row = row_from(&row)?;
                found.insert(row.id, row);
            }
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(found)
}

/// The ledger's transfers with the rows' ids and their resolutions (id ^ 1).
fn ledger_of(
    ledger: &dyn LedgerReader,
    rows: &[&BankRow],
) -> Result<HashMap<u128, Transfer>, ReconcileError> {
    let mut ids = Vec::with_capacity(rows.len() * 2);
    for row in rows {
        for id in [row.id.as_u128(), row.id.as_u128() ^ 1] {
            ids.push(
                TransferId::from_u128(id).map_err(|error| StoreError::new(error.to_string()))?,
            );
        }
    }
    let mut found = HashMap::new();
    for chunk in ids.chunks(LEDGER_LOOKUP_CHUNK) {
        for transfer in ledger.lookup_transfers(chunk)? {
            found.insert(transfer.id.as_u128(), transfer);
        }
    }
    Ok(found)
}

/// The row against the ledger: `None` when they agree.
fn judge_ledger(row: &BankRow, ledger: &HashMap<u128, Transfer>) -> Option<String> {
    let amount = u64::try_from(row.amount_yen).ok()?;
    let pending = ledger.get(&row.id.as_u128());
    let resolution = ledger.get(&(row.id.as_u128() ^ 1));
    let posted = resolution.is_some_and(|resolution| {
        resolution.flags.contains(TransferFlags::POST_PENDING) && resolution.amount == amount
    });
    let voided =
        resolution.is_some_and(|resolution| resolution.flags.contains(TransferFlags::VOID_PENDING));
    if let Some(pending) = pending
        && (!pending.flags.contains(TransferFlags::PENDING) || pending.amount != amount)
    {
        return Some(format!(
            "the ledger's transfer is not a reservation of ¥{amount} (¥{}, flags {:?})",
            pending.amount, pending.flags
        ));
    }
    match row.status.as_str() {
        "posted" if pending.is_some() && posted => None,
        "posted" => {
            Some("row posted; the ledger has no post of its reservation for the amount".to_owned())
        }
        "rejected" | "voided" if resolution.is_some() && !voided => Some(format!(
            "row {}; the ledger posted the reservation",
            row.status
        )),
        "rejected" | "voided" if pending.is_some() && resolution.is_none() => Some(format!(
            "row {}; the ledger's reservation is still open",
            row.status
        )),
        "rejected" | "voided" => None,
        // A pending row is judged only past its window: the ledger must not be ahead of it.
        "pending" if resolution.is_some() => {
            Some("row pending; the ledger resolved its reservation".to_owned())
        }
        "pending" => None,
        other => Some(format!("row has an unknown status {other}")),
    }
}

/// The row against the bank's entry for its key: `None` when they agree.
fn judge_bank(row: &BankRow, entry: Option<&StatementEntry>) -> Option<(MismatchKind, String)> {
    let bank_says = |entry: &StatementEntry| {
        format!(
            "bank {} {} ¥{}{}",
            entry.kind.as_str(),
            if entry.settled { "settled" } else { "rejected" },
            entry.amount_yen,
            entry
                .reason
                .as_deref()
                .map_or_else(String::new, |reason| format!(" ({reason})"))
        )
    };
    if let Some(entry) = entry
        && (entry.kind != row.kind || entry.amount_yen != row.amount_yen)
    {
        return Some((
            MismatchKind::AmountDiffers,
            format!(
                "row {} ¥{} {}; {}",
                row.kind.as_str(),
                row.amount_yen,
                row.status,
                bank_says(entry)
            ),
        ));
    }
    match (row.status.as_str(), entry) {
        ("posted", Some(entry)) if entry.settled => None,
        ("posted", Some(entry)) => Some((
            MismatchKind::StatusDiffers,
            format!("row posted; {}", bank_says(entry)),
        )),
        ("posted", None) => Some((
            MismatchKind::KinkoOnly,
            "row posted; the bank has no order under its key".to_owned(),
        )),
        ("rejected" | "voided", Some(entry)) if entry.settled => Some((
            MismatchKind::StatusDiffers,
            format!("row {}; {}", row.status, bank_says(entry)),
        )),
        ("rejected" | "voided", _) => None,
        ("pending", Some(entry)) => Some((
            MismatchKind::StatusDiffers,
            format!("row pending past its in-doubt window; {}", bank_says(entry)),
        )),
        ("pending", None) => Some((
            MismatchKind::StatusDiffers,
            "row pending past its in-doubt window; the bank has no order under its key".to_owned(),
        )),
        (other, _) => Some((
            MismatchKind::StatusDiffers,
            format!("row has an unknown status {other}"),
        )),
    }
}

/// The bank's statements of `days` and their neighbours, by key; and the keys decided on
/// `days` themselves (the entries this run judges).
fn statements(
    bank: &BankClient,
    days: &[StatementDay],
    now_ms: i64,
) -> Result<(HashMap<String, StatementEntry>, Vec<StatementEntry>), ReconcileError> {
    let today = StatementDay::of_ms(now_ms.saturating_add(BANK_CLOCK_SKEW_MAX_MS));
    let mut wanted: Vec<StatementDay> = Vec::new();
    for day in days {
        for neighbour in [day.previous(), *day, day.next()] {
            if neighbour <= today && !wanted.contains(&neighbour) {
                wanted.push(neighbour);
            }
        }
    }
    let mut by_key = HashMap::new();
    let mut judged = Vec::new();
    for day in wanted {
        let entries = bank
            .statement(day, DAY_ENTRIES_MAX, now_ms)
            .map_err(|error| ReconcileError::Bank {
                issuer: bank.issuer().to_owned(),
                error,
            })?;
        for entry in entries {
            if days.contains(&day) {
                judged.push(entry.clone());
            }
            by_key.insert(entry.key.clone(), entry);
        }
    }
    Ok((by_key, judged))
}

/// Compares the days' movements: rows against the ledger, and with `bank`, against the
/// bank's statements too. Reads only.
pub fn compare(
    database: &Database,
    ledger: &dyn LedgerReader,
    bank: Option<&BankClient>,
    days: &[StatementDay],
    now_ms: i64,
) -> Result<Report, ReconcileError> {
    let mut rows = Vec::new();
    for day in days {
        rows.extend(rows_of_day(database, *day)?);
        if rows.len() > DAY_ENTRIES_MAX {
            return Err(ReconcileError::TooLarge);
        }
    }
    // The bank first: if it cannot be read, nothing else matters for this run.
    let bank_side = bank
        .map(|bank| statements(bank, days, now_ms))
        .transpose()?;
    let mut report = Report {
        days: days.iter().map(ToString::to_string).collect(),
        with_bank: bank.is_some(),
        rows_checked: 0,
        bank_entries_checked: 0,
        in_doubt: 0,
        mismatches: Vec::new(),
    };
    // Entries decided on the days whose row was made on another day.
    let row_ids: HashSet<uuid::Uuid> = rows.iter().map(|row| row.id).collect();
    let mut strays: Vec<&StatementEntry> = Vec::new();
    if let Some((_, judged)) = &bank_side {
        report.bank_entries_checked = u64::try_from(judged.len()).unwrap_or(u64::MAX);
        strays = judged
            .iter()
            .filter(|entry| {
                uuid::Uuid::try_parse(&entry.key).map_or(true, |id| !row_ids.contains(&id))
            })
            .collect();
    }
    let stray_ids: Vec<uuid::Uuid> = strays
        .iter()
        .filter_map(|entry| uuid::Uuid::try_parse(&entry.key).ok())
        .collect();
    let stray_rows = rows_by_id(database, &stray_ids)?;
    for entry in &strays {
        let known = uuid::Uuid::try_parse(&entry.key)
            .ok()
            .and_then(|id| stray_rows.get(&id));
        match known {
            Some(row) => rows.push(row.clone()),
            None => report.mismatches.push(Mismatch {
                kind: MismatchKind::BankOnly,
                key: entry.key.clone(),
                bank_code: Some(entry.bank_code.clone()),
                user_id: None,
                amount_yen: Some(entry.amount_yen),
                detail: format!(
                    "bank {} {} ¥{}; Kinko has no row with this key",
                    entry.kind.as_str(),
                    if entry.settled { "settled" } else { "rejected" },
                    entry.amount_yen
                ),
            }),
        }
    }
    let judged_rows: Vec<&BankRow> = rows.iter().filter(|row| !row.in_doubt(now_ms)).collect();
    report.rows_checked = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    report.in_doubt = report.rows_checked - u64::try_from(judged_rows.len()).unwrap_or(0);
    let ledger_side = ledger_of(ledger, &judged_rows)?;
    for row in judged_rows {
        if let Some(detail) = judge_ledger(row, &ledger_side) {
            report
                .mismatches
                .push(row.mismatch(MismatchKind::LedgerDiffers, detail));
        }
        match &bank_side {
            Some((by_key, _)) => {
                if let Some((kind, detail)) = judge_bank(row, by_key.get(&row.id.to_string())) {
                    report.mismatches.push(row.mismatch(kind, detail));
                }
            }
            None if row.status == "pending" => report.mismatches.push(row.mismatch(
                MismatchKind::StatusDiffers,
                "row pending past its in-doubt window".to_owned(),
            )),
            None => {}
        }
    }
    report
        .mismatches
        .sort_by(|left, right| (left.kind, &left.key).cmp(&(right.kind, &right.key)));
    report.mismatches.dedup();
    Ok(report)
}

/// Records a finished run and opens one `reconciliation` case per mismatch (deduplicated by
/// kind and key: a mismatch found again finds its case), all in one transaction.
pub fn record(database: &Database, report: &Report, now_ms: i64) -> Result<u64, StoreError> {
    let counts: serde_json::Map<String, serde_json::Value> = report
        .counts()
        .into_iter()
        .map(|(kind, count)| (kind.as_str().to_owned(), count.into()))
        .collect();
    let kept: Vec<&Mismatch> = report
        .mismatches
        .iter()
        .take(RUN_MISMATCHES_KEPT_MAX)
        .collect();
    let mismatches =
        serde_json::to_string(&kept).map_err(|error| StoreError::new(error.to_string()))?;
    // Two runs at once (the schedule and `kinko reconcile`, or two servers) may open the same
    // case together; the loser's unique dedupe key aborts its transaction, and the retry finds
    // the winner's case.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match record_once(database, report, &counts, &mismatches, now_ms) {
            Err(error) if attempt < RECORD_ATTEMPTS_MAX => {
                tracing::warn!(error = %error, attempt, "recording a reconciliation run failed; retrying");
            }
            outcome => return outcome,
        }
    }
}

/// Attempts at recording one run.
const RECORD_ATTEMPTS_MAX: u32 = 3;

fn record_once(
    database: &Database,
    report: &Report,
    counts: &serde_json::Map<String, serde_json::Value>,
    mismatches: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    database.transaction(|tx: &mut dyn Tx| {
        tx.execute(
            "INSERT INTO reconciliation_runs (id, ran_at, days, with_bank, rows_checked,
             bank_entries_checked, in_doubt, mismatch_count, counts, mismatches)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                Value::Uuid(uuid::Uuid::now_v7().as_u128()),
                now_ms.into(),
                report.days.join(",").into(),
                i64::from(report.with_bank).into(),
                i64::try_from(report.rows_checked)
                    .unwrap_or(i64::MAX)
                    .into(),
                i64::try_from(report.bank_entries_checked)
                    .unwrap_or(i64::MAX)
                    .into(),
                i64::try_from(report.in_doubt).unwrap_or(i64::MAX).into(),
                i64::try_from(report.mismatches.len())
                    .unwrap_or(i64::MAX)
                    .into(),
                serde_json::Value::Object(counts.clone()).to_string().into(),
                mismatches.into(),
            ],
        )?;
        let mut opened = 0_u64;
        for mismatch in &report.mismatches {
            let case = NewCase {
                kind: CaseKind::Reconciliation,
                bank_code: mismatch.bank_code.clone(),
                user_id: mismatch.user_id,
                subject: format!("bank_transfer:{}", mismatch.key),
                summary: format!("{}: {}", mismatch.kind.as_str(), mismatch.detail),
                amount_yen: mismatch.amount_yen,
                dedupe_key: format!("reconciliation:{}:{}", mismatch.kind.as_str(), mismatch.key),
            };
            if kinko_cases::open_case(tx, &case, now_ms)?.created {
                opened += 1;
            }
        }
        Ok(opened)
    })
}

/// The last recorded run, as operators read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastRun {
    pub ran_at_ms: i64,
    pub days: Vec<String>,
    pub with_bank: bool,
    pub rows_checked: i64,
    pub bank_entries_checked: i64,
    pub in_doubt: i64,
    pub mismatch_count: i64,
    /// Mismatches per kind.
    pub counts: serde_json::Value,
    /// The first [`RUN_MISMATCHES_KEPT_MAX`] mismatches.
    pub mismatches: serde_json::Value,
}

/// The newest recorded run, if any.
pub fn last_run(tx: &mut dyn Tx) -> Result<Option<LastRun>, StoreError> {
    let Some(row) = tx.query_opt(
        "SELECT ran_at, days, with_bank, rows_checked, bank_entries_checked, in_doubt,
                mismatch_count, counts, mismatches
         FROM reconciliation_runs ORDER BY ran_at DESC, id DESC LIMIT 1",
        &[],
    )?
    else {
        return Ok(None);
    };
    let json = |text: String| {
        serde_json::from_str(&text).map_err(|error| StoreError::new(error.to_string()))
    };
    Ok(Some(LastRun {
        ran_at_ms: row.int(0)?,
        days: row
            .text(1)?
            .split(',')
            .filter(|day| !day.is_empty())
            .map(str::to_owned)
            .collect(),
        with_bank: row.int(2)? != 0,
        rows_checked: row.int(3)?,
        bank_entries_checked: row.int(4)?,
        in_doubt: row.int(5)?,
        mismatch_count: row.int(6)?,
        counts: json(row.text(7)?)?,
        mismatches: json(row.text(8)?)?,
    }))
}

impl crate::MoneyService {
    /// The newest reconciliation run for an operator who reviews cases (analysts, admins);
    /// `None` before the first.
    pub fn last_reconciliation(
        &self,
        token: &secrecy::SecretString,
    ) -> Result<Option<LastRun>, crate::MoneyError> {
        let now_ms = self.clock_ms();
        self.identity_database().transaction(|tx: &mut dyn Tx| {
            let by = kinko_identity::operator::authenticate(tx, now_ms, token)?;
            by.require(kinko_identity::operator::Permission::ReviewCases)?;
            Ok(last_run(tx)?)
        })
    }
}

/// Kinko's client at the bank `issuer`, from what `kinko serve` stored when it registered
/// there: the client id (`banking_clients`) and the sealed client key. Discovers the bank
/// first, so a wrong URL or a bank that is down or answers garbage fails here, before
/// anything is read or written.
pub fn stored_client(
    database: &Database,
    secrets: &SecretBox,
    issuer: &str,
) -> Result<BankClient, ReconcileError> {
    let issuer = issuer.trim_end_matches('/');
    let bank_error = |error| ReconcileError::Bank {
        issuer: issuer.to_owned(),
        error,
    };
    if !(issuer.starts_with("http://") || issuer.starts_with("https://")) {
        return Err(ReconcileError::NotConfigured(format!(
            "the bank's URL must start with http:// or https://: {issuer}"
        )));
    }
    let agent = kinko_banking::client::agent();
    let endpoints = kinko_banking::client::discover(&agent, issuer).map_err(bank_error)?;
    let (client_id, sealed) = database.read(|tx: &mut dyn Tx| {
        let client_id = tx
            .query_opt(
                "SELECT client_id FROM banking_clients WHERE issuer = $1",
                &[endpoints.issuer.as_str().into()],
            )?
            .map(|row| row.text(0))
            .transpose()?;
        let sealed = tx
            .query_opt(
                "SELECT sealed_key FROM banking_client_keys WHERE id = 1",
                &[],
            )?
            .map(|row| row.bytes(0))
            .transpose()?;
        Ok::<_, StoreError>((client_id, sealed))
    })?;
    let (Some(client_id), Some(sealed)) = (client_id, sealed) else {
        return Err(ReconcileError::NotConfigured(format!(
            "Kinko is not registered at {issuer} (kinko serve registers when it starts with that bank)"
        )));
    };
    // The same associated data `kinko_banking::links::client_key` seals it under.
    let bytes = secrets.open(&sealed, b"bank_client_key:1").map_err(|_| {
        ReconcileError::NotConfigured(
            "the bank client key cannot be opened with this secret key".to_owned(),
        )
    })?;
    let key = p256::ecdsa::SigningKey::from_slice(&bytes).map_err(|_| {
        ReconcileError::NotConfigured("the stored bank client key is not a P-256 key".to_owned())
    })?;
    Ok(BankClient::new(agent, client_id, key, endpoints))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str) -> BankRow {
        BankRow {
            id: uuid::Uuid::now_v7(),
            user_id: uuid::Uuid::now_v7(),
            bank_code: "0001".to_owned(),
            kind: PaymentKind::Debit,
            amount_yen: 1_000,
            status: status.to_owned(),
            not_after_ms: 1_060_000,
        }
    }

    fn entry(row: &BankRow, settled: bool, amount_yen: i64) -> StatementEntry {
        StatementEntry {
            id: "b".to_owned(),
            kind: PaymentKind::Debit,
            key: row.id.to_string(),
            bank_code: "0001".to_owned(),
            amount_yen,
            settled,
            reason: None,
            decided_at_ms: 1_000_100,
        }
    }

    #[test]
    fn each_disagreement_with_the_bank_has_its_kind() {
        let posted = row("posted");
        assert_eq!(
            judge_bank(&posted, Some(&entry(&posted, true, 1_000))),
            None
        );
        let kind = |row: &BankRow, entry: Option<&StatementEntry>| {
            judge_bank(row, entry).map(|(kind, _)| kind)
        };
        assert_eq!(kind(&posted, None), Some(MismatchKind::KinkoOnly));
        assert_eq!(
            kind(&posted, Some(&entry(&posted, true, 999))),
            Some(MismatchKind::AmountDiffers)
        );
        assert_eq!(
            kind(&posted, Some(&entry(&posted, false, 1_000))),
            Some(MismatchKind::StatusDiffers)
        );
        let voided = row("voided");
        assert_eq!(kind(&voided, None), None);
        assert_eq!(kind(&voided, Some(&entry(&voided, false, 1_000))), None);
        assert_eq!(
            kind(&voided, Some(&entry(&voided, true, 1_000))),
            Some(MismatchKind::StatusDiffers)
        );
        let mut credit = entry(&posted, true, 1_000);
        credit.kind = PaymentKind::Credit;
        assert_eq!(
            kind(&posted, Some(&credit)),
            Some(MismatchKind::AmountDiffers)
        );
        let pending = row("pending");
        assert!(pending.in_doubt(1_060_000 + BANK_ANSWER_MARGIN_MS));
        assert!(!pending.in_doubt(1_060_001 + BANK_ANSWER_MARGIN_MS));
        assert!(!posted.in_doubt(0));
        assert_eq!(kind(&pending, None), Some(MismatchKind::StatusDiffers));
    }
}
