//! Tab completion: command names after a `/` at the start of the line, and
//! the user names the client has seen anywhere else.
//!
//! [`KnownNames`] is shared by the session task, which learns names from
//! what the server sends (members lists, messages, `who`, `whois`, ...),
//! and the line editor's thread, which completes from it; it is a short
//! mutex, never held across anything but a map operation, and bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::client::ui::input::command_names;
use crate::wire::protocol::{Notification, ServerPackage};

/// Most names remembered for completion; later ones are not added.
pub const MAX_KNOWN_NAMES: usize = 10_000;

/// Names seen, lowercased for matching, with their spelling.
#[derive(Debug, Clone, Default)]
pub struct KnownNames(Arc<Mutex<BTreeMap<String, String>>>);

impl KnownNames {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Remembers one name (until [`MAX_KNOWN_NAMES`] are known).
    pub fn learn(&self, name: &str) {
        let mut names = self.lock();
        if names.len() < MAX_KNOWN_NAMES || names.contains_key(&name.to_lowercase()) {
            names.insert(name.to_lowercase(), name.to_owned());
        }
    }

    /// Remembers the user names a package mentions.
    pub fn learn_from(&self, package: &ServerPackage) {
        match package {
            ServerPackage::Message(m) => self.learn(&m.username),
            ServerPackage::Notification(n) => match n {
                Notification::UserJoined {
                    username, users, ..
                } => {
                    self.learn(username);
                    for u in users.iter().flatten() {
                        self.learn(u);
                    }
                }
                Notification::UserRename { new_username, .. } => self.learn(new_username),
                Notification::Who { users, .. } => {
                    for u in users {
                        self.learn(&u.username);
                    }
                }
                Notification::Whois {
                    username,
                    online: true,
                    ..
                } => self.learn(username),
                Notification::MessageSent { to: Some(to), .. } => self.learn(to),
                Notification::Invited { by, .. } => self.learn(by),
                _ => {}
            },
            _ => {}
        }
    }

    /// The known names starting with `prefix`, ignoring case, in order.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_lowercase();
        self.lock()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// What completing the word before `pos` in `line` offers: where the word
/// starts, and the candidates (a command name with its slash and a space,
/// or a name).
pub fn complete(line: &str, pos: usize, names: &KnownNames) -> (usize, Vec<String>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.rfind(char::is_whitespace).map_or(0, |i| {
        i + before[i..].chars().next().map_or(1, char::len_utf8)
    });
    let word = &before[start..];
    if start == 0 {
        if let Some(partial) = word.strip_prefix('/') {
            let partial = partial.to_lowercase();
            let commands = command_names()
                .filter(|c| c.starts_with(&partial))
                .map(|c| format!("/{c} "))
                .collect();
            return (0, commands);
        }
    }
    if word.is_empty() {
        return (start, Vec::new());
    }
    (start, names.matching(word))
}

/// The line editor's helper: completion only.
pub struct ChatHelper {
    /// What names complete to.
    pub names: KnownNames,
}

impl rustyline::completion::Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete(line, pos, &self.names))
    }
}

impl rustyline::hint::Hinter for ChatHelper {
    type Hint = String;
}
impl rustyline::highlight::Highlighter for ChatHelper {}
impl rustyline::validate::Validator for ChatHelper {}
impl rustyline::Helper for ChatHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_complete_at_the_start_of_a_line() {
        let names = KnownNames::default();
        assert_eq!(complete("/ms", 3, &names), (0, vec!["/msg ".to_owned()]));
        let (_, all) = complete("/", 1, &names);
        for c in ["/who ", "/whois ", "/ignore ", "/reply ", "/join "] {
            assert!(all.contains(&c.to_owned()), "{c} in {all:?}");
        }
        assert_eq!(complete("/WHOI", 5, &names).1, vec!["/whois ".to_owned()]);
        // Not at the start: a word, not a command.
        assert_eq!(complete("say /ms", 7, &names).1, Vec::<String>::new());
    }

    #[test]
    fn names_complete_anywhere_else_ignoring_case() {
        let names = KnownNames::default();
        for n in ["Bob", "bobby", "carol"] {
            names.learn(n);
        }
        assert_eq!(
            complete("/msg bo", 7, &names),
            (5, vec!["Bob".to_owned(), "bobby".to_owned()])
        );
        assert_eq!(complete("hi CA", 5, &names), (3, vec!["carol".to_owned()]));
        assert_eq!(complete("hi ", 3, &names).1, Vec::<String>::new());
        // The word before the cursor counts, not what follows it.
        assert_eq!(
            complete("/msg c rest", 6, &names).1,
            vec!["carol".to_owned()]
        );
    }

    #[test]
    fn names_are_learnt_from_packages_and_bounded() {
        let names = KnownNames::default();
        names.learn_from(&ServerPackage::notification(Notification::UserJoined {
            username: "dave".into(),
            channel: "general".into(),
            users: Some(vec!["dave".into(), "Eve".into()]),
            users_total: Some(2),
            owner: None,
            private: None,
            topic: None,
        }));
        assert_eq!(names.matching(""), ["dave", "Eve"]);
        for i in 0..MAX_KNOWN_NAMES + 10 {
            names.learn(&format!("n{i}"));
        }
        assert_eq!(names.matching("").len(), MAX_KNOWN_NAMES);
    }
}
