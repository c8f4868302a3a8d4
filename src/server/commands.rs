//! The command table: every command a logged-in client may send, its
//! parameters, and the [`Hub`] operation it maps to.
//!
//! Adding a command is adding a row to [`COMMANDS`] and a parameter type;
//! the connection code never changes. Parameters are parsed strictly
//! (unknown keys are errors) once the command is known.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::server::chat::{ChatError, Hub, UserId};
use crate::wire::protocol::Command;

/// Longest `ping` token echoed back, in bytes.
pub const MAX_PING_TOKEN_BYTES: usize = 64;

/// Why a command failed, which decides the `error_type` of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The package was malformed (unknown command, bad parameters): `protocol`.
    Protocol(String),
    /// The command was understood but cannot be done: error type is the command's name.
    Failed {
        /// The command's canonical name.
        command: &'static str,
        /// Why.
        message: String,
    },
}

impl CommandError {
    /// The `error_type` and `message` of the error package for this failure.
    pub fn to_error(&self) -> (&str, &str) {
        match self {
            CommandError::Protocol(m) => ("protocol", m),
            CommandError::Failed { command, message } => (command, message),
        }
    }
}

/// One row of the command table.
pub struct CommandSpec {
    /// Canonical name, also the `error_type` of its failures.
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// Parameter summary for documentation and error messages.
    pub parameters: &'static str,
    /// What it does, in one line.
    pub summary: &'static str,
    /// Runs the command for `user`.
    run: fn(&Hub, UserId, Option<serde_json::Value>) -> Result<(), Outcome>,
}

/// A handler's failure before the table attaches the command name.
enum Outcome {
    /// Malformed parameters.
    Protocol(String),
    /// The operation was refused.
    Refused(String),
}

impl From<ChatError> for Outcome {
    fn from(e: ChatError) -> Self {
        Outcome::Refused(e.0)
    }
}

/// No parameters: only absent, `null` or `{}` is accepted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `{"channel": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelParams {
    /// Channel name.
    channel: String,
}

/// `{"username": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsernameParams {
    /// User name.
    pub(crate) username: String,
}

/// `{"token": ...}`, token optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PingParams {
    /// Echoed back in `pong`.
    #[serde(default)]
    token: Option<String>,
}

/// Parses a command's parameters; absent and `null` read as `{}`.
pub(crate) fn parse_params<T: DeserializeOwned>(
    command: &str,
    parameters: Option<serde_json::Value>,
) -> Result<T, String> {
    let value = match parameters {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(v) => v,
    };
    serde_json::from_value(value).map_err(|e| format!("bad parameters for `{command}`: {e}"))
}

fn params<T: DeserializeOwned>(
    command: &str,
    parameters: Option<serde_json::Value>,
) -> Result<T, Outcome> {
    parse_params(command, parameters).map_err(Outcome::Protocol)
}

/// Every command after login. `login` itself is handled by the connection
/// before a user exists; its row here refuses a second login.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "login",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "log in (only before a session exists; afterwards use rename)",
        run: |hub, id, _| {
            let name = hub.username(id).unwrap_or_default();
            Err(Outcome::Refused(format!(
                "You are already logged in as {name}; use rename to change your name."
            )))
        },
    },
    CommandSpec {
        name: "join",
        aliases: &[],
        parameters: "{\"channel\": NAME}",
        summary: "join a channel, creating it if it does not exist",
        run: |hub, id, p| {
            let p: ChannelParams = params("join", p)?;
            Ok(hub.join(id, &p.channel)?)
        },
    },
    CommandSpec {
        name: "leave",
        aliases: &[],
        parameters: "none",
        summary: "go back to general",
        run: |hub, id, p| {
            let NoParams {} = params("leave", p)?;
            Ok(hub.leave(id)?)
        },
    },
    CommandSpec {
        name: "rename",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "change your name",
        run: |hub, id, p| {
            let p: UsernameParams = params("rename", p)?;
            hub.rename(id, &p.username)?;
            // Runs inside the connection's span: its later lines carry the new name.
            tracing::Span::current().record("user", p.username.as_str());
            Ok(())
        },
    },
    CommandSpec {
        name: "private",
        aliases: &[],
        parameters: "none",
        summary: "make your channel private (owner only)",
        run: |hub, id, p| {
            let NoParams {} = params("private", p)?;
            Ok(hub.set_private(id, true)?)
        },
    },
    CommandSpec {
        name: "public",
        aliases: &[],
        parameters: "none",
        summary: "make your channel public (owner only)",
        run: |hub, id, p| {
            let NoParams {} = params("public", p)?;
            Ok(hub.set_private(id, false)?)
        },
    },
    CommandSpec {
        name: "invite",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "invite a user to your channel",
        run: |hub, id, p| {
            let p: UsernameParams = params("invite", p)?;
            Ok(hub.invite(id, &p.username)?)
        },
    },
    CommandSpec {
        name: "channels",
        aliases: &["channel_list"],
        parameters: "none",
        summary: "list public channels",
        run: |hub, id, p| {
            let NoParams {} = params("channels", p)?;
            Ok(hub.channel_list(id)?)
        },
    },
    CommandSpec {
        name: "ping",
        aliases: &[],
        parameters: "{\"token\": TEXT} (optional)",
        summary: "get a pong once everything sent before has been handled",
        run: |hub, id, p| Ok(hub.ping(id, ping_token(p)?)?),
    },
];

/// The token of a `ping`'s parameters, checked.
fn ping_token(parameters: Option<serde_json::Value>) -> Result<Option<String>, Outcome> {
    let p: PingParams = params("ping", parameters)?;
    if p.token
        .as_ref()
        .is_some_and(|t| t.len() > MAX_PING_TOKEN_BYTES)
    {
        return Err(Outcome::Refused(format!(
            "A ping token is at most {MAX_PING_TOKEN_BYTES} bytes."
        )));
    }
    Ok(p.token)
}

/// Whether a command must wait for the store's writer before it runs:
/// only `ping`, whose pong must follow the acknowledgements of the
/// messages sent before it.
pub fn waits_for_store(command: &Command) -> bool {
    find(&command.command).is_some_and(|c| c.name == "ping")
}

fn failure(command: &'static str, outcome: Outcome) -> CommandError {
    match outcome {
        Outcome::Protocol(m) => CommandError::Protocol(m),
        Outcome::Refused(message) => CommandError::Failed { command, message },
    }
}

/// Finds a command by name or alias.
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// Runs a logged-in user's command.
pub fn dispatch(hub: &Hub, id: UserId, command: Command) -> Result<(), CommandError> {
    let Some(spec) = find(&command.command) else {
        let known: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        return Err(CommandError::Protocol(format!(
            "unknown command `{}`; known commands: {}",
            command.command.escape_default(),
            known.join(", ")
        )));
    };
    (spec.run)(hub, id, command.parameters).map_err(|o| failure(spec.name, o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_has_unique_names() {
        let mut all: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(find("channel_list").map(|c| c.name), Some("channels"));
        assert!(find("nope").is_none());
    }

    #[test]
    fn parameters_are_strict() {
        assert!(parse_params::<NoParams>("leave", None).is_ok());
        assert!(parse_params::<NoParams>("leave", Some(json!(null))).is_ok());
        assert!(parse_params::<NoParams>("leave", Some(json!({}))).is_ok());
        assert!(parse_params::<NoParams>("leave", Some(json!({"x": 1}))).is_err());
        assert!(parse_params::<ChannelParams>("join", Some(json!({}))).is_err());
        assert!(parse_params::<ChannelParams>("join", Some(json!({"channel": 3}))).is_err());
        assert!(parse_params::<ChannelParams>("join", Some(json!([1]))).is_err());
        let e = parse_params::<ChannelParams>("join", Some(json!({"channel": "a", "b": 1})))
            .err()
            .unwrap_or_default();
        assert!(e.contains("unknown field"), "{e}");
    }
}
