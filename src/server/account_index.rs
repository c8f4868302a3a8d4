//! The accounts' names in memory: which folded names and confusable
//! skeletons belong to accounts, so that a guest's login (a name nobody
//! registered) is decided without reading the store.
//!
//! The index only answers "might this name be an account's, or look like
//! one?". A yes sends the login to the store, which decides (and holds the
//! password); a no lets the guest in. So the index must never lack a name
//! the store has; holding one the store no longer has only costs a read.
//!
//! It is loaded at start and kept current two ways:
//! - the server's own changes (`register`, `rename`, the undo of a failed
//!   registration) are applied as they are made, so they count at once;
//! - other processes' changes (`chatmaster-server accounts ...`) are found
//!   by [`AccountIndex::refresh`], which the server calls every
//!   `--accounts-poll-ms`: it reads the store's [`AccountsVersion`] (one
//!   small read) and reloads every name when it is not the index's.
//!
//! Every change to the names bumps the version by one in its transaction,
//! so a change of the server's own whose version follows the index's is
//! known to be the only change since, and is applied exactly. Any other
//! is applied only as far as it adds names (removals wait for the reload
//! the version gap causes), and a reload older than a change already
//! applied is not installed: neither can drop a registered name.
//!
//! Memory: per account, an entry in each of two hash maps (64 bytes of
//! slots: the folded name, the id and the skeleton in one, the skeleton
//! and a count in the other) and three short heap strings (the folded
//! name and the skeleton twice, 32 bytes each with the allocator's
//! header for names up to 24 bytes). With the maps' spare capacity that is
//! about 200 bytes per account (an estimate from the layout, not a
//! measurement): 2 MB for 10,000 accounts.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::store::{AccountId, AccountsVersion, Store, StoreError};

/// One account as the index holds it.
#[derive(Debug)]
struct Entry {
    /// The account, to check a removal is of the one recorded.
    id: AccountId,
    /// Its skeleton, to take it out of the skeleton counts.
    skeleton: Box<str>,
}

/// The names and how current they are.
#[derive(Debug, Default)]
struct Names {
    /// Folded name → account.
    keys: HashMap<Box<str>, Entry>,
    /// Skeleton → accounts having it (the store refuses a second one, but
    /// counting keeps a removal right even if a file holds two).
    skeletons: HashMap<Box<str>, u32>,
    /// Every change up to this version is in the maps, and none after it
    /// but possibly some of the server's own (up to `newest`).
    complete: AccountsVersion,
    /// The highest version of any change applied (`>= complete`).
    newest: AccountsVersion,
}

impl Names {
    fn insert(&mut self, id: AccountId, key: &str, skeleton: &str) {
        let entry = Entry {
            id,
            skeleton: skeleton.into(),
        };
        if let Some(old) = self.keys.insert(key.into(), entry) {
            self.uncount(&old.skeleton);
        }
        *self.skeletons.entry(skeleton.into()).or_insert(0) += 1;
    }

    /// Takes out `key` if it is `id`'s; false if it was not there as that.
    fn remove(&mut self, id: AccountId, key: &str) -> bool {
        match self.keys.get(key) {
            Some(entry) if entry.id == id => {}
            _ => return false,
        }
        if let Some(old) = self.keys.remove(key) {
            self.uncount(&old.skeleton);
        }
        true
    }

    fn uncount(&mut self, skeleton: &str) {
        if let Some(n) = self.skeletons.get_mut(skeleton) {
            *n -= 1;
            if *n == 0 {
                self.skeletons.remove(skeleton);
            }
        }
    }
}

/// A change the server made to the names, as [`AccountIndex::apply`] takes it.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// An account was created.
    Added {
        /// The new account.
        id: AccountId,
        /// Its folded name.
        key: &'a str,
        /// Its skeleton.
        skeleton: &'a str,
    },
    /// An account was renamed from `old_key`.
    Renamed {
        /// The account.
        id: AccountId,
        /// Its folded name before.
        old_key: &'a str,
        /// Its folded name now.
        key: &'a str,
        /// Its skeleton now.
        skeleton: &'a str,
    },
    /// An account was deleted.
    Removed {
        /// The account.
        id: AccountId,
        /// Its folded name.
        key: &'a str,
    },
}

/// The index; see the module docs. Its lock is held only for map
/// operations, never across a store call.
#[derive(Debug, Default)]
pub struct AccountIndex {
    /// The names; replaced whole by a reload.
    names: Mutex<Names>,
}

impl AccountIndex {
    /// Loads every account's names from `store` (blocks on it: call it at
    /// start or on a blocking thread).
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let index = AccountIndex::default();
        let names = Self::read(store)?;
        *index.lock() = names;
        Ok(index)
    }

    fn lock(&self) -> MutexGuard<'_, Names> {
        // The maps are consistent between statements; a panic elsewhere
        // while holding the lock leaves them usable.
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(store: &dyn Store) -> Result<Names, StoreError> {
        let mut names = Names::default();
        let version = store.account_names(&mut |id, key, skeleton| {
            names.insert(id, key, skeleton);
        })?;
        names.complete = version;
        names.newest = version;
        Ok(names)
    }

    /// Whether `key` is an account's folded name or `skeleton` an
    /// account's skeleton, as far as the index knows: a login under such a
    /// name must ask the store.
    pub fn may_be_taken(&self, key: &str, skeleton: &str) -> bool {
        let names = self.lock();
        names.keys.contains_key(key) || names.skeletons.contains_key(skeleton)
    }

    /// The account whose folded name is `key`, as far as the index knows
    /// (it may still hold an account deleted meanwhile by another process).
    pub fn account_id(&self, key: &str) -> Option<AccountId> {
        self.lock().keys.get(key).map(|e| e.id)
    }

    /// Whether `key` is an account's folded name, as far as the index
    /// knows (it may still hold an account deleted a moment ago).
    pub fn contains_key(&self, key: &str) -> bool {
        self.lock().keys.contains_key(key)
    }

    /// Accounts in the index.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether the index holds no account.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The version every change up to which the index holds.
    pub fn version(&self) -> AccountsVersion {
        self.lock().complete
    }

    /// Applies a change the server made, which the store gave `version`.
    pub fn apply(&self, change: Change<'_>, version: AccountsVersion) {
        let mut names = self.lock();
        if version <= names.complete {
            // A reload read the store after this change: it is in there.
            return;
        }
        let exact = version == names.complete + 1 && names.newest == names.complete;
        let mut applied = true;
        match change {
            Change::Added { id, key, skeleton } => names.insert(id, key, skeleton),
            Change::Renamed {
                id,
                old_key,
                key,
                skeleton,
            } => {
                if exact {
                    applied = names.remove(id, old_key);
                }
                names.insert(id, key, skeleton);
            }
            Change::Removed { id, key } => {
                applied = exact && names.remove(id, key);
            }
        }
        names.newest = names.newest.max(version);
        if exact && applied {
            names.complete = version;
        }
    }

    /// Adds `name` as account `id`'s: a name another server sharing the
    /// store gave an account (a node of the same cluster), known before
    /// the next reload finds it. Holding a name early costs at most a store
    /// read; lacking it would let a guest log in under it.
    pub fn learn(&self, id: AccountId, name: &str) {
        let (key, skeleton) = (
            crate::wire::protocol::fold_name(name),
            crate::wire::protocol::name_skeleton(name),
        );
        self.lock().insert(id, &key, &skeleton);
    }

    /// Reloads the names if the store's version is not the index's
    /// (blocks on the store: run it on a blocking thread). Returns whether
    /// a reload was installed.
    pub fn refresh(&self, store: &dyn Store) -> Result<bool, StoreError> {
        if store.accounts_version()? == self.version() {
            return Ok(false);
        }
        Ok(self.install(Self::read(store)?))
    }

    /// Puts a reload in place unless a change of the server's own is newer.
    fn install(&self, mut fresh: Names) -> bool {
        let mut names = self.lock();
        if fresh.complete < names.newest {
            // A change of the server's own committed after this read: it
            // would be lost. The next poll reads again.
            return false;
        }
        std::mem::swap(&mut *names, &mut fresh);
        drop(names);
        // The old maps are freed here, outside the lock.
        drop(fresh);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewAccount, SqliteStore};

    fn new(name: &str, skeleton: &str) -> NewAccount {
        NewAccount {
            name: name.to_owned(),
            key: name.to_owned(),
            skeleton: skeleton.to_owned(),
            password_hash: "$argon2id$x".to_owned(),
            created_at: 0,
        }
    }

    #[test]
    fn loads_the_names_and_answers_for_keys_and_skeletons() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_account(&new("alice", "a1ice")).unwrap();
        let index = AccountIndex::load(&store).unwrap();
        assert_eq!(index.len(), 1);
        assert!(index.may_be_taken("alice", "zzz"));
        assert!(index.may_be_taken("other", "a1ice"));
        assert!(!index.may_be_taken("bob", "b0b"));
        assert_eq!(index.version(), store.accounts_version().unwrap());
    }

    #[test]
    fn own_changes_in_turn_are_applied_exactly_and_need_no_reload() {
        let store = SqliteStore::open_in_memory().unwrap();
        let index = AccountIndex::load(&store).unwrap();
        let (id, v) = store.create_account(&new("alice", "a1ice")).unwrap();
        index.apply(
            Change::Added {
                id,
                key: "alice",
                skeleton: "a1ice",
            },
            v,
        );
        assert!(index.may_be_taken("alice", ""));
        let v = store.rename_account(id, "carol", "carol", "car0l").unwrap();
        index.apply(
            Change::Renamed {
                id,
                old_key: "alice",
                key: "carol",
                skeleton: "car0l",
            },
            v,
        );
        assert!(!index.may_be_taken("alice", "a1ice"));
        assert!(index.may_be_taken("carol", ""));
        assert_eq!(index.version(), v);
        assert!(!index.refresh(&store).unwrap(), "nothing to reload");
        let v = store.delete_account(id).unwrap();
        index.apply(Change::Removed { id, key: "carol" }, v);
        assert!(index.is_empty());
        assert!(!index.refresh(&store).unwrap());
    }

    #[test]
    fn another_writers_changes_are_found_by_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let server = SqliteStore::open(&path, &Default::default()).unwrap();
        let admin = SqliteStore::open(&path, &Default::default()).unwrap();
        let index = AccountIndex::load(&server).unwrap();
        let (zoe, _) = admin.create_account(&new("zoe", "z0e")).unwrap();
        assert!(!index.may_be_taken("zoe", "z0e"), "not polled yet");
        assert!(index.refresh(&server).unwrap());
        assert!(index.may_be_taken("zoe", "z0e"));

        // A change of the server's own after another's: the new name
        // counts at once, the other's removal only after the reload.
        admin.delete_account(zoe).unwrap();
        let (bob, v) = server.create_account(&new("bob", "b0b")).unwrap();
        index.apply(
            Change::Added {
                id: bob,
                key: "bob",
                skeleton: "b0b",
            },
            v,
        );
        assert!(index.may_be_taken("bob", ""));
        assert!(index.may_be_taken("zoe", ""), "kept until the reload");
        assert!(index.refresh(&server).unwrap());
        assert!(index.may_be_taken("bob", ""));
        assert!(!index.may_be_taken("zoe", "z0e"));
    }

    #[test]
    fn a_reload_older_than_an_own_change_is_not_installed() {
        let store = SqliteStore::open_in_memory().unwrap();
        let index = AccountIndex::load(&store).unwrap();
        // Another writer's change, read by a reload that is slow to finish...
        store.create_account(&new("zoe", "z0e")).unwrap();
        let stale = AccountIndex::read(&store).unwrap();
        // ...while the server registers bob (not in turn: zoe came first).
        let (bob, v) = store.create_account(&new("bob", "b0b")).unwrap();
        index.apply(
            Change::Added {
                id: bob,
                key: "bob",
                skeleton: "b0b",
            },
            v,
        );
        assert!(!index.install(stale), "the stale read would drop bob");
        assert!(index.may_be_taken("bob", ""));
        assert!(index.refresh(&store).unwrap());
        assert!(index.may_be_taken("bob", "") && index.may_be_taken("zoe", ""));
    }
}
