//! Routing: one message to every matching session of this node.
//!
//! The subscription tree yields the plain subscriptions, which `topic::Fanout` combines
//! into one copy per client (highest QoS, every Subscription Identifier, no copy for the
//! publisher's own No Local subscriptions), and each matching shared group, which gets one
//! copy for one member. The `Fanout` buffers are kept per thread (a connection's task
//! never moves between threads, and routing never awaits), so a message costs no
//! allocation here beyond the queue entries, and the payload is one `Bytes` shared by all.
//!
//! Shared groups pick their member here rather than through the balance crate's
//! `Strategy`: a strategy picks among `balance::Backend`s, which are network addresses with
//! health checks, weights and admin states, built once per pool and rebuilt when the pool
//! changes; group members are sessions that join and leave with every SUBSCRIBE, and what
//! makes one eligible (a connection attached) and loaded (messages in flight and queued)
//! is session state. Wrapping every member in a `Backend` per message would allocate on
//! the hot path and duplicate that state. So the two strategies that matter for consumers
//! are written here over the members the tree hands out, in the same order every time:
//! round-robin (a cursor per group) and least in-flight (fewest in flight plus queued,
//! ties broken from the cursor). Both skip members without a connection when any member
//! has one; when none has, round-robin still picks one, whose session queues QoS 1 and 2
//! messages for its return.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::Arc;

use super::{Broker, read};
use crate::cluster::journal::{Copy, Journal, copy_of};
use crate::cluster::{Envelope, Planner};
use crate::codec::QoS;
use crate::config::SharedStrategy;
use crate::message::Message;
use crate::session::{ClientId, Outgoing, Session, SubOptions};
use crate::topic::{Fanout, SharedGroup, TopicName};

thread_local! {
    /// This thread's fan-out buffers, reused by every message routed on it.
    static FANOUT: RefCell<Fanout<ClientId, SubOptions>> = RefCell::new(Fanout::new());
}

/// Which of this node's subscriptions a message is routed to.
pub(crate) enum Reach<'a, 'p> {
    /// All of them: a single node, or a message that stays on this node (`$SYS`).
    All,
    /// A message published here in a cluster: the plain subscriptions, and the shared
    /// groups whose turn the planner gives this node (the others go elsewhere).
    Planned(&'a mut Planner<'p>),
    /// A message from another node: its plain subscriptions if it says so, and the
    /// groups it was handed for.
    Received(&'a Envelope),
}

impl Reach<'_, '_> {
    /// Whether the message goes to this node's plain subscriptions.
    fn plain(&self) -> bool {
        match self {
            Self::All | Self::Planned(_) => true,
            Self::Received(e) => e.plain,
        }
    }

    /// Whether this node delivers the message to shared group `group`.
    fn group(&mut self, group: &SharedGroup<'_, ClientId, SubOptions>) -> bool {
        match self {
            Self::All => true,
            Self::Planned(planner) => {
                let key = format!("$share/{}/{}", group.name, group.filter);
                let members = u32::try_from(group.members.len()).unwrap_or(u32::MAX);
                planner.keep_local(&key, members)
            }
            Self::Received(e) => e
                .groups
                .iter()
                .any(|key| is_group_key(key, group.name, group.filter.as_str())),
        }
    }
}

/// The copies of one message queued for sessions with an expiry, to be journaled.
#[derive(Debug)]
pub(crate) struct Journaling<'j> {
    /// Where its number comes from.
    pub journal: &'j Journal,
    /// The message's number in the journal, taken with its first copy — under the
    /// index's read lock, so the floors, computed under its write lock, never pass a
    /// number whose copies are not queued yet.
    pub jseq: u64,
    /// The sessions it was queued for, and how.
    pub copies: Vec<Copy>,
}

/// Whether `key` is `$share/{name}/{filter}`.
fn is_group_key(key: &str, name: &str, filter: &str) -> bool {
    key.strip_prefix("$share/")
        .and_then(|rest| rest.strip_prefix(name))
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(filter)
}

impl Broker {
    /// Hands `message` to every session of this node with a matching subscription, `from`
    /// being the publishing client (none for the broker's own and other nodes' messages).
    /// Returns how many sessions it went to (queued or dropped for a full queue).
    pub fn route(&self, message: &Message, from: Option<&ClientId>) -> usize {
        let Ok(name) = TopicName::parse(&message.topic, self.cfg.max_topic_levels) else {
            return 0;
        };
        self.route_to(message, name, from, Reach::All, None)
    }

    /// [`Broker::route`] to the subscriptions `reach` allows.
    pub(crate) fn route_to(
        &self,
        message: &Message,
        name: TopicName<'_>,
        from: Option<&ClientId>,
        mut reach: Reach<'_, '_>,
        mut journaling: Option<&mut Journaling<'_>>,
    ) -> usize {
        let id = match &reach {
            Reach::All => None,
            Reach::Planned(p) => Some(p.id().clone()),
            Reach::Received(e) => Some(e.id.clone()),
        };
        let id = id.as_ref();
        let index = read(&self.index);
        let sessions = &index.sessions;
        let mut matched = 0;
        FANOUT.with_borrow_mut(|fanout| {
            fanout.collect(&index.subscriptions, name, from, |group| {
                if !reach.group(&group) {
                    return;
                }
                if let Some((session, options)) = self.pick(sessions, &group)
                    && self.first_delivery(session, id)
                {
                    let ids = options.identifier.as_slice();
                    self.deliver(session, options, ids, message, journaling.as_deref_mut());
                    matched += 1;
                }
            });
            if !reach.plain() {
                return;
            }
            for d in fanout.deliveries() {
                if let Some(session) = sessions.get(d.key)
                    && self.first_delivery(session, id)
                {
                    let journaling = journaling.as_deref_mut();
                    self.deliver(session, d.options, d.identifiers, message, journaling);
                    matched += 1;
                }
            }
        });
        matched
    }

    /// Queues one copy of `message` for `session` under the subscription `options`; a
    /// QoS 1 or 2 copy for a session with an expiry is added to `journaling`.
    fn deliver(
        &self,
        session: &Session,
        options: &SubOptions,
        identifiers: &[NonZeroU32],
        message: &Message,
        journaling: Option<&mut Journaling<'_>>,
    ) {
        let mut out = Outgoing {
            qos: message.qos.min(options.options.qos),
            retain: message.retain && options.options.retain_as_published,
            identifiers: identifiers.to_vec(),
            message: message.clone(),
            journal: 0,
        };
        if let Some(j) = journaling
            && out.qos != QoS::AtMostOnce
            && session.lock().expiry_interval > 0
        {
            if j.jseq == 0 {
                j.jseq = j.journal.next();
            }
            out.journal = j.jseq;
            j.copies.push(copy_of(&session.client_id, &out));
        }
        self.enqueue(session, out);
    }

    /// The member of `group` that gets the message, by the configured strategy.
    fn pick<'a>(
        &self,
        sessions: &'a HashMap<ClientId, Arc<Session>>,
        group: &SharedGroup<'a, ClientId, SubOptions>,
    ) -> Option<(&'a Session, &'a SubOptions)> {
        let members = group.members;
        let key = self
            .group_hasher
            .hash_one((group.name, group.filter.as_str()));
        let mut cursors = self
            .cursors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cursor = cursors.entry(key).or_insert(0);
        let start = *cursor % members.len();
        let in_turn = (0..members.len()).map(|i| (start + i) % members.len());
        let online = |i: &usize| sessions.get(&members[*i].0).is_some_and(|s| s.is_online());
        let chosen = match self.cfg.shared_strategy {
            SharedStrategy::RoundRobin => in_turn.clone().find(online),
            SharedStrategy::LeastInflight => in_turn.clone().filter(online).min_by_key(|&i| {
                sessions.get(&members[i].0).map_or(usize::MAX, |s| {
                    let state = s.lock();
                    state.inflight.len() + state.queue.len()
                })
            }),
        }
        .unwrap_or(start);
        *cursor = chosen + 1;
        drop(cursors);
        let (client, options) = &members[chosen];
        Some((sessions.get(client)?, options))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{attach, broker};
    use super::*;
    use crate::codec::QoS;
    use crate::config::MqttConfig;
    use bytes::Bytes;

    fn with(strategy: SharedStrategy) -> Arc<Broker> {
        broker(MqttConfig {
            shared_strategy: strategy,
            ..MqttConfig::default()
        })
    }

    fn subscribe(b: &Broker, client: &str, filter: &str, qos: QoS) -> Arc<Session> {
        let session = attach(b, client).session;
        super::super::testing::subscribe(b, &session, filter, qos);
        session
    }

    fn message(topic: &str, qos: QoS) -> Message {
        Message::new(topic.into(), Bytes::from_static(b"x"), qos, false)
    }

    #[test]
    fn each_client_gets_one_copy_at_the_lower_qos() {
        let b = with(SharedStrategy::RoundRobin);
        let one = subscribe(&b, "one", "a/#", QoS::AtMostOnce);
        subscribe(&b, "one", "a/b", QoS::AtLeastOnce);
        let two = subscribe(&b, "two", "a/+", QoS::ExactlyOnce);
        assert_eq!(b.route(&message("a/b", QoS::AtLeastOnce), None), 2);
        let got: Vec<QoS> = [&one, &two]
            .iter()
            .map(|s| {
                let state = s.lock();
                assert_eq!(state.queue.len(), 1);
                state.queue[0].qos
            })
            .collect();
        assert_eq!(got, [QoS::AtLeastOnce, QoS::AtLeastOnce]);
    }

    #[tokio::test]
    async fn shared_groups_take_turns_and_skip_offline_members() {
        for strategy in [SharedStrategy::RoundRobin, SharedStrategy::LeastInflight] {
            let b = with(strategy);
            let members: Vec<_> = ["m1", "m2", "m3"]
                .iter()
                .map(|c| subscribe(&b, c, "$share/g/jobs", QoS::AtLeastOnce))
                .collect();
            for _ in 0..6 {
                assert_eq!(b.route(&message("jobs", QoS::AtLeastOnce), None), 1);
            }
            let counts: Vec<usize> = members.iter().map(|m| m.lock().queue.len()).collect();
            assert_eq!(counts, [2, 2, 2], "{strategy:?}");

            let generation = {
                let mut state = members[1].lock();
                state.expiry_interval = 3600;
                state.generation
            };
            b.detach(&members[1], generation);
            for _ in 0..4 {
                b.route(&message("jobs", QoS::AtLeastOnce), None);
            }
            let counts: Vec<usize> = members.iter().map(|m| m.lock().queue.len()).collect();
            assert_eq!(counts, [4, 2, 4], "{strategy:?}");
        }
    }
}
