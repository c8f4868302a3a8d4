//! Configuration layers over any clap parser: built-in defaults, a TOML
//! file, `CHATMASTER_*` environment variables and command-line flags, in
//! that order of precedence (each overrides the ones before it).
//!
//! Nothing here knows the server's flags: the keys are read off the clap
//! [`clap::Command`], so a flag added to the parser is a file key and an
//! environment variable at once. Every value from the file or the
//! environment is handed to clap as if it had been typed (`--key=value`),
//! so the same value parsers, ranges and enums validate it; an error is
//! then reported against the file line or the variable it came from.
//!
//! The file is flat: `rate-per-sec = 20`, one key per long flag, spelled
//! as the flag is (kebab-case). Integers for numeric flags, booleans for
//! switches, strings for the rest, arrays for flags that may repeat. An
//! unknown key, a value of the wrong TOML type or one clap refuses is an
//! error naming the key and its line.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Prefix of the environment variable for each flag:
/// `--rate-per-sec` is `CHATMASTER_RATE_PER_SEC`.
pub const ENV_PREFIX: &str = "CHATMASTER_";

/// Id of the argument naming the configuration file (`--config`); it is
/// taken from the command line or the environment, never from the file.
pub const CONFIG_ARG: &str = "config";

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The parser's built-in default.
    Default,
    /// A line of the configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
    },
    /// An environment variable (its name).
    Env(String),
    /// The command line.
    Flag,
    /// Not set anywhere, and without a default.
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag => f.write_str("flag"),
            Source::Unset => f.write_str("unset"),
        }
    }
}

/// The TOML type a flag's values take in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch without a value (`--flag`): a boolean.
    Switch,
    /// A flag counted by repetition (`-vvv`): an integer.
    Count,
    /// A numeric value: an integer.
    Integer,
    /// A floating-point value: a float or an integer.
    Float,
    /// A `true`/`false` value given to a flag that takes one.
    Bool,
    /// Anything else (names, paths, enums): a string.
    String,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => return Kind::Switch,
            ArgAction::Count => return Kind::Count,
            _ => {}
        }
        let id = arg.get_value_parser().type_id();
        let is = |t: TypeId| id == t;
        if [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
        ]
        .into_iter()
        .any(is)
        {
            Kind::Integer
        } else if is(TypeId::of::<f32>()) || is(TypeId::of::<f64>()) {
            Kind::Float
        } else if is(TypeId::of::<bool>()) {
            Kind::Bool
        } else {
            Kind::String
        }
    }

    fn toml_name(self) -> &'static str {
        match self {
            Kind::Switch | Kind::Bool => "a boolean",
            Kind::Count | Kind::Integer => "an integer",
            Kind::Float => "a number",
            Kind::String => "a string",
        }
    }
}

/// One flag's effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key: the long flag's name (`rate-per-sec`).
    pub key: String,
    /// The environment variable that sets it.
    pub env: String,
    /// Its TOML type.
    pub kind: Kind,
    /// Whether it takes several values (a TOML array).
    pub multiple: bool,
    /// The values, as clap saw them (empty when unset).
    pub values: Vec<String>,
    /// Where they came from.
    pub source: Source,
}

impl Setting {
    /// The setting as a line of a configuration file, with its source as a
    /// comment; an unset one is commented out.
    pub fn to_toml_line(&self) -> String {
        let render = |v: &String| match self.kind {
            Kind::Switch | Kind::Bool | Kind::Count | Kind::Integer | Kind::Float => v.clone(),
            Kind::String => toml::Value::String(v.clone()).to_string(),
        };
        if self.values.is_empty() {
            return format!("# {} is unset", self.key);
        }
        let value = if self.multiple {
            let items: Vec<String> = self.values.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        } else {
            render(&self.values[0])
        };
        format!("{} = {}  # {}", self.key, value, self.source)
    }
}

/// A parsed value plus the account of where each setting came from.
#[derive(Debug, Clone)]
pub struct Layered<T> {
    /// What the parser made of all layers together.
    pub value: T,
    /// Every configurable flag, in the parser's order.
    pub settings: Vec<Setting>,
    /// The configuration file read, if any.
    pub file: Option<PathBuf>,
    /// Things worth a log line that are not errors (environment variables
    /// with the prefix that name no flag).
    pub warnings: Vec<String>,
}

impl<T> Layered<T> {
    /// The setting for `key`.
    pub fn setting(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }

    /// Keys whose values differ between `self` and `newer`.
    pub fn changed_keys(&self, newer: &Layered<T>) -> Vec<String> {
        let old: HashMap<&str, &Vec<String>> = self
            .settings
            .iter()
            .map(|s| (s.key.as_str(), &s.values))
            .collect();
        newer
            .settings
            .iter()
            .filter(|s| old.get(s.key.as_str()) != Some(&&s.values))
            .map(|s| s.key.clone())
            .collect()
    }

    /// Command-line arguments that reproduce these settings, except that
    /// `key` takes the values it has in `other` (used to find out what a
    /// single changed key does, see [`crate::ops`]'s reload).
    pub fn argv_with(&self, other: &Layered<T>, key: &str) -> Vec<OsString> {
        let mut argv = vec![OsString::from("reload")];
        for setting in &self.settings {
            let setting = if setting.key == key {
                match other.setting(key) {
                    Some(s) => s,
                    None => continue,
                }
            } else {
                setting
            };
            if matches!(setting.source, Source::Default | Source::Unset) {
                continue;
            }
            push_flag(&mut argv, &setting.key, setting.kind, &setting.values);
        }
        argv
    }
}

/// Why the layers could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The command line itself is wrong (or asks for `--help`/`--version`):
    /// clap's own error, to be shown with `Error::exit`.
    #[error("{0}")]
    Clap(#[from] clap::Error),
    /// The configuration file cannot be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key in it is wrong.
    #[error("{}:{line}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment variable's value is refused.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
}

/// The environment variable for a long flag: `CHATMASTER_` and the name in
/// upper snake case.
pub fn env_var(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// A value waiting to be handed to clap, and where it came from.
struct Injected {
    key: String,
    kind: Kind,
    values: Vec<String>,
    source: Source,
}

/// Parses `argv` with `T`'s parser on top of the configuration file (named
/// by `--config` or `CHATMASTER_CONFIG`) and the environment (`env` looks a
/// variable up; `env_vars` lists those present, to warn about unknown ones).
pub fn load<T: CommandFactory + FromArgMatches>(
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
    env_vars: &[String],
) -> Result<Layered<T>, LayerError> {
    let command = T::command();
    let first = command.clone().try_get_matches_from(argv)?;
    let args: Vec<&Arg> = configurable(&command).collect();
    let file = config_path(&first, env);
    let mut from_file = match &file {
        Some(path) => read_file(path, &args)?,
        None => BTreeMap::new(),
    };
    let mut injected = Vec::new();
    for arg in &args {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        // Only what the command line (or clap's own `env`) left open.
        if !matches!(
            first.value_source(id),
            None | Some(ValueSource::DefaultValue)
        ) {
            continue;
        }
        let var = env_var(long);
        let kind = Kind::of(arg);
        if let Some(raw) = env(&var) {
            let values = env_values(kind, &raw).map_err(|message| LayerError::Env {
                var: var.clone(),
                message,
            })?;
            injected.push(Injected {
                key: long.to_owned(),
                kind,
                values,
                source: Source::Env(var),
            });
        } else if let Some((line, values)) = from_file.remove(long) {
            injected.push(Injected {
                key: long.to_owned(),
                kind,
                values,
                source: Source::File {
                    path: file.clone().unwrap_or_default(),
                    line,
                },
            });
        }
    }
    let mut full = vec![argv.first().cloned().unwrap_or_default()];
    for i in &injected {
        push_flag(&mut full, &i.key, i.kind, &i.values);
    }
    full.extend(argv.iter().skip(1).cloned());
    let matches = command
        .clone()
        .try_get_matches_from(&full)
        .map_err(|e| blame(e, &injected))?;
    let value = T::from_arg_matches(&matches).map_err(|e| blame(e, &injected))?;
    let settings = args
        .iter()
        .filter_map(|arg| setting(arg, &matches, &injected))
        .collect();
    let known: Vec<String> = configurable(&command)
        .filter_map(|a| a.get_long().map(env_var))
        .chain([env_var(CONFIG_ARG)])
        .collect();
    let warnings = env_vars
        .iter()
        .filter(|v| v.starts_with(ENV_PREFIX) && !known.contains(v))
        .map(|v| format!("environment variable {v} names no flag; ignored"))
        .collect();
    Ok(Layered {
        value,
        settings,
        file,
        warnings,
    })
}

/// [`load`] with the process's own environment.
pub fn load_from_env<T: CommandFactory + FromArgMatches>(
    argv: &[OsString],
) -> Result<Layered<T>, LayerError> {
    let vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    load(argv, &|name| std::env::var(name).ok(), &vars)
}

/// The arguments a file or variable may set: every long flag except
/// `--help`, `--version` and `--config` itself.
fn configurable(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|a| {
        a.get_long().is_some()
            && a.get_id() != CONFIG_ARG
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::HelpShort)
            && !matches!(a.get_action(), ArgAction::HelpLong | ArgAction::Version)
    })
}

fn config_path(matches: &ArgMatches, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let from_matches = matches
        .try_get_raw(CONFIG_ARG)
        .ok()
        .flatten()
        .and_then(|mut v| v.next())
        .map(PathBuf::from);
    from_matches.or_else(|| env(&env_var(CONFIG_ARG)).map(PathBuf::from))
}

/// Appends `--key=value` for each value (or `--key` for a switch that is on).
fn push_flag(argv: &mut Vec<OsString>, key: &str, kind: Kind, values: &[String]) {
    match kind {
        Kind::Switch => {
            if values.iter().any(|v| v == "true") {
                argv.push(format!("--{key}").into());
            }
        }
        Kind::Count => {
            let n: usize = values.first().and_then(|v| v.parse().ok()).unwrap_or(0);
            argv.extend((0..n).map(|_| OsString::from(format!("--{key}"))));
        }
        _ => argv.extend(
            values
                .iter()
                .map(|v| OsString::from(format!("--{key}={v}"))),
        ),
    }
}

fn env_values(kind: Kind, raw: &str) -> Result<Vec<String>, String> {
    match kind {
        Kind::Switch => match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(vec!["true".into()]),
            "" | "0" | "false" | "no" | "off" => Ok(vec!["false".into()]),
            _ => Err(format!("expected true or false, found {raw:?}")),
        },
        _ => Ok(vec![raw.to_owned()]),
    }
}

/// Reads and checks the file: every key must be a configurable flag and
/// every value of that flag's TOML type. Returns each key's line and its
/// values as strings for clap.
fn read_file(
    path: &Path,
    args: &[&Arg],
) -> Result<BTreeMap<String, (usize, Vec<String>)>, LayerError> {
    let text = std::fs::read_to_string(path).map_err(|source| LayerError::Read {
        path: path.to_owned(),
        source,
    })?;
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let err = |offset: usize, message: String| LayerError::File {
        path: path.to_owned(),
        line: line_of(offset),
        message,
    };
    let table = DeTable::parse(&text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        err(offset, e.message().trim().to_owned())
    })?;
    let by_long: HashMap<&str, &Arg> = args
        .iter()
        .filter_map(|a| a.get_long().map(|l| (l, *a)))
        .collect();
    let mut out = BTreeMap::new();
    // In file order, so the first error reported is the first in the file.
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, value) in entries {
        let name = key.get_ref().as_ref();
        let at = key.span().start;
        let Some(arg) = by_long.get(name) else {
            let hint = if name == CONFIG_ARG {
                " (a configuration file cannot name another)".to_owned()
            } else if by_long.contains_key(name.replace('_', "-").as_str()) {
                format!(
                    " (keys are spelled like the flags: {})",
                    name.replace('_', "-")
                )
            } else {
                String::new()
            };
            return Err(err(at, format!("unknown key `{name}`{hint}")));
        };
        let kind = Kind::of(arg);
        let multiple = takes_many(arg);
        let values = match value.get_ref() {
            DeValue::Array(items) if multiple => items
                .iter()
                .map(|item| scalar(kind, item))
                .collect::<Result<Vec<_>, _>>(),
            DeValue::Array(_) => Err(format!(
                "takes one value, not an array; expected {}",
                kind.toml_name()
            )),
            _ => scalar(kind, value).map(|v| vec![v]),
        }
        .map_err(|m| err(at, format!("key `{name}`: {m}")))?;
        out.insert(name.to_owned(), (line_of(at), values));
    }
    Ok(out)
}

fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|r| r.max_values() > 1)
}

/// One TOML value as the string clap would be given, if its type fits.
fn scalar(kind: Kind, value: &Spanned<DeValue<'_>>) -> Result<String, String> {
    let found = value.get_ref().type_str();
    let wrong = || Err(format!("expected {}, found {found}", kind.toml_name()));
    match (kind, value.get_ref()) {
        (Kind::Count | Kind::Integer | Kind::Float, DeValue::Integer(i)) => {
            i128::from_str_radix(i.as_str(), i.radix())
                .map(|n| n.to_string())
                .map_err(|e| format!("integer out of range: {e}"))
        }
        (Kind::Float, DeValue::Float(f)) => Ok(f.as_str().to_owned()),
        (Kind::Switch | Kind::Bool, DeValue::Boolean(b)) => Ok(b.to_string()),
        (Kind::String, DeValue::String(s)) => Ok(s.to_string()),
        _ => wrong(),
    }
}

/// Rewrites clap's error about a value that came from the file or the
/// environment so that it names that place instead of a flag nobody typed.
fn blame(error: clap::Error, injected: &[Injected]) -> LayerError {
    use clap::error::{ContextKind, ContextValue};
    let arg = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return LayerError::Clap(error),
    };
    let Some(culprit) = injected.iter().find(|i| {
        let flag = format!("--{}", i.key);
        arg == flag || arg.starts_with(&format!("{flag} ")) || arg.starts_with(&format!("{flag}="))
    }) else {
        return LayerError::Clap(error);
    };
    // clap's first line, without its "error: " prefix and usage footer.
    let rendered = error.to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let message = format!("key `{}`: {first}", culprit.key);
    match &culprit.source {
        Source::File { path, line } => LayerError::File {
            path: path.clone(),
            line: *line,
            message,
        },
        Source::Env(var) => LayerError::Env {
            var: var.clone(),
            message: first,
        },
        _ => LayerError::Clap(error),
    }
}

fn setting(arg: &Arg, matches: &ArgMatches, injected: &[Injected]) -> Option<Setting> {
    let long = arg.get_long()?;
    let id = arg.get_id().as_str();
    let values: Vec<String> = matches
        .try_get_raw(id)
        .ok()
        .flatten()
        .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let kind = Kind::of(arg);
    let values = if kind == Kind::Count {
        vec![matches.get_count(id).to_string()]
    } else {
        values
    };
    let source = match matches.value_source(id) {
        Some(ValueSource::DefaultValue) => Source::Default,
        Some(ValueSource::EnvVariable) => Source::Env(
            arg.get_env()
                .map(|v| v.to_string_lossy().into_owned())
                .unwrap_or_else(|| env_var(long)),
        ),
        Some(ValueSource::CommandLine) => injected
            .iter()
            .find(|i| i.key == long)
            .map_or(Source::Flag, |i| i.source.clone()),
        _ => Source::Unset,
    };
    Some(Setting {
        key: long.to_owned(),
        env: env_var(long),
        kind,
        multiple: takes_many(arg),
        values,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A parser shaped like the server's: numbers with ranges, a string, a
    /// switch, a repeatable flag, an enum and `--config`.
    #[derive(Debug, clap::Parser)]
    struct Args {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        rate_per_sec: u32,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        oper: Vec<String>,
        #[arg(long, value_enum, default_value = "text")]
        log_format: Format,
        #[arg(long)]
        db: Option<PathBuf>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
    enum Format {
        Text,
        Json,
    }

    fn file(text: &str) -> tempfile_path::Temp {
        tempfile_path::Temp::new(text)
    }

    /// A named temporary file removed on drop (std only).
    mod tempfile_path {
        use std::path::PathBuf;
        pub(super) struct Temp(pub(super) PathBuf);
        impl Temp {
            pub(super) fn new(text: &str) -> Temp {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "chatmaster-layers-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                let mut f = std::fs::File::create(&path).unwrap();
                super::Write::write_all(&mut f, text.as_bytes()).unwrap();
                Temp(path)
            }
        }
        impl Drop for Temp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn run(argv: &[&str], env: &[(&str, &str)]) -> Result<Layered<Args>, LayerError> {
        let argv: Vec<OsString> = std::iter::once("server")
            .chain(argv.iter().copied())
            .map(OsString::from)
            .collect();
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = map.keys().cloned().collect();
        load(&argv, &|k| map.get(k).cloned(), &names)
    }

    #[test]
    fn defaults_then_file_then_env_then_flags() {
        let f = file("rate-per-sec = 5\nhost = \"0.0.0.0\"\nquiet = true\noper = [\"ann\", \"bo\"]\nlog-format = \"json\"\n");
        let path = f.0.to_str().unwrap();
        let only_file = run(&["--config", path], &[]).unwrap();
        assert_eq!(only_file.value.rate_per_sec, 5);
        assert_eq!(only_file.value.host, "0.0.0.0");
        assert!(only_file.value.quiet);
        assert_eq!(only_file.value.oper, ["ann", "bo"]);
        assert_eq!(only_file.value.log_format, Format::Json);
        assert_eq!(
            only_file.setting("rate-per-sec").unwrap().source,
            Source::File {
                path: f.0.clone(),
                line: 1
            }
        );
        assert_eq!(only_file.setting("db").unwrap().source, Source::Unset);

        let env = run(&["--config", path], &[("CHATMASTER_RATE_PER_SEC", "7")]).unwrap();
        assert_eq!(env.value.rate_per_sec, 7);
        assert_eq!(
            env.setting("rate-per-sec").unwrap().source,
            Source::Env("CHATMASTER_RATE_PER_SEC".into())
        );
        assert_eq!(env.value.host, "0.0.0.0");

        let flag = run(
            &["--config", path, "--rate-per-sec", "9"],
            &[("CHATMASTER_RATE_PER_SEC", "7")],
        )
        .unwrap();
        assert_eq!(flag.value.rate_per_sec, 9);
        assert_eq!(flag.setting("rate-per-sec").unwrap().source, Source::Flag);

        let none = run(&[], &[]).unwrap();
        assert_eq!(none.value.rate_per_sec, 20);
        assert_eq!(
            none.setting("rate-per-sec").unwrap().source,
            Source::Default
        );
    }

    #[test]
    fn the_file_can_be_named_by_the_environment() {
        let f = file("rate-per-sec = 3\n");
        let got = run(&[], &[("CHATMASTER_CONFIG", f.0.to_str().unwrap())]).unwrap();
        assert_eq!(got.value.rate_per_sec, 3);
        assert_eq!(got.file.as_deref(), Some(f.0.as_path()));
    }

    fn file_error(text: &str) -> (usize, String) {
        let f = file(text);
        match run(&["--config", f.0.to_str().unwrap()], &[]) {
            Err(LayerError::File { line, message, .. }) => (line, message),
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let (line, message) = file_error("host = \"::1\"\n\nrate-per-minute = 5\n");
        assert_eq!(line, 3);
        assert!(
            message.contains("unknown key `rate-per-minute`"),
            "{message}"
        );
        let (line, message) = file_error("rate_per_sec = 5\n");
        assert_eq!(line, 1);
        assert!(message.contains("rate-per-sec"), "{message}");
        let (_, message) = file_error("config = \"other.toml\"\n");
        assert!(message.contains("unknown key `config`"), "{message}");
    }

    #[test]
    fn wrong_types_name_the_key_and_line() {
        let (line, message) = file_error("# limits\nrate-per-sec = \"fast\"\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("`rate-per-sec`") && message.contains("integer"),
            "{message}"
        );
        let (line, message) = file_error("host = 1\nquiet = \"yes\"\n");
        assert_eq!(line, 1, "{message}");
        let (_, message) = file_error("host = [\"a\", \"b\"]\n");
        assert!(message.contains("not an array"), "{message}");
        let (_, message) = file_error("[server]\nport = 1\n");
        assert!(message.contains("`server`"), "{message}");
    }

    #[test]
    fn values_clap_refuses_name_the_key_and_line() {
        // Right type, out of range: clap's own range check, blamed on the line.
        let (line, message) = file_error("host = \"h\"\nrate-per-sec = 0\n");
        assert_eq!(line, 2);
        assert!(
            message.contains("`rate-per-sec`") && message.contains("0"),
            "{message}"
        );
        let (line, message) = file_error("log-format = \"xml\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("xml"), "{message}");
    }

    #[test]
    fn broken_toml_names_the_line() {
        let (line, _) = file_error("host = \"a\"\nrate-per-sec = = 3\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        match run(&[], &[("CHATMASTER_RATE_PER_SEC", "lots")]) {
            Err(LayerError::Env { var, message }) => {
                assert_eq!(var, "CHATMASTER_RATE_PER_SEC");
                assert!(message.contains("lots"), "{message}");
            }
            other => panic!("expected an env error, got {other:?}"),
        }
        let warned = run(&[], &[("CHATMASTER_RATE", "1")]).unwrap();
        assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        assert!(matches!(
            run(&["--config", "/nonexistent/chatmaster.toml"], &[]),
            Err(LayerError::Read { .. })
        ));
    }

    #[test]
    fn settings_print_as_toml_that_loads_back() {
        let f = file("rate-per-sec = 5\noper = [\"ann\"]\nhost = \"a \\\"b\\\"\"\nquiet = true\n");
        let got = run(&["--config", f.0.to_str().unwrap()], &[]).unwrap();
        let text: String = got
            .settings
            .iter()
            .map(|s| s.to_toml_line() + "\n")
            .collect();
        let again = file(&text);
        let back = run(&["--config", again.0.to_str().unwrap()], &[]).unwrap();
        assert_eq!(back.value.rate_per_sec, 5);
        assert_eq!(back.value.oper, ["ann"]);
        assert_eq!(back.value.host, "a \"b\"");
        assert!(back.value.quiet);
    }

    #[test]
    fn argv_with_swaps_one_key() {
        let a = file("rate-per-sec = 5\nhost = \"a\"\n");
        let b = file("rate-per-sec = 6\nhost = \"b\"\n");
        let old = run(&["--config", a.0.to_str().unwrap()], &[]).unwrap();
        let new = run(&["--config", b.0.to_str().unwrap()], &[]).unwrap();
        assert_eq!(old.changed_keys(&new), ["rate-per-sec", "host"]);
        let mixed = <Args as clap::Parser>::parse_from(old.argv_with(&new, "host"));
        assert_eq!((mixed.rate_per_sec, mixed.host.as_str()), (5, "b"));
    }
}
