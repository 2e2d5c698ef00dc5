//! `kinko demo` as a walkthrough, on both stores: what it prints is enough to sign in at once —
//! the ready wallet (signed up, verified, KYC'd, linked at the sandbox bank and charged) with
//! its TOTP seed, and the operators with theirs — and the money it shows is in the ledger.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use support::{TEST_SECRET_KEY, fresh_store, http_with, json_of, kinko, text_of, totp_code};

macro_rules! both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite { $(#[test] fn $name() { super::$name("sqlite"); })+ }
        mod postgres { $(#[test] fn $name() { super::$name("postgres"); })+ }
    };
}

both!(the_demo_prints_a_ready_wallet_and_operators_who_can_sign_in);

/// The demo's process, stopped however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

/// The word after `label` on a line of the demo's output.
fn after<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|line| line.split_once(label).map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} in the demo's output:\n{}", lines.join("\n")))
}

fn the_demo_prints_a_ready_wallet_and_operators_who_can_sign_in(backend: &str) {
    let (store, _dir) = fresh_store(backend);
    let bank_dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let mut child = kinko()
        .env("KINKO_SECRET_KEY", TEST_SECRET_KEY)
        .env_remove("KINKO_NOTIFY")
        .env_remove("KINKO_OUTGOING_FREEZE_S")
        .args(["demo", "--port", "0", "--bank-data-dir"])
        .arg(bank_dir.path())
        .args(&store)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut child = Stopped(child);
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
        match receiver.recv_timeout(Duration::from_secs(90)) {
            Ok(line) => {
                let done = line.contains("Press Ctrl-C");
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(error) => panic!("the demo stopped printing ({error}):\n{}", lines.join("\n")),
        }
    }
    let output = lines.join("\n");
    assert!(output.contains("Ready wallet"), "{output}");
    // The pages are announced on localhost (passkeys), the bank on 127.0.0.1 (another site).
    let site = after(&lines, "pages:");
    assert!(site.starts_with("http://localhost:"), "{site}");
    let address = site
        .trim_start_matches("http://localhost:")
        .trim_end_matches('/');
    let address = format!("127.0.0.1:{address}");
    assert!(
        output.contains("Sandbox bank") && output.contains("http://127.0.0.1:"),
        "{output}"
    );

    let email = after(&lines, "e-mail ");
    let wallet_line = [lines
        .iter()
        .find(|line| line.contains("e-mail "))
        .cloned()
        .unwrap_or_default()];
    let password = after(&wallet_line, "password ");
    let seed_line = [lines
        .iter()
        .find(|line| line.trim_start().starts_with("TOTP seed "))
        .cloned()
        .unwrap_or_default()];
    let seed = after(&seed_line, "TOTP seed ");
    let signed_in = http_with(
        &address,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "email": email, "password": password }).to_string()),
        &[],
    );
    assert_eq!(signed_in.status, 201, "{}", signed_in.body);
    let token = text_of(&json_of(&signed_in)["token"]);
    let bearer = format!("Bearer {token}");
    let stepped_up = http_with(
        &address,
        "POST",
        "/api/v1/sessions/current/second-factor",
        Some(&json!({ "totp_code": totp_code(seed, 1) }).to_string()),
        &[("Authorization", &bearer)],
    );
    assert_eq!(stepped_up.status, 200, "{}", stepped_up.body);
    let bearer = format!("Bearer {}", text_of(&json_of(&stepped_up)["token"]));
    let wallet = http_with(
        &address,
        "GET",
        "/api/v1/wallet",
        None,
        &[("Authorization", &bearer)],
    );
    assert_eq!(json_of(&wallet)["balance_yen"], 20_000, "{}", wallet.body);
    assert!(output.contains("balance ¥20,000"), "{output}");
    let links = http_with(
        &address,
        "GET",
        "/api/v1/bank-links",
        None,
        &[("Authorization", &bearer)],
    );
    let links = json_of(&links);
    assert_eq!(links[0]["status"], "active", "{links}");

    // Each operator signs in with what was printed.
    for label in ["admin ", "bank partner "] {
        let line = lines
            .iter()
            .find(|line| line.trim_start().starts_with(label.trim_end()))
            .unwrap_or_else(|| panic!("no {label} line:\n{output}"));
        let mut words = line
            .split_whitespace()
            .skip_while(|word| !word.contains('@'));
        let operator_email = words.next().unwrap_or_default();
        let operator_seed = line
            .split("TOTP ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        let operator = http_with(
            &address,
            "POST",
            "/api/v1/operator/sessions",
            Some(
                &json!({
                    "email": operator_email,
                    "password": password,
                    "totp_code": totp_code(operator_seed, 1),
                })
                .to_string(),
            ),
            &[],
        );
        assert_eq!(operator.status, 201, "{label}: {}", operator.body);
    }

    drop(child.0.kill());
    drop(child.0.wait());
    let check = kinko()
        .arg("check")
        .args(&store)
        .env("KINKO_SECRET_KEY", TEST_SECRET_KEY)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        check.status.success(),
        "kinko check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}
