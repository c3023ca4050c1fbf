//! One delivery per client: MQTT 5.0 §3.3.4 lets a server that finds several of one
//! client's subscriptions matching a message either send one copy per subscription or one
//! copy with the maximum QoS of them and every matching Subscription Identifier (3.1.1
//! §3.3.5 likewise, without identifiers). lintas sends one copy to clients of both
//! versions, because a client subscribed to `a/#` and `a/b` wants the message once. This is
//! Mosquitto's behaviour for 3.1.1 clients under `allow_duplicate_messages false`, its
//! default until 2.1; Mosquitto sends 5.0 clients one copy per subscription, and 2.1 made
//! that the default for everyone (mosquitto-dev, June 2022; the 2.1.0 release notes).
//!
//! [`Fanout`] gathers the plain subscriptions [`Tree::matches`] finds into that one copy per
//! key, skipping the publisher's own no-local subscriptions, and hands shared groups to the
//! caller as they are found (a shared subscription is delivered on its own, whatever the
//! member's plain subscriptions). It is kept and reused by the caller, so a message costs no
//! allocation once its buffers have grown to the fan-out seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;

use super::syntax::TopicName;
use super::tree::{Matched, SharedGroup, Tree};

/// What [`Fanout`] needs to know of a subscription's options to combine a client's
/// overlapping subscriptions into one delivery.
pub trait Combine {
    /// Whether the subscription asked not to receive what its own client publishes
    /// (No Local, §3.8.3.1).
    fn no_local(&self) -> bool;
    /// The subscription's Subscription Identifier, if it was given one.
    fn identifier(&self) -> Option<NonZeroU32>;
    /// Folds another matching subscription of the same client into this one: the maximum
    /// QoS of the two and whatever else the broker decides for the merged copy.
    fn combine(&mut self, other: &Self);
}

/// One copy of the message for one client.
#[derive(Debug)]
pub struct Delivery<'f, K, V> {
    /// The client.
    pub key: &'f K,
    /// Its matching subscriptions' options, combined.
    pub options: &'f V,
    /// Every Subscription Identifier of its matching subscriptions, ascending, each once.
    pub identifiers: &'f [NonZeroU32],
}

/// The reusable buffers that turn a tree's matches into one delivery per client.
#[derive(Debug)]
pub struct Fanout<K, V> {
    /// Each client's index in `copies`.
    index: HashMap<K, usize>,
    /// One combined copy per client, with the range of its identifiers in `identifiers`.
    copies: Vec<(K, V, std::ops::Range<usize>)>,
    /// `(copy index, identifier)` as found, then sorted by copy.
    identifiers: Vec<(usize, NonZeroU32)>,
    /// The identifiers alone, in copy order; the copies' ranges point into it.
    flat: Vec<NonZeroU32>,
}

impl<K, V> Default for Fanout<K, V> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            copies: Vec::new(),
            identifiers: Vec::new(),
            flat: Vec::new(),
        }
    }
}

impl<K: Ord + Hash + Clone, V: Combine + Clone> Fanout<K, V> {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Finds who a message published to `name` by `publisher` (none for a message the
    /// broker publishes itself) goes to: the plain subscribers, combined per client, are
    /// then in [`Fanout::deliveries`], and each matching shared group is handed to
    /// `on_group` to pick one member.
    pub fn collect<'t>(
        &mut self,
        tree: &'t Tree<K, V>,
        name: TopicName<'_>,
        publisher: Option<&K>,
        mut on_group: impl FnMut(SharedGroup<'t, K, V>),
    ) {
        self.index.clear();
        self.copies.clear();
        self.identifiers.clear();
        self.flat.clear();
        tree.matches(name, |matched| match matched {
            Matched::Group(group) => on_group(group),
            Matched::Subscriber { key, data } => {
                if data.no_local() && publisher == Some(key) {
                    return;
                }
                let at = match self.index.get(key) {
                    Some(&at) => {
                        self.copies[at].1.combine(data);
                        at
                    }
                    None => {
                        self.index.insert(key.clone(), self.copies.len());
                        self.copies.push((key.clone(), data.clone(), 0..0));
                        self.copies.len() - 1
                    }
                };
                if let Some(id) = data.identifier() {
                    self.identifiers.push((at, id));
                }
            }
        });
        self.identifiers.sort_unstable();
        self.identifiers.dedup();
        let mut ids = self.identifiers.iter().peekable();
        for (at, (_, _, range)) in self.copies.iter_mut().enumerate() {
            let start = self.flat.len();
            while let Some(&&(_, id)) = ids.peek().filter(|(copy, _)| *copy == at) {
                self.flat.push(id);
                ids.next();
            }
            *range = start..self.flat.len();
        }
    }

    /// The copies the last [`Fanout::collect`] found, one per client, in no particular order.
    pub fn deliveries(&self) -> impl Iterator<Item = Delivery<'_, K, V>> {
        self.copies.iter().map(|(key, options, range)| Delivery {
            key,
            options,
            identifiers: &self.flat[range.clone()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{DEFAULT_MAX_LEVELS, SubscriptionTarget};

    /// Options as the broker keeps them, reduced to what combining reads.
    #[derive(Debug, Clone, PartialEq)]
    struct Opts {
        qos: u8,
        no_local: bool,
        id: Option<NonZeroU32>,
    }

    impl Combine for Opts {
        fn no_local(&self) -> bool {
            self.no_local
        }
        fn identifier(&self) -> Option<NonZeroU32> {
            self.id
        }
        fn combine(&mut self, other: &Self) {
            self.qos = self.qos.max(other.qos);
        }
    }

    fn opts(qos: u8, no_local: bool, id: u32) -> Opts {
        Opts {
            qos,
            no_local,
            id: NonZeroU32::new(id),
        }
    }

    fn subscribe(tree: &mut Tree<&'static str, Opts>, key: &'static str, topic: &str, o: Opts) {
        let target = SubscriptionTarget::parse(topic, DEFAULT_MAX_LEVELS).expect("valid target");
        tree.insert(key, target, o);
    }

    /// `(key, qos, identifiers)` per delivery.
    type Copies = Vec<(&'static str, u8, Vec<u32>)>;

    /// The deliveries sorted by key, and the groups handed over.
    fn fan(
        fanout: &mut Fanout<&'static str, Opts>,
        tree: &Tree<&'static str, Opts>,
        topic: &str,
        publisher: Option<&'static str>,
    ) -> (Copies, Vec<String>) {
        let name = TopicName::parse(topic, DEFAULT_MAX_LEVELS).expect("valid name");
        let mut groups = Vec::new();
        fanout.collect(tree, name, publisher.as_ref(), |group| {
            groups.push(format!("{}/{}", group.name, group.filter));
        });
        let mut out: Vec<_> = fanout
            .deliveries()
            .map(|d| {
                let ids = d.identifiers.iter().map(|id| id.get()).collect();
                (*d.key, d.options.qos, ids)
            })
            .collect();
        out.sort();
        groups.sort();
        (out, groups)
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_with_max_qos_and_all_identifiers() {
        let mut tree = Tree::new();
        subscribe(&mut tree, "a", "t/#", opts(0, false, 7));
        subscribe(&mut tree, "a", "t/+", opts(2, false, 3));
        subscribe(&mut tree, "a", "t/x", opts(1, false, 0));
        subscribe(&mut tree, "a", "#", opts(0, false, 3));
        subscribe(&mut tree, "b", "t/x", opts(1, false, 9));
        subscribe(&mut tree, "c", "t/y", opts(2, false, 1));
        subscribe(&mut tree, "a", "$share/g/t/x", opts(1, false, 5));
        let mut fanout = Fanout::new();
        assert_eq!(
            fan(&mut fanout, &tree, "t/x", None),
            (
                vec![("a", 2, vec![3, 7]), ("b", 1, vec![9])],
                vec!["g/t/x".to_owned()]
            )
        );
        // The buffers are reused: nothing of the previous message remains.
        assert_eq!(
            fan(&mut fanout, &tree, "t", None),
            (vec![("a", 0, vec![3, 7])], vec![])
        );
        assert_eq!(
            fan(&mut fanout, &tree, "u", None),
            (vec![("a", 0, vec![3])], vec![])
        );
        assert_eq!(fan(&mut fanout, &tree, "$u", None), (vec![], vec![]));
    }

    #[test]
    fn no_local_skips_only_the_publishers_own_subscription() {
        let mut tree = Tree::new();
        subscribe(&mut tree, "a", "t/+", opts(2, true, 1));
        subscribe(&mut tree, "a", "t/x", opts(1, false, 2));
        subscribe(&mut tree, "b", "t/x", opts(2, true, 3));
        let mut fanout = Fanout::new();
        assert_eq!(
            fan(&mut fanout, &tree, "t/x", Some("a")),
            (vec![("a", 1, vec![2]), ("b", 2, vec![3])], vec![])
        );
        assert_eq!(
            fan(&mut fanout, &tree, "t/x", Some("b")),
            (vec![("a", 2, vec![1, 2])], vec![])
        );
        assert_eq!(fan(&mut fanout, &tree, "t/y", Some("a")), (vec![], vec![]));
    }
}
