//! Fuzz target: a sequence of arbitrary chat actions by a handful of users
//! driving the [`Hub`] directly (no sockets), with tiny outbound queues so
//! slow-consumer removal is exercised too. Moderation (groups, kicks, bans,
//! transfers, topics, deletions) is in the mix; the invariants include that
//! no member of a channel is banned from it. After every action the hub's
//! snapshot must satisfy the state invariants, and every queued package
//! must decode.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use chatmaster::server::chat::{Hub, Outbox, Snapshot, UserId};
use chatmaster::server::outbox::Take;
use chatmaster::wire::codec;
use chatmaster::wire::frame::HEADER_LEN;
use chatmaster::wire::protocol::ServerPackage;
use chatmaster::Config;
use libfuzzer_sys::fuzz_target;

/// Users the actions refer to by slot number.
const SLOTS: usize = 6;
const NAMES: &[&str] = &[
    "alice", "Alice", "ALICE", "bob", "Bob", "Σας", "σας", "ß", "SS", "", "a b", "x.y-z_",
];
const CHANNELS: &[&str] = &[
    "general", "General", "rust", "Rust", "x", "Σ", "σ", "", "a/b",
];

#[derive(Debug, Arbitrary)]
enum Action {
    Login {
        slot: u8,
        name: u8,
    },
    Disconnect {
        slot: u8,
    },
    Join {
        slot: u8,
        channel: u8,
    },
    Leave {
        slot: u8,
    },
    Rename {
        slot: u8,
        name: u8,
    },
    Private {
        slot: u8,
        private: bool,
    },
    Invite {
        slot: u8,
        name: u8,
    },
    Message {
        slot: u8,
        text: String,
    },
    Channels {
        slot: u8,
    },
    Ping {
        slot: u8,
        token: Option<String>,
    },
    /// `direct`, or `random` when `name` is `None`.
    Direct {
        slot: u8,
        name: Option<u8>,
        text: String,
    },
    Who {
        slot: u8,
        channel: Option<u8>,
        after: Option<u8>,
    },
    Whois {
        slot: u8,
        name: u8,
    },
    Away {
        slot: u8,
        text: Option<String>,
    },
    Ignore {
        slot: u8,
        name: u8,
        undo: bool,
    },
    Group {
        slot: u8,
        channel: u8,
        recipients: Vec<u8>,
    },
    Kick {
        slot: u8,
        name: u8,
        reason: Option<String>,
    },
    Ban {
        slot: u8,
        name: u8,
        channel: Option<u8>,
    },
    Unban {
        slot: u8,
        name: u8,
    },
    Bans {
        slot: u8,
    },
    Transfer {
        slot: u8,
        name: u8,
    },
    Topic {
        slot: u8,
        topic: String,
    },
    DeleteChannel {
        slot: u8,
        channel: Option<u8>,
    },
    Notice {
        slot: u8,
        text: String,
    },
    /// The client reads what is queued for it.
    Drain {
        slot: u8,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    queue: u8,
    actions: Vec<Action>,
}

struct Slot {
    id: UserId,
    outbox: Outbox,
}

fn pick<'a>(list: &'a [&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

fn slot_of(s: u8) -> usize {
    usize::from(s) % SLOTS
}

fn id_of(slots: &[Option<Slot>], s: u8) -> Option<UserId> {
    slots[slot_of(s)].as_ref().map(|s| s.id)
}

/// Checks that `bytes` is a whole number of frames, each a decodable package.
fn check_frames(mut bytes: &[u8], max: usize) {
    while !bytes.is_empty() {
        assert!(bytes.len() >= HEADER_LEN, "torn frame header");
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert!(bytes.len() >= HEADER_LEN + len, "torn frame");
        let body = &bytes[HEADER_LEN..HEADER_LEN + len];
        if let Err(e) = codec::decode_body::<ServerPackage>(body, max) {
            panic!("server queued an undecodable package: {e}");
        }
        bytes = &bytes[HEADER_LEN + len..];
    }
}

fn drain(slot: &mut Slot, max: usize) {
    let mut staging = Vec::new();
    loop {
        staging.clear();
        match slot.outbox.take(&mut staging, 64 * 1024) {
            Ok(Some(Take::One(frame))) => check_frames(&frame, max),
            Ok(Some(Take::Copied)) => check_frames(&staging, max),
            Ok(None) | Err(_) => return,
        }
    }
}

fn check(snap: &Snapshot, live: usize) {
    if let Err(e) = snap.check_invariants() {
        panic!("{e}: {snap:?}");
    }
    assert_eq!(snap.users.len(), live, "{snap:?}");
}

fuzz_target!(|input: Input| {
    let config = Config {
        outbound_queue: 1 + usize::from(input.queue % 16),
        max_name_chars: 8,
        max_message_bytes: 64,
        ..Config::default()
    };
    let max = config.max_package_bytes;
    let hub = Hub::new(Arc::new(config));
    let mut slots: Vec<Option<Slot>> = (0..SLOTS).map(|_| None).collect();
    for action in input.actions.into_iter().take(256) {
        match action {
            Action::Login { slot, name } => {
                let i = slot_of(slot);
                if slots[i].is_none() {
                    let config = hub.config();
                    let outbox = Outbox::new(config.outbound_queue, config.max_queue_bytes);
                    if let Ok(id) = hub.login(pick(NAMES, name), outbox.clone()) {
                        slots[i] = Some(Slot { id, outbox });
                    }
                }
            }
            Action::Disconnect { slot } => {
                if let Some(s) = slots[slot_of(slot)].take() {
                    hub.disconnect(s.id);
                }
            }
            Action::Drain { slot } => {
                if let Some(s) = slots[slot_of(slot)].as_mut() {
                    drain(s, max);
                }
            }
            Action::Join { slot, channel } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.join(id, pick(CHANNELS, channel));
                }
            }
            Action::Leave { slot } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.leave(id);
                }
            }
            Action::Rename { slot, name } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.rename(id, pick(NAMES, name));
                }
            }
            Action::Private { slot, private } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.set_private(id, private);
                }
            }
            Action::Invite { slot, name } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.invite(id, pick(NAMES, name));
                }
            }
            Action::Message { slot, text } => {
                if let Some(id) = id_of(&slots, slot) {
                    if let Ok(slot) = hub.journal().try_slot() {
                        let _ = hub.message(id, text, slot);
                    }
                }
            }
            Action::Channels { slot } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.channel_list(id);
                }
            }
            Action::Ping { slot, token } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.ping(id, token);
                }
            }
            Action::Direct { slot, name, text } => {
                if let Some(id) = id_of(&slots, slot) {
                    if let Ok(place) = hub.journal().try_slot() {
                        // No store lookup here: a direct message to an
                        // offline name handed back is dropped, slot and all.
                        let _ = match name {
                            Some(n) => hub.direct(id, pick(NAMES, n), text, place).map(|_| ()),
                            None => hub.random(id, text, place),
                        };
                    }
                }
            }
            Action::Who {
                slot,
                channel,
                after,
            } => {
                if let Some(id) = id_of(&slots, slot) {
                    let channel = channel.map(|c| pick(CHANNELS, c));
                    let after = after.map(|a| pick(NAMES, a));
                    let _ = hub.who(id, channel, after);
                }
            }
            Action::Whois { slot, name } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.whois(id, pick(NAMES, name));
                }
            }
            Action::Away { slot, text } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.away(id, text);
                }
            }
            Action::Ignore { slot, name, undo } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = if undo {
                        hub.unignore(id, pick(NAMES, name))
                    } else {
                        hub.ignore(id, pick(NAMES, name))
                    };
                }
            }
            Action::Group {
                slot,
                channel,
                recipients,
            } => {
                if let Some(id) = id_of(&slots, slot) {
                    let names: Vec<String> = recipients
                        .iter()
                        .take(64)
                        .map(|&n| pick(NAMES, n).to_owned())
                        .collect();
                    let _ = hub.create_group(id, pick(CHANNELS, channel), &names, None);
                }
            }
            Action::Kick { slot, name, reason } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.kick(id, pick(NAMES, name), reason.as_deref(), None);
                }
            }
            Action::Ban {
                slot,
                name,
                channel,
            } => {
                if let Some(id) = id_of(&slots, slot) {
                    let channel = channel.map(|c| pick(CHANNELS, c));
                    let _ = hub.ban(id, pick(NAMES, name), channel);
                }
            }
            Action::Unban { slot, name } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.unban(id, pick(NAMES, name), None);
                }
            }
            Action::Bans { slot } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.bans(id, None);
                }
            }
            Action::Transfer { slot, name } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.transfer(id, pick(NAMES, name));
                }
            }
            Action::Topic { slot, topic } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.set_topic(id, &topic);
                }
            }
            Action::DeleteChannel { slot, channel } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.delete_channel(id, channel.map(|c| pick(CHANNELS, c)));
                }
            }
            Action::Notice { slot, text } => {
                if let Some(id) = id_of(&slots, slot) {
                    let _ = hub.notice(id, &text);
                }
            }
        }
        // A killed connection (slow consumer) ends; its task then calls
        // disconnect, which must be harmless after the hub removed it.
        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(|s| s.outbox.is_closed()) {
                if let Some(s) = slot.take() {
                    hub.disconnect(s.id);
                }
            }
        }
        let live = slots.iter().flatten().count();
        check(&hub.snapshot(), live);
        if let Err(e) = hub.check_people() {
            panic!("{e}");
        }
    }
    for s in slots.iter_mut().flatten() {
        drain(s, max);
    }
});
