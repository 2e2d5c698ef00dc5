//! `kinko bank-sandbox`: the sandbox bank as its own HTTP service with its own store (default
//! `./kinko-bank-data`, never Kinko's database), seeded with the demo customers whose names
//! and birth dates match the sandbox eKYC identities. It stands in for real banks in
//! development, tests, the demo and the drill. Beside the HTTP server, a thread delivers the
//! bank's signed webhooks to its clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use kinko_bank_sandbox::Bank;
use kinko_bank_sandbox::http::{HttpState, router};
use kinko_bank_sandbox::webhooks::DeliveryLoop;
use kinko_core::{Clock, SystemClock};
use kinko_store::StoreLocation;

#[derive(Args, Debug)]
pub struct BankSandboxArgs {
    /// TCP port; 0 picks a free one (the chosen address is printed).
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The sandbox bank's own SQLite directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Or its own PostgreSQL database (not Kinko's).
    #[arg(long, value_name = "URL", env = "KINKO_BANK_DATABASE_URL")]
    pub database_url: Option<String>,
}

pub fn run(args: BankSandboxArgs) -> anyhow::Result<ExitCode> {
    let location = match (&args.data_dir, &args.database_url) {
        (None, None) => StoreLocation::Sqlite {
            data_dir: PathBuf::from("kinko-bank-data"),
        },
        (dir, url) => StoreLocation::choose(dir.as_deref(), url.as_deref())?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
            .await
            .context("binding the sandbox bank's port")?;
        let address = listener.local_addr()?;
        let issuer = format!("http://{address}");
        let bank = Bank::open(&location, &issuer)
            .map_err(|error| anyhow::anyhow!("opening the sandbox bank's store: {error}"))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        let customers = kinko_bank_sandbox::store::seed(bank.database(), now_ms)
            .map_err(|error| anyhow::anyhow!("seeding the sandbox bank: {error}"))?;
        println!(
            "kinko bank-sandbox listening on {issuer} ({})",
            location.describe()
        );
        println!("  metadata: {issuer}/.well-known/oauth-authorization-server");
        println!("  customer page: {issuer}/customer");
        println!("Demo customers (online-banking id / password; TOTP seeds are in the store):");
        for customer in &customers {
            println!(
                "  {:<12} {:<28} {} {}",
                customer.online_id, customer.password, customer.holder_kana, customer.birth_date
            );
        }
        let bank = Arc::new(bank);
        let deliveries = DeliveryLoop::spawn(Arc::clone(&bank), Arc::clone(&clock))
            .context("starting the webhook delivery thread")?;
        let app = router(HttpState { bank, clock });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                if let Err(error) = tokio::signal::ctrl_c().await {
                    tracing::error!(error = %error, "cannot listen for Ctrl-C");
                }
            })
            .await
            .context("serving HTTP");
        // The loop finishes its round (at most one 10 s call per event) and stops.
        deliveries.stop();
        served
    })?;
    Ok(ExitCode::SUCCESS)
}
