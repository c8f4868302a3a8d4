//! The chat state as one replica of a cluster's: users of other nodes,
//! message ids that are unique across nodes, delivery of what other nodes
//! publish to this node's users, and the whole state as a value a joining
//! node starts from ([`ReplicaState`]).
//!
//! Every node applies the same events in the same order, so the state is
//! the same everywhere; what differs is only who is whose: a user of
//! another node has a stand-in queue that drops what is pushed to it
//! ([`Outbox::remote`]), since every node computes the same notifications
//! and each delivers only to its own users. See [`crate::cluster::replica`].

use serde::{Deserialize, Serialize};

use super::*;

/// Version of [`ReplicaState`]'s layout.
pub const REPLICA_VERSION: u32 = 1;

/// A user in a [`ReplicaState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaUser {
    /// Its id, the same on every node.
    pub id: UserId,
    /// Its name.
    pub name: String,
    /// The folded key of its channel.
    pub channel: String,
    /// Its account.
    pub account: Option<AccountId>,
    /// The key of the node it is connected to.
    pub home: String,
    /// Folded keys of channels that invited it.
    pub invited_to: Vec<String>,
    /// Its away text.
    pub away: Option<String>,
    /// What it ignores, folded to as given.
    pub ignores: Vec<(String, String)>,
}

/// A channel in a [`ReplicaState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaChannel {
    /// Its display name.
    pub name: String,
    /// Whether it is private.
    pub private: bool,
    /// The owning member of a guest's channel.
    pub owner: Option<UserId>,
    /// Registration: store id, owner account, its name, admitted accounts.
    pub registered: Option<(ChannelId, AccountId, String, Vec<AccountId>)>,
    /// Members in join order.
    pub members: Vec<UserId>,
    /// Users holding an invitation.
    pub invited: Vec<UserId>,
    /// Its topic.
    pub topic: Option<String>,
    /// Its bans, oldest first.
    pub bans: Vec<ReplicaBan>,
}

/// A ban in a [`ReplicaChannel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaBan {
    /// The account banned.
    pub account: Option<AccountId>,
    /// The name shown.
    pub name: String,
    /// Its folded form.
    pub key: String,
    /// Its confusable skeleton.
    pub skeleton: String,
}

/// The whole replicated chat state: what a node joining a cluster starts
/// from instead of replaying the log from its beginning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// [`REPLICA_VERSION`].
    pub version: u32,
    /// The next user id.
    pub next_id: UserId,
    /// Logged-in users.
    pub users: Vec<ReplicaUser>,
    /// Channels.
    pub channels: Vec<ReplicaChannel>,
}

impl State {
    /// The id the next message would get (not taken yet: see
    /// [`State::commit_message_id`]).
    pub(super) fn peek_message_id(&self) -> MessageId {
        match self.id_slot {
            None => self.next_message_id,
            Some((slot, counter)) => crate::cluster::replica::message_id(counter, slot),
        }
    }

    /// Takes `id`, which [`State::peek_message_id`] gave.
    pub(super) fn commit_message_id(&mut self, id: MessageId) {
        self.next_message_id = id + 1;
        if let Some((slot, _)) = self.id_slot {
            self.id_slot = Some((slot, crate::cluster::replica::counter_of(id)));
        }
    }
}

/// A handle on the chat state that does not keep it alive (for a
/// carrier's responder, which the state's own cluster link holds).
#[derive(Debug, Clone)]
pub struct WeakHub(std::sync::Weak<Shared>);

impl WeakHub {
    /// The hub, if it still exists.
    pub fn upgrade(&self) -> Option<Hub> {
        self.0.upgrade().map(|shared| Hub { shared })
    }
}

impl Hub {
    /// A [`WeakHub`] of this hub.
    pub fn downgrade(&self) -> WeakHub {
        WeakHub(Arc::downgrade(&self.shared))
    }

    /// Makes this hub a replica of `cluster`'s state: message ids come
    /// from `slot` from now on. Once only.
    pub(crate) fn attach_cluster(
        &self,
        cluster: Arc<crate::cluster::replica::Cluster>,
        slot: u64,
    ) -> bool {
        let mut g = self.lock();
        let counter = crate::cluster::replica::counter_of(g.state.next_message_id);
        g.state.id_slot = Some((slot, counter));
        drop(g);
        self.shared.cluster.set(cluster).is_ok()
    }

    /// Message ids come from slot `slot` from now on (the node's slot
    /// was taken while it was cut off).
    pub(crate) fn set_id_slot(&self, slot: u64) {
        let mut g = self.lock();
        if let Some((_, counter)) = g.state.id_slot {
            g.state.id_slot = Some((slot, counter));
        }
    }

    /// The id slot this node's message ids come from in a cluster (for
    /// tests and diagnostics); `None` alone.
    pub fn id_slot(&self) -> Option<u64> {
        self.lock().state.id_slot.map(|(slot, _)| slot)
    }

    /// The cluster this node is part of.
    pub(crate) fn cluster(&self) -> Option<&Arc<crate::cluster::replica::Cluster>> {
        self.shared.cluster.get()
    }

    /// Logs in a user of the node `home` (its session and notifications
    /// go nowhere here), with the ignore list it came with.
    pub(crate) fn login_remote(
        &self,
        name: &str,
        account: Option<AccountId>,
        ignores: Vec<(String, String)>,
        home: Arc<str>,
    ) -> Result<UserId, ChatError> {
        let setup = LoginSetup {
            ignores,
            backlog: false,
            unread: None,
        };
        self.login_at(name, account, Outbox::remote(), setup, Some(home))
    }

    /// Whose the user is: `Some(None)` for this node's, `Some(Some(key))`
    /// for another node's, `None` if nobody has that id.
    pub(crate) fn home_of(&self, id: UserId) -> Option<Option<Arc<str>>> {
        self.lock().state.users.get(&id).map(|u| u.home.clone())
    }

    /// The keys of the other nodes that have users here.
    pub(crate) fn homes(&self) -> HashSet<Arc<str>> {
        self.lock()
            .state
            .users
            .values()
            .filter_map(|u| u.home.clone())
            .collect()
    }

    /// Removes every user of the node `home` (it is gone), shown leaving
    /// as usual. `None` names this node: its own users are told `why`
    /// and their connections closed. Returns how many went.
    pub(crate) fn remove_node(&self, home: Option<&str>, why: &str) -> usize {
        let mut g = self.lock();
        let gone: Vec<UserId> = g
            .state
            .users
            .iter()
            .filter(|(_, u)| u.home.as_deref() == home)
            .map(|(id, _)| *id)
            .collect();
        if home.is_none() {
            let note = ServerPackage::error("server", why.to_owned());
            for &id in &gone {
                g.send_to(id, &note);
                if let Some(u) = g.state.users.get(&id) {
                    u.outbox.finish();
                }
            }
        }
        for &id in &gone {
            g.remove_user(id);
        }
        g.finish();
        gone.len()
    }

    /// Delivers a channel package another node published: to this node's
    /// members of channel `key`, but those who ignore `sender_key`.
    ///
    /// `seq` is the log sequence its node had applied when it checked the
    /// package, and this node has applied at least as far (the cluster
    /// holds packages until then): the sender was in the channel then,
    /// even if it has left (or gone) since, as a message sent just before
    /// a departure is on one node. Only a channel made after `seq` (the
    /// one of that name was deleted, or emptied, and made again) does not
    /// get it: it was for the channel before. It is stored all the same.
    pub(crate) fn deliver_channel(&self, key: &str, sender_key: &str, seq: u64, bytes: Bytes) {
        let mut g = self.lock();
        let state = &mut *g.state;
        let Some(ch) = state.channels.get(key) else {
            return;
        };
        if seq < ch.born {
            tracing::debug!(
                channel = key,
                sender = sender_key,
                seq,
                born = ch.born,
                "a package for an earlier channel of this name was not delivered"
            );
            return;
        }
        // What this node knows of the sender's activity, for `whois` here.
        if let Some(sender) = state
            .names
            .get(sender_key)
            .copied()
            .and_then(|id| state.users.get_mut(&id))
        {
            sender.last_active = std::time::Instant::now();
        }
        let ignorers = state.ignored_by.get(sender_key).cloned().map(Arc::new);
        // This node's members, who read the log (the others' queues are
        // stand-ins that read nothing).
        let local_ignorers = ignorers.as_ref().map_or(0, |i| {
            ch.members
                .iter()
                .filter(|m| i.contains(&m.id))
                .filter(|m| state.users.get(&m.id).is_some_and(|u| u.home.is_none()))
                .count()
        });
        let delivered = ch.local.saturating_sub(local_ignorers);
        let bounds = (g.config.outbound_queue, g.config.max_queue_bytes);
        ch.log
            .append(bytes, None, ignorers, bounds, &mut state.kicks);
        crate::metrics::deliveries(delivered);
        g.finish();
    }

    /// Delivers a direct message another node published to this node's
    /// user `to`, at once. (It was stored as delivered live, not as kept
    /// for later, since its sender saw the recipient online: so it cannot
    /// join a backlog being delivered, and may come before the end of
    /// one.)
    pub(crate) fn deliver_direct(&self, to: UserId, bytes: Bytes) {
        let mut g = self.lock();
        let state = &mut *g.state;
        let Some(user) = state.users.get(&to).filter(|u| u.home.is_none()) else {
            return;
        };
        deliver(&user.outbox, to, bytes, &mut state.kicks);
        g.finish();
    }

    /// The replicated state, with `me` as the home of this node's users.
    pub(crate) fn export_replica(&self, me: &str) -> ReplicaState {
        let g = self.lock();
        let s = &g.state;
        let mut users: Vec<ReplicaUser> = s
            .users
            .iter()
            .map(|(id, u)| ReplicaUser {
                id: *id,
                name: u.name.clone(),
                channel: u.channel.clone(),
                account: u.account,
                home: u.home.as_deref().unwrap_or(me).to_owned(),
                invited_to: u.invited_to.iter().cloned().collect(),
                away: u.away.clone(),
                ignores: u
                    .ignores
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect();
        users.sort_by_key(|u| u.id);
        let mut channels: Vec<ReplicaChannel> = s
            .channels
            .values()
            .map(|c| ReplicaChannel {
                name: c.name.clone(),
                private: c.private,
                owner: c.owner,
                registered: c.registered.as_ref().map(|r| {
                    let mut admitted: Vec<AccountId> = r.admitted.iter().copied().collect();
                    admitted.sort_unstable();
                    (r.id, r.owner, r.owner_name.clone(), admitted)
                }),
                members: c.members.iter().map(|m| m.id).collect(),
                invited: c.invited.iter().copied().collect(),
                topic: c.topic.clone(),
                bans: c
                    .bans
                    .iter()
                    .map(|b| ReplicaBan {
                        account: b.account,
                        name: b.name.clone(),
                        key: b.key.clone(),
                        skeleton: b.skeleton.clone(),
                    })
                    .collect(),
            })
            .collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        ReplicaState {
            version: REPLICA_VERSION,
            next_id: s.next_id,
            users,
            channels,
        }
    }

    /// Replaces the replicated state with `replica` (a snapshot of another
    /// node's), `me` being this node's key. This node's users keep their
    /// queues; those the snapshot does not have are closed (they left
    /// while this node was not following), and the ids of those it has
    /// without a connection here are returned, for their departure to be
    /// appended. Returns the channels that now have members here.
    pub(crate) fn import_replica(
        &self,
        replica: ReplicaState,
        me: &str,
    ) -> (Vec<UserId>, Vec<String>) {
        let mut g = self.lock();
        let config = Arc::clone(&g.config);
        let cap = config.max_list_names;
        let state = &mut *g.state;
        let mut old = std::mem::take(&mut state.users);
        let mut ghosts = Vec::new();
        state.names.clear();
        state.skeletons.clear();
        state.online_accounts.clear();
        state.ignored_by.clear();
        state.presence_dirty.clear();
        state.next_id = replica.next_id;
        for u in replica.users {
            let local = u.home == me;
            let outbox = match old.remove(&u.id) {
                Some(o) if local && o.home.is_none() => o.outbox,
                _ if local => {
                    ghosts.push(u.id);
                    Outbox::remote()
                }
                _ => Outbox::remote(),
            };
            let mut user = User::new(&u.name, outbox, u.account, state.next_message_id);
            user.channel = u.channel;
            user.home = (!local).then(|| Arc::from(u.home.as_str()));
            user.invited_to = u.invited_to.into_iter().collect();
            user.away = u.away;
            for (k, v) in u.ignores {
                state.ignored_by.entry(k.clone()).or_default().insert(u.id);
                user.ignores.insert(k, v);
            }
            state.names.insert(fold_name(&user.name), u.id);
            state.skeletons.insert(name_skeleton(&user.name), u.id);
            if let Some(a) = user.account {
                state.online_accounts.insert(a, u.id);
            }
            state.users.insert(u.id, user);
        }
        for (_, gone) in old {
            gone.outbox.close();
        }
        state.channels.clear();
        state.public = SortedNames::public_channels();
        let mut followed = Vec::new();
        for c in replica.channels {
            let key = fold_name(&c.name);
            let mut ch = Channel::new(&c.name, c.owner);
            ch.private = c.private;
            ch.topic = c.topic;
            ch.registered = c
                .registered
                .map(|(id, owner, owner_name, admitted)| Registered {
                    id,
                    owner,
                    owner_name,
                    admitted: admitted.into_iter().collect(),
                });
            ch.invited = c.invited.into_iter().collect();
            ch.bans = c
                .bans
                .into_iter()
                .map(|b| Ban {
                    name: b.name,
                    key: b.key,
                    skeleton: b.skeleton,
                    account: b.account,
                })
                .collect();
            for id in c.members {
                let Some(u) = state.users.get(&id) else {
                    continue;
                };
                if u.home.is_none() {
                    ch.local += 1;
                }
                ch.sorted.insert(fold_name(&u.name), u.name.clone(), cap);
                ch.members.push(Member { id });
                u.outbox.subscribe(&ch.log, id);
            }
            if ch.local > 0 {
                followed.push(key.clone());
            }
            if !ch.private && key != GENERAL {
                state.public.insert(key.clone(), c.name.clone(), cap);
            }
            state.channels.insert(key, ch);
        }
        if !state.channels.contains_key(GENERAL) {
            state
                .channels
                .insert(GENERAL.to_owned(), Channel::new(GENERAL, None));
        }
        (ghosts, followed)
    }
}

/// The steps of an applied event, or its refusal as the chat's error.
fn applied_steps(outcome: crate::cluster::replica::Outcome) -> Result<Vec<Persist>, ChatError> {
    match outcome {
        Ok(crate::cluster::replica::Applied::Steps(steps)) => Ok(steps),
        Ok(crate::cluster::replica::Applied::User(_)) => Ok(Vec::new()),
        Err(e) => Err(ChatError(e.to_error().1.to_owned())),
    }
}

/// Follows `channel`'s topic before a change that may bring a user of
/// this node into it goes to the log (see
/// [`crate::cluster::replica::Cluster::hold_channel`]).
async fn hold(
    cluster: &Arc<crate::cluster::replica::Cluster>,
    channel: &str,
) -> Result<crate::cluster::replica::ChannelHold, ChatError> {
    cluster
        .hold_channel(&fold_name(channel))
        .await
        .map_err(|e| {
            ChatError(format!(
                "The cluster is unavailable ({e}); nothing was changed, try again."
            ))
        })
}

/// The accounts service's changes, through the cluster's log when there
/// is one (see [`crate::cluster::replica`]), at once otherwise.
impl Hub {
    /// [`Hub::join_with`], replicated.
    pub async fn join_replicated(
        &self,
        id: UserId,
        channel: &str,
        registration: Option<ChannelId>,
    ) -> Result<Vec<Persist>, ChatError> {
        let Some(cluster) = self.cluster() else {
            return self.join_with(id, channel, registration);
        };
        let _hold = hold(cluster, channel).await?;
        let event = crate::cluster::replica::Event::Join {
            user: id,
            channel: channel.to_owned(),
            registration,
        };
        applied_steps(cluster.propose("join", event).await)
    }

    /// [`Hub::rename`], replicated.
    pub async fn rename_replicated(&self, id: UserId, name: &str) -> Result<(), ChatError> {
        let Some(cluster) = self.cluster() else {
            return self.rename(id, name);
        };
        let event = crate::cluster::replica::Event::Rename {
            user: id,
            name: name.to_owned(),
        };
        applied_steps(cluster.propose("rename", event).await).map(|_| ())
    }

    /// [`Hub::create_group`], replicated.
    pub async fn create_group_replicated(
        &self,
        id: UserId,
        channel: &str,
        recipients: &[String],
        registration: Option<ChannelId>,
    ) -> Result<(), ChatError> {
        let Some(cluster) = self.cluster() else {
            return self.create_group(id, channel, recipients, registration);
        };
        let _hold = hold(cluster, channel).await?;
        let event = crate::cluster::replica::Event::Group {
            user: id,
            channel: channel.to_owned(),
            recipients: recipients.to_vec(),
            registration,
        };
        applied_steps(cluster.propose("group", event).await).map(|_| ())
    }

    /// [`Hub::set_account`], replicated.
    pub async fn set_account_replicated(
        &self,
        id: UserId,
        name: &str,
        account: AccountId,
    ) -> Result<(), ChatError> {
        let Some(cluster) = self.cluster() else {
            return self.set_account(id, name, account);
        };
        let event = crate::cluster::replica::Event::SetAccount {
            user: id,
            name: name.to_owned(),
            account,
        };
        applied_steps(cluster.propose("register", event).await).map(|_| ())
    }
}
