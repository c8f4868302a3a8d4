//! The admin commands, `chatmaster-server accounts add|list|delete|passwd`:
//! account maintenance straight on the database (a SQLite file, or the
//! PostgreSQL database a `postgres://` URL names), also while servers run
//! on it (SQLite's WAL and busy timeout let both write; PostgreSQL takes
//! any number of writers). A running
//! server reads an account at each login under its name, so a deletion or
//! a new password counts from the next login; it learns of a new account
//! within its `--accounts-poll-ms` (the store's accounts version, which
//! every change bumps, tells it to reload its names).
//!
//! The binary only parses flags and reads the password; everything else is
//! here so tests can drive it. Passwords come from the terminal without
//! echo (asked twice), or, when stdin is not a terminal, as the first line
//! of stdin, so scripts can pipe them in.

use std::io::{BufRead, IsTerminal};

use crate::server::passwords::{check_password_rules, Hasher};
use crate::store::{self, NewAccount, StoreError, StoreOptions};
use crate::wire::protocol::{fold_name, name_skeleton, validate_name};

/// Exit code: the database cannot be opened or used.
pub const EXIT_DATABASE: u8 = 1;
/// Exit code: bad flags (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no account has that name.
pub const EXIT_NO_SUCH_ACCOUNT: u8 = 3;
/// Exit code: the name or password is refused (invalid, taken, too short).
pub const EXIT_REFUSED: u8 = 4;

/// `chatmaster-server accounts ...`
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Exit codes: 0 done, 1 the database cannot be used, 2 bad flags, \
                        3 no such account, 4 name or password refused.\n\
                        Passwords are read from the terminal without echo (asked twice), \
                        or from the first line of stdin when it is not a terminal."
)]
pub struct AccountsArgs {
    /// The database file or PostgreSQL URL (as the server's `--db`); given
    /// here or before `accounts`.
    #[arg(long)]
    pub db: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: AccountsAction,
}

/// An account maintenance action.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AccountsAction {
    /// Create an account (reads its password).
    Add {
        /// The account's name, as it will be shown.
        name: String,
    },
    /// List accounts: name and creation time, one per line.
    List,
    /// Delete an account; its registered channels go with it.
    Delete {
        /// The account's name (any capitalisation).
        name: String,
    },
    /// Set an account's password (reads the new one).
    Passwd {
        /// The account's name (any capitalisation).
        name: String,
    },
}

/// Why an admin command failed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database cannot be used.
    #[error("{0}")]
    Database(#[from] StoreError),
    /// No account has the name.
    #[error("no account named {0}")]
    NoSuchAccount(String),
    /// The name or password is refused.
    #[error("{0}")]
    Refused(String),
}

impl AdminError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Database(_) => EXIT_DATABASE,
            AdminError::NoSuchAccount(_) => EXIT_NO_SUCH_ACCOUNT,
            AdminError::Refused(_) => EXIT_REFUSED,
        }
    }
}

/// Where a password comes from.
pub trait PasswordSource {
    /// The new password for `name`.
    fn new_password(&mut self, name: &str) -> Result<String, AdminError>;
}

/// The terminal (no echo, asked twice), or stdin's first line when piped.
#[derive(Debug, Default)]
pub struct Terminal;

impl PasswordSource for Terminal {
    fn new_password(&mut self, name: &str) -> Result<String, AdminError> {
        let io = |e: std::io::Error| AdminError::Refused(format!("cannot read the password: {e}"));
        if std::io::stdin().is_terminal() {
            let first = rpassword::prompt_password(format!("Password for {name}: ")).map_err(io)?;
            let again = rpassword::prompt_password("Again: ").map_err(io)?;
            if first != again {
                return Err(AdminError::Refused("the passwords differ".into()));
            }
            return Ok(first);
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(io)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// Runs an admin action on the database `db`; returns what to print.
pub fn run(
    db: &str,
    options: &StoreOptions,
    action: &AccountsAction,
    passwords: &mut dyn PasswordSource,
) -> Result<String, AdminError> {
    if db == store::MEMORY {
        return Err(AdminError::Refused(
            "an in-memory database is gone when the command ends; give --db FILE".into(),
        ));
    }
    let store = store::open(db, options)?;
    match action {
        AccountsAction::Add { name } => {
            validate_name(name, usize::MAX).map_err(AdminError::Refused)?;
            let password = passwords.new_password(name)?;
            check_password_rules(&password).map_err(AdminError::Refused)?;
            let password_hash =
                Hasher::hash_blocking(&password).map_err(|e| AdminError::Refused(e.to_string()))?;
            let account = NewAccount {
                name: name.clone(),
                key: fold_name(name),
                skeleton: name_skeleton(name),
                password_hash,
                created_at: store::now_millis(),
            };
            match store.create_account(&account) {
                Ok(_) => Ok(format!("account {name} created")),
                Err(StoreError::Conflict { existing }) => Err(AdminError::Refused(format!(
                    "{name} is taken: the account {existing} has that name or one too like it"
                ))),
                Err(e) => Err(e.into()),
            }
        }
        AccountsAction::List => {
            let lines: Vec<String> = store
                .list_accounts()?
                .into_iter()
                .map(|a| {
                    let created = chrono::DateTime::from_timestamp_millis(a.created_at)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default();
                    format!("{}\t{created}", a.name)
                })
                .collect();
            Ok(lines.join("\n"))
        }
        AccountsAction::Delete { name } => {
            let account = store
                .account_by_key(&fold_name(name))?
                .ok_or_else(|| AdminError::NoSuchAccount(name.clone()))?;
            store.delete_account(account.id)?;
            Ok(format!("account {} deleted", account.name))
        }
        AccountsAction::Passwd { name } => {
            let account = store
                .account_by_key(&fold_name(name))?
                .ok_or_else(|| AdminError::NoSuchAccount(name.clone()))?;
            let password = passwords.new_password(&account.name)?;
            check_password_rules(&password).map_err(AdminError::Refused)?;
            let hash =
                Hasher::hash_blocking(&password).map_err(|e| AdminError::Refused(e.to_string()))?;
            store.set_password(account.id, &hash)?;
            Ok(format!("password of {} changed", account.name))
        }
    }
}
