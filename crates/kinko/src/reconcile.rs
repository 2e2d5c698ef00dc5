//! `kinko reconcile [--bank] [--json] [--day YYYY-MM-DD]`: the three-way reconciliation
//! (`kinko_money::bank_reconcile`) of one Japan-time day, from the command line — rows against
//! the ledger, and with `--bank` against the bank's statement too. Exits 0 when everything
//! agrees, 2 on any mismatch (each opens a `reconciliation` case), 1 with a message on bad
//! input or an unreachable or garbled bank, with nothing written. The same run happens on a
//! schedule inside `kinko serve` ([`spawn_scheduled`]).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use kinko_banking::client::StatementDay;
use kinko_core::{Clock, SystemClock};
use kinko_identity::secrets::SecretBox;
use kinko_identity::service::IdentityService;
use kinko_ledger::LedgerReader;
use kinko_money::bank_reconcile::{self, Report};
use kinko_store::sql::Database;

use crate::StoreArgs;

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Compare with the bank's statement too (else Kinko's rows against the ledger only).
    #[arg(long)]
    bank: bool,
    /// The bank's URL (its issuer), where `kinko serve` registered.
    #[arg(long, value_name = "URL", env = "KINKO_BANK_SANDBOX_URL")]
    bank_url: Option<String>,
    /// The Japan-time day to reconcile (default: today in Japan).
    #[arg(long, value_name = "YYYY-MM-DD")]
    day: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn now_ms() -> i64 {
    i64::try_from(SystemClock.now_ms()).unwrap_or(i64::MAX)
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let now_ms = now_ms();
    let day = match &args.day {
        Some(text) => StatementDay::parse(text)
            .with_context(|| format!("--day must be a date as YYYY-MM-DD, not {text:?}"))?,
        None => StatementDay::of_ms(now_ms),
    };
    let bank_url = match (args.bank, args.bank_url.as_deref()) {
        (true, None) => {
            anyhow::bail!("--bank needs the bank's URL: --bank-url URL or KINKO_BANK_SANDBOX_URL")
        }
        (true, Some(url)) => Some(url),
        (false, _) => None,
    };
    let location = args.store.location()?;
    let database =
        Database::open(&location).with_context(|| format!("opening {}", location.describe()))?;
    let (_, ledger) = kinko_store::open_ledger(&location)
        .with_context(|| format!("opening {}", location.describe()))?;
    let bank = match bank_url {
        Some(url) => {
            let secrets =
                SecretBox::from_environment(&location).context("loading the secret key")?;
            Some(bank_reconcile::stored_client(&database, &secrets, url)?)
        }
        None => None,
    };
    let report =
        bank_reconcile::compare(&database, ledger.as_ref(), bank.as_ref(), &[day], now_ms)?;
    let opened = bank_reconcile::record(&database, &report, now_ms)
        .context("recording the reconciliation")?;
    print(&report, opened, args.json);
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn print(report: &Report, cases_opened: u64, json: bool) {
    let counts: serde_json::Map<String, serde_json::Value> = report
        .counts()
        .into_iter()
        .map(|(kind, count)| (kind.as_str().to_owned(), count.into()))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "days": report.days,
                "with_bank": report.with_bank,
                "rows_checked": report.rows_checked,
                "bank_entries_checked": report.bank_entries_checked,
                "in_doubt": report.in_doubt,
                "clean": report.is_clean(),
                "counts": counts,
                "mismatches": report.mismatches,
                "cases_opened": cases_opened,
            })
        );
        return;
    }
    println!(
        "reconciled {} ({}): {} rows, {} bank entries, {} still in doubt",
        report.days.join(", "),
        if report.with_bank {
            "bank, rows and ledger"
        } else {
            "rows and ledger"
        },
        report.rows_checked,
        report.bank_entries_checked,
        report.in_doubt
    );
    for mismatch in &report.mismatches {
        println!(
            "MISMATCH {} {}: {}",
            mismatch.kind.as_str(),
            mismatch.key,
            mismatch.detail
        );
    }
    if report.is_clean() {
        println!("no mismatches");
    } else {
        println!(
            "{} mismatches; {cases_opened} new reconciliation cases",
            report.mismatches.len()
        );
    }
}

/// How often `kinko serve` reconciles yesterday and today (Japan time):
/// `KINKO_BANK_RECONCILE_EVERY_S`, 1–86400, default an hour.
fn every() -> anyhow::Result<Duration> {
    match std::env::var("KINKO_BANK_RECONCILE_EVERY_S") {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|seconds| (1..=86_400).contains(seconds))
            .map(Duration::from_secs)
            .context(
                "KINKO_BANK_RECONCILE_EVERY_S must be a whole number of seconds from 1 to 86400",
            ),
        Err(_) => Ok(Duration::from_secs(3_600)),
    }
}

/// One scheduled run: yesterday and today, against the bank when one is configured. A run
/// that fails (the bank unreachable) is logged and records nothing.
fn run_once(
    identity: &IdentityService,
    ledger: &dyn LedgerReader,
    bank_url: Option<&str>,
) -> Result<Report, bank_reconcile::ReconcileError> {
    let now_ms = now_ms();
    let today = StatementDay::of_ms(now_ms);
    let database = identity.database();
    let bank = bank_url
        .map(|url| bank_reconcile::stored_client(database, identity.secret_box(), url))
        .transpose()?;
    let report = bank_reconcile::compare(
        database,
        ledger,
        bank.as_ref(),
        &[today.previous(), today],
        now_ms,
    )?;
    let opened = bank_reconcile::record(database, &report, now_ms)?;
    if report.is_clean() {
        tracing::info!(
            rows = report.rows_checked,
            entries = report.bank_entries_checked,
            in_doubt = report.in_doubt,
            "reconciled with the bank: no mismatches"
        );
    } else {
        tracing::error!(
            mismatches = report.mismatches.len(),
            cases_opened = opened,
            "reconciliation found mismatches"
        );
    }
    Ok(report)
}

/// The scheduled reconciliation in `kinko serve`: a thread that runs every [`every`] (first
/// one interval after start) until the server stops.
pub fn spawn_scheduled(
    identity: Arc<IdentityService>,
    ledger: Arc<dyn LedgerReader>,
    bank_url: Option<String>,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let every = every()?;
    std::thread::Builder::new()
        .name("bank-reconciler".to_owned())
        .spawn(move || {
            // The first run after one interval: a server that starts and stops (tests, a
            // restart loop) does not reconcile on every start.
            let mut next = Instant::now() + every;
            while !stopping.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    if let Err(error) = run_once(&identity, ledger.as_ref(), bank_url.as_deref()) {
                        tracing::error!(error = %error, "reconciling with the bank failed");
                    }
                    next = Instant::now() + every;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .context("starting the bank reconciler")
}
