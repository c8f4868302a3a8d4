//! The command table: every command a logged-in client may send, its
//! parameters, and the [`Hub`] operation it maps to.
//!
//! Adding a command is adding a row to [`COMMANDS`] and a parameter type;
//! the connection code never changes. Parameters are parsed strictly
//! (unknown keys are errors) once the command is known.
//!
//! Most commands are chat-state operations done at once under the hub's
//! lock. `direct` and `random` send a message, so like a chat message they
//! get a place in the store's queue before they run; a direct message to a
//! name that is not online comes back for the connection to ask the store
//! whether it is an account's. The ones that need the store or a password hash (`join` and
//! `group`, which may register a channel, `rename`, `register`, `password`) are marked
//! accounts commands: the connection runs them asynchronously through
//! [`crate::server::accounts`], off the async workers.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::server::chat::{
    fts_expression, timestamp_now, ChatError, HistoryParams, Hub, OfflineDirect, Persist,
    SearchParams, UserId,
};
use crate::server::chat::{Party, Place};
use crate::server::journal::Slot;
use crate::store::{
    conversation_key, Change, DirectScope, Page, SearchQuery, StoreError, StoredMessage,
};
use crate::wire::protocol::{
    fold_name, validate_message, validate_name, Command, Notification, ServerPackage,
};

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
    /// What runs it.
    handler: Handler,
}

/// A chat-state operation: runs the command for a user and returns what
/// must be written to the store before it is acknowledged.
type ChatFn = fn(&Hub, UserId, Option<serde_json::Value>) -> Result<Vec<Persist>, Outcome>;

/// A command that sends a message (`direct`, `random`): it gets a place in
/// the store's queue first, as a chat message does, and may hand a direct
/// message to an offline name back for the store to be asked about.
type SendFn =
    fn(&Hub, UserId, Option<serde_json::Value>, Slot) -> Result<Option<OfflineDirect>, Outcome>;

/// What runs a command.
enum Handler {
    /// A chat-state operation, done at once.
    Chat(ChatFn),
    /// An operation on accounts or the store, run by the connection
    /// through [`crate::server::accounts`].
    Accounts,
    /// A read or change of stored messages (history, search, edits), run
    /// by the connection through [`run_memory`].
    Memory,
    /// A message to store, like a chat message (see [`SendFn`]).
    Send(SendFn),
    /// A chat-state change, done at once by a node alone; in a cluster
    /// it goes through the log and every node runs it
    /// ([`crate::cluster::replica`]).
    Change(ChatFn),
}

/// What [`dispatch`] did.
#[derive(Debug)]
pub enum Dispatched {
    /// The command ran; these store steps remain.
    Done(Vec<Persist>),
    /// The command is an accounts command for the caller to run.
    Accounts {
        /// Its canonical name.
        command: &'static str,
        /// Its parameters, not yet parsed.
        parameters: Option<serde_json::Value>,
    },
    /// The command reads or changes stored messages: the caller runs it
    /// with [`run_memory`].
    Memory {
        /// Its canonical name.
        command: &'static str,
        /// Its parameters, not yet parsed.
        parameters: Option<serde_json::Value>,
    },
    /// A direct message to a name that is not online: the caller asks the
    /// store whether it is an account's, then calls
    /// [`Hub::direct_offline`].
    Offline(OfflineDirect),
    /// A change for the cluster's log: the caller proposes it and waits
    /// for its outcome ([`crate::cluster::replica::Cluster::propose`]).
    Cluster {
        /// The command's canonical name.
        command: &'static str,
        /// The event.
        event: crate::cluster::replica::Event,
    },
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
pub(crate) struct ChannelParams {
    /// Channel name.
    pub(crate) channel: String,
}

/// `{"password": ...}`. No `Debug`, as for every password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterParams {
    /// The new account's password.
    pub(crate) password: String,
}

/// `{"old": ..., "new": ...}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordParams {
    /// The current password.
    pub(crate) old: String,
    /// The password from now on.
    pub(crate) new: String,
}

/// `{"username": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsernameParams {
    /// User name.
    pub(crate) username: String,
}

/// `{"username": ..., "password": ...}`, password optional. No `Debug`:
/// a password must never reach a log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginParams {
    /// User name.
    pub(crate) username: String,
    /// The account's password, for a registered name.
    #[serde(default)]
    pub(crate) password: Option<String>,
}

/// `{"id": ..., "message": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditParams {
    /// Which message.
    id: i64,
    /// Its new text.
    message: String,
}

/// `{"id": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdParams {
    /// Which message.
    id: i64,
}

/// `{"channel": ..., "id": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkReadParams {
    /// Which registered channel.
    channel: String,
    /// The last message id seen there.
    id: i64,
}

/// `{"channel": ..., "recipients": [...], "message": ...}`, message optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupParams {
    /// The new channel's name.
    pub(crate) channel: String,
    /// Who to invite.
    pub(crate) recipients: Vec<String>,
    /// The group's first message.
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// `{"username": ..., "reason": ..., "channel": ...}`, the last two optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickParams {
    /// Who.
    username: String,
    /// Why, shown to them.
    #[serde(default)]
    reason: Option<String>,
    /// Which channel, when not the sender's own.
    #[serde(default)]
    channel: Option<String>,
}

/// `{"username": ..., "channel": ...}`, channel optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetParams {
    /// Who.
    username: String,
    /// Which channel, when not the sender's own.
    #[serde(default)]
    channel: Option<String>,
}

/// `{"channel": ...}`, channel optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaybeChannelParams {
    /// Which channel, when not the sender's own.
    #[serde(default)]
    channel: Option<String>,
}

/// `{"topic": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicParams {
    /// The topic; empty clears it.
    topic: String,
}

/// `{"username": ..., "message": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectParams {
    /// The recipient.
    username: String,
    /// The text (may be empty with attachments).
    message: String,
    /// Image and video links, checked by the hub (errors name the field).
    #[serde(default)]
    attachments: Option<serde_json::Value>,
}

/// `{"message": ...}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageParams {
    /// The text.
    message: String,
}

/// `{"message": ...}`, optional (absent, `null` or empty clears).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AwayParams {
    /// The away text.
    #[serde(default)]
    message: Option<String>,
}

/// `{"channel": ..., "after": ...}`, both optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhoParams {
    /// The channel whose members to list; everybody online when absent.
    #[serde(default)]
    channel: Option<String>,
    /// List only the names sorting after this one (the next page).
    #[serde(default)]
    after: Option<String>,
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
        parameters: "{\"username\": NAME, \"password\": TEXT (registered names)}",
        summary: "log in (only before a session exists; afterwards use rename)",
        handler: Handler::Chat(|hub, id, _| {
            let name = hub.username(id).unwrap_or_default();
            Err(Outcome::Refused(format!(
                "You are already logged in as {name}; use rename to change your name."
            )))
        }),
    },
    CommandSpec {
        name: "join",
        aliases: &[],
        parameters: "{\"channel\": NAME}",
        summary: "join a channel, creating it if it does not exist",
        handler: Handler::Accounts,
    },
    CommandSpec {
        name: "leave",
        aliases: &[],
        parameters: "none",
        summary: "go back to general",
        handler: Handler::Change(|hub, id, p| {
            let NoParams {} = params("leave", p)?;
            hub.leave(id)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "rename",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "change your name",
        handler: Handler::Accounts,
    },
    CommandSpec {
        name: "private",
        aliases: &[],
        parameters: "none",
        summary: "make your channel private (owner only)",
        handler: Handler::Change(|hub, id, p| {
            let NoParams {} = params("private", p)?;
            Ok(hub.set_private(id, true)?)
        }),
    },
    CommandSpec {
        name: "public",
        aliases: &[],
        parameters: "none",
        summary: "make your channel public (owner only)",
        handler: Handler::Change(|hub, id, p| {
            let NoParams {} = params("public", p)?;
            Ok(hub.set_private(id, false)?)
        }),
    },
    CommandSpec {
        name: "invite",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "invite a user to your channel",
        handler: Handler::Change(|hub, id, p| {
            let p: UsernameParams = params("invite", p)?;
            hub.invite(id, &p.username)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "channels",
        aliases: &["channel_list"],
        parameters: "none",
        summary: "list public channels",
        handler: Handler::Chat(|hub, id, p| {
            let NoParams {} = params("channels", p)?;
            hub.channel_list(id)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "ping",
        aliases: &[],
        parameters: "{\"token\": TEXT} (optional)",
        summary: "get a pong once everything sent before has been handled",
        handler: Handler::Chat(|hub, id, p| {
            hub.ping(id, ping_token(p)?)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "history",
        aliases: &[],
        parameters: "{\"channel\": NAME, \"before\": ID, \"after\": ID, \"limit\": 1..=100} (before, after and limit optional)",
        summary: "read a page of a channel's stored messages",
        handler: Handler::Memory,
    },
    CommandSpec {
        name: "search",
        aliases: &[],
        parameters: "{\"query\": TEXT, \"channel\": NAME, \"username\": NAME, \"page\": N, \"rows\": 1..=100} (all but query optional)",
        summary: "search the messages you may read",
        handler: Handler::Memory,
    },
    CommandSpec {
        name: "edit",
        aliases: &[],
        parameters: "{\"id\": ID, \"message\": TEXT}",
        summary: "replace the text of a message of yours",
        handler: Handler::Memory,
    },
    CommandSpec {
        name: "delete",
        aliases: &[],
        parameters: "{\"id\": ID}",
        summary: "delete a message (yours, or in a channel you own)",
        handler: Handler::Memory,
    },
    CommandSpec {
        name: "mark_read",
        aliases: &[],
        parameters: "{\"channel\": NAME, \"id\": ID}",
        summary: "count a registered channel's messages up to an id as seen by your account",
        handler: Handler::Memory,
    },
    CommandSpec {
        name: "register",
        aliases: &[],
        parameters: "{\"password\": TEXT}",
        summary: "register your current name as an account with this password",
        handler: Handler::Accounts,
    },
    CommandSpec {
        name: "password",
        aliases: &[],
        parameters: "{\"old\": TEXT, \"new\": TEXT}",
        summary: "change your account's password",
        handler: Handler::Accounts,
    },
    CommandSpec {
        name: "group",
        aliases: &[],
        parameters:
            "{\"channel\": NAME, \"recipients\": [NAME, ...], \"message\": TEXT (optional)}",
        summary: "create a private channel, move in and invite the recipients",
        handler: Handler::Accounts,
    },
    CommandSpec {
        name: "kick",
        aliases: &[],
        parameters:
            "{\"username\": NAME, \"reason\": TEXT (optional), \"channel\": NAME (optional)}",
        summary: "put a member out of your channel (owner or operator)",
        handler: Handler::Change(|hub, id, p| {
            let p: KickParams = params("kick", p)?;
            hub.kick(id, &p.username, p.reason.as_deref(), p.channel.as_deref())?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "ban",
        aliases: &[],
        parameters: "{\"username\": NAME, \"channel\": NAME (optional)}",
        summary: "keep a user out of your channel, kicking them if there (owner or operator)",
        handler: Handler::Change(|hub, id, p| {
            let p: TargetParams = params("ban", p)?;
            Ok(hub.ban(id, &p.username, p.channel.as_deref())?)
        }),
    },
    CommandSpec {
        name: "unban",
        aliases: &[],
        parameters: "{\"username\": NAME, \"channel\": NAME (optional)}",
        summary: "lift a ban (owner or operator)",
        handler: Handler::Change(|hub, id, p| {
            let p: TargetParams = params("unban", p)?;
            Ok(hub.unban(id, &p.username, p.channel.as_deref())?)
        }),
    },
    CommandSpec {
        name: "bans",
        aliases: &[],
        parameters: "{\"channel\": NAME} (optional)",
        summary: "list the bans of your channel (owner or operator)",
        handler: Handler::Chat(|hub, id, p| {
            let p: MaybeChannelParams = params("bans", p)?;
            hub.bans(id, p.channel.as_deref())?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "transfer",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "give your channel to another member (owner)",
        handler: Handler::Change(|hub, id, p| {
            let p: UsernameParams = params("transfer", p)?;
            Ok(hub.transfer(id, &p.username)?)
        }),
    },
    CommandSpec {
        name: "topic",
        aliases: &[],
        parameters: "{\"topic\": TEXT} (empty clears)",
        summary: "set your channel's topic (owner or operator)",
        handler: Handler::Change(|hub, id, p| {
            let p: TopicParams = params("topic", p)?;
            Ok(hub.set_topic(id, &p.topic)?)
        }),
    },
    CommandSpec {
        name: "delete_channel",
        aliases: &[],
        parameters: "{\"channel\": NAME} (optional)",
        summary: "delete your channel, moving everyone to general (owner or operator)",
        handler: Handler::Change(|hub, id, p| {
            let p: MaybeChannelParams = params("delete_channel", p)?;
            Ok(hub.delete_channel(id, p.channel.as_deref())?)
        }),
    },
    CommandSpec {
        name: "notice",
        aliases: &[],
        parameters: "{\"message\": TEXT}",
        summary: "send a notice to everybody online (operators)",
        handler: Handler::Change(|hub, id, p| {
            let p: MessageParams = params("notice", p)?;
            hub.notice(id, &p.message)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "direct",
        aliases: &[],
        parameters: "{\"username\": NAME, \"message\": TEXT}",
        summary: "send a direct message to one user (kept for an offline account)",
        handler: Handler::Send(|hub, id, p, slot| {
            let p: DirectParams = params("direct", p)?;
            Ok(hub.direct_with(id, &p.username, p.message, p.attachments, slot)?)
        }),
    },
    CommandSpec {
        name: "random",
        aliases: &[],
        parameters: "{\"message\": TEXT}",
        summary: "send a direct message to a user picked at random",
        handler: Handler::Send(|hub, id, p, slot| {
            let p: MessageParams = params("random", p)?;
            hub.random(id, p.message, slot)?;
            Ok(None)
        }),
    },
    CommandSpec {
        name: "who",
        aliases: &[],
        parameters: "{\"channel\": NAME, \"after\": NAME} (both optional)",
        summary: "list the users online, or a channel's members",
        handler: Handler::Chat(|hub, id, p| {
            let p: WhoParams = params("who", p)?;
            hub.who(id, p.channel.as_deref(), p.after.as_deref())?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "whois",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "what is known of a user",
        handler: Handler::Chat(|hub, id, p| {
            let p: UsernameParams = params("whois", p)?;
            hub.whois(id, &p.username)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "away",
        aliases: &[],
        parameters: "{\"message\": TEXT} (absent or empty: back)",
        summary: "set or clear your away text",
        handler: Handler::Change(|hub, id, p| {
            let p: AwayParams = params("away", p)?;
            hub.away(id, p.message)?;
            Ok(Vec::new())
        }),
    },
    CommandSpec {
        name: "ignore",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "stop receiving a user's messages",
        handler: Handler::Change(|hub, id, p| {
            let p: UsernameParams = params("ignore", p)?;
            Ok(hub.ignore(id, &p.username)?)
        }),
    },
    CommandSpec {
        name: "unignore",
        aliases: &[],
        parameters: "{\"username\": NAME}",
        summary: "receive an ignored user's messages again",
        handler: Handler::Change(|hub, id, p| {
            let p: UsernameParams = params("unignore", p)?;
            Ok(hub.unignore(id, &p.username)?)
        }),
    },
    CommandSpec {
        name: "ignores",
        aliases: &[],
        parameters: "none",
        summary: "list the users you ignore",
        handler: Handler::Chat(|hub, id, p| {
            let NoParams {} = params("ignores", p)?;
            hub.ignores(id)?;
            Ok(Vec::new())
        }),
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

/// Whether a command sends a message and so needs a place in the store's
/// queue before it runs (`direct`, `random`).
pub fn needs_slot(command: &Command) -> bool {
    find(&command.command).is_some_and(|c| matches!(c.handler, Handler::Send(_)))
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

/// Runs a logged-in user's chat command, or hands an accounts command back.
/// `slot` is the store queue place a [`needs_slot`] command was given.
pub fn dispatch(
    hub: &Hub,
    id: UserId,
    command: Command,
    slot: Option<Slot>,
) -> Result<Dispatched, CommandError> {
    let Some(spec) = find(&command.command) else {
        let known: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        return Err(CommandError::Protocol(format!(
            "unknown command `{}`; known commands: {}",
            command.command.escape_default(),
            known.join(", ")
        )));
    };
    if spec.name != "ping" {
        // A ping is a keep-alive: it does not make anybody less idle.
        hub.touch(id);
    }
    let run = match spec.handler {
        Handler::Chat(run) => run,
        Handler::Change(run) => match hub.cluster() {
            None => run,
            Some(_) => {
                // Only the origin reads the account index: the event
                // carries what it found, so every node bans the same.
                let account_hint = (spec.name == "ban")
                    .then(|| {
                        command
                            .parameters
                            .as_ref()
                            .and_then(|p| p.get("username"))
                            .and_then(|u| u.as_str())
                            .and_then(|u| hub.accounts().index().account_id(&fold_name(u)))
                    })
                    .flatten();
                return Ok(Dispatched::Cluster {
                    command: spec.name,
                    event: crate::cluster::replica::Event::Command {
                        user: id,
                        command: spec.name.to_owned(),
                        parameters: command.parameters,
                        account_hint,
                    },
                });
            }
        },
        Handler::Accounts => {
            return Ok(Dispatched::Accounts {
                command: spec.name,
                parameters: command.parameters,
            })
        }
        Handler::Memory => {
            return Ok(Dispatched::Memory {
                command: spec.name,
                parameters: command.parameters,
            })
        }
        Handler::Send(send) => {
            let Some(slot) = slot else {
                return Err(CommandError::Failed {
                    command: "server",
                    message: "Messages cannot be stored right now; nothing was sent.".into(),
                });
            };
            return match send(hub, id, command.parameters, slot) {
                Ok(None) => Ok(Dispatched::Done(Vec::new())),
                Ok(Some(offline)) => Ok(Dispatched::Offline(offline)),
                Err(o) => Err(failure(spec.name, o)),
            };
        }
    };
    run(hub, id, command.parameters)
        .map(Dispatched::Done)
        .map_err(|o| failure(spec.name, o))
}

/// Runs a `Handler::Change` command applied from the cluster's log:
/// the same code a node alone runs, `ban` with the account the origin
/// found for the name (`account_hint`).
pub fn apply_change(
    hub: &Hub,
    id: UserId,
    command: &'static str,
    parameters: Option<serde_json::Value>,
    account_hint: Option<crate::store::AccountId>,
) -> Result<Vec<Persist>, CommandError> {
    let Some(spec) = find(command) else {
        return Err(CommandError::Protocol(format!(
            "unknown command `{command}`"
        )));
    };
    if spec.name == "ban" {
        let p: TargetParams = params("ban", parameters).map_err(|o| failure("ban", o))?;
        return hub
            .ban_as(id, &p.username, p.channel.as_deref(), account_hint)
            .map_err(|e| failure("ban", e.into()));
    }
    match spec.handler {
        Handler::Change(run) => run(hub, id, parameters).map_err(|o| failure(spec.name, o)),
        _ => Err(CommandError::Protocol(format!(
            "`{command}` is not a replicated command"
        ))),
    }
}

/// A store failure as the user sees it.
fn store_failed(command: &'static str, e: &StoreError) -> CommandError {
    tracing::error!(error = %e, command, "store operation failed");
    CommandError::Failed {
        command,
        message: format!("The server's database failed ({e}); try again later."),
    }
}

/// A number parameter within `1..=max`, or `default` when absent.
fn within(
    command: &'static str,
    name: &str,
    value: Option<i64>,
    default: i64,
    max: i64,
) -> Result<usize, CommandError> {
    match value.unwrap_or(default) {
        n if (1..=max).contains(&n) => Ok(usize::try_from(n).unwrap_or(1)),
        n => Err(CommandError::Failed {
            command,
            message: format!("{name} is from 1 to {max} (not {n})."),
        }),
    }
}

/// Where `m` was said, as its change notifications name it: its channel
/// (as named now), or its recipient for a direct message.
fn place_of(hub: &Hub, m: &StoredMessage) -> (Option<String>, Option<String>) {
    match &m.direct {
        Some(d) => (None, Some(d.recipient.clone())),
        None => (
            Some(
                hub.channel_name(&m.channel_key)
                    .unwrap_or_else(|| m.channel.clone()),
            ),
            None,
        ),
    }
}

/// Tells those who could see `m` about a change to it: its channel's
/// members, or the two parties of a direct message; and `id`, who made it.
fn announce(hub: &Hub, id: UserId, m: &StoredMessage, note: &ServerPackage) {
    if m.direct.is_some() {
        hub.announce_direct_change(id, m, note);
    } else {
        hub.announce_change(id, &m.channel_key, note);
    }
}

/// The asker and the other party of the direct conversation of `id` with
/// the user named `with`: online, or an account (looked up in the store),
/// or else a guest of that name. Refused for oneself and bad names.
async fn conversation(hub: &Hub, id: UserId, with: &str) -> Result<(Party, Party), String> {
    let me = hub.party(id).map_err(|e| e.0)?;
    validate_name(with, hub.config().max_name_chars)?;
    let key = fold_name(with);
    if key == me.key {
        return Err("Direct messages are between two people: name somebody else.".to_owned());
    }
    if let Some(other) = hub.online_party(with) {
        return Ok((me, other));
    }
    let mut other = Party {
        account: None,
        key: key.clone(),
        name: with.to_owned(),
        from: 0,
    };
    if hub.accounts().index().contains_key(&key) {
        let found = hub
            .read(move |s| s.account_by_key(&key))
            .await
            .map_err(|e| format!("The server's database failed ({e}); try again later."))?;
        if let Some(account) = found {
            other.account = Some(account.id);
            other.name = account.name;
        }
    }
    Ok((me, other))
}

/// Runs a command the table marks `Handler::Memory`: `history`,
/// `search`, `edit`, `delete`, `mark_read`. Its reads go to the store's
/// read connections through [`Hub::read`] and its writes through the
/// writer's queue ([`crate::server::journal::Journal::change`]), never
/// under the chat lock; the answers go out through the user's queue.
pub async fn run_memory(
    hub: &Hub,
    id: UserId,
    command: &'static str,
    parameters: Option<serde_json::Value>,
) -> Result<(), CommandError> {
    let refused = |e: ChatError| CommandError::Failed {
        command,
        message: e.0,
    };
    let refuse = |message: String| CommandError::Failed { command, message };
    match command {
        "history" => {
            let p: HistoryParams =
                parse_params(command, parameters).map_err(CommandError::Protocol)?;
            let limit = within(
                command,
                "limit",
                p.limit,
                crate::server::chat::DEFAULT_HISTORY_LIMIT,
                crate::server::chat::MAX_HISTORY_LIMIT,
            )?;
            let page = match (p.before, p.after) {
                (Some(_), Some(_)) => {
                    return Err(refuse("Give before or after, not both.".to_owned()))
                }
                (Some(before), None) => Page::Before(before),
                (None, Some(after)) => Page::After(after),
                (None, None) => Page::Latest,
            };
            let forward = matches!(page, Page::After(_));
            match (p.channel, p.with) {
                (Some(channel), None) => {
                    let (key, name) = hub.readable_channel(id, &channel).map_err(refused)?;
                    let found = hub
                        .read(move |s| s.history(&key, page, limit))
                        .await
                        .map_err(|e| store_failed(command, &e))?;
                    hub.send_history(id, Place::Channel(name), found, forward);
                }
                (None, Some(with)) => {
                    let (me, other) = conversation(hub, id, &with).await.map_err(refuse)?;
                    let key = conversation_key(me.participant(), other.participant());
                    let from = me.from;
                    let found = hub
                        .read(move |s| s.direct_history(&key, from, page, limit))
                        .await
                        .map_err(|e| store_failed(command, &e))?;
                    hub.send_history(id, Place::With(other.name), found, forward);
                }
                _ => {
                    return Err(refuse(
                        "Give a channel, or with: a user whose direct messages with you to read."
                            .to_owned(),
                    ))
                }
            }
            Ok(())
        }
        "search" => {
            let p: SearchParams =
                parse_params(command, parameters).map_err(CommandError::Protocol)?;
            let rows = within(
                command,
                "rows",
                p.rows,
                crate::server::chat::DEFAULT_SEARCH_ROWS,
                crate::server::chat::MAX_SEARCH_ROWS,
            )?;
            let page = within(command, "page", p.page, 1, i64::MAX)?;
            let cap = hub.config().count_cap;
            let offset = (page - 1).saturating_mul(rows);
            if offset >= cap {
                return Err(refuse(format!(
                    "Search pages reach the first {cap} matches; narrow the search instead."
                )));
            }
            let expression = fts_expression(&p.query).map_err(refuse)?;
            let me = hub.party(id).map_err(refused)?;
            let (scope, direct) = match (p.channel.as_deref(), p.with.as_deref()) {
                (Some(_), Some(_)) => {
                    return Err(refuse("Give channel or with, not both.".to_owned()))
                }
                (Some(channel), None) => (
                    Some(hub.search_scope(id, Some(channel)).map_err(refused)?),
                    None,
                ),
                (None, Some(with)) => {
                    let (me, other) = conversation(hub, id, with).await.map_err(refuse)?;
                    let key = conversation_key(me.participant(), other.participant());
                    (None, Some(DirectScope::Conversation(key)))
                }
                // Everything the asker may read: channels and its own
                // direct messages.
                (None, None) => (
                    Some(hub.search_scope(id, None).map_err(refused)?),
                    Some(DirectScope::Party(me.identity())),
                ),
            };
            let query = SearchQuery {
                expression,
                scope,
                direct,
                direct_from: me.from,
                sender_key: p.username.as_deref().map(fold_name),
                offset,
                limit: rows,
                count_cap: cap,
            };
            // Every message stored so far is searchable: the journal's
            // change comes after every message queued before it, and the
            // read waits for the index to reach what is committed (an
            // in-memory store indexes in that change, a file store on a
            // thread of its own). A store that is behind (a stalled disk)
            // delays the search at most `search_index` twice, and then the
            // newest may be missing.
            let wait = hub.config().search_index;
            let indexed = tokio::time::timeout(wait, hub.journal().clone().change(Change::Index));
            if let Ok(Err(e)) = indexed.await {
                return Err(store_failed(command, &e));
            }
            let hits = match hub
                .read(move |s| {
                    s.catch_up_search(wait)?;
                    s.search(&query)
                })
                .await
            {
                Ok(hits) => hits,
                Err(StoreError::Query(why)) => {
                    return Err(refuse(format!("The search cannot be run: {why}.")))
                }
                Err(e) => return Err(store_failed(command, &e)),
            };
            hub.send_search(id, p.query, page, rows, hits);
            Ok(())
        }
        "edit" => {
            let p: EditParams =
                parse_params(command, parameters).map_err(CommandError::Protocol)?;
            let message_id = p.id;
            let found = hub
                .read(move |s| s.message(message_id))
                .await
                .map_err(|e| store_failed(command, &e))?;
            let Some(m) = found else {
                return Err(refuse(format!("There is no message {message_id}.")));
            };
            hub.check_edit(id, &m).map_err(refused)?;
            // Text may be empty only beside attachments, as when sent.
            if !(p.message.is_empty() && m.attachments.is_some()) {
                validate_message(&p.message, hub.max_message_bytes()).map_err(refuse)?;
            }
            let edited = timestamp_now();
            let change = Change::Edit {
                id: message_id,
                text: p.message.clone(),
                edited: edited.clone(),
            };
            match hub.journal().clone().change(change).await {
                Ok(0) => return Err(refuse(format!("There is no message {message_id}."))),
                Ok(_) => {}
                Err(e) => return Err(store_failed(command, &e)),
            }
            let (channel, to) = place_of(hub, &m);
            let note = ServerPackage::notification(Notification::MessageEdited {
                id: message_id,
                channel,
                to,
                message: p.message,
                edited,
            });
            announce(hub, id, &m, &note);
            Ok(())
        }
        "delete" => {
            let p: IdParams = parse_params(command, parameters).map_err(CommandError::Protocol)?;
            let message_id = p.id;
            let found = hub
                .read(move |s| s.message(message_id))
                .await
                .map_err(|e| store_failed(command, &e))?;
            let Some(m) = found else {
                return Err(refuse(format!("There is no message {message_id}.")));
            };
            let by = hub.check_delete(id, &m).map_err(refused)?;
            match hub
                .journal()
                .clone()
                .change(Change::Delete(message_id))
                .await
            {
                Ok(0) => return Err(refuse(format!("There is no message {message_id}."))),
                Ok(_) => {}
                Err(e) => return Err(store_failed(command, &e)),
            }
            let (channel, to) = place_of(hub, &m);
            let note = ServerPackage::notification(Notification::MessageDeleted {
                id: message_id,
                channel,
                to,
                by,
            });
            announce(hub, id, &m, &note);
            Ok(())
        }
        "mark_read" => {
            let p: MarkReadParams =
                parse_params(command, parameters).map_err(CommandError::Protocol)?;
            let (change, channel, last_id) =
                hub.read_mark(id, &p.channel, p.id).map_err(refused)?;
            hub.journal()
                .clone()
                .change(change)
                .await
                .map_err(|e| store_failed(command, &e))?;
            hub.reply(
                id,
                &ServerPackage::notification(Notification::ReadMarked {
                    channel,
                    id: last_id,
                }),
            );
            Ok(())
        }
        // The table and this match are kept in step by the unit test of
        // the table; reaching here would be a bug.
        other => Err(CommandError::Protocol(format!(
            "`{other}` is not a memory command"
        ))),
    }
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
    fn accounts_commands_are_the_ones_the_accounts_service_runs() {
        let accounts: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| matches!(c.handler, Handler::Accounts))
            .map(|c| c.name)
            .collect();
        assert_eq!(
            accounts,
            ["join", "rename", "register", "password", "group"]
        );
        let memory: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| matches!(c.handler, Handler::Memory))
            .map(|c| c.name)
            .collect();
        assert_eq!(memory, ["history", "search", "edit", "delete", "mark_read"]);
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
