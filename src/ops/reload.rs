//! What a configuration reload (SIGHUP) may change while the server runs,
//! decided without a hand-kept list of keys.
//!
//! The server's live limits are one [`Config`] value, swapped whole by
//! `Hub::reconfigure`. A changed key is applied live exactly when it feeds
//! that value outside [`Config::startup_fields`]: the old settings are
//! parsed again with only that key changed, and if the resulting `Config`
//! differs there, the key is live. Any other key (the address, the thread
//! count, the log format, the database and its writer) shapes something
//! built once at start-up, so its change is logged as needing a restart
//! and the running value stays. A flag added to the
//! parser later is sorted the same way, with nothing to update here.
//!
//! So a setting that must change live goes into `Config` and is read
//! through `Hub::config()` where it is used (as the presence settings
//! are); operator lists and a TLS certificate, when they exist, belong
//! there too (the certificate as the loaded key pair, so a reload that
//! cannot read it fails like a broken file and keeps the old one).

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::ops::layers::Layered;
use crate::server::config::Config;

/// One key's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key (`rate-per-sec`).
    pub key: String,
    /// The values before (empty: unset).
    pub old: Vec<String>,
    /// The values in the new configuration.
    pub new: Vec<String>,
}

/// What a reload does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Changes put in force now.
    pub live: Vec<Change>,
    /// Changes that wait for a restart: the running value stays.
    pub restart: Vec<Change>,
}

/// Sorts the differences between the running settings and `new`.
/// `started` is what the process started with (restart-only keys are
/// compared against it, so they are reported until a restart), `current`
/// what was last applied live; `config_of` picks the live limits out of a
/// parsed value.
pub fn plan<T>(
    started: &Layered<T>,
    current: &Layered<T>,
    new: &Layered<T>,
    config_of: impl Fn(&T) -> Config,
) -> Plan
where
    T: Parser + CommandFactory + FromArgMatches,
{
    let is_live = |key: &str| {
        let base = config_of(&current.value);
        match T::try_parse_from(current.argv_with(new, key)) {
            Ok(mixed) => {
                let mixed = config_of(&mixed);
                format!("{mixed:?}") != format!("{base:?}")
                    && format!("{:?}", mixed.startup_fields())
                        == format!("{:?}", base.startup_fields())
            }
            // Valid on its own but not next to the old values: leave it
            // for a restart rather than guess.
            Err(_) => false,
        }
    };
    let values =
        |l: &Layered<T>, key: &str| l.setting(key).map(|s| s.values.clone()).unwrap_or_default();
    let mut plan = Plan::default();
    for key in current.changed_keys(new) {
        if is_live(&key) {
            plan.live.push(Change {
                old: values(current, &key),
                new: values(new, &key),
                key,
            });
        }
    }
    for key in started.changed_keys(new) {
        if !is_live(&key) {
            plan.restart.push(Change {
                old: values(started, &key),
                new: values(new, &key),
                key,
            });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::layers;
    use crate::server::config::ServerArgs;
    use std::ffi::OsString;

    fn layered(argv: &[&str]) -> Layered<ServerArgs> {
        let argv: Vec<OsString> = std::iter::once("server")
            .chain(argv.iter().copied())
            .map(OsString::from)
            .collect();
        layers::load(&argv, &|_| None, &[]).unwrap()
    }

    #[test]
    fn limits_are_live_and_the_address_waits_for_a_restart() {
        let started = layered(&["--rate-per-sec", "5", "--port", "1", "--db", "a.db"]);
        let new = layered(&[
            "--rate-per-sec",
            "6",
            "--port",
            "2",
            "--max-name-chars",
            "9",
            "--db",
            "b.db",
        ]);
        let plan = plan(&started, &started, &new, ServerArgs::config);
        let live: Vec<&str> = plan.live.iter().map(|c| c.key.as_str()).collect();
        let restart: Vec<&str> = plan.restart.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(live, ["max-name-chars", "rate-per-sec"]);
        assert_eq!(restart, ["port", "db"]);
        assert_eq!(plan.live[1].old, ["5"]);
        assert_eq!(plan.live[1].new, ["6"]);
    }

    #[test]
    fn registration_is_live_and_the_throttle_waits_for_a_restart() {
        let started = layered(&[]);
        let new = layered(&["--registration", "closed", "--hash-concurrency", "1"]);
        let plan = plan(&started, &started, &new, ServerArgs::config);
        let live: Vec<&str> = plan.live.iter().map(|c| c.key.as_str()).collect();
        let restart: Vec<&str> = plan.restart.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(live, ["registration"]);
        assert_eq!(restart, ["hash-concurrency"]);
        // What the hub is given keeps the running start-up fields.
        let running = started.value.config();
        let applied = new.value.config().keep_startup(&running);
        assert_eq!(applied.hash_concurrency, running.hash_concurrency);
        assert_eq!(applied.registration, new.value.config().registration);
    }

    #[test]
    fn a_restart_only_change_is_reported_until_the_restart() {
        let started = layered(&["--threads", "1"]);
        let current = layered(&["--threads", "2"]);
        let again = layered(&["--threads", "2"]);
        let plan = plan(&started, &current, &again, ServerArgs::config);
        assert!(plan.live.is_empty());
        assert_eq!(plan.restart.len(), 1);
        assert_eq!(plan.restart[0].old, ["1"]);
        let back = layered(&["--threads", "1"]);
        assert_eq!(
            super::plan(&started, &current, &back, ServerArgs::config),
            Plan::default()
        );
    }
}
