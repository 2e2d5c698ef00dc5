//! `kinko serve`: the platform's HTTP server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use kinko_ledger::{Ledger, WriterConfig};
use kinko_store::StoreLocation;
use metrics_exporter_prometheus::PrometheusBuilder;

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

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let location = args.store.location()?;
    let ledger = crate::start_ledger(&location, WriterConfig::DEFAULT)?;
    serve(
        ledger,
        &location,
        SocketAddr::new(args.host, args.port),
        |address| {
            println!(
                "kinko listening on http://{address} ({})",
                location.describe()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Serves until Ctrl-C or SIGTERM, then lets the ledger finish what is queued.
pub fn serve(
    ledger: Ledger,
    location: &StoreLocation,
    address: SocketAddr,
    on_listening: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let ledger = Arc::new(ledger);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        on_listening(listener.local_addr()?);
        let app = kinko_web::app(kinko_web::AppState {
            ledger: Arc::clone(&ledger),
            metrics,
            store_kind: location.kind(),
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")
    })?;
    drop(runtime);
    if let Ok(ledger) = Arc::try_unwrap(ledger) {
        Ledger::shutdown(ledger);
    }
    Ok(())
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
