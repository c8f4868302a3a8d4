//! What a typed line means: chat text, a command for the server, or
//! something the client handles itself.
//!
//! Parsing is local and strict: an unknown `/command` or one with a
//! missing or extra argument is answered with its usage and sends nothing,
//! so a typo never turns into a chat message.

use crate::wire::protocol::{ClientPackage, Command, OutgoingMessage};

/// A command the server carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatCommand {
    /// `/join NAME`
    Join(String),
    /// `/leave`
    Leave,
    /// `/rename NAME`
    Rename(String),
    /// `/private`
    Private,
    /// `/public`
    Public,
    /// `/invite USER`
    Invite(String),
    /// `/channels`
    Channels,
    /// `/msg USER TEXT` (and `/reply TEXT`, once the session knows to whom)
    Direct {
        /// The recipient.
        to: String,
        /// The text.
        text: String,
    },
    /// `/random TEXT`
    Random(String),
    /// `/who [CHANNEL]`
    Who(Option<String>),
    /// `/whois USER`
    Whois(String),
    /// `/away [TEXT]`: without text, back.
    Away(Option<String>),
    /// `/ignore USER`
    Ignore(String),
    /// `/unignore USER`
    Unignore(String),
    /// `/ignores`
    Ignores,
    /// `/group NAME USER...`
    Group {
        /// The new channel.
        channel: String,
        /// Who to invite.
        recipients: Vec<String>,
    },
    /// `/kick USER [REASON]`
    Kick {
        /// Who.
        username: String,
        /// Why, if given.
        reason: Option<String>,
    },
    /// `/ban USER`
    Ban(String),
    /// `/unban USER`
    Unban(String),
    /// `/bans`
    Bans,
    /// `/transfer USER`
    Transfer(String),
    /// `/topic [TEXT]` (no text clears the topic)
    Topic(String),
    /// `/delete channel`: deletes the current channel.
    DeleteChannel,
    /// `/notice TEXT`
    Notice(String),
}

impl ChatCommand {
    /// The package that asks the server to do it.
    pub fn to_package(&self) -> ClientPackage {
        let (name, parameters) = match self {
            ChatCommand::Join(c) => ("join", Some(serde_json::json!({ "channel": c }))),
            ChatCommand::Leave => ("leave", None),
            ChatCommand::Rename(u) => ("rename", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Private => ("private", None),
            ChatCommand::Public => ("public", None),
            ChatCommand::Invite(u) => ("invite", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Channels => ("channels", None),
            ChatCommand::Direct { to, text } => (
                "direct",
                Some(serde_json::json!({ "username": to, "message": text })),
            ),
            ChatCommand::Random(text) => ("random", Some(serde_json::json!({ "message": text }))),
            ChatCommand::Who(None) => ("who", None),
            ChatCommand::Who(Some(c)) => ("who", Some(serde_json::json!({ "channel": c }))),
            ChatCommand::Whois(u) => ("whois", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Away(None) => ("away", None),
            ChatCommand::Away(Some(m)) => ("away", Some(serde_json::json!({ "message": m }))),
            ChatCommand::Ignore(u) => ("ignore", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Unignore(u) => ("unignore", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Ignores => ("ignores", None),
            ChatCommand::Group {
                channel,
                recipients,
            } => (
                "group",
                Some(serde_json::json!({ "channel": channel, "recipients": recipients })),
            ),
            ChatCommand::Kick { username, reason } => (
                "kick",
                Some(match reason {
                    Some(r) => serde_json::json!({ "username": username, "reason": r }),
                    None => serde_json::json!({ "username": username }),
                }),
            ),
            ChatCommand::Ban(u) => ("ban", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Unban(u) => ("unban", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Bans => ("bans", None),
            ChatCommand::Transfer(u) => ("transfer", Some(serde_json::json!({ "username": u }))),
            ChatCommand::Topic(t) => ("topic", Some(serde_json::json!({ "topic": t }))),
            ChatCommand::DeleteChannel => ("delete_channel", None),
            ChatCommand::Notice(t) => ("notice", Some(serde_json::json!({ "message": t }))),
        };
        ClientPackage::Command(Command::new(name, parameters))
    }

    /// Whether the answer can change the prompt (channel or name), so the
    /// next prompt should wait for it.
    pub fn changes_prompt(&self) -> bool {
        matches!(
            self,
            ChatCommand::Join(_)
                | ChatCommand::Leave
                | ChatCommand::Rename(_)
                | ChatCommand::Group { .. }
                | ChatCommand::DeleteChannel
        )
    }
}

/// What one input line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// An empty or blank line: nothing happens.
    Nothing,
    /// Chat text for the current channel.
    Message(String),
    /// A command for the server.
    Command(ChatCommand),
    /// `/help`: show the command list.
    Help,
    /// `/quit`: leave.
    Quit,
    /// `/register`: asks for a password (twice) and registers the name.
    Register,
    /// `/password`: asks for the current and a new password.
    Password,
    /// `/reply TEXT`: a direct message to whoever last wrote to us directly.
    Reply(String),
    /// A malformed command; the text says how to use it.
    Invalid(String),
}

impl Input {
    /// The package to send, if the input is for the server.
    pub fn to_package(&self) -> Option<ClientPackage> {
        match self {
            Input::Message(text) => Some(ClientPackage::Message(OutgoingMessage {
                message: text.clone(),
            })),
            Input::Command(c) => Some(c.to_package()),
            _ => None,
        }
    }
}

/// How many arguments a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// None.
    Zero,
    /// Exactly one word.
    One,
    /// One word, then optional free text (`/kick USER [REASON]`).
    OneThenText,
    /// Two words or more (`/group NAME USER...`).
    TwoOrMore,
    /// Free text, required (`/notice TEXT`).
    Text,
    /// Free text, optional (`/topic [TEXT]`).
    MaybeText,
    /// Nothing, or one word (`/delete channel`).
    MaybeOne,
    /// One word, then text, required (`/msg USER TEXT`).
    OneAndText,
}

/// One row of the command list: name, argument, description, arity.
struct Spec {
    /// Name without the slash.
    name: &'static str,
    /// Argument placeholder shown in usage, empty if none.
    arg: &'static str,
    /// One-line description for `/help`.
    about: &'static str,
    /// How many arguments it takes.
    arity: Arity,
}

/// Every command, in the order `/help` lists them.
const SPECS: &[Spec] = &[
    Spec {
        name: "join",
        arg: "NAME",
        about: "join channel NAME (created if it does not exist)",
        arity: Arity::One,
    },
    Spec {
        name: "leave",
        arg: "",
        about: "go back to general",
        arity: Arity::Zero,
    },
    Spec {
        name: "rename",
        arg: "NAME",
        about: "change your name to NAME",
        arity: Arity::One,
    },
    Spec {
        name: "private",
        arg: "",
        about: "make your channel private (owner only)",
        arity: Arity::Zero,
    },
    Spec {
        name: "public",
        arg: "",
        about: "make your channel public again (owner only)",
        arity: Arity::Zero,
    },
    Spec {
        name: "invite",
        arg: "USER",
        about: "invite USER to your channel",
        arity: Arity::One,
    },
    Spec {
        name: "channels",
        arg: "",
        about: "list the public channels",
        arity: Arity::Zero,
    },
    Spec {
        name: "msg",
        arg: "USER TEXT",
        about: "send TEXT to USER only (kept for them if they have an account and are away)",
        arity: Arity::OneAndText,
    },
    Spec {
        name: "reply",
        arg: "TEXT",
        about: "send TEXT to the last person who wrote to you directly",
        arity: Arity::Text,
    },
    Spec {
        name: "random",
        arg: "TEXT",
        about: "send TEXT to somebody online picked at random",
        arity: Arity::Text,
    },
    Spec {
        name: "who",
        arg: "[CHANNEL]",
        about: "list who is online, or who is in CHANNEL",
        arity: Arity::MaybeOne,
    },
    Spec {
        name: "whois",
        arg: "USER",
        about: "show what is known of USER",
        arity: Arity::One,
    },
    Spec {
        name: "away",
        arg: "[TEXT]",
        about: "mark yourself away with TEXT; without TEXT, back",
        arity: Arity::MaybeText,
    },
    Spec {
        name: "ignore",
        arg: "USER",
        about: "stop receiving USER's messages",
        arity: Arity::One,
    },
    Spec {
        name: "unignore",
        arg: "USER",
        about: "receive USER's messages again",
        arity: Arity::One,
    },
    Spec {
        name: "ignores",
        arg: "",
        about: "list the users you ignore",
        arity: Arity::Zero,
    },
    Spec {
        name: "group",
        arg: "NAME USER...",
        about: "create private channel NAME, move in and invite the USERs",
        arity: Arity::TwoOrMore,
    },
    Spec {
        name: "topic",
        arg: "[TEXT]",
        about: "set your channel's topic; no TEXT clears it (owner)",
        arity: Arity::MaybeText,
    },
    Spec {
        name: "kick",
        arg: "USER [REASON]",
        about: "put USER out of your channel, back to general (owner)",
        arity: Arity::OneThenText,
    },
    Spec {
        name: "ban",
        arg: "USER",
        about: "ban USER from your channel, kicking them if there (owner)",
        arity: Arity::One,
    },
    Spec {
        name: "unban",
        arg: "USER",
        about: "lift the ban on USER (owner)",
        arity: Arity::One,
    },
    Spec {
        name: "bans",
        arg: "",
        about: "list who is banned from your channel (owner)",
        arity: Arity::Zero,
    },
    Spec {
        name: "transfer",
        arg: "USER",
        about: "give your channel to USER, who must be in it (owner)",
        arity: Arity::One,
    },
    Spec {
        name: "delete",
        arg: "channel",
        about: "delete the channel you are in, moving everyone to general (owner)",
        arity: Arity::MaybeOne,
    },
    Spec {
        name: "notice",
        arg: "TEXT",
        about: "send TEXT to everybody online (server operators)",
        arity: Arity::Text,
    },
    Spec {
        name: "register",
        arg: "",
        about: "register your name as an account (asks for a password twice)",
        arity: Arity::Zero,
    },
    Spec {
        name: "password",
        arg: "",
        about: "change your account's password (asks for the old and the new)",
        arity: Arity::Zero,
    },
    Spec {
        name: "help",
        arg: "",
        about: "show this list",
        arity: Arity::Zero,
    },
    Spec {
        name: "quit",
        arg: "",
        about: "leave the chat (Ctrl-D does too)",
        arity: Arity::Zero,
    },
];

impl Spec {
    /// `/join NAME`
    fn usage(&self) -> String {
        if self.arg.is_empty() {
            format!("/{}", self.name)
        } else {
            format!("/{} {}", self.name, self.arg)
        }
    }
}

/// Every command name, without its slash, in `/help` order.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.name)
}

/// The `/help` text, one line per entry.
pub fn help_lines() -> Vec<String> {
    let width = SPECS.iter().map(|s| s.usage().len()).max().unwrap_or(0);
    let mut lines: Vec<String> = SPECS
        .iter()
        .map(|s| format!("{:<width$}  {}", s.usage(), s.about))
        .collect();
    lines.push(format!(
        "{:<width$}  {}",
        "//TEXT", "send TEXT starting with one '/'"
    ));
    lines.push(format!(
        "{:<width$}  {}",
        "TEXT", "any other line is a message"
    ));
    lines
}

/// Parses one line as typed (without its line ending).
pub fn parse_line(line: &str) -> Input {
    if line.trim().is_empty() {
        return Input::Nothing;
    }
    if let Some(escaped) = line.strip_prefix("//") {
        return Input::Message(format!("/{escaped}"));
    }
    let Some(command_line) = line.strip_prefix('/') else {
        return Input::Message(line.to_owned());
    };
    // The name must follow the slash directly: "/ join" is not /join.
    let (name, rest) = command_line
        .split_once(char::is_whitespace)
        .unwrap_or((command_line, ""));
    let name = name.to_lowercase();
    let args: Vec<&str> = rest.split_whitespace().collect();
    let Some(spec) = SPECS.iter().find(|s| s.name == name) else {
        let shown = if name.is_empty() {
            "/".to_owned()
        } else {
            format!("/{name}")
        };
        return Input::Invalid(format!(
            "unknown command {}; /help lists the commands, //TEXT sends TEXT starting with '/'",
            crate::client::ui::sanitize::sanitize(&shown)
        ));
    };
    // Free text keeps its inner spacing; only its ends are trimmed.
    let text = rest.trim();
    let after_first = text
        .split_once(char::is_whitespace)
        .map_or("", |(_, t)| t.trim());
    let usage = || Input::Invalid(format!("usage: {}", spec.usage()));
    let arg = match (spec.arity, args.as_slice()) {
        (Arity::Zero, []) | (Arity::MaybeOne, []) => String::new(),
        (Arity::One, [one]) | (Arity::MaybeOne, [one]) | (Arity::OneThenText, [one, ..]) => {
            (*one).to_owned()
        }
        (Arity::TwoOrMore | Arity::OneAndText, [_, _, ..])
        | (Arity::Text, [_, ..])
        | (Arity::MaybeText, _) => text.to_owned(),
        _ => return usage(),
    };
    let optional = |arg: String| Some(arg).filter(|a| !a.is_empty());
    match spec.name {
        "msg" => match arg.split_once(char::is_whitespace) {
            Some((to, text)) => Input::Command(ChatCommand::Direct {
                to: to.to_owned(),
                text: text.trim_start().to_owned(),
            }),
            None => usage(),
        },
        "reply" => Input::Reply(arg),
        "random" => Input::Command(ChatCommand::Random(arg)),
        "who" => Input::Command(ChatCommand::Who(optional(arg))),
        "whois" => Input::Command(ChatCommand::Whois(arg)),
        "away" => Input::Command(ChatCommand::Away(optional(arg))),
        "ignore" => Input::Command(ChatCommand::Ignore(arg)),
        "unignore" => Input::Command(ChatCommand::Unignore(arg)),
        "ignores" => Input::Command(ChatCommand::Ignores),
        "group" => Input::Command(ChatCommand::Group {
            channel: args[0].to_owned(),
            recipients: args[1..].iter().map(|a| (*a).to_owned()).collect(),
        }),
        "kick" => Input::Command(ChatCommand::Kick {
            username: arg,
            reason: (!after_first.is_empty()).then(|| after_first.to_owned()),
        }),
        "ban" => Input::Command(ChatCommand::Ban(arg)),
        "unban" => Input::Command(ChatCommand::Unban(arg)),
        "bans" => Input::Command(ChatCommand::Bans),
        "transfer" => Input::Command(ChatCommand::Transfer(arg)),
        "topic" => Input::Command(ChatCommand::Topic(arg)),
        "notice" => Input::Command(ChatCommand::Notice(arg)),
        // A bare /delete only explains: deleting a channel moves everyone
        // out and cannot be undone, so the word `channel` confirms it (and
        // leaves `/delete N` free for deleting a message).
        "delete" => match arg.to_lowercase().as_str() {
            "channel" => Input::Command(ChatCommand::DeleteChannel),
            "" => Input::Invalid(
                "/delete channel deletes the channel you are in and moves everyone in it to \
                 general, for good; type /delete channel to do it"
                    .into(),
            ),
            _ => usage(),
        },
        "join" => Input::Command(ChatCommand::Join(arg)),
        "leave" => Input::Command(ChatCommand::Leave),
        "rename" => Input::Command(ChatCommand::Rename(arg)),
        "private" => Input::Command(ChatCommand::Private),
        "public" => Input::Command(ChatCommand::Public),
        "invite" => Input::Command(ChatCommand::Invite(arg)),
        "channels" => Input::Command(ChatCommand::Channels),
        "help" => Input::Help,
        "register" => Input::Register,
        "password" => Input::Password,
        _ => Input::Quit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmd(c: ChatCommand) -> Input {
        Input::Command(c)
    }

    #[test]
    fn account_commands_are_local_until_the_password_is_typed() {
        assert_eq!(parse_line("/register"), Input::Register);
        assert_eq!(parse_line("/PASSWORD"), Input::Password);
        assert!(matches!(parse_line("/register secret"), Input::Invalid(_)));
        assert_eq!(Input::Register.to_package(), None);
    }

    #[test]
    fn commands_with_an_argument() {
        assert_eq!(
            parse_line("/join rust"),
            cmd(ChatCommand::Join("rust".into()))
        );
        assert_eq!(
            parse_line("/join   rust  "),
            cmd(ChatCommand::Join("rust".into()))
        );
        assert_eq!(
            parse_line("/JOIN Rust"),
            cmd(ChatCommand::Join("Rust".into()))
        );
        assert_eq!(
            parse_line("/rename robert"),
            cmd(ChatCommand::Rename("robert".into()))
        );
        assert_eq!(
            parse_line("/invite carol"),
            cmd(ChatCommand::Invite("carol".into()))
        );
    }

    #[test]
    fn commands_without_arguments() {
        assert_eq!(parse_line("/leave"), cmd(ChatCommand::Leave));
        assert_eq!(parse_line("/private"), cmd(ChatCommand::Private));
        assert_eq!(parse_line("/public "), cmd(ChatCommand::Public));
        assert_eq!(parse_line("/channels"), cmd(ChatCommand::Channels));
        assert_eq!(parse_line("/help"), Input::Help);
        assert_eq!(parse_line("/quit"), Input::Quit);
    }

    #[test]
    fn missing_or_extra_arguments_give_usage() {
        assert_eq!(
            parse_line("/join"),
            Input::Invalid("usage: /join NAME".into())
        );
        assert_eq!(
            parse_line("/join  "),
            Input::Invalid("usage: /join NAME".into())
        );
        assert_eq!(
            parse_line("/join a b"),
            Input::Invalid("usage: /join NAME".into())
        );
        assert_eq!(
            parse_line("/rename"),
            Input::Invalid("usage: /rename NAME".into())
        );
        assert_eq!(
            parse_line("/invite"),
            Input::Invalid("usage: /invite USER".into())
        );
        assert_eq!(
            parse_line("/leave now"),
            Input::Invalid("usage: /leave".into())
        );
        assert_eq!(parse_line("/quit x"), Input::Invalid("usage: /quit".into()));
    }

    #[test]
    fn unknown_commands_are_not_sent() {
        for line in ["/jion rust", "/", "/ join", "/mgs bob hi", "/\u{1b}[2J"] {
            match parse_line(line) {
                Input::Invalid(text) => {
                    assert!(text.starts_with("unknown command"), "{text}");
                    assert!(!text.contains('\u{1b}'), "{text:?}");
                }
                other => panic!("{line:?} parsed as {other:?}"),
            }
            assert_eq!(parse_line(line).to_package(), None);
        }
    }

    #[test]
    fn messages_and_slash_escaping() {
        assert_eq!(parse_line("hello"), Input::Message("hello".into()));
        assert_eq!(
            parse_line("  indented"),
            Input::Message("  indented".into())
        );
        assert_eq!(
            parse_line("//join is a command"),
            Input::Message("/join is a command".into())
        );
        assert_eq!(parse_line("//"), Input::Message("/".into()));
        assert_eq!(parse_line("a /join b"), Input::Message("a /join b".into()));
    }

    #[test]
    fn empty_lines_send_nothing() {
        for line in ["", " ", "\t  "] {
            assert_eq!(parse_line(line), Input::Nothing);
            assert_eq!(parse_line(line).to_package(), None);
        }
    }

    #[test]
    fn packages_match_the_protocol() {
        let value = |i: Input| serde_json::to_value(i.to_package().unwrap()).unwrap();
        assert_eq!(
            value(parse_line("/join rust")),
            json!({"type": "command", "data": {"command": "join", "parameters": {"channel": "rust"}}})
        );
        assert_eq!(
            value(parse_line("/rename bob")),
            json!({"type": "command", "data": {"command": "rename", "parameters": {"username": "bob"}}})
        );
        assert_eq!(
            value(parse_line("/invite bob")),
            json!({"type": "command", "data": {"command": "invite", "parameters": {"username": "bob"}}})
        );
        for (line, name) in [
            ("/leave", "leave"),
            ("/private", "private"),
            ("/public", "public"),
            ("/channels", "channels"),
        ] {
            assert_eq!(
                value(parse_line(line)),
                json!({"type": "command", "data": {"command": name}})
            );
        }
        assert_eq!(
            value(parse_line("//hi")),
            json!({"type": "message", "data": {"message": "/hi"}})
        );
        assert_eq!(parse_line("/help").to_package(), None);
        assert_eq!(parse_line("/quit").to_package(), None);
    }

    #[test]
    fn people_commands() {
        assert_eq!(
            parse_line("/msg bob  hello  there "),
            cmd(ChatCommand::Direct {
                to: "bob".into(),
                text: "hello  there".into()
            })
        );
        assert_eq!(parse_line("/reply ok then"), Input::Reply("ok then".into()));
        assert_eq!(
            parse_line("/random hi all"),
            cmd(ChatCommand::Random("hi all".into()))
        );
        assert_eq!(parse_line("/who"), cmd(ChatCommand::Who(None)));
        assert_eq!(
            parse_line("/who rust"),
            cmd(ChatCommand::Who(Some("rust".into())))
        );
        assert_eq!(
            parse_line("/whois bob"),
            cmd(ChatCommand::Whois("bob".into()))
        );
        assert_eq!(
            parse_line("/away at lunch"),
            cmd(ChatCommand::Away(Some("at lunch".into())))
        );
        assert_eq!(parse_line("/away"), cmd(ChatCommand::Away(None)));
        assert_eq!(
            parse_line("/ignore bob"),
            cmd(ChatCommand::Ignore("bob".into()))
        );
        assert_eq!(
            parse_line("/unignore bob"),
            cmd(ChatCommand::Unignore("bob".into()))
        );
        assert_eq!(parse_line("/ignores"), cmd(ChatCommand::Ignores));
        for bad in [
            "/msg", "/msg bob", "/reply", "/random", "/whois", "/who a b", "/ignore",
        ] {
            assert!(matches!(parse_line(bad), Input::Invalid(_)), "{bad}");
        }
        let value = |i: Input| serde_json::to_value(i.to_package().unwrap()).unwrap();
        assert_eq!(
            value(parse_line("/msg bob hi")),
            json!({"type": "command", "data": {"command": "direct",
                "parameters": {"username": "bob", "message": "hi"}}})
        );
        assert_eq!(
            value(parse_line("/away")),
            json!({"type": "command", "data": {"command": "away"}})
        );
        assert_eq!(
            value(parse_line("/who rust")),
            json!({"type": "command", "data": {"command": "who", "parameters": {"channel": "rust"}}})
        );
    }

    #[test]
    fn prompt_changing_commands() {
        assert!(ChatCommand::Join("x".into()).changes_prompt());
        assert!(ChatCommand::Leave.changes_prompt());
        assert!(ChatCommand::Rename("x".into()).changes_prompt());
        assert!(!ChatCommand::Channels.changes_prompt());
        assert!(!ChatCommand::Invite("x".into()).changes_prompt());
    }

    #[test]
    fn moderation_commands() {
        let value =
            |line: &str| serde_json::to_value(parse_line(line).to_package().unwrap()).unwrap();
        assert_eq!(
            value("/group trip bob  carol"),
            json!({"type": "command", "data": {"command": "group",
                "parameters": {"channel": "trip", "recipients": ["bob", "carol"]}}})
        );
        assert_eq!(
            parse_line("/group trip"),
            Input::Invalid("usage: /group NAME USER...".into())
        );
        assert_eq!(
            value("/kick troll  stop   spamming "),
            json!({"type": "command", "data": {"command": "kick",
                "parameters": {"username": "troll", "reason": "stop   spamming"}}})
        );
        assert_eq!(
            value("/kick troll"),
            json!({"type": "command", "data": {"command": "kick", "parameters": {"username": "troll"}}})
        );
        assert!(matches!(parse_line("/kick"), Input::Invalid(_)));
        for (line, name) in [
            ("/ban x", "ban"),
            ("/unban x", "unban"),
            ("/transfer x", "transfer"),
        ] {
            assert_eq!(
                value(line),
                json!({"type": "command", "data": {"command": name, "parameters": {"username": "x"}}})
            );
        }
        assert!(matches!(parse_line("/ban a b"), Input::Invalid(_)));
        assert_eq!(
            value("/bans"),
            json!({"type": "command", "data": {"command": "bans"}})
        );
        assert_eq!(
            value("/topic  Rust  talk "),
            json!({"type": "command", "data": {"command": "topic", "parameters": {"topic": "Rust  talk"}}})
        );
        assert_eq!(
            value("/topic"),
            json!({"type": "command", "data": {"command": "topic", "parameters": {"topic": ""}}})
        );
        assert_eq!(
            value("/notice back at 12"),
            json!({"type": "command", "data": {"command": "notice", "parameters": {"message": "back at 12"}}})
        );
        assert!(matches!(parse_line("/notice"), Input::Invalid(_)));
        // A bare /delete explains and sends nothing; /delete channel deletes.
        match parse_line("/delete") {
            Input::Invalid(text) => assert!(text.contains("/delete channel"), "{text}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_line("/delete").to_package(), None);
        assert_eq!(
            value("/delete Channel"),
            json!({"type": "command", "data": {"command": "delete_channel"}})
        );
        assert!(matches!(parse_line("/delete 42"), Input::Invalid(_)));
    }

    #[test]
    fn help_lists_every_command() {
        let help = help_lines().join("\n");
        for spec in SPECS {
            assert!(help.contains(&spec.usage()), "{}", spec.name);
        }
    }
}
