//! Presence in crowded channels: above `presence_limit` members, arrivals and
//! departures are summed up in a periodic `channel_stats` instead of being
//! announced one by one (see the module docs of [`super`]).

use super::*;

impl Hub {
    /// Sends `channel_stats` to the members of every channel above the
    /// presence limit whose member count changed since they were last told.
    /// The server's presence task calls this every `presence_interval`;
    /// tests call it directly to step through intervals.
    pub fn presence_tick(&self) {
        let mut g = self.lock();
        let dirty: Vec<String> = g.state.presence_dirty.drain().collect();
        for key in dirty {
            g.send_stats(&key, false, None);
        }
        // Idle connections give back their queues' buffers (see
        // `Outbox::trim`): a few hundred bytes each, at 10,000 of them
        // several megabytes. One uncontended lock per user.
        for user in g.state.users.values().filter(|u| u.home.is_none()) {
            user.outbox.trim();
        }
        // And channels give back what all their members have read.
        for ch in g.state.channels.values() {
            ch.log.trim();
        }
        g.finish();
    }

    /// Checks that every channel's sorted member index holds exactly its
    /// members under their current names, and that a cached `users` list
    /// is the first `max_list_names` of them. For tests; returns the first
    /// violation found.
    pub fn check_member_lists(&self) -> Result<(), String> {
        let mut g = self.lock();
        let config = Arc::clone(&g.config);
        let state = &mut *g.state;
        for ch in state.channels.values_mut() {
            let mut expected: Vec<(String, String)> = ch
                .members
                .iter()
                .filter_map(|m| state.users.get(&m.id))
                .map(|u| (fold_name(&u.name), u.name.clone()))
                .collect();
            expected.sort();
            let indexed: Vec<(String, String)> = ch
                .sorted
                .names
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if indexed != expected {
                return Err(format!(
                    "{}: index {indexed:?}, members {expected:?}",
                    ch.name
                ));
            }
            if let Some(listed) = &ch.sorted.listed {
                let mut z = Vec::new();
                listed.tail.splice_into(br#"{"data":{"n":0"#, &mut z);
                let cached = crate::wire::compress::inflate(&z, config.max_package_bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|text| {
                        serde_json::from_slice::<serde_json::Value>(&text)
                            .map_err(|e| e.to_string())
                    })
                    .map(|v| v["data"]["users"].clone());
                let first = serde_json::Value::from(ch.sorted.first(config.max_list_names));
                if cached.as_ref() != Ok(&first) {
                    return Err(format!(
                        "{}: cached users list {cached:?}, members {first}",
                        ch.name
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Guard<'_> {
    /// Sends the members of channel `key` its member count, if it is above
    /// the presence limit and the count is not what they were last told,
    /// or in any case when `crossed` (the channel just crossed the limit,
    /// so announcements stop or resume from here). `skip` is not told.
    pub(super) fn send_stats(&mut self, key: &str, crossed: bool, skip: Option<UserId>) {
        let limit = self.config.presence_limit;
        let Some(ch) = self.state.channels.get_mut(key) else {
            return;
        };
        let total = ch.members.len();
        if !crossed && (total <= limit || total == ch.stats_total) {
            return;
        }
        ch.stats_total = total;
        let stats = ServerPackage::notification(Notification::ChannelStats {
            channel: ch.name.clone(),
            users_total: total,
        });
        // Whatever was pending is now told.
        self.state.presence_dirty.remove(key);
        self.send_to_channel(key, skip, &stats);
    }
}

/// How a change of a channel's member count is told to its other members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    /// Within the limit before and after: `user_joined` / `user_left`.
    Announce,
    /// The change crossed the limit, either way: `channel_stats` at once.
    Crossed,
    /// Above the limit before and after: counted for the next `channel_stats`.
    Count,
}

/// Which [`Presence`] a change of member count from `before` to `after`
/// calls for under `limit`.
pub(super) fn presence(before: usize, after: usize, limit: usize) -> Presence {
    match (before > limit, after > limit) {
        (false, false) => Presence::Announce,
        (true, true) => Presence::Count,
        _ => Presence::Crossed,
    }
}
