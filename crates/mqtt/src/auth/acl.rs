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
    /// The user name or client identifier holds `+`, `#` or `/` and would widen the rule.
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
        Ok(out)
    }
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

    /// Whether `who` may do `access`: with no rules at all, yes; otherwise only if a rule for
    /// its user or for everyone allows it and no such `deny` rule touches it (see the
    /// [module](super) documentation for what "allows" and "touches" mean for each kind).
    pub fn allows(&self, who: &Identity, access: Access<'_>) -> bool {
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
