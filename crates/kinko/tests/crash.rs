//! Crash test: a child `kinko` process applies transfers from several threads and prints
//! each one only after the ledger acknowledged it; we SIGKILL it at a random moment, 20
//! times on the same store. After every kill, every acknowledged transfer must be stored
//! exactly once with the fields it was acknowledged with, and `kinko check` must pass.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kinko_ledger::TransferId;
use kinko_store::StoreLocation;
use rand::Rng;

const ROUNDS: usize = 20;

struct Acked {
    id: TransferId,
    debit: u128,
    credit: u128,
    amount: u64,
}

fn parse_ack(line: &str) -> Option<Acked> {
    let mut parts = line.strip_prefix("ack ")?.split(' ');
    Some(Acked {
        id: parts.next()?.parse().ok()?,
        debit: parts.next()?.parse().ok()?,
        credit: parts.next()?.parse().ok()?,
        amount: parts.next()?.parse().ok()?,
    })
}

fn location_of(store: &[String]) -> StoreLocation {
    match store[0].as_str() {
        "--data-dir" => StoreLocation::Sqlite {
            data_dir: store[1].clone().into(),
        },
        _ => StoreLocation::Postgres {
            url: store[1].clone(),
        },
    }
}

fn crash_rounds(backend: &str) {
    const ACCOUNT_BASE: u128 = 0x0192_0000_0000_7000_a000_0000_0000_0000;
    let (store, _dir) = support::fresh_store(backend);
    let location = location_of(&store);
    let mut random = rand::rng();
    let mut all_acked: HashSet<TransferId> = HashSet::new();
    for round in 0..ROUNDS {
        let mut child = support::kinko()
            .arg("crash-child")
            .args(&store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn: {error}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Kill at a random moment: sometimes during start-up, mostly mid-stream.
        let delay = Duration::from_millis(random.random_range(50..700));
        let started = Instant::now();
        std::thread::sleep(delay);
        child.kill().unwrap_or_else(|error| panic!("kill: {error}"));
        child.wait().unwrap_or_else(|error| panic!("wait: {error}"));
        let lines = reader.join().unwrap_or_else(|_| panic!("reader thread"));
        let acked: Vec<Acked> = lines.iter().filter_map(|line| parse_ack(line)).collect();

        let (_, ledger_reader) =
            kinko_store::open_ledger(&location).unwrap_or_else(|error| panic!("{error}"));
        for chunk in acked.chunks(500) {
            let ids: Vec<TransferId> = chunk.iter().map(|ack| ack.id).collect();
            let stored = ledger_reader
                .lookup_transfers(&ids)
                .unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(
                stored.len(),
                chunk.len(),
                "round {round}: an acknowledged transfer is missing after kill -9"
            );
            for (ack, transfer) in chunk.iter().zip(&stored) {
                assert_eq!(transfer.id, ack.id);
                assert_eq!(transfer.amount, ack.amount);
                assert_eq!(
                    transfer.debit_account_id.as_u128(),
                    ACCOUNT_BASE + ack.debit
                );
                assert_eq!(
                    transfer.credit_account_id.as_u128(),
                    ACCOUNT_BASE + ack.credit
                );
            }
        }
        for ack in &acked {
            assert!(all_acked.insert(ack.id), "acknowledged twice: {}", ack.id);
        }
        let check = support::kinko()
            .arg("check")
            .args(&store)
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            check.status.success(),
            "round {round} (killed after {:?}): kinko check failed:\n{}",
            started.elapsed(),
            String::from_utf8_lossy(&check.stdout)
        );
    }
    assert!(
        all_acked.len() > 1_000,
        "the child acknowledged only {} transfers in {ROUNDS} rounds: the test exercised little",
        all_acked.len()
    );
    // Exactly once: the store holds every acknowledged transfer and no duplicate of any.
    let (_, ledger_reader) =
        kinko_store::open_ledger(&location).unwrap_or_else(|error| panic!("{error}"));
    let report = ledger_reader
        .check_invariants()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(report.is_clean());
    assert!(report.transfers_checked >= all_acked.len() as u64);
}

#[test]
fn sqlite_survives_kill_9_twenty_times() {
    crash_rounds("sqlite");
}

#[test]
fn postgres_survives_kill_9_twenty_times() {
    crash_rounds("postgres");
}
