//! The ACL against brute force. For random filters `f` and `g` from the topic fuzzer's
//! alphabet, `f.covers(g)` must say whether every name `g` matches is matched by `f`,
//! `f.overlaps(g)` whether some name is matched by both, and `f.matches(name)` agree with
//! the specification's matcher ([`filter_matches`]) on every name. For random rule sets (fixed filters and `%c` placeholders, every access),
//! [`Acl::allows`] must allow a PUBLISH exactly when a write rule matches the name and no
//! deny rule does, and a SUBSCRIBE exactly when one read rule matches every name the filter
//! matches and no deny rule matches any of them.
//!
//! The names tried are every name of up to one level more than the generated filters have,
//! over the filters' literal levels plus `z`, a level no filter names: a filter's wildcard
//! matches it where a literal cannot, and one level more than any filter has shows whether
//! a `#` is needed, so these finitely many names decide both relations as all names would.
//!
//! Runs as every fuzz target does ([`testkit::fuzz::Fuzz`]): for `LINTAS_FUZZ_SECONDS` from
//! `LINTAS_FUZZ_SEED`, printed with any failure.

use std::net::{IpAddr, Ipv4Addr};

use configkit::KeyPath;
use mqtt::auth::{Access, Acl, AclRule, Auth, AuthConfig, Identity, RuleAccess};
use mqtt::topic::TopicName;
use rand::Rng;
use rand::rngs::StdRng;
use testkit::fuzz::Fuzz;

use crate::topic_fuzz::{MAX_LEVELS, filter, filter_matches, topic, valid_filter};

/// Levels of the names tried: the generator's literals and one it never uses.
const NAME_LEVELS: [&str; 5] = ["", "a", "b", "$x", "z"];

/// Deepest name tried: one level past the generator's deepest filter (4 levels).
const NAME_DEPTH: usize = 5;

/// Every valid name of 1 to [`NAME_DEPTH`] levels over [`NAME_LEVELS`].
fn every_name() -> Vec<String> {
    let mut all = Vec::new();
    let mut layer = vec![String::new()];
    for depth in 1..=NAME_DEPTH {
        layer = layer
            .iter()
            .flat_map(|prefix| {
                NAME_LEVELS.iter().map(move |level| match depth {
                    1 => (*level).to_owned(),
                    _ => format!("{prefix}/{level}"),
                })
            })
            .collect();
        all.extend(layer.iter().filter(|name| !name.is_empty()).cloned());
    }
    all
}

#[test]
fn covers_and_overlaps_agree_with_brute_force() {
    let names = every_name();
    let mut fuzz = Fuzz::from_env("covers_and_overlaps_agree_with_brute_force");
    let mut rng = fuzz.rng();
    while fuzz.next_case() {
        let at = fuzz.at();
        let (Some(f), Some(g)) = (filter(&mut rng, &at), filter(&mut rng, &at)) else {
            continue;
        };
        let (mut g_only, mut both) = (false, false);
        for name in &names {
            let in_f = filter_matches(f.as_str(), name);
            let in_g = filter_matches(g.as_str(), name);
            let parsed = TopicName::parse(name, MAX_LEVELS).expect("every name tried is valid");
            assert_eq!(f.matches(parsed), in_f, "{at}: {f} matches {name}");
            g_only |= in_g && !in_f;
            both |= in_g && in_f;
        }
        assert_eq!(f.covers(&g), !g_only, "{at}: {f} covers {g}");
        assert_eq!(f.overlaps(&g), both, "{at}: {f} overlaps {g}");
        assert_eq!(g.overlaps(&f), both, "{at}: {g} overlaps {f}");
    }
}

#[test]
fn the_names_tried_are_every_name_up_to_five_levels() {
    let names = every_name();
    assert_eq!(names.len(), 5 + 25 + 125 + 625 + 3125 - 1);
    for name in ["a", "/", "$x/z", "z/z/z/z/z", "////"] {
        assert!(names.iter().any(|n| n == name), "{name} is tried");
    }
}

/// Levels of rule filters: the topic fuzzer's and the client identifier placeholder.
const RULE_LEVELS: [&str; 7] = ["", "a", "b", "$x", "+", "#", "%c"];

/// Client identifiers: levels the names also have, so a substituted rule can match.
const CLIENT_IDS: [&str; 2] = ["a", "b"];

/// A random rule set for everyone (no user: the clients are anonymous) with valid filters.
fn rules(rng: &mut StdRng) -> Vec<AclRule> {
    let accesses = [
        RuleAccess::Read,
        RuleAccess::Write,
        RuleAccess::ReadWrite,
        RuleAccess::Deny,
    ];
    (0..rng.random_range(0..=4))
        .filter_map(|_| {
            let text = topic(rng, &RULE_LEVELS);
            (valid_filter(&text) && !text.is_empty()).then(|| AclRule {
                user: None,
                topic: text,
                access: accesses[rng.random_range(0..accesses.len())],
            })
        })
        .collect()
}

/// The ACL of `rules` and an identity for each client identifier, made as the broker makes
/// them: from the configuration, through an anonymous CONNECT.
fn build(rules: Vec<AclRule>, runtime: &tokio::runtime::Runtime) -> (Acl, Vec<Identity>) {
    let cfg = AuthConfig {
        allow_anonymous: true,
        users: Vec::new(),
        acl: rules,
    };
    let (auth, acl): (Auth, Acl) = cfg
        .build(&KeyPath::root("mqtt"))
        .expect("valid rules build");
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let clients = CLIENT_IDS
        .iter()
        .map(|id| {
            runtime
                .block_on(auth.connect(None, None, id, peer))
                .expect("anonymous clients are allowed")
        })
        .collect();
    (acl, clients)
}

/// What the rules say, by brute force over `names`: `(publish allowed for each name,
/// subscribe allowed)` for the client `id` and the filter `g`. No rules allow everything.
fn reference(rules: &[AclRule], id: &str, g: &str, names: &[String]) -> (Vec<bool>, bool) {
    if rules.is_empty() {
        return (vec![true; names.len()], true);
    }
    let rules: Vec<(String, RuleAccess)> = rules
        .iter()
        .map(|r| (r.topic.replace("%c", id), r.access))
        .collect();
    let grants = |access: RuleAccess, read: bool| match access {
        RuleAccess::ReadWrite => true,
        RuleAccess::Read => read,
        RuleAccess::Write => !read,
        RuleAccess::Deny => false,
    };
    let publish = names
        .iter()
        .map(|name| {
            let touched = |f: &String| filter_matches(f, name);
            rules.iter().any(|(f, a)| grants(*a, false) && touched(f))
                && !rules
                    .iter()
                    .any(|(f, a)| *a == RuleAccess::Deny && touched(f))
        })
        .collect();
    let of_g: Vec<&String> = names.iter().filter(|n| filter_matches(g, n)).collect();
    let subscribe = rules
        .iter()
        .any(|(f, a)| grants(*a, true) && of_g.iter().all(|n| filter_matches(f, n)))
        && !rules
            .iter()
            .any(|(f, a)| *a == RuleAccess::Deny && of_g.iter().any(|n| filter_matches(f, n)));
    (publish, subscribe)
}

#[test]
fn acl_decisions_agree_with_brute_force() {
    let names = every_name();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime for CONNECT");
    let mut fuzz = Fuzz::from_env("acl_decisions_agree_with_brute_force");
    let mut rng = fuzz.rng();
    while fuzz.next_case() {
        let at = fuzz.at();
        let rules = rules(&mut rng);
        let Some(g) = filter(&mut rng, &at) else {
            continue;
        };
        let (acl, clients) = build(rules.clone(), &runtime);
        for who in &clients {
            let (publish, subscribe) = reference(&rules, who.client_id(), g.as_str(), &names);
            let case = format!("{at}: rules {rules:?}, client {}", who.client_id());
            assert_eq!(
                acl.allows(who, Access::Subscribe(&g)),
                subscribe,
                "{case}: subscribe {g}"
            );
            for (name, expected) in names.iter().zip(publish) {
                let parsed = TopicName::parse(name, MAX_LEVELS).expect("valid name");
                assert_eq!(
                    acl.allows(who, Access::Publish(parsed)),
                    expected,
                    "{case}: publish {name}"
                );
            }
        }
    }
}
