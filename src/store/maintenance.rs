//! What an operator does to a database file beside serving it: a
//! consistent backup while the server runs ([`backup`]); the tests here
//! also upgrade a database made at the oldest schema version.
//!
//! A restore is starting the server with the backup as `--db`; an upgrade
//! is starting a newer server on the old file (it migrates the schema in
//! place at open, see [`super::sqlite`]).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::sqlite::{check_readable, classify, user_version};
use super::StoreError;

/// Pause between two tries while the source is locked (a checkpoint).
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// There is no database file to copy.
    #[error("there is no database file at {}", .0.display())]
    NoDatabase(PathBuf),
    /// The target exists: a backup never overwrites a file.
    #[error("{} already exists; a backup never overwrites a file", .0.display())]
    Exists(PathBuf),
    /// The copy could not be created, written or renamed into place.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The database refused (not a database, newer schema, locked, corrupt).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The schema version of the copy (that of the source).
    pub schema_version: i64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copies the database at `db` to `out` with SQLite's online backup API,
/// while other processes (the running server) go on using it.
///
/// The copy is taken in one backup step, under one read transaction, so it
/// is the database as of one commit, whatever is written meanwhile; in WAL
/// mode that read does not hold up the server's writer. It is written to
/// `out.partial`, checked (`PRAGMA quick_check`), and only then renamed to
/// `out`, so `out` is never half a database. `out` must not exist (an old
/// backup is never overwritten); `wait` bounds the time spent waiting for
/// a lock. Nothing is written to `db`, and a file from a newer version, or
/// one that is not a database, is refused as the server refuses it.
pub fn backup(db: &Path, out: &Path, wait: Duration) -> Result<BackupReport, BackupError> {
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let source = open_source(db, wait)?;
    check_readable(&source)?;
    let schema_version = user_version(&source)?;
    let partial = partial_path(out);
    // create_new: never take over a file somebody else is writing.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
        .map_err(|e| StoreError::Unwritable(format!("cannot create {}: {e}", partial.display())))?;
    let result = copy(&source, &partial, wait).and_then(|()| {
        std::fs::rename(&partial, out).map_err(|e| {
            StoreError::Unwritable(format!("cannot rename {}: {e}", partial.display()))
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        schema_version,
        bytes,
    })
}

/// Opens the source for the backup. Read-write without create, so the WAL
/// index can be shared with a running server; read-only when that is all
/// the file allows. Neither writes anything.
fn open_source(db: &Path, wait: Duration) -> Result<Connection, StoreError> {
    let open = |flags| -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(db, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(classify)?;
        conn.busy_timeout(wait).map_err(classify)?;
        Ok(conn)
    };
    open(OpenFlags::SQLITE_OPEN_READ_WRITE).or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_ONLY))
}

fn copy(source: &Connection, partial: &Path, wait: Duration) -> Result<(), StoreError> {
    let mut dest = Connection::open(partial).map_err(classify)?;
    {
        let backup = Backup::new(source, &mut dest).map_err(classify)?;
        let deadline = Instant::now() + wait;
        loop {
            // -1: every page in this one step (one read transaction).
            match backup.step(-1).map_err(classify)? {
                StepResult::Done => break,
                StepResult::More => continue,
                StepResult::Busy | StepResult::Locked => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::Busy(format!(
                            "the database stayed locked for {wait:?}"
                        )));
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
                // StepResult is non-exhaustive.
                _ => std::thread::sleep(BUSY_PAUSE),
            }
        }
    }
    let check: String = dest
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(classify)?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the copy fails its check: {check}"
        )));
    }
    // The copy is a database of its own: a search index made for the
    // source (restored next to it, say) is not taken for the copy's.
    dest.execute(
        "UPDATE meta SET value = abs(random()) WHERE name = 'search_token'",
        [],
    )
    .map_err(classify)?;
    dest.close().map_err(|(_, e)| classify(e))
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{SqliteStore, MIGRATIONS, SCHEMA_VERSION};
    use crate::store::{Store, StoreOptions, StoredMessage};
    use rusqlite_migration::Migrations;

    fn message(id: i64, text: &str) -> StoredMessage {
        StoredMessage {
            id,
            channel_key: "general".into(),
            channel: "general".into(),
            sender: "alice".into(),
            sender_key: "alice".into(),
            account: None,
            text: text.into(),
            timestamp: "2026-12-01T08:00:00.000Z".into(),
            attachments: None,
            edited: None,
            direct: None,
        }
    }

    fn texts(store: &SqliteStore) -> Vec<String> {
        store
            .messages_after("general", 0, 100)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect()
    }

    #[test]
    fn a_backup_taken_while_the_store_is_open_holds_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let live = SqliteStore::open(&db, &StoreOptions::default()).unwrap();
        live.append_messages(&[message(1, "one"), message(2, "two")])
            .unwrap();
        let out = dir.path().join("copy.db");
        let report = backup(&db, &out, Duration::from_secs(5)).unwrap();
        assert_eq!(report.schema_version, SCHEMA_VERSION);
        assert!(report.bytes > 0);
        // Written after the backup: not in it.
        live.append_messages(&[message(3, "three")]).unwrap();
        let copy = SqliteStore::open(&out, &StoreOptions::default()).unwrap();
        assert_eq!(texts(&copy), ["one", "two"]);
        assert_eq!(texts(&live), ["one", "two", "three"]);
        assert!(!dir.path().join("copy.db.partial").exists());
    }

    #[test]
    fn a_backup_never_overwrites_and_refuses_what_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        drop(SqliteStore::open(&db, &StoreOptions::default()).unwrap());
        let out = dir.path().join("old-backup.db");
        std::fs::write(&out, b"keep me").unwrap();
        assert!(matches!(
            backup(&db, &out, Duration::from_secs(1)),
            Err(BackupError::Exists(_))
        ));
        assert_eq!(std::fs::read(&out).unwrap(), b"keep me");

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let out = dir.path().join("junk-copy.db");
        assert!(matches!(
            backup(&junk, &out, Duration::from_secs(1)),
            Err(BackupError::Store(StoreError::NotADatabase))
        ));
        assert!(!out.exists() && !dir.path().join("junk-copy.db.partial").exists());
        assert!(matches!(
            backup(&dir.path().join("missing.db"), &out, Duration::from_secs(1)),
            Err(BackupError::NoDatabase(_))
        ));
    }

    /// A database made by the oldest schema (only the first migration
    /// applied, rows written with that version's SQL) is upgraded in place
    /// by opening it with this build, and keeps its rows.
    #[test]
    fn a_database_of_the_oldest_schema_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("old.db");
        {
            let mut conn = Connection::open(&db).unwrap();
            Migrations::new(MIGRATIONS[..1].to_vec())
                .to_latest(&mut conn)
                .unwrap();
            assert_eq!(user_version(&conn).unwrap(), 1);
            // Schema v1's own statements: they never change once released.
            conn.execute_batch(
                "INSERT INTO accounts (id, name, name_key, skeleton, password_hash, created_at)
                     VALUES (1, 'Alice', 'alice', 'alice', 'hash', 1700000000000);
                 INSERT INTO messages (id, channel_key, channel, sender, account, text, timestamp)
                     VALUES (41, 'general', 'general', 'Alice', 1, 'from v1', '2026-01-01T00:00:00.000Z');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&db, &StoreOptions::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(texts(&store), ["from v1"]);
        assert_eq!(store.max_message_id().unwrap(), 41);
        let alice = store
            .account_by_key("alice")
            .unwrap()
            .expect("the account stays");
        assert_eq!(alice.name, "Alice");
        // And it is a working database at the new version.
        store.append_messages(&[message(42, "after")]).unwrap();
        assert_eq!(texts(&store), ["from v1", "after"]);
    }
}
