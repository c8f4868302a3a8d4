//! Log output: human-readable text or one JSON object per line, always on
//! stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Lines about a connection carry its `peer` and, once logged in, its
//! `user` as fields of the line itself (text `peer=.. user=..`, JSON under
//! `fields`). A span per connection would say the same for every line
//! logged inside it, but the subscriber keeps each live span's slot and
//! formatted fields: about 550 bytes per idle connection.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for a
    /// log collector.
    Json,
}

/// Installs the global subscriber; `default_level` applies when `RUST_LOG`
/// is unset or invalid. Does nothing if one is already installed.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
