//! Message ids and the store's writer against a real server on
//! 127.0.0.1:0, over a store whose commits the test holds back: a
//! delivery goes out before the commit, `message_sent` only after it, and
//! a writer that falls behind stops the sender being read (its queue never
//! grows past the limit) without losing a message.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chatmaster::server::chat::Hub;
use chatmaster::store::{
    Account, AccountId, AccountsVersion, Change, ChannelId, HistoryPage, MessageId, NewAccount,
    NewChannel, Page, RegisteredChannel, SearchHits, SearchQuery, SqliteStore, Store, StoreError,
    StoredBan, StoredMessage, Unread,
};
use chatmaster::wire::protocol::{Notification, OutgoingMessage, ServerPackage};
use chatmaster::{ClientPackage, Config, Server};
use common::*;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An in-memory store whose message commits wait while the gate is shut.
#[derive(Debug)]
struct GatedStore {
    inner: SqliteStore,
    /// Open?, and how many batches are waiting at the gate.
    gate: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl GatedStore {
    fn new(open: bool) -> Arc<Self> {
        Arc::new(GatedStore {
            inner: SqliteStore::open_in_memory().unwrap(),
            gate: Mutex::new((open, 0)),
            changed: Condvar::new(),
        })
    }

    fn open(&self) {
        self.gate.lock().unwrap().0 = true;
        self.changed.notify_all();
    }

    fn close(&self) {
        self.gate.lock().unwrap().0 = false;
    }

    /// Blocks (in a test thread) until a batch is waiting at the gate.
    fn wait_for_waiting_batch(&self) {
        let g = self.gate.lock().unwrap();
        let (g, timeout) = self
            .changed
            .wait_timeout_while(g, WAIT, |(_, waiting)| *waiting == 0)
            .unwrap();
        assert!(
            !timeout.timed_out() && g.1 > 0,
            "no batch reached the store"
        );
    }
}

impl Store for GatedStore {
    fn append_messages(&self, batch: &[StoredMessage]) -> Result<(), StoreError> {
        let mut g = self.gate.lock().unwrap();
        g.1 += 1;
        self.changed.notify_all();
        while !g.0 {
            g = self.changed.wait(g).unwrap();
        }
        g.1 -= 1;
        drop(g);
        self.inner.append_messages(batch)
    }
    fn max_message_id(&self) -> Result<MessageId, StoreError> {
        self.inner.max_message_id()
    }
    fn direct_backlog(
        &self,
        account: AccountId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.direct_backlog(account, after, limit)
    }
    fn direct_waiting(&self, account: AccountId, cap: usize) -> Result<usize, StoreError> {
        self.inner.direct_waiting(account, cap)
    }
    fn direct_delivered(&self, account: AccountId) -> Result<MessageId, StoreError> {
        self.inner.direct_delivered(account)
    }
    fn set_direct_delivered(&self, account: AccountId, up_to: MessageId) -> Result<(), StoreError> {
        self.inner.set_direct_delivered(account, up_to)
    }
    fn ignores(&self, account: AccountId) -> Result<Vec<(String, String)>, StoreError> {
        self.inner.ignores(account)
    }
    fn add_ignore(&self, account: AccountId, key: &str, name: &str) -> Result<(), StoreError> {
        self.inner.add_ignore(account, key, name)
    }
    fn remove_ignore(&self, account: AccountId, key: &str) -> Result<(), StoreError> {
        self.inner.remove_ignore(account, key)
    }
    fn messages_after(
        &self,
        channel_key: &str,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.messages_after(channel_key, after, limit)
    }
    fn history(&self, key: &str, page: Page, limit: usize) -> Result<HistoryPage, StoreError> {
        self.inner.history(key, page, limit)
    }
    fn message(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.message(id)
    }
    fn direct_history(
        &self,
        conversation: &str,
        from: MessageId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        self.inner.direct_history(conversation, from, page, limit)
    }
    fn catch_up_search(&self, wait: std::time::Duration) -> Result<bool, StoreError> {
        self.inner.catch_up_search(wait)
    }
    fn search(&self, q: &SearchQuery) -> Result<SearchHits, StoreError> {
        self.inner.search(q)
    }
    fn unread(&self, account: AccountId, cap: usize) -> Result<Vec<Unread>, StoreError> {
        self.inner.unread(account, cap)
    }
    fn apply_changes(&self, changes: &[Change]) -> Result<Vec<usize>, StoreError> {
        self.inner.apply_changes(changes)
    }
    fn create_account(&self, a: &NewAccount) -> Result<(AccountId, AccountsVersion), StoreError> {
        self.inner.create_account(a)
    }
    fn account_by_key(&self, key: &str) -> Result<Option<Account>, StoreError> {
        self.inner.account_by_key(key)
    }
    fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError> {
        self.inner.account_by_id(id)
    }
    fn accounts_by_skeleton(&self, skeleton: &str) -> Result<Vec<Account>, StoreError> {
        self.inner.accounts_by_skeleton(skeleton)
    }
    fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.inner.list_accounts()
    }
    fn set_password(&self, id: AccountId, hash: &str) -> Result<(), StoreError> {
        self.inner.set_password(id, hash)
    }
    fn rename_account(
        &self,
        id: AccountId,
        name: &str,
        key: &str,
        skeleton: &str,
    ) -> Result<AccountsVersion, StoreError> {
        self.inner.rename_account(id, name, key, skeleton)
    }
    fn delete_account(&self, id: AccountId) -> Result<AccountsVersion, StoreError> {
        self.inner.delete_account(id)
    }
    fn accounts_version(&self) -> Result<AccountsVersion, StoreError> {
        self.inner.accounts_version()
    }
    fn account_names(
        &self,
        each: &mut dyn FnMut(AccountId, &str, &str),
    ) -> Result<AccountsVersion, StoreError> {
        self.inner.account_names(each)
    }
    fn registered_channels(&self) -> Result<Vec<RegisteredChannel>, StoreError> {
        self.inner.registered_channels()
    }
    fn register_channel(&self, c: &NewChannel) -> Result<ChannelId, StoreError> {
        self.inner.register_channel(c)
    }
    fn set_channel_private(&self, id: ChannelId, private: bool) -> Result<(), StoreError> {
        self.inner.set_channel_private(id, private)
    }
    fn set_channel_owner(&self, id: ChannelId, owner: AccountId) -> Result<(), StoreError> {
        self.inner.set_channel_owner(id, owner)
    }
    fn admit(&self, channel: ChannelId, account: AccountId) -> Result<(), StoreError> {
        self.inner.admit(channel, account)
    }
    fn admitted(&self, channel: ChannelId) -> Result<Vec<AccountId>, StoreError> {
        self.inner.admitted(channel)
    }
    fn set_channel_topic(&self, id: ChannelId, topic: Option<&str>) -> Result<(), StoreError> {
        self.inner.set_channel_topic(id, topic)
    }
    fn add_ban(&self, channel: ChannelId, ban: &StoredBan) -> Result<(), StoreError> {
        self.inner.add_ban(channel, ban)
    }
    fn remove_ban(
        &self,
        channel: ChannelId,
        key: &str,
        account: Option<AccountId>,
    ) -> Result<(), StoreError> {
        self.inner.remove_ban(channel, key, account)
    }
    fn delete_channel_and_messages(&self, id: ChannelId) -> Result<(), StoreError> {
        self.inner.delete_channel_and_messages(id)
    }
    fn delete_channel(&self, id: ChannelId) -> Result<(), StoreError> {
        self.inner.delete_channel(id)
    }
}

/// A server over `store`, plus what stops it.
async fn start(
    config: Config,
    store: Arc<dyn Store>,
) -> (
    std::net::SocketAddr,
    Hub,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::with_store(config, store).unwrap();
    let hub = server.hub();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(listener, async move {
        let _ = stopped.await;
    }));
    (addr, hub, stop, handle)
}

async fn login(addr: std::net::SocketAddr, name: &str) -> chatmaster::client::ClientConnection {
    let mut c = chatmaster::client::ClientConnection::connect(addr)
        .await
        .unwrap();
    assert!(c.login(name, WAIT).await.unwrap().status);
    c
}

/// Reads packages until a chat message arrives.
async fn next_message(
    c: &mut chatmaster::client::ClientConnection,
) -> chatmaster::wire::protocol::ChatMessage {
    loop {
        match next(c).await {
            ServerPackage::Message(m) => return m,
            ServerPackage::Notification(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Asserts nothing arrives for a moment: used only for what must *not*
/// happen while the store is held back (the positive events are awaited).
async fn nothing_for_a_while(c: &mut chatmaster::client::ClientConnection) {
    if let Ok(p) = c.recv_timeout(Duration::from_millis(300)).await {
        panic!("expected nothing while the store is held back, got {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_goes_out_before_the_commit_and_message_sent_after_it() {
    let store = GatedStore::new(false);
    let (addr, _hub, stop, handle) = start(test_config(), store.clone()).await;
    let mut alice = login(addr, "alice").await;
    let mut bob = login(addr, "bob").await;
    next_note(&mut alice).await; // own user_joined
    next_note(&mut alice).await; // bob's
    next_note(&mut bob).await; // own

    alice.message("held back").await.unwrap();
    let m = next_message(&mut bob).await;
    assert_eq!((m.message.as_str(), m.id), ("held back", 1));
    let gate_store = store.clone();
    tokio::task::spawn_blocking(move || gate_store.wait_for_waiting_batch())
        .await
        .unwrap();
    assert_eq!(
        store.inner.max_message_id().unwrap(),
        0,
        "not committed yet"
    );
    nothing_for_a_while(&mut alice).await;

    store.open();
    match next_note(&mut alice).await {
        Notification::MessageSent {
            id,
            channel,
            timestamp,
            ..
        } => {
            assert_eq!((id, channel.as_deref()), (1, Some("general")));
            assert_eq!(timestamp, m.timestamp);
            // By the time the acknowledgement is out, the row is stored.
            let rows = store.inner.messages_after("general", 0, 10).unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!((rows[0].id, rows[0].text.as_str()), (1, "held back"));
            assert_eq!(rows[0].sender, "alice");
        }
        other => panic!("{other:?}"),
    }
    assert_quiet(&mut alice).await;
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_falls_behind_slows_the_sender_and_loses_nothing() {
    const SENT: usize = 200;
    const QUEUE: usize = 4;
    let store = GatedStore::new(false);
    let config = Config {
        store_queue: QUEUE,
        store_batch: 1,
        ..test_config()
    };
    let (addr, hub, stop, handle) = start(config, store.clone()).await;
    let mut alice = login(addr, "alice").await;
    let mut bob = login(addr, "bob").await;
    next_note(&mut alice).await;
    next_note(&mut alice).await;
    next_note(&mut bob).await;

    for i in 0..SENT {
        alice
            .feed(&ClientPackage::Message(OutgoingMessage::text(format!(
                "m{i}"
            ))))
            .await
            .unwrap();
    }
    alice.flush().await.unwrap();
    // One batch is held at the store, QUEUE more wait in the queue; the
    // next message finds the queue full and alice's socket is not read
    // any further, so bob hears exactly those and then nothing.
    let held = 1 + QUEUE;
    for i in 0..held {
        let m = next_message(&mut bob).await;
        assert_eq!(m.message, format!("m{i}"));
    }
    nothing_for_a_while(&mut bob).await;
    assert_eq!(
        hub.journal().queued(),
        QUEUE,
        "the queue is full and no fuller"
    );
    assert_eq!(store.inner.max_message_id().unwrap(), 0);
    nothing_for_a_while(&mut alice).await;

    // The writer catches up: everything arrives, in order, acknowledged,
    // and stored.
    store.open();
    let mut last = 0;
    for i in held..SENT {
        let m = next_message(&mut bob).await;
        assert_eq!(m.message, format!("m{i}"));
        assert!(m.id > last);
        last = m.id;
    }
    let ids = expect_acks(&mut alice, SENT).await;
    assert_eq!(ids.len(), SENT);
    assert_quiet(&mut alice).await;
    let rows = store.inner.messages_after("general", 0, 1000).unwrap();
    let texts: Vec<String> = rows.iter().map(|r| r.text.clone()).collect();
    let expected: Vec<String> = (0..SENT).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert_eq!(hub.journal().queued(), 0);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn ids_increase_across_senders_as_every_member_sees_them() {
    let server = TestServer::start_default().await;
    let mut a = server.login("a").await;
    let mut b = server.login("b").await;
    let mut watcher = server.login("watcher").await;
    next_note(&mut a).await;
    next_note(&mut a).await;
    next_note(&mut b).await;
    const EACH: usize = 100;
    for i in 0..EACH {
        for c in [&mut a, &mut b] {
            c.feed(&ClientPackage::Message(OutgoingMessage::text(format!(
                "{i}"
            ))))
            .await
            .unwrap();
        }
    }
    let (ra, rb) = tokio::join!(a.flush(), b.flush());
    ra.unwrap();
    rb.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 * EACH {
        seen.push(next_message(&mut watcher).await.id);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // The ids each sender was acknowledged with are the ones delivered.
    let mut acked = Vec::new();
    for c in [&mut a, &mut b] {
        loop {
            match next(c).await {
                ServerPackage::Notification(Notification::MessageSent { id, .. }) => {
                    acked.push(id);
                    if acked.len() % EACH == 0 {
                        break;
                    }
                }
                ServerPackage::Message(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    acked.sort_unstable();
    assert_eq!(acked, seen);
    let stored = server
        .hub
        .store()
        .messages_after("general", 0, 1000)
        .unwrap();
    assert_eq!(stored.iter().map(|m| m.id).collect::<Vec<_>>(), seen);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_channels_messages_still_queued_are_deleted_with_it() {
    let store = GatedStore::new(false);
    let (addr, _hub, stop, handle) = start(test_config(), store.clone()).await;
    let mut alice = login(addr, "alice").await;
    next_note(&mut alice).await; // own user_joined
    alice
        .command(
            "register",
            Some(serde_json::json!({"password": "correct horse battery"})),
        )
        .await
        .unwrap();
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::Registered { .. }
    ));
    alice
        .command("join", Some(serde_json::json!({"channel": "club"})))
        .await
        .unwrap();
    next_note(&mut alice).await; // own user_joined
    alice.message("queued when deleted").await.unwrap();
    alice.command("delete_channel", None).await.unwrap();
    let gate_store = store.clone();
    tokio::task::spawn_blocking(move || gate_store.wait_for_waiting_batch())
        .await
        .unwrap();
    // The deletion waits for the message ahead of it to be written.
    nothing_for_a_while(&mut alice).await;
    assert_eq!(store.inner.registered_channels().unwrap().len(), 1);

    store.open();
    // The deletion's notices were queued when it was handled, before the
    // message's acknowledgement, which only the commit brings.
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::ChannelDeleted { .. }
    ));
    next_note(&mut alice).await; // own user_joined for general
    assert!(matches!(
        next_note(&mut alice).await,
        Notification::MessageSent { .. }
    ));
    assert_quiet(&mut alice).await;
    assert_eq!(store.inner.messages_after("club", 0, 10).unwrap(), vec![]);
    assert_eq!(store.inner.registered_channels().unwrap(), vec![]);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_search_answer_while_the_writer_is_stuck() {
    let store = GatedStore::new(false);
    store
        .inner
        .append_messages(&[StoredMessage::new(
            1,
            "general",
            "general",
            "old",
            "old",
            "committed before",
            "2026-12-01T07:00:00.000Z",
        )])
        .unwrap();
    store.inner.apply_changes(&[Change::Index]).unwrap();
    let (addr, _hub, stop, handle) = start(test_config(), store.clone()).await;
    let mut alice = login(addr, "alice").await;
    next_note(&mut alice).await; // own user_joined
    alice.message("held back").await.unwrap();
    let gate_store = store.clone();
    tokio::task::spawn_blocking(move || gate_store.wait_for_waiting_batch())
        .await
        .unwrap();
    // The writer waits at the gate; reads go on beside it.
    let page = common::memory::history(&mut alice, serde_json::json!({"channel": "general"})).await;
    assert_eq!(page.texts(), ["committed before"]);
    let found = common::memory::search(&mut alice, serde_json::json!({"query": "committed"})).await;
    assert_eq!(found.total, 1);
    store.open();
    match next_note(&mut alice).await {
        Notification::MessageSent { id, .. } => assert_eq!(id, 2),
        other => panic!("{other:?}"),
    }
    let page = common::memory::history(&mut alice, serde_json::json!({"channel": "general"})).await;
    assert_eq!(page.texts(), ["committed before", "held back"]);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_private_channels_messages_are_not_found_while_their_purge_waits() {
    let store = GatedStore::new(true);
    let (addr, _hub, stop, handle) = start(test_config(), store.clone()).await;
    let mut alice = login(addr, "alice").await;
    let mut bob = login(addr, "bob").await;
    let mut eve = login(addr, "eve").await;
    common::memory::join(&mut alice, "vault").await;
    alice.command("private", None).await.unwrap();
    common::memory::until(&mut alice, |p| match p {
        ServerPackage::Notification(Notification::ChannelUpdate { .. }) => Some(()),
        _ => None,
    })
    .await;
    common::memory::say(&mut alice, &["secret words"]).await;
    // The writer gets stuck on bob's message; the purge of vault, queued
    // when alice leaves, waits behind it.
    store.close();
    bob.message("stuck").await.unwrap();
    let gate_store = store.clone();
    tokio::task::spawn_blocking(move || gate_store.wait_for_waiting_batch())
        .await
        .unwrap();
    alice.command("leave", None).await.unwrap();
    common::memory::until(&mut alice, |p| match p {
        ServerPackage::Notification(Notification::UserJoined { users: Some(_), .. }) => Some(()),
        _ => None,
    })
    .await;
    let found = common::memory::search(&mut eve, serde_json::json!({"query": "secret"})).await;
    assert_eq!((found.total, found.ids()), (0, vec![]));
    store.open();
    common::memory::acks(&mut bob, 1).await;
    common::memory::settle(&mut alice).await;
    let found = common::memory::search(&mut eve, serde_json::json!({"query": "secret"})).await;
    assert_eq!(found.total, 0);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
}
