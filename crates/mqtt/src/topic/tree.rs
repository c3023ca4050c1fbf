//! The subscription tree: every subscription of this node, in a trie keyed by filter level,
//! so that finding who a message goes to walks only the branches its topic name can match.
//!
//! A PUBLISH to a name of `n` levels looks up, at each level, the literal child, the `+`
//! child and the `#` child of every node still matching, so the work is levels × matching
//! branches, whatever the number of subscriptions; the name is split as it is walked, so
//! nothing is allocated. A node holds the plain subscriptions of its filter by subscriber
//! key and its shared groups by share name, each group's members sorted by key so the
//! balancing strategy that picks one sees them in the same order on every call.
//!
//! §4.7.2 is applied at the first level: a name beginning with `$` (`$SYS/…`) is not matched
//! by a filter beginning with `+` or `#`. A second index from key to targets lets a session
//! that ends remove its subscriptions without scanning the tree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use super::shared::SubscriptionTarget;
use super::syntax::{TopicFilter, TopicName};
use super::trie::{Node, Slot, split_level};

/// One subscription found by [`Tree::matches`].
#[derive(Debug)]
pub enum Matched<'t, K, V> {
    /// A plain subscription: the message goes to `key`, with the subscription's `data`.
    Subscriber {
        /// The subscriber.
        key: &'t K,
        /// The subscription's options.
        data: &'t V,
    },
    /// A shared group: the message goes to one of its members, which the caller picks.
    Group(SharedGroup<'t, K, V>),
}

/// A shared subscription group whose filter matched, with its members.
#[derive(Debug)]
pub struct SharedGroup<'t, K, V> {
    /// The ShareName.
    pub name: &'t str,
    /// The filter after the ShareName; `name` and `filter` together identify the group
    /// (for a round-robin cursor, say).
    pub filter: &'t TopicFilter,
    /// Every member with its subscription's options, sorted by key, never empty.
    pub members: &'t [(K, V)],
}

/// The members of one shared group.
#[derive(Debug)]
struct Group<K, V> {
    /// The filter the group was subscribed with, handed to the caller with the members.
    filter: TopicFilter,
    /// Sorted by key, one entry per key.
    members: Vec<(K, V)>,
}

/// The subscriptions of one filter.
#[derive(Debug)]
struct Subscribers<K, V> {
    /// Plain subscriptions by subscriber.
    plain: HashMap<K, V>,
    /// Shared groups by share name.
    groups: BTreeMap<Box<str>, Group<K, V>>,
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Self {
            plain: HashMap::new(),
            groups: BTreeMap::new(),
        }
    }
}

impl<K, V> Slot for Subscribers<K, V> {
    fn is_vacant(&self) -> bool {
        self.plain.is_empty() && self.groups.is_empty()
    }
}

impl<K: Ord + Hash, V> Subscribers<K, V> {
    /// Removes `key`'s subscription to `target` (whose filter is this node's).
    fn remove(&mut self, key: &K, target: &SubscriptionTarget) -> Option<V> {
        match target {
            SubscriptionTarget::Plain(_) => self.plain.remove(key),
            SubscriptionTarget::Shared { group, .. } => {
                let members = &mut self.groups.get_mut(group)?.members;
                let at = members.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
                let (_, data) = members.remove(at);
                if members.is_empty() {
                    self.groups.remove(group);
                }
                Some(data)
            }
        }
    }
}

/// Every subscription of this node: subscriber key `K` (a session id) to a
/// [`SubscriptionTarget`], with the subscription's options `V` (QoS, no-local,
/// retain-as-published, retain handling, subscription identifier).
#[derive(Debug)]
pub struct Tree<K, V> {
    /// The subscriptions by filter level.
    root: Node<Subscribers<K, V>>,
    /// Each key's targets, so [`Tree::remove_key`] finds them without a scan.
    by_key: HashMap<K, HashSet<SubscriptionTarget>>,
    /// How many subscriptions the tree holds.
    len: usize,
}

impl<K, V> Default for Tree<K, V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            by_key: HashMap::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Hash + Clone, V> Tree<K, V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes `key` to `target`. A second subscription of the same key to the same
    /// target replaces the first (§3.8.4) and its options are returned.
    pub fn insert(&mut self, key: K, target: SubscriptionTarget, data: V) -> Option<V> {
        let slot = self.root.slot_mut(target.filter().as_str());
        let previous = match &target {
            SubscriptionTarget::Plain(_) => slot.plain.insert(key.clone(), data),
            SubscriptionTarget::Shared { group, filter } => {
                let members = &mut slot
                    .groups
                    .entry(group.clone())
                    .or_insert_with(|| Group {
                        filter: filter.clone(),
                        members: Vec::new(),
                    })
                    .members;
                match members.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(at) => Some(std::mem::replace(&mut members[at].1, data)),
                    Err(at) => {
                        members.insert(at, (key.clone(), data));
                        None
                    }
                }
            }
        };
        if previous.is_none() {
            self.by_key.entry(key).or_default().insert(target);
            self.len += 1;
        }
        previous
    }

    /// Unsubscribes `key` from `target`; its options if it was subscribed.
    pub fn remove(&mut self, key: &K, target: &SubscriptionTarget) -> Option<V> {
        let targets = self.by_key.get_mut(key)?;
        if !targets.remove(target) {
            return None;
        }
        if targets.is_empty() {
            self.by_key.remove(key);
        }
        self.len -= 1;
        self.root
            .update(target.filter().as_str(), |slot| slot.remove(key, target))
            .flatten()
    }

    /// Removes every subscription of `key` (its session ended); how many there were.
    pub fn remove_key(&mut self, key: &K) -> usize {
        let Some(targets) = self.by_key.remove(key) else {
            return 0;
        };
        for target in &targets {
            self.root
                .update(target.filter().as_str(), |slot| slot.remove(key, target));
        }
        self.len -= targets.len();
        targets.len()
    }

    /// Calls `visit` with every plain subscription whose filter matches `name` and every
    /// shared group whose filter does, once each. A client with overlapping subscriptions
    /// is visited once per subscription; [`Fanout`](super::Fanout) turns that into one
    /// delivery per client.
    pub fn matches<'t>(&'t self, name: TopicName<'_>, mut visit: impl FnMut(Matched<'t, K, V>)) {
        let (level, tail) = split_level(name.as_str());
        if !level.starts_with('$') {
            wildcards(&self.root, tail, &mut visit);
        }
        if let Some(child) = self.root.child(level) {
            walk(child, tail, &mut visit);
        }
    }

    /// How many subscriptions the tree holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many trie nodes the tree holds: its memory, which follows the subscriptions
    /// that exist now, not the ones that ever existed. Counted by walking the whole trie,
    /// so for tests and occasional reports, not per message.
    pub fn node_count(&self) -> usize {
        self.root.descendants()
    }
}

/// Visits the matches below `node`, which matched the name's levels so far; `rest` is the
/// rest of the name, `None` once every level is matched.
fn walk<'t, K, V>(
    node: &'t Node<Subscribers<K, V>>,
    rest: Option<&str>,
    visit: &mut impl FnMut(Matched<'t, K, V>),
) {
    let Some(rest) = rest else {
        visit_here(node, visit);
        // `a/#` matches `a` too: `#` includes the parent level.
        if let Some(all) = node.child("#") {
            visit_here(all, visit);
        }
        return;
    };
    let (level, tail) = split_level(rest);
    wildcards(node, tail, visit);
    if let Some(child) = node.child(level) {
        walk(child, tail, visit);
    }
}

/// Visits the matches of `node`'s `#` and `+` children for a name level below `node`,
/// followed by `tail`.
fn wildcards<'t, K, V>(
    node: &'t Node<Subscribers<K, V>>,
    tail: Option<&str>,
    visit: &mut impl FnMut(Matched<'t, K, V>),
) {
    if let Some(all) = node.child("#") {
        visit_here(all, visit);
    }
    if let Some(one) = node.child("+") {
        walk(one, tail, visit);
    }
}

/// Visits the subscriptions whose filter ends at `node`.
fn visit_here<'t, K, V>(
    node: &'t Node<Subscribers<K, V>>,
    visit: &mut impl FnMut(Matched<'t, K, V>),
) {
    let subscribers = node.here();
    for (key, data) in &subscribers.plain {
        visit(Matched::Subscriber { key, data });
    }
    for (name, group) in &subscribers.groups {
        visit(Matched::Group(SharedGroup {
            name,
            filter: &group.filter,
            members: &group.members,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{DEFAULT_MAX_LEVELS, MAX_LEVELS_CEILING};

    fn target(topic: &str) -> SubscriptionTarget {
        SubscriptionTarget::parse(topic, DEFAULT_MAX_LEVELS).expect("valid target")
    }

    fn name(topic: &str) -> TopicName<'_> {
        TopicName::parse(topic, DEFAULT_MAX_LEVELS).expect("valid name")
    }

    /// What `name` reaches, sorted: `key=data` per plain subscription, `group/filter:keys`
    /// per shared group.
    fn reached(tree: &Tree<u32, u8>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.matches(name(topic), |matched| match matched {
            Matched::Subscriber { key, data } => out.push(format!("{key}={data}")),
            Matched::Group(group) => {
                let keys: Vec<String> = group.members.iter().map(|(k, _)| k.to_string()).collect();
                out.push(format!(
                    "{}/{}:{}",
                    group.name,
                    group.filter,
                    keys.join(",")
                ));
            }
        });
        out.sort();
        out
    }

    fn tree_of(subscriptions: &[(u32, &str)]) -> Tree<u32, u8> {
        let mut tree = Tree::new();
        for (n, &(key, topic)) in subscriptions.iter().enumerate() {
            tree.insert(
                key,
                target(topic),
                u8::try_from(n).expect("few subscriptions"),
            );
        }
        tree
    }

    #[test]
    fn wildcards_match_per_specification_examples() {
        let tree = tree_of(&[
            (1, "sport/tennis/player1/#"),
            (2, "sport/#"),
            (3, "#"),
            (4, "sport/tennis/+"),
            (5, "+/+"),
            (6, "/+"),
            (7, "+"),
            (8, "sport/+/player1"),
            (9, "sport"),
        ]);
        assert_eq!(reached(&tree, "sport"), ["2=1", "3=2", "7=6", "9=8"]);
        assert_eq!(
            reached(&tree, "sport/tennis/player1"),
            ["1=0", "2=1", "3=2", "4=3", "8=7"]
        );
        assert_eq!(
            reached(&tree, "sport/tennis/player1/ranking/wimbledon"),
            ["1=0", "2=1", "3=2"]
        );
        assert_eq!(reached(&tree, "sport/"), ["2=1", "3=2", "5=4"]);
        assert_eq!(reached(&tree, "/finance"), ["3=2", "5=4", "6=5"]);
        assert_eq!(reached(&tree, "sport/tennis"), ["2=1", "3=2", "5=4"]);
    }

    #[test]
    fn wildcard_first_level_does_not_match_dollar_topics() {
        let tree = tree_of(&[
            (1, "#"),
            (2, "+/monitor/Clients"),
            (3, "$SYS/#"),
            (4, "$SYS/monitor/+"),
            (5, "+"),
            (6, "$share/g/#"),
            (7, "a/+"),
        ]);
        assert_eq!(reached(&tree, "$SYS/monitor/Clients"), ["3=2", "4=3"]);
        assert_eq!(reached(&tree, "$SYS"), ["3=2"]);
        assert_eq!(reached(&tree, "$x"), Vec::<String>::new());
        assert_eq!(reached(&tree, "a/$x"), ["1=0", "7=6", "g/#:6"]);
        assert_eq!(
            reached(&tree, "x$/monitor/Clients"),
            ["1=0", "2=1", "g/#:6"]
        );
    }

    #[test]
    fn same_key_and_target_replaces() {
        let mut tree = Tree::new();
        assert_eq!(tree.insert(1u32, target("a/+"), 0u8), None);
        assert_eq!(tree.insert(1, target("a/+"), 2), Some(0));
        assert_eq!(tree.insert(1, target("$share/g/a/+"), 1), None);
        assert_eq!(tree.insert(1, target("$share/g/a/+"), 0), Some(1));
        assert_eq!(tree.insert(2, target("a/+"), 1), None);
        assert_eq!(tree.len(), 3);
        assert_eq!(reached(&tree, "a/b"), ["1=2", "2=1", "g/a/+:1"]);
    }

    #[test]
    fn shared_groups_are_yielded_once_with_members_sorted() {
        let tree = tree_of(&[
            (30, "$share/g/a/#"),
            (10, "$share/g/a/#"),
            (20, "$share/g/a/#"),
            (40, "$share/g/a/+"),
            (50, "$share/h/a/+"),
            (60, "a/+"),
        ]);
        assert_eq!(
            reached(&tree, "a/b"),
            ["60=5", "g/a/#:10,20,30", "g/a/+:40", "h/a/+:50"]
        );
        let mut members = Vec::new();
        tree.matches(name("a"), |matched| {
            if let Matched::Group(group) = matched {
                members.extend(group.members.iter().map(|&(k, d)| (k, d)));
            }
        });
        assert_eq!(members, [(10, 1), (20, 2), (30, 0)]);
    }

    #[test]
    fn removal_prunes_nodes_and_index() {
        let mut tree = tree_of(&[
            (1, "a/b/c"),
            (2, "a/b/c"),
            (1, "a/+"),
            (1, "$share/g/a/b/c"),
            (2, "$share/g/a/b/c"),
            (3, "x//y/#"),
        ]);
        assert_eq!(tree.node_count(), 4 + 4);
        assert_eq!(tree.remove(&1, &target("a/b/c")), Some(0));
        assert_eq!(tree.remove(&1, &target("a/b/c")), None, "already gone");
        assert_eq!(tree.remove(&9, &target("a/b/c")), None, "never there");
        assert_eq!(tree.remove(&2, &target("$share/g/a/b/c")), Some(4));
        assert_eq!(tree.node_count(), 8, "a/b/c still has subscribers");
        assert_eq!(reached(&tree, "a/b/c"), ["2=1", "g/a/b/c:1"]);
        assert_eq!(tree.remove_key(&1), 2);
        assert_eq!(tree.remove_key(&1), 0);
        assert_eq!(reached(&tree, "a/b/c"), ["2=1"]);
        assert_eq!(tree.node_count(), 3 + 4);
        assert_eq!(tree.remove_key(&2), 1);
        assert_eq!(tree.remove(&3, &target("x//y/#")), Some(5));
        assert_eq!((tree.len(), tree.node_count()), (0, 0));
        assert!(tree.is_empty());
    }

    #[test]
    fn deepest_topics_match_on_a_task_stack() {
        // Test threads have 2 MiB stacks, as tokio's workers do.
        let deepest = |last: &str| format!("{}{last}", "a/".repeat(MAX_LEVELS_CEILING - 1));
        let filters = [deepest("#"), deepest("+"), deepest("a"), "#".to_owned()];
        let mut tree = Tree::new();
        for (key, filter) in (0u32..).zip(&filters) {
            let target = SubscriptionTarget::parse(filter, MAX_LEVELS_CEILING).expect("valid");
            tree.insert(key, target, 0u8);
        }
        let topic = deepest("a");
        let name = TopicName::parse(&topic, MAX_LEVELS_CEILING).expect("valid name");
        let mut found = Vec::new();
        tree.matches(name, |matched| {
            if let Matched::Subscriber { key, .. } = matched {
                found.push(*key);
            }
        });
        found.sort_unstable();
        assert_eq!(found, [0, 1, 2, 3]);
        for key in 0..4 {
            assert_eq!(tree.remove_key(&key), 1);
        }
        assert_eq!(tree.node_count(), 0);
    }

    #[test]
    fn large_tree_matches_only_its_branch() {
        // 20,000 subscriptions of 10 levels under 200 sites, wildcards included: a match
        // walks the one site's branch, so 1,000 matches take milliseconds even in debug.
        // (With 100,000 the matches cost the same, 9 µs each in debug, but building the
        // tree takes a second of debug-build hashing.)
        let mut tree = Tree::new();
        for n in 0u32..20_000 {
            let site = n / 10 % 200;
            let filter = match n % 10 {
                0 => format!("site/{site}/+/d/e/f/g/h/i/j"),
                1 => format!("site/{site}/b/c/d/e/f/g/h/#"),
                _ => format!("site/{site}/b/c/d/e/f/g/h/{n}"),
            };
            tree.insert(n, target(&filter), 0u8);
        }
        let start = std::time::Instant::now();
        let mut found = Vec::new();
        for _ in 0..1000 {
            found.clear();
            tree.matches(name("site/7/b/c/d/e/f/g/h/72"), |matched| {
                if let Matched::Subscriber { key, .. } = matched {
                    found.push(*key);
                }
            });
        }
        let elapsed = start.elapsed();
        found.sort_unstable();
        let mut expected: Vec<u32> = (0..20_000u32)
            .filter(|n| n % 10 == 1 && n / 10 % 200 == 7)
            .chain([72])
            .collect();
        expected.sort_unstable();
        assert_eq!(found, expected);
        assert!(
            elapsed < std::time::Duration::from_millis(500),
            "1000 matches took {elapsed:?}"
        );
    }
}
