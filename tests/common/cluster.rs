//! Several nodes of one chat in one process: real servers on loopback
//! ports, each its own hub, sharing one in-process carrier and one store.

use std::sync::Arc;
use std::time::Duration;

use chatmaster::cluster::memory::MemoryCarrier;
use chatmaster::server::config::Config;
use chatmaster::store::{SqliteStore, Store, StoreOptions};
use chatmaster::Server;

use super::{test_config, TestServer};

/// The lease the tests run with: short, so a node cut off is noticed soon.
pub const LEASE: Duration = Duration::from_millis(1000);

/// Three nodes and what they share.
pub struct Nodes {
    pub carrier: MemoryCarrier,
    pub store: Arc<dyn Store>,
    pub nodes: Vec<TestServer>,
    _dir: tempfile::TempDir,
}

pub fn node_config(name: &str) -> Config {
    Config {
        node_name: name.to_owned(),
        cluster_lease: LEASE,
        cluster_heartbeat: LEASE / 4,
        cluster_snapshot_timeout: Duration::from_secs(5),
        ..test_config()
    }
}

pub async fn start_node(carrier: &MemoryCarrier, store: &Arc<dyn Store>, name: &str) -> TestServer {
    start_node_with(carrier, store, node_config(name)).await
}

/// A node with `config` (its `node_name` names it).
pub async fn start_node_with(
    carrier: &MemoryCarrier,
    store: &Arc<dyn Store>,
    config: Config,
) -> TestServer {
    let name = config.node_name.clone();
    let store = Arc::clone(store);
    let server = tokio::task::spawn_blocking(move || Server::with_store(config, store))
        .await
        .expect("built")
        .expect("server over the shared store");
    let server = server
        .join_cluster(carrier.link(&name))
        .await
        .expect("joined the cluster");
    TestServer::run_server(server).await
}

impl Nodes {
    pub async fn start(n: usize) -> Nodes {
        Self::start_with(n, |_| {}).await
    }

    /// [`Nodes::start`], each node's configuration changed by `tweak`.
    pub async fn start_with(n: usize, tweak: fn(&mut Config)) -> Nodes {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("chat.db");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&path, &StoreOptions::default()).expect("store"));
        let carrier = MemoryCarrier::new();
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut config = node_config(&format!("node-{i}"));
            tweak(&mut config);
            nodes.push(start_node_with(&carrier, &store, config).await);
        }
        Nodes {
            carrier,
            store,
            nodes,
            _dir: dir,
        }
    }

    pub async fn add(&mut self) -> usize {
        let name = format!("node-{}", self.nodes.len());
        let node = start_node(&self.carrier, &self.store, &name).await;
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Waits until every node has logged-in users `n`.
    pub async fn until_users(&self, n: usize) {
        self.until_all("the user count", |s| s.users.len() == n)
            .await;
    }

    /// Checks that every node's state is the same (and sound).
    pub fn same_everywhere(&self) -> Result<chatmaster::server::chat::Snapshot, String> {
        let first = self.nodes[0].hub.snapshot();
        first.check_invariants()?;
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            let other = n.hub.snapshot();
            if other != first {
                return Err(format!("node {i} differs: {other:?}\nnode 0: {first:?}"));
            }
            n.hub.check_member_lists()?;
            n.hub.check_people()?;
        }
        Ok(first)
    }

    /// Waits until every node's state holds `cond`.
    pub async fn until_all(
        &self,
        what: &str,
        cond: impl Fn(&chatmaster::server::chat::Snapshot) -> bool,
    ) {
        for n in &self.nodes {
            super::until_state(n, what, &cond).await;
        }
    }

    /// Waits until every node's state but node `skip`'s holds `cond`.
    pub async fn until_all_but(
        &self,
        skip: usize,
        what: &str,
        cond: impl Fn(&chatmaster::server::chat::Snapshot) -> bool,
    ) {
        for (_, n) in self.nodes.iter().enumerate().filter(|(i, _)| *i != skip) {
            super::until_state(n, what, &cond).await;
        }
    }

    pub async fn shutdown(self) {
        for n in self.nodes {
            n.shutdown().await;
        }
    }
}
