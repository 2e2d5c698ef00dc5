//! `kinko audit verify`: walks the audit log's hash chain and reports every break. Exits 0
//! when the chain is intact, 2 when it is not (like `kinko check` for the ledger).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use kinko_store::sql::Database;

use crate::StoreArgs;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain; exits 2 and names the entries if it was tampered with.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { store, json } => verify(&store, json),
    }
}

fn verify(store: &StoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    let location = store.location()?;
    let database =
        Database::open(&location).with_context(|| format!("opening {}", location.describe()))?;
    let report = kinko_audit::verify(&database)
        .with_context(|| format!("reading the audit log in {}", location.describe()))?;
    let breaks: Vec<String> = report.breaks.iter().map(ToString::to_string).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "store": location.kind(),
                "entries_checked": report.entries_checked,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash_hex,
                "intact": report.is_intact(),
                "breaks": breaks,
                "breaks_omitted": report.breaks_omitted,
            })
        );
    } else {
        println!(
            "checked {} audit entries in {}",
            report.entries_checked,
            location.describe()
        );
        for line in &breaks {
            println!("BREAK: {line}");
        }
        if report.breaks_omitted > 0 {
            println!("… and {} more breaks", report.breaks_omitted);
        }
        // The head hash is what to anchor outside the database (see kinko-audit's docs).
        println!(
            "head: entry {} hash {}",
            report.head_seq, report.head_hash_hex
        );
        if report.is_intact() {
            println!("audit chain intact");
        }
    }
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
