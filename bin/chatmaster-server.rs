//! `chatmaster-server`: parses flags, sets up logging, binds, and runs the
//! library's server until SIGINT or SIGTERM.

use std::process::ExitCode;

use chatmaster::{Server, ServerArgs};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    match chatmaster::runtime::build(args.threads) {
        // Spawned rather than run in block_on, so that the accept loop runs
        // on a worker thread, next to the connections it starts.
        Ok(runtime) => {
            runtime.block_on(async { tokio::spawn(serve(args)).await.unwrap_or(ExitCode::FAILURE) })
        }
        Err(e) => {
            eprintln!("chatmaster-server: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServerArgs) -> ExitCode {
    // Logs go to stderr, as the README says: stdout stays free for output
    // a wrapper may want to read.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The store first: a database that cannot be used stops the start
    // before anything listens, with one line saying why.
    let server = match Server::open(args.config()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "chatmaster-server: cannot use the database {}: {e}",
                args.db
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = format!("{}:{}", args.host, args.port);
    let listener = match TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match server.run(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
