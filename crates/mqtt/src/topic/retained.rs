//! Retained messages: the last message published with the RETAIN flag to each topic name,
//! sent to every new subscription whose filter matches it (§3.3.1.3).
//!
//! The store is a trie keyed by name level, walked with the subscription's filter: a literal
//! level follows one child, `+` every child, `#` the whole subtree. A filter with a literal
//! prefix (`site/7/#`) therefore touches only that branch, never every retained topic. The
//! §4.7.2 rule holds here too: a filter beginning with `+` or `#` skips names beginning with
//! `$`. Whether an empty payload clears a topic is the caller's decision (it is the rule for
//! PUBLISH, not for every source of retained messages), so clearing is [`Retained::remove`].

use super::syntax::{TopicFilter, TopicName};
use super::trie::{Node, split_level};

/// The retained message of every topic that has one; `M` carries its own topic name.
#[derive(Debug)]
pub struct Retained<M> {
    /// The messages by name level.
    root: Node<Option<M>>,
    /// How many topics hold a message.
    len: usize,
}

impl<M> Default for Retained<M> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<M> Retained<M> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retains `message` for `name`; the message it replaces, if any.
    pub fn set(&mut self, name: TopicName<'_>, message: M) -> Option<M> {
        let previous = self.root.slot_mut(name.as_str()).replace(message);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Clears `name`'s retained message; the message, if there was one.
    pub fn remove(&mut self, name: TopicName<'_>) -> Option<M> {
        let removed = self.root.update(name.as_str(), Option::take).flatten();
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// `name`'s retained message.
    pub fn get(&self, name: TopicName<'_>) -> Option<&M> {
        self.root.slot(name.as_str())?.as_ref()
    }

    /// Calls `visit` with every retained message whose topic name `filter` matches, in no
    /// particular order.
    pub fn matching<'r>(&'r self, filter: &TopicFilter, mut visit: impl FnMut(&'r M)) {
        let (level, tail) = split_level(filter.as_str());
        match level {
            "#" => {
                for (level, child) in self.root.children() {
                    if !level.starts_with('$') {
                        visit_all(child, &mut visit);
                    }
                }
            }
            "+" => {
                for (level, child) in self.root.children() {
                    if !level.starts_with('$') {
                        walk(child, tail, &mut visit);
                    }
                }
            }
            literal => {
                if let Some(child) = self.root.child(literal) {
                    walk(child, tail, &mut visit);
                }
            }
        }
    }

    /// How many topics hold a retained message.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic holds a retained message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many trie nodes the store holds: its memory, which follows the retained topics
    /// that exist now. Counted by walking the whole trie, so for tests and occasional
    /// reports, not per message.
    pub fn node_count(&self) -> usize {
        self.root.descendants()
    }
}

/// Visits the messages below `node`, whose name levels matched the filter so far; `rest` is
/// the rest of the filter, `None` once every filter level is matched.
fn walk<'r, M>(node: &'r Node<Option<M>>, rest: Option<&str>, visit: &mut impl FnMut(&'r M)) {
    let Some(rest) = rest else {
        if let Some(message) = node.here() {
            visit(message);
        }
        return;
    };
    let (level, tail) = split_level(rest);
    match level {
        // `a/#` matches `a` too: `#` includes the parent level.
        "#" => visit_all(node, visit),
        "+" => {
            for (_, child) in node.children() {
                walk(child, tail, visit);
            }
        }
        literal => {
            if let Some(child) = node.child(literal) {
                walk(child, tail, visit);
            }
        }
    }
}

/// Visits the message of `node` and of every node below it.
fn visit_all<'r, M>(node: &'r Node<Option<M>>, visit: &mut impl FnMut(&'r M)) {
    if let Some(message) = node.here() {
        visit(message);
    }
    for (_, child) in node.children() {
        visit_all(child, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{DEFAULT_MAX_LEVELS, MAX_LEVELS_CEILING};

    fn name(topic: &str) -> TopicName<'_> {
        TopicName::parse(topic, DEFAULT_MAX_LEVELS).expect("valid name")
    }

    fn store(topics: &[&'static str]) -> Retained<&'static str> {
        let mut retained = Retained::new();
        for &topic in topics {
            assert_eq!(retained.set(name(topic), topic), None);
        }
        retained
    }

    fn matching(retained: &Retained<&'static str>, filter: &str) -> Vec<&'static str> {
        let filter = TopicFilter::parse(filter, DEFAULT_MAX_LEVELS).expect("valid filter");
        let mut out = Vec::new();
        retained.matching(&filter, |topic| out.push(*topic));
        out.sort();
        out
    }

    const TOPICS: [&str; 9] = [
        "sport",
        "sport/",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "/finance",
        "$SYS/broker/uptime",
        "$SYS",
        "a//b",
        "a/$x",
    ];

    #[test]
    fn filters_find_every_matching_retained_topic() {
        let retained = store(&TOPICS);
        assert_eq!(
            matching(&retained, "sport/#"),
            [
                "sport",
                "sport/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking"
            ]
        );
        assert_eq!(matching(&retained, "sport/+"), ["sport/"]);
        assert_eq!(
            matching(&retained, "sport/tennis/+"),
            ["sport/tennis/player1"]
        );
        assert_eq!(matching(&retained, "+/+"), ["/finance", "a/$x", "sport/"]);
        assert_eq!(matching(&retained, "/+"), ["/finance"]);
        assert_eq!(matching(&retained, "a/+/b"), ["a//b"]);
        assert_eq!(matching(&retained, "a/+"), ["a/$x"]);
        assert_eq!(matching(&retained, "sport/tennis"), Vec::<&str>::new());
        assert_eq!(matching(&retained, "+"), ["sport"]);
    }

    #[test]
    fn wildcard_first_level_skips_dollar_topics() {
        let retained = store(&TOPICS);
        assert_eq!(
            matching(&retained, "#"),
            [
                "/finance",
                "a/$x",
                "a//b",
                "sport",
                "sport/",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking"
            ]
        );
        assert_eq!(matching(&retained, "+/broker/uptime"), Vec::<&str>::new());
        assert_eq!(
            matching(&retained, "$SYS/#"),
            ["$SYS", "$SYS/broker/uptime"]
        );
        assert_eq!(matching(&retained, "$SYS/+/uptime"), ["$SYS/broker/uptime"]);
    }

    #[test]
    fn deepest_topics_are_found_on_a_task_stack() {
        // Test threads have 2 MiB stacks, as tokio's workers do.
        let topic = "a/".repeat(MAX_LEVELS_CEILING - 1) + "a";
        let mut retained = Retained::new();
        retained.set(
            TopicName::parse(&topic, MAX_LEVELS_CEILING).expect("valid name"),
            "deep",
        );
        for filter in ["#", "a/#"] {
            assert_eq!(matching(&retained, filter), ["deep"]);
        }
        let plus = "+/".repeat(MAX_LEVELS_CEILING - 1) + "+";
        let plus = TopicFilter::parse(&plus, MAX_LEVELS_CEILING).expect("valid filter");
        let mut found = Vec::new();
        retained.matching(&plus, |message| found.push(*message));
        assert_eq!(found, ["deep"]);
    }

    #[test]
    fn set_replaces_and_remove_prunes() {
        let mut retained = store(&["a/b/c", "a/b"]);
        assert_eq!(retained.node_count(), 3);
        assert_eq!(retained.set(name("a/b"), "again"), Some("a/b"));
        assert_eq!(retained.get(name("a/b")), Some(&"again"));
        assert_eq!(retained.get(name("a")), None);
        assert_eq!(retained.get(name("a/b/c/d")), None);
        assert_eq!(retained.len(), 2);
        assert_eq!(retained.remove(name("a")), None);
        assert_eq!(retained.remove(name("a/b/c")), Some("a/b/c"));
        assert_eq!(retained.node_count(), 2);
        assert_eq!(retained.remove(name("a/b/c")), None);
        assert_eq!(retained.remove(name("a/b")), Some("again"));
        assert_eq!((retained.len(), retained.node_count()), (0, 0));
        assert!(retained.is_empty());
    }
}
