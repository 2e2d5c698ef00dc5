//! `kinko drill` on both stores: against a demo the test starts itself (`--target`), the drill
//! reports ¥0 lost outside the known findings (`KNOWN_FINDINGS`, each asserted to the yen),
//! no honest action blocked, every attack it has run without error and detected, and its
//! figures agree with the sandbox bank's books read by the test itself — the leaked list's
//! accounts keep every yen, and the mule's account lost exactly what the drill says (D5: three
//! charges of ¥9,999 within the new link's ¥30,000 a day; D16: what the relinked account let
//! through beyond it). Without `--target` the drill starts its own demo and says the same.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::{TEST_SECRET_KEY, fresh_store, http, kinko};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(
    the_drill_loses_nothing_and_its_figures_match_the_banks_books,
    the_drill_starts_its_own_demo
);

/// The demo's process, stopped however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

/// Starts `kinko demo` trusting 127.0.0.1 as its proxy; its printed lines once it is ready.
fn start_demo(store: &[String], bank_dir: &std::path::Path) -> (Stopped, Vec<String>) {
    let mut child = kinko()
        .env("KINKO_SECRET_KEY", TEST_SECRET_KEY)
        .env("KINKO_TRUSTED_PROXIES", "127.0.0.1")
        .env_remove("KINKO_NOTIFY")
        .env_remove("KINKO_OUTGOING_FREEZE_S")
        .args(["demo", "--port", "0", "--bank-data-dir"])
        .arg(bank_dir)
        .args(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let child = Stopped(child);
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        match receiver.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                let done = line.contains("Press Ctrl-C");
                lines.push(line);
                if done {
                    return (child, lines);
                }
            }
            Err(error) => panic!("the demo stopped printing ({error}):\n{}", lines.join("\n")),
        }
    }
}

/// `host:port` after `label` on the demo's output.
fn address_after(lines: &[String], label: &str) -> String {
    let url = lines
        .iter()
        .find_map(|line| line.split_once(label).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in:\n{}", lines.join("\n")));
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// The sandbox bank's books, keyed `bank-branch-number`.
fn balances(bank: &str) -> BTreeMap<String, i64> {
    let response = http(bank, "GET", "/sandbox/balances", None);
    assert_eq!(response.status, 200, "{}", response.body);
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&response.body).unwrap_or_else(|error| panic!("{error}"));
    list.iter()
        .map(|account| {
            (
                format!(
                    "{}-{}-{}",
                    account["bank_code"].as_str().unwrap_or_default(),
                    account["branch"].as_str().unwrap_or_default(),
                    account["number"].as_str().unwrap_or_default()
                ),
                account["balance_yen"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn key(account: &kinko_bank_sandbox::store::DemoAccount) -> String {
    format!(
        "{}-{}-{}",
        account.bank_code, account.branch, account.number
    )
}

fn attack<'a>(report: &'a serde_json::Value, prefix: &str) -> &'a serde_json::Value {
    report["attacks"]
        .as_array()
        .and_then(|list| {
            list.iter().find(|attack| {
                attack["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(prefix)
            })
        })
        .unwrap_or_else(|| panic!("no {prefix} in {report}"))
}

/// Attacks that succeed against today's platform: findings the drill reports, each asserted
/// exactly (the bank's books agree) so that the fix turns this test red and the entry is
/// removed. None now: D4/D16 (limits per link, so a relink started a fresh day) was fixed by
/// counting the bank's limits per account (issue 11 item 5).
const KNOWN_FINDINGS: [&str; 0] = [];

fn known_finding(attack: &serde_json::Value) -> bool {
    let name = attack["name"].as_str().unwrap_or_default();
    KNOWN_FINDINGS.iter().any(|prefix| name.starts_with(prefix))
}

/// The report's promises: ¥0 lost outside the known findings, nobody honest blocked, no
/// attack that failed to run, every attack that ran refused at least once.
fn assert_holds(report: &serde_json::Value) {
    assert_eq!(report["honest_blocked"], 0, "{report:#}");
    assert!(
        report["honest_actions"].as_u64().unwrap_or(0) >= 3,
        "{report:#}"
    );
    let mut known_lost = 0;
    for attack in report["attacks"].as_array().into_iter().flatten() {
        assert_ne!(attack["status"], "error", "{attack:#}");
        if known_finding(attack) {
            known_lost += attack["yen_lost"].as_i64().unwrap_or(-1);
            continue;
        }
        assert_eq!(attack["yen_lost"], 0, "{attack:#}");
        if attack["status"] == "done" {
            assert_eq!(attack["detected"], true, "{attack:#}");
        }
    }
    assert_eq!(report["yen_lost"], known_lost, "{report:#}");
}

fn the_drill_loses_nothing_and_its_figures_match_the_banks_books(backend: &str) {
    let (store, _scratch) = fresh_store(backend);
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let (_demo, lines) = start_demo(&store, &dir.path().join("bank"));
    let log = dir.path().join("demo.log");
    std::fs::write(&log, lines.join("\n")).unwrap_or_else(|error| panic!("{error}"));
    let kinko_address = address_after(&lines, "pages:");
    let bank_address = address_after(&lines, "another site than the pages): ");
    let before = balances(&bank_address);

    let output = kinko()
        .args(["drill", "--json", "--proxy-trusted", "--seed", "11"])
        .args(["--target", &format!("http://{kinko_address}")])
        .args(["--bank", &format!("http://{bank_address}")])
        .arg("--demo-log")
        .arg(&log)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_holds(&report);
    // Any yen lost makes the drill exit 1.
    let lost = report["yen_lost"].as_i64().unwrap_or(-1);
    assert_eq!(
        output.status.code(),
        Some(if lost > 0 { 1 } else { 0 }),
        "{report:#}"
    );

    // The bank's books, read here: the leaked list's accounts kept every yen…
    let after = balances(&bank_address);
    let customers = kinko_bank_sandbox::store::demo_customers();
    for index in [2, 3, 5] {
        for account in &customers[index].accounts {
            assert_eq!(
                before.get(&key(account)),
                after.get(&key(account)),
                "a victim's account moved"
            );
        }
    }
    assert_eq!(report["victims_debited_yen"], 0);
    // …and the mule's own account lost what the drill says: D5's three charges within the
    // new link's ¥30,000 a day, then what D16's relinked account let through beyond it.
    let mule = key(&customers[4].accounts[0]);
    let debited = before[&mule] - after[&mule];
    let d5 = attack(&report, "D5");
    assert_eq!(d5["yen_lost"], 0);
    assert_eq!(d5["attempts"], 50);
    assert_eq!(d5["successes"], 0);
    let d16 = attack(&report, "D4/D16");
    assert_eq!(
        d16["yen_lost"].as_i64(),
        Some(debited - 3 * 9_999),
        "the mule's account was debited {debited}: {d16:#}"
    );
    assert_eq!(
        debited,
        9_999 * (3 + d16["successes"].as_i64().unwrap_or(-1)),
        "{d16:#}"
    );
    // The insider's credit never reached the wallet: D14 reads the wallet's balance.
    assert_eq!(attack(&report, "D14")["yen_lost"], 0);
}

fn the_drill_starts_its_own_demo(backend: &str) {
    let (store, _scratch) = fresh_store(backend);
    let mut command = kinko();
    command
        .env("KINKO_SECRET_KEY", TEST_SECRET_KEY)
        .env_remove("KINKO_NOTIFY")
        .env_remove("KINKO_OUTGOING_FREEZE_S")
        .args(["drill", "--seed", "12"]);
    // With PostgreSQL the drill's demo runs on the fresh database; with SQLite on its own
    // temporary directory.
    if store[0] == "--database-url" {
        command.args(&store);
    }
    command.arg("--json");
    let output = command.output().unwrap_or_else(|error| panic!("{error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|error| {
        panic!(
            "{error}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_holds(&report);
    let lost = report["yen_lost"].as_i64().unwrap_or(-1);
    assert_eq!(
        output.status.code(),
        Some(if lost > 0 { 1 } else { 0 }),
        "{report:#}"
    );
}
