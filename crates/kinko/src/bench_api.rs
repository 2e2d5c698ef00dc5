//! `kinko bench api`: payments over real HTTP/1.1 keep-alive connections. Wallet users with a
//! balance pay merchants by scanning each merchant's static QR code (`POST /api/v1/payments`).
//!
//! Without `--target` the platform is started as a child `kinko serve --port 0` on a fresh
//! temporary SQLite directory (or on `--database-url`), so the load generator and the server
//! are measured as separate processes, as in a deployment. Setup — an admin operator made with
//! `kinko admin create-operator`, merchants with their API keys and static codes, wallet users
//! signed up, verified, signed in, with TOTP enrolled (the session stepped up) and funded by an
//! operator credit — all goes through the API and is not part of the measured phase. Then
//! `--connections` threads, each with one keep-alive connection and its own share of the
//! users, send `--requests` payments in all; every response is timed into a histogram (µs).
//! Afterwards `kinko check` verifies the books.
//!
//! The server's per-source limits (sign-ups per IP per hour) would refuse most of the users if
//! they all came from one address: against a loopback server each user's setup connects from
//! its own 127.x.y.z address, as distinct clients would.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Money needs a second factor passed within 5 minutes; a user's session is stepped up again
/// when its last pass is older than this.
const STEP_UP_EVERY: Duration = Duration::from_secs(4 * 60);
/// The amount of every payment, in yen.
const PAYMENT_YEN: u64 = 100;
/// Each user is funded with at least this much.
const FUNDING_MIN_YEN: u64 = 1_000_000;
/// One credit moves at most this much (`CREDIT_MAX_YEN` on the server).
const CREDIT_MAX_YEN: u64 = 10_000_000;
/// Distinct error answers printed as they happen.
const ERROR_SAMPLES_MAX: usize = 5;
/// A response head longer than this is refused.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// How long a read or write may block before the request counts as failed.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct ApiBenchArgs {
    /// A running server (http://HOST:PORT). Without it, `kinko serve` is started as a child on
    /// a fresh temporary SQLite directory (or on --database-url).
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Wallet users, spread over the connections.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Merchants, each with its static QR code.
    #[arg(long, default_value_t = 20)]
    pub merchants: usize,
    /// Payments to send in the measured phase.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Keep-alive connections, one thread each.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Threads setting users up (each user's password is hashed with argon2 twice).
    #[arg(long, default_value_t = 4)]
    pub setup_threads: usize,
    /// The store: without --target, the child server runs on this PostgreSQL database instead
    /// of a temporary SQLite directory. With --target, the target's store: used to create the
    /// operator with `kinko admin create-operator` and to run `kinko check` afterwards.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// With --target: the target's SQLite data directory (see --database-url).
    #[arg(long, value_name = "DIR", conflicts_with = "database_url")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ApiBenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.users >= 1, "--users must be at least 1");
    anyhow::ensure!(args.merchants >= 1, "--merchants must be at least 1");
    anyhow::ensure!(args.requests >= 1, "--requests must be at least 1");
    anyhow::ensure!(
        (1..=4_096).contains(&args.connections),
        "--connections must be 1..=4096"
    );
    anyhow::ensure!(
        (1..=64).contains(&args.setup_threads),
        "--setup-threads must be 1..=64"
    );
    let run_id = format!("{:08x}", rand::random::<u32>());
    let setup_started = Instant::now();

    // The store: the target's, or a fresh one for a child server.
    let self_started = args.target.is_none();
    if self_started && args.data_dir.is_some() {
        bail!("--data-dir names a target's store; without --target a fresh directory is used");
    }
    if !self_started && args.data_dir.is_none() && args.database_url.is_none() {
        bail!(
            "with --target, give the target's store (--data-dir or --database-url): the \
             benchmark creates its operator with `kinko admin create-operator` and checks the \
             books with `kinko check`"
        );
    }
    let temporary = if self_started && args.database_url.is_none() {
        Some(
            tempfile::Builder::new()
                .prefix("kinko-bench-api-")
                .tempdir()
                .context("creating a temporary data directory")?,
        )
    } else {
        None
    };
    let store = match (&temporary, &args.data_dir, &args.database_url) {
        (Some(dir), _, _) => Store::Sqlite(dir.path().to_path_buf()),
        (None, Some(dir), _) => Store::Sqlite(dir.clone()),
        (None, None, Some(url)) => Store::Postgres(url.clone()),
        (None, None, None) => bail!("no store"),
    };
    let secret_key = store.secret_key(self_started);
    let operator_email = format!("bench-admin-{run_id}@kinko.example");
    let operator_password = format!("bench operator {}", random_hex(12));
    let operator = create_operator(&store, &secret_key, &operator_email, &operator_password)?;
    let mut server = match &args.target {
        Some(_) => None,
        None => Some(ServerChild::start(&store, &secret_key)?),
    };
    let base = match (&args.target, &server) {
        (Some(url), _) => url.clone(),
        (None, Some(child)) => format!("http://{}", child.address),
        (None, None) => bail!("no server"),
    };
    let target = Target::parse(&base)?;

    // Setup over HTTP: the operator, the merchants, the users.
    let mut admin = Client::new(&target, None);
    let operator_token =
        sign_in_operator(&mut admin, &operator_email, &operator_password, &operator)?;
    let bodies = set_up_merchants(&mut admin, &operator_token, args.merchants)?;
    let funding_yen = funding_per_user(args.requests, args.users, args.connections);
    let users = set_up_users(
        &target,
        &run_id,
        &operator_token,
        args.users,
        args.setup_threads,
        funding_yen,
    )?;
    let setup_s = setup_started.elapsed().as_secs_f64();

    // The measured phase.
    let assignments = assign_users(args.users, args.connections);
    let shared = Shared {
        next: AtomicU64::new(0),
        total: args.requests,
        failing: AtomicBool::new(false),
        errors: Mutex::new(ErrorLog::default()),
        step_ups: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        go: AtomicBool::new(false),
    };
    let server_pid = server.as_ref().map(ServerChild::pid);
    let (outcomes, started, server_cpu_before, client_cpu_before) = std::thread::scope(|scope| {
        let handles: Vec<_> = assignments
            .iter()
            .enumerate()
            .map(|(index, mine)| {
                let mine: Vec<Arc<BenchUser>> =
                    mine.iter().map(|user| Arc::clone(&users[*user])).collect();
                let (target, shared, bodies, run_id) = (&target, &shared, &bodies, &run_id);
                std::thread::Builder::new()
                    .name(format!("bench-conn-{index}"))
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        worker(index, target, mine, bodies, shared, run_id)
                    })
            })
            .collect();
        // The clock starts once every connection is open.
        let spawned = handles.iter().filter(|handle| handle.is_ok()).count();
        while shared.ready.load(Ordering::Acquire) < spawned {
            std::thread::sleep(Duration::from_millis(1));
        }
        let server_cpu_before = server_pid.and_then(cpu_seconds);
        let client_cpu_before = cpu_seconds_self();
        let started = Instant::now();
        shared.go.store(true, Ordering::Release);
        let outcomes: Vec<anyhow::Result<WorkerOutcome>> = handles
            .into_iter()
            .map(|handle| match handle {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a connection thread panicked"))),
                Err(error) => Err(anyhow!("starting a connection thread: {error}")),
            })
            .collect();
        (outcomes, started, server_cpu_before, client_cpu_before)
    });
    let duration_s = started.elapsed().as_secs_f64();
    let server_cpu_s = server_pid
        .and_then(cpu_seconds)
        .zip(server_cpu_before)
        .map(|(after, before)| after - before);
    let client_cpu_s = cpu_seconds_self()
        .zip(client_cpu_before)
        .map(|(after, before)| after - before);

    let mut latency_us = new_histogram()?;
    let (mut ok, mut errors) = (0u64, 0u64);
    for outcome in outcomes {
        let outcome = outcome?;
        latency_us.add(&outcome.latency_us)?;
        ok += outcome.ok;
        errors += outcome.errors;
    }
    let error_kinds = shared
        .errors
        .lock()
        .map(|log| log.kinds.clone())
        .unwrap_or_default();
    let step_ups = shared.step_ups.load(Ordering::Relaxed);

    // The books, with the server still running.
    let check_started = Instant::now();
    let check = run_check(&store);
    let check_s = check_started.elapsed().as_secs_f64();
    if let Some(child) = server.as_mut() {
        child.stop();
    }
    drop(server);
    drop(temporary);

    let requests_done = ok + errors;
    let requests_per_s = requests_done as f64 / duration_s;
    let ms = |us: u64| us as f64 / 1_000.0;
    let (p50, p90, p99, p999, max) = (
        ms(latency_us.value_at_quantile(0.50)),
        ms(latency_us.value_at_quantile(0.90)),
        ms(latency_us.value_at_quantile(0.99)),
        ms(latency_us.value_at_quantile(0.999)),
        ms(latency_us.max()),
    );
    let clean = matches!(&check, Ok(report) if report.clean);
    if args.json {
        let check_json = match &check {
            Ok(report) => json!({
                "clean": report.clean,
                "accounts_checked": report.accounts_checked,
                "transfers_checked": report.transfers_checked,
                "violations": report.violations,
                "duration_s": round3(check_s),
            }),
            Err(error) => json!({ "clean": false, "error": format!("{error:#}") }),
        };
        println!(
            "{}",
            json!({
                "store": store.kind(),
                "target": if args.target.is_some() { base.as_str() } else { "self-started" },
                "users": args.users,
                "merchants": args.merchants,
                "connections": args.connections,
                "requests": requests_done,
                "ok": ok,
                "errors": errors,
                "errors_by_kind": error_kinds,
                "step_ups": step_ups,
                "setup_s": round3(setup_s),
                "duration_s": round3(duration_s),
                "requests_per_s": requests_per_s.round(),
                "latency_ms_p50": p50,
                "latency_ms_p90": p90,
                "latency_ms_p99": p99,
                "latency_ms_p999": p999,
                "latency_ms_max": max,
                "server_cpu_s": server_cpu_s.map(round3),
                "client_cpu_s": client_cpu_s.map(round3),
                "check": check_json,
            })
        );
    } else {
        let served_by = if args.target.is_some() {
            base.clone()
        } else {
            format!("self-started server at {base}")
        };
        println!("kinko bench api — {} ({served_by})", store.kind());
        println!(
            "  setup             {} users, {} merchants in {setup_s:.1} s (not measured)",
            args.users, args.merchants
        );
        println!(
            "  payments          {requests_done} over {} keep-alive connections in {duration_s:.2} s: ok {ok}, errors {errors}",
            args.connections
        );
        for (kind, count) in &error_kinds {
            println!("    error {kind}: {count}");
        }
        if step_ups > 0 {
            println!("  step-ups          {step_ups} (second factor passed again, not timed)");
        }
        println!("  throughput        {requests_per_s:>10.0} requests/s");
        println!(
            "  latency           p50 {p50:.1} ms, p90 {p90:.1} ms, p99 {p99:.1} ms, p99.9 {p999:.1} ms, max {max:.1} ms"
        );
        if let (Some(server_s), Some(client_s)) = (server_cpu_s, client_cpu_s) {
            println!(
                "  cpu               server {server_s:.1} s ({:.2} cores), this client {client_s:.1} s ({:.2} cores)",
                server_s / duration_s,
                client_s / duration_s
            );
        }
        match &check {
            Ok(report) if report.clean => println!(
                "  books             kinko check: all invariants hold ({} accounts, {} transfers, {check_s:.1} s)",
                report.accounts_checked, report.transfers_checked
            ),
            Ok(report) => {
                println!("  books             kinko check: BREACH");
                for violation in &report.violations {
                    println!("    {violation}");
                }
            }
            Err(error) => println!("  books             kinko check failed: {error:#}"),
        }
    }
    Ok(if clean && ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn round3(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 10 minutes at 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

// ---------------------------------------------------------------------------------------------
// The store, the child server and the CLI

enum Store {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Store {
    fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Store::Sqlite(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            Store::Postgres(url) => vec!["--database-url".into(), url.clone()],
        }
    }

    /// The `KINKO_SECRET_KEY` the CLI and the server share. A server started here on SQLite
    /// uses its data directory's `secret.key` file (none); on PostgreSQL the environment's key,
    /// or a fresh one. A target's store: the environment's, as it is (the operator's TOTP
    /// secret must be sealed under the target's key).
    fn secret_key(&self, self_started: bool) -> Option<String> {
        let inherited = std::env::var("KINKO_SECRET_KEY")
            .ok()
            .filter(|key| !key.trim().is_empty());
        match (self, self_started) {
            (_, false) => inherited,
            (Store::Sqlite(_), true) => None,
            (Store::Postgres(_), true) => Some(inherited.unwrap_or_else(|| random_hex(32))),
        }
    }
}

/// `kinko …` (this binary) with the store's environment: the key when there is one, never an
/// inherited database URL.
fn kinko(secret_key: &Option<String>) -> anyhow::Result<Command> {
    let mut command = Command::new(std::env::current_exe().context("finding this binary")?);
    command
        .env_remove("KINKO_DATABASE_URL")
        .env("KINKO_LOG", "warn");
    match secret_key {
        Some(key) => command.env("KINKO_SECRET_KEY", key),
        None => command.env_remove("KINKO_SECRET_KEY"),
    };
    Ok(command)
}

/// What `kinko admin create-operator` printed: the operator's TOTP secret.
struct Operator {
    totp: totp_rs::Totp,
}

fn create_operator(
    store: &Store,
    secret_key: &Option<String>,
    email: &str,
    password: &str,
) -> anyhow::Result<Operator> {
    let mut child = kinko(secret_key)?
        .args([
            "admin",
            "create-operator",
            "--email",
            email,
            "--role",
            "admin",
        ])
        .args(store.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kinko admin create-operator")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin for create-operator"))?
        .write_all(format!("{password}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "kinko admin create-operator failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secret = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("secret (base32): "))
        .ok_or_else(|| anyhow!("no TOTP secret in the output of create-operator: {stdout}"))?;
    Ok(Operator {
        totp: authenticator(secret)?,
    })
}

fn authenticator(secret_base32: &str) -> anyhow::Result<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|error| anyhow!("a TOTP secret that is not base32: {error:?}"))?;
    Ok(totp_rs::Builder::new().with_secret(secret).build()?)
}

/// The code an authenticator app shows `steps_ahead` 30-second steps from now.
fn totp_code(totp: &totp_rs::Totp, steps_ahead: u64) -> String {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    totp.generate(now_s + steps_ahead * 30).to_string()
}

/// `kinko serve --port 0` on the store, stopped (SIGTERM, then SIGKILL) when dropped.
struct ServerChild {
    child: Child,
    address: String,
}

impl ServerChild {
    fn start(store: &Store, secret_key: &Option<String>) -> anyhow::Result<Self> {
        let mut child = kinko(secret_key)?
            .env_remove("KINKO_NOTIFY")
            .env("KINKO_ENV", "sandbox")
            .env_remove("KINKO_BANK_SANDBOX_URL")
            // Enrolling TOTP is a security change that freezes outgoing money for 24 h by
            // default; the benchmark's users pay right after.
            .env("KINKO_OUTGOING_FREEZE_S", "0")
            // One operator funds every benchmark wallet alone: no second operator here.
            .env("KINKO_CREDIT_APPROVAL_ABOVE_YEN", i64::MAX.to_string())
            .args(["serve", "--port", "0"])
            .args(store.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting kinko serve")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout from kinko serve"))?;
        let mut server = Self {
            child,
            address: String::new(),
        };
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = match lines.next() {
                Some(line) => line?,
                None => bail!("kinko serve exited before listening"),
            };
            if let Some(rest) = line.split("http://").nth(1) {
                server.address = rest
                    .split(|c: char| c == '/' || c.is_whitespace())
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (the server lets the ledger finish what is queued), SIGKILL after 15 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if terminated {
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "kinko bench api: the server did not stop within 15 s of SIGTERM; killing it"
            );
        }
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        self.stop();
    }
}

struct CheckReport {
    clean: bool,
    accounts_checked: u64,
    transfers_checked: u64,
    violations: Vec<String>,
}

/// `kinko check --json` on the store.
fn run_check(store: &Store) -> anyhow::Result<CheckReport> {
    let output = kinko(&None)?
        .arg("check")
        .args(store.args())
        .arg("--json")
        .output()
        .context("running kinko check")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "kinko check answered no JSON: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    Ok(CheckReport {
        clean: report["clean"].as_bool() == Some(true) && output.status.success(),
        accounts_checked: report["accounts_checked"].as_u64().unwrap_or_default(),
        transfers_checked: report["transfers_checked"].as_u64().unwrap_or_default(),
        violations: report["violations"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|violation| violation.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// CPU seconds (user + system, all threads) a process has used, from `/proc` (Linux; the
/// kernel reports them in USER_HZ = 100 ticks per second).
fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_from(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_seconds_self() -> Option<f64> {
    cpu_seconds_from(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn cpu_seconds_from(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields are counted after its last ')'.
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); `state` (field 3) is the first here.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over one keep-alive connection

/// Where requests go: the address to connect to and the `Host` header.
struct Target {
    address: SocketAddr,
    host: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--target must be an http:// URL (got {url})"))?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            path.is_empty(),
            "--target is the server's root (http://HOST:PORT), not {url}"
        );
        let with_port = if host.contains(':') && !host.ends_with(']') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let address = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {host}"))?
            .next()
            .ok_or_else(|| anyhow!("{host} resolves to no address"))?;
        Ok(Self {
            address,
            host: host.to_owned(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Response {
    status: u16,
    body: Vec<u8>,
    /// The server closes the connection after this response.
    close: bool,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {} {}", self.status, self.text()))
    }
}

/// A response head: what the client needs to find the body and the connection's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    status: u16,
    /// The head's length with its blank line: the body starts here.
    head_len: usize,
    /// `None`: no Content-Length, the body runs until the server closes.
    content_length: Option<usize>,
    close: bool,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Not a whole response yet: read more.
    Incomplete,
    /// A whole response, and how many bytes of the buffer it used.
    Complete(Response, usize),
    /// The head of a response whose body ends when the connection does.
    UntilClose(Head),
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Parses a response head from the start of `buffer`; `None` until the blank line arrives.
fn parse_head(buffer: &[u8]) -> io::Result<Option<Head>> {
    let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
        if buffer.len() > HEAD_BYTES_MAX {
            return Err(invalid("response head too long"));
        }
        return Ok(None);
    };
    let head =
        std::str::from_utf8(&buffer[..end]).map_err(|_| invalid("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let http_1_0 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => {
            return Err(invalid(format!(
                "not an HTTP/1.x status line: {status_line:?}"
            )));
        }
    };
    let status: u16 = parts
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or_else(|| invalid(format!("no status code in {status_line:?}")))?;
    let mut content_length = None;
    let mut close = http_1_0;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("a header line without a colon: {line:?}")))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| invalid(format!("Content-Length {value:?}")))?;
            if content_length.is_some_and(|known| known != length) {
                return Err(invalid("two different Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid(format!(
                "Transfer-Encoding {value:?} is not supported (the server sends Content-Length)"
            )));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http_1_0 {
                    close = false;
                }
            }
        }
    }
    // These never have a body, whatever the headers say.
    if (100..200).contains(&status) || status == 204 || status == 304 {
        content_length = Some(0);
    }
    Ok(Some(Head {
        status,
        head_len: end + 4,
        content_length,
        close,
    }))
}

/// Parses one response from the start of `buffer`.
fn parse_response(buffer: &[u8]) -> io::Result<Parsed> {
    let Some(head) = parse_head(buffer)? else {
        return Ok(Parsed::Incomplete);
    };
    let Some(length) = head.content_length else {
        return Ok(Parsed::UntilClose(head));
    };
    let end = head.head_len + length;
    if buffer.len() < end {
        return Ok(Parsed::Incomplete);
    }
    Ok(Parsed::Complete(
        Response {
            status: head.status,
            body: buffer[head.head_len..end].to_vec(),
            close: head.close,
        },
        end,
    ))
}

/// Writes a request with a body (always with Content-Length, so a POST without a body is 0).
fn write_request(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    out.clear();
    for part in [method, " ", path, " HTTP/1.1\r\nHost: ", host, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for (name, value) in headers {
        for part in [*name, ": ", *value, "\r\n"] {
            out.extend_from_slice(part.as_bytes());
        }
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// One keep-alive connection, opened on first use and again after the server closed it.
struct Client {
    address: SocketAddr,
    host: String,
    /// The local address to connect from, if any.
    local: Option<IpAddr>,
    stream: Option<TcpStream>,
    received: Vec<u8>,
    out: Vec<u8>,
}

/// A failure that happened before any byte of the answer arrived on a connection used before:
/// the server may have closed it while idle, so the request is sent once more on a new one.
enum Failure {
    Stale(io::Error),
    Other(io::Error),
}

impl Client {
    fn new(target: &Target, local: Option<IpAddr>) -> Self {
        Self {
            address: target.address,
            host: target.host.clone(),
            local,
            stream: None,
            received: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(4 * 1024),
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let stream = match self.local {
            None => TcpStream::connect_timeout(&self.address, IO_TIMEOUT)?,
            Some(local) => connect_from(local, self.address)?,
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }

    /// Sends one request and reads its response. A request that failed on a reused connection
    /// before any answer arrived is sent again once on a fresh connection (payments carry an
    /// `Idempotency-Key`, so a second delivery moves no money twice).
    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut out = std::mem::take(&mut self.out);
        write_request(&mut out, method, path, &self.host, headers, body);
        let mut outcome = self.exchange(&out);
        if let Err(Failure::Stale(_)) = outcome {
            outcome = self.exchange(&out);
        }
        self.out = out;
        match outcome {
            Ok(response) => Ok(response),
            Err(Failure::Stale(error) | Failure::Other(error)) => Err(error),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> Result<Response, Failure> {
        let (mut stream, reused) = match self.stream.take() {
            Some(stream) => (stream, true),
            None => (self.connect().map_err(Failure::Other)?, false),
        };
        self.received.clear();
        let failure = |error: io::Error, received: &[u8]| {
            if reused && received.is_empty() {
                Failure::Stale(error)
            } else {
                Failure::Other(error)
            }
        };
        if let Err(error) = stream.write_all(request) {
            return Err(failure(error, &self.received));
        }
        let mut chunk = [0u8; 8 * 1024];
        loop {
            match parse_response(&self.received).map_err(Failure::Other)? {
                Parsed::Complete(response, used) => {
                    let rest = self.received.len() - used;
                    // Anything after the response was not asked for: the connection is unusable.
                    if !response.close && rest == 0 {
                        self.stream = Some(stream);
                    }
                    return Ok(response);
                }
                Parsed::Incomplete | Parsed::UntilClose(_) => {}
            }
            let read = match stream.read(&mut chunk) {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(failure(error, &self.received)),
            };
            if read == 0 {
                if let Parsed::UntilClose(head) =
                    parse_response(&self.received).map_err(Failure::Other)?
                {
                    return Ok(Response {
                        status: head.status,
                        body: self.received[head.head_len..].to_vec(),
                        close: true,
                    });
                }
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before answering in full",
                );
                return Err(failure(error, &self.received));
            }
            self.received.extend_from_slice(&chunk[..read]);
        }
    }

    /// A JSON request; `bearer` goes in `Authorization`.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Response> {
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        if let Some(authorization) = &authorization {
            headers.push(("Authorization", authorization.as_str()));
        }
        headers.extend_from_slice(extra);
        let body = body.map(Value::to_string).unwrap_or_default();
        self.request(method, path, &headers, body.as_bytes())
            .with_context(|| format!("{method} {path}"))
    }

    /// The same, answering the JSON body if the status is `expected`.
    fn expect(
        &mut self,
        expected: u16,
        method: &str,
        path: &str,
        body: Option<&Value>,
        bearer: Option<&str>,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Value> {
        let response = self.call(method, path, body, bearer, extra)?;
        if response.status != expected {
            bail!(
                "{method} {path} answered {} (expected {expected}): {}",
                response.status,
                response.text()
            );
        }
        response.json()
    }
}

/// A connection from `local` (bind before connect, through tokio's socket builder), handed
/// back as a blocking std stream.
fn connect_from(local: IpAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = match remote {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(local, 0))?;
        tokio::time::timeout(IO_TIMEOUT, socket.connect(remote))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))?
    })?;
    let stream = stream.into_std()?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// The source address of user `index`'s setup against a loopback server: one per user, in
/// 127.1.0.1 – 127.250.249.250 (the server limits sign-ups per source address).
fn source_address(index: usize) -> IpAddr {
    let octets = |value: usize| u8::try_from(value % 250).unwrap_or(0);
    // One /24 per user: the server also limits sign-ups and guesses per network.
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + octets(index / 62_500),
        octets(index),
        1 + octets(index / 250),
    ))
}

// ---------------------------------------------------------------------------------------------
// Setup

fn sign_in_operator(
    client: &mut Client,
    email: &str,
    password: &str,
    operator: &Operator,
) -> anyhow::Result<String> {
    let signed_in = client.expect(
        201,
        "POST",
        "/api/v1/operator/sessions",
        Some(&json!({
            "email": email,
            "password": password,
            "totp_code": totp_code(&operator.totp, 0),
        })),
        None,
        &[],
    )?;
    text(&signed_in["token"], "operator token")
}

fn text(value: &Value, what: &str) -> anyhow::Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {what} in the answer"))
}

/// Onboards the merchants, issues each an API key and reads its static code; answers each
/// merchant's payment body (the payload and the amount), ready to send.
fn set_up_merchants(
    client: &mut Client,
    operator_token: &str,
    count: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut bodies = Vec::with_capacity(count);
    for number in 1..=count {
        let merchant = client.expect(
            201,
            "POST",
            "/api/v1/operator/merchants",
            Some(&json!({
                "name": format!("Shop {number}"),
                "name_ja": format!("ショップ{number}"),
                "category_code": 5411,
                "city": "Tokyo",
                "city_ja": "東京",
                "postal_code": "1000005",
                "reason": "benchmark merchant onboarding",
            })),
            Some(operator_token),
            &[],
        )?;
        let id = text(&merchant["id"], "merchant id")?;
        let issued = client.expect(
            201,
            "POST",
            &format!("/api/v1/operator/merchants/{id}/api-keys"),
            Some(&json!({ "label": "bench", "reason": "benchmark merchant key" })),
            Some(operator_token),
            &[],
        )?;
        let key = text(&issued["key"], "merchant API key")?;
        let code = client.expect(200, "GET", "/api/v1/merchant/qr", None, Some(&key), &[])?;
        let payload = text(&code["payload"], "static code payload")?;
        bodies.push(
            json!({ "qr": payload, "amount_yen": PAYMENT_YEN })
                .to_string()
                .into_bytes(),
        );
    }
    Ok(bodies)
}

/// A wallet user ready to pay.
struct BenchUser {
    totp: totp_rs::Totp,
    session: RwLock<UserSession>,
}

struct UserSession {
    /// `Bearer <token>`.
    authorization: String,
    /// When the second factor was last passed on this session.
    stepped_up_at: Instant,
}

/// Yen to credit each user so that no payment is refused for want of funds: the most one
/// user can be asked to pay, with a margin, and at least ¥1,000,000.
fn funding_per_user(requests: u64, users: usize, connections: usize) -> u64 {
    let assignments = assign_users(users, connections);
    let per_connection = requests.div_ceil(connections as u64);
    let mut most = vec![0u64; users];
    for mine in &assignments {
        let each = per_connection.div_ceil(mine.len().max(1) as u64);
        for user in mine {
            most[*user] += each;
        }
    }
    let need = most.iter().max().copied().unwrap_or(0) * PAYMENT_YEN;
    (need + need / 2).max(FUNDING_MIN_YEN)
}

/// Which users each connection pays with: with at least as many users as connections each
/// user belongs to one connection (a wallet's payments never race each other); otherwise
/// connections share users round-robin.
fn assign_users(users: usize, connections: usize) -> Vec<Vec<usize>> {
    (0..connections)
        .map(|connection| {
            if users >= connections {
                (connection..users).step_by(connections).collect()
            } else {
                vec![connection % users]
            }
        })
        .collect()
}

fn set_up_users(
    target: &Target,
    run_id: &str,
    operator_token: &str,
    count: usize,
    threads: usize,
    funding_yen: u64,
) -> anyhow::Result<Vec<Arc<BenchUser>>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let password = format!("bench wallet {}", random_hex(12));
    // Distinct phone numbers for this run (a number belongs to one active wallet).
    let phone_base = u64::from(rand::random::<u32>()) % 90_000_000;
    let loopback = target.address.ip().is_loopback() && target.address.is_ipv4();
    let results: Vec<anyhow::Result<Vec<(usize, BenchUser)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.min(count))
            .map(|_| {
                let (next, failed, password) = (&next, &failed, &password);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count || failed.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        let local = loopback.then(|| source_address(index));
                        let mut client = Client::new(target, local);
                        let user = NewUser {
                            email: format!("bench-{run_id}-{index}@bench.kinko.example"),
                            // The index leads so numbers do not share a prefix: the server
                            // limits sign-up SMS per prefix (all but the last four digits).
                            phone: format!(
                                "+8190{:04}{:04}",
                                index % 10_000,
                                (phone_base + (index / 10_000) as u64) % 10_000
                            ),
                            password,
                        };
                        match set_up_user(&mut client, &user, operator_token, funding_yen, run_id) {
                            Ok(ready) => done.push((index, ready)),
                            Err(error) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(error.context(format!("setting up user {index}")));
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a setup thread panicked")))
            })
            .collect()
    });
    let mut users: Vec<(usize, BenchUser)> = Vec::with_capacity(count);
    for result in results {
        users.extend(result?);
    }
    users.sort_by_key(|(index, _)| *index);
    anyhow::ensure!(users.len() == count, "not every user was set up");
    Ok(users.into_iter().map(|(_, user)| Arc::new(user)).collect())
}

struct NewUser<'a> {
    email: String,
    phone: String,
    password: &'a str,
}

/// Sign-up, both contacts verified with the codes from the sandbox outbox, sign-in, TOTP
/// enrolled and confirmed (which passes the second factor on this session), funding, and a
/// look at the money gate.
fn set_up_user(
    client: &mut Client,
    user: &NewUser<'_>,
    operator_token: &str,
    funding_yen: u64,
    run_id: &str,
) -> anyhow::Result<BenchUser> {
    let signed_up = client.expect(
        202,
        "POST",
        "/api/v1/signup",
        Some(&json!({ "email": user.email, "password": user.password, "phone": user.phone })),
        None,
        &[],
    )?;
    let user_id = text(&signed_up["user_id"], "user id")?;
    for (channel, destination, purpose) in [
        ("email", user.email.as_str(), "verify_email"),
        ("sms", user.phone.as_str(), "verify_phone"),
    ] {
        let code = code_sent(client, destination, purpose)?;
        client.expect(
            200,
            "POST",
            &format!("/api/v1/signup/{user_id}/verify"),
            Some(&json!({ "channel": channel, "code": code })),
            None,
            &[],
        )?;
    }
    let signed_in = client.expect(
        201,
        "POST",
        "/api/v1/sessions",
        Some(&json!({ "email": user.email, "password": user.password })),
        None,
        &[],
    )?;
    let token = text(&signed_in["token"], "session token")?;
    let enrolment = client.expect(200, "POST", "/api/v1/me/totp", None, Some(&token), &[])?;
    let totp = authenticator(&text(&enrolment["secret_base32"], "TOTP secret")?)?;
    let confirmed = client.expect(
        200,
        "POST",
        "/api/v1/me/totp/confirm",
        Some(&json!({ "code": totp_code(&totp, 0) })),
        Some(&token),
        &[],
    )?;
    let stepped_up_at = Instant::now();
    let token = text(&confirmed["session"]["token"], "rotated session token")?;

    let mut left = funding_yen;
    let mut credit = 0;
    while left > 0 {
        let amount = left.min(CREDIT_MAX_YEN);
        let key = format!("bench-{run_id}-fund-{user_id}-{credit}");
        let response = client.call(
            "POST",
            &format!("/api/v1/operator/users/{user_id}/credits"),
            Some(&json!({ "amount_yen": amount, "reason": "benchmark funding for load test" })),
            Some(operator_token),
            &[("Idempotency-Key", key.as_str())],
        )?;
        match response.status {
            201 => {}
            202 => bail!(
                "funding waits for a second operator's approval: run the target with \
                 KINKO_CREDIT_APPROVAL_ABOVE_YEN above the benchmark's funding"
            ),
            404 | 405 if !response.text().contains("\"code\"") => bail!(
                "the server has no POST /api/v1/operator/users/{{id}}/credits yet ({}): \
                 users cannot be funded",
                response.status
            ),
            status => bail!("funding answered {status}: {}", response.text()),
        }
        left -= amount;
        credit += 1;
    }

    // The gate this route shows includes pulling from a bank (KYC); paying a merchant does
    // not need KYC, so that reason alone is no obstacle.
    let gate = client.expect(200, "GET", "/api/v1/me/money-gate", None, Some(&token), &[])?;
    let reasons: Vec<&str> = gate["reasons"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let blocking: Vec<&str> = reasons
        .into_iter()
        .filter(|reason| *reason != "IDENTITY_KYC_REQUIRED")
        .collect();
    if blocking.contains(&"IDENTITY_OUTGOING_FROZEN") {
        bail!(
            "money may not leave the new wallets ({blocking:?}): enrolling TOTP freezes \
             outgoing money unless the server runs with KINKO_OUTGOING_FREEZE_S=0"
        );
    }
    anyhow::ensure!(
        blocking.is_empty(),
        "money may not leave the new wallets: {blocking:?}"
    );
    Ok(BenchUser {
        totp,
        session: RwLock::new(UserSession {
            authorization: format!("Bearer {token}"),
            stepped_up_at,
        }),
    })
}

/// The newest 8-digit code the sandbox outbox holds for `destination` and `purpose`.
fn code_sent(client: &mut Client, destination: &str, purpose: &str) -> anyhow::Result<String> {
    let path = format!(
        "/api/v1/sandbox/outbox?destination={}",
        percent_encode(destination)
    );
    let messages = client.expect(200, "GET", &path, None, None, &[])?;
    let body = messages
        .as_array()
        .and_then(|list| list.iter().find(|message| message["purpose"] == purpose))
        .and_then(|message| message["body"].as_str())
        .ok_or_else(|| {
            anyhow!("no {purpose} message to {destination} in the sandbox outbox (is the server running with KINKO_NOTIFY unset?)")
        })?;
    body.split(|c: char| !c.is_ascii_digit())
        .find(|digits| digits.len() == 8)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no 8-digit code in {body}"))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The measured phase

struct Shared {
    /// The number of the next payment to send; the connections stop at `total`.
    next: AtomicU64,
    total: u64,
    /// Set when a connection hit a fatal error: the others stop too.
    failing: AtomicBool,
    errors: Mutex<ErrorLog>,
    step_ups: AtomicU64,
    /// Connections open and waiting for `go`.
    ready: AtomicUsize,
    go: AtomicBool,
}

#[derive(Default)]
struct ErrorLog {
    /// Count per kind (`HTTP 409 CODE`, `posted? no: rejected`, `io: …`).
    kinds: BTreeMap<String, u64>,
}

impl Shared {
    fn record_error(&self, kind: String, detail: &str) {
        let Ok(mut log) = self.errors.lock() else {
            return;
        };
        let first = !log.kinds.contains_key(&kind);
        let distinct = log.kinds.len();
        *log.kinds.entry(kind.clone()).or_default() += 1;
        if first && distinct < ERROR_SAMPLES_MAX {
            let detail: String = detail.chars().take(500).collect();
            eprintln!("kinko bench api: payment error ({kind}): {detail}");
        }
    }
}

struct WorkerOutcome {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: u64,
}

/// The kind of a failed payment's answer, for counting: its status and stable code.
fn error_kind(response: &Response) -> String {
    let code = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|body| {
            body["code"].as_str().map(str::to_owned).or_else(|| {
                body["status"].as_str().map(|status| {
                    let reason = body["reason"].as_str().unwrap_or("");
                    format!("status {status} {reason}").trim_end().to_owned()
                })
            })
        })
        .unwrap_or_default();
    format!("HTTP {} {code}", response.status)
        .trim_end()
        .to_owned()
}

/// A payment answer that counts as success: 201 with the payment posted.
fn posted(response: &Response) -> bool {
    response.status == 201
        && response
            .body
            .windows(b"\"status\":\"posted\"".len())
            .any(|window| window == b"\"status\":\"posted\"")
}

fn worker(
    connection: usize,
    target: &Target,
    users: Vec<Arc<BenchUser>>,
    bodies: &[Vec<u8>],
    shared: &Shared,
    run_id: &str,
) -> anyhow::Result<WorkerOutcome> {
    let mut client = Client::new(target, None);
    // Connect before the clock starts; a failure here shows on the first request.
    client.stream = client.connect().ok();
    shared.ready.fetch_add(1, Ordering::Release);
    while !shared.go.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut latency_us = new_histogram()?;
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut key = String::with_capacity(64);
    let mut turn = 0usize;
    let outcome = loop {
        if shared.failing.load(Ordering::Relaxed) {
            break Ok(());
        }
        let number = shared.next.fetch_add(1, Ordering::Relaxed);
        if number >= shared.total {
            break Ok(());
        }
        let user = &users[turn % users.len()];
        turn += 1;
        let body = &bodies[usize::try_from(number).unwrap_or(0) % bodies.len()];
        if let Err(error) = step_up_if_stale(&mut client, user, shared) {
            break Err(error);
        }
        let Ok(session) = user.session.read() else {
            break Err(anyhow!("a user's session lock was poisoned"));
        };
        key.clear();
        key.push_str("bench-");
        key.push_str(run_id);
        key.push('-');
        key.push_str(&connection.to_string());
        key.push('-');
        key.push_str(&number.to_string());
        let started = Instant::now();
        let answer = client.request(
            "POST",
            "/api/v1/payments",
            &[
                ("Authorization", session.authorization.as_str()),
                ("Idempotency-Key", key.as_str()),
                ("Content-Type", "application/json"),
            ],
            body,
        );
        let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        drop(session);
        match answer {
            Ok(response) => {
                latency_us.saturating_record(elapsed_us.max(1));
                if posted(&response) {
                    ok += 1;
                } else {
                    errors += 1;
                    shared.record_error(error_kind(&response), &response.text());
                }
            }
            Err(error) => {
                errors += 1;
                shared.record_error(format!("io {:?}", error.kind()), &error.to_string());
            }
        }
    };
    if outcome.is_err() {
        shared.failing.store(true, Ordering::Relaxed);
    }
    outcome.map(|()| WorkerOutcome {
        latency_us,
        ok,
        errors,
    })
}

/// Passes the second factor again on a session whose last pass is about to be too old for
/// money. The token rotates: the write lock waits for requests in flight with the old one.
fn step_up_if_stale(client: &mut Client, user: &BenchUser, shared: &Shared) -> anyhow::Result<()> {
    let stale = user
        .session
        .read()
        .map_err(|_| anyhow!("a user's session lock was poisoned"))?
        .stepped_up_at
        .elapsed()
        >= STEP_UP_EVERY;
    if !stale {
        return Ok(());
    }
    let mut session = user
        .session
        .write()
        .map_err(|_| anyhow!("a user's session lock was poisoned"))?;
    if session.stepped_up_at.elapsed() < STEP_UP_EVERY {
        return Ok(()); // Another connection did it.
    }
    let token = session
        .authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    // A code is taken once per 30-second step: if this step's was used, the next one is
    // accepted too (one step of skew).
    let mut last = None;
    for steps_ahead in [0, 1] {
        let response = client.call(
            "POST",
            "/api/v1/sessions/current/second-factor",
            Some(&json!({ "totp_code": totp_code(&user.totp, steps_ahead) })),
            Some(&token),
            &[],
        )?;
        if response.status == 200 {
            let rotated = text(&response.json()?["token"], "rotated session token")?;
            session.authorization = format!("Bearer {rotated}");
            session.stepped_up_at = Instant::now();
            shared.step_ups.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        last = Some(response);
    }
    let detail = last.map(|response| format!("{} {}", response.status, response.text()));
    bail!(
        "passing the second factor again failed: {}",
        detail.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_content_length_is_cut_at_its_body() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 19\r\n\r\n{\"status\":\"posted\"}HTTP/1.1 200 OK";
        let Ok(Parsed::Complete(response, used)) = parse_response(raw) else {
            panic!("not complete: {:?}", parse_response(raw));
        };
        assert_eq!(response.status, 201);
        assert_eq!(response.body, b"{\"status\":\"posted\"}");
        assert!(!response.close);
        assert!(posted(&response));
        // The next response's bytes are left for later.
        assert_eq!(&raw[used..], b"HTTP/1.1 200 OK");
    }

    #[test]
    fn a_partial_response_asks_for_more() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345";
        assert_eq!(parse_response(raw).ok(), Some(Parsed::Incomplete));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Len").ok(),
            Some(Parsed::Incomplete)
        );
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n1234567890";
        assert!(matches!(
            parse_response(whole),
            Ok(Parsed::Complete(ref response, 49)) if response.body == b"1234567890"
        ));
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection() {
        let close = b"HTTP/1.1 409 Conflict\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
        let Ok(Parsed::Complete(response, _)) = parse_response(close) else {
            panic!("not complete");
        };
        assert!(response.close);
        assert!(!posted(&response));
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse_response(old), Ok(Parsed::Complete(ref r, _)) if r.close));
        let kept = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(parse_response(kept), Ok(Parsed::Complete(ref r, _)) if !r.close));
    }

    #[test]
    fn bodies_without_length_run_to_the_close_and_204_has_none() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome";
        assert!(matches!(
            parse_response(raw),
            Ok(Parsed::UntilClose(Head {
                status: 200,
                head_len: 45,
                content_length: None,
                ..
            }))
        ));
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert!(matches!(
            parse_response(empty),
            Ok(Parsed::Complete(ref r, 27)) if r.status == 204 && r.body.is_empty()
        ));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for raw in [
            &b"HTTP/2 200\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        ] {
            assert!(
                parse_response(raw).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_request_carries_its_headers_and_body_length() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "POST",
            "/api/v1/payments",
            "127.0.0.1:8080",
            &[("Idempotency-Key", "k-1")],
            b"{\"a\":1}",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "POST /api/v1/payments HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nIdempotency-Key: k-1\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[test]
    fn users_are_spread_over_connections_and_funded_for_their_share() {
        // 5 users over 2 connections: each user on one connection only.
        assert_eq!(assign_users(5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        // Fewer users than connections: shared round-robin.
        assert_eq!(assign_users(2, 3), vec![vec![0], vec![1], vec![0]]);
        // 100,000 payments, 200 users, 64 connections: ≤ 521 each, ¥1,000,000 is plenty.
        assert_eq!(funding_per_user(100_000, 200, 64), FUNDING_MIN_YEN);
        // One user on 2 connections paying 100,000 times: ¥10,000,000, plus half.
        assert_eq!(funding_per_user(100_000, 1, 2), 15_000_000);
    }

    #[test]
    fn error_kinds_name_the_status_and_the_code() {
        let problem = Response {
            status: 403,
            body: br#"{"code":"SESSION_STEP_UP_REQUIRED","title":"x"}"#.to_vec(),
            close: false,
        };
        assert_eq!(error_kind(&problem), "HTTP 403 SESSION_STEP_UP_REQUIRED");
        let rejected = Response {
            status: 201,
            body: br#"{"status":"rejected","reason":"insufficient_funds"}"#.to_vec(),
            close: false,
        };
        assert!(!posted(&rejected));
        assert_eq!(
            error_kind(&rejected),
            "HTTP 201 status rejected insufficient_funds"
        );
        let plain = Response {
            status: 502,
            body: b"bad gateway".to_vec(),
            close: true,
        };
        assert_eq!(error_kind(&plain), "HTTP 502");
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat =
            "4242 (kinko (serve) x) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(cpu_seconds_from(stat), Some(3.25));
    }

    #[test]
    fn setup_sources_are_distinct_loopback_addresses() {
        let addresses: std::collections::HashSet<IpAddr> = (0..1_000).map(source_address).collect();
        assert_eq!(addresses.len(), 1_000);
        assert!(addresses.iter().all(IpAddr::is_loopback));
        assert_eq!(source_address(0), IpAddr::V4(Ipv4Addr::new(127, 1, 0, 1)));
    }
}
