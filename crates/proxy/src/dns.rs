//! Backends written as host names (`address = "app.internal:8080"`), resolved through DNS
//! and resolved again as their records expire.
//!
//! Each such entry stands for one backend per address its name resolves to (A and AAAA):
//! `NAME` when there is one, `NAME#1`, `NAME#2`… in address order when there are several.
//! A configuration is only applied once every host name in it that is new resolves
//! (resolution happens before [`crate::Proxy::apply`] takes its lock, bounded by
//! `[proxy.dns] timeout`); names already known keep their last answer, so a reload never
//! waits on DNS for them. Afterwards one task per entry asks again after
//! `min(max(TTL, 1s), max_ttl)` — hence hickory rather than the system's `getaddrinfo`,
//! which hides the TTL — and turns a changed answer into the pool's own add and remove
//! ([`balance::Pool::add_backend`], [`balance::Pool::remove_backend`]): a backend whose
//! address stays keeps its object, so its health, counters and connections; one whose
//! address went drains (connections in flight finish); and weights or drains set through
//! the runtime API on the others are untouched. An address that stays keeps its name even
//! when others come or go (a new one takes the lowest free `NAME#k`), so stats, metrics and
//! API calls keep meaning the same backend.
//!
//! A failed resolution (no answer in time, an error code, no address) keeps the last
//! addresses, logs a warning, counts a failure shown in the stats and metrics, and is tried
//! again after 1 s, 2 s, 4 s… up to `max_ttl`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use balance::Pool;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::ProxyError;
use crate::config::{BackendConfig, DnsConfig, ProxyConfig};

/// The shortest time an answer is kept, whatever its TTL (a TTL of 0 would mean asking in a
/// loop).
const MIN_TTL: Duration = Duration::from_secs(1);

/// One host-name entry of one pool: a change of any part makes a new entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pool: String,
    /// The entry's `name`, the stem of its backends' names.
    name: String,
    host: String,
    port: u16,
}

impl Key {
    fn of(pool: &str, b: &BackendConfig) -> Option<Self> {
        match &b.address {
            configkit::Address::Host { host, port } => Some(Self {
                pool: pool.to_owned(),
                name: b.name.clone(),
                host: host.clone(),
                port: *port,
            }),
            configkit::Address::Ip(_) => None,
        }
    }
}

/// What a resolution found.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// Sorted, without duplicates, never empty.
    addrs: Vec<SocketAddr>,
    /// How long the answer is valid, from its records' smallest TTL.
    ttl: Duration,
}

/// The live state of one entry.
#[derive(Debug)]
struct Entry {
    /// Its settings (weight, ...), replaced on reload, for the backends it adds later.
    config: BackendConfig,
    /// The backends it stands for now, in address order.
    members: Vec<(String, SocketAddr)>,
    /// When to ask again.
    next_at: Instant,
    /// Failed resolutions since the proxy started (or the entry was written).
    failures: u64,
    /// Failed resolutions since the last success, for the backoff.
    failing_for: u32,
    /// Why the last resolution failed; `None` after a success.
    last_error: Option<String>,
}

/// Host-name entries of every pool, and the resolver that serves them.
#[derive(Debug, Default)]
pub(crate) struct Dns {
    /// Held briefly, never across an await.
    state: Mutex<State>,
    /// Serialises membership changes: a reload (from merging the answers to setting the
    /// pools) and a refresh (applying an answer) never interleave.
    changes: tokio::sync::Mutex<()>,
}

/// What [`Dns`] guards.
#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<Key, Entry>,
    /// The resolver of the current `[proxy.dns]`, built when a host name first needs it.
    resolver: Option<(DnsConfig, TokioResolver)>,
    /// Stops the refresh tasks; replaced on each apply.
    refreshers: Vec<CancellationToken>,
}

/// Answers for the host names a configuration adds, gathered before it is applied.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    resolver: Option<(DnsConfig, TokioResolver)>,
    fresh: BTreeMap<Key, Answer>,
}

/// One entry as `/api/stats` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DnsSnapshot {
    /// Pool.
    pub pool: String,
    /// The entry's name (its backends are this, or this`#k`).
    pub backend: String,
    /// `host:port` as written.
    pub address: String,
    /// The backends it stands for now.
    pub members: Vec<DnsMember>,
    /// Failed resolutions so far.
    pub failures: u64,
    /// Why the last resolution failed; absent when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds until it is asked again.
    pub next_in_s: f64,
}

/// One backend of a [`DnsSnapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct DnsMember {
    /// Backend name.
    pub name: String,
    /// Resolved address.
    pub address: SocketAddr,
}

impl Dns {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Excludes refreshes from changing pools until dropped; a reload holds it from
    /// [`Dns::merge`] until its pools are set.
    pub(crate) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// Resolves every host name of `cfg` not known yet, with the resolver of `cfg.dns`;
    /// fails on the first that does not resolve, naming it. Takes no lock while waiting.
    pub(crate) async fn prepare(&self, cfg: &ProxyConfig) -> Result<Prepared, ProxyError> {
        let wanted: Vec<(Key, usize)> = cfg
            .pools
            .iter()
            .flat_map(|(pool, p)| {
                p.backends
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, b)| Some((Key::of(pool, b)?, i)))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Prepared::default());
        }
        let (resolver, fresh_keys) = {
            let state = self.lock();
            let resolver = match &state.resolver {
                Some((c, r)) if *c == cfg.dns => r.clone(),
                _ => build(&cfg.dns).map_err(|message| ProxyError::Dns { message })?,
            };
            let fresh: Vec<_> = wanted
                .into_iter()
                .filter(|(k, _)| !state.entries.contains_key(k))
                .collect();
            (resolver, fresh)
        };
        let mut lookups = tokio::task::JoinSet::new();
        for (key, index) in fresh_keys {
            let (resolver, timeout) = (resolver.clone(), cfg.dns.timeout);
            lookups.spawn(async move {
                let answer = resolve(&resolver, &key.host, key.port, timeout).await;
                (key, index, answer)
            });
        }
        let mut fresh = BTreeMap::new();
        while let Some(done) = lookups.join_next().await {
            let Ok((key, index, answer)) = done else {
                continue;
            };
            match answer {
                Ok(a) => {
                    info!(pool = %key.pool, backend = %key.name, host = %key.host, addresses = ?a.addrs, ttl = ?a.ttl, "resolved");
                    fresh.insert(key, a);
                }
                Err(message) => {
                    return Err(ProxyError::Resolve {
                        pool: key.pool,
                        index,
                        message: format!(
                            "backend `{}`: cannot resolve `{}`: {message}; check the name and the name servers ([proxy.dns] servers, else /etc/resolv.conf)",
                            key.name, key.host
                        ),
                    });
                }
            }
        }
        Ok(Prepared {
            resolver: Some((cfg.dns.clone(), resolver)),
            fresh,
        })
    }

    /// Every host-name entry with its backends and last resolution, for `/api/stats`.
    pub(crate) fn snapshot(&self) -> Vec<DnsSnapshot> {
        let now = Instant::now();
        self.lock()
            .entries
            .iter()
            .map(|(k, e)| DnsSnapshot {
                pool: k.pool.clone(),
                backend: k.name.clone(),
                address: format!("{}:{}", k.host, k.port),
                members: e
                    .members
                    .iter()
                    .map(|(name, address)| DnsMember {
                        name: name.clone(),
                        address: *address,
                    })
                    .collect(),
                failures: e.failures,
                error: e.last_error.clone(),
                next_in_s: e.next_at.saturating_duration_since(now).as_secs_f64(),
            })
            .collect()
    }
}

impl Dns {
    /// Takes in `prepared` for `cfg`: entries no longer written are dropped, new ones get
    /// their first answer, kept ones their new settings.
    pub(crate) fn merge(&self, cfg: &ProxyConfig, prepared: Prepared) {
        let mut state = self.lock();
        let max_ttl = cfg.dns.max_ttl;
        let mut fresh = prepared.fresh;
        let mut entries = BTreeMap::new();
        for (pool, p) in &cfg.pools {
            for b in &p.backends {
                let Some(key) = Key::of(pool, b) else {
                    continue;
                };
                let entry = match (state.entries.remove(&key), fresh.remove(&key)) {
                    (Some(mut e), _) => {
                        e.config = b.clone();
                        e
                    }
                    (None, Some(a)) => Entry {
                        config: b.clone(),
                        members: assign(&[], &a.addrs, &key.name),
                        next_at: Instant::now() + a.ttl.clamp(MIN_TTL, max_ttl),
                        failures: 0,
                        failing_for: 0,
                        last_error: None,
                    },
                    // `prepare` resolved every entry it did not know.
                    (None, None) => continue,
                };
                entries.insert(key, entry);
            }
        }
        state.entries = entries;
        if prepared.resolver.is_some() {
            state.resolver = prepared.resolver;
        }
    }

    /// The backends (name, address) that entry `index` of pool `pool` stands for.
    pub(crate) fn members(&self, pool: &str, b: &BackendConfig) -> Vec<(String, SocketAddr)> {
        Key::of(pool, b)
            .and_then(|k| self.lock().entries.get(&k).map(|e| e.members.clone()))
            .unwrap_or_default()
    }

    /// Stops the refresh tasks and starts one per entry, on `pools` as just applied.
    pub(crate) fn restart_refreshers(
        self: &Arc<Self>,
        pools: &BTreeMap<String, Arc<Pool>>,
        max_ttl: Duration,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let state = &mut *self.lock();
        for t in state.refreshers.drain(..) {
            t.cancel();
        }
        let Some((cfg, resolver)) = &state.resolver else {
            return;
        };
        for key in state.entries.keys() {
            let Some(pool) = pools.get(&key.pool) else {
                continue;
            };
            let stop = shutdown.child_token();
            state.refreshers.push(stop.clone());
            tracker.spawn(refresh(Refresher {
                dns: self.clone(),
                key: key.clone(),
                pool: pool.clone(),
                resolver: resolver.clone(),
                timeout: cfg.timeout,
                max_ttl,
                stop,
            }));
        }
    }
}

/// Everything one refresh task needs.
struct Refresher {
    dns: Arc<Dns>,
    key: Key,
    pool: Arc<Pool>,
    resolver: TokioResolver,
    timeout: Duration,
    max_ttl: Duration,
    stop: CancellationToken,
}

/// Asks for `r.key` each time its answer expires, until stopped.
async fn refresh(r: Refresher) {
    let key = &r.key;
    loop {
        let Some(next_at) = r.dns.lock().entries.get(key).map(|e| e.next_at) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next_at) => {}
            _ = r.stop.cancelled() => return,
        }
        let answer = tokio::select! {
            a = resolve(&r.resolver, &key.host, key.port, r.timeout) => a,
            _ = r.stop.cancelled() => return,
        };
        let _changes = r.dns.hold().await;
        // A reload that cancelled this task owns the entry now.
        if r.stop.is_cancelled() {
            return;
        }
        let mut state = r.dns.lock();
        let Some(e) = state.entries.get_mut(key) else {
            return;
        };
        match answer {
            Ok(a) => {
                e.next_at = Instant::now() + a.ttl.clamp(MIN_TTL, r.max_ttl);
                e.failing_for = 0;
                e.last_error = None;
                let old: Vec<SocketAddr> = e.members.iter().map(|(_, a)| *a).collect();
                if old != a.addrs {
                    let members = assign(&e.members, &a.addrs, &key.name);
                    change_members(&r.pool, e, members);
                    info!(pool = %key.pool, backend = %key.name, host = %key.host, addresses = ?a.addrs, "the name's addresses changed");
                }
            }
            Err(error) => {
                e.failures += 1;
                e.failing_for = e.failing_for.saturating_add(1);
                let backoff = MIN_TTL.saturating_mul(1 << (e.failing_for - 1).min(16));
                e.next_at = Instant::now() + backoff.min(r.max_ttl);
                warn!(pool = %key.pool, backend = %key.name, host = %key.host, %error, kept = ?e.members.iter().map(|(_, a)| a).collect::<Vec<_>>(), "cannot resolve a backend's name; keeping its last addresses");
                e.last_error = Some(error);
            }
        }
    }
}

/// Moves `pool` from `e.members` to `members`: gone names are removed first (their
/// connections finish), then new ones added with the entry's settings.
fn change_members(pool: &Pool, e: &mut Entry, members: Vec<(String, SocketAddr)>) {
    for (name, addr) in &e.members {
        if !members.contains(&(name.clone(), *addr)) {
            // Already gone if the runtime API removed it.
            let _ = pool.remove_backend(name);
        }
    }
    for (name, addr) in &members {
        if !e.members.contains(&(name.clone(), *addr))
            && let Err(err) = pool.add_backend(&e.config.spec(name.clone(), *addr))
        {
            warn!(pool = pool.name(), backend = %name, %addr, error = %err, "cannot add a resolved address");
        }
    }
    e.members = members;
}

/// Names the backends for `addrs` (sorted): a first answer gives `stem` alone for one
/// address and `stem#1`… in order for several; later, an address already present keeps its
/// name and a new one takes the lowest free `stem#k` (`stem` counting as `#1`).
fn assign(
    old: &[(String, SocketAddr)],
    addrs: &[SocketAddr],
    stem: &str,
) -> Vec<(String, SocketAddr)> {
    let kept: Vec<&(String, SocketAddr)> = old.iter().filter(|(_, a)| addrs.contains(a)).collect();
    if kept.is_empty() {
        return match addrs {
            [one] => vec![(stem.to_owned(), *one)],
            _ => addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("{stem}#{}", i + 1), *a))
                .collect(),
        };
    }
    let slot = |name: &str| -> Option<usize> {
        if name == stem {
            return Some(1);
        }
        name.strip_prefix(stem)?.strip_prefix('#')?.parse().ok()
    };
    let mut taken: Vec<usize> = kept.iter().filter_map(|(n, _)| slot(n)).collect();
    addrs
        .iter()
        .map(|a| match kept.iter().find(|(_, k)| k == a) {
            Some((name, _)) => (name.clone(), *a),
            None => {
                let k = (1..).find(|k| !taken.contains(k)).unwrap_or(1);
                taken.push(k);
                (format!("{stem}#{k}"), *a)
            }
        })
        .collect()
}

/// A resolver for `cfg`: its servers (UDP, then TCP for truncated answers), or the system's.
fn build(cfg: &DnsConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if cfg.servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| {
            format!("cannot use /etc/resolv.conf ({e}); list name servers in [proxy.dns] servers")
        })?
    } else {
        let servers = cfg
            .servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let opts = builder.options_mut();
    opts.timeout = cfg.timeout;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.use_hosts_file = ResolveHosts::Always;
    // The refresh tasks are the cache: a cached answer would outlive `max_ttl`.
    opts.cache_size = 0;
    builder
        .build()
        .map_err(|e| format!("cannot build a DNS resolver: {e}"))
}

/// All addresses of `host` (A and AAAA) with `port`, within `timeout`.
async fn resolve(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Answer, String> {
    let lookup = tokio::time::timeout(timeout, resolver.lookup_ip(host))
        .await
        .map_err(|_| format!("no answer within {}", configkit::format_duration(timeout)))?
        .map_err(describe)?;
    let ttl = lookup
        .valid_until()
        .saturating_duration_since(std::time::Instant::now());
    let mut addrs: Vec<SocketAddr> = lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.is_empty() {
        return Err("the name has no A or AAAA record".into());
    }
    Ok(Answer { addrs, ttl })
}

/// A resolver error in a few words.
fn describe(e: NetError) -> String {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(n)) if n.response_code == ResponseCode::NXDomain => {
            "no such name (NXDOMAIN)".into()
        }
        NetError::Dns(DnsError::NoRecordsFound(_)) => "the name has no A or AAAA record".into(),
        NetError::Dns(DnsError::ResponseCode(code)) => format!("the name server answered {code}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn names(members: &[(String, SocketAddr)]) -> Vec<String> {
        members.iter().map(|(n, a)| format!("{n}={a}")).collect()
    }

    #[test]
    fn first_answer_names_one_address_by_the_entry_and_several_in_address_order() {
        assert_eq!(
            names(&assign(&[], &addrs(&["10.0.0.1:80"]), "app")),
            ["app=10.0.0.1:80"]
        );
        assert_eq!(
            names(&assign(&[], &addrs(&["10.0.0.1:80", "10.0.0.2:80"]), "app")),
            ["app#1=10.0.0.1:80", "app#2=10.0.0.2:80"]
        );
    }

    #[test]
    fn an_address_that_stays_keeps_its_name_and_new_ones_take_free_slots() {
        let one = assign(&[], &addrs(&["10.0.0.2:80"]), "app");
        let two = assign(&one, &addrs(&["10.0.0.1:80", "10.0.0.2:80"]), "app");
        assert_eq!(names(&two), ["app#2=10.0.0.1:80", "app=10.0.0.2:80"]);
        let three = assign(&two, &addrs(&["10.0.0.1:80", "10.0.0.3:80"]), "app");
        assert_eq!(names(&three), ["app#2=10.0.0.1:80", "app#1=10.0.0.3:80"]);
        // Nothing kept: named afresh.
        let other = assign(&three, &addrs(&["10.0.0.9:80"]), "app");
        assert_eq!(names(&other), ["app=10.0.0.9:80"]);
    }
}
