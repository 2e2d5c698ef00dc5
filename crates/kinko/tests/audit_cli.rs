//! `kinko admin create-operator` and `kinko audit verify` as real processes: creating an
//! operator prints the TOTP enrolment once and writes an audit entry; bad input is refused and
//! writes nothing; `audit verify` exits 0 on an intact chain and 2, naming the entry, once the
//! SQLite file was tampered with.

mod support;

use std::io::Write;
use std::process::{Output, Stdio};

use kinko_store::StoreLocation;
use kinko_store::sql::{Database, Tx};
use support::{fresh_store, kinko};

const PASSWORD: &str = "tsuki-no-usagi mochi 2026";

fn run_with_stdin(args: &[&str], store: &[String], stdin: &str) -> Output {
    let mut child = kinko()
        .env_remove("KINKO_SECRET_KEY")
        .args(args)
        .args(store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("spawn: {error}"));
    let written = child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("no stdin"))
        .write_all(stdin.as_bytes());
    match written {
        // A child that refused its arguments exits before reading: nothing to write to.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap_or_else(|error| panic!("{error}")),
    }
    child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn create_operator(store: &[String], extra: &[&str], stdin: &str) -> Output {
    let mut args = vec!["admin", "create-operator"];
    args.extend_from_slice(extra);
    run_with_stdin(&args, store, stdin)
}

fn verify(store: &[String], json: bool) -> Output {
    let mut command = kinko();
    command.args(["audit", "verify"]).args(store);
    if json {
        command.arg("--json");
    }
    command.output().unwrap_or_else(|error| panic!("{error}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn verify_json(store: &[String]) -> (Option<i32>, serde_json::Value) {
    let output = verify(store, true);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", text(&output.stdout)));
    (output.status.code(), report)
}

#[test]
fn create_operator_enrols_totp_and_writes_an_audit_entry() {
    let (store, dir) = fresh_store("sqlite");
    let dir = dir
        .dir()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| panic!("sqlite store has a dir"));
    let output = create_operator(
        &store,
        &["--email", "Root@Example.com", "--role", "admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("role admin"), "{stdout}");
    assert!(
        stdout.contains("otpauth://totp/Kinko:root%40example.com?secret="),
        "{stdout}"
    );
    let secret = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("secret (base32): "))
        .unwrap_or_else(|| panic!("no base32 secret in {stdout}"));
    assert!(
        secret.len() >= 32 && secret.bytes().all(|byte| byte.is_ascii_alphanumeric()),
        "{secret}"
    );
    assert!(!stdout.contains(PASSWORD));

    let partner = create_operator(
        &store,
        &[
            "--email",
            "partner@bank.example",
            "--role",
            "bank_partner",
            "--bank-code",
            "0005",
        ],
        &format!("{PASSWORD}\r\n"),
    );
    assert!(partner.status.success(), "{}", text(&partner.stderr));

    // The entries, read straight from the store.
    let database = Database::open(&StoreLocation::Sqlite {
        data_dir: dir.clone(),
    })
    .unwrap_or_else(|error| panic!("{error}"));
    let entries = database
        .transaction(|tx: &mut dyn Tx| kinko_audit::entries_after(tx, 0, 100))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(entries.len(), 2);
    for entry in &entries {
        assert_eq!(entry.action, "operator.created");
        assert_eq!(entry.actor_kind, "system");
        assert_eq!(entry.reason, "bootstrap via CLI");
    }
    assert!(entries[1].detail.contains("0005"), "{}", entries[1].detail);

    let (code, report) = verify_json(&store);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["intact"], true);
    assert_eq!(report["entries_checked"], 2);
    assert_eq!(report["head_seq"], 2);
}

#[test]
fn create_operator_refuses_bad_input_and_writes_nothing() {
    let (store, _dir) = fresh_store("sqlite");
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec!["--email", "a@example.com", "--role", "admin"],
            String::new(),
            "no password",
        ),
        (
            vec!["--email", "a@example.com", "--role", "admin"],
            "\n".into(),
            "no password",
        ),
        (
            vec!["--email", "a@example.com", "--role", "admin"],
            "short pw 1\n".into(),
            "at least 12",
        ),
        (
            vec!["--email", "a@example.com", "--role", "admin"],
            "a@example.com\n".into(),
            "e-mail",
        ),
        (
            vec!["--email", "a@example.com", "--role", "bank_partner"],
            format!("{PASSWORD}\n"),
            "bank code",
        ),
        (
            vec!["--email", "not an address", "--role", "support"],
            format!("{PASSWORD}\n"),
            "e-mail",
        ),
    ];
    for (args, stdin, expected) in cases {
        let output = create_operator(&store, &args, &stdin);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} {stdin:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let (code, report) = verify_json(&store);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["entries_checked"], 0);
}

#[test]
fn audit_verify_exits_2_and_names_a_tampered_entry() {
    let (store, dir) = fresh_store("sqlite");
    let dir = dir
        .dir()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| panic!("sqlite store has a dir"));
    for email in ["one@example.com", "two@example.com", "three@example.com"] {
        let output = create_operator(
            &store,
            &["--email", email, "--role", "support"],
            &format!("{PASSWORD}\n"),
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let clean = verify(&store, false);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stdout));
    assert!(text(&clean.stdout).contains("audit chain intact"));

    // An attacker with the database file: drop the trigger, rewrite the reason of entry 2.
    let database = Database::open(&StoreLocation::Sqlite {
        data_dir: dir.clone(),
    })
    .unwrap_or_else(|error| panic!("{error}"));
    database
        .transaction(|tx: &mut dyn Tx| {
            tx.execute("DROP TRIGGER audit_log_no_update", &[])?;
            tx.execute(
                "UPDATE audit_log SET reason = 'routine maintenance' WHERE seq = 2",
                &[],
            )
        })
        .unwrap_or_else(|error| panic!("{error}"));
    drop(database);

    let tampered = verify(&store, false);
    let stdout = text(&tampered.stdout);
    assert_eq!(tampered.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("BREAK: entry 2 was modified"), "{stdout}");
    assert!(!stdout.contains("audit chain intact"));
    let (code, report) = verify_json(&store);
    assert_eq!(code, Some(2));
    assert_eq!(report["intact"], false);
    assert_eq!(
        report["breaks"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
}
