//! Test support for the crash test (`crates/kinko/tests/crash.rs`): applies transfers in
//! batches from several threads, forever, and prints one line per acknowledged transfer
//! (`ack <transfer id> <debit index> <credit index> <amount>`) only after the ledger answered
//! `ok` — that is, after the batch's commit returned. The parent SIGKILLs it at a random
//! moment and checks that every printed transfer survived exactly once.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use kinko_core::SystemClock;
use kinko_ledger::{
    AccountFlags, AccountId, CreateAccountResult, CreateTransferResult, LEDGER_JPY, NewAccount,
    TransferId, TransferRequest, WriterConfig,
};
use rand::Rng;

use crate::StoreArgs;

/// Fixed account ids so every restart works on the same accounts.
pub const CRASH_ACCOUNTS: u128 = 32;
pub const CRASH_ACCOUNT_BASE: u128 = 0x0192_0000_0000_7000_a000_0000_0000_0000;

#[derive(Args, Debug)]
pub struct CrashChildArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Submitting threads; more threads make bigger group-commit batches.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Transfers per request.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
}

pub fn run(args: CrashChildArgs) -> anyhow::Result<ExitCode> {
    let location = args.store.location()?;
    let ledger = Arc::new(crate::start_ledger(&location, WriterConfig::DEFAULT)?);
    let accounts = (1..=CRASH_ACCOUNTS)
        .map(|index| {
            Ok(NewAccount {
                id: AccountId::from_u128(CRASH_ACCOUNT_BASE + index)?,
                ledger: LEDGER_JPY,
                code: 1,
                flags: AccountFlags::NONE,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for result in ledger.create_accounts_blocking(accounts)? {
        anyhow::ensure!(
            matches!(
                result,
                CreateAccountResult::Ok | CreateAccountResult::Exists
            ),
            "account: {result}"
        );
    }
    println!("ready");
    std::io::stdout().flush()?;
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    std::thread::scope(|scope| {
        for _ in 0..args.threads {
            let ledger = Arc::clone(&ledger);
            let stdout = Arc::clone(&stdout);
            scope.spawn(move || submit_forever(&ledger, &stdout, args.batch_size));
        }
    });
    Ok(ExitCode::FAILURE)
}

fn submit_forever(
    ledger: &kinko_ledger::Ledger,
    stdout: &std::sync::Mutex<std::io::Stdout>,
    batch_size: usize,
) {
    let mut random = rand::rng();
    loop {
        let mut batch = Vec::with_capacity(batch_size);
        for _ in 0..batch_size {
            let debit = random.random_range(1..=CRASH_ACCOUNTS);
            let mut credit = random.random_range(1..=CRASH_ACCOUNTS);
            if credit == debit {
                credit = debit % CRASH_ACCOUNTS + 1;
            }
            let (Ok(debit_id), Ok(credit_id)) = (
                AccountId::from_u128(CRASH_ACCOUNT_BASE + debit),
                AccountId::from_u128(CRASH_ACCOUNT_BASE + credit),
            ) else {
                return;
            };
            batch.push(TransferRequest::single_phase(
                TransferId::generate(&SystemClock),
                debit_id,
                credit_id,
                random.random_range(1..=1_000),
                LEDGER_JPY,
                1,
            ));
        }
        let Ok(results) = ledger.create_transfers_blocking(batch.clone()) else {
            return;
        };
        let mut lines = String::new();
        for (transfer, result) in batch.iter().zip(results) {
            if result == CreateTransferResult::Ok {
                let debit = transfer
                    .debit_account_id
                    .map_or(0, |id| id.as_u128() - CRASH_ACCOUNT_BASE);
                let credit = transfer
                    .credit_account_id
                    .map_or(0, |id| id.as_u128() - CRASH_ACCOUNT_BASE);
                lines.push_str(&format!(
                    "ack {} {debit} {credit} {}\n",
                    transfer.id, transfer.amount
                ));
            }
        }
        let Ok(mut out) = stdout.lock() else { return };
        if out
            .write_all(lines.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}
