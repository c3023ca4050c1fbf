//! Topic names, topic filters and the subscription tree.
