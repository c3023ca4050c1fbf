//! The trie both topic indexes are built on: one node per topic level, children by the
//! level's text, and a slot of data on every node. The subscription [`Tree`](super::Tree)
//! keys it by filter (so `+` and `#` are children like any other level) and walks it with
//! a topic name; the [`Retained`](super::Retained) store keys it by name and walks it with a
//! filter. Nodes exist only while their slot or a descendant holds something: removing the
//! last thing below a node removes the node, so the memory follows what is stored now and
//! not what was ever stored.
//!
//! Every walk recurses once per level; topics are only built through
//! [`TopicName`](super::TopicName) and [`TopicFilter`](super::TopicFilter), whose level cap
//! (at most [`MAX_LEVELS_CEILING`](super::MAX_LEVELS_CEILING)) bounds the depth.

use std::collections::HashMap;

/// What a node holds; a node whose slot is vacant and which has no children is pruned.
pub(super) trait Slot: Default {
    /// Whether the slot holds nothing.
    fn is_vacant(&self) -> bool;
}

impl<M> Slot for Option<M> {
    fn is_vacant(&self) -> bool {
        self.is_none()
    }
}

/// One topic level.
#[derive(Debug)]
pub(super) struct Node<T> {
    /// The next levels, by their text (`""` for an empty level).
    children: HashMap<Box<str>, Node<T>>,
    /// What is stored for the topic that ends at this level.
    slot: T,
}

impl<T: Slot> Default for Node<T> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            slot: T::default(),
        }
    }
}

/// Splits the first level off `rest`: the level and what follows its `/`, or `None` when it
/// was the last level. Walking a topic this way allocates nothing.
pub(super) fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, tail)) => (level, Some(tail)),
        None => (rest, None),
    }
}

impl<T: Slot> Node<T> {
    /// The slot of `topic`, its nodes created on the way.
    pub(super) fn slot_mut(&mut self, topic: &str) -> &mut T {
        let mut node = self;
        for level in topic.split('/') {
            // Look up before inserting: the entry API would allocate the key every time.
            if !node.children.contains_key(level) {
                node.children.insert(level.into(), Node::default());
            }
            node = node
                .children
                .get_mut(level)
                .expect("present: inserted above");
        }
        &mut node.slot
    }

    /// The slot of `topic` if its node exists.
    pub(super) fn slot(&self, topic: &str) -> Option<&T> {
        let mut node = self;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        Some(&node.slot)
    }

    /// Applies `change` to the slot of `topic` if its node exists, then removes the nodes
    /// on the path that hold nothing any more.
    pub(super) fn update<R>(&mut self, topic: &str, change: impl FnOnce(&mut T) -> R) -> Option<R> {
        let (level, tail) = split_level(topic);
        let child = self.children.get_mut(level)?;
        let result = match tail {
            None => change(&mut child.slot),
            Some(tail) => child.update(tail, change)?,
        };
        if child.slot.is_vacant() && child.children.is_empty() {
            self.children.remove(level);
        }
        Some(result)
    }

    /// The node of the next level `level`, if any.
    pub(super) fn child(&self, level: &str) -> Option<&Node<T>> {
        self.children.get(level)
    }

    /// The next levels and their nodes, in no particular order.
    pub(super) fn children(&self) -> impl Iterator<Item = (&str, &Node<T>)> {
        self.children.iter().map(|(level, node)| (&**level, node))
    }

    /// What is stored for the topic ending here.
    pub(super) fn here(&self) -> &T {
        &self.slot
    }

    /// Nodes below this one, counted by a full walk: what the trie costs in memory, and
    /// the proof in tests that churn leaves nothing behind.
    pub(super) fn descendants(&self) -> usize {
        self.children
            .values()
            .map(|child| 1 + child.descendants())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_level_walks_empty_levels() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level("/"), ("", Some("")));
        assert_eq!(split_level(""), ("", None));
        assert_eq!(split_level("a/"), ("a", Some("")));
    }

    #[test]
    fn update_prunes_exactly_the_empty_path() {
        let mut root = Node::<Option<u8>>::default();
        *root.slot_mut("a/b/c") = Some(1);
        *root.slot_mut("a/b") = Some(2);
        *root.slot_mut("a//x") = Some(3);
        assert_eq!(root.descendants(), 5);
        assert_eq!(root.slot("a/b"), Some(&Some(2)));
        assert_eq!(root.slot("a/"), Some(&None));
        assert_eq!(root.slot("a/q"), None);

        assert_eq!(root.update("a/b/c", Option::take), Some(Some(1)));
        assert_eq!(root.descendants(), 4, "only c goes; b still holds 2");
        assert_eq!(root.update("a/b/c", Option::take), None, "c is gone");
        assert_eq!(root.update("a", Option::take), Some(None));
        assert_eq!(root.descendants(), 4, "a has children");
        assert_eq!(root.update("a//x", Option::take), Some(Some(3)));
        assert_eq!(root.descendants(), 2);
        assert_eq!(root.update("a/b", Option::take), Some(Some(2)));
        assert_eq!(root.descendants(), 0);
    }
}
