//! The limits of one listener.

use std::time::Duration;

/// How many connections a listener serves and how long it waits on each. Every field bounds
/// what one client can hold: a connection slot, a half-sent head, a silent connection, a
/// body that trickles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue (a permit is taken
    /// before accepting, so waiting clients cost no memory here).
    pub max_connections: usize,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A request head must be complete within this from its first byte — one deadline per
    /// head, not reset by each byte (slow-loris).
    pub head_timeout: Duration,
    /// A connection on which nothing moves for this long is closed (between requests, or a
    /// silent peer mid-body).
    pub idle_timeout: Duration,
    /// While a body streams, a read or write that makes no progress for this long ends the
    /// exchange.
    pub body_timeout: Duration,
    /// After [`Self::body_rate_grace`], a request body must have averaged at least this many
    /// bytes per second since it started; `0` turns the check off.
    pub min_body_rate: u64,
    /// How long a request body may start slowly before [`Self::min_body_rate`] applies.
    pub body_rate_grace: Duration,
    /// Largest request head read (431 over it, or the connection closed).
    pub max_head_bytes: usize,
}

impl Limits {
    /// Defaults for an API listener that faces the network (the relay's ingest): many
    /// clients, short heads, bodies that should flow.
    pub const API: Limits = Limits {
        max_connections: 10_000,
        handshake_timeout: Duration::from_secs(10),
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(30),
        min_body_rate: 240,
        body_rate_grace: Duration::from_secs(5),
        max_head_bytes: 64 * 1024,
    };

    /// Defaults for the admin listener: an operator's browser and scripts need few
    /// connections, but the cap is high enough that a few hundred slow clients — each cut
    /// after [`Self::head_timeout`] — do not lock the operator out.
    pub const ADMIN: Limits = Limits {
        max_connections: 1024,
        head_timeout: Duration::from_secs(5),
        ..Self::API
    };
}
