mod common;
use common::*;
use chatmaster::protocol::{Notification, ServerPackage};

#[tokio::test]
async fn two_users_talk() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    match next_note(&mut alice).await {
        Notification::UserJoined { username, .. } => assert_eq!(username, "bob"),
        other => panic!("{other:?}"),
    }
    alice.message("hello bob").await.unwrap();
    match next(&mut bob).await {
        ServerPackage::Message(m) => {
            assert_eq!(m.message, "hello bob");
            assert_eq!(m.username, "alice");
        }
        other => panic!("{other:?}"),
    }
    assert_quiet(&mut alice).await;
    server.shutdown().await;
}
