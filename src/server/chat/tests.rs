//! Unit tests of the chat state: caches and invariants.

use super::*;

fn channel(name: &str, owner: Option<&str>, members: &[&str]) -> ChannelSnapshot {
    ChannelSnapshot {
        name: name.to_owned(),
        private: false,
        owner: owner.map(str::to_owned),
        members: members.iter().map(|m| (*m).to_owned()).collect(),
        registered: false,
        topic: None,
        bans: Vec::new(),
    }
}

fn user(name: &str, channel: &str) -> (String, String) {
    (name.to_owned(), channel.to_owned())
}

/// The names a cached list tail carries, read back through a real
/// spliced zlib stream.
fn listed(tail: &DeflatedTail) -> Vec<String> {
    let mut z = Vec::new();
    tail.splice_into(br#"{"type":"x","data":{"n":0"#, &mut z);
    let text = crate::wire::compress::inflate(&z, 1 << 20).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    serde_json::from_value(v["data"]["channels"].clone()).unwrap()
}

#[test]
fn cached_channel_list_matches_the_channels_after_any_change() {
    // A cap of 3 over 8 names makes changes before, at and after the
    // end of the list all common; the cache must be right after each.
    let config = Config {
        max_list_names: 3,
        ..Config::default()
    };
    let pool = ["a", "B", "c", "D", "e", "F", "g", "H"];
    let mut public = SortedNames::public_channels();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rebuilt = 0;
    for step in 0..3000 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let name = pool[(seed >> 33) as usize % pool.len()];
        let key = crate::wire::protocol::fold_name(name);
        if (seed >> 40) % 2 == 0 {
            public.insert(key, name.to_owned(), config.max_list_names);
        } else {
            public.remove(&key);
        }
        // Look at the list only every other step, so some changes pile
        // up between two builds.
        if step % 2 == 0 {
            let was_cached = public.listed.is_some();
            let tail = public.tail(&config).unwrap();
            rebuilt += usize::from(!was_cached);
            assert_eq!(listed(&tail), public.first(3), "step {step}");
        }
    }
    // The cache must have been both used and rebuilt for this to test anything.
    assert!(rebuilt > 50 && rebuilt < 1400, "rebuilt {rebuilt} of 1500");
}

#[test]
fn invariants_hold_for_a_sound_state_and_catch_each_violation() {
    let sound = Snapshot {
        users: vec![user("alice", "rust"), user("bob", "general")],
        channels: vec![
            channel("general", None, &["bob"]),
            channel("rust", Some("alice"), &["alice"]),
        ],
        accounts: BTreeMap::new(),
    };
    assert_eq!(sound.check_invariants(), Ok(()));

    let mut twice = sound.clone();
    twice.users.push(user("ALICE", "general"));
    twice.channels[0].members.push("ALICE".into());
    let mut two_homes = sound.clone();
    two_homes.channels[0].members.push("alice".into());
    let mut empty = sound.clone();
    empty.channels.push(channel("ghost", Some("alice"), &[]));
    let mut absent_owner = sound.clone();
    absent_owner.channels[1].owner = Some("bob".into());
    let mut private_general = sound.clone();
    private_general.channels[0].private = true;
    let mut no_general = sound.clone();
    no_general.channels.remove(0);
    let mut look_alike = sound.clone();
    look_alike.users.push(user("\u{430}lice", "general"));
    look_alike.channels[0].members.push("\u{430}lice".into());
    let mut ownerless_registered = sound.clone();
    ownerless_registered.channels.push(ChannelSnapshot {
        registered: true,
        ..channel("kept", None, &[])
    });
    let mut sound_registered = sound.clone();
    sound_registered.channels.push(ChannelSnapshot {
        registered: true,
        ..channel("kept", Some("offline_owner"), &[])
    });
    assert_eq!(sound_registered.check_invariants(), Ok(()));
    let mut banned_member = sound.clone();
    banned_member.channels[1].bans.push(BanSnapshot {
        name: "ALİCE".into(),
        account: None,
    });
    banned_member.channels[1].bans[0].name = "\u{430}lice".into();
    let mut banned_account = sound.clone();
    banned_account.accounts.insert("alice".into(), 7);
    banned_account.channels[1].bans.push(BanSnapshot {
        name: "alicia".into(),
        account: Some(7),
    });
    let mut banned_elsewhere = sound.clone();
    banned_elsewhere.channels[0].bans.push(BanSnapshot {
        name: "alice".into(),
        account: None,
    });
    assert_eq!(banned_elsewhere.check_invariants(), Ok(()));
    for (what, bad) in [
        ("case-insensitive duplicate", twice),
        ("user in two channels", two_homes),
        ("empty channel", empty),
        ("owner not a member", absent_owner),
        ("private general", private_general),
        ("missing general", no_general),
        ("look-alike names", look_alike),
        ("registered channel without owner", ownerless_registered),
        ("member banned by a look-alike name", banned_member),
        ("member banned by account", banned_account),
    ] {
        assert!(bad.check_invariants().is_err(), "{what} not caught");
    }
}
