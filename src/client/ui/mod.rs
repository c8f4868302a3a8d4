//! The terminal client (`chatmaster-client`): everything but `main`.
//!
//! [`input`] turns typed lines into commands or messages, [`display`]
//! turns server packages into lines (through [`sanitize`]), [`console`]
//! owns the terminal (rustyline on its own thread, an external printer) or
//! stdin/stdout in scriptable mode, and [`session`] is the one task that
//! owns the socket and ties them together. [`args`] has the flags, limits
//! and exit codes.

pub mod args;
pub mod complete;
pub mod console;
pub mod display;
pub mod input;
pub mod sanitize;
pub mod session;

use std::io::IsTerminal;

use crate::client::ClientConnection;
use crate::server::rate::TokenBucket;
pub use args::{ClientArgs, Exit};

/// Longest line the client sends or reads from stdin, in bytes: the
/// protocol's default package cap, so no line is refused locally that
/// a server could accept.
pub const MAX_LINE_BYTES: usize = crate::server::config::DEFAULT_MAX_PACKAGE_BYTES;

/// Runs the client with `args` until the user leaves or the connection
/// ends; returns how it ended.
pub async fn run(args: ClientArgs) -> Exit {
    let stdout_is_terminal = std::io::stdout().is_terminal();
    let interactive = std::io::stdin().is_terminal() && stdout_is_terminal;
    let theme = display::Theme::new(display::want_colour(
        stdout_is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
    ));
    let password = match configured_password(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatmaster-client: {e}");
            return Exit::LocalError;
        }
    };
    let address = args.address();
    let connect = async {
        if args.tls || args.ca.is_some() {
            let config = crate::client::transport::tls_config(args.ca.as_deref())?;
            ClientConnection::connect_tls(&args.host, args.port, config).await
        } else {
            ClientConnection::connect(address.as_str()).await
        }
    };
    let conn = match tokio::time::timeout(args.connect_timeout(), connect).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            eprintln!("chatmaster-client: cannot connect to {address}: {e}");
            return Exit::CannotConnect;
        }
        Err(_) => {
            eprintln!(
                "chatmaster-client: cannot connect to {address}: no answer within {:?}",
                args.connect_timeout()
            );
            return Exit::CannotConnect;
        }
    };
    let console = if interactive {
        let history = if args.no_history {
            None
        } else {
            args::history_path(
                std::env::var_os("XDG_STATE_HOME").map(Into::into),
                std::env::var_os("HOME").map(Into::into),
            )
        };
        match console::Console::interactive(history, args.history_size, args.print_queue) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("chatmaster-client: {e}");
                return Exit::LocalError;
            }
        }
    } else {
        console::Console::scriptable(MAX_LINE_BYTES)
    };
    let settings = session::Settings {
        username: args.username.clone(),
        password: password.map(session::Password),
        prompt_wait: args.prompt_wait(),
        drain_timeout: args.drain_timeout(),
        max_line_bytes: MAX_LINE_BYTES,
        theme,
        pacer: TokenBucket::new(args.send_rate, args.send_burst),
    };
    session::Session::new(conn, console, settings).run().await
}

/// The password given for scripts: `--password-file` (its first line), else
/// `CHATMASTER_PASSWORD`.
fn configured_password(args: &ClientArgs) -> Result<Option<String>, String> {
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or_default();
        return Ok(Some(line.to_owned()));
    }
    Ok(std::env::var("CHATMASTER_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty()))
}
