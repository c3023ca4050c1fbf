//! The access rules, compiled: rules indexed by user, each filter kept as written with its
//! placeholders, substituted for the client at each check.
//!
//! A rule without placeholders is checked as it is, allocating nothing; a rule with `%u` or
//! `%c` is substituted into one short string per check, as Mosquitto does, rather than kept
//! per client, so that a reloaded ACL applies to every connected client at its next packet.
//! A check reads only the client's user's rules and the rules for everyone.

use std::collections::HashMap;

use super::config::RuleAccess;
use super::login::Identity;
use crate::topic::{MAX_LEVELS_CEILING, TopicFilter, TopicName, relate};

/// What a client asks to do, with the topic it names.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// Publish to this name (a PUBLISH, or the will a CONNECT carries).
    Publish(TopicName<'a>),
    /// Subscribe with this filter: a plain subscription's, or a shared one's after
    /// `$share/{group}/` ([`crate::topic::SubscriptionTarget::filter`]).
    Subscribe(&'a TopicFilter),
}

/// The compiled `acl` rules of `[mqtt]`.
#[derive(Debug, Default)]
pub struct Acl {
    /// Rules for one user, by user name.
    by_user: HashMap<Box<str>, Vec<Rule>>,
    /// Rules for every client.
    everyone: Vec<Rule>,
}

/// One rule's filter and what it grants.
#[derive(Debug)]
struct Rule {
    /// The filter, placeholders not yet substituted.
    topic: Template,
    /// What it grants, or deny.
    access: RuleAccess,
}

/// A rule's filter as written: valid as a topic filter, with `%u` and `%c` standing for text
/// inside a level.
#[derive(Debug)]
pub(super) struct Template {
    /// The filter as written.
    text: Box<str>,
    /// Whether it holds `%u` or `%c`.
    placeholders: bool,
}

/// Why a template names nothing for a client.
enum Unsubstitutable {
    /// It holds `%u` and the client is anonymous, or the substituted filter is empty: it
    /// names no topic.
    Nothing,
    /// The user name or client identifier holds `+`, `#` or `/`, or starts a filter that did
    /// not start with `$` with one: it would widen the rule.
    Widening,
}

impl Template {
    /// Checks a rule's filter. A user name or client identifier is substituted only if it
    /// holds no `+`, `#` or `/`, so the filter as written is valid exactly when every
    /// substitution is (bar the empty and the over-long, which name nothing).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("$share/") {
            let inner = rest.split_once('/').map_or("", |(_, filter)| filter);
            return Err(format!(
                "a rule for a shared subscription never applies: lintas checks the filter after \
                 `$share/{{group}}/`, so write `{inner}`"
            ));
        }
        TopicFilter::parse(text, MAX_LEVELS_CEILING).map_err(|e| e.to_string())?;
        Ok(Self {
            text: text.into(),
            placeholders: text.contains("%u") || text.contains("%c"),
        })
    }

    /// The filter for `who`.
    fn substitute(&self, who: &Identity) -> Result<String, Unsubstitutable> {
        let mut out = String::with_capacity(self.text.len() + 32);
        let mut rest = &*self.text;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('u') {
                out.push_str(safe(who.username())?);
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('c') {
                out.push_str(safe(Some(who.client_id()))?);
                rest = tail;
            } else {
                out.push('%');
                rest = after;
            }
        }
        out.push_str(rest);
        if out.is_empty() {
            return Err(Unsubstitutable::Nothing);
        }
        if out.starts_with('$') && !self.text.starts_with('$') {
            return Err(Unsubstitutable::Widening);
        }
        Ok(out)
    }
}

/// Whether `name` is one of the broker's own statistics topics (`$SYS` and below), which
/// only the broker publishes: a client's message there would fool whoever monitors it.
/// Mosquitto refuses them the same way, in its ACL check, whatever the rules say.
fn is_sys(name: &str) -> bool {
    name.strip_prefix("$SYS")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A user name or client identifier that can stand in a rule.
fn safe(value: Option<&str>) -> Result<&str, Unsubstitutable> {
    match value {
        None => Err(Unsubstitutable::Nothing),
        Some(v) if v.contains(['+', '#', '/']) => Err(Unsubstitutable::Widening),
        Some(v) => Ok(v),
    }
}

impl Acl {
    /// Compiles `(user, filter, access)` rules whose filters [`Template::parse`] accepted.
    pub(super) fn new(rules: Vec<(Option<&str>, Template, RuleAccess)>) -> Self {
        let mut acl = Self::default();
        for (user, topic, access) in rules {
            let rule = Rule { topic, access };
            match user {
                Some(user) => acl.by_user.entry(user.into()).or_default().push(rule),
                None => acl.everyone.push(rule),
            }
        }
        acl
    }

    /// Whether `who` may do `access`: never a publish to `$SYS`; with no rules at all, yes;
    /// otherwise only if a rule for its user or for everyone allows it and no such `deny`
    /// rule touches it (see the [module](super) documentation for what "allows" and
    /// "touches" mean for each kind).
    pub fn allows(&self, who: &Identity, access: Access<'_>) -> bool {
        if let Access::Publish(name) = access
            && is_sys(name.as_str())
        {
            return false;
        }
        if self.everyone.is_empty() && self.by_user.is_empty() {
            return true;
        }
        let own = who
            .username()
            .and_then(|user| self.by_user.get(user))
            .map_or(&[][..], Vec::as_slice);
        let mut allowed = false;
        for rule in own.iter().chain(&self.everyone) {
            let substituted;
            let topic = if rule.topic.placeholders {
                match rule.topic.substitute(who) {
                    Ok(text) => {
                        substituted = text;
                        substituted.as_str()
                    }
                    Err(Unsubstitutable::Widening) if rule.access == RuleAccess::Deny => {
                        return false;
                    }
                    Err(_) => continue,
                }
            } else {
                &rule.topic.text
            };
            match (rule.access, access) {
                (RuleAccess::Deny, Access::Publish(name)) => {
                    if relate::covers(topic, name.as_str()) {
                        return false;
                    }
                }
                (RuleAccess::Deny, Access::Subscribe(filter)) => {
                    if relate::overlaps(topic, filter.as_str()) {
                        return false;
                    }
                }
                (RuleAccess::Write | RuleAccess::ReadWrite, Access::Publish(name)) => {
                    allowed = allowed || relate::covers(topic, name.as_str());
                }
                (RuleAccess::Read | RuleAccess::ReadWrite, Access::Subscribe(filter)) => {
                    allowed = allowed || relate::covers(topic, filter.as_str());
                }
                (RuleAccess::Read, Access::Publish(_))
                | (RuleAccess::Write, Access::Subscribe(_)) => {}
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::DEFAULT_MAX_LEVELS;

    /// An ACL from `(user, topic, access)` rules.
    fn acl(rules: &[(Option<&str>, &str, RuleAccess)]) -> Acl {
        Acl::new(
            rules
                .iter()
                .map(|&(user, topic, access)| {
                    (user, Template::parse(topic).expect("a valid rule"), access)
                })
                .collect(),
        )
    }

    fn alice() -> Identity {
        Identity::new(Some("alice"), "c1")
    }

    fn publish(acl: &Acl, who: &Identity, topic: &str) -> bool {
        let name = TopicName::parse(topic, DEFAULT_MAX_LEVELS).expect("a valid name");
        acl.allows(who, Access::Publish(name))
    }

    fn subscribe(acl: &Acl, who: &Identity, topic: &str) -> bool {
        let filter = TopicFilter::parse(topic, DEFAULT_MAX_LEVELS).expect("a valid filter");
        acl.allows(who, Access::Subscribe(&filter))
    }

    use RuleAccess::{Deny, Read, ReadWrite, Write};

    #[test]
    fn without_rules_every_client_may_do_anything() {
        let acl = acl(&[]);
        for who in [alice(), Identity::new(None, "anon")] {
            assert!(publish(&acl, &who, "a/b"));
            assert!(subscribe(&acl, &who, "#"));
            assert!(subscribe(&acl, &who, "$SYS/#"));
        }
    }

    #[test]
    fn once_a_rule_exists_what_is_not_allowed_is_denied() {
        let acl = acl(&[(Some("bob"), "#", ReadWrite)]);
        assert!(!publish(&acl, &alice(), "a"));
        assert!(!subscribe(&acl, &alice(), "a"));
        assert!(!publish(&acl, &Identity::new(None, "anon"), "a"));
        assert!(publish(&acl, &Identity::new(Some("bob"), "c"), "a"));
    }

    #[test]
    fn a_client_gets_its_users_rules_and_everyones() {
        let acl = acl(&[
            (Some("alice"), "alice/#", ReadWrite),
            (Some("bob"), "bob/#", ReadWrite),
            (None, "public/#", ReadWrite),
        ]);
        let anon = Identity::new(None, "anon");
        assert!(publish(&acl, &alice(), "alice/x"));
        assert!(publish(&acl, &alice(), "public/x"));
        assert!(!publish(&acl, &alice(), "bob/x"));
        assert!(publish(&acl, &anon, "public/x"));
        assert!(!publish(&acl, &anon, "alice/x"));
    }

    #[test]
    fn read_is_subscribing_and_write_is_publishing() {
        let acl = acl(&[
            (None, "r/#", Read),
            (None, "w/#", Write),
            (None, "rw/#", ReadWrite),
        ]);
        let who = alice();
        assert_eq!(
            [
                subscribe(&acl, &who, "r/x"),
                publish(&acl, &who, "r/x"),
                subscribe(&acl, &who, "w/x"),
                publish(&acl, &who, "w/x"),
                subscribe(&acl, &who, "rw/x"),
                publish(&acl, &who, "rw/x"),
            ],
            [true, false, false, true, true, true]
        );
    }

    #[test]
    fn a_subscription_must_be_covered_by_one_rule() {
        let acl = acl(&[(None, "a/#", Read), (None, "b/+", Read)]);
        let who = alice();
        for (filter, allowed) in [
            ("a/#", true),
            ("a/b/#", true),
            ("a", true),
            ("a/+/c", true),
            ("b/x", true),
            ("b/+", true),
            ("b/#", false),
            ("b/x/y", false),
            ("b", false),
            ("#", false),
            ("+/x", false),
        ] {
            assert_eq!(subscribe(&acl, &who, filter), allowed, "{filter}");
        }
    }

    #[test]
    fn deny_wins_wherever_it_touches() {
        for rules in [
            [(None, "a/#", ReadWrite), (None, "a/secret", Deny)],
            [(None, "a/secret", Deny), (None, "a/#", ReadWrite)],
        ] {
            let acl = acl(&rules);
            let who = alice();
            assert!(!publish(&acl, &who, "a/secret"));
            assert!(publish(&acl, &who, "a/public"));
            assert!(publish(&acl, &who, "a/secret/below"));
            assert!(!subscribe(&acl, &who, "a/secret"));
            assert!(!subscribe(&acl, &who, "a/#"), "would receive a/secret");
            assert!(!subscribe(&acl, &who, "a/+"), "would receive a/secret");
            assert!(subscribe(&acl, &who, "a/public/#"));
            assert!(
                !subscribe(&acl, &who, "a/secret/#"),
                "a/secret/# matches a/secret too"
            );
        }
        let user_denied = acl(&[(None, "#", ReadWrite), (Some("alice"), "x/#", Deny)]);
        assert!(!publish(&user_denied, &alice(), "x/y"));
        assert!(publish(
            &user_denied,
            &Identity::new(Some("bob"), "c"),
            "x/y"
        ));
    }

    #[test]
    fn wildcards_at_the_first_level_do_not_reach_dollar_topics() {
        let acl = acl(&[(None, "#", ReadWrite), (None, "$SYS/broker/#", Read)]);
        let who = alice();
        assert!(!publish(&acl, &who, "$SYS/x"));
        assert!(!subscribe(&acl, &who, "$SYS/#"));
        assert!(subscribe(&acl, &who, "$SYS/broker/load"));
        let denied = self::acl(&[(None, "$SYS/#", ReadWrite), (None, "+/x", Deny)]);
        assert!(
            subscribe(&denied, &who, "$SYS/x"),
            "the deny cannot touch $SYS"
        );
    }

    #[test]
    fn no_rule_lets_a_client_publish_to_sys() {
        let who = alice();
        for acl in [acl(&[]), acl(&[(None, "$SYS/#", ReadWrite)])] {
            assert!(!publish(&acl, &who, "$SYS"));
            assert!(!publish(&acl, &who, "$SYS/broker/clients/connected"));
            assert!(subscribe(&acl, &who, "$SYS/#"), "reading them is the point");
        }
        let open = acl(&[]);
        assert!(publish(&open, &who, "$SYSTEM/x"), "only the $SYS level");
        assert!(publish(&open, &who, "$other/x"));
    }

    #[test]
    fn placeholders_stand_for_the_clients_user_name_and_identifier() {
        let acl = acl(&[
            (None, "devices/%u/%c/#", Write),
            (None, "in/x%uy/+", Read),
            (None, "100%/%d", Write),
        ]);
        let who = alice();
        assert!(publish(&acl, &who, "devices/alice/c1/temp"));
        assert!(!publish(&acl, &who, "devices/alice/c2/temp"));
        assert!(!publish(&acl, &who, "devices/bob/c1/temp"));
        assert!(subscribe(&acl, &who, "in/xalicey/+"));
        assert!(!subscribe(&acl, &who, "in/xbobby/+"));
        assert!(publish(&acl, &who, "100%/%d"), "other % stay as written");
        let anon = Identity::new(None, "c1");
        assert!(
            !publish(&acl, &anon, "devices//c1/temp"),
            "%u names no topic for anonymous"
        );
    }

    #[test]
    fn a_name_that_would_widen_a_rule_is_not_substituted() {
        let acl = acl(&[(None, "clients/%c/#", ReadWrite), (None, "users/%u", Write)]);
        let slash = Identity::new(Some("alice"), "x/y");
        assert!(!publish(&acl, &slash, "clients/x/y/z"));
        assert!(publish(&acl, &slash, "users/alice"));
        let plus = Identity::new(Some("alice"), "+");
        assert!(
            !subscribe(&acl, &plus, "clients/+/#"),
            "+ would open every client's topics"
        );
        assert!(publish(&acl, &plus, "users/alice"));
        let sys = self::acl(&[(None, "%c/#", ReadWrite)]);
        let dollar = Identity::new(None, "$SYS");
        assert!(
            !subscribe(&sys, &dollar, "$SYS/#"),
            "a client id must not open $ topics"
        );
        assert!(subscribe(&sys, &Identity::new(None, "c1"), "c1/#"));
        // A deny rule that cannot be substituted denies everything: it cannot tell what it
        // was meant to close.
        let guarded = self::acl(&[(None, "#", ReadWrite), (None, "private/%c/#", Deny)]);
        assert!(publish(&guarded, &alice(), "private/other/x"));
        assert!(!publish(&guarded, &alice(), "private/c1/x"));
        assert!(!publish(
            &guarded,
            &Identity::new(Some("alice"), "a#"),
            "public"
        ));
        assert!(!subscribe(
            &guarded,
            &Identity::new(Some("alice"), "a/b"),
            "public/#"
        ));
    }

    #[test]
    fn an_empty_substitution_names_nothing() {
        let acl = acl(&[
            (None, "#", ReadWrite),
            (None, "%u", Deny),
            (None, "%c", Read),
        ]);
        let empty = Identity::new(Some(""), "");
        assert!(publish(&acl, &empty, "a"), "the deny names no topic");
        assert!(!subscribe(&acl, &Identity::new(Some("x"), "a"), "x"));
        assert!(subscribe(&acl, &Identity::new(Some("x"), "a"), "a"));
    }
}
