//! Topic names, topic filters, the subscription tree and the retained messages.
//!
//! Topics arrive from the codec as `&str` (UTF-8 without U+0000 already checked) and are
//! validated here by the rules of MQTT 5.0 §4.7, which 3.1.1 shares: [`TopicName`] for
//! PUBLISH, [`SubscriptionTarget`] (a [`TopicFilter`], or a `$share/{group}/{filter}` shared
//! subscription) for SUBSCRIBE, with a configurable level cap against greedy clients.
//!
//! Two indexes share one trie by topic level (`trie`): the [`Tree`] of subscriptions,
//! keyed by filter and walked with a published name, which [`Fanout`] turns into one
//! delivery per client; and the [`Retained`] messages, keyed by name and walked with a new
//! subscription's filter. Both walk only the branches that can match and free their nodes
//! as entries go. Nothing here does I/O or locks: the broker owns them.
//!
//! For access control, a filter also relates to one name or filter at a time
//! ([`TopicFilter::matches`], [`TopicFilter::covers`], [`TopicFilter::overlaps`]).

mod fanout;
pub(crate) mod relate;
mod retained;
mod shared;
mod syntax;
mod tree;
mod trie;

pub use fanout::{Combine, Delivery, Fanout};
pub use retained::Retained;
pub use shared::SubscriptionTarget;
pub use syntax::{
    DEFAULT_MAX_LEVELS, MAX_LEVELS_CEILING, MAX_TOPIC_BYTES, TopicError, TopicFilter, TopicKind,
    TopicName,
};
pub use tree::{Matched, SharedGroup, Tree};
