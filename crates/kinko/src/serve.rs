//! `kinko serve`: the platform's HTTP server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kinko_banking::links::{BankDirectory, LinkService};
use kinko_core::{Clock, SystemClock};
use kinko_identity::environment::Environment;
use kinko_identity::kyc::SandboxKycProvider;
use kinko_identity::notify::{self, GatewayConfig, Gateways};
use kinko_identity::secrets::SecretBox;
use kinko_identity::service::{IdentityConfig, IdentityService};
use kinko_ledger::{Ledger, WriterConfig};
use kinko_store::StoreLocation;
use kinko_store::sql::Database;
use metrics_exporter_prometheus::PrometheusBuilder;
use secrecy::SecretString;

use crate::StoreArgs;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TCP port; 0 picks a free one (the chosen address is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What `kinko demo` changes from `kinko serve`'s strict defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Production defaults.
    Serve,
    /// The demo's sandbox policy: no freeze after a first second factor (unless
    /// `KINKO_OUTGOING_FREEZE_S` says otherwise), and pages at `http://localhost:PORT` (the
    /// passkey relying party; the sandbox bank stays on `127.0.0.1`, another site).
    Demo,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Decided first, before anything is opened or created: without KINKO_ENV nothing starts.
    let environment = kinko_identity::environment::from_env()?;
    let location = args.store.location()?;
    let ledger = crate::start_ledger(&location, WriterConfig::DEFAULT)?;
    serve_with_banks(
        ledger,
        &location,
        environment,
        SocketAddr::new(args.host, args.port),
        std::env::var("KINKO_BANK_SANDBOX_URL").ok(),
        Profile::Serve,
        |address| {
            println!(
                "kinko listening on http://{address} ({})",
                location.describe()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Serves until Ctrl-C or SIGTERM, then lets the ledger finish what is queued. With a sandbox
/// bank's URL, the partner banks are served by it. Every sandbox part follows `environment`
/// (`kinko_identity::environment`), and nothing else.
pub fn serve_with_banks(
    ledger: Ledger,
    location: &StoreLocation,
    environment: Environment,
    address: SocketAddr,
    bank_sandbox_url: Option<String>,
    profile: Profile,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let ledger = Arc::new(ledger);
    if environment == Environment::Production {
        // Only the sandbox eKYC provider exists yet: production must not run on it.
        anyhow::bail!(
            "KINKO_ENV=production needs a real eKYC provider; only the sandbox one exists"
        );
    }
    kinko_identity::password::common_passwords_loaded()
        .context("loading the common-password list")?;
    // Passkeys need the relying party's id and origin; production refuses to start without.
    let relying_party = kinko_identity::passkey::RelyingParty::from_env(environment)
        .context("configuring passkeys")?;
    let metrics_token = metrics_token(environment)?;
    let trusted_proxies = match std::env::var("KINKO_TRUSTED_PROXIES") {
        Ok(text) => kinko_web::forwarded::TrustedProxies::parse(&text)
            .map_err(|error| anyhow::anyhow!("KINKO_TRUSTED_PROXIES: {error}"))?,
        Err(_) => kinko_web::forwarded::TrustedProxies::default(),
    };
    let pool_size = match std::env::var("KINKO_DB_POOL_SIZE") {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|size| (1..=1_000).contains(size))
            .context("KINKO_DB_POOL_SIZE must be a whole number from 1 to 1000")?,
        Err(_) => Database::default_pool_size(location),
    };
    let database = Arc::new(
        Database::open_with_pool_size(location, pool_size)
            .with_context(|| format!("opening {}", location.describe()))?,
    );
    if environment.is_sandbox() {
        // Development, tests and the demo run with the partner banks of the seed case; a
        // production operator loads its own list.
        let now_ms = i64::try_from(SystemClock.now_ms()).unwrap_or(i64::MAX);
        database
            .transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                kinko_banking::registry::seed(tx, now_ms, kinko_banking::registry::SEED_CSV)
            })
            .map_err(|error| anyhow::anyhow!("seeding the partner banks: {error}"))?;
    }
    let confirm_above_yen = match std::env::var("KINKO_CHARGE_CONFIRM_ABOVE_YEN") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|yen| *yen >= 1)
            .context("KINKO_CHARGE_CONFIRM_ABOVE_YEN must be a whole number of yen, at least 1")?,
        Err(_) => kinko_money::confirmations::CHARGE_CONFIRM_ABOVE_YEN_DEFAULT,
    };
    let payout_wait_hours = payout_wait_hours()?;
    let credit_solo_yen = match std::env::var("KINKO_CREDIT_APPROVAL_ABOVE_YEN") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|yen| *yen >= 0)
            .context("KINKO_CREDIT_APPROVAL_ABOVE_YEN must be a whole number of yen, 0 or more")?,
        Err(_) => kinko_money::credits::CREDIT_SOLO_YEN_DEFAULT,
    };
    let risk_rules = crate::risk::rules_from_env()?;
    let case_config = case_config()?;
    let secrets = SecretBox::from_environment(location).context("loading the secret key")?;
    let gateway_config =
        GatewayConfig::from_env(environment).context("configuring notifications")?;
    let sandbox = environment.is_sandbox();
    let gateways = Gateways::from_config(&gateway_config).context("configuring notifications")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let identity = Arc::new(
        IdentityService::new(
            Arc::clone(&database),
            secrets,
            Arc::new(SandboxKycProvider),
            Arc::clone(&clock),
            identity_config(profile)?,
        )
        .with_review_inbox(Arc::new(kinko_cases::IdentityReviews)),
    );
    let bound = kinko_identity::kyc::bind_proven_identities(
        &database,
        identity.secret_box(),
        i64::try_from(clock.now_ms()).unwrap_or(i64::MAX),
    )
    .context("binding proven identities to their wallets")?;
    if bound > 0 {
        tracing::info!(bound, "bound wallets proven before identity bindings");
    }
    let stopping = Arc::new(AtomicBool::new(false));
    let delivery = spawn_delivery(
        Arc::clone(&database),
        gateways,
        clock,
        Arc::clone(&stopping),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (reconciler, notices, bank_reconciler) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let bound = listener.local_addr()?;
        let bank_reconciler = crate::reconcile::spawn_scheduled(
            Arc::clone(&identity),
            Arc::clone(ledger.reader()),
            bank_sandbox_url.clone(),
            Arc::clone(&stopping),
        )?;
        let links = connect_banks(Arc::clone(&identity), bound, bank_sandbox_url, profile).await?;
        let mut money = kinko_money::MoneyService::new(
            Arc::clone(&ledger),
            Arc::clone(&identity),
            Arc::clone(&links),
        )
        .with_confirmation_threshold(confirm_above_yen)
        .with_payout_wait_hours(payout_wait_hours)
        .with_credit_approval_threshold(credit_solo_yen)
        .with_bank_order_ttl_secs(bank_order_ttl_secs()?);
        if let Some(rules) = risk_rules {
            money = money.with_risk_rules(rules);
        }
        let money = Arc::new(money);
        let cases = Arc::new(kinko_cases::CaseService::new(
            Arc::clone(&database),
            Arc::clone(identity.clock()),
            case_config,
        ));
        let reconciler = spawn_reconciler(
            Arc::clone(&money),
            Arc::clone(&cases),
            Arc::clone(&stopping),
        )?;
        let notices = spawn_movement_notices(
            Arc::clone(&money),
            format!("{}/wallet/history?movement=", public_url(bound, profile)),
            Arc::clone(&stopping),
        )?;
        on_listening(bound);
        let trusted_proxies = Arc::new(trusted_proxies);
        let app = kinko_web::app(kinko_web::AppState {
            ledger: Arc::clone(&ledger),
            metrics,
            store_kind: location.kind(),
            identity,
            links,
            money,
            cases,
            sandbox,
            metrics_token,
            relying_party: Some(Arc::new(relying_party)),
        })
        // Outermost: every handler and limit sees the client, not the proxy.
        .layer(axum::middleware::from_fn_with_state(
            trusted_proxies,
            kinko_web::forwarded::rewrite,
        ));
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
        Ok::<_, anyhow::Error>((reconciler, notices, bank_reconciler))
    })?;
    drop(runtime);
    stopping.store(true, Ordering::SeqCst);
    if reconciler.join().is_err() {
        tracing::error!("the reconciler panicked");
    }
    if notices.join().is_err() {
        tracing::error!("the movement notices worker panicked");
    }
    if bank_reconciler.join().is_err() {
        tracing::error!("the bank reconciler panicked");
    }
    if delivery.join().is_err() {
        tracing::error!("the notification worker panicked");
    }
    if let Ok(ledger) = Arc::try_unwrap(ledger) {
        Ledger::shutdown(ledger);
    }
    Ok(())
}

/// Where people reach this deployment: `KINKO_PUBLIC_URL`, else the address it listens on.
fn public_url(bound: SocketAddr, profile: Profile) -> String {
    std::env::var("KINKO_PUBLIC_URL").unwrap_or_else(|_| match profile {
        Profile::Serve => format!("http://{bound}"),
        Profile::Demo => format!("http://localhost:{}", bound.port()),
    })
}

/// Announces every posted movement to its owner (`kinko_money::notices`), every
/// `KINKO_MOVEMENT_NOTICES_EVERY_MS` (default 2,000).
fn spawn_movement_notices(
    money: Arc<kinko_money::MoneyService>,
    dispute_url: String,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let every_ms: u64 = match std::env::var("KINKO_MOVEMENT_NOTICES_EVERY_MS") {
        Ok(text) => text
            .trim()
            .parse()
            .ok()
            .filter(|ms| (50..=3_600_000).contains(ms))
            .context("KINKO_MOVEMENT_NOTICES_EVERY_MS must be from 50 to 3600000")?,
        Err(_) => 2_000,
    };
    std::thread::Builder::new()
        .name("movement-notices".to_owned())
        .spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match money.send_movement_notices(&dispute_url) {
                    Ok(0) => {}
                    Ok(sent) => tracing::debug!(sent, "movement notices queued"),
                    Err(error) => tracing::error!(error = %error, "movement notices failed"),
                }
                let mut slept = 0;
                while slept < every_ms && !stopping.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    slept += 50;
                }
            }
        })
        .context("starting the movement notices worker")
}

/// The partner banks' endpoint: `KINKO_BANK_SANDBOX_URL` names a sandbox bank that hosts them
/// all (development, tests, the demo, the drill). Kinko registers there with its redirect and
/// webhook URLs under `KINKO_PUBLIC_URL` (default: the address it listens on). Without it,
/// link attempts answer `BANK_UNAVAILABLE`.
async fn connect_banks(
    identity: Arc<IdentityService>,
    bound: SocketAddr,
    bank_sandbox_url: Option<String>,
    profile: Profile,
) -> anyhow::Result<Arc<LinkService>> {
    let public_url = public_url(bound, profile);
    let Some(sandbox_url) = bank_sandbox_url else {
        let redirect_uri = format!("{public_url}/api/v1/bank-links/callback");
        return Ok(Arc::new(LinkService::new(
            identity,
            BankDirectory::default(),
            redirect_uri,
        )));
    };
    // The sandbox may still be starting: a few tries, then a clear error.
    let mut last_error = String::new();
    for _ in 0..20 {
        let service = Arc::clone(&identity);
        let url = sandbox_url.clone();
        let public = public_url.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            kinko_banking::links::connect_sandbox(&service, &url, &public)
        })
        .await
        .context("connecting to the sandbox bank")?;
        match outcome {
            Ok((banks, redirect_uri)) => {
                tracing::info!(sandbox = %sandbox_url, "partner banks served by the sandbox bank");
                return Ok(Arc::new(LinkService::new(identity, banks, redirect_uri)));
            }
            Err(error) => last_error = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("cannot reach the sandbox bank at {sandbox_url}: {last_error}")
}

/// `KINKO_METRICS_TOKEN`: the bearer token `/metrics` asks for, at least 32 characters. Without
/// it only a sandbox serves `/metrics`.
fn metrics_token(environment: Environment) -> anyhow::Result<Option<SecretString>> {
    match std::env::var("KINKO_METRICS_TOKEN") {
        Ok(token) => {
            anyhow::ensure!(
                token.trim().len() >= 32 && token.trim() == token,
                "KINKO_METRICS_TOKEN must be at least 32 characters, without spaces around"
            );
            Ok(Some(SecretString::from(token)))
        }
        Err(std::env::VarError::NotPresent) => {
            if !environment.is_sandbox() {
                tracing::warn!("KINKO_METRICS_TOKEN is not set: /metrics is not served");
            }
            Ok(None)
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("KINKO_METRICS_TOKEN is not UTF-8")
        }
    }
}

/// How long a new link waits before it receives a withdrawal: `KINKO_PAYOUT_WAIT_H`.
pub fn payout_wait_hours() -> anyhow::Result<i64> {
    match std::env::var("KINKO_PAYOUT_WAIT_H") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|hours| (0..=24 * 365).contains(hours))
            .context("KINKO_PAYOUT_WAIT_H must be a whole number of hours from 0 to 8760"),
        Err(_) => Ok(kinko_money::charge::PAYOUT_WAIT_HOURS_DEFAULT),
    }
}

/// How long an order to the bank stays good (`KINKO_BANK_ORDER_TTL_S`, 1–86400, default 60):
/// Kinko sends it only before, and the bank refuses it after (docs/BANK-PROTOCOL.md §6).
fn bank_order_ttl_secs() -> anyhow::Result<i64> {
    match std::env::var("KINKO_BANK_ORDER_TTL_S") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|seconds| (1..=86_400).contains(seconds))
            .context("KINKO_BANK_ORDER_TTL_S must be a whole number of seconds from 1 to 86400"),
        Err(_) => Ok(kinko_money::charge::BANK_ORDER_TTL_S_DEFAULT),
    }
}

/// Resolves charges left pending (a crash, an unreachable bank) by asking the bank by key:
/// every `KINKO_RECONCILE_EVERY_S` (default 30) for charges older than
/// `KINKO_RECONCILE_AFTER_S` (default 60, longer than any bank call may take).
/// The cap on open cases per analyst, `KINKO_CASES_PER_ANALYST_MAX` (default 20, 1 to 500).
fn case_config() -> anyhow::Result<kinko_cases::CaseConfig> {
    match std::env::var("KINKO_CASES_PER_ANALYST_MAX") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(kinko_cases::CaseConfig::new)
            .with_context(|| {
                format!(
                    "KINKO_CASES_PER_ANALYST_MAX must be a whole number from 1 to {}",
                    kinko_cases::service::OPEN_PER_ANALYST_MAX
                )
            }),
        Err(_) => Ok(kinko_cases::CaseConfig::DEFAULT),
    }
}

/// The same loop runs the cases' SLA sweep (`CaseService::escalate_overdue`).
fn spawn_reconciler(
    money: Arc<kinko_money::MoneyService>,
    cases: Arc<kinko_cases::CaseService>,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let seconds = |name: &str, default: u64| -> anyhow::Result<u64> {
        match std::env::var(name) {
            Ok(text) => text
                .trim()
                .parse()
                .with_context(|| format!("{name} must be a whole number of seconds")),
            Err(_) => Ok(default),
        }
    };
    let every = Duration::from_secs(seconds("KINKO_RECONCILE_EVERY_S", 30)?.max(1));
    let after_ms = i64::try_from(seconds("KINKO_RECONCILE_AFTER_S", 60)?)
        .unwrap_or(i64::MAX / 1_000)
        .saturating_mul(1_000);
    std::thread::Builder::new()
        .name("reconciler".to_owned())
        .spawn(move || {
            let mut next = std::time::Instant::now();
            while !stopping.load(Ordering::SeqCst) {
                if std::time::Instant::now() >= next {
                    match money.reconcile(after_ms) {
                        Ok(report)
                            if report.posted
                                + report.voided
                                + report.unresolved
                                + report.failed
                                > 0 =>
                        {
                            tracing::info!(?report, "reconciled pending charges");
                        }
                        Ok(_) => {}
                        Err(error) => tracing::error!(error = %error, "reconciling failed"),
                    }
                    match money.reconcile_transfers(after_ms) {
                        Ok(0) => {}
                        Ok(finished) => tracing::info!(finished, "finished pending transfers"),
                        Err(error) => tracing::error!(error = %error, "finishing transfers failed"),
                    }
                    match money.reconcile_payments(after_ms) {
                        Ok(0) => {}
                        Ok(finished) => {
                            tracing::info!(finished, "finished pending payments and refunds")
                        }
                        Err(error) => tracing::error!(error = %error, "finishing payments failed"),
                    }
                    let now_ms = i64::try_from(SystemClock.now_ms()).unwrap_or(i64::MAX);
                    match cases.escalate_overdue(now_ms) {
                        Ok(0) => {}
                        Ok(escalated) => tracing::info!(escalated, "escalated overdue cases"),
                        Err(error) => tracing::error!(error = %error, "escalating cases failed"),
                    }
                    match money.reconcile_victim_refunds(after_ms) {
                        Ok(0) => {}
                        Ok(seen) => tracing::info!(seen, "looked at pending refunds to victims"),
                        Err(error) => tracing::error!(error = %error, "finishing refunds failed"),
                    }
                    match money.contain_reported_frauds() {
                        Ok(0) => {}
                        Ok(contained) => tracing::info!(contained, "contained fraud reports"),
                        Err(error) => tracing::error!(error = %error, "containing reports failed"),
                    }
                    next = std::time::Instant::now() + every;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .context("starting the reconciler")
}

/// The identity defaults, with the ⟨configurable⟩ numbers of THREATS.md read from the
/// environment. Out-of-bound values refuse to start.
fn identity_config(profile: Profile) -> anyhow::Result<IdentityConfig> {
    let mut config = IdentityConfig::DEFAULT;
    if profile == Profile::Demo {
        // The demo walks a newcomer through linking and charging at once.
        config.outgoing_freeze_ms = 0;
    }
    if let Ok(text) = std::env::var("KINKO_OUTGOING_FREEZE_S") {
        let seconds: i64 = text
            .trim()
            .parse()
            .context("KINKO_OUTGOING_FREEZE_S must be a whole number of seconds")?;
        anyhow::ensure!(
            (0..=30 * 24 * 3_600).contains(&seconds),
            "KINKO_OUTGOING_FREEZE_S must be between 0 and 2592000 (30 days)"
        );
        config.outgoing_freeze_ms = seconds * 1_000;
    }
    if let Ok(text) = std::env::var("KINKO_PENDING_SIGNUP_TTL_S") {
        let seconds: i64 = text
            .trim()
            .parse()
            .context("KINKO_PENDING_SIGNUP_TTL_S must be a whole number of seconds")?;
        anyhow::ensure!(
            (1..=30 * 24 * 3_600).contains(&seconds),
            "KINKO_PENDING_SIGNUP_TTL_S must be between 1 and 2592000 (30 days)"
        );
        config.pending_signup_ttl_ms = seconds * 1_000;
    }
    Ok(config)
}

/// Delivers the notification outbox once a second, and purges expired rows once a minute,
/// until the server stops.
fn spawn_delivery(
    database: Arc<Database>,
    gateways: Gateways,
    clock: Arc<dyn Clock>,
    stopping: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("notify-delivery".into())
        .spawn(move || {
            let mut tick: u64 = 0;
            while !stopping.load(Ordering::SeqCst) {
                let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
                if let Err(error) = notify::deliver_pending(&database, now_ms, &gateways, 100) {
                    tracing::error!(error = %error, "delivering notifications failed");
                }
                // Once a minute, bounded: dead sessions and old rate-limit windows go, so
                // neither table grows without limit.
                if tick.is_multiple_of(60) {
                    let purged = database.transaction(|tx: &mut dyn kinko_store::sql::Tx| {
                        let sessions =
                            kinko_identity::session::purge_dead_sessions(tx, now_ms, 10_000)
                                .map_err(|error| {
                                    kinko_ledger::StoreError::new(error.to_string())
                                })?;
                        let windows =
                            kinko_identity::ratelimit::purge_windows(tx, now_ms, 2 * 3_600_000)?;
                        Ok::<_, kinko_ledger::StoreError>((sessions, windows))
                    });
                    if let Err(error) = purged {
                        tracing::error!(error = %error, "purging expired rows failed");
                    }
                }
                tick = tick.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(1_000));
            }
        })
        .context("starting the notification worker")
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
