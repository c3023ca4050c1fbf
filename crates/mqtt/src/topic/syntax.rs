//! Topic names and topic filters as MQTT 5.0 §4.7 allows them (3.1.1 §4.7 says the same).
//!
//! A name is what a PUBLISH goes to; a filter is what a SUBSCRIBE asks for and may hold the
//! wildcards `+` (exactly one level) and `#` (this level and every one below, only as the
//! last level). Levels are separated by `/` and may be empty (`a//b`, `/a`, `a/`). Both are
//! 1 to 65,535 bytes; the codec has already checked the UTF-8 and the absence of U+0000.
//! On top of the specification the broker caps the number of levels, because a client can
//! send `a/a/a/…` 32,000 levels deep and every level costs a trie node and a step of
//! matching: the cap is a parameter here, [`DEFAULT_MAX_LEVELS`] by default and never
//! more than [`MAX_LEVELS_CEILING`].
//!
//! Names are borrowed ([`TopicName`] wraps the `&str` the codec decoded, so validating a
//! PUBLISH copies nothing), filters are owned ([`TopicFilter`] lives as long as the
//! subscription does).

use std::fmt;

/// The number of levels a topic may have unless configured otherwise. Mosquitto refuses
/// more than 200 `/` (its `TOPIC_HIERARCHY_LIMIT`, set after CVE-2019-11779), that is more
/// than 201 levels; 200 is one stricter and far deeper than any topic tree in use.
pub const DEFAULT_MAX_LEVELS: usize = 200;

/// The highest level cap a configuration may set; a higher one is treated as this. The
/// tries recurse once per level: this many frames fit a 2 MiB task stack with room to
/// spare even in a debug build, where 32,000 levels overflow it (and 65,535 bytes hold
/// up to 65,536 levels).
pub const MAX_LEVELS_CEILING: usize = 1_000;

/// The longest topic the protocol can carry: its length is a two-byte prefix.
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// Which of the two topic kinds an error is about, so its message says "topic name" or
/// "topic filter".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// The topic of a PUBLISH (or a will, or a retained message).
    Name,
    /// The topic filter of a SUBSCRIBE or UNSUBSCRIBE.
    Filter,
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Name => "topic name",
            Self::Filter => "topic filter",
        })
    }
}

/// Why a topic name, topic filter or shared subscription was refused. Levels are counted
/// from 1; the topic is quoted whole so the client's mistake can be found in a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero bytes: §4.7.3 requires at least one character.
    #[error("the {kind} is empty; a topic needs at least one character")]
    Empty {
        /// Name or filter.
        kind: TopicKind,
    },
    /// Longer than the two-byte length prefix can say.
    #[error("the {kind} is {len} bytes long; the limit is 65535")]
    TooLong {
        /// Name or filter.
        kind: TopicKind,
        /// Its length in bytes.
        len: usize,
    },
    /// More levels than the broker's configured maximum.
    #[error(
        "the {kind} '{topic}' has {levels} levels; this broker allows at most {max} (its topic level limit)"
    )]
    TooDeep {
        /// Name or filter.
        kind: TopicKind,
        /// The topic as sent.
        topic: String,
        /// How many levels it has.
        levels: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A wildcard in a topic name (§4.7.1: names never contain `+` or `#`).
    #[error("a topic name must not contain '{wildcard}' (level {level} of '{topic}')")]
    WildcardInName {
        /// `+` or `#`.
        wildcard: char,
        /// The level it is in, from 1.
        level: usize,
        /// The name as sent.
        topic: String,
    },
    /// A wildcard sharing its level with other characters (`a/b+/c`, `a/#b`).
    #[error("'{wildcard}' must occupy a whole level (level {level} of '{topic}')")]
    WildcardNotWholeLevel {
        /// `+` or `#`.
        wildcard: char,
        /// The level it is in, from 1.
        level: usize,
        /// The filter as sent.
        topic: String,
    },
    /// `#` before the last level (`a/#/b`).
    #[error("'#' must be the last level (level {level} of '{topic}' is '#')")]
    HashNotLast {
        /// The level `#` occupies, from 1.
        level: usize,
        /// The filter as sent.
        topic: String,
    },
    /// `$share/` followed directly by `/` or by nothing.
    #[error(
        "the shared subscription '{topic}' has an empty share name; write $share/<name>/<filter>"
    )]
    EmptyShareName {
        /// The filter as sent.
        topic: String,
    },
    /// A share name holding a wildcard (§4.8.2: it must not contain `/`, `+` or `#`).
    #[error("the share name of '{topic}' must not contain '{wildcard}'")]
    WildcardInShareName {
        /// `+` or `#`.
        wildcard: char,
        /// The filter as sent.
        topic: String,
    },
    /// `$share/name` or `$share/name/` with no filter after the share name.
    #[error(
        "the shared subscription '{topic}' has no topic filter after its share name; write $share/<name>/<filter>"
    )]
    MissingSharedFilter {
        /// The filter as sent.
        topic: String,
    },
}

/// A valid topic name, borrowed from the packet it came in. Holds no wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicName<'a>(&'a str);

impl<'a> TopicName<'a> {
    /// Checks `topic` as the name of a PUBLISH, with at most `max_levels` levels.
    pub fn parse(topic: &'a str, max_levels: usize) -> Result<Self, TopicError> {
        check_size(TopicKind::Name, topic, max_levels)?;
        for (i, level) in topic.split('/').enumerate() {
            if let Some(wildcard) = level.chars().find(|c| matches!(c, '+' | '#')) {
                return Err(TopicError::WildcardInName {
                    wildcard,
                    level: i + 1,
                    topic: topic.to_owned(),
                });
            }
        }
        Ok(Self(topic))
    }

    /// The name as sent.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Display for TopicName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A valid topic filter: wildcards only as whole levels, `#` only last.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(Box<str>);

impl TopicFilter {
    /// Checks `topic` as the filter of a SUBSCRIBE, with at most `max_levels` levels.
    pub fn parse(topic: &str, max_levels: usize) -> Result<Self, TopicError> {
        check_size(TopicKind::Filter, topic, max_levels)?;
        let mut levels = topic.split('/').enumerate().peekable();
        while let Some((i, level)) = levels.next() {
            let whole = level.len() == 1;
            if let Some(wildcard) = level.chars().find(|c| matches!(c, '+' | '#')) {
                if !whole {
                    return Err(TopicError::WildcardNotWholeLevel {
                        wildcard,
                        level: i + 1,
                        topic: topic.to_owned(),
                    });
                }
                if wildcard == '#' && levels.peek().is_some() {
                    return Err(TopicError::HashNotLast {
                        level: i + 1,
                        topic: topic.to_owned(),
                    });
                }
            }
        }
        Ok(Self(topic.into()))
    }

    /// The filter as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The checks names and filters share: length and depth.
fn check_size(kind: TopicKind, topic: &str, max_levels: usize) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty { kind });
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong {
            kind,
            len: topic.len(),
        });
    }
    let levels = topic.bytes().filter(|&b| b == b'/').count() + 1;
    let max_levels = max_levels.min(MAX_LEVELS_CEILING);
    if levels > max_levels {
        return Err(TopicError::TooDeep {
            kind,
            topic: topic.to_owned(),
            levels,
            max: max_levels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_error(topic: &str) -> String {
        TopicName::parse(topic, DEFAULT_MAX_LEVELS)
            .expect_err("the name is invalid")
            .to_string()
    }

    fn filter_error(topic: &str) -> String {
        TopicFilter::parse(topic, DEFAULT_MAX_LEVELS)
            .expect_err("the filter is invalid")
            .to_string()
    }

    #[test]
    fn names_accept_empty_levels_and_dollar() {
        for topic in [
            "a",
            "a/b",
            "/",
            "//",
            "a//b",
            "/a",
            "a/",
            "$SYS/x",
            "sport tennis/ü",
        ] {
            let name = TopicName::parse(topic, DEFAULT_MAX_LEVELS).expect("valid name");
            assert_eq!(name.as_str(), topic);
        }
    }

    #[test]
    fn names_refuse_wildcards_anywhere() {
        assert_eq!(
            name_error("a/b+/c"),
            "a topic name must not contain '+' (level 2 of 'a/b+/c')"
        );
        assert_eq!(
            name_error("+"),
            "a topic name must not contain '+' (level 1 of '+')"
        );
        assert_eq!(
            name_error("a/b/#"),
            "a topic name must not contain '#' (level 3 of 'a/b/#')"
        );
        assert_eq!(
            name_error("a/x#y"),
            "a topic name must not contain '#' (level 2 of 'a/x#y')"
        );
    }

    #[test]
    fn empty_topics_are_refused() {
        assert_eq!(
            name_error(""),
            "the topic name is empty; a topic needs at least one character"
        );
        assert_eq!(
            filter_error(""),
            "the topic filter is empty; a topic needs at least one character"
        );
    }

    #[test]
    fn length_limit_is_65535_bytes() {
        let longest = "a".repeat(MAX_TOPIC_BYTES);
        assert!(TopicName::parse(&longest, 1).is_ok());
        assert!(TopicFilter::parse(&longest, 1).is_ok());
        let over = "a".repeat(MAX_TOPIC_BYTES + 1);
        assert_eq!(
            name_error(&over),
            "the topic name is 65536 bytes long; the limit is 65535"
        );
        assert_eq!(
            TopicFilter::parse(&over, 1).expect_err("too long"),
            TopicError::TooLong {
                kind: TopicKind::Filter,
                len: 65_536
            }
        );
    }

    #[test]
    fn depth_limit_counts_empty_levels() {
        assert!(TopicName::parse("a/b/c", 3).is_ok());
        assert!(TopicFilter::parse("a/+/#", 3).is_ok());
        assert_eq!(
            TopicName::parse("a/b/c/", 3)
                .expect_err("four levels")
                .to_string(),
            "the topic name 'a/b/c/' has 4 levels; this broker allows at most 3 (its topic level limit)"
        );
        assert_eq!(
            TopicFilter::parse("///", 3).expect_err("four levels"),
            TopicError::TooDeep {
                kind: TopicKind::Filter,
                topic: "///".into(),
                levels: 4,
                max: 3
            }
        );
        assert_eq!(
            TopicFilter::parse(&"/".repeat(MAX_LEVELS_CEILING), usize::MAX)
                .expect_err("one level over the ceiling")
                .to_string(),
            format!(
                "the topic filter '{}' has 1001 levels; this broker allows at most 1000 (its topic level limit)",
                "/".repeat(MAX_LEVELS_CEILING)
            )
        );
        let greedy = "a/".repeat(DEFAULT_MAX_LEVELS);
        assert!(TopicName::parse(&greedy, DEFAULT_MAX_LEVELS).is_err());
        assert!(TopicName::parse(&greedy[..greedy.len() - 1], DEFAULT_MAX_LEVELS).is_ok());
    }

    #[test]
    fn filters_accept_whole_level_wildcards() {
        for topic in [
            "#", "+", "+/+", "a/+/b", "a/#", "/#", "+/", "//+", "a//#", "$SYS/#", "+/+/#",
        ] {
            let filter = TopicFilter::parse(topic, DEFAULT_MAX_LEVELS).expect("valid filter");
            assert_eq!(filter.as_str(), topic);
        }
    }

    #[test]
    fn plus_must_occupy_a_whole_level() {
        assert_eq!(
            filter_error("a/b+/c"),
            "'+' must occupy a whole level (level 2 of 'a/b+/c')"
        );
        assert_eq!(
            filter_error("++"),
            "'+' must occupy a whole level (level 1 of '++')"
        );
        assert_eq!(
            filter_error("a/+b"),
            "'+' must occupy a whole level (level 2 of 'a/+b')"
        );
    }

    #[test]
    fn hash_must_be_a_whole_last_level() {
        assert_eq!(
            filter_error("a/b#"),
            "'#' must occupy a whole level (level 2 of 'a/b#')"
        );
        assert_eq!(
            filter_error("#/a"),
            "'#' must be the last level (level 1 of '#/a' is '#')"
        );
        assert_eq!(
            filter_error("a/#/"),
            "'#' must be the last level (level 2 of 'a/#/' is '#')"
        );
        assert_eq!(
            filter_error("a/#+"),
            "'#' must occupy a whole level (level 2 of 'a/#+')"
        );
    }
}
