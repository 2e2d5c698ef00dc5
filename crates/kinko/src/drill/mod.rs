//! `kinko drill`: an attacker with a leaked list, against a running Kinko over real HTTP, and
//! honest users acting at the same time. Each attack (THREATS §3, D1–D16) counts its attempts
//! and successes, and the yen it cost is measured from balances — the sandbox bank's books for
//! the victims' accounts and the attackers' own wallets — never from Kinko's verdicts. The
//! report is human-readable or `--json`; the exit status is non-zero on any yen lost, any
//! honest action refused, or an attack the drill could not carry out.
//!
//! Without `--target` the drill starts a fresh `kinko demo` as a child process (free ports,
//! temporary data directory, or `--database-url`) that trusts the drill as its proxy, so each
//! attacker and honest user has its own source address.

mod attacks_account;
mod attacks_chain;
mod attacks_link;
mod attacks_money;
mod client;
mod honest;
mod target;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

pub use target::Target;

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// A running Kinko (`http://host:port`); default: a fresh `kinko demo` the drill starts.
    #[arg(long, value_name = "URL", requires_all = ["bank", "demo_log"])]
    pub target: Option<String>,
    /// The sandbox bank of `--target` (`http://host:port`).
    #[arg(long, value_name = "URL")]
    pub bank: Option<String>,
    /// With `--target`: the output `kinko demo` printed (operators, merchant code, ready
    /// wallet), which the insider and stolen-session attacks act with.
    #[arg(long, value_name = "FILE")]
    pub demo_log: Option<std::path::PathBuf>,
    /// With `--target`: the target trusts the drill as a proxy (`KINKO_TRUSTED_PROXIES`), so
    /// `X-Forwarded-For` spreads the attackers over many source addresses.
    #[arg(long)]
    pub proxy_trusted: bool,
    /// Without `--target`: run the drill's own demo on this PostgreSQL database.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Seeds the drill's names and addresses, so two runs on one target do not collide.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// One attack's outcome.
#[derive(Debug, Serialize)]
pub struct AttackReport {
    pub name: &'static str,
    /// `done`, `partial` (some of its variants not built), `not_implemented` or `error`.
    pub status: &'static str,
    pub attempts: u32,
    pub successes: u32,
    pub yen_lost: i64,
    /// The platform refused or flagged the attack (a refusal, a block, a hold).
    pub detected: bool,
    /// Seconds from the attack's first request to its first refusal.
    pub detection_s: Option<f64>,
    /// The case the platform opened, when it opens cases.
    pub case_id: Option<String>,
    pub note: String,
}

impl AttackReport {
    pub fn not_implemented(name: &'static str, note: &str) -> Self {
        Self {
            name,
            status: "not_implemented",
            attempts: 0,
            successes: 0,
            yen_lost: 0,
            detected: false,
            detection_s: None,
            case_id: None,
            note: note.to_owned(),
        }
    }
}

/// Counts an attack's tries as it goes.
pub struct Tally {
    name: &'static str,
    started: Instant,
    attempts: u32,
    successes: u32,
    first_refusal_s: Option<f64>,
    notes: Vec<String>,
}

impl Tally {
    pub fn start(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
            attempts: 0,
            successes: 0,
            first_refusal_s: None,
            notes: Vec::new(),
        }
    }

    /// One try: `succeeded` when the attacker got what it asked for.
    pub fn attempt(&mut self, succeeded: bool) {
        self.attempts = self.attempts.saturating_add(1);
        if succeeded {
            self.successes = self.successes.saturating_add(1);
        } else if self.first_refusal_s.is_none() {
            self.first_refusal_s = Some(self.started.elapsed().as_secs_f64());
        }
    }

    /// One try the platform rightly let through (within a limit): neither a success nor a
    /// refusal.
    pub fn allowed(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) && self.notes.len() < 8 {
            self.notes.push(note);
        }
    }

    pub fn finish(self, status: &'static str, yen_lost: i64) -> AttackReport {
        AttackReport {
            name: self.name,
            status,
            attempts: self.attempts,
            successes: self.successes,
            yen_lost,
            detected: self.first_refusal_s.is_some(),
            detection_s: self.first_refusal_s,
            case_id: None,
            note: self.notes.join("; "),
        }
    }
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: String,
    pub bank: String,
    /// Whether the source addresses were real (`forwarded`) or one address for all (`one`).
    pub sources: &'static str,
    pub yen_lost: i64,
    /// What left the leaked list's bank accounts over the whole drill (the bank's books).
    pub victims_debited_yen: i64,
    pub honest_actions: u32,
    pub honest_blocked: u32,
    /// Honest actions refused by a documented hold (young money, THREATS 24), not by mistake.
    pub honest_held: u32,
    pub honest_notes: Vec<String>,
    pub attacks: Vec<AttackReport>,
    pub duration_s: f64,
}

pub fn run(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default()
    });
    let target = Target::open(&args).context("starting the drill's target")?;
    let run = format!("{:x}", seed % 0xff_ffff);
    let before = client::bank_balances(&target.bank).context("the bank's balances before")?;
    let (attacks, honest) = std::thread::scope(|scope| {
        let honest = scope.spawn(|| honest::act(&target, &run));
        let attacks = run_attacks(&target, &run);
        let honest = honest
            .join()
            .unwrap_or_else(|_| honest::Outcome::failed("the honest users' thread panicked"));
        (attacks, honest)
    });
    let after = client::bank_balances(&target.bank).context("the bank's balances after")?;
    let victims_debited_yen = client::debited_yen(&before, &after, &target.victim_accounts());
    let attacks_lost = attacks
        .iter()
        .map(|attack| attack.yen_lost)
        .fold(0i64, i64::saturating_add);
    let report = Report {
        target: target.kinko_url(),
        bank: target.bank_url(),
        sources: if target.proxy_trusted {
            "forwarded"
        } else {
            "one"
        },
        // A victim debit no attack accounted for still counts: balances, not verdicts.
        yen_lost: attacks_lost.max(victims_debited_yen),
        victims_debited_yen,
        honest_actions: honest.actions,
        honest_blocked: honest.blocked,
        honest_held: honest.held,
        honest_notes: honest.notes,
        attacks,
        duration_s: started.elapsed().as_secs_f64(),
    };
    drop(target);
    print_report(&report, args.json)?;
    let failed = report.attacks.iter().any(|attack| attack.status == "error");
    Ok(if report.yen_lost > 0 || report.honest_blocked > 0 {
        ExitCode::from(1)
    } else if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Every attack in turn; one that fails to run is reported as `error`, not skipped.
fn run_attacks(target: &Target, run: &str) -> Vec<AttackReport> {
    type Attack = fn(&Target, &str) -> anyhow::Result<AttackReport>;
    let attacks: [(&'static str, Attack); 14] = [
        ("D5 parallel charges", attacks_money::parallel_charges),
        ("D4/D16 relink to reset limits", attacks_chain::relink),
        (
            "D12 cash-out chain via P2P mules",
            attacks_chain::cash_out_chain,
        ),
        (
            "D8 payout to another name",
            attacks_chain::payout_other_name,
        ),
        ("D1 leaked records", attacks_link::leaked_records),
        (
            "D2 one PIN, many accounts",
            attacks_link::one_pin_many_accounts,
        ),
        ("D3 PINs spread over sources", attacks_link::spread_pins),
        ("D10 OAuth link attacks", attacks_link::oauth_attacks),
        ("D13 identity swap", attacks_account::identity_swap),
        ("D6 7pay recovery", attacks_account::recovery),
        (
            "D7 credential stuffing",
            attacks_account::credential_stuffing,
        ),
        ("D9 bulk sign-ups", attacks_account::bulk_signups),
        ("D11 QR tampering", attacks_money::qr_tampering),
        ("D14 insider credit", attacks_money::insider_credit),
    ];
    let mut reports: Vec<AttackReport> = attacks
        .iter()
        .map(|(name, attack)| {
            attack(target, run).unwrap_or_else(|error| AttackReport {
                name,
                status: "error",
                attempts: 0,
                successes: 0,
                yen_lost: 0,
                detected: false,
                detection_s: None,
                case_id: None,
                note: format!("the drill could not run it: {error:#}"),
            })
        })
        .collect();
    reports.push(
        attacks_account::stolen_session_attack(target, run).unwrap_or_else(|error| AttackReport {
            note: format!("the drill could not run it: {error:#}"),
            status: "error",
            ..AttackReport::not_implemented("D15 stolen session", "")
        }),
    );
    reports
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "kinko drill against {} (bank {}; sources: {})",
        report.target, report.bank, report.sources
    );
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>8}  note",
        "attack", "attempts", "successes", "yen lost", "detected", "after s"
    );
    for attack in &report.attacks {
        let detected = match (attack.status, attack.detected) {
            ("not_implemented", _) => "n/a",
            (_, true) => "yes",
            (_, false) => "NO",
        };
        println!(
            "{:<34} {:>8} {:>9} {:>9} {:>9} {:>8}  {}{}",
            attack.name,
            attack.attempts,
            attack.successes,
            attack.yen_lost,
            detected,
            attack
                .detection_s
                .map(|seconds| format!("{seconds:.2}"))
                .unwrap_or_else(|| "-".to_owned()),
            if attack.status == "done" {
                String::new()
            } else {
                format!("[{}] ", attack.status)
            },
            attack.note
        );
    }
    println!(
        "yen lost: {} (victims' bank accounts debited: {})",
        report.yen_lost, report.victims_debited_yen
    );
    println!(
        "honest actions: {}, blocked: {}, held by policy: {}{}",
        report.honest_actions,
        report.honest_blocked,
        report.honest_held,
        if report.honest_notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", report.honest_notes.join("; "))
        }
    );
    println!("took {:.1} s", report.duration_s);
    Ok(())
}
