//! Turns a key path (`proxy.listeners[1].pool`) into the `line:col` where it is written.
//!
//! Validation reports paths, not positions (see `configkit`); this module re-reads the file
//! with `toml_edit`, which keeps spans, and walks the path. When the exact key is absent
//! (a default was used), the nearest written ancestor is reported instead.

use configkit::{KeyPath, Seg};
use toml_edit::{Document, Item, Table, Value};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub col: usize,
}

/// Position of byte `offset` in `text`.
pub fn position(text: &str, offset: usize) -> Position {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Position { line, col }
}

/// Where `path` is written in `text`, or its nearest written ancestor; 1:1 if nothing matches.
pub fn locate(text: &str, path: &KeyPath) -> Position {
    let Ok(doc) = Document::parse(text.to_owned()) else {
        return Position { line: 1, col: 1 };
    };
    let mut best = None;
    let mut node = Node::Item(doc.as_item());
    for seg in &path.0 {
        let Some(next) = node.child(seg) else { break };
        if let Some(span) = next.span() {
            best = Some(span.start);
        }
        node = next;
    }
    position(text, best.unwrap_or(0))
}

/// The key whose value is written at byte `offset`, for errors serde reports by position.
pub fn key_at(text: &str, offset: usize) -> Option<KeyPath> {
    let doc = Document::parse(text.to_owned()).ok()?;
    let mut path = Vec::new();
    deepest(Node::Item(doc.as_item()), offset, &mut path).then_some(KeyPath(path))
}

/// Extends `path` to the deepest descendant of `node` whose span holds `offset`.
fn deepest(node: Node<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
    for (seg, child) in node.children() {
        path.push(seg);
        if deepest(child, offset, path) || child.span().is_some_and(|s| s.contains(&offset)) {
            return true;
        }
        path.pop();
    }
    false
}

/// A step of the walk: a table-level item or an inline value.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn child(self, seg: &Seg) -> Option<Node<'a>> {
        match (self, seg) {
            (Node::Item(Item::Table(t)), seg) => Node::Table(t).child(seg),
            (Node::Table(t), Seg::Key(k)) => t.get(k).map(Node::Item),
            (Node::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(*i).map(Node::Table),
            (Node::Item(Item::Value(v)), seg) => Node::Value(v).child(seg),
            (Node::Value(Value::InlineTable(t)), Seg::Key(k)) => t.get(k).map(Node::Value),
            (Node::Value(Value::Array(a)), Seg::Index(i)) => a.get(*i).map(Node::Value),
            _ => None,
        }
    }

    fn children(self) -> Vec<(Seg, Node<'a>)> {
        let key = |k: &str| Seg::Key(k.to_owned());
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => t
                .iter()
                .filter_map(|(k, _)| Some((key(k), Node::Item(t.get(k)?))))
                .collect(),
            Node::Item(Item::ArrayOfTables(a)) => a
                .iter()
                .enumerate()
                .map(|(i, t)| (Seg::Index(i), Node::Table(t)))
                .collect(),
            Node::Item(Item::Value(v)) => Node::Value(v).children(),
            Node::Value(Value::InlineTable(t)) => t
                .iter()
                .filter_map(|(k, _)| Some((key(k), Node::Value(t.get(k)?))))
                .collect(),
            Node::Value(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (Seg::Index(i), Node::Value(v)))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn span(self) -> Option<std::ops::Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Table(t) => t.span(),
            Node::Value(v) => v.span(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[proxy.pools.web]\nbackends = [\n  { name = \"a\", address = \"127.0.0.1:1\" },\n]\n\n[[proxy.listeners]]\nname = \"l\"\npool = \"nope\"\n";

    #[test]
    fn finds_keys_in_tables_arrays_and_inline_tables() {
        let at = |p: KeyPath| locate(TEXT, &p);
        let proxy = KeyPath::root("proxy");
        assert_eq!(
            at(proxy.key("listeners").index(0).key("pool")),
            Position { line: 8, col: 8 }
        );
        assert_eq!(
            at(proxy
                .key("pools")
                .key("web")
                .key("backends")
                .index(0)
                .key("address")),
            Position { line: 3, col: 27 }
        );
    }

    #[test]
    fn names_the_key_written_at_an_offset() {
        let offset = TEXT.find("127.0.0.1:1").unwrap();
        let key = key_at(TEXT, offset).unwrap();
        assert_eq!(key.to_string(), "proxy.pools.web.backends[0].address");
        let blank_line = TEXT.find("\n\n").unwrap() + 1;
        assert_eq!(key_at(TEXT, blank_line), None);
    }

    #[test]
    fn falls_back_to_the_nearest_written_ancestor() {
        let p = KeyPath::root("proxy")
            .key("listeners")
            .index(0)
            .key("retries");
        assert_eq!(locate(TEXT, &p).line, 6);
    }
}
