//! The topic indexes against the specification: random topic names and filters built from a
//! tiny alphabet of levels (`""`, `a`, `b`, `$x`, `+`, `#`), so that empty levels, `$`
//! topics and overlapping wildcards meet in almost every case. Each case checks
//!
//! - that validation accepts exactly the filters and names §4.7.1 allows;
//! - that [`Tree::matches`] finds exactly the plain subscriptions and shared groups whose
//!   filter [`filter_matches`] says match, after random subscribes, re-subscribes and
//!   unsubscribes;
//! - that [`Fanout`] gives each client one copy with the maximum QoS and every identifier of
//!   its matching subscriptions, minus its own no-local ones;
//! - that [`Retained::matching`] finds exactly the retained topics a filter matches;
//! - and that removing everything leaves both tries without a node.
//!
//! Runs as every fuzz target does ([`testkit::fuzz::Fuzz`]): for `LINTAS_FUZZ_SECONDS` from
//! `LINTAS_FUZZ_SEED`, printed with any failure.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use mqtt::topic::{
    Combine, Fanout, Matched, Retained, SubscriptionTarget, TopicFilter, TopicName, Tree,
};
use rand::Rng;
use rand::rngs::StdRng;
use testkit::fuzz::Fuzz;

/// Deep enough for every generated topic.
pub(crate) const MAX_LEVELS: usize = 8;

/// Levels topics are made of: few, so that random topics collide.
pub(crate) const LEVELS: [&str; 6] = ["", "a", "b", "$x", "+", "#"];

/// Whether `filter` matches `name`, straight from MQTT 5.0 §4.7: levels compare one by one,
/// `+` matches any one level, `#` the parent level and any number of levels below it, and
/// a filter starting with a wildcard matches no name starting with `$` (§4.7.2).
pub(crate) fn filter_matches(filter: &str, name: &str) -> bool {
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let names: Vec<&str> = name.split('/').collect();
    let filters: Vec<&str> = filter.split('/').collect();
    for (i, level) in filters.iter().enumerate() {
        match *level {
            "#" => return true,
            "+" if i < names.len() => {}
            literal if names.get(i) == Some(&literal) => {}
            _ => return false,
        }
    }
    filters.len() == names.len()
}

/// Whether §4.7.1 allows `filter`: wildcards only as whole levels, `#` only last.
pub(crate) fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "+" => true,
        "#" => i + 1 == levels.len(),
        other => !other.contains(['+', '#']),
    })
}

/// A subscription's options as the broker would keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

/// 1 to 4 levels from `alphabet`, joined.
pub(crate) fn topic(rng: &mut StdRng, alphabet: &[&str]) -> String {
    let levels: Vec<&str> = (0..rng.random_range(1..=4))
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect();
    levels.join("/")
}

/// A random filter, checked against [`valid_filter`]; `None` if invalid.
pub(crate) fn filter(rng: &mut StdRng, at: &str) -> Option<TopicFilter> {
    let text = topic(rng, &LEVELS);
    let parsed = TopicFilter::parse(&text, MAX_LEVELS);
    assert_eq!(
        parsed.is_ok(),
        valid_filter(&text) && !text.is_empty(),
        "{at}: validation of filter {text:?}: {parsed:?}"
    );
    parsed.ok()
}

/// A random valid name; the invalid ones drawn on the way are checked to be refused.
fn name(rng: &mut StdRng, at: &str) -> String {
    loop {
        let text = topic(rng, &LEVELS);
        let parsed = TopicName::parse(&text, MAX_LEVELS);
        assert_eq!(
            parsed.is_ok(),
            !text.contains(['+', '#']) && !text.is_empty(),
            "{at}: validation of name {text:?}: {parsed:?}"
        );
        if parsed.is_ok() {
            return text;
        }
    }
}

/// A random plain or shared subscription target.
fn target(rng: &mut StdRng, at: &str) -> Option<SubscriptionTarget> {
    let filter = filter(rng, at)?;
    let text = match rng.random_range(0..4) {
        0 => format!("$share/g/{filter}"),
        1 => format!("$share/h/{filter}"),
        _ => filter.to_string(),
    };
    Some(SubscriptionTarget::parse(&text, MAX_LEVELS).expect("a valid filter makes a valid target"))
}

/// Every subscription the tree should hold.
type Model = BTreeMap<(u32, SubscriptionTarget), Opts>;

/// What a name reaches: plain `(key, opts)` and shared `(group, filter, members)`, sorted.
type Reached = (Vec<(u32, Opts)>, Vec<(String, String, Vec<(u32, Opts)>)>);

/// What the tree finds for `name`.
fn tree_found(tree: &Tree<u32, Opts>, name: &str) -> Reached {
    let name = TopicName::parse(name, MAX_LEVELS).expect("valid name");
    let (mut plain, mut groups) = (Vec::new(), Vec::new());
    tree.matches(name, |matched| match matched {
        Matched::Subscriber { key, data } => plain.push((*key, *data)),
        Matched::Group(group) => groups.push((
            group.name.to_owned(),
            group.filter.to_string(),
            group.members.to_vec(),
        )),
    });
    plain.sort();
    groups.sort();
    (plain, groups)
}

/// What the tree should find for `name`, from the model and [`filter_matches`].
fn model_found(model: &Model, name: &str) -> Reached {
    let mut plain = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<(u32, Opts)>> = BTreeMap::new();
    for ((key, target), opts) in model {
        if !filter_matches(target.filter().as_str(), name) {
            continue;
        }
        match target {
            SubscriptionTarget::Plain(_) => plain.push((*key, *opts)),
            SubscriptionTarget::Shared { group, filter } => groups
                .entry((group.to_string(), filter.to_string()))
                .or_default()
                .push((*key, *opts)),
        }
    }
    plain.sort();
    let groups = groups
        .into_iter()
        .map(|((group, filter), members)| (group, filter, members))
        .collect();
    (plain, groups)
}

/// `(key, qos, identifiers)` per client for a message from `publisher`, by the model.
fn model_fanout(model: &Model, name: &str, publisher: u32) -> Vec<(u32, u8, Vec<u32>)> {
    let mut per_key: BTreeMap<u32, (u8, Vec<u32>)> = BTreeMap::new();
    for ((key, target), opts) in model {
        let SubscriptionTarget::Plain(filter) = target else {
            continue;
        };
        if !filter_matches(filter.as_str(), name) || (opts.no_local && *key == publisher) {
            continue;
        }
        let entry = per_key.entry(*key).or_insert((opts.qos, Vec::new()));
        entry.0 = entry.0.max(opts.qos);
        entry.1.extend(opts.id.map(NonZeroU32::get));
    }
    per_key
        .into_iter()
        .map(|(key, (qos, mut ids))| {
            ids.sort_unstable();
            ids.dedup();
            (key, qos, ids)
        })
        .collect()
}

fn check_subscriptions(rng: &mut StdRng, at: &str) {
    let mut tree = Tree::new();
    let mut model = Model::new();
    for _ in 0..rng.random_range(1..60) {
        let key = rng.random_range(0..6u32);
        let Some(target) = target(rng, at) else {
            continue;
        };
        if rng.random_bool(0.2) {
            let removed = tree.remove(&key, &target);
            assert_eq!(
                removed,
                model.remove(&(key, target.clone())),
                "{at}: remove {key} {target}"
            );
            continue;
        }
        let opts = Opts {
            qos: rng.random_range(0..3),
            no_local: rng.random_bool(0.3),
            id: NonZeroU32::new(rng.random_range(0..4)),
        };
        let previous = tree.insert(key, target.clone(), opts);
        assert_eq!(
            previous,
            model.insert((key, target.clone()), opts),
            "{at}: insert {key} {target}"
        );
    }
    assert_eq!(tree.len(), model.len(), "{at}: subscription count");

    let mut fanout = Fanout::new();
    for _ in 0..20 {
        let name = name(rng, at);
        assert_eq!(
            tree_found(&tree, &name),
            model_found(&model, &name),
            "{at}: matches of {name:?} in {model:?}"
        );
        let publisher = rng.random_range(0..6u32);
        let parsed = TopicName::parse(&name, MAX_LEVELS).expect("valid name");
        fanout.collect(&tree, parsed, Some(&publisher), |_| {});
        let mut got: Vec<(u32, u8, Vec<u32>)> = fanout
            .deliveries()
            .map(|d| {
                (
                    *d.key,
                    d.options.qos,
                    d.identifiers.iter().map(|id| id.get()).collect(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            model_fanout(&model, &name, publisher),
            "{at}: fan-out of {name:?} from {publisher} in {model:?}"
        );
    }

    // Unsubscribe everything, half of the keys at once, the rest one by one.
    for key in 0..3u32 {
        let expected = model.keys().filter(|(k, _)| *k == key).count();
        assert_eq!(tree.remove_key(&key), expected, "{at}: remove_key {key}");
    }
    for (key, target) in model.keys().filter(|(k, _)| *k >= 3) {
        assert!(
            tree.remove(key, target).is_some(),
            "{at}: remove {key} {target}"
        );
    }
    assert_eq!(
        (tree.len(), tree.node_count()),
        (0, 0),
        "{at}: tree left behind"
    );
}

fn check_retained(rng: &mut StdRng, at: &str) {
    let mut retained = Retained::new();
    let mut model: BTreeMap<String, u32> = BTreeMap::new();
    for n in 0..rng.random_range(1..40u32) {
        let topic = name(rng, at);
        let parsed = TopicName::parse(&topic, MAX_LEVELS).expect("valid name");
        if rng.random_bool(0.25) {
            assert_eq!(
                retained.remove(parsed),
                model.remove(&topic),
                "{at}: remove {topic:?}"
            );
        } else {
            assert_eq!(
                retained.set(parsed, n),
                model.insert(topic.clone(), n),
                "{at}: set {topic:?}"
            );
        }
    }
    assert_eq!(retained.len(), model.len(), "{at}: retained count");
    for _ in 0..20 {
        let Some(filter) = filter(rng, at) else {
            continue;
        };
        let mut got = Vec::new();
        retained.matching(&filter, |&n| got.push(n));
        got.sort_unstable();
        let mut expected: Vec<u32> = model
            .iter()
            .filter(|(topic, _)| filter_matches(filter.as_str(), topic))
            .map(|(_, &n)| n)
            .collect();
        expected.sort_unstable();
        assert_eq!(
            got, expected,
            "{at}: retained matching {filter} in {model:?}"
        );
    }
    for topic in model.keys() {
        let parsed = TopicName::parse(topic, MAX_LEVELS).expect("valid name");
        assert!(retained.remove(parsed).is_some(), "{at}: remove {topic:?}");
    }
    assert_eq!(
        (retained.len(), retained.node_count()),
        (0, 0),
        "{at}: store left behind"
    );
}

#[test]
fn topic_indexes_match_the_specification() {
    let mut fuzz = Fuzz::from_env("topic_indexes_match_the_specification");
    let mut rng = fuzz.rng();
    while fuzz.next_case() {
        let at = fuzz.at();
        check_subscriptions(&mut rng, &at);
        check_retained(&mut rng, &at);
    }
}

#[test]
fn reference_matcher_follows_the_specification_examples() {
    let yes = [
        ("sport/tennis/player1/#", "sport/tennis/player1"),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking/wimbledon",
        ),
        ("sport/#", "sport"),
        ("#", "a//b"),
        ("sport/+", "sport/"),
        ("+/+", "/finance"),
        ("/+", "/finance"),
        ("+/#", "a"),
        ("$SYS/#", "$SYS/monitor"),
        ("$SYS/+", "$SYS/x"),
        ("a/+", "a/$x"),
    ];
    let no = [
        ("sport/tennis/+", "sport/tennis/player1/ranking"),
        ("sport/+", "sport"),
        ("+", "/finance"),
        ("#", "$SYS/monitor"),
        ("+/monitor", "$SYS/monitor"),
        ("a/+/#", "a"),
        ("a/b", "a/b/c"),
        ("a/b/c", "a/b"),
    ];
    for (filter, name) in yes {
        assert!(filter_matches(filter, name), "{filter} should match {name}");
    }
    for (filter, name) in no {
        assert!(
            !filter_matches(filter, name),
            "{filter} should not match {name}"
        );
    }
}
