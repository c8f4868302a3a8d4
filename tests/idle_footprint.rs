//! What an idle connection costs the server, in the part a test can see
//! exactly: the size of its task's future, which every connection carries
//! for as long as it lives. Rare, long waits (a login's password check,
//! accounts commands, a package parked for the store, a stalled write)
//! are boxed so that they do not grow it; this test catches a change that
//! puts one of them back inline (the 10,000-connection RSS figure lives in
//! BENCHMARKS.md, measured with `chatmaster-bench idle`).

use std::sync::Arc;

use chatmaster::server::chat::Hub;
use chatmaster::server::connection::serve;
use chatmaster::Config;
use tokio_util::sync::CancellationToken;

/// Bound on the connection future's size. It is about 1 KiB today; inline
/// login and accounts waits made it 1,440 bytes, and a parked package kept
/// inline another 160.
const MAX_TASK_BYTES: usize = 1152;

#[tokio::test]
async fn a_connection_task_stays_small() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    let hub = Hub::new(Arc::new(Config::default()));
    let task = serve(stream, peer, hub, CancellationToken::new());
    let size = std::mem::size_of_val(&task);
    assert!(
        size <= MAX_TASK_BYTES,
        "a connection's future is {size} bytes, more than {MAX_TASK_BYTES}: box the rare waits"
    );
}
