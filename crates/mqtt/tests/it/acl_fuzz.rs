//! The relations the ACL decides with, against brute force: for random filters `f` and `g`
//! from the topic fuzzer's alphabet, [`mqtt::topic::TopicFilter::covers`] must say whether every name
//! `g` matches is matched by `f`, [`mqtt::topic::TopicFilter::overlaps`] whether some name is matched by
//! both, and [`mqtt::topic::TopicFilter::matches`] agree with the specification's matcher
//! ([`filter_matches`]) on every name.
//!
//! The names tried are every name of up to one level more than the generated filters have,
//! over the filters' literal levels plus `z`, a level no filter names: a filter's wildcard
//! matches it where a literal cannot, and one level more than any filter has shows whether
//! a `#` is needed, so these finitely many names decide both relations as all names would.
//!
//! Runs as every fuzz target does ([`testkit::fuzz::Fuzz`]): for `LINTAS_FUZZ_SECONDS` from
//! `LINTAS_FUZZ_SEED`, printed with any failure.

use mqtt::topic::TopicName;
use testkit::fuzz::Fuzz;

use crate::topic_fuzz::{MAX_LEVELS, filter, filter_matches};

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
