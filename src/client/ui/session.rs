//! The client's session: one async task that owns the socket, turns input
//! lines into packages and packages into printed lines, and decides when
//! the client is done.
//!
//! The input side is asked for one line at a time. After `/join`,
//! `/leave` or `/rename` the next line is only asked for once the server
//! has answered (a `ping` sent right after the command comes back as
//! `pong` after the answer, since the server handles a connection's
//! packages in order), so the prompt already shows the new channel or
//! name. Leaving works the same way: a final `ping` whose `pong` proves
//! the server handled everything the user sent.

use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::client::ui::args::Exit;
use crate::client::ui::console::{Console, InputEvent, LineKind};
use crate::client::ui::display::{ChatState, Theme};
use crate::client::ui::input::{help_lines, parse_line, ChatCommand, Input};
use crate::client::{ClientConnection, ClientError};
use crate::server::rate::TokenBucket;
use crate::wire::protocol::{ClientPackage, Command, Notification, ServerPackage};

/// Prompt shown when asking for a name.
pub const NAME_PROMPT: &str = "name: ";

/// A password given on the command line's behalf (file or environment).
/// Its `Debug` hides it, so it never reaches a log or a panic message.
#[derive(Clone)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(hidden)")
    }
}

/// A conversation asking for passwords, one line at a time.
#[derive(Clone, PartialEq, Eq)]
enum SecretFlow {
    /// The password for logging in as `name`.
    Login {
        /// The registered name.
        name: String,
    },
    /// `/register`: the password, then the same again.
    Register {
        /// The first entry, once typed.
        first: Option<String>,
    },
    /// `/password`: the current password, the new one, the new one again.
    Password {
        /// The current password, once typed.
        old: Option<String>,
        /// The new one, once typed.
        new: Option<String>,
    },
}

/// The session's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Name to log in with before asking.
    pub username: Option<String>,
    /// Password to use when the server says the name is registered, and
    /// for `/register` in scriptable mode.
    pub password: Option<Password>,
    /// How long the prompt waits for the answer to a prompt-changing command.
    pub prompt_wait: Duration,
    /// How long to wait for the final confirmation when leaving.
    pub drain_timeout: Duration,
    /// Longest line sent, in bytes.
    pub max_line_bytes: usize,
    /// Colours or not.
    pub theme: Theme,
    /// Paces what is sent to stay under the server's flood limit.
    pub pacer: TokenBucket,
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not logged in yet.
    LoggingIn,
    /// Logged in, reading lines.
    Chatting,
    /// Leaving: waiting for the `pong` that confirms everything sent.
    Draining,
}

/// What the deadline, if one is set, is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Showing the prompt after a prompt-changing command.
    Prompt,
    /// The final confirmation.
    Drain,
}

/// One client session over one connection.
pub struct Session {
    /// The socket.
    conn: ClientConnection,
    /// Input and output.
    console: Console,
    /// Settings.
    settings: Settings,
    /// Our name and channel.
    state: ChatState,
    /// Where we are.
    phase: Phase,
    /// Whether `--username` has been tried already.
    given_name_used: bool,
    /// Scriptable mode: why the last name read from stdin was refused,
    /// until a login succeeds; the last word if input ends before another
    /// name is accepted.
    refused: Option<String>,
    /// Whether a line was requested and not yet answered.
    reading: bool,
    /// Whether the input side has ended (end of input or failure).
    input_done: bool,
    /// The `ping` token whose `pong` we wait for, if any.
    waiting_for: Option<String>,
    /// When waiting stops, and why.
    deadline: Option<(Instant, Wait)>,
    /// Numbers the ping tokens.
    next_token: u64,
    /// The name last sent in a `login`.
    last_name: Option<String>,
    /// A registered name the server wants the password of, until the next
    /// `request login` asks for it.
    needs_password: Option<String>,
    /// Whether the configured password was sent for a login already.
    password_used: bool,
    /// The password conversation in progress, if any.
    secret: Option<SecretFlow>,
}

/// What ended the session: the exit code and a last word for stderr.
type End = (Exit, Option<String>);

impl Session {
    /// A session on an open connection.
    pub fn new(conn: ClientConnection, console: Console, settings: Settings) -> Session {
        Session {
            conn,
            console,
            settings,
            state: ChatState::default(),
            phase: Phase::LoggingIn,
            given_name_used: false,
            refused: None,
            reading: false,
            input_done: false,
            waiting_for: None,
            deadline: None,
            next_token: 0,
            last_name: None,
            needs_password: None,
            password_used: false,
            secret: None,
        }
    }

    /// Runs until the user leaves or the connection ends.
    pub async fn run(mut self) -> Exit {
        let (exit, last) = loop {
            let step = tokio::select! {
                package = self.conn.recv() => self.on_package(package).await,
                input = self.console.next_input(), if !self.input_done => self.on_input(input).await,
                () = sleep_until(self.deadline.map_or_else(Instant::now, |(at, _)| at)),
                    if self.deadline.is_some() => self.on_deadline().await,
            };
            if let Err(end) = step {
                break end;
            }
        };
        self.console.finish(self.reading, last).await;
        exit
    }

    async fn print(&self, line: String) {
        self.console.print(line).await;
    }

    fn ask(&mut self, kind: LineKind) {
        let prompt = match kind {
            LineKind::Name => NAME_PROMPT.to_owned(),
            LineKind::Chat => self.state.prompt(),
            LineKind::Secret => "password: ".to_owned(),
        };
        self.reading = true;
        self.console.request_line(prompt, kind);
    }

    /// Asks for a password (no echo, no history) as part of `flow`.
    fn ask_secret(&mut self, flow: SecretFlow, prompt: String) {
        self.secret = Some(flow);
        self.reading = true;
        self.console.request_line(prompt, LineKind::Secret);
    }

    async fn send(&mut self, package: &ClientPackage) -> Result<(), End> {
        // Every package counts against the server's flood control, pings
        // included; staying under it means the server never has to stop
        // reading us, so answers (and the final confirmation) come promptly.
        self.settings.pacer.take().await;
        self.conn.send(package).await.map_err(lost)
    }

    /// Sends a `ping` and starts waiting for its `pong`.
    async fn ping(&mut self, purpose: Wait, limit: Duration) -> Result<(), End> {
        self.next_token += 1;
        let token = format!(
            "{}-{}",
            match purpose {
                Wait::Prompt => "prompt",
                Wait::Drain => "bye",
            },
            self.next_token
        );
        let ping = ClientPackage::Command(Command::new(
            "ping",
            Some(serde_json::json!({ "token": token })),
        ));
        self.send(&ping).await?;
        self.waiting_for = Some(token);
        self.deadline = Some((Instant::now() + limit, purpose));
        Ok(())
    }

    /// Starts leaving: everything sent must be confirmed first.
    async fn leave(&mut self) -> Result<(), End> {
        if self.phase != Phase::Chatting {
            // Input ended while asking for a name: if the last one was
            // refused, the login failed for good.
            return Err(match self.refused.take() {
                Some(reason) => (
                    Exit::LoginRefused,
                    Some(format!(
                        "chatmaster-client: login refused: {reason}; no other name given"
                    )),
                ),
                None => (Exit::Normal, None),
            });
        }
        self.phase = Phase::Draining;
        let limit = self.settings.drain_timeout;
        self.ping(Wait::Drain, limit).await
    }

    async fn on_package(&mut self, package: Result<ServerPackage, ClientError>) -> Result<(), End> {
        let package = match package {
            Ok(p) => p,
            Err(ClientError::Decode(e)) if !e.is_fatal() => {
                let theme = self.settings.theme;
                self.print(theme.error(&format!(
                    "ignored a package this client does not understand: {e}"
                )))
                .await;
                return Ok(());
            }
            Err(e) => return Err(lost(e)),
        };
        if let Some(line) = self.state.describe(&package, &self.settings.theme) {
            self.print(line).await;
        }
        self.console.names().learn_from(&package);
        self.state.apply(&package);
        match package {
            ServerPackage::Request(r) if r.request == "login" => self.on_login_request().await,
            ServerPackage::Session(s) if s.status => {
                self.refused = None;
                self.phase = Phase::Chatting;
                self.ask(LineKind::Chat);
                Ok(())
            }
            ServerPackage::Session(s) => {
                if s.password_required == Some(true) {
                    self.needs_password = self.last_name.clone();
                }
                let retry_with_configured = self.needs_password.is_some()
                    && self.settings.password.is_some()
                    && !self.password_used;
                let reason = crate::client::ui::sanitize::sanitize(
                    s.reason.as_deref().unwrap_or("no reason given"),
                );
                if self.console.is_interactive() || retry_with_configured {
                    // A new `request login` follows; it asks for another name.
                    Ok(())
                } else if self.settings.username.is_none() {
                    // The name was a stdin line (the refusal was printed
                    // above as a `!! ` line): the next line is the next try.
                    self.refused = Some(reason.into_owned());
                    Ok(())
                } else {
                    // A script that passed --username has nobody to ask.
                    Err((
                        Exit::LoginRefused,
                        Some(format!("chatmaster-client: login refused: {reason}")),
                    ))
                }
            }
            ServerPackage::Notification(Notification::Pong { token }) => {
                if token.is_none() || token != self.waiting_for {
                    return Ok(());
                }
                self.waiting_for = None;
                let purpose = self.deadline.take().map(|(_, w)| w);
                match purpose {
                    Some(Wait::Drain) => Err((Exit::Normal, None)),
                    _ => {
                        self.ask(LineKind::Chat);
                        Ok(())
                    }
                }
            }
            ServerPackage::Notification(Notification::ServerShutdown {}) => Err((
                Exit::ServerShutdown,
                Some("chatmaster-client: the server shut down".into()),
            )),
            _ => Ok(()),
        }
    }

    async fn on_login_request(&mut self) -> Result<(), End> {
        if let Some(name) = self.needs_password.take() {
            if let (Some(password), false) = (self.settings.password.clone(), self.password_used) {
                self.password_used = true;
                return self.send_login(&name, Some(&password.0)).await;
            }
            let prompt = format!("password for {name} (empty to choose another name): ");
            self.ask_secret(SecretFlow::Login { name }, prompt);
            return Ok(());
        }
        match self.settings.username.clone() {
            Some(name) if !self.given_name_used => {
                self.given_name_used = true;
                self.send_login(&name, None).await
            }
            _ => {
                self.ask(LineKind::Name);
                Ok(())
            }
        }
    }

    async fn send_login(&mut self, name: &str, password: Option<&str>) -> Result<(), End> {
        let parameters = match password {
            Some(p) => serde_json::json!({ "username": name, "password": p }),
            None => serde_json::json!({ "username": name }),
        };
        self.last_name = Some(name.to_owned());
        let login = ClientPackage::Command(Command::new("login", Some(parameters)));
        self.send(&login).await
    }

    /// The next line of a password conversation.
    async fn on_secret(&mut self, flow: SecretFlow, line: String) -> Result<(), End> {
        let theme = self.settings.theme;
        match flow {
            SecretFlow::Login { name } => {
                if line.is_empty() {
                    self.ask(LineKind::Name);
                    Ok(())
                } else {
                    self.send_login(&name, Some(&line)).await
                }
            }
            SecretFlow::Register { first: None } => {
                let prompt = "password again: ".to_owned();
                self.ask_secret(SecretFlow::Register { first: Some(line) }, prompt);
                Ok(())
            }
            SecretFlow::Register { first: Some(first) } => {
                if first == line {
                    self.send_account_command("register", serde_json::json!({ "password": line }))
                        .await
                } else {
                    self.print(theme.error("the passwords differ; nothing was sent"))
                        .await;
                    self.ask(LineKind::Chat);
                    Ok(())
                }
            }
            SecretFlow::Password { old: None, .. } => {
                let prompt = "new password: ".to_owned();
                let flow = SecretFlow::Password {
                    old: Some(line),
                    new: None,
                };
                self.ask_secret(flow, prompt);
                Ok(())
            }
            SecretFlow::Password {
                old: Some(old),
                new: None,
            } => {
                let prompt = "new password again: ".to_owned();
                let flow = SecretFlow::Password {
                    old: Some(old),
                    new: Some(line),
                };
                self.ask_secret(flow, prompt);
                Ok(())
            }
            SecretFlow::Password {
                old: Some(old),
                new: Some(new),
            } => {
                if new == line {
                    let params = serde_json::json!({ "old": old, "new": new });
                    self.send_account_command("password", params).await
                } else {
                    self.print(theme.error("the new passwords differ; nothing was sent"))
                        .await;
                    self.ask(LineKind::Chat);
                    Ok(())
                }
            }
        }
    }

    /// Sends `register` or `password`; the next prompt waits for the answer.
    async fn send_account_command(
        &mut self,
        name: &str,
        parameters: serde_json::Value,
    ) -> Result<(), End> {
        let command = ClientPackage::Command(Command::new(name, Some(parameters)));
        self.send(&command).await?;
        let limit = self.settings.prompt_wait;
        self.ping(Wait::Prompt, limit).await
    }

    async fn on_input(&mut self, input: Option<InputEvent>) -> Result<(), End> {
        let Some(input) = input else {
            return Err((
                Exit::LocalError,
                Some("chatmaster-client: input ended unexpectedly".into()),
            ));
        };
        let theme = self.settings.theme;
        if let InputEvent::Warning(w) = input {
            self.print(theme.error(&w)).await;
            return Ok(());
        }
        self.reading = false;
        if matches!(input, InputEvent::Eof | InputEvent::Failed(_)) {
            self.input_done = true;
        }
        match input {
            InputEvent::Warning(_) => Ok(()),
            InputEvent::Failed(e) => {
                Err((Exit::LocalError, Some(format!("chatmaster-client: {e}"))))
            }
            InputEvent::Eof | InputEvent::Interrupted => self.leave().await,
            InputEvent::TooLong(n) => {
                self.too_long(n).await;
                Ok(())
            }
            InputEvent::Line(line) => {
                if let Some(flow) = self.secret.take() {
                    return self.on_secret(flow, line).await;
                }
                if line.len() > self.settings.max_line_bytes {
                    self.too_long(line.len()).await;
                    return Ok(());
                }
                match self.phase {
                    Phase::LoggingIn => {
                        let name = line.trim();
                        if name.is_empty() {
                            self.ask(LineKind::Name);
                            Ok(())
                        } else {
                            let name = name.to_owned();
                            self.send_login(&name, None).await
                        }
                    }
                    Phase::Chatting => self.on_line(&line).await,
                    Phase::Draining => Ok(()),
                }
            }
        }
    }

    async fn too_long(&mut self, n: usize) {
        self.secret = None;
        let theme = self.settings.theme;
        self.print(theme.error(&format!(
            "line of {n} bytes not sent: the limit is {} bytes",
            self.settings.max_line_bytes
        )))
        .await;
        self.ask_again();
    }

    fn ask_again(&mut self) {
        match self.phase {
            Phase::LoggingIn => self.ask(LineKind::Name),
            Phase::Chatting => self.ask(LineKind::Chat),
            Phase::Draining => {}
        }
    }

    async fn on_line(&mut self, line: &str) -> Result<(), End> {
        let theme = self.settings.theme;
        let input = parse_line(line);
        match &input {
            Input::Nothing => self.ask(LineKind::Chat),
            Input::Help => {
                for l in help_lines() {
                    self.print(theme.info(&l)).await;
                }
                self.ask(LineKind::Chat);
            }
            Input::Invalid(usage) => {
                self.print(theme.error(usage)).await;
                self.ask(LineKind::Chat);
            }
            Input::Quit => return self.leave().await,
            Input::Register => match self.settings.password.clone() {
                Some(password) if !self.console.is_interactive() => {
                    let params = serde_json::json!({ "password": password.0 });
                    self.send_account_command("register", params).await?;
                }
                _ => self.ask_secret(SecretFlow::Register { first: None }, "password: ".into()),
            },
            Input::Password => self.ask_secret(
                SecretFlow::Password {
                    old: None,
                    new: None,
                },
                "current password: ".into(),
            ),
            Input::Message(_) => {
                if let Some(p) = input.to_package() {
                    self.send(&p).await?;
                }
                self.ask(LineKind::Chat);
            }
            Input::Reply(text) => match self.state.last_direct_from.clone() {
                Some(to) => {
                    let c = ChatCommand::Direct {
                        to,
                        text: text.clone(),
                    };
                    self.state.sent_direct(text);
                    self.send(&c.to_package()).await?;
                    self.ask(LineKind::Chat);
                }
                None => {
                    self.print(theme.error("nobody has written to you directly yet"))
                        .await;
                    self.ask(LineKind::Chat);
                }
            },
            Input::Command(c) => {
                if let ChatCommand::Direct { text, .. } | ChatCommand::Random(text) = c {
                    self.state.sent_direct(text);
                }
                self.send(&c.to_package()).await?;
                if c.changes_prompt() {
                    let limit = self.settings.prompt_wait;
                    self.ping(Wait::Prompt, limit).await?;
                } else {
                    self.ask(LineKind::Chat);
                }
            }
        }
        Ok(())
    }

    async fn on_deadline(&mut self) -> Result<(), End> {
        let Some((_, purpose)) = self.deadline.take() else {
            return Ok(());
        };
        self.waiting_for = None;
        match purpose {
            Wait::Prompt => {
                self.ask(LineKind::Chat);
                Ok(())
            }
            Wait::Drain => Err((
                Exit::ConnectionLost,
                Some(format!(
                    "chatmaster-client: the server did not confirm what was sent within {:?}",
                    self.settings.drain_timeout
                )),
            )),
        }
    }
}

/// The end for a broken connection.
fn lost(e: ClientError) -> End {
    let why = match e {
        ClientError::Closed => "the server closed the connection".to_owned(),
        other => other.to_string(),
    };
    (
        Exit::ConnectionLost,
        Some(format!("chatmaster-client: connection lost: {why}")),
    )
}
