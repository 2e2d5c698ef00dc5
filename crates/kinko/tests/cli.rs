//! The binary over real processes and real HTTP: `serve` answers health and metrics,
//! unknown routes get problem+json, `check` exits non-zero with a report on a breach, an
//! ambiguous database URL refuses to start, the demo seeds idempotently, and `serve` fails
//! closed: without `KINKO_ENV` it refuses to start, naming what to set (issue 13, item 5).

mod support;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use support::{fresh_store, http, http_with, kinko, spawn_server, spawn_server_with};

/// Runs `kinko serve --port 0` on a fresh SQLite directory with `environment` and expects it
/// to refuse to start: returns its output; a server that starts instead fails the test.
fn serve_refusing(environment: &[(&str, &str)]) -> (Output, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let data_dir = dir.path().join("data");
    let mut child = kinko()
        .env_remove("KINKO_ENV")
        .env_remove("KINKO_NOTIFY")
        .env_remove("KINKO_SECRET_KEY")
        .envs(environment.iter().copied())
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{error}"));
    let started = Instant::now();
    while child
        .try_wait()
        .unwrap_or_else(|error| panic!("{error}"))
        .is_none()
    {
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap_or_else(|error| panic!("{error}"));
            panic!("kinko serve started with {environment:?}: it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|error| panic!("{error}"));
    let created = data_dir.exists();
    drop(dir);
    assert!(!output.status.success());
    (
        output,
        if created {
            data_dir
        } else {
            std::path::PathBuf::new()
        },
    )
}

#[test]
fn serve_without_kinko_env_refuses_to_start_and_names_what_to_set() {
    let (output, created) = serve_refusing(&[]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("KINKO_ENV is not set"), "{message}");
    assert!(message.contains("KINKO_ENV=production"), "{message}");
    assert!(message.contains("KINKO_ENV=sandbox"), "{message}");
    assert!(
        String::from_utf8_lossy(&output.stdout).is_empty(),
        "it never listened"
    );
    // Refused before anything was opened: no data directory was made.
    assert_eq!(created, std::path::PathBuf::new(), "created {created:?}");
    // The values that once meant "a developer's machine" are refused too, not guessed.
    for value in ["", "development", "demo", "test", "prod"] {
        let (output, _) = serve_refusing(&[("KINKO_ENV", value)]);
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains("KINKO_ENV"), "{value:?}: {message}");
    }
    // Production runs no sandbox part: with only the sandbox eKYC provider it cannot start.
    let (output, _) = serve_refusing(&[("KINKO_ENV", "production")]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("eKYC"), "{message}");
}

/// The other way: an explicit `KINKO_ENV=sandbox` starts, and only then is the sandbox outbox
/// there (`serve_answers_health_metrics_and_problems` runs the same way on both stores).
#[test]
fn serve_with_kinko_env_sandbox_starts_with_the_sandbox_parts() {
    let (store, _dir) = fresh_store("sqlite");
    let (mut child, address) = spawn_server_with("serve", &store, &[("KINKO_ENV", "sandbox")]);
    let outbox = http(
        &address,
        "GET",
        "/api/v1/sandbox/outbox?destination=a%40example.com",
        None,
    );
    assert_eq!(outbox.status, 200, "{}", outbox.body);
    child.kill().unwrap_or_else(|error| panic!("{error}"));
    child.wait().unwrap_or_else(|error| panic!("{error}"));
}

/// `/metrics` tells how busy the platform is and which flows fail: with a token configured,
/// only that bearer token reads it.
#[test]
fn metrics_need_the_configured_token() {
    let token = "metrics-token-0123456789abcdefghijklmnop";
    let (store, _dir) = fresh_store("sqlite");
    let (mut child, address) =
        spawn_server_with("serve", &store, &[("KINKO_METRICS_TOKEN", token)]);
    let anonymous = http(&address, "GET", "/metrics", None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert!(anonymous.body.contains("METRICS_TOKEN_REQUIRED"));
    let wrong = http_with(
        &address,
        "GET",
        "/metrics",
        None,
        &[(
            "Authorization",
            "Bearer metrics-token-0123456789abcdefghijklmnoX",
        )],
    );
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {token}");
    let right = http_with(
        &address,
        "GET",
        "/metrics",
        None,
        &[("Authorization", &bearer)],
    );
    assert_eq!(right.status, 200, "{}", right.body);
    child.kill().unwrap_or_else(|error| panic!("{error}"));
    child.wait().unwrap_or_else(|error| panic!("{error}"));
    // A token too short to resist guessing refuses to start.
    let (output, _) = serve_refusing(&[
        ("KINKO_ENV", "sandbox"),
        ("KINKO_SECRET_KEY", support::TEST_SECRET_KEY),
        ("KINKO_METRICS_TOKEN", "short"),
    ]);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("KINKO_METRICS_TOKEN"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn serve_answers_health_metrics_and_problems(backend: &str) {
    let (store, _dir) = fresh_store(backend);
    let (mut child, address) = spawn_server("serve", &store);
    let health = http(&address, "GET", "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(health.body.contains(r#""status":"ok""#), "{}", health.body);
    assert!(health.body.contains(backend), "{}", health.body);

    assert!(
        health
            .header("x-request-id")
            .is_some_and(|id| id.len() >= 32),
        "every response carries a request id"
    );

    let openapi = http(&address, "GET", "/api/v1/openapi.json", None);
    assert_eq!(openapi.status, 200);
    let document: serde_json::Value =
        serde_json::from_str(&openapi.body).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.1")),
        "{document}"
    );
    assert!(document["paths"]["/healthz"].is_object(), "{document}");
    assert!(
        document["paths"]["/api/v1/signup"]["post"].is_object(),
        "{document}"
    );

    let index = http(&address, "GET", "/", None);
    assert_eq!(index.status, 200);
    assert!(index.body.contains("/healthz"), "{}", index.body);

    let metrics = http(&address, "GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain"))
    );

    let missing = http(&address, "GET", "/nope", None);
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        missing.body.contains(r#""code":"NOT_FOUND""#),
        "{}",
        missing.body
    );

    let too_big = "x".repeat(kinko_web::REQUEST_BODY_BYTES_MAX + 1);
    let refused = http(&address, "POST", "/healthz", Some(&too_big));
    assert!(
        refused.status == 413 || refused.status == 405,
        "status {}",
        refused.status
    );
    child.kill().unwrap_or_else(|error| panic!("{error}"));
    child.wait().unwrap_or_else(|error| panic!("{error}"));
}

#[test]
fn sqlite_serve_answers_health_metrics_and_problems() {
    serve_answers_health_metrics_and_problems("sqlite");
}

#[test]
fn postgres_serve_answers_health_metrics_and_problems() {
    serve_answers_health_metrics_and_problems("postgres");
}

#[test]
fn check_reports_a_tampered_balance_and_exits_non_zero() {
    let (store, dir) = fresh_store("sqlite");
    let dir = dir
        .dir()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| panic!("sqlite store has a dir"));
    // The demo seed gives the store real accounts and transfers; serve it briefly.
    let seeded_only: Vec<String> = store
        .iter()
        .cloned()
        .chain(["--no-walkthrough".to_owned()])
        .collect();
    let (mut child, address) = spawn_server("demo", &seeded_only);
    assert_eq!(http(&address, "GET", "/healthz", None).status, 200);
    child.kill().unwrap_or_else(|error| panic!("{error}"));
    child.wait().unwrap_or_else(|error| panic!("{error}"));

    let clean = kinko()
        .arg("check")
        .args(&store)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("all invariants hold"));

    // Invent a yen behind the ledger's back.
    let connection = kinko_store::sqlite::connect(&dir).unwrap_or_else(|error| panic!("{error}"));
    let changed = connection
        .execute(
            "UPDATE ledger_accounts SET credits_posted = credits_posted + 1
             WHERE id = (SELECT id FROM ledger_accounts WHERE flags = 0 LIMIT 1)",
            [],
        )
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(changed, 1);
    drop(connection);

    let breached = kinko()
        .arg("check")
        .args(&store)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(breached.status.code(), Some(2));
    let report = String::from_utf8_lossy(&breached.stdout);
    assert!(report.contains("BREACH"), "{report}");
    assert!(
        report.contains("posted debits") && report.contains("posted credits"),
        "{report}"
    );

    let json = kinko()
        .arg("check")
        .arg("--json")
        .args(&store)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(value["clean"], serde_json::Value::Bool(false));
}

#[test]
fn an_ambiguous_database_url_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    for url in ["kinko.db", "mysql://localhost/kinko", "sqlite://kinko.db"] {
        let output = kinko()
            .current_dir(dir.path())
            .args(["check", "--database-url", url])
            .output()
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("postgres://"));
    }
    // Nothing was created for the refused URLs.
    assert_eq!(
        std::fs::read_dir(dir.path())
            .map(|entries| entries.count())
            .unwrap_or(1),
        0
    );
    let both = kinko()
        .args([
            "migrate",
            "--data-dir",
            "x",
            "--database-url",
            "postgres://h/db",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    assert!(!both.status.success());
}

#[test]
fn the_demo_seeds_once_however_often_it_starts() {
    let (store, _dir) = fresh_store("sqlite");
    // The seed alone: the walkthrough's own wallet and charge are new each run by design.
    let seeded_only: Vec<String> = store
        .iter()
        .cloned()
        .chain(["--no-walkthrough".to_owned()])
        .collect();
    for _ in 0..2 {
        let (mut child, address) = spawn_server("demo", &seeded_only);
        assert_eq!(http(&address, "GET", "/healthz", None).status, 200);
        child.kill().unwrap_or_else(|error| panic!("{error}"));
        child.wait().unwrap_or_else(|error| panic!("{error}"));
    }
    let output = kinko()
        .args(["check", "--json"])
        .args(&store)
        .output()
        .unwrap_or_else(|error| panic!("{error}"));
    let value: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(value["clean"], serde_json::Value::Bool(true));
    assert_eq!(
        value["transfers_checked"],
        serde_json::json!(3),
        "seeded twice: {value}"
    );
}

#[test]
fn the_bank_sandbox_serves_from_its_own_store() {
    let bank_dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let store = vec![
        "--data-dir".to_owned(),
        bank_dir.path().display().to_string(),
    ];
    let (mut child, address) = spawn_server("bank-sandbox", &store);
    let metadata = http(
        &address,
        "GET",
        "/.well-known/oauth-authorization-server",
        None,
    );
    assert_eq!(metadata.status, 200, "{}", metadata.body);
    let document: serde_json::Value =
        serde_json::from_str(&metadata.body).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(document["issuer"], format!("http://{address}"));
    assert!(
        document["pushed_authorization_request_endpoint"].is_string(),
        "{document}"
    );
    // An authorization request that skipped PAR is refused.
    let no_par = http(
        &address,
        "GET",
        "/oauth/authorize?client_id=kinko&response_type=code",
        None,
    );
    assert_eq!(no_par.status, 400, "{}", no_par.body);
    child.kill().unwrap_or_else(|error| panic!("{error}"));
    child.wait().unwrap_or_else(|error| panic!("{error}"));
    // Its own store, not Kinko's: the bank's tables live in the directory it was given.
    assert!(bank_dir.path().join("kinko.sqlite3").exists());
}
