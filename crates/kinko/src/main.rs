//! `kinko`: the one binary. `serve` runs the platform, `demo` runs it seeded, `check` verifies
//! the ledger's invariants, `reconcile` compares rows, ledger and bank, `audit verify` the
//! audit chain, `admin create-operator` makes the first operator, `bank-sandbox` runs the
//! sandbox bank, `bench` measures, `migrate` applies migrations, `risk` checks and backtests
//! rule files, `drill` attacks a running instance and proves ¥0 lost.

mod admin;
mod audit;
mod bank_sandbox;
mod bench;
mod bench_api;
mod crash_child;
mod demo;
mod drill;
mod reconcile;
mod risk;
mod serve;
mod walkthrough;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use kinko_core::{Clock, SystemClock};
use kinko_ledger::{Ledger, WriterConfig};
use kinko_store::StoreLocation;

#[derive(Parser)]
#[command(
    name = "kinko",
    version,
    about = "Kinko (金庫): an e-money wallet platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the data lives: a SQLite data directory (default `./kinko-data`) or PostgreSQL.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user@host:port/db). Excludes --data-dir.
    #[arg(long, value_name = "URL", env = "KINKO_DATABASE_URL")]
    database_url: Option<String>,
}

impl StoreArgs {
    pub fn location(&self) -> anyhow::Result<StoreLocation> {
        Ok(StoreLocation::choose(
            self.data_dir.as_deref(),
            self.database_url.as_deref(),
        )?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform: JSON API, /healthz, /metrics.
    Serve(serve::ServeArgs),
    /// Run the platform on a seeded data directory and print its URL.
    Demo(demo::DemoArgs),
    /// Attack a running Kinko (or a fresh demo) with D1–D16 of THREATS and honest users
    /// alongside; exits non-zero on any yen lost or honest action refused.
    Drill(drill::DrillArgs),
    /// Verify the ledger's invariants; exits non-zero with a report on a breach.
    Check {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Reconcile a day's movements: Kinko's rows against the ledger, and with --bank against
    /// the bank's statement too; exits 2 on any mismatch.
    Reconcile(reconcile::ReconcileArgs),
    /// Run the sandbox bank: its own HTTP service and store, standing in for real banks.
    BankSandbox(bank_sandbox::BankSandboxArgs),
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
    /// Administration from the machine itself (creating the first operator).
    Admin {
        #[command(subcommand)]
        which: admin::AdminCommand,
    },
    /// The audit log: verify its hash chain.
    Audit {
        #[command(subcommand)]
        which: audit::AuditCommand,
    },
    /// Risk rules: validate a rule file, backtest it against an event log.
    Risk {
        #[command(subcommand)]
        which: risk::RiskCommand,
    },
    /// Test support: applies transfers forever, printing each acknowledged one (crash test).
    #[command(hide = true)]
    CrashChild(crash_child::CrashChildArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KINKO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kinko: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Drill(args) => drill::run(args),
        Command::Check { store, json } => check(&store.location()?, json),
        Command::Migrate { store } => {
            let location = store.location()?;
            let applied = kinko_store::migrate(&location)
                .with_context(|| format!("migrating {}", location.describe()))?;
            if applied.is_empty() {
                println!("{}: up to date", location.describe());
            } else {
                println!("{}: applied {}", location.describe(), applied.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { which } => bench::run(which),
        Command::BankSandbox(args) => bank_sandbox::run(args),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Admin { which } => admin::run(which),
        Command::Audit { which } => audit::run(which),
        Command::Risk { which } => risk::run(which),
        Command::CrashChild(args) => crash_child::run(args),
    }
}

/// Opens the store and starts the ledger writer on it.
pub fn start_ledger(location: &StoreLocation, config: WriterConfig) -> anyhow::Result<Ledger> {
    let (store, reader) = kinko_store::open_ledger(location)
        .with_context(|| format!("opening {}", location.describe()))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(Ledger::start(store, reader, clock, config)?)
}

fn check(location: &StoreLocation, json: bool) -> anyhow::Result<ExitCode> {
    let (_, reader) = kinko_store::open_ledger(location)
        .with_context(|| format!("opening {}", location.describe()))?;
    let report = reader.check_invariants()?;
    let violations: Vec<String> = report.violations.iter().map(ToString::to_string).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "store": location.kind(),
                "accounts_checked": report.accounts_checked,
                "transfers_checked": report.transfers_checked,
                "clean": report.is_clean(),
                "violations": violations,
            })
        );
    } else {
        println!(
            "checked {} accounts and {} transfers in {}",
            report.accounts_checked,
            report.transfers_checked,
            location.describe()
        );
        for violation in &violations {
            println!("BREACH: {violation}");
        }
        if report.is_clean() {
            println!("all invariants hold");
        }
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
