//! The `[proxy]` section: pools and listeners, as written in the file and as validated.
//!
//! Parsing (serde, `deny_unknown_fields`) catches shapes and types; [`ProxyConfig::validate`]
//! then checks what serde cannot — references between pools and listeners, ranges, two
//! listeners on one port — without any I/O, and reports every problem with its key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use balance::{BackendSpec, HashKey, HealthPolicy, StrategyKind};
use configkit::{Issues, KeyPath, StatusRange};
use serde::Deserialize;

pub use net::TlsConfig;

/// The whole `[proxy]` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Named pools of backends.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// Listening sockets, each in front of one pool.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// How backends written as host names are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
}

/// `[proxy.dns]`: how backends written as `host:port` are resolved and re-resolved, like
/// HAProxy's `resolvers` section and nginx's `resolver`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers, `"ip"` (port 53) or `"ip:port"`; empty means those of
    /// `/etc/resolv.conf` (whose `/etc/hosts` is read first either way).
    #[serde(default, deserialize_with = "name_servers")]
    pub servers: Vec<SocketAddr>,
    /// Longest an answer is believed, whatever its TTL (HAProxy's `hold valid`, nginx's
    /// `valid=`): a name is asked again after `min(max(TTL, 1s), max_ttl)`.
    #[serde(default = "default_max_ttl", with = "configkit::duration")]
    pub max_ttl: Duration,
    /// A query unanswered for this long is sent again once, then the resolution fails.
    #[serde(default = "default_dns_timeout", with = "configkit::duration")]
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            max_ttl: default_max_ttl(),
            timeout: default_dns_timeout(),
        }
    }
}

fn default_max_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_dns_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Reads `servers`: each `ip` or `ip:port`.
fn name_servers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not a name server; write \"10.0.0.2\" or \"10.0.0.2:53\""
                    ))
                })
        })
        .collect()
}

/// `[proxy.pools.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Balancing algorithm.
    #[serde(default = "default_strategy")]
    pub strategy: StrategyKind,
    /// For `consistent_hash`: `"client_ip"`, `"header:NAME"` or `"cookie:NAME"`, parsed as
    /// the file is read.
    #[serde(default, deserialize_with = "hash_key_opt")]
    pub hash_key: Option<HashKey>,
    /// The backends.
    pub backends: Vec<BackendConfig>,
    /// Active health checks; none means backends are judged by traffic alone.
    pub health: Option<HealthCheckConfig>,
    /// Passive ejection on failures of real traffic.
    #[serde(default)]
    pub passive: PassiveConfig,
    /// Requests that may wait while every eligible backend is at its `max_connections`;
    /// one more gets 503 at once.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// How long a request may wait for a backend slot (HAProxy's `timeout queue`); 503
    /// after it.
    #[serde(default = "default_queue_timeout", with = "configkit::duration")]
    pub queue_timeout: Duration,
    /// A backend coming back up (or enabled again) takes a share of new traffic growing
    /// with the time since, all of it after this long (HAProxy's `slowstart`, nginx's
    /// `slow_start`); zero (the default) gives it all at once.
    #[serde(default, with = "configkit::duration")]
    pub slow_start: Duration,
}

fn default_queue_size() -> usize {
    balance::QueuePolicy::default().size
}
fn default_queue_timeout() -> Duration {
    balance::QueuePolicy::default().timeout
}

fn default_strategy() -> StrategyKind {
    StrategyKind::RoundRobin
}

/// One entry of `backends = [...]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique within the pool.
    pub name: String,
    /// `ip:port`, or `host:port`: resolved to all its addresses (A and AAAA), each a
    /// backend of its own, and resolved again as its records expire (see `dns`).
    pub address: configkit::Address,
    /// Relative share, 0..=256.
    #[serde(default = "one")]
    pub weight: u32,
    /// Takes traffic only while no other backend of the pool can (HAProxy's `backup`,
    /// nginx's `backup`).
    #[serde(default)]
    pub backup: bool,
    /// Requests (HTTP) or connections (TCP) it takes at once, HAProxy's `maxconn`; more
    /// wait in the pool's queue. 0 (the default) is no limit.
    #[serde(default)]
    pub max_connections: u32,
}

fn one() -> u32 {
    1
}

impl BackendConfig {
    /// The backend this entry makes at `addr` (one per address of a host name).
    pub fn spec(&self, name: String, addr: SocketAddr) -> BackendSpec {
        BackendSpec {
            name,
            addr,
            weight: self.weight,
            max_connections: self.max_connections,
            backup: self.backup,
        }
    }
}

/// What an active check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Passes when a TCP connection opens.
    Tcp,
    /// Passes when `method path` answers a status in `expect_status` (and a body holding
    /// `expect_body`, when set).
    Http,
}

/// `health = { ... }` of a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `tcp` or `http`.
    pub kind: CheckKind,
    /// Path of the HTTP check.
    #[serde(default = "default_path")]
    pub path: String,
    /// Method of the HTTP check (HAProxy's `option httpchk HEAD /`).
    #[serde(default = "default_check_method")]
    pub method: String,
    /// `Host` header of the HTTP check, for backends that route on it; the backend's
    /// address without it.
    pub host: Option<String>,
    /// Text the answer's body must contain (HAProxy's `http-check expect string`).
    pub expect_body: Option<String>,
    /// Accepted statuses, `"200-399"` or `"200"`.
    #[serde(default)]
    pub expect_status: StatusRange,
    /// Time between checks of one backend.
    #[serde(default = "default_interval", with = "configkit::duration")]
    pub interval: Duration,
    /// A check slower than this fails.
    #[serde(default = "default_check_timeout", with = "configkit::duration")]
    pub timeout: Duration,
    /// Passing checks in a row to come back up.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Failing checks in a row to go down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_path() -> String {
    "/".into()
}
fn default_check_method() -> String {
    "GET".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

/// `passive = { ... }` of a pool.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Consecutive failures of real traffic that eject a backend; 0 disables.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// How long an ejected backend stays out.
    #[serde(default = "default_cooldown", with = "configkit::duration")]
    pub cooldown: Duration,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            failures: default_failures(),
            cooldown: default_cooldown(),
        }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> Duration {
    Duration::from_secs(10)
}

/// Listener protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Layer 4: bytes copied both ways.
    Tcp,
    /// Layer 7: HTTP/1.1 and h2 requests, WebSocket upgrades.
    Http,
}

impl Mode {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
        }
    }
}

/// PROXY protocol version sent to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyProtocol {
    /// Text header.
    V1,
    /// Binary header.
    V2,
}

/// `[[proxy.listeners]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, shown on the stats page.
    pub name: String,
    /// `tcp` or `http`.
    pub mode: Mode,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Pool the traffic goes to.
    pub pool: String,
    /// Connection attempts to a backend slower than this fail (and are retried elsewhere).
    #[serde(default = "default_connect_timeout", with = "configkit::duration")]
    pub connect_timeout: Duration,
    /// Other backends tried after a failed attempt.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// HTTP: a backend that does not answer within `request_timeout` is given up on and an
    /// idempotent request without a body goes to another backend, like nginx's
    /// `proxy_next_upstream timeout`; off by default, as the first backend may still be
    /// doing the work.
    #[serde(default)]
    pub retry_on_timeout: bool,
    /// Client connections served at once; more wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP: a session with no byte in either direction for this long is closed.
    #[serde(default = "default_idle_timeout", with = "configkit::duration")]
    pub idle_timeout: Duration,
    /// TCP: send a PROXY protocol header to the backend.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// HTTP: time from sending a request to the backend's response headers.
    #[serde(default = "default_request_timeout", with = "configkit::duration")]
    pub request_timeout: Duration,
    /// HTTP: a TLS handshake must finish within this.
    #[serde(default = "default_handshake_timeout", with = "configkit::duration")]
    pub handshake_timeout: Duration,
    /// HTTP: a request head must arrive whole within this from its first byte (408 after);
    /// one deadline per head, not reset by each byte.
    #[serde(default = "default_head_timeout", with = "configkit::duration")]
    pub head_timeout: Duration,
    /// HTTP: while a request or response body streams, a read or write that makes no
    /// progress for this long ends the exchange (408 to a client that stopped sending).
    #[serde(default = "default_body_timeout", with = "configkit::duration")]
    pub body_timeout: Duration,
    /// HTTP: after 5 s, a request body must have averaged at least this many bytes per
    /// second (408 otherwise); 0 turns the check off.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    /// HTTP: status when no backend is available, 503 or 502.
    #[serde(default = "default_no_backend_status")]
    pub no_backend_status: u16,
    /// HTTP: largest request head (request line and headers) in bytes; larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// HTTP: terminate TLS here.
    pub tls: Option<TlsConfig>,
    /// Rules tried in order before `pool`: the first that matches decides where the
    /// request (HTTP) or connection (TCP, by SNI) goes; none matching means `pool`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// One line per HTTP request (TCP: per session); off when absent.
    pub access_log: Option<AccessLogConfig>,
    /// HTTP: pages served (as `text/html`) instead of lintas's own plain-text answers, by
    /// status (one of [`ERROR_PAGE_STATUSES`]); read when the configuration is applied.
    #[serde(default)]
    pub error_pages: BTreeMap<String, PathBuf>,
}

/// The statuses lintas answers itself and an error page may replace.
pub const ERROR_PAGE_STATUSES: [u16; 10] = [400, 403, 404, 408, 429, 431, 500, 502, 503, 504];

/// `access_log = { format, path }` of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Line format.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// File appended to (created if missing, reopened on reload), or `stdout`.
    pub path: String,
}

fn default_log_format() -> LogFormat {
    LogFormat::Combined
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// nginx's and Apache's Common Log Format.
    Common,
    /// Common plus `"referer" "user agent"`, nginx's default `combined`.
    Combined,
    /// One JSON object per line, every field lintas knows.
    Json,
}

/// `[[proxy.listeners.routes]]`: conditions (all must hold; none means every request) and
/// what to do with a matching request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown in `lintas check` messages and on the stats page; `#N` when absent.
    pub name: Option<String>,
    /// HTTP: the request's host, exact (`api.example.com`) or any subdomain
    /// (`*.example.com`), without port, case-insensitive.
    pub host: Option<String>,
    /// HTTP: the path is exactly this (query excluded).
    pub path: Option<String>,
    /// HTTP: the path starts with this (a plain string prefix, like nginx's `location`).
    pub path_prefix: Option<String>,
    /// HTTP: one of these methods; empty is any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// HTTP: each of these headers has exactly this value (names case-insensitive).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TCP: the TLS ClientHello's server name, exact or `*.example.com`; the connection is
    /// passed on encrypted.
    pub sni: Option<String>,
    /// Where matching traffic goes.
    pub pool: Option<String>,
    /// HTTP: answer with a redirect to this URL instead; `{host}` is the request's host
    /// (without port) and `{uri}` its path and query, e.g. `https://{host}{uri}`.
    pub redirect: Option<String>,
    /// Status of the redirect: 301, 302 (default), 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub redirect_status: u16,
    /// HTTP: remove `path_prefix` from the path the backend gets (`/api/users` → `/users`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// HTTP: request headers set (replacing any the client sent) before forwarding.
    #[serde(default)]
    pub set_request_headers: BTreeMap<String, String>,
    /// HTTP: request headers removed before forwarding.
    #[serde(default)]
    pub remove_request_headers: Vec<String>,
    /// HTTP: response headers set (replacing the backend's) before answering.
    #[serde(default)]
    pub set_response_headers: BTreeMap<String, String>,
    /// HTTP: response headers removed before answering.
    #[serde(default)]
    pub remove_response_headers: Vec<String>,
    /// HTTP: give the request a fresh `X-Request-Id` (replacing the client's), sent to the
    /// backend and back to the client, so one id follows it through every log.
    #[serde(default)]
    pub request_id: bool,
}

fn default_redirect_status() -> u16 {
    302
}

impl RouteConfig {
    /// `name`, or `#N` by position.
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("#{index}"))
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_retries() -> u32 {
    2
}
fn default_max_connections() -> usize {
    20_000
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_handshake_timeout() -> Duration {
    net::Limits::API.handshake_timeout
}
fn default_head_timeout() -> Duration {
    net::Limits::API.head_timeout
}
fn default_body_timeout() -> Duration {
    net::Limits::API.body_timeout
}
fn default_min_body_rate() -> u64 {
    net::Limits::API.min_body_rate
}
fn default_no_backend_status() -> u16 {
    503
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}

impl PoolConfig {
    /// The backends as the balancer takes them; `resolved` gives the backends (name and
    /// address) that an entry written as a host name stands for, by its index.
    pub fn backend_specs(
        &self,
        resolved: impl Fn(usize) -> Vec<(String, SocketAddr)>,
    ) -> Vec<BackendSpec> {
        self.backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| match b.address.ip() {
                Some(addr) => vec![b.spec(b.name.clone(), addr)],
                None => resolved(i)
                    .into_iter()
                    .map(|(name, addr)| b.spec(name, addr))
                    .collect(),
            })
            .collect()
    }

    /// How requests wait for a full pool.
    pub fn queue_policy(&self) -> balance::QueuePolicy {
        balance::QueuePolicy {
            size: self.queue_size,
            timeout: self.queue_timeout,
        }
    }

    /// Thresholds of the health state machine.
    pub fn policy(&self) -> HealthPolicy {
        let (rise, fall) = self.health.as_ref().map_or((2, 3), |h| (h.rise, h.fall));
        HealthPolicy {
            rise,
            fall,
            eject_after: self.passive.failures,
            cooldown: self.passive.cooldown,
            slow_start: self.slow_start,
        }
    }
}

/// Reads `hash_key` with [`parse_hash_key`], so a bad key is refused where it is written.
fn hash_key_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HashKey>, D::Error> {
    let s = String::deserialize(d)?;
    parse_hash_key(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses `client_ip`, `header:NAME` or `cookie:NAME`: the file's `hash_key` and the admin
/// API's strategy change take the same spellings.
pub fn parse_hash_key(s: &str) -> Result<HashKey, String> {
    let bad = || {
        format!("`{s}` is not a hash key; use \"client_ip\", \"header:NAME\" or \"cookie:NAME\"")
    };
    match s.split_once(':') {
        None if s == "client_ip" => Ok(HashKey::ClientIp),
        Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
            Ok(HashKey::Header(name.to_ascii_lowercase()))
        }
        Some(("cookie", name)) if !name.is_empty() => Ok(HashKey::Cookie(name.into())),
        _ => Err(bad()),
    }
}

impl ProxyConfig {
    /// Checks everything serde could not; `at` is the path of the `[proxy]` section.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        let pools_at = at.key("pools");
        for (name, pool) in &self.pools {
            let p = pools_at.key(name);
            if pool.backends.is_empty() {
                issues.push(p.key("backends"), "a pool needs at least one backend");
            }
            for (i, b) in pool.backends.iter().enumerate() {
                if pool.backends[..i].iter().any(|o| o.name == b.name) {
                    issues.push(
                        p.key("backends").index(i).key("name"),
                        format!("backend name `{}` is used twice in pool `{name}`", b.name),
                    );
                }
                if let Some((base, n)) = b.name.rsplit_once('#')
                    && !n.is_empty()
                    && n.bytes().all(|c| c.is_ascii_digit())
                    && let Some(named) = pool
                        .backends
                        .iter()
                        .find(|o| o.name == base && o.address.ip().is_none())
                {
                    issues.push(
                        p.key("backends").index(i).key("name"),
                        format!(
                            "backend name `{}` is kept for the addresses of `{base}` ({}); choose another name",
                            b.name, named.address
                        ),
                    );
                }
                if b.weight > balance::MAX_WEIGHT {
                    issues.push(
                        p.key("backends").index(i).key("weight"),
                        format!("weight {} is out of range; use 0 to 256", b.weight),
                    );
                }
            }
            if pool.hash_key.is_none() && pool.strategy == StrategyKind::ConsistentHash {
                issues.push(
                    p.key("strategy"),
                    "consistent_hash needs hash_key = \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
                );
            }
            if !pool.backends.is_empty() && pool.backends.iter().all(|b| b.backup) {
                issues.push(
                    p.key("backends"),
                    "every backend is a backup; a backup only stands in for the others",
                );
            }
            if pool.queue_timeout.is_zero() {
                issues.push(p.key("queue_timeout"), "queue_timeout must be above zero");
            }
            if let Some(h) = &pool.health {
                let hp = p.key("health");
                if !h.path.starts_with('/') {
                    issues.push(hp.key("path"), "the check path must start with `/`");
                }
                if h.kind == CheckKind::Http
                    && (h.method.is_empty() || !h.method.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    issues.push(
                        hp.key("method"),
                        format!(
                            "`{}` is not a method; write it in capitals, like GET or HEAD",
                            h.method
                        ),
                    );
                }
                if h.method == "HEAD" && h.expect_body.is_some() {
                    issues.push(
                        hp.key("expect_body"),
                        "an answer to HEAD has no body to hold expect_body; use GET",
                    );
                }
                if let Some(host) = &h.host
                    && http::uri::Authority::try_from(host.as_str()).is_err()
                {
                    issues.push(hp.key("host"), format!("`{host}` is not a host[:port]"));
                }
                if h.kind == CheckKind::Tcp
                    && (h.host.is_some() || h.expect_body.is_some() || h.method != "GET")
                {
                    issues.push(
                        hp.key("kind"),
                        "method, host and expect_body are for kind = \"http\" checks",
                    );
                }
                if h.interval.is_zero() {
                    issues.push(hp.key("interval"), "interval must be above zero");
                }
                if h.timeout.is_zero() {
                    issues.push(hp.key("timeout"), "timeout must be above zero");
                }
                if h.rise == 0 {
                    issues.push(hp.key("rise"), "rise must be at least 1");
                }
                if h.fall == 0 {
                    issues.push(hp.key("fall"), "fall must be at least 1");
                }
            }
        }
        if self.dns.max_ttl < Duration::from_secs(1) {
            issues.push(at.key("dns").key("max_ttl"), "max_ttl must be at least 1s");
        }
        if self.dns.timeout.is_zero() {
            issues.push(at.key("dns").key("timeout"), "timeout must be above zero");
        }
        let listeners_at = at.key("listeners");
        for (i, l) in self.listeners.iter().enumerate() {
            let lp = listeners_at.index(i);
            if self.listeners[..i].iter().any(|o| o.name == l.name) {
                issues.push(
                    lp.key("name"),
                    format!("listener name `{}` is used twice", l.name),
                );
            }
            // Port 0 asks the OS for a free port: never a conflict.
            if l.listen.port() != 0 && self.listeners[..i].iter().any(|o| o.listen == l.listen) {
                issues.push(
                    lp.key("listen"),
                    format!("{} is already used by another listener", l.listen),
                );
            }
            if !self.pools.contains_key(&l.pool) {
                let known: Vec<_> = self.pools.keys().map(String::as_str).collect();
                issues.push(
                    lp.key("pool"),
                    format!(
                        "no pool named `{}`; defined pools: {}",
                        l.pool,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
            crate::route::validate(&l.routes, l.mode, &self.pools, &lp.key("routes"), issues);
            if !matches!(l.no_backend_status, 502 | 503) {
                issues.push(lp.key("no_backend_status"), "use 503 (default) or 502");
            }
            if l.max_connections == 0 {
                issues.push(
                    lp.key("max_connections"),
                    "max_connections must be at least 1",
                );
            }
            for (key, d) in [
                ("connect_timeout", l.connect_timeout),
                ("idle_timeout", l.idle_timeout),
                ("request_timeout", l.request_timeout),
                ("handshake_timeout", l.handshake_timeout),
                ("head_timeout", l.head_timeout),
                ("body_timeout", l.body_timeout),
            ] {
                if d.is_zero() {
                    issues.push(lp.key(key), format!("{key} must be above zero"));
                }
            }
            if let Some(log) = &l.access_log
                && log.path.trim().is_empty()
            {
                issues.push(
                    lp.key("access_log").key("path"),
                    "the access log needs a file path or \"stdout\"",
                );
            }
            for status in l.error_pages.keys() {
                if !status
                    .parse::<u16>()
                    .is_ok_and(|s| ERROR_PAGE_STATUSES.contains(&s))
                {
                    issues.push(
                        lp.key("error_pages").key(status),
                        format!(
                            "`{status}` is not a status lintas answers itself; use one of {}",
                            ERROR_PAGE_STATUSES.map(|s| s.to_string()).join(", ")
                        ),
                    );
                }
            }
            if l.max_header_bytes < 1024 {
                issues.push(
                    lp.key("max_header_bytes"),
                    "max_header_bytes must be at least 1024",
                );
            }
            match l.mode {
                Mode::Tcp => {
                    if !l.error_pages.is_empty() {
                        issues.push(
                            lp.key("error_pages"),
                            "error pages are for mode = \"http\" listeners",
                        );
                    }
                    if l.tls.is_some() {
                        issues.push(
                            lp.key("tls"),
                            "TLS termination is for mode = \"http\" listeners",
                        );
                    }
                }
                Mode::Http => {
                    if l.proxy_protocol.is_some() {
                        issues.push(
                            lp.key("proxy_protocol"),
                            "the PROXY protocol is for mode = \"tcp\" listeners; HTTP listeners send X-Forwarded-For",
                        );
                    }
                }
            }
        }
    }

    /// Every address this section binds, with the key path that names it (for port conflict
    /// checks across services).
    pub fn binds(&self, at: &KeyPath) -> Vec<(SocketAddr, KeyPath)> {
        self.listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (l.listen, at.key("listeners").index(i).key("listen")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_of(toml_text: &str) -> Vec<String> {
        let cfg: ProxyConfig = toml::from_str(toml_text).unwrap();
        let mut issues = Issues::default();
        cfg.validate(&KeyPath::root("proxy"), &mut issues);
        issues
            .0
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn typed_values_are_parsed_as_the_file_is_read() {
        let cfg: ProxyConfig = toml::from_str(
            r#"
            [pools.web]
            strategy = "consistent_hash"
            hash_key = "header:X-User"
            backends = [{ name = "a", address = "127.0.0.1:1" }]
            health = { kind = "http", expect_status = "204" }
            "#,
        )
        .unwrap();
        let web = &cfg.pools["web"];
        assert_eq!(web.hash_key, Some(HashKey::Header("x-user".into())));
        assert_eq!(
            web.health.as_ref().map(|h| h.expect_status),
            Some("204".parse().unwrap())
        );
        for (value, message) in [
            (
                r#"hash_key = "ip""#,
                "`ip` is not a hash key; use \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
            ),
            (
                r#"health = { kind = "http", expect_status = "600" }"#,
                "`600` is not a status range; write \"200-399\" or \"200\"",
            ),
        ] {
            let text = format!(
                "[pools.web]\nbackends = [{{ name = \"a\", address = \"127.0.0.1:1\" }}]\n{value}\n"
            );
            let err = toml::from_str::<ProxyConfig>(&text).unwrap_err();
            assert_eq!(err.message(), message);
            let bad = value
                .rsplit_once('=')
                .unwrap()
                .1
                .trim()
                .trim_end_matches(" }");
            assert_eq!(err.span().map(|s| &text[s]), Some(bad));
        }
    }

    #[test]
    fn a_backend_address_is_an_ip_or_a_host_name_with_a_port() {
        let cfg: ProxyConfig = toml::from_str(
            r#"
            dns = { servers = ["127.0.0.1:5353", "10.0.0.2"], max_ttl = "10s" }
            [pools.web]
            backends = [{ name = "a", address = "127.0.0.1:1" }, { name = "b", address = "app.internal:8080" }]
            "#,
        )
        .unwrap();
        let web = &cfg.pools["web"];
        assert_eq!(
            web.backends[0].address.ip(),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            web.backends[1].address,
            configkit::Address::Host {
                host: "app.internal".into(),
                port: 8080
            }
        );
        assert_eq!(
            cfg.dns.servers,
            [
                "127.0.0.1:5353".parse().unwrap(),
                "10.0.0.2:53".parse().unwrap()
            ]
        );
        assert_eq!(cfg.dns.max_ttl, Duration::from_secs(10));
        assert_eq!(cfg.dns.timeout, Duration::from_secs(2));
        let specs = web.backend_specs(|i| {
            assert_eq!(i, 1);
            vec![
                ("b#1".into(), "10.0.0.1:8080".parse().unwrap()),
                ("b#2".into(), "10.0.0.2:8080".parse().unwrap()),
            ]
        });
        let names: Vec<_> = specs
            .iter()
            .map(|s| format!("{}={}", s.name, s.addr))
            .collect();
        assert_eq!(
            names,
            ["a=127.0.0.1:1", "b#1=10.0.0.1:8080", "b#2=10.0.0.2:8080"]
        );

        for (value, message) in [
            (
                "app.internal",
                "`app.internal` has no port; write ip:port or host:port, e.g. \"app.internal:8080\"",
            ),
            (
                "app.internal:70000",
                "port 70000 is out of range; use 1 to 65535",
            ),
            (
                "app internal:80",
                "`app internal:80` is not an address; write ip:port (\"10.0.0.5:8080\", \"[::1]:8080\") or host:port (\"app.internal:8080\")",
            ),
        ] {
            let text =
                format!("[pools.web]\nbackends = [{{ name = \"a\", address = \"{value}\" }}]\n");
            let err = toml::from_str::<ProxyConfig>(&text).unwrap_err();
            assert_eq!(err.message(), message);
            assert_eq!(
                err.span().map(|s| &text[s]),
                Some(format!("\"{value}\"").as_str())
            );
        }
        let text = "dns = { servers = [\"ns1\"] }\n";
        let err = toml::from_str::<ProxyConfig>(text).unwrap_err();
        assert_eq!(
            err.message(),
            "`ns1` is not a name server; write \"10.0.0.2\" or \"10.0.0.2:53\""
        );
    }

    #[test]
    fn hash_keys() {
        assert_eq!(parse_hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(
            parse_hash_key("header:X-User"),
            Ok(HashKey::Header("x-user".into()))
        );
        assert_eq!(
            parse_hash_key("cookie:sid"),
            Ok(HashKey::Cookie("sid".into()))
        );
        assert!(parse_hash_key("ip").is_err());
        assert!(parse_hash_key("header:").is_err());
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let got = issues_of(
            r#"
            dns = { max_ttl = "500ms", timeout = "0s" }

            [pools.web]
            strategy = "consistent_hash"
            backends = [{ name = "a", address = "127.0.0.1:1" }, { name = "a", address = "127.0.0.1:2", weight = 300 }, { name = "app", address = "app.internal:80" }, { name = "app#2", address = "127.0.0.1:3" }]
            health = { kind = "http", rise = 0 }

            [[listeners]]
            name = "l"
            mode = "http"
            listen = "127.0.0.1:80"
            pool = "nope"
            no_backend_status = 500
            proxy_protocol = "v1"
            access_log = { format = "json", path = " " }
            error_pages = { 502 = "/etc/lintas/502.html", 418 = "/etc/lintas/418.html" }

            [[listeners]]
            name = "l"
            mode = "tcp"
            listen = "127.0.0.1:80"
            pool = "web"
            "#,
        );
        assert_eq!(
            got,
            vec![
                "proxy.pools.web.backends[1].name: backend name `a` is used twice in pool `web`",
                "proxy.pools.web.backends[1].weight: weight 300 is out of range; use 0 to 256",
                "proxy.pools.web.backends[3].name: backend name `app#2` is kept for the addresses of `app` (app.internal:80); choose another name",
                "proxy.pools.web.strategy: consistent_hash needs hash_key = \"client_ip\", \"header:NAME\" or \"cookie:NAME\"",
                "proxy.pools.web.health.rise: rise must be at least 1",
                "proxy.dns.max_ttl: max_ttl must be at least 1s",
                "proxy.dns.timeout: timeout must be above zero",
                "proxy.listeners[0].pool: no pool named `nope`; defined pools: web",
                "proxy.listeners[0].no_backend_status: use 503 (default) or 502",
                "proxy.listeners[0].access_log.path: the access log needs a file path or \"stdout\"",
                "proxy.listeners[0].error_pages.418: `418` is not a status lintas answers itself; use one of 400, 403, 404, 408, 429, 431, 500, 502, 503, 504",
                "proxy.listeners[0].proxy_protocol: the PROXY protocol is for mode = \"tcp\" listeners; HTTP listeners send X-Forwarded-For",
                "proxy.listeners[1].name: listener name `l` is used twice",
                "proxy.listeners[1].listen: 127.0.0.1:80 is already used by another listener",
            ]
        );
    }
}
