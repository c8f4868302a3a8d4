//! `chatmaster-bench`: parses flags, runs the library's load generator
//! against a running server, prints the report (text or `--json`).
//!
//! Exits 1 when the run could not be carried out and 2 when it ran but
//! lost deliveries, so scripts can tell a slow server from a broken one.

use std::process::ExitCode;

use chatmaster::bench::{self, BenchArgs};
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = BenchArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
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
            if e.to_string().contains("rate_limit") {
                eprintln!("hint: start the server with --rate-per-sec 0 for benchmarks");
            }
            ExitCode::FAILURE
        }
    }
}
