//! Command-line flags of `chatmaster-client`, its limits and its exit codes.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use std::time::Duration;

/// Seconds to wait for the TCP connection to be established.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Milliseconds the prompt waits for the answer to `/join`, `/leave` or
/// `/rename` before it is shown anyway (so it shows the new channel or name).
pub const DEFAULT_PROMPT_WAIT_MS: u64 = 2000;
/// Seconds to wait, when leaving, for the server to confirm it handled
/// everything sent.
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 10;
/// Lines kept in the history file.
pub const DEFAULT_HISTORY_SIZE: usize = 1000;
/// Lines waiting to be printed before reading from the server pauses.
pub const DEFAULT_PRINT_QUEUE: usize = 256;
/// Packages per second the client sends at most, on average: a fifth under
/// the server's default flood limit (20 per second). The server never
/// refuses a fast sender, it stops reading it; pacing here keeps a paste or
/// a piped file flowing evenly instead of in stalls.
pub const DEFAULT_SEND_RATE: u32 = 16;
/// Packages the client sends at once before pacing starts (the server's
/// default burst is 40).
pub const DEFAULT_SEND_BURST: u32 = 32;

/// How the client ended; the process exit code is the discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// `/quit`, Ctrl-D, Ctrl-C or end of input, after the server confirmed
    /// everything sent.
    Normal = 0,
    /// The terminal or another local resource failed.
    LocalError = 1,
    /// Bad command-line flags.
    Usage = 2,
    /// The server could not be reached.
    CannotConnect = 3,
    /// The connection broke, the server sent garbage, or it did not
    /// confirm what was sent in time.
    ConnectionLost = 4,
    /// The server announced it is shutting down.
    ServerShutdown = 5,
    /// Scriptable mode: the server refused the `--username` name, or input
    /// ended after a refused name without another one being accepted.
    LoginRefused = 6,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Text appended to `--help`.
const AFTER_HELP: &str = "\
Type /help inside the client for its commands.

Modes:
  With a terminal on stdin the client is interactive: line editing, history
  (in $XDG_STATE_HOME/chatmaster/history, else ~/.local/state/chatmaster/history),
  and incoming lines printed above the prompt. Colours are used only when stdout is
  a terminal and NO_COLOR is unset or empty.
  Without a terminal on stdin it is scriptable: each input line is sent in order,
  every event is printed to stdout as one line (server errors too, starting with
  '!! '), and at the end of input it exits only after the server has confirmed
  everything sent. Without --username the first input line is the name; if the
  server refuses it, the reason is printed ('!! login refused: ...') and the next
  line is the next name to try. With --username a refused name ends the client (6).
  Problems of the client itself (cannot connect, connection lost) go to stderr.

Accounts:
  When the server says a name is registered, the client asks for its password
  (without echo), or uses --password-file FILE (its first line) or the
  CHATMASTER_PASSWORD environment variable. /register and /password ask for
  passwords the same way; in scriptable mode /register uses the configured
  password if there is one, and otherwise, like /password, reads the passwords
  as the next input lines.

Exit codes:
  0  quit, Ctrl-D or end of input, everything sent was confirmed
  1  local error (e.g. the terminal failed)
  2  bad command-line flags
  3  cannot connect to the server
  4  connection lost, bad data from the server, or no confirmation in time
  5  the server shut down
  6  scriptable mode: the server refused the --username name (or its password),
     or input ended after a refused name";

/// Command-line flags of `chatmaster-client`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "chatmaster-client",
    version,
    about = "ChatMaster 3000 terminal client",
    after_help = AFTER_HELP
)]
pub struct ClientArgs {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Server TCP port.
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    /// Speak TLS to the server (its certificate must be valid for --host).
    #[arg(long)]
    pub tls: bool,
    /// Trust the certificates in FILE (PEM) instead of the system's roots;
    /// implies --tls.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Log in under this name instead of being asked for one.
    #[arg(long)]
    pub username: Option<String>,
    /// File whose first line is the password, used when the server says the
    /// name is registered and by /register (for scripts; CHATMASTER_PASSWORD
    /// in the environment does the same).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Seconds to wait for the connection to be established.
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_secs: u64,
    /// Milliseconds the prompt waits for the answer to /join, /leave or /rename.
    #[arg(long, default_value_t = DEFAULT_PROMPT_WAIT_MS)]
    pub prompt_wait_ms: u64,
    /// Seconds to wait when leaving for the server to confirm everything sent.
    #[arg(long, default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub drain_timeout_secs: u64,
    /// Lines kept in the history file (interactive mode).
    #[arg(long, default_value_t = DEFAULT_HISTORY_SIZE)]
    pub history_size: usize,
    /// Do not read or write the history file.
    #[arg(long)]
    pub no_history: bool,
    /// Lines waiting to be printed before reading from the server pauses.
    #[arg(long, default_value_t = DEFAULT_PRINT_QUEUE, value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub print_queue: usize,
    /// Packages per second sent at most, so pastes and scripts stay under the
    /// server's flood limit (0 = no pacing, for servers run without one).
    #[arg(long, default_value_t = DEFAULT_SEND_RATE)]
    pub send_rate: u32,
    /// Packages sent at once before pacing starts.
    #[arg(long, default_value_t = DEFAULT_SEND_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub send_burst: u32,
    /// Print a completion script for this shell and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<clap_complete::Shell>,
}

impl ClientArgs {
    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Prompt wait as a duration.
    pub fn prompt_wait(&self) -> Duration {
        Duration::from_millis(self.prompt_wait_ms)
    }

    /// Drain timeout as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

/// Where the history file lives: `$XDG_STATE_HOME/chatmaster/history`, else
/// `$HOME/.local/state/chatmaster/history`; `None` when neither is set.
pub fn history_path(xdg_state_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    let base = match xdg_state_home.filter(|p| p.is_absolute()) {
        Some(state) => state,
        None => home
            .filter(|h| !h.as_os_str().is_empty())?
            .join(".local")
            .join("state"),
    };
    Some(base.join("chatmaster").join("history"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults() {
        let a = ClientArgs::parse_from(["chatmaster-client"]);
        assert_eq!(a.address(), "127.0.0.1:9000");
        assert_eq!(a.username, None);
        assert_eq!(
            a.prompt_wait(),
            Duration::from_millis(DEFAULT_PROMPT_WAIT_MS)
        );
        assert_eq!(a.history_size, DEFAULT_HISTORY_SIZE);
        let a = ClientArgs::parse_from(["c", "--host", "::1", "--port", "1", "--username", "bob"]);
        assert_eq!(a.address(), "[::1]:1");
        assert_eq!(a.username.as_deref(), Some("bob"));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let err = ClientArgs::try_parse_from(["c", "--port", "x"]).unwrap_err();
        assert_eq!(err.exit_code(), i32::from(Exit::Usage.code()));
    }

    #[test]
    fn help_documents_exit_codes() {
        use clap::CommandFactory;
        let help = ClientArgs::command().render_long_help().to_string();
        for code in 0..=6 {
            assert!(
                help.contains(&format!("\n  {code}  ")),
                "exit code {code} missing"
            );
        }
    }

    #[test]
    fn history_location() {
        let state = Some(PathBuf::from("/s"));
        let home = Some(PathBuf::from("/h"));
        assert_eq!(
            history_path(state, home.clone()),
            Some(PathBuf::from("/s/chatmaster/history"))
        );
        assert_eq!(
            history_path(None, home.clone()),
            Some(PathBuf::from("/h/.local/state/chatmaster/history"))
        );
        // The XDG spec says relative values are to be ignored.
        assert_eq!(
            history_path(Some(PathBuf::from("rel")), home),
            Some(PathBuf::from("/h/.local/state/chatmaster/history"))
        );
        assert_eq!(history_path(None, None), None);
    }
}
