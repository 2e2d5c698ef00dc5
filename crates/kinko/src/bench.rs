//! `kinko bench ledger`: durable, in-process ledger throughput. Accounts are created first;
//! then `--clients` threads submit pre-generated requests of `--batch-size` uniformly random
//! transfers, and the writer groups whatever is queued into one storage transaction.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use kinko_core::SystemClock;
use kinko_ledger::{
    AccountFlags, AccountId, CreateAccountResult, CreateTransferResult, LEDGER_JPY, Ledger,
    NewAccount, TransferId, TransferRequest, WriterConfig,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::StoreArgs;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Durable ledger throughput, in-process (no HTTP).
    Ledger(LedgerBenchArgs),
    /// QR payments over HTTP/1.1 keep-alive connections, against a running server or a
    /// `kinko serve` child on a fresh store.
    Api(crate::bench_api::ApiBenchArgs),
    /// The risk engine's decision latency, in-process, over a feature state of N users.
    Risk(crate::risk::RiskBenchArgs),
}

#[derive(Args, Debug)]
pub struct LedgerBenchArgs {
    #[arg(long, default_value_t = 10_000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub transfers: usize,
    /// Transfers per request (a client's batch). At most 8,190.
    #[arg(long, default_value_t = 8_190)]
    pub batch_size: usize,
    /// Threads submitting requests at once.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seed of the random workload, for repeatable runs.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Without --data-dir or --database-url, a fresh temporary SQLite directory is used.
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Ledger(args) => ledger(args),
        BenchCommand::Api(args) => crate::bench_api::run(args),
        BenchCommand::Risk(args) => crate::risk::bench(args),
    }
}

fn ledger(args: LedgerBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!(
        (1..=WriterConfig::DEFAULT.request_events_max).contains(&args.batch_size),
        "--batch-size must be between 1 and {}",
        WriterConfig::DEFAULT.request_events_max
    );
    anyhow::ensure!((1..=64).contains(&args.clients), "--clients must be 1..=64");
    let temporary = if args.store.data_dir.is_none() && args.store.database_url.is_none() {
        Some(tempfile::Builder::new().prefix("kinko-bench-").tempdir()?)
    } else {
        None
    };
    let store = match &temporary {
        Some(dir) => StoreArgs {
            data_dir: Some(dir.path().to_path_buf()),
            database_url: None,
        },
        None => args.store.clone(),
    };
    let location = store.location()?;
    let ledger = Arc::new(crate::start_ledger(&location, WriterConfig::DEFAULT)?);

    let account_ids: Vec<AccountId> = (0..args.accounts)
        .map(|_| AccountId::generate(&SystemClock))
        .collect();
    for chunk in account_ids.chunks(args.batch_size) {
        let accounts = chunk
            .iter()
            .map(|id| NewAccount {
                id: *id,
                ledger: LEDGER_JPY,
                code: 1,
                flags: AccountFlags::NONE,
            })
            .collect();
        let results = ledger.create_accounts_blocking(accounts)?;
        anyhow::ensure!(
            results
                .iter()
                .all(|result| *result == CreateAccountResult::Ok),
            "creating accounts failed"
        );
    }

    // Generate the whole workload before the clock starts.
    let mut random = StdRng::seed_from_u64(args.seed);
    let mut per_client: Vec<Vec<Vec<TransferRequest>>> = vec![Vec::new(); args.clients];
    let mut generated = 0;
    let mut request_index = 0;
    while generated < args.transfers {
        let size = args.batch_size.min(args.transfers - generated);
        let request = (0..size)
            .map(|_| {
                let debit = random.random_range(0..args.accounts);
                let mut credit = random.random_range(0..args.accounts - 1);
                if credit >= debit {
                    credit += 1;
                }
                TransferRequest::single_phase(
                    TransferId::generate(&SystemClock),
                    account_ids[debit],
                    account_ids[credit],
                    random.random_range(1..=10_000),
                    LEDGER_JPY,
                    1,
                )
            })
            .collect();
        per_client[request_index % args.clients].push(request);
        request_index += 1;
        generated += size;
    }

    let stats_before = ledger.stats();
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<(Histogram<u64>, u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = per_client
            .into_iter()
            .map(|requests| {
                let ledger = Arc::clone(&ledger);
                scope.spawn(move || submit(&ledger, requests))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let elapsed_s = started.elapsed().as_secs_f64();
    let stats = ledger.stats();

    let mut latency_us = Histogram::<u64>::new(3)?;
    let (mut ok, mut rejected) = (0u64, 0u64);
    for outcome in outcomes {
        let (histogram, ok_client, rejected_client) = outcome?;
        latency_us.add(&histogram)?;
        ok += ok_client;
        rejected += rejected_client;
    }
    let transfers_per_s = ok as f64 / elapsed_s;
    let ms = |us: u64| us as f64 / 1_000.0;
    let batches = stats.batches - stats_before.batches;
    let share = |ns: u64| ns as f64 / 1e9 / elapsed_s * 100.0;
    let load_share = share(stats.load_ns - stats_before.load_ns);
    let judge_share = share(stats.judge_ns - stats_before.judge_ns);
    let commit_share = share(stats.commit_ns - stats_before.commit_ns);
    let events_per_batch = (stats.events - stats_before.events) as f64 / batches.max(1) as f64;

    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "store": location.kind(),
                "accounts": args.accounts,
                "transfers": args.transfers,
                "batch_size": args.batch_size,
                "clients": args.clients,
                "transfers_ok": ok,
                "transfers_rejected": rejected,
                "elapsed_s": elapsed_s,
                "transfers_per_s": transfers_per_s.round(),
                "batch_latency_ms_p50": ms(latency_us.value_at_quantile(0.50)),
                "batch_latency_ms_p99": ms(latency_us.value_at_quantile(0.99)),
                "batch_latency_ms_max": ms(latency_us.max()),
                "writer_batches": batches,
                "writer_events_per_batch": events_per_batch.round(),
                "writer_time_pct_load": load_share.round(),
                "writer_time_pct_judge": judge_share.round(),
                "writer_time_pct_commit": commit_share.round(),
            })
        );
    } else {
        println!(
            "kinko bench ledger — {} ({})",
            location.kind(),
            location.describe()
        );
        println!(
            "  {} accounts, {} transfers in requests of {}, {} clients",
            args.accounts, args.transfers, args.batch_size, args.clients
        );
        println!("  ok {ok}, rejected {rejected}, {elapsed_s:.2} s");
        println!("  throughput        {:>12.0} transfers/s", transfers_per_s);
        println!(
            "  request latency   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(latency_us.value_at_quantile(0.50)),
            ms(latency_us.value_at_quantile(0.99)),
            ms(latency_us.max())
        );
        println!(
            "  writer            {batches} batches, {events_per_batch:.0} events each; time: load {load_share:.0}%, judge {judge_share:.0}%, write+commit {commit_share:.0}%"
        );
    }
    drop(ledger);
    Ok(ExitCode::SUCCESS)
}

fn submit(
    ledger: &Ledger,
    requests: Vec<Vec<TransferRequest>>,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut latency_us = Histogram::<u64>::new(3)?;
    let (mut ok, mut rejected) = (0u64, 0u64);
    for request in requests {
        let started = Instant::now();
        let results = ledger.create_transfers_blocking(request)?;
        latency_us.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        for result in results {
            if result == CreateTransferResult::Ok {
                ok += 1;
            } else {
                rejected += 1;
            }
        }
    }
    Ok((latency_us, ok, rejected))
}
