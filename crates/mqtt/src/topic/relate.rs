//! How two topics relate, for access control: whether a filter matches a name, covers
//! another filter (matches every name it matches) or overlaps it (some name matches both).
//!
//! All three walk both topics level by level, with the rules of MQTT 5.0 §4.7: `+` matches
//! exactly one level, `#` the parent level and any number below it, and a filter whose
//! first level is a wildcard matches no name starting with `$` (§4.7.2). The subscription
//! tree ([`super::Tree`]) answers "who matches this name" for many filters at once; these
//! answer the question for one pair, which is what an ACL rule asks. They work on `&str`
//! inside the crate so the ACL can relate a rule it has just substituted without parsing it
//! again.

use super::{TopicFilter, TopicName};

impl TopicFilter {
    /// Whether a PUBLISH to `name` reaches a subscription to this filter.
    pub fn matches(&self, name: TopicName<'_>) -> bool {
        covers(self.as_str(), name.as_str())
    }

    /// Whether every name `other` matches is matched by this filter too: an ACL rule with
    /// this filter then grants all a subscription to `other` can receive. `a/#` covers
    /// `a/b/#` and `a`; `a/+` does not cover `a/#`, which also matches `a` and `a/b/c`.
    pub fn covers(&self, other: &TopicFilter) -> bool {
        covers(self.as_str(), other.as_str())
    }

    /// Whether some name is matched by both filters: a deny rule with this filter then
    /// closes part of what a subscription to `other` could receive.
    pub fn overlaps(&self, other: &TopicFilter) -> bool {
        overlaps(self.as_str(), other.as_str())
    }
}

/// Whether a first level matches no `$` name (it is a wildcard, §4.7.2) while the other
/// matches only `$` names.
fn dollar_apart(a: &str, b: &str) -> bool {
    let wildcard = |level: &str| level.starts_with(['+', '#']);
    (wildcard(a) && b.starts_with('$')) || (wildcard(b) && a.starts_with('$'))
}

/// [`TopicFilter::covers`] on valid filters (a valid name is a filter without wildcards,
/// which makes this [`TopicFilter::matches`] too).
pub(crate) fn covers(filter: &str, other: &str) -> bool {
    if dollar_apart(filter, other) {
        return false;
    }
    let mut outer = filter.split('/');
    let mut inner = other.split('/');
    let mut walked = Walked::default();
    loop {
        match (outer.next(), inner.next()) {
            (Some("#"), _) | (None, None) => return true,
            // `other`'s `#` also matches its parent name, which `+` does not, unless that
            // parent is no name: then `+/#` matches all that `#` matches.
            (Some("+"), Some("#")) => return !walked.parent_is_a_name() && outer.eq(["#"]),
            (Some("+"), Some(level)) => walked.step(level),
            (Some(level), Some(other_level)) if level == other_level => walked.step(level),
            _ => return false,
        }
    }
}

/// [`TopicFilter::overlaps`] on valid filters.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    if dollar_apart(a, b) {
        return false;
    }
    let mut a = a.split('/');
    let mut b = b.split('/');
    let mut walked = Walked::default();
    loop {
        match (a.next(), b.next()) {
            // One filter ends where the other's `#` matches its parent: both match that
            // name, if it is one.
            (Some("#"), None) | (None, Some("#")) => return walked.parent_is_a_name(),
            (Some("#"), Some(_)) | (Some(_), Some("#")) | (None, None) => return true,
            (Some("+"), Some(level)) | (Some(level), Some("+")) => walked.step(level),
            (Some(x), Some(y)) if x == y => walked.step(x),
            _ => return false,
        }
    }
}

/// The levels two filters have matched in step so far, as far as `#` needs to know: `#`
/// matches its parent level as a name (`a/#` matches `a`) unless there is none (`#`) or it
/// is the empty name (`/#`), which no PUBLISH can have.
#[derive(Default)]
struct Walked<'a> {
    /// Levels walked.
    count: usize,
    /// The first level, as narrow as either filter has it (`+` only if both had `+`).
    first: &'a str,
}

impl<'a> Walked<'a> {
    fn step(&mut self, level: &'a str) {
        if self.count == 0 {
            self.first = level;
        }
        self.count += 1;
    }

    /// Whether the levels walked can be a name on their own.
    fn parent_is_a_name(&self) -> bool {
        self.count > 1 || (self.count == 1 && !self.first.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(topic: &str) -> TopicFilter {
        TopicFilter::parse(topic, super::super::DEFAULT_MAX_LEVELS).expect("valid filter")
    }

    fn name(topic: &str) -> TopicName<'_> {
        TopicName::parse(topic, super::super::DEFAULT_MAX_LEVELS).expect("valid name")
    }

    #[test]
    fn matching_follows_the_specification_examples() {
        let sport = filter("sport/tennis/player1/#");
        assert!(sport.matches(name("sport/tennis/player1")));
        assert!(sport.matches(name("sport/tennis/player1/ranking")));
        assert!(sport.matches(name("sport/tennis/player1/score/wimbledon")));
        assert!(!sport.matches(name("sport/tennis/player2")));
        assert!(filter("sport/#").matches(name("sport")));
        assert!(filter("sport/+").matches(name("sport/")));
        assert!(!filter("sport/+").matches(name("sport")));
        assert!(filter("+/+").matches(name("/finance")));
        assert!(filter("/+").matches(name("/finance")));
        assert!(!filter("+").matches(name("/finance")));
        assert!(!filter("#").matches(name("$SYS/x")));
        assert!(!filter("+/monitor/Clients").matches(name("$SYS/monitor/Clients")));
        assert!(filter("$SYS/#").matches(name("$SYS/x")));
        assert!(filter("$SYS/monitor/+").matches(name("$SYS/monitor/Clients")));
    }

    #[test]
    fn covering_means_every_name_of_the_other_is_matched() {
        let cases = [
            ("a/#", "a/b/#", true),
            ("a/#", "a", true),
            ("a/#", "a/+", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("a/+/c", "a/+/#", false),
            ("#", "+/#", true),
            ("+/#", "#", true),
            ("a/+/#", "a/#", false),
            ("+", "#", false),
            ("/+/#", "/#", true),
            ("+/+/#", "+/#", false),
            ("#", "$x/a", false),
            ("+/a", "$x/a", false),
            ("$x/#", "$x/a", true),
            ("#", "+", true),
            ("a", "a/#", false),
            ("a/b/c", "a/b", false),
        ];
        for (outer, inner, expected) in cases {
            assert_eq!(
                filter(outer).covers(&filter(inner)),
                expected,
                "{outer} covers {inner}"
            );
        }
    }

    #[test]
    fn overlapping_means_some_name_matches_both() {
        let cases = [
            ("a/#", "a", true),
            ("a/secret", "a/#", true),
            ("a/+/c", "a/b/+", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("#", "$x/a", false),
            ("$x/#", "+/a", false),
            ("#", "+", true),
            ("+/+", "a", false),
            ("/#", "+", false),
            ("+/#", "+", true),
        ];
        for (a, b, expected) in cases {
            assert_eq!(filter(a).overlaps(&filter(b)), expected, "{a} overlaps {b}");
            assert_eq!(filter(b).overlaps(&filter(a)), expected, "{b} overlaps {a}");
        }
    }
}
