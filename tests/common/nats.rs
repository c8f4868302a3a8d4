//! A real `nats-server` with JetStream for the cluster tests: started on a
//! free loopback port with its data in a temporary directory, restartable
//! on the same port and data, killed and cleaned up on drop.
//!
//! [`NatsServer::start`] returns `None` when the binary is missing (after
//! saying loudly that the test did not run); with `CI` set it panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::lines::Lines;

/// How long nats-server may take to say it is ready.
pub const READY_WAIT: Duration = Duration::from_secs(20);

/// Where nats-server is, if installed (`NATS_SERVER` overrides).
pub fn find_nats_server() -> Option<PathBuf> {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .filter(|p| p.is_file())
}

/// A running nats-server.
pub struct NatsServer {
    binary: PathBuf,
    child: Option<Child>,
    lines: Option<Lines>,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one, or returns `None` (test skipped) when it is not installed.
    pub fn start(test: &str) -> Option<NatsServer> {
        let Some(binary) = find_nats_server() else {
            let msg = format!(
                "{test}: nats-server is not installed, so this test DID NOT RUN. \
                 Install it with: apt-get install nats-server"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n*** {msg} ***\n");
            return None;
        };
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut server = NatsServer {
            binary,
            child: None,
            lines: None,
            port,
            store: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        Some(server)
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut child = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("--store_dir")
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let mut lines = Lines::read(child.stderr.take().unwrap());
        if let Err(e) = lines.until(READY_WAIT, |l| l.contains("Server is ready")) {
            let _ = child.kill();
            panic!("nats-server did not start ({e:?}): {:#?}", lines.seen);
        }
        self.child = Some(child);
        self.lines = Some(lines);
    }

    /// Kills it (`SIGKILL`) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.lines = None;
    }

    /// Kills it and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
