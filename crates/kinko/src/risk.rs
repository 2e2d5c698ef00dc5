//! `kinko risk check|backtest` (rule files against an event log) and `kinko bench risk` (the
//! engine's decision latency over a feature state of a million users or more).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kinko_risk::{
    Actor, Engine, Event, EventKind, Key, LinkMethod, LogLine, Report, RuleSet, SLOTS_MAX_DEFAULT,
    backtest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Subcommand, Debug)]
pub enum RiskCommand {
    /// Validate a rule file; prints every problem with its line.
    Check {
        #[arg(long, value_name = "FILE")]
        rules: PathBuf,
    },
    /// Replay an event log (JSON lines) through a rule file: per rule, hits, outcomes that
    /// would change, and precision against the log's fraud labels.
    Backtest(BacktestArgs),
    /// Per rule, its hits on risk-review cases analysts closed as fraud or not fraud, and its
    /// precision (the labels of closed cases, read from the store).
    Labels {
        #[command(flatten)]
        store: crate::StoreArgs,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct BacktestArgs {
    #[arg(long, value_name = "FILE")]
    pub rules: PathBuf,
    /// One event per line (see kinko-risk `backtest.rs`), in time order.
    #[arg(long, value_name = "FILE.jsonl")]
    pub events: PathBuf,
    /// Report only events from this moment (Unix seconds or YYYY-MM-DD, UTC); earlier events
    /// still build the features.
    #[arg(long)]
    pub since: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: RiskCommand) -> anyhow::Result<ExitCode> {
    match command {
        RiskCommand::Check { rules } => {
            let rule_set = load_rules(&rules)?;
            println!(
                "{}: version {}, {} rules ({} in shadow mode)",
                rules.display(),
                rule_set.version,
                rule_set.rules.len(),
                rule_set.rules.iter().filter(|rule| rule.shadow).count()
            );
            Ok(ExitCode::SUCCESS)
        }
        RiskCommand::Backtest(args) => run_backtest(&args),
        RiskCommand::Labels { store, json } => {
            let location = store.location()?;
            let database = kinko_store::sql::Database::open(&location)
                .with_context(|| format!("opening {}", location.describe()))?;
            let report = database
                .read(|tx: &mut dyn kinko_store::sql::Tx| kinko_cases::labels::rule_precision(tx))
                .with_context(|| format!("reading the cases in {}", location.describe()))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", kinko_cases::labels::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The rules that score money out in `kinko serve`: `KINKO_RISK_RULES` names a rule file, or
/// `shipped` (the default: `rules/default.toml` as built in), or `off` — said by name, never by
/// omission. A bad file refuses to start, with every problem and its line.
pub fn rules_from_env() -> anyhow::Result<Option<RuleSet>> {
    let choice = std::env::var("KINKO_RISK_RULES").unwrap_or_else(|_| "shipped".to_owned());
    match choice.trim() {
        "off" => {
            tracing::warn!("KINKO_RISK_RULES=off: money out is not scored");
            Ok(None)
        }
        "shipped" => RuleSet::shipped()
            .map(Some)
            .map_err(|errors| anyhow::anyhow!("the built-in rules: {errors}")),
        path => load_rules(Path::new(path))
            .map(Some)
            .context("KINKO_RISK_RULES"),
    }
}

fn load_rules(path: &Path) -> anyhow::Result<RuleSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the rule file {}", path.display()))?;
    RuleSet::parse(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|error| format!("  {}:{}: {}", path.display(), error.line, error.message))
            .collect();
        anyhow::anyhow!("{} refused:\n{}", path.display(), lines.join("\n"))
    })
}

fn run_backtest(args: &BacktestArgs) -> anyhow::Result<ExitCode> {
    let rules = load_rules(&args.rules)?;
    let since_s = match &args.since {
        Some(text) => parse_since(text)?,
        None => 0,
    };
    let file = File::open(&args.events)
        .with_context(|| format!("opening the event log {}", args.events.display()))?;
    let mut lines = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", args.events.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: LogLine = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", args.events.display(), index + 1))?;
        lines.push(parsed);
    }
    let started = Instant::now();
    let report = backtest(rules, lines, since_s, SLOTS_MAX_DEFAULT);
    let elapsed_s = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report, elapsed_s));
    }
    Ok(ExitCode::SUCCESS)
}

/// The backtest as a table, one line per rule.
pub fn render(report: &Report, elapsed_s: f64) -> String {
    let mut out = format!(
        "rules {} · {} events ({} fraud, {} honest) replayed in {elapsed_s:.2} s · {} decisions would change\n",
        report.rules_version,
        report.events,
        report.events_fraud,
        report.events_honest,
        report.changed
    );
    let [allow, challenge, review, deny] = report.outcomes;
    out.push_str(&format!(
        "outcomes: allow {allow}, challenge {challenge}, review {review}, deny {deny}\n"
    ));
    out.push_str(&format!(
        "{:<34} {:>7} {:>7} {:>7} {:>9} {:>8} {:>7}  mode\n",
        "rule", "hits", "fraud", "honest", "precision", "changed", "missed"
    ));
    for rule in &report.rules {
        let precision = rule
            .precision
            .map_or_else(|| "-".to_owned(), |precision| format!("{precision:.3}"));
        out.push_str(&format!(
            "{:<34} {:>7} {:>7} {:>7} {:>9} {:>8} {:>7}  {}\n",
            rule.rule_id,
            rule.hits,
            rule.hits_fraud,
            rule.hits_honest,
            precision,
            rule.changed,
            rule.missed_fraud,
            if rule.shadow { "shadow" } else { "active" }
        ));
    }
    out
}

/// Unix seconds, or a UTC date `YYYY-MM-DD`.
fn parse_since(text: &str) -> anyhow::Result<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        anyhow::bail!("--since {text}: give Unix seconds or YYYY-MM-DD");
    };
    let (Ok(year), Ok(month), Ok(day)) = (
        year.parse::<i64>(),
        month.parse::<i64>(),
        day.parse::<i64>(),
    ) else {
        anyhow::bail!("--since {text}: give Unix seconds or YYYY-MM-DD");
    };
    anyhow::ensure!(
        (1970..=9999).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day),
        "--since {text}: not a date"
    );
    // Days from the civil date (Howard Hinnant's algorithm).
    let shifted_year = if month <= 2 { year - 1 } else { year };
    let era = shifted_year.div_euclid(400);
    let year_of_era = shifted_year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Ok(u64::try_from(days * 86_400)?)
}

#[derive(Args, Debug)]
pub struct RiskBenchArgs {
    /// Users in the feature state (each with a month of history).
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u32,
    /// Timed decisions per run.
    #[arg(long, default_value_t = 200_000)]
    pub decisions: u32,
    /// Runs; the figures are the medians over runs.
    #[arg(long, default_value_t = 5)]
    pub runs: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

const NOW_S: u64 = 1_800_000_000;
const DAY_S: u64 = 86_400;

/// A month of history per user: a link, charges, payments (some at high-risk shops), P2P to
/// other users, sign-ins; users spread over 65,536 networks and 100 banks.
fn history(user: u32, users: u32, rng: &mut StdRng) -> Vec<Event> {
    let actor = bench_actor(user, rng);
    let mut events = Vec::with_capacity(8);
    let link_created_s = NOW_S - rng.random_range(1..400) * DAY_S;
    for _ in 0..rng.random_range(1..=3) {
        let at_s = NOW_S - rng.random_range(60..30 * DAY_S);
        events.push(Event {
            at_s,
            actor: actor.clone(),
            kind: EventKind::Charge {
                bank: Key::from_u128(u128::from(user % 100)),
                bank_account: Key::from_u128((2 << 64) | u128::from(user)),
                link: Key::from_u128((3 << 64) | u128::from(user)),
                link_created_s: link_created_s.min(at_s),
                method: LinkMethod::Oauth,
                amount_minor: rng.random_range(1..30) * 1_000,
                balance_minor: 50_000,
            },
        });
    }
    for _ in 0..rng.random_range(0..=2) {
        let receiver = rng.random_range(0..users);
        events.push(Event {
            at_s: NOW_S - rng.random_range(60..30 * DAY_S),
            actor: actor.clone(),
            kind: EventKind::P2p {
                receiver: Key::from_u128(u128::from(receiver)),
                receiver_kyc_level: 1,
                amount_minor: rng.random_range(1..20) * 500,
                balance_minor: 50_000,
            },
        });
    }
    events.push(Event {
        at_s: NOW_S - rng.random_range(60..30 * DAY_S),
        actor,
        kind: EventKind::SignIn {
            success: true,
            new_device: false,
        },
    });
    events.sort_by_key(|event| event.at_s);
    events
}

fn bench_actor(user: u32, rng: &mut StdRng) -> Actor {
    Actor {
        user: Key::from_u128(u128::from(user)),
        user_created_s: NOW_S - rng.random_range(1..1_000) * DAY_S,
        kyc_level: u8::from(rng.random_range(0..10) > 1),
        device: Some(Key::from_u128((1 << 64) | u128::from(user))),
        ip: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
            (10 << 24) | (rng.random_range(0..65_536_u32) << 8) | 7,
        ))),
    }
}

/// A decision-time event: P2P, payment, charge or withdrawal by a random user.
fn live_event(users: u32, rng: &mut StdRng, at_s: u64) -> Event {
    let user = rng.random_range(0..users);
    let actor = bench_actor(user, rng);
    let amount_minor = rng.random_range(1..60) * 500;
    let kind = match rng.random_range(0..4) {
        0 => EventKind::P2p {
            receiver: Key::from_u128(u128::from(rng.random_range(0..users))),
            receiver_kyc_level: 1,
            amount_minor,
            balance_minor: 40_000,
        },
        1 => EventKind::Payment {
            merchant: Key::from_u128((4 << 64) | u128::from(rng.random_range(0..5_000_u32))),
            category: if rng.random_range(0..10) == 0 {
                "electronics".to_owned()
            } else {
                "grocery".to_owned()
            },
            amount_minor,
            balance_minor: 40_000,
        },
        2 => EventKind::Charge {
            bank: Key::from_u128(u128::from(user % 100)),
            bank_account: Key::from_u128((2 << 64) | u128::from(user)),
            link: Key::from_u128((3 << 64) | u128::from(user)),
            link_created_s: at_s - 30 * DAY_S,
            method: LinkMethod::Oauth,
            amount_minor,
            balance_minor: 40_000,
        },
        _ => EventKind::Withdrawal {
            bank: Key::from_u128(u128::from(user % 100)),
            bank_account: Key::from_u128((2 << 64) | u128::from(user)),
            link: Key::from_u128((3 << 64) | u128::from(user)),
            link_created_s: at_s - 30 * DAY_S,
            method: LinkMethod::Oauth,
            amount_minor,
            balance_minor: 40_000,
        },
    };
    Event { at_s, actor, kind }
}

pub fn bench(args: RiskBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.users >= 2, "--users must be at least 2");
    anyhow::ensure!(
        (1..=100).contains(&args.runs),
        "--runs must be between 1 and 100"
    );
    anyhow::ensure!(
        (1_000..=10_000_000).contains(&args.decisions),
        "--decisions must be between 1,000 and 10,000,000"
    );
    let rules = RuleSet::shipped().map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let mut engine = Engine::new(rules, SLOTS_MAX_DEFAULT.max(args.users as usize * 16));
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let mut history_events: u64 = 0;
    for user in 0..args.users {
        for event in history(user, args.users, &mut rng) {
            engine.observe(&event);
            history_events += 1;
        }
    }
    let build_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        !engine.state().is_saturated(),
        "the feature state filled up while building"
    );
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut p999s = Vec::new();
    let mut declined: u64 = 0;
    for run in 0..args.runs {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        for index in 0..args.decisions {
            let at_s = NOW_S + u64::from(run) * 600 + u64::from(index) / 1_000;
            let event = live_event(args.users, &mut rng, at_s);
            let started = Instant::now();
            let decision = engine.decide(&event);
            let elapsed_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            histogram.record(elapsed_ns.max(1))?;
            declined += u64::from(decision.outcome >= kinko_risk::Outcome::Review);
            engine.observe(&event);
        }
        p50s.push(histogram.value_at_quantile(0.50));
        p99s.push(histogram.value_at_quantile(0.99));
        p999s.push(histogram.value_at_quantile(0.999));
    }
    let to_us = |values: &mut Vec<u64>| {
        values.sort_unstable();
        let median_ns = values.get(values.len() / 2).copied().unwrap_or(0);
        // Nanoseconds below 2^52: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let us = median_ns as f64 / 1_000.0;
        us
    };
    let (p50_us, p99_us, p999_us) = (to_us(&mut p50s), to_us(&mut p99s), to_us(&mut p999s));
    let slots = engine.state().slot_count();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "users": args.users,
                "history_events": history_events,
                "state_slots": slots,
                "rules": engine.rules().rules.len(),
                "runs": args.runs,
                "decisions_per_run": args.decisions,
                "declined": declined,
                "build_s": build_s,
                "decision_us_p50": p50_us,
                "decision_us_p99": p99_us,
                "decision_us_p999": p999_us,
            })
        );
    } else {
        println!(
            "risk engine: {} users, {history_events} history events, {slots} state slots, {} rules (built in {build_s:.1} s)",
            args.users,
            engine.rules().rules.len()
        );
        println!(
            "  {} runs × {} decisions, medians over runs ({declined} declined in all)",
            args.runs, args.decisions
        );
        println!("  decision_us_p50   {p50_us:>8.2}");
        println!("  decision_us_p99   {p99_us:>8.2}");
        println!("  decision_us_p999  {p999_us:>8.2}");
    }
    Ok(ExitCode::SUCCESS)
}
