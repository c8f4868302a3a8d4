//! Running the server for real: configuration layers (file, environment,
//! flags: [`layers`]), log output ([`logging`]), the service manager
//! ([`systemd`]: readiness, watchdog, socket activation) and live reload
//! ([`reload`]). The binaries call this layer; it calls [`crate::server`]
//! only through its public API (`Hub::reconfigure`, `ServerArgs::config`).

pub mod layers;
pub mod logging;
pub mod reload;
pub mod systemd;
