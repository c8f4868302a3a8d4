//! The public channel list is cached between changes (a login-storm
//! optimisation); these tests pin that every change still shows up in
//! the next `session` and `channel_list`.

mod common;

use chatmaster::client::ClientConnection;
use chatmaster::wire::protocol::Notification;
use common::*;
use serde_json::json;

async fn channels_seen_by(c: &mut ClientConnection) -> (Vec<String>, usize) {
    c.command("channels", None).await.expect("channels");
    match next_note(c).await {
        Notification::ChannelList {
            channels,
            channels_total,
        } => (channels, channels_total),
        other => panic!("expected channel_list, got {other:?}"),
    }
}

#[tokio::test]
async fn channel_list_follows_every_change() {
    let server = TestServer::start_default().await;
    let mut alice = server.login("alice").await;
    assert_eq!(
        channels_seen_by(&mut alice).await,
        (vec!["general".into()], 1)
    );

    let mut bob = server.login("bob").await;
    let _ = next_note(&mut alice).await; // bob joined general
    bob.command("join", Some(json!({"channel": "Zeta"})))
        .await
        .unwrap();
    let _ = next_note(&mut bob).await; // own user_joined in Zeta
    let _ = next_note(&mut alice).await; // bob left general
    assert_eq!(
        channels_seen_by(&mut alice).await,
        (vec!["general".into(), "Zeta".into()], 2)
    );

    // A login after the change sees it in its session.
    let mut carol = server.connect().await;
    let session = carol.login("carol", WAIT).await.unwrap();
    assert_eq!(
        session.channels,
        Some(vec!["general".into(), "Zeta".into()])
    );
    let _ = next_note(&mut carol).await; // own user_joined
    let _ = next_note(&mut alice).await; // carol joined general

    bob.command("private", None).await.unwrap();
    let _ = next_note(&mut bob).await; // channel_update
    assert_eq!(
        channels_seen_by(&mut alice).await,
        (vec!["general".into()], 1)
    );

    bob.command("public", None).await.unwrap();
    let _ = next_note(&mut bob).await; // channel_update
    assert_eq!(channels_seen_by(&mut alice).await.1, 2);

    // The last member leaving removes the channel.
    bob.command("leave", None).await.unwrap();
    let _ = next_note(&mut bob).await; // own user_joined in general
    let _ = next_note(&mut alice).await; // bob joined general
    assert_eq!(
        channels_seen_by(&mut alice).await,
        (vec!["general".into()], 1)
    );
    server.shutdown().await;
}
