//! The store's behaviour, case by case, on SQLite and on PostgreSQL: each
//! case is written once against `&dyn Store` and run on both (`sqlite_*`
//! and `postgres_*` tests), so the two implementations answer alike. Then
//! what only PostgreSQL has: its schema versions, refusals at open (no
//! server, no database, a newer schema) without the password in the
//! message, several stores ("nodes") writing one database at once, where
//! exactly one of two racing registrations wins, and a server that goes
//! away and comes back.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use chatmaster::store::{
    conversation_key, AccountId, Change, ChannelId, Direct, DirectScope, HistoryPage, MessageId,
    NewAccount, NewChannel, Page, Participant, PostgresStore, Scope, SearchQuery, SqliteStore,
    Store, StoreError, StoreOptions, StoredBan, StoredMessage, Unread,
};
use common::postgres::PgServer;

fn account(name: &str, skeleton: &str) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        key: name.to_lowercase(),
        skeleton: skeleton.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}"),
        created_at: 1_700_000_000_000,
    }
}

fn channel(name: &str, owner: AccountId, private: bool) -> NewChannel {
    NewChannel {
        name: name.to_owned(),
        key: name.to_lowercase(),
        owner,
        private,
        created_at: 1_700_000_000_001,
    }
}

fn message(id: MessageId, channel: &str, account: Option<AccountId>) -> StoredMessage {
    StoredMessage {
        account,
        text: format!("text {id}"),
        ..said(id, channel, "alice", "", "2026-12-01T07:00:00.000Z")
    }
}

fn said(id: MessageId, channel: &str, sender: &str, text: &str, at: &str) -> StoredMessage {
    StoredMessage::new(
        id,
        channel,
        &channel.to_lowercase(),
        sender,
        &sender.to_lowercase(),
        text,
        at,
    )
}

fn direct(id: MessageId, from: Participant<'_>, to: AccountId, offline: bool) -> StoredMessage {
    StoredMessage {
        channel_key: String::new(),
        channel: String::new(),
        direct: Some(Box::new(Direct {
            recipient: "Bob".into(),
            recipient_key: "bob".into(),
            recipient_account: Some(to),
            conversation: conversation_key(from, Participant::Account(to)),
            offline,
        })),
        ..message(id, "general", None)
    }
}

fn query(expression: &str) -> SearchQuery {
    SearchQuery {
        expression: expression.to_owned(),
        scope: Some(Scope::Except(vec![])),
        direct: None,
        direct_from: 0,
        sender_key: None,
        offset: 0,
        limit: 10,
        count_cap: 100,
    }
}

/// Ids of what a search found (after indexing, which SQLite needs).
fn found(store: &dyn Store, q: &SearchQuery) -> (usize, Vec<MessageId>) {
    // The writer's index change (in-memory stores) and the wait for the
    // index beside the writer (files) together: every store finds all.
    store.apply_changes(&[Change::Index]).unwrap();
    assert!(store.catch_up_search(Duration::from_secs(30)).unwrap());
    let hits = store.search(q).unwrap();
    (hits.total, hits.messages.iter().map(|m| m.id).collect())
}

fn ids(page: HistoryPage) -> (Vec<MessageId>, bool) {
    (page.messages.iter().map(|m| m.id).collect(), page.more)
}

fn accounts_are_created_found_changed_and_deleted(store: &dyn Store) {
    let (alice, v1) = store.create_account(&account("Alice", "a1ice")).unwrap();
    let (bob, v2) = store.create_account(&account("bob", "b0b")).unwrap();
    assert_ne!(alice, bob);
    assert_eq!(v2, v1 + 1);
    // Same key, and a look-alike (same skeleton), are both conflicts.
    for taken in [account("ALICE", "other"), account("AIice", "a1ice")] {
        assert_eq!(
            store.create_account(&taken),
            Err(StoreError::Conflict {
                existing: "Alice".into()
            })
        );
    }
    let found = store.account_by_key("alice").unwrap().unwrap();
    assert_eq!((found.id, found.name.as_str()), (alice, "Alice"));
    assert_eq!(found.password_hash, account("Alice", "").password_hash);
    assert_eq!(found.created_at, 1_700_000_000_000);
    assert_eq!(store.account_by_id(bob).unwrap().unwrap().name, "bob");
    assert_eq!(store.account_by_key("carol").unwrap(), None);
    assert_eq!(store.accounts_by_skeleton("a1ice").unwrap(), vec![found]);

    store.set_password(alice, "$argon2id$new").unwrap();
    assert_eq!(
        store.accounts_version().unwrap(),
        v2,
        "passwords do not count"
    );
    assert_eq!(
        store.account_by_id(alice).unwrap().unwrap().password_hash,
        "$argon2id$new"
    );
    assert_eq!(
        store.set_password(999_999, "x"),
        Err(StoreError::NotFound("account"))
    );
    // Renaming to one's own key (a change of case) is fine; to bob's is not.
    let v3 = store
        .rename_account(alice, "ALICE", "alice", "a1ice")
        .unwrap();
    assert_eq!(v3, v2 + 1);
    assert_eq!(
        store.rename_account(alice, "Bob", "bob", "zzz"),
        Err(StoreError::Conflict {
            existing: "bob".into()
        })
    );
    assert_eq!(
        store.rename_account(999_999, "Zed", "zed", "zed"),
        Err(StoreError::NotFound("account"))
    );
    let names: Vec<String> = store
        .list_accounts()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["ALICE", "bob"]);
    assert_eq!(store.delete_account(bob).unwrap(), v3 + 1);
    assert_eq!(store.account_by_id(bob).unwrap(), None);
    assert_eq!(
        store.delete_account(bob),
        Err(StoreError::NotFound("account"))
    );
    let mut names = Vec::new();
    let v = store
        .account_names(&mut |id, key, skeleton| {
            names.push((id, key.to_owned(), skeleton.to_owned()))
        })
        .unwrap();
    assert_eq!(
        (v, names),
        (v3 + 1, vec![(alice, "alice".into(), "a1ice".into())])
    );
    assert_eq!(store.accounts_version().unwrap(), v3 + 1);
    // The name is free again.
    store.create_account(&account("bob", "b0b")).unwrap();
}

fn registered_channels_keep_owner_privacy_and_admissions(store: &dyn Store) {
    let alice = store.create_account(&account("alice", "a")).unwrap().0;
    let bob = store.create_account(&account("bob", "b")).unwrap().0;
    let carol = store.create_account(&account("carol", "c")).unwrap().0;
    let rust = store
        .register_channel(&channel("Rust", alice, false))
        .unwrap();
    let den = store.register_channel(&channel("den", bob, true)).unwrap();
    assert_eq!(
        store.register_channel(&channel("RUST", bob, false)),
        Err(StoreError::Conflict {
            existing: "Rust".into()
        })
    );
    assert_eq!(
        store.register_channel(&channel("ghost", 999_999, false)),
        Err(StoreError::NotFound("account or channel"))
    );
    store.admit(den, carol).unwrap();
    store.admit(den, alice).unwrap();
    store.admit(den, carol).unwrap(); // idempotent
    assert_eq!(store.admitted(den).unwrap(), vec![alice, carol]);
    assert_eq!(
        store.admit(999_999, alice),
        Err(StoreError::NotFound("account or channel"))
    );
    store.set_channel_private(rust, true).unwrap();
    store.set_channel_owner(rust, carol).unwrap();
    assert_eq!(
        store.set_channel_owner(rust, 999_999),
        Err(StoreError::NotFound("account or channel"))
    );
    assert_eq!(
        store.set_channel_private(999_999, true),
        Err(StoreError::NotFound("channel"))
    );
    let all = store.registered_channels().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].name.as_str(), all[0].owner, all[0].private),
        ("den", bob, true)
    );
    assert_eq!(all[0].admitted, vec![alice, carol]);
    assert_eq!(all[0].created_at, 1_700_000_000_001);
    assert_eq!(
        (all[1].name.as_str(), all[1].owner, all[1].private),
        ("Rust", carol, true)
    );
    // An account's deletion takes its admissions and its channels along.
    store.delete_account(carol).unwrap();
    assert_eq!(store.admitted(den).unwrap(), vec![alice]);
    let names: Vec<String> = store
        .registered_channels()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["den"]);
    store.delete_channel(den).unwrap();
    assert_eq!(store.registered_channels().unwrap(), vec![]);
    assert_eq!(
        store.delete_channel(den),
        Err(StoreError::NotFound("channel"))
    );
}

fn topics_bans_and_deletion_with_messages(store: &dyn Store) {
    let alice = store.create_account(&account("alice", "a")).unwrap().0;
    let bob = store.create_account(&account("bob", "b")).unwrap().0;
    let rust = store
        .register_channel(&channel("Rust", alice, false))
        .unwrap();
    let den = store
        .register_channel(&channel("den", alice, true))
        .unwrap();
    store.set_channel_topic(rust, Some("borrowing")).unwrap();
    assert_eq!(
        store.set_channel_topic(999_999, Some("x")),
        Err(StoreError::NotFound("channel"))
    );
    let ban = |account, name: &str| StoredBan {
        account,
        name: name.into(),
        key: name.to_lowercase(),
        skeleton: format!("s-{}", name.to_lowercase()),
    };
    store.add_ban(rust, &ban(Some(bob), "bob")).unwrap();
    store.add_ban(rust, &ban(None, "Troll")).unwrap();
    // A ban on an account deleted meanwhile is kept as a name ban.
    store.add_ban(rust, &ban(Some(999_999), "ghost")).unwrap();
    store
        .rename_account(bob, "robert", "robert", "r0bert")
        .unwrap();
    let all = store.registered_channels().unwrap();
    let r = all.iter().find(|c| c.id == rust).unwrap();
    assert_eq!(r.topic.as_deref(), Some("borrowing"));
    assert_eq!(
        r.bans,
        vec![
            StoredBan {
                name: "robert".into(),
                ..ban(Some(bob), "bob")
            },
            ban(None, "Troll"),
            ban(None, "ghost"),
        ]
    );
    store.remove_ban(rust, "robert", Some(bob)).unwrap();
    store.remove_ban(rust, "troll", None).unwrap();
    store.remove_ban(rust, "nobody", None).unwrap();
    store.set_channel_topic(rust, None).unwrap();
    let all = store.registered_channels().unwrap();
    let r = all.iter().find(|c| c.id == rust).unwrap();
    assert_eq!(
        (r.topic.as_deref(), r.bans.clone()),
        (None, vec![ban(None, "ghost")])
    );
    // Deleting a channel takes its messages, not other channels'.
    store
        .append_messages(&[
            message(1, "rust", Some(alice)),
            message(2, "den", Some(alice)),
            message(3, "rust", None),
        ])
        .unwrap();
    store.delete_channel_and_messages(rust).unwrap();
    assert_eq!(store.messages_after("rust", 0, 10).unwrap(), vec![]);
    assert_eq!(store.messages_after("den", 0, 10).unwrap().len(), 1);
    let left: Vec<ChannelId> = store
        .registered_channels()
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, vec![den]);
    assert_eq!(
        store.delete_channel_and_messages(rust),
        Err(StoreError::NotFound("channel"))
    );
}

fn messages_are_appended_in_batches_and_read_back_by_channel(store: &dyn Store) {
    assert_eq!(store.max_message_id().unwrap(), 0);
    store.append_messages(&[]).unwrap();
    let alice = store.create_account(&account("alice", "a")).unwrap().0;
    let batch: Vec<StoredMessage> = (1..=10)
        .map(|id| {
            let mut m = message(
                id,
                if id % 2 == 0 { "Rust" } else { "general" },
                Some(alice),
            );
            if id == 4 {
                m.attachments = Some(r#"[{"name":"a.png"}]"#.into());
                m.edited = Some("2026-12-01T08:00:00.000Z".into());
                m.text = "naïve café ☕ 東京 'quoted' \\ \"x\"".into();
            }
            m
        })
        .collect();
    store.append_messages(&batch).unwrap();
    assert_eq!(store.max_message_id().unwrap(), 10);
    let rust = store.messages_after("rust", 0, 100).unwrap();
    assert_eq!(
        rust,
        batch
            .iter()
            .filter(|m| m.id % 2 == 0)
            .cloned()
            .collect::<Vec<_>>()
    );
    let page = store.messages_after("general", 3, 2).unwrap();
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), [5, 7]);
    assert_eq!(store.message(4).unwrap().as_ref(), Some(&batch[3]));
    // A batch is all or nothing: a reused id fails it whole.
    let err = store
        .append_messages(&[message(11, "general", None), message(4, "general", None)])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Backend(ref m) if m.contains("message 4")),
        "{err}"
    );
    assert_eq!(store.max_message_id().unwrap(), 10);
    store
        .append_messages(&[message(11, "general", Some(999_999))])
        .unwrap();
    assert_eq!(store.message(11).unwrap().unwrap().account, None);
    // A deleted account's messages stay, unlinked.
    store.delete_account(alice).unwrap();
    let kept = store.messages_after("rust", 0, 100).unwrap();
    assert_eq!(kept.len(), 5);
    assert!(kept
        .iter()
        .all(|m| m.account.is_none() && m.sender == "alice"));
}

fn history_pages_in_both_directions_with_more(store: &dyn Store) {
    let batch: Vec<StoredMessage> = (1..=9)
        .map(|id| {
            said(
                id,
                if id % 3 == 0 { "rust" } else { "general" },
                "a",
                "x",
                "t",
            )
        })
        .collect();
    store.append_messages(&batch).unwrap();
    let h = |key, page, limit| ids(store.history(key, page, limit).unwrap());
    assert_eq!(h("general", Page::Latest, 2), (vec![7, 8], true));
    assert_eq!(h("general", Page::Before(7), 10), (vec![1, 2, 4, 5], false));
    assert_eq!(h("general", Page::After(2), 2), (vec![4, 5], true));
    assert_eq!(h("general", Page::After(5), 2), (vec![7, 8], false));
    assert_eq!(h("rust", Page::Latest, 3), (vec![3, 6, 9], false));
    assert_eq!(h("none", Page::Latest, 3), (vec![], false));
    assert_eq!(h("general", Page::Latest, usize::MAX).0.len(), 6);
    assert_eq!(
        store.message(6).unwrap().map(|m| m.channel),
        Some("rust".into())
    );
    assert_eq!(store.message(60).unwrap(), None);
}

fn changes_edit_delete_purge_and_search_follows(store: &dyn Store) {
    store
        .append_messages(&[
            said(1, "general", "a", "alpha beta", "t"),
            said(2, "tmp", "a", "alpha gamma", "t"),
            said(3, "general", "b", "delta", "t"),
        ])
        .unwrap();
    let find = |q: &str| found(store, &query(&format!("\"{q}\""))).1;
    assert_eq!(find("alpha"), [2, 1]);
    let rows = store
        .apply_changes(&[
            Change::Edit {
                id: 1,
                text: "omega".into(),
                edited: "t2".into(),
            },
            Change::Delete(3),
            Change::Delete(3),
            Change::Purge {
                channel_key: "tmp".into(),
                up_to: 2,
            },
        ])
        .unwrap();
    assert_eq!(rows, [1, 1, 0, 1]);
    assert_eq!(find("alpha"), Vec::<i64>::new());
    assert_eq!(find("omega"), [1]);
    assert_eq!(find("delta"), Vec::<i64>::new());
    assert_eq!(
        store.message(1).unwrap().unwrap().edited.as_deref(),
        Some("t2")
    );
    // A purge keeps what a later channel of the name said.
    store
        .append_messages(&[said(4, "tmp", "a", "new", "t")])
        .unwrap();
    store
        .apply_changes(&[Change::Purge {
            channel_key: "tmp".into(),
            up_to: 3,
        }])
        .unwrap();
    assert_eq!(
        store
            .history("tmp", Page::Latest, 5)
            .unwrap()
            .messages
            .len(),
        1
    );
    // Edited or deleted before the index caught up: found as they are now.
    store
        .append_messages(&[
            said(5, "general", "a", "first draft", "t"),
            said(6, "general", "a", "to be gone", "t"),
        ])
        .unwrap();
    store
        .apply_changes(&[
            Change::Edit {
                id: 5,
                text: "final words".into(),
                edited: "t2".into(),
            },
            Change::Delete(6),
        ])
        .unwrap();
    assert_eq!(
        (find("draft"), find("final"), find("gone")),
        (vec![], vec![5], vec![])
    );
    // A bad expression is a query error, not a backend one.
    let bad = store.search(&SearchQuery {
        scope: Some(Scope::Only(vec!["general".into()])),
        ..query("AND (")
    });
    assert!(matches!(bad, Err(StoreError::Query(_))), "{bad:?}");
    // Messages of channels that are gone go, direct ones stay.
    store
        .append_messages(&[
            said(7, "keep", "a", "k", "t"),
            said(8, "gone", "a", "g", "t"),
            StoredMessage {
                channel_key: String::new(),
                channel: String::new(),
                ..direct(9, Participant::Guest("al"), 1, false)
            },
        ])
        .unwrap();
    let rows = store
        .apply_changes(&[Change::PurgeOthers {
            keep: vec!["keep".into(), "general".into(), "tmp".into()],
        }])
        .unwrap();
    assert_eq!(rows, [1]);
    assert!(store.message(8).unwrap().is_none());
    assert!(store.message(9).unwrap().is_some());
}

fn search_scopes_authors_pages_and_folding(store: &dyn Store) {
    let bob = store.create_account(&account("bob", "b0b")).unwrap().0;
    let at = "t";
    let mut batch = vec![
        said(1, "general", "Ann", "The Café is open", at),
        said(2, "rust", "Ann", "borrow checker at the cafe", at),
        said(3, "secret", "Cid", "cafe in secret", at),
        said(4, "general", "Cid", "caffeine and CAFES", at),
        said(5, "general", "Ann", "big red dog", at),
        said(6, "general", "Ann", "red big dog", at),
    ];
    let dm = |id, from, text: &str| StoredMessage {
        text: text.into(),
        sender: "Ann".into(),
        sender_key: "ann".into(),
        ..direct(id, from, bob, false)
    };
    batch.push(dm(7, Participant::Guest("ann"), "a cafe for two"));
    batch.push(dm(8, Participant::Guest("zed"), "cafe with zed"));
    batch.push(dm(9, Participant::Guest("ann"), "later cafe"));
    store.append_messages(&batch).unwrap();
    let q = |expression: &str| query(expression);
    // Case and diacritics fold: cafe finds Café; prefixes reach further.
    assert_eq!(found(store, &q("\"cafe\"")), (3, vec![3, 2, 1]));
    assert_eq!(found(store, &q("\"caf\"*")), (4, vec![4, 3, 2, 1]));
    assert_eq!(found(store, &q("\"CAFÉ\"")).1, [3, 2, 1]);
    // Every term must match; a phrase keeps its words in order.
    assert_eq!(found(store, &q("\"cafe\" \"open\"")).1, [1]);
    assert_eq!(found(store, &q("\"big red\"")).1, [5]);
    assert_eq!(found(store, &q("\"red\" \"big\"")).1, [6, 5]);
    assert_eq!(found(store, &q("\"big re\"*")).1, [5]);
    assert_eq!(found(store, &q("\"nothing\"")), (0, vec![]));
    // Scopes and authors.
    let only = SearchQuery {
        scope: Some(Scope::Only(vec!["general".into(), "rust".into()])),
        ..q("\"cafe\"")
    };
    assert_eq!(found(store, &only).1, [2, 1]);
    let except = SearchQuery {
        scope: Some(Scope::Except(vec!["secret".into()])),
        ..q("\"caf\"*")
    };
    assert_eq!(found(store, &except).1, [4, 2, 1]);
    let by = SearchQuery {
        sender_key: Some("cid".into()),
        ..q("\"caf\"*")
    };
    assert_eq!(found(store, &by).1, [4, 3]);
    // Pages and the count's cap.
    let paged = SearchQuery {
        offset: 1,
        limit: 2,
        ..q("\"caf\"*")
    };
    assert_eq!(found(store, &paged), (4, vec![3, 2]));
    let capped = SearchQuery {
        count_cap: 2,
        ..q("\"caf\"*")
    };
    assert_eq!(found(store, &capped).0, 2);
    // Direct messages: none without a direct scope, one conversation, or
    // every conversation of a party, from an id on.
    let ann_bob = conversation_key(Participant::Guest("ann"), Participant::Account(bob));
    let conversation = SearchQuery {
        scope: None,
        direct: Some(DirectScope::Conversation(ann_bob)),
        ..q("\"cafe\"")
    };
    assert_eq!(found(store, &conversation), (2, vec![9, 7]));
    let party = SearchQuery {
        scope: None,
        direct: Some(DirectScope::Party(format!("#{bob}"))),
        direct_from: 8,
        ..q("\"cafe\"")
    };
    assert_eq!(found(store, &party).1, [9, 8]);
    let not_a_party = SearchQuery {
        direct: Some(DirectScope::Party("an".into())),
        ..party.clone()
    };
    assert_eq!(found(store, &not_a_party).1, Vec::<i64>::new());
    // Both sides at once: merged, newest first, paged across the two.
    let both = SearchQuery {
        scope: Some(Scope::Except(vec![])),
        direct: Some(DirectScope::Party("ann".into())),
        offset: 1,
        limit: 3,
        ..q("\"cafe\"")
    };
    assert_eq!(found(store, &both), (5, vec![7, 3, 2]));
}

fn expiry_walks_the_oldest_ids_and_stops_at_the_first_recent_one(store: &dyn Store) {
    let batch: Vec<StoredMessage> = (1..=10)
        .map(|id| {
            let at = if id <= 6 {
                "2020-01-01T00:00:00.000Z"
            } else {
                "2030-01-01T00:00:00.000Z"
            };
            said(id, "general", "a", "x", at)
        })
        .collect();
    store.append_messages(&batch).unwrap();
    let expire = |limit| {
        store
            .apply_changes(&[Change::Expire {
                before: "2026-01-01T00:00:00.000Z".into(),
                limit,
            }])
            .unwrap()[0]
    };
    assert_eq!(expire(4), 4);
    assert_eq!(expire(4), 2);
    assert_eq!(expire(4), 0);
    assert_eq!(
        store
            .history("general", Page::After(0), 100)
            .unwrap()
            .messages[0]
            .id,
        7
    );
}

fn read_marks_give_unread_counts_and_never_go_down(store: &dyn Store) {
    let alice = store.create_account(&account("alice", "a")).unwrap().0;
    let club = store
        .register_channel(&channel("Club", alice, false))
        .unwrap();
    let batch: Vec<StoredMessage> = (1..=5).map(|id| said(id, "club", "b", "x", "t")).collect();
    store.append_messages(&batch).unwrap();
    assert_eq!(store.unread(alice, 100).unwrap(), vec![]);
    let mark = |last_id| {
        store
            .apply_changes(&[Change::MarkRead {
                account: alice,
                channel: club,
                last_id,
            }])
            .unwrap();
    };
    mark(2);
    assert_eq!(
        store.unread(alice, 100).unwrap(),
        vec![Unread {
            channel: "Club".into(),
            count: 3,
            last_id: 2
        }]
    );
    assert_eq!(store.unread(alice, 2).unwrap()[0].count, 2, "capped");
    mark(1);
    assert_eq!(store.unread(alice, 100).unwrap()[0].last_id, 2);
    mark(5);
    assert_eq!(store.unread(alice, 100).unwrap(), vec![]);
}

fn direct_messages_backlogs_markers_and_ignores(store: &dyn Store) {
    let bob = store.create_account(&account("bob", "b0b")).unwrap().0;
    let alice = Participant::Guest("alice");
    let batch = [
        direct(1, alice, bob, true),
        message(2, "general", None),
        direct(3, alice, bob, false),
        direct(4, alice, bob, true),
        direct(5, alice, bob, true),
    ];
    store.append_messages(&batch).unwrap();
    let list = |v: Vec<StoredMessage>| v.iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(list(store.direct_backlog(bob, 0, 10).unwrap()), [1, 4, 5]);
    assert_eq!(list(store.direct_backlog(bob, 1, 1).unwrap()), [4]);
    assert_eq!(store.direct_backlog(bob, 0, 10).unwrap()[0], batch[0]);
    assert_eq!(list(store.messages_after("general", 0, 10).unwrap()), [2]);
    let conversation = conversation_key(alice, Participant::Account(bob));
    assert_eq!(conversation, format!("#{bob} alice"));
    assert_eq!(
        ids(store
            .direct_history(&conversation, 0, Page::Latest, 2)
            .unwrap()),
        (vec![4, 5], true)
    );
    assert_eq!(
        ids(store
            .direct_history(&conversation, 3, Page::Before(5), 10)
            .unwrap()),
        (vec![3, 4], false)
    );
    // The marker only goes up.
    assert_eq!(store.direct_delivered(bob).unwrap(), 0);
    assert_eq!(store.direct_waiting(bob, 10).unwrap(), 3);
    assert_eq!(store.direct_waiting(bob, 2).unwrap(), 2);
    store.set_direct_delivered(bob, 4).unwrap();
    assert_eq!(store.direct_waiting(bob, 10).unwrap(), 1);
    store.set_direct_delivered(bob, 1).unwrap();
    assert_eq!(store.direct_delivered(bob).unwrap(), 4);
    // Ignore lists, idempotent both ways.
    store.add_ignore(bob, "carol", "Carol").unwrap();
    store.add_ignore(bob, "carol", "CAROL").unwrap();
    store.add_ignore(bob, "al", "al").unwrap();
    assert_eq!(
        store.ignores(bob).unwrap(),
        [("al".into(), "al".into()), ("carol".into(), "CAROL".into())]
    );
    store.remove_ignore(bob, "al").unwrap();
    store.remove_ignore(bob, "al").unwrap();
    assert_eq!(store.ignores(bob).unwrap().len(), 1);
    // A deleted account takes its backlog link, marker, list and
    // conversations along; the messages stay.
    store.delete_account(bob).unwrap();
    assert_eq!(store.direct_backlog(bob, 0, 10).unwrap(), vec![]);
    assert_eq!(store.direct_delivered(bob).unwrap(), 0);
    assert_eq!(store.ignores(bob).unwrap(), vec![]);
    assert_eq!(
        store
            .direct_history(&conversation, 0, Page::Latest, 10)
            .unwrap()
            .messages,
        vec![]
    );
    store.set_direct_delivered(bob, 9).unwrap();
    assert_eq!(store.direct_delivered(bob).unwrap(), 0);
    assert_eq!(store.max_message_id().unwrap(), 5);
    // A recipient account deleted before the commit is stored as none.
    store
        .append_messages(&[direct(6, alice, 999_999, true)])
        .unwrap();
    let kept = store.message(6).unwrap().unwrap();
    assert_eq!(kept.direct.unwrap().recipient_account, None);
}

/// Runs each case on a fresh SQLite file and on a fresh PostgreSQL
/// database, as `sqlite_<case>` and `postgres_<case>`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(
                        &dir.path().join("chat.db"),
                        &super::StoreOptions::default(),
                    )
                    .unwrap();
                    super::$case(&store);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    let Some(pg) = super::PgServer::shared() else { return };
                    let store = super::pg_store(&pg.fresh_database());
                    super::$case(&store);
                }
            )*
        }
    };
}

on_both!(
    accounts_are_created_found_changed_and_deleted,
    registered_channels_keep_owner_privacy_and_admissions,
    topics_bans_and_deletion_with_messages,
    messages_are_appended_in_batches_and_read_back_by_channel,
    history_pages_in_both_directions_with_more,
    changes_edit_delete_purge_and_search_follows,
    search_scopes_authors_pages_and_folding,
    expiry_walks_the_oldest_ids_and_stops_at_the_first_recent_one,
    read_marks_give_unread_counts_and_never_go_down,
    direct_messages_backlogs_markers_and_ignores,
);

fn pg_store(url: &str) -> PostgresStore {
    PostgresStore::open(url, &StoreOptions::default()).unwrap()
}

#[test]
fn a_database_is_migrated_once_and_reopens_with_its_data() {
    let Some(pg) = PgServer::shared() else { return };
    let url = pg.fresh_database();
    // Two nodes starting at once: the migration lock lets one migrate.
    let stores: Vec<PostgresStore> = std::thread::scope(|s| {
        let opening: Vec<_> = (0..2).map(|_| s.spawn(|| pg_store(&url))).collect();
        opening.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for store in &stores {
        assert_eq!(
            store.schema_version().unwrap(),
            chatmaster::store::postgres::SCHEMA_VERSION
        );
    }
    stores[0]
        .append_messages(&[message(7, "general", None)])
        .unwrap();
    assert_eq!(stores[1].max_message_id().unwrap(), 7);
    drop(stores);
    let again = pg_store(&url);
    assert_eq!(again.max_message_id().unwrap(), 7);
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(
        pg.psql(
            db,
            "SELECT string_agg(version::text, ',') FROM chatmaster_schema"
        ),
        "1"
    );
    // The index is a GIN index over a column the database keeps.
    assert_eq!(
        pg.psql(
            db,
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'messages' \
             AND indexdef LIKE '%USING gin (search)%'"
        ),
        "2"
    );
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let Some(pg) = PgServer::shared() else { return };
    let url = pg.fresh_database();
    drop(pg_store(&url));
    let db = url.rsplit('/').next().unwrap();
    pg.psql(
        db,
        "INSERT INTO chatmaster_schema (version, applied_at) VALUES (99, 0)",
    );
    let tables = "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables \
                  WHERE schemaname = 'public'";
    let before = pg.psql(db, tables);
    assert_eq!(
        PostgresStore::open(&url, &StoreOptions::default()).unwrap_err(),
        StoreError::NewerSchema {
            found: 99,
            supported: chatmaster::store::postgres::SCHEMA_VERSION
        }
    );
    assert_eq!(pg.psql(db, tables), before);
    assert_eq!(
        pg.psql(db, "SELECT max(version) FROM chatmaster_schema"),
        "99"
    );
}

#[test]
fn open_failures_say_why_in_one_line_without_the_password() {
    let Some(pg) = PgServer::shared() else { return };
    // Nothing listens on a port just freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("postgres://chatmaster:hunter2@127.0.0.1:{closed}/chat");
    let missing = format!(
        "postgresql://chatmaster:hunter2@127.0.0.1:{}/no_such_db",
        pg.port
    );
    let malformed = "postgres://chatmaster:hunter2@127.0.0.1:notaport/chat".to_owned();
    // A login refused: no such role.
    let stranger = format!(
        "postgres://nobody_here:hunter2@127.0.0.1:{}/postgres",
        pg.port
    );
    for (url, says) in [
        (stranger, "role \"nobody_here\" does not exist"),
        (
            unreachable,
            "cannot connect to postgres://chatmaster:***@127.0.0.1",
        ),
        (missing, "no_such_db\" does not exist"),
        (malformed, "not a usable PostgreSQL URL"),
    ] {
        let err = PostgresStore::open(&url, &StoreOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(text.contains(says), "{text}");
        assert!(!text.contains("hunter2") && !text.contains('\n'), "{text}");
    }
}

#[test]
fn two_nodes_racing_for_one_name_or_channel_make_exactly_one() {
    let Some(pg) = PgServer::shared() else { return };
    let url = pg.fresh_database();
    let nodes = [Arc::new(pg_store(&url)), Arc::new(pg_store(&url))];
    let owner = nodes[0]
        .create_account(&account("owner", "0wner"))
        .unwrap()
        .0;
    const ROUNDS: usize = 8;
    const RACERS: usize = 4;
    for round in 0..ROUNDS {
        // Same key on some racers, a look-alike (same skeleton, another
        // key) on the others: one account in all.
        let barrier = Arc::new(Barrier::new(RACERS));
        let results: Vec<_> = (0..RACERS)
            .map(|i| {
                let (node, barrier) = (Arc::clone(&nodes[i % 2]), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let name = if i < 2 {
                        format!("Name{round}")
                    } else {
                        format!("Narne{round}")
                    };
                    barrier.wait();
                    let account = node.create_account(&account(&name, &format!("s{round}")));
                    barrier.wait();
                    let channel =
                        node.register_channel(&channel(&format!("room{round}"), owner, false));
                    (account, channel)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let made: Vec<_> = results.iter().filter_map(|(a, _)| a.clone().ok()).collect();
        assert_eq!(made.len(), 1, "round {round}: {results:?}");
        let winner = nodes[0].account_by_id(made[0].0).unwrap().unwrap().name;
        for (a, _) in &results {
            if let Err(e) = a {
                assert_eq!(
                    e,
                    &StoreError::Conflict {
                        existing: winner.clone()
                    }
                );
            }
        }
        let rooms: Vec<_> = results.iter().filter_map(|(_, c)| c.clone().ok()).collect();
        assert_eq!(rooms.len(), 1, "round {round}: {results:?}");
        for (_, c) in &results {
            if let Err(e) = c {
                assert_eq!(
                    e,
                    &StoreError::Conflict {
                        existing: format!("room{round}")
                    }
                );
            }
        }
    }
    // Every account change counted once, whichever node made it, and the
    // versions each creation returned are all different.
    assert_eq!(nodes[1].accounts_version().unwrap(), 1 + ROUNDS as i64);
    assert_eq!(nodes[1].list_accounts().unwrap().len(), 1 + ROUNDS);
}

#[test]
fn two_nodes_write_messages_and_markers_side_by_side() {
    let Some(pg) = PgServer::shared() else { return };
    let url = pg.fresh_database();
    let nodes = [Arc::new(pg_store(&url)), Arc::new(pg_store(&url))];
    let bob = nodes[0].create_account(&account("bob", "b0b")).unwrap().0;
    let club = nodes[0]
        .register_channel(&channel("club", bob, false))
        .unwrap();
    const PER_NODE: i64 = 200;
    std::thread::scope(|s| {
        for (n, node) in nodes.iter().enumerate() {
            s.spawn(move || {
                // Interleaved ids, as nodes with their own id ranges would
                // not give, to make the two writers meet on every page.
                for chunk in (0..PER_NODE).collect::<Vec<_>>().chunks(20) {
                    let batch: Vec<StoredMessage> = chunk
                        .iter()
                        .map(|i| said(i * 2 + 1 + n as i64, "club", "x", "words", "t"))
                        .collect();
                    node.append_messages(&batch).unwrap();
                    let last = batch.last().unwrap().id;
                    node.apply_changes(&[Change::MarkRead {
                        account: bob,
                        channel: club,
                        last_id: last,
                    }])
                    .unwrap();
                    node.set_direct_delivered(bob, last).unwrap();
                    node.admit(club, bob).unwrap();
                    node.add_ignore(bob, "x", "X").unwrap();
                }
            });
        }
    });
    let all = nodes[1].messages_after("club", 0, 10_000).unwrap();
    assert_eq!(all.len(), 2 * PER_NODE as usize);
    // The markers kept the highest either node set.
    assert_eq!(nodes[1].direct_delivered(bob).unwrap(), 2 * PER_NODE);
    assert_eq!(nodes[1].unread(bob, 10).unwrap(), vec![]);
    assert_eq!(nodes[1].admitted(club).unwrap(), vec![bob]);
    assert_eq!(nodes[1].ignores(bob).unwrap().len(), 1);
    // A message id another node used already is refused.
    let err = nodes[1]
        .append_messages(&[said(1, "club", "x", "again", "t")])
        .unwrap_err();
    assert!(err.to_string().contains("message 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opens_works_and_drops_on_an_async_worker() {
    // The server opens its store on a worker; nothing may panic there.
    let Some(pg) = PgServer::shared() else { return };
    let url = pg.fresh_database();
    let store = pg_store(&url);
    store
        .append_messages(&[message(1, "general", None)])
        .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let s = Arc::clone(&store);
    let max = tokio::task::spawn_blocking(move || s.max_message_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(max, 1);
    drop(store);
}

#[test]
fn a_server_that_goes_away_is_refused_until_it_returns() {
    let Some(pg) = PgServer::start_or_skip() else {
        return;
    };
    let url = pg.fresh_database();
    let store = pg_store(&url);
    store
        .append_messages(&[message(1, "general", None)])
        .unwrap();
    pg.stop();
    // Every connection is gone: writes and reads fail with a clear error,
    // and nothing claims to be stored.
    for _ in 0..2 {
        let err = store
            .append_messages(&[message(2, "general", None)])
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = store.history("general", Page::Latest, 10).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }
    pg.restart();
    store
        .append_messages(&[message(2, "general", None)])
        .unwrap();
    assert_eq!(
        ids(store.history("general", Page::Latest, 10).unwrap()),
        (vec![1, 2], false)
    );
}
