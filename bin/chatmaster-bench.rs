//! `chatmaster-bench`: parses flags, runs the library's load generator
//! against a running server, prints the report (text or `--json`).
//!
//! Exits 1 when the run could not be carried out and 2 when it ran but
//! lost deliveries, so scripts can tell a slow server from a broken one.
//!
//! The runtime is built here rather than with `#[tokio::main]` so that
//! `--threads` can size it (see [`BenchArgs::threads`]).

use std::process::ExitCode;

use chatmaster::bench::{self, BenchArgs};
use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    if let Some(shell) = args.completions {
        let mut command = BenchArgs::command();
        clap_complete::generate(
            shell,
            &mut command,
            "chatmaster-bench",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A current-thread runtime for one thread: with a one-worker pool the
    // set-up, driven from block_on on this thread, would hand every
    // connection to the worker thread and back (about 0.8 s of bench CPU
    // against 0.6 s for a storm of 5,000 logins).
    let runtime = match chatmaster::runtime::build(args.threads) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("chatmaster-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

/// Runs the bench and prints its report.
async fn run(args: BenchArgs) -> ExitCode {
    let options = args.options();
    match bench::run(&options).await {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("chatmaster-bench: cannot print the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            if report.lossless() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!("chatmaster-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
