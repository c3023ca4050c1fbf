//! What a SUBSCRIBE's topic filter subscribes to: a plain filter, or a shared subscription
//! `$share/{ShareName}/{filter}` (MQTT 5.0 §4.8.2), whose messages go to one member of the
//! group rather than to all. Clients of 3.1.1 may subscribe to shared groups too, as
//! Mosquitto and EMQX let them: the syntax is a topic filter either way.

use std::fmt;

use super::syntax::{MAX_TOPIC_BYTES, TopicError, TopicFilter, TopicKind};

/// The prefix that makes a topic filter a shared subscription.
const SHARE_PREFIX: &str = "$share/";

/// A parsed subscription topic: the key a session subscribes and unsubscribes by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubscriptionTarget {
    /// Every matching message goes to the subscriber.
    Plain(TopicFilter),
    /// Every matching message goes to one member of `group`; groups of the same name with
    /// different filters are different groups.
    Shared {
        /// The ShareName: not empty, without `/`, `+` or `#`.
        group: Box<str>,
        /// The filter after the share name, never empty.
        filter: TopicFilter,
    },
}

impl SubscriptionTarget {
    /// Parses a SUBSCRIBE or UNSUBSCRIBE topic filter. `max_levels` bounds the filter after
    /// a share name, whose error messages count levels from that filter's start.
    pub fn parse(topic: &str, max_levels: usize) -> Result<Self, TopicError> {
        let Some(rest) = topic.strip_prefix(SHARE_PREFIX) else {
            return TopicFilter::parse(topic, max_levels).map(Self::Plain);
        };
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong {
                kind: TopicKind::Filter,
                len: topic.len(),
            });
        }
        let (group, filter) = rest.split_once('/').unwrap_or((rest, ""));
        if group.is_empty() {
            return Err(TopicError::EmptyShareName {
                topic: topic.to_owned(),
            });
        }
        if let Some(wildcard) = group.chars().find(|c| matches!(c, '+' | '#')) {
            return Err(TopicError::WildcardInShareName {
                wildcard,
                topic: topic.to_owned(),
            });
        }
        if filter.is_empty() {
            return Err(TopicError::MissingSharedFilter {
                topic: topic.to_owned(),
            });
        }
        Ok(Self::Shared {
            group: group.into(),
            filter: TopicFilter::parse(filter, max_levels)?,
        })
    }

    /// The filter messages are matched against, shared or not.
    pub fn filter(&self) -> &TopicFilter {
        match self {
            Self::Plain(filter) | Self::Shared { filter, .. } => filter,
        }
    }
}

impl fmt::Display for SubscriptionTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(filter) => write!(f, "{filter}"),
            Self::Shared { group, filter } => write!(f, "{SHARE_PREFIX}{group}/{filter}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::DEFAULT_MAX_LEVELS;

    fn parse(topic: &str) -> Result<SubscriptionTarget, TopicError> {
        SubscriptionTarget::parse(topic, DEFAULT_MAX_LEVELS)
    }

    fn error(topic: &str) -> String {
        parse(topic).expect_err("invalid target").to_string()
    }

    fn filter(topic: &str) -> TopicFilter {
        TopicFilter::parse(topic, DEFAULT_MAX_LEVELS).expect("valid filter")
    }

    #[test]
    fn plain_filters_stay_plain() {
        for topic in [
            "a/+",
            "#",
            "$share",
            "$SHARE/g/a",
            "$sharex/g/a",
            "a/$share/g/b",
        ] {
            assert_eq!(
                parse(topic).expect("valid"),
                SubscriptionTarget::Plain(filter(topic))
            );
        }
    }

    #[test]
    fn shared_subscriptions_split_group_and_filter() {
        let target = parse("$share/workers/jobs/+/#").expect("valid");
        assert_eq!(
            target,
            SubscriptionTarget::Shared {
                group: "workers".into(),
                filter: filter("jobs/+/#"),
            }
        );
        assert_eq!(target.filter().as_str(), "jobs/+/#");
        assert_eq!(target.to_string(), "$share/workers/jobs/+/#");
        let dollar = parse("$share/g/$SYS/#").expect("valid");
        assert_eq!(dollar.filter().as_str(), "$SYS/#");
        let empty_level = parse("$share/g//").expect("valid");
        assert_eq!(empty_level.filter().as_str(), "/");
    }

    #[test]
    fn share_name_must_be_non_empty_without_wildcards() {
        assert_eq!(
            error("$share/"),
            "the shared subscription '$share/' has an empty share name; write $share/<name>/<filter>"
        );
        assert_eq!(
            error("$share//a"),
            "the shared subscription '$share//a' has an empty share name; write $share/<name>/<filter>"
        );
        assert_eq!(
            error("$share/g+/a"),
            "the share name of '$share/g+/a' must not contain '+'"
        );
        assert_eq!(
            error("$share/#/a"),
            "the share name of '$share/#/a' must not contain '#'"
        );
    }

    #[test]
    fn shared_filter_must_be_present_and_valid() {
        assert_eq!(
            error("$share/g"),
            "the shared subscription '$share/g' has no topic filter after its share name; write $share/<name>/<filter>"
        );
        assert_eq!(
            error("$share/g/"),
            "the shared subscription '$share/g/' has no topic filter after its share name; write $share/<name>/<filter>"
        );
        assert_eq!(
            error("$share/g/a/#/b"),
            "'#' must be the last level (level 2 of 'a/#/b' is '#')"
        );
        assert_eq!(
            SubscriptionTarget::parse("$share/g/a/b/c", 2).expect_err("too deep"),
            TopicError::TooDeep {
                kind: TopicKind::Filter,
                topic: "a/b/c".into(),
                levels: 3,
                max: 2
            }
        );
        let long = format!("$share/g/{}", "a".repeat(MAX_TOPIC_BYTES));
        assert_eq!(
            parse(&long).expect_err("too long"),
            TopicError::TooLong {
                kind: TopicKind::Filter,
                len: MAX_TOPIC_BYTES + 9
            }
        );
    }
}
