//! A private PostgreSQL server for the tests: `initdb` into a temporary
//! directory (trust authentication for the user [`USER`], UTF-8, no
//! fsync: a commit is written to the operating system, so it survives the
//! server being stopped at once, not a power cut), `pg_ctl` on a free
//! loopback port with its socket in that
//! directory, a fresh database per test, and the server stopped (`pg_ctl
//! stop -m immediate`) and its directory removed when the test binary
//! ends, however it ends.
//!
//! ```ignore
//! let Some(pg) = PgServer::shared() else { return }; // skipped: said why
//! let url = pg.fresh_database(); // postgres://chatmaster@127.0.0.1:PORT/t_N
//! ```
//!
//! The binaries are found on `PATH`, else in `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package; the newest version). `initdb` and
//! `postgres` refuse to run as root: as root, they run as the unprivileged
//! user `nobody` (or `chatmaster-test`, made if neither exists) through
//! `runuser`, owning the directory, which is then under `/tmp`. Without
//! PostgreSQL, [`PgServer::shared`] says the tests did not run and gives
//! `None`; with `CI` set it panics instead, so CI cannot pass without them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The database superuser the tests connect as (no password: trust).
pub const USER: &str = "chatmaster";

/// The unprivileged account the server runs as when the tests run as
/// root, if the system has it (Debian always does)...
const UNPRIVILEGED: &str = "nobody";
/// ...else this one, created for the purpose.
const TEST_ACCOUNT: &str = "chatmaster-test";

/// Seconds `pg_ctl` waits for the server to accept connections.
const START_WAIT_SECS: &str = "30";

/// Where PostgreSQL's server binaries are, if installed: the directory of
/// `initdb` on `PATH` (its symlinks resolved), else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_binaries() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("initdb"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_owned))
    });
    if let Some(dir) = on_path.filter(|d| complete(d)) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// A running PostgreSQL server of the tests.
pub struct PgServer {
    /// The binaries' directory.
    bin: PathBuf,
    /// The temporary directory: `data/` (the cluster), the socket, the log.
    dir: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
    /// Who the server runs as: `None` the current user, else the
    /// unprivileged account.
    run_as: Option<&'static str>,
    /// Databases made so far (their names are `t_1`, `t_2`, ...).
    made: AtomicUsize,
    /// The stdin of the process that stops the server and removes the
    /// directory once it reads end-of-file: when this is dropped, or when
    /// the test process ends in any way (the kernel closes the pipe).
    guard: Mutex<Option<(Child, ChildStdin)>>,
}

impl PgServer {
    /// The test binary's shared server, started at the first call. `None`
    /// after printing that the tests did not run when PostgreSQL is not
    /// installed; with `CI` set, a panic instead.
    pub fn shared() -> Option<&'static PgServer> {
        static SHARED: OnceLock<Option<PgServer>> = OnceLock::new();
        SHARED.get_or_init(PgServer::start_or_skip).as_ref()
    }

    /// A server of the caller's own (stopped when dropped), for a test that
    /// stops or restarts it; `None` as for [`PgServer::shared`].
    pub fn start_or_skip() -> Option<PgServer> {
        let Some(bin) = find_binaries() else {
            let msg = "PostgreSQL's server binaries (initdb, pg_ctl, postgres) are not \
                       installed, so the PostgreSQL tests DID NOT RUN. Install them with: \
                       apt-get install postgresql";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n*** {msg} ***\n");
            return None;
        };
        Some(PgServer::start(bin))
    }

    fn start(bin: PathBuf) -> PgServer {
        let run_as = is_root().then(unprivileged_account);
        // As root, under /tmp: the server's account must be able to reach
        // the directory, which a private TMPDIR may not let it.
        let parent = match run_as {
            Some(_) => PathBuf::from("/tmp"),
            None => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("chatmaster-pg-")
            .tempdir_in(parent)
            .expect("a temporary directory")
            .keep();
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {user} {}", dir.display());
        }
        let mut server = PgServer {
            bin,
            dir,
            port: 0,
            run_as,
            made: AtomicUsize::new(0),
            guard: Mutex::new(None),
        };
        // First, so that the directory goes whenever the test ends.
        server.guard_exit();
        let initdb = server.run(
            "initdb",
            &[
                "-D".as_ref(),
                server.data().as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ],
        );
        assert!(initdb.status.success(), "initdb failed: {}", text(&initdb));
        // A port that was free a moment ago may be taken by the time the
        // server binds it: a few tries.
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            let started = server.pg_ctl_start();
            if started.status.success() {
                // pg_ctl -w waited until it accepts connections; one query
                // proves it does on the port.
                server.psql("postgres", "SELECT 1");
                return server;
            }
            last = format!(
                "{}\n{}",
                text(&started),
                std::fs::read_to_string(server.dir.join("log")).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t_{}", self.made.fetch_add(1, Ordering::Relaxed) + 1);
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `name` with `psql` (stopping at the first
    /// error); returns what it printed, unaligned and without headers.
    pub fn psql(&self, name: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                name,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash
    /// would; [`PgServer::restart`] starts it again on the same port.
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                self.data().as_os_str(),
            ],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    /// Starts a stopped server again on its port, and waits until it
    /// accepts connections.
    pub fn restart(&self) {
        let out = self.pg_ctl_start();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// `pg_ctl start` on [`PgServer::port`], waiting (bounded) until the
    /// server accepts connections.
    fn pg_ctl_start(&self) -> Output {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off \
             -c full_page_writes=off -c shared_buffers=16MB -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                START_WAIT_SECS.as_ref(),
                "-D".as_ref(),
                self.data().as_os_str(),
                "-l".as_ref(),
                self.dir.join("log").as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The command line running `program` as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        // The server's user may not enter the caller's directory.
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// Starts the process that stops the server and removes the directory
    /// once its stdin closes.
    fn guard_exit(&mut self) {
        let stop = format!(
            "read _; {} stop -m immediate -D '{data}' >/dev/null 2>&1; rm -rf '{dir}'",
            match self.run_as {
                Some(user) => format!(
                    "runuser -u {user} -- '{}'",
                    self.bin.join("pg_ctl").display()
                ),
                None => format!("'{}'", self.bin.join("pg_ctl").display()),
            },
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let mut child = Command::new("sh")
            .args(["-c", &stop])
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the PostgreSQL stopper");
        let stdin = child.stdin.take().expect("piped stdin");
        *self.guard.lock().unwrap() = Some((child, stdin));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.guard.lock().unwrap().take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The account to run the server as under root: [`UNPRIVILEGED`], or
/// [`TEST_ACCOUNT`], made now if it is missing too.
fn unprivileged_account() -> &'static str {
    let exists = |user: &str| {
        Command::new("id")
            .arg(user)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if exists(UNPRIVILEGED) {
        return UNPRIVILEGED;
    }
    if !exists(TEST_ACCOUNT) {
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_ACCOUNT)
            .output()
            .expect("run useradd");
        // Another test binary may have made it meanwhile.
        assert!(
            made.status.success() || exists(TEST_ACCOUNT),
            "useradd {TEST_ACCOUNT}: {}",
            text(&made)
        );
    }
    TEST_ACCOUNT
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
