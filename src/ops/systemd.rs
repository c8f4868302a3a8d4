//! The service manager's side of the process: readiness and stopping
//! notices, watchdog keep-alives (`Type=notify`, through `NOTIFY_SOCKET`),
//! and a listening socket handed over by socket activation
//! (`LISTEN_FDS`). Outside systemd every call here does nothing.

use std::io;
use std::time::Duration;

/// Tells the service manager the server is listening (`READY=1`).
pub fn ready() {
    notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells the service manager the server is shutting down (`STOPPING=1`).
pub fn stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// Tells the service manager a reload started (`RELOADING=1`, with the
/// clock reading `Type=notify-reload` asks for).
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[sd_notify::NotifyState::Reloading, now]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
}

/// A one-line status shown by `systemctl status`.
pub fn status(text: &str) {
    notify(&[sd_notify::NotifyState::Status(text)]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// How often to send `WATCHDOG=1`: half the interval the service manager
/// set (`WatchdogSec=`), or `None` when no watchdog is configured.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `interval`, forever. Runs on the same runtime
/// as the connections, so a wedged runtime stops the pings and systemd
/// restarts the service.
pub async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

/// The listening socket passed by socket activation (`LISTEN_FDS`, the
/// first one), if any. Must be called before any other thread starts: it
/// clears the variables so that no child inherits them.
pub fn inherited_listener() -> io::Result<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let listener = fds.take_tcp_listener(0)?;
    if let Some(l) = &listener {
        // tokio needs it non-blocking; systemd hands it over blocking.
        l.set_nonblocking(true)?;
    }
    Ok(listener)
}
