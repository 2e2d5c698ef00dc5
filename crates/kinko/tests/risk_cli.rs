//! `kinko risk check|backtest` and `kinko bench risk` as a user runs them: the backtest's
//! table is compared line by line with what a hand-made event log must give, a bad rule file
//! is refused with its line and reason, and the bench prints its three figures.

mod support;

use std::path::Path;

use support::kinko;

const RULES: &str = r#"version = "cli-test-1"

[[rule]]
id = "big-p2p"
events = ["p2p"]
when = ["amount >= 50_000"]
outcome = "deny"
breaker = { max = 100, per = "1h" }
reason_en = "Too big."
reason_ja = "大きすぎます。"

[[rule]]
id = "fan-in-shadow"
events = ["p2p"]
when = ["receiver.p2p_in.distinct_users_24h >= 2"]
outcome = "review"
mode = "shadow"
breaker = { max = 100, per = "1h" }
reason_en = "Held."
reason_ja = "保留。"
"#;

/// Mule `m` receives from a, b and c (the second and third fan in); `d` sends a big honest
/// transfer that was already denied at the time; `w` only warms up (before --since).
const EVENTS: &str = r#"{"at_s": 1799990000, "user": "w", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "m", "receiver_kyc_level": 1, "amount_minor": 90000, "balance_minor": 90000}
{"at_s": 1800000000, "user": "a", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "m", "receiver_kyc_level": 1, "amount_minor": 60000, "balance_minor": 90000, "label": "fraud"}

{"at_s": 1800000060, "user": "b", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "m", "receiver_kyc_level": 1, "amount_minor": 1000, "balance_minor": 90000, "label": "fraud"}
{"at_s": 1800000120, "user": "c", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "m", "receiver_kyc_level": 1, "amount_minor": 70000, "balance_minor": 90000, "label": "fraud"}
{"at_s": 1800000180, "user": "d", "user_created_s": 1700000000, "kyc_level": 1, "type": "p2p", "receiver": "e", "receiver_kyc_level": 1, "amount_minor": 80000, "balance_minor": 90000, "label": "honest", "outcome": "deny"}
{"at_s": 1800000240, "user": "e", "user_created_s": 1700000000, "kyc_level": 1, "type": "payment", "merchant": "shop", "category": "grocery", "amount_minor": 500, "balance_minor": 90000, "label": "honest"}
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("{error}"));
    path.display().to_string()
}

#[test]
fn backtest_prints_per_rule_hits_changes_and_precision_for_a_hand_made_log() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let rules = write(dir.path(), "rules.toml", RULES);
    let events = write(dir.path(), "events.jsonl", EVENTS);
    let output = kinko()
        .args(["risk", "backtest", "--rules", &rules, "--events", &events])
        .args(["--since", "1800000000"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // big-p2p fires on a, c (fraud) and d (honest, already denied): 2 outcomes change.
    // fan-in-shadow fires on b and c (m has two senders before each, w's among them) and
    // misses a; in shadow it changes nothing.
    assert!(
        lines[0].starts_with("rules cli-test-1 · 5 events (3 fraud, 2 honest) replayed in "),
        "{stdout}"
    );
    assert!(
        lines[0].ends_with(" · 2 decisions would change"),
        "{stdout}"
    );
    assert_eq!(lines[1], "outcomes: allow 2, challenge 0, review 0, deny 3");
    let rows: Vec<Vec<&str>> = lines[3..]
        .iter()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec!["big-p2p", "3", "2", "1", "0.667", "2", "1", "active"],
            vec!["fan-in-shadow", "2", "2", "0", "1.000", "0", "1", "shadow"],
        ],
        "{stdout}"
    );

    let json = kinko()
        .args(["risk", "backtest", "--rules", &rules, "--events", &events])
        .args(["--since", "2027-01-15", "--json"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let report: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|error| panic!("{error}"));
    // 2027-01-15 00:00 UTC is 1,799,971,200: every event counts, w's too.
    assert_eq!(report["events"], 6, "{report}");
    assert_eq!(report["rules"][0]["hits"], 4, "{report}");
}

#[test]
fn a_bad_rule_file_or_log_is_refused_with_its_line_and_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let bad = RULES.replace("outcome = \"review\"", "outcome = \"hold\"");
    let rules = write(dir.path(), "bad.toml", &bad);
    let output = kinko()
        .args(["risk", "check", "--rules", &rules])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("bad.toml:16: rule `fan-in-shadow`: outcome `hold` is not allow"),
        "{stderr}"
    );

    let good = write(dir.path(), "good.toml", RULES);
    let events = write(dir.path(), "events.jsonl", "{\"at_s\": 1}\n");
    let output = kinko()
        .args(["risk", "backtest", "--rules", &good, "--events", &events])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("events.jsonl line 1"), "{stderr}");

    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/default.toml");
    let output = kinko()
        .args(["risk", "check", "--rules"])
        .arg(&shipped)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("(0 in shadow mode)"), "{stdout}");
}

#[test]
fn bench_risk_prints_its_three_percentiles() {
    let output = kinko()
        .args(["bench", "risk", "--users", "5000", "--decisions", "2000"])
        .args(["--runs", "3", "--json"])
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    let p50 = figures["decision_us_p50"].as_f64().unwrap_or(-1.0);
    let p99 = figures["decision_us_p99"].as_f64().unwrap_or(-1.0);
    let p999 = figures["decision_us_p999"].as_f64().unwrap_or(-1.0);
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{figures}");
    assert_eq!(figures["users"], 5000);
    assert!(
        figures["state_slots"].as_u64().unwrap_or(0) > 5000,
        "{figures}"
    );
}
