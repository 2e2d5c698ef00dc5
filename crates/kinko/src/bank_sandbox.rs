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
    let sandbox = SandboxBank::open(&location, SocketAddr::new(args.host, args.port))?;
    println!(
        "kinko bank-sandbox listening on {} ({})",
        sandbox.issuer,
        location.describe()
    );
    sandbox.print_guide();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(sandbox.serve(async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for Ctrl-C");
        }
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// A sandbox bank with its port bound and its store open and seeded, ready to serve. The
/// store is opened before any async runtime runs (the PostgreSQL driver blocks on its own).
pub struct SandboxBank {
    pub issuer: String,
    pub bank: Arc<Bank>,
    pub customers: Vec<kinko_bank_sandbox::store::DemoCustomer>,
    listener: std::net::TcpListener,
    clock: Arc<dyn Clock>,
}

impl SandboxBank {
    pub fn open(location: &StoreLocation, address: SocketAddr) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("binding the sandbox bank's port {address}"))?;
        listener.set_nonblocking(true)?;
        let issuer = format!("http://{}", listener.local_addr()?);
        let bank = Bank::open(location, &issuer)
            .map_err(|error| anyhow::anyhow!("opening the sandbox bank's store: {error}"))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let now_ms = i64::try_from(clock.now_ms()).unwrap_or(i64::MAX);
        let customers = kinko_bank_sandbox::store::seed(bank.database(), now_ms)
            .map_err(|error| anyhow::anyhow!("seeding the sandbox bank: {error}"))?;
        Ok(Self {
            issuer,
            bank: Arc::new(bank),
            customers,
            listener,
            clock,
        })
    }

    /// Where to look and who the demo customers are.
    pub fn print_guide(&self) {
        let issuer = &self.issuer;
        println!("  metadata: {issuer}/.well-known/oauth-authorization-server");
        println!("  customer page: {issuer}/customer");
        println!("Demo customers (online-banking id / password; TOTP seeds are in the store):");
        for customer in &self.customers {
            println!(
                "  {:<12} {:<28} {} {}",
                customer.online_id, customer.password, customer.holder_kana, customer.birth_date
            );
        }
    }

    /// Serves until `shutdown` completes, with the webhook delivery thread alongside.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::from_std(self.listener)
            .context("handing the sandbox bank's port to the runtime")?;
        let deliveries = DeliveryLoop::spawn(Arc::clone(&self.bank), Arc::clone(&self.clock))
            .context("starting the webhook delivery thread")?;
        let app = router(HttpState {
            bank: self.bank,
            clock: self.clock,
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        // The loop finishes its round (at most one 10 s call per event) and stops.
        deliveries.stop();
        served
    }
}
