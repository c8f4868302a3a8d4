//! `chatmaster-server`: reads its configuration (flags over environment
//! over file over defaults), sets up logging, binds (or takes the socket
//! systemd passed), and runs the library's server until SIGINT or SIGTERM;
//! SIGHUP reloads the configuration file. Subcommands manage accounts
//! (`accounts ...`), print the effective configuration, back the database
//! up, and print shell completions.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use chatmaster::cluster::nats::{NatsLink, NatsOptions};
use chatmaster::cluster::ClusterError;
use chatmaster::ops::layers::{self, LayerError, Layered};
use chatmaster::ops::{logging, reload, systemd};
use chatmaster::server::admin;
use chatmaster::server::config::ServerCommand;
use chatmaster::server::Listeners;
use chatmaster::web::tls::Tls;
use chatmaster::{Server, ServerArgs};
use clap::CommandFactory;
use tokio::net::TcpListener;

/// Least time a backup waits for the database's lock: a checkpoint of
/// the running server may hold it briefly.
const MIN_BACKUP_WAIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    // Before any thread exists: this clears LISTEN_FDS from the environment.
    let inherited = match systemd::inherited_listener() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "chatmaster-server: the socket passed by the service manager is unusable: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let argv: Vec<OsString> = std::env::args_os().collect();
    let loaded = match load(&argv) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let args = &loaded.value;
    match &args.command {
        Some(ServerCommand::Accounts(accounts)) => {
            let db = accounts.db.as_deref().unwrap_or(&args.db);
            let options = args.config().store_options();
            match admin::run(db, &options, &accounts.action, &mut admin::Terminal) {
                Ok(out) => {
                    if !out.is_empty() {
                        println!("{out}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chatmaster-server accounts: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Some(ServerCommand::Config) => {
            print_config(&loaded);
            ExitCode::SUCCESS
        }
        Some(ServerCommand::Backup { file }) => backup(args, file),
        Some(ServerCommand::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut ServerArgs::command(),
                "chatmaster-server",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        None => match chatmaster::runtime::build(args.threads) {
            // Spawned rather than run in block_on, so that the accept loop runs
            // on a worker thread, next to the connections it starts.
            Ok(runtime) => runtime.block_on(async {
                tokio::spawn(serve(argv, loaded, inherited))
                    .await
                    .unwrap_or(ExitCode::FAILURE)
            }),
            Err(e) => {
                eprintln!("chatmaster-server: cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// All configuration layers, or the exit code after saying why not.
fn load(argv: &[OsString]) -> Result<Layered<ServerArgs>, ExitCode> {
    match layers::load_from_env::<ServerArgs>(argv) {
        Ok(l) => Ok(l),
        Err(LayerError::Clap(e)) => {
            let _ = e.print();
            Err(ExitCode::from(e.exit_code().clamp(0, 255) as u8))
        }
        Err(e) => {
            eprintln!("chatmaster-server: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn backup(args: &ServerArgs, out: &Path) -> ExitCode {
    if args.db == chatmaster::store::MEMORY {
        eprintln!(
            "chatmaster-server backup: --db is {}: there is no file to copy",
            args.db
        );
        return ExitCode::FAILURE;
    }
    if chatmaster::store::is_postgres(&args.db) {
        eprintln!(
            "chatmaster-server backup: --db is the PostgreSQL database {}: back it up with \
             PostgreSQL's own tools (pg_dump, or a base backup)",
            chatmaster::store::shown(&args.db)
        );
        return ExitCode::FAILURE;
    }
    let wait = args.config().db_busy_timeout.max(MIN_BACKUP_WAIT);
    match chatmaster::store::maintenance::backup(Path::new(&args.db), out, wait) {
        Ok(report) => {
            println!(
                "backed up {} to {} (schema version {}, {} bytes)",
                args.db,
                out.display(),
                report.schema_version,
                report.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chatmaster-server backup: {}: {e}", args.db);
            ExitCode::FAILURE
        }
    }
}

fn print_config(loaded: &Layered<ServerArgs>) {
    println!("# chatmaster-server: effective configuration");
    match &loaded.file {
        Some(path) => println!("# configuration file: {}", path.display()),
        None => println!("# no configuration file (--config or CHATMASTER_CONFIG)"),
    }
    println!("# precedence: default < file < environment (CHATMASTER_*) < flag");
    for warning in &loaded.warnings {
        println!("# warning: {warning}");
    }
    for setting in &loaded.settings {
        // A PostgreSQL URL's password is not printed.
        let mut setting = setting.clone();
        if setting.key == "db" {
            setting.values = setting
                .values
                .iter()
                .map(|v| chatmaster::store::shown(v))
                .collect();
        }
        println!("{}", setting.to_toml_line());
    }
}

async fn serve(
    argv: Vec<OsString>,
    loaded: Layered<ServerArgs>,
    inherited: Option<std::net::TcpListener>,
) -> ExitCode {
    let args = &loaded.value;
    // Logs go to stderr, as the README says: stdout stays free for output
    // a wrapper may want to read.
    logging::init(args.log_format, "info");
    if let Some(path) = &loaded.file {
        tracing::info!(file = %path.display(), "configuration file read");
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    // The store first: a database that cannot be used stops the start
    // before anything listens, with one line saying why.
    let server = match Server::open(args.config()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "chatmaster-server: cannot use the database {}: {e}",
                chatmaster::store::shown(&args.db)
            );
            return ExitCode::FAILURE;
        }
    };
    // A node of a cluster joins it before anything listens: one that
    // cannot reach NATS (or join) stops the start with one line, as a
    // database does.
    let server = if args.cluster.is_empty() {
        server
    } else {
        match join_cluster(server).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chatmaster-server: cannot join the cluster: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let listener = match inherited {
        Some(std) => match TcpListener::from_std(std) {
            Ok(l) => {
                tracing::info!("using the socket passed by the service manager");
                l
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot use the socket passed by the service manager");
                return ExitCode::FAILURE;
            }
        },
        None => {
            let addr = format!("{}:{}", args.host, args.port);
            match TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    // A certificate that cannot be used stops the start, as a database does.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match Tls::load(cert, key) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("chatmaster-server: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let http = if args.no_http {
        None
    } else {
        let addr = format!("{}:{}", args.host, args.http_port);
        match TcpListener::bind(&addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen (HTTP)");
                return ExitCode::FAILURE;
            }
        }
    };
    let hub = server.hub();
    if let Some(interval) = systemd::watchdog_interval() {
        tracing::info!(?interval, "watchdog keep-alives enabled");
        tokio::spawn(systemd::watchdog(interval));
    }
    // Installed before READY=1 and the "listening" line, so that a SIGHUP
    // sent once the server is up never meets the default action (exit).
    #[cfg(unix)]
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload is off");
            None
        }
    };
    #[cfg(unix)]
    let reloader = tokio::spawn(reload_on_sighup(hangups, argv, loaded, hub, tls.clone()));
    #[cfg(not(unix))]
    let reloader = tokio::spawn(async move { drop((argv, loaded, hub)) });
    let listeners = Listeners {
        tcp: listener,
        http,
        tls,
    };
    // Listened for before READY=1, as SIGHUP is: a SIGTERM sent as soon
    // as the server says it is up must stop it gracefully, not kill it.
    let stop = shutdown_signal();
    systemd::ready();
    let shutdown = async {
        stop.await;
        systemd::stopping();
    };
    let result = server.run_with(listeners, shutdown).await;
    reloader.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// Connects to the NATS servers of `--cluster` and makes `server` a node
/// of the chat they carry.
async fn join_cluster(server: Server) -> Result<Server, ClusterError> {
    let config = server.hub().config();
    let options = NatsOptions::from_config(&config);
    let link = NatsLink::connect(&config.cluster, &config.node_name, options).await?;
    server.join_cluster(link).await
}

/// On each SIGHUP, reads every layer again and puts the live limits in
/// force; a broken file keeps the running configuration.
#[cfg(unix)]
async fn reload_on_sighup(
    hangups: Option<tokio::signal::unix::Signal>,
    argv: Vec<OsString>,
    started: Layered<ServerArgs>,
    hub: chatmaster::server::chat::Hub,
    tls: Option<std::sync::Arc<Tls>>,
) {
    {
        let Some(mut hangups) = hangups else { return };
        let mut current = started.clone();
        while hangups.recv().await.is_some() {
            systemd::reloading();
            // The certificate is read again on every reload: renewing it
            // in place needs no restart, and sessions open keep theirs.
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; the running one stays")
                    }
                }
            }
            match layers::load_from_env::<ServerArgs>(&argv) {
                Err(e) => tracing::error!(
                    error = %e,
                    "configuration reload failed; the running configuration stays"
                ),
                Ok(new) => {
                    let plan = reload::plan(&started, &current, &new, ServerArgs::config);
                    for c in &plan.live {
                        tracing::info!(key = %c.key, old = ?c.old, new = ?c.new, "configuration reload: applied");
                    }
                    for c in &plan.restart {
                        // --db is a restart key: a PostgreSQL URL's password stays out of the log.
                        let shown = |v: &[String]| -> Vec<String> {
                            v.iter().map(|v| chatmaster::store::shown(v)).collect()
                        };
                        let (running, configured) = if c.key == "db" {
                            (shown(&c.old), shown(&c.new))
                        } else {
                            (c.old.clone(), c.new.clone())
                        };
                        tracing::warn!(key = %c.key, ?running, ?configured, "configuration reload: this change needs a restart; the running value stays");
                    }
                    // What was set up at start stays as it runs.
                    hub.reconfigure(new.value.config().keep_startup(&hub.config()));
                    tracing::info!(
                        applied = plan.live.len(),
                        need_restart = plan.restart.len(),
                        "configuration reloaded"
                    );
                    current = new;
                }
            }
            systemd::ready();
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM. The handlers are
/// installed when this is called, not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for {name}");
                None
            }
        };
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let mut term = listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                _ = received(interrupt.as_mut()) => tracing::info!("SIGINT received"),
                _ = received(term.as_mut()) => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("SIGINT received");
    }
}

/// Completes when `signal` arrives; never, if it could not be listened for.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
