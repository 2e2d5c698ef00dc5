//! The binary over real processes and real HTTP: `serve` answers health and metrics,
//! unknown routes get problem+json, `check` exits non-zero with a report on a breach, an
//! ambiguous database URL refuses to start, and the demo seeds idempotently.

mod support;

use support::{fresh_store, http, kinko, spawn_server};

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
