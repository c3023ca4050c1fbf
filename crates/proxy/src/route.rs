//! Routing: which pool (or redirect) a request goes to, and what is rewritten on the way.
//!
//! A listener's `routes` are tried in order and the first whose conditions all hold wins;
//! none matching means the listener's `pool` (HAProxy's `use_backend ... if` rules before
//! `default_backend`; nginx's `server_name` and `location` blocks). HTTP routes look at the
//! host, the path (exact or prefix), the method and header values; TCP routes at the TLS
//! server name (SNI). The same [`HostPattern`] serves both.
//!
//! The path a route sees is the request's path with percent-encoded unreserved characters
//! decoded (RFC 3986 §6.2.2.2: `/%61pi` and `/api` are the same resource to every correct
//! server), and a listener whose routes look at paths refuses paths with dot segments
//! (`/a/../admin`): a backend would resolve them after lintas chose the route, so the route
//! and the backend would read two different paths. Other escapes stay as they are (`%2F` is
//! not a `/`, RFC 3986 §2.2).
//!
//! [`Conditions::covers`] lets `lintas check` refuse a route that an earlier one shadows.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use balance::Pool;
use configkit::{Issues, KeyPath};

use crate::config::{Mode, RouteConfig};

/// A host or server name to match: exact, or any subdomain of a suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// This name only (lowercase).
    Exact(String),
    /// Any name ending in this suffix, which starts with `.` (`*.example.com` →
    /// `.example.com`), at any depth; not the bare domain.
    Suffix(String),
}

impl HostPattern {
    /// Reads `api.example.com` or `*.example.com`.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a host name or `*.domain` pattern (no port, no scheme)");
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(bad());
        }
        let name = name.to_ascii_lowercase();
        Ok(if wild {
            Self::Suffix(format!(".{name}"))
        } else {
            Self::Exact(name)
        })
    }

    /// Whether `host` (already without port or trailing dot) is one this pattern names.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host.eq_ignore_ascii_case(name),
            Self::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Whether every name `other` matches, this one matches too.
    fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Suffix(_), Self::Exact(b)) => self.matches(b),
            (Self::Suffix(a), Self::Suffix(b)) => b.ends_with(a.as_str()),
            (Self::Exact(_), Self::Suffix(_)) => false,
        }
    }
}

/// The host part of a `Host` header or `:authority`: without port, without a trailing dot.
pub(crate) fn host_only(authority: &str) -> &str {
    let host = if authority.starts_with('[') {
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Exact(String),
    Prefix(String),
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }

    fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Prefix(a), Self::Exact(b) | Self::Prefix(b)) => b.starts_with(a.as_str()),
            (Self::Exact(_), Self::Prefix(_)) => false,
        }
    }
}

/// What a route asks of a request; every condition present must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Conditions {
    host: Option<HostPattern>,
    path: Option<PathPattern>,
    /// Uppercase; empty is any.
    methods: Vec<String>,
    /// Lowercase names, exact values.
    headers: Vec<(String, String)>,
    sni: Option<HostPattern>,
}

/// Reads header values of a request for the header conditions, whatever its HTTP version.
pub(crate) trait HeaderLookup {
    /// The value of header `name` when the request has exactly one such header (two
    /// copies could be read differently by the backend, so they match nothing).
    fn only(&self, name: &str) -> Option<&[u8]>;
}

impl HeaderLookup for [httparse::Header<'_>] {
    fn only(&self, name: &str) -> Option<&[u8]> {
        let mut found = self.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
        let first = found.next()?;
        found.next().is_none().then_some(first.value)
    }
}

impl HeaderLookup for http::HeaderMap {
    fn only(&self, name: &str) -> Option<&[u8]> {
        let mut found = self.get_all(name).iter();
        let first = found.next()?;
        found.next().is_none().then_some(first.as_bytes())
    }
}

/// The parts of an HTTP request routes look at.
pub(crate) struct RequestFacts<'a, H: HeaderLookup + ?Sized> {
    pub method: &'a str,
    /// Host without port (see [`host_only`]); empty when the request named none.
    pub host: &'a str,
    /// The path as [`routing_path`] made it.
    pub path: &'a str,
    pub headers: &'a H,
}

impl Conditions {
    fn parse(r: &RouteConfig, at: &KeyPath, issues: &mut Issues) -> Self {
        let mut c = Self::default();
        if let Some(h) = &r.host {
            match HostPattern::parse(h) {
                Ok(p) => c.host = Some(p),
                Err(e) => issues.push(at.key("host"), e),
            }
        }
        if let Some(h) = &r.sni {
            match HostPattern::parse(h) {
                Ok(p) => c.sni = Some(p),
                Err(e) => issues.push(at.key("sni"), e),
            }
        }
        for (key, value) in [("path", &r.path), ("path_prefix", &r.path_prefix)] {
            let Some(p) = value else { continue };
            if !p.starts_with('/')
                || p.parse::<http::uri::PathAndQuery>().is_err()
                || p.contains('?')
            {
                issues.push(
                    at.key(key),
                    format!("`{p}` is not a path starting with `/`"),
                );
                continue;
            }
            match routing_path(p) {
                Ok(normal) if normal == p.as_str() => {}
                _ => issues.push(
                    at.key(key),
                    format!(
                        "`{p}` would never match: write it without dot segments and with \
                         unreserved characters unescaped, as requests are compared"
                    ),
                ),
            }
        }
        match (&r.path, &r.path_prefix) {
            (Some(_), Some(_)) => issues.push(
                at.key("path_prefix"),
                "use either path (exact) or path_prefix, not both",
            ),
            (Some(p), None) => c.path = Some(PathPattern::Exact(p.clone())),
            (None, Some(p)) => c.path = Some(PathPattern::Prefix(p.clone())),
            (None, None) => {}
        }
        for (i, m) in r.methods.iter().enumerate() {
            if !m.bytes().all(|b| b.is_ascii_uppercase()) || m.is_empty() {
                issues.push(
                    at.key("methods").index(i),
                    format!("`{m}` is not a method; write it in capitals, like GET"),
                );
            }
            c.methods.push(m.clone());
        }
        for (name, value) in &r.headers {
            check_header(name, value, &at.key("headers").key(name), issues);
            c.headers.push((name.to_ascii_lowercase(), value.clone()));
        }
        c
    }

    /// Whether an HTTP request meets every condition.
    pub(crate) fn matches<H: HeaderLookup + ?Sized>(&self, req: &RequestFacts<'_, H>) -> bool {
        self.host.as_ref().is_none_or(|h| h.matches(req.host))
            && self.path.as_ref().is_none_or(|p| p.matches(req.path))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method))
            && self
                .headers
                .iter()
                .all(|(name, value)| req.headers.only(name) == Some(value.as_bytes()))
    }

    /// Whether every request `later` matches, `self` matches too: `later` can never win.
    pub(crate) fn covers(&self, later: &Self) -> bool {
        fn opt<T>(mine: &Option<T>, theirs: &Option<T>, covers: impl Fn(&T, &T) -> bool) -> bool {
            match (mine, theirs) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => covers(a, b),
            }
        }
        opt(&self.host, &later.host, HostPattern::covers)
            && opt(&self.sni, &later.sni, HostPattern::covers)
            && opt(&self.path, &later.path, PathPattern::covers)
            && (self.methods.is_empty()
                || (!later.methods.is_empty()
                    && later.methods.iter().all(|m| self.methods.contains(m))))
            && self.headers.iter().all(|h| later.headers.contains(h))
    }

    /// Whether `sni` meets the (only) condition of a TCP route.
    pub(crate) fn matches_sni(&self, sni: Option<&str>) -> bool {
        match (&self.sni, sni) {
            (None, _) => true,
            (Some(p), Some(name)) => p.matches(host_only(name)),
            (Some(_), None) => false,
        }
    }
}

/// Headers lintas frames messages by or writes itself: no route may set or remove them.
const RESERVED: [&str; 10] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
];

fn check_header(name: &str, value: &str, at: &KeyPath, issues: &mut Issues) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        issues.push(at.clone(), format!("`{name}` is not a header name"));
    }
    if http::HeaderValue::from_str(value).is_err() {
        issues.push(
            at.clone(),
            format!("`{}` is not a header value", value.escape_debug()),
        );
    }
}

fn check_edit_name(name: &str, at: &KeyPath, issues: &mut Issues) {
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        issues.push(
            at.clone(),
            format!(
                "`{name}` frames the message or is written by lintas; a route cannot change it"
            ),
        );
    } else if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        issues.push(at.clone(), format!("`{name}` is not a header name"));
    }
}

/// Header changes and path rewrite of a route.
#[derive(Debug, Clone, Default)]
pub(crate) struct Edits {
    /// Prefix removed from the path the backend gets.
    pub strip: Option<String>,
    /// Lowercase names of request headers not forwarded (removed, or replaced by `add_request`).
    pub drop_request: Vec<String>,
    pub add_request: Vec<(String, String)>,
    /// Lowercase names of response headers not passed on.
    pub drop_response: Vec<String>,
    pub add_response: Vec<(String, String)>,
    /// Give each request a fresh `X-Request-Id`.
    pub request_id: bool,
}

impl Edits {
    fn parse(r: &RouteConfig, at: &KeyPath, issues: &mut Issues) -> Self {
        let mut e = Self {
            strip: r.path_prefix.clone().filter(|_| r.strip_prefix),
            request_id: r.request_id,
            ..Self::default()
        };
        if r.strip_prefix && r.path_prefix.is_none() {
            issues.push(at.key("strip_prefix"), "strip_prefix needs path_prefix");
        }
        let sets = [
            ("set_request_headers", &r.set_request_headers),
            ("set_response_headers", &r.set_response_headers),
        ];
        for (key, set) in sets {
            for (name, value) in set {
                check_edit_name(name, &at.key(key).key(name), issues);
                check_header(name, value, &at.key(key).key(name), issues);
            }
        }
        for (key, removed) in [
            ("remove_request_headers", &r.remove_request_headers),
            ("remove_response_headers", &r.remove_response_headers),
        ] {
            for (i, name) in removed.iter().enumerate() {
                check_edit_name(name, &at.key(key).index(i), issues);
            }
        }
        let lower = |m: &BTreeMap<String, String>| -> Vec<(String, String)> {
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect()
        };
        e.add_request = lower(&r.set_request_headers);
        e.add_response = lower(&r.set_response_headers);
        e.drop_request = r
            .remove_request_headers
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .chain(e.add_request.iter().map(|(n, _)| n.clone()))
            .collect();
        e.drop_response = r
            .remove_response_headers
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .chain(e.add_response.iter().map(|(n, _)| n.clone()))
            .collect();
        if e.request_id {
            e.drop_request.push("x-request-id".into());
            e.drop_response.push("x-request-id".into());
        }
        e
    }

    /// Whether a request header is not forwarded as received.
    pub(crate) fn drops_request(&self, name: &str) -> bool {
        self.drop_request
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    }

    /// Whether a response header is not passed on as received.
    pub(crate) fn drops_response(&self, name: &str) -> bool {
        self.drop_response
            .iter()
            .any(|d| d.eq_ignore_ascii_case(name))
    }

    /// The path and query the backend gets for `path` (already the routing form) and the
    /// raw query.
    pub(crate) fn rewrite_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        match self.strip.as_deref().and_then(|p| path.strip_prefix(p)) {
            Some(rest) if rest.starts_with('/') => Cow::Borrowed(rest),
            Some(rest) => Cow::Owned(format!("/{rest}")),
            None => Cow::Borrowed(path),
        }
    }
}

/// A redirect answer's target, with `{host}` and `{uri}` filled per request.
#[derive(Debug, Clone)]
pub(crate) struct Redirect {
    template: String,
    pub status: u16,
}

impl Redirect {
    fn parse(to: &str, status: u16, at: &KeyPath, issues: &mut Issues) -> Self {
        let mut rest = to;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                issues.push(at.key("redirect"), "a `{` without its `}`");
                break;
            };
            let name = &rest[open + 1..open + close];
            if !matches!(name, "host" | "uri") {
                issues.push(
                    at.key("redirect"),
                    format!("unknown placeholder `{{{name}}}`; use {{host}} and {{uri}}"),
                );
            }
            rest = &rest[open + close + 1..];
        }
        let probe = to.replace("{host}", "example.com").replace("{uri}", "/");
        if !(probe.starts_with('/')
            || probe
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme().is_some()))
            || http::HeaderValue::from_str(&probe).is_err()
        {
            issues.push(
                at.key("redirect"),
                format!("`{to}` is not an absolute URL or a path starting with `/`"),
            );
        }
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            issues.push(
                at.key("redirect_status"),
                format!("{status} is not a redirect; use 301, 302, 303, 307 or 308"),
            );
        }
        Self {
            template: to.to_owned(),
            status,
        }
    }

    /// The `Location` for a request to `host` with path and query `uri`.
    pub(crate) fn location(&self, host: &str, uri: &str) -> String {
        self.template.replace("{host}", host).replace("{uri}", uri)
    }
}

/// What a matching route does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Send it to this pool.
    Pool(Arc<Pool>),
    /// Answer with a redirect.
    Redirect(Redirect),
}

/// One compiled route.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub label: String,
    pub when: Conditions,
    pub action: Action,
    pub edits: Edits,
}

/// A listener's routes, compiled once per configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Router {
    pub routes: Vec<Route>,
    /// Whether any route looks at the path: then paths with dot segments are refused.
    pub by_path: bool,
}

impl Router {
    /// Compiles `routes` of a listener; `pools` are the pools they may name. The
    /// configuration was validated, so problems cannot remain; a route naming a missing
    /// pool is left out all the same.
    pub(crate) fn new(routes: &[RouteConfig], pools: &BTreeMap<String, Arc<Pool>>) -> Self {
        let mut issues = Issues::default();
        let at = KeyPath::root("routes");
        let compiled: Vec<Route> = routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let at = at.index(i);
                let action = match (&r.pool, &r.redirect) {
                    (_, Some(to)) => {
                        Action::Redirect(Redirect::parse(to, r.redirect_status, &at, &mut issues))
                    }
                    (Some(pool), None) => Action::Pool(pools.get(pool)?.clone()),
                    (None, None) => return None,
                };
                Some(Route {
                    label: r.label(i),
                    when: Conditions::parse(r, &at, &mut issues),
                    action,
                    edits: Edits::parse(r, &at, &mut issues),
                })
            })
            .collect();
        Self {
            by_path: compiled.iter().any(|r| r.when.path.is_some()),
            routes: compiled,
        }
    }

    /// The first route an HTTP request matches, with its index.
    pub(crate) fn select<H: HeaderLookup + ?Sized>(
        &self,
        req: &RequestFacts<'_, H>,
    ) -> Option<(usize, &Route)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.when.matches(req))
    }

    /// The pool of route `index`, or `default` for no route (or a redirect, which never
    /// reaches a pool).
    pub(crate) fn pool<'a>(
        &'a self,
        index: Option<usize>,
        default: &'a Arc<Pool>,
    ) -> &'a Arc<Pool> {
        match index.and_then(|i| self.routes.get(i)).map(|r| &r.action) {
            Some(Action::Pool(p)) => p,
            _ => default,
        }
    }

    /// The edits of route `index`.
    pub(crate) fn edits(&self, index: Option<usize>) -> Option<&Edits> {
        index.and_then(|i| self.routes.get(i)).map(|r| &r.edits)
    }

    /// The first route a TCP connection with server name `sni` matches.
    pub(crate) fn select_sni(&self, sni: Option<&str>) -> Option<&Route> {
        self.routes.iter().find(|r| r.when.matches_sni(sni))
    }
}

/// Checks a listener's routes: each well formed, for its mode, naming a pool that exists,
/// and none shadowed by an earlier one.
pub(crate) fn validate(
    routes: &[RouteConfig],
    mode: Mode,
    pools: &BTreeMap<String, crate::config::PoolConfig>,
    at: &KeyPath,
    issues: &mut Issues,
) {
    let mut seen: Vec<(String, Conditions)> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let rp = at.index(i);
        let when = Conditions::parse(r, &rp, issues);
        match (&r.pool, &r.redirect) {
            (Some(_), Some(_)) => issues.push(
                rp.key("redirect"),
                "a route has a pool or a redirect, not both",
            ),
            (None, None) => issues.push(rp.key("pool"), "a route needs a pool or a redirect"),
            (Some(pool), None) if !pools.contains_key(pool) => {
                issues.push(rp.key("pool"), format!("no pool named `{pool}`"))
            }
            (_, Some(to)) => {
                Redirect::parse(to, r.redirect_status, &rp, issues);
            }
            _ => {}
        }
        Edits::parse(r, &rp, issues);
        match mode {
            Mode::Tcp => {
                let http_only = [
                    ("host", r.host.is_some()),
                    ("path", r.path.is_some()),
                    ("path_prefix", r.path_prefix.is_some()),
                    ("methods", !r.methods.is_empty()),
                    ("headers", !r.headers.is_empty()),
                    ("redirect", r.redirect.is_some()),
                    ("strip_prefix", r.strip_prefix),
                    ("set_request_headers", !r.set_request_headers.is_empty()),
                    (
                        "remove_request_headers",
                        !r.remove_request_headers.is_empty(),
                    ),
                    ("set_response_headers", !r.set_response_headers.is_empty()),
                    (
                        "remove_response_headers",
                        !r.remove_response_headers.is_empty(),
                    ),
                    ("request_id", r.request_id),
                ];
                for (key, _) in http_only.iter().filter(|(_, set)| *set) {
                    issues.push(
                        rp.key(key),
                        format!("`{key}` is for mode = \"http\" listeners; TCP routes match sni"),
                    );
                }
            }
            Mode::Http => {
                if r.sni.is_some() {
                    issues.push(
                        rp.key("sni"),
                        "sni is for mode = \"tcp\" listeners; HTTP routes match host",
                    );
                }
            }
        }
        let label = r.label(i);
        if let Some((earlier, c)) = seen.iter().find(|(_, c)| c.covers(&when)) {
            let what = if *c == when {
                "duplicates"
            } else {
                "is shadowed by"
            };
            issues.push(
                rp.clone(),
                format!(
                    "route `{label}` {what} route `{earlier}` before it: every request it matches goes there, so it can never be used"
                ),
            );
        }
        seen.push((label, when));
    }
}

/// The path routes compare: percent-encoded unreserved characters decoded (RFC 3986
/// §6.2.2.2); an error for a path with dot segments, which a backend would resolve after
/// routing. Borrowed when nothing is encoded.
pub(crate) fn routing_path(path: &str) -> Result<Cow<'_, str>, String> {
    let normal: Cow<'_, str> = if path.contains('%') {
        let b = path.as_bytes();
        let mut out = String::with_capacity(path.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Some(c) = hex_pair(b[i + 1], b[i + 2])
                && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            {
                out.push(c as char);
                i += 3;
                continue;
            }
            // Every byte of a valid request target is ASCII.
            out.push(b[i] as char);
            i += 1;
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(path)
    };
    let dotted = normal
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    if dotted {
        return Err(format!(
            "the path `{}` has dot segments (`.` or `..`)",
            path.escape_debug()
        ));
    }
    Ok(normal)
}

/// 128 random bits in hex: unique without coordination between workers or nodes.
pub(crate) fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    Some(d(hi)? << 4 | d(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(toml_text: &str) -> Conditions {
        let r: RouteConfig = toml::from_str(toml_text).unwrap();
        let mut issues = Issues::default();
        let c = Conditions::parse(&r, &KeyPath::root("r"), &mut issues);
        assert!(issues.0.is_empty(), "{issues:?}");
        c
    }

    #[test]
    fn hosts_match_exactly_or_by_suffix() {
        let exact = HostPattern::parse("API.example.com").unwrap();
        assert!(exact.matches("api.EXAMPLE.com"));
        assert!(!exact.matches("x.api.example.com"));
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com") && wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com") && !wild.matches("badexample.com"));
        assert_eq!(host_only("Api.example.com.:8080"), "Api.example.com");
        assert_eq!(host_only("[::1]:80"), "[::1]");
        for bad in ["", "*.", "a..b", "http://a", "a:80", "*", "a.*.com"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn routing_paths_decode_unreserved_and_refuse_dot_segments() {
        assert_eq!(routing_path("/%61pi/%7Eme").unwrap(), "/api/~me");
        assert_eq!(routing_path("/a%2Fb%20c").unwrap(), "/a%2Fb%20c");
        assert!(matches!(
            routing_path("/plain"),
            Ok(Cow::Borrowed("/plain"))
        ));
        for dotted in ["/a/../admin", "/a/./b", "/a/%2e%2E/admin", "/..", "/a/."] {
            assert_eq!(
                routing_path(dotted).unwrap_err(),
                format!("the path `{dotted}` has dot segments (`.` or `..`)")
            );
        }
        assert_eq!(routing_path("/a/..b/c.").unwrap(), "/a/..b/c.");
    }

    #[test]
    fn covers_finds_shadowed_routes() {
        let any = conditions("pool = \"p\"");
        let api = conditions("path_prefix = \"/api\"\npool = \"p\"");
        let api_v1 = conditions("path_prefix = \"/api/v1\"\nmethods = [\"GET\"]\npool = \"p\"");
        let host = conditions("host = \"*.example.com\"\npool = \"p\"");
        let one_host = conditions("host = \"a.example.com\"\npath = \"/api/x\"\npool = \"p\"");
        assert!(any.covers(&api) && api.covers(&api_v1) && !api_v1.covers(&api));
        assert!(host.covers(&one_host) && !one_host.covers(&host));
        assert!(!api.covers(&host));
        let get = conditions("methods = [\"GET\", \"HEAD\"]\npool = \"p\"");
        assert!(get.covers(&api_v1) && !get.covers(&api));
    }

    #[test]
    fn stripping_keeps_the_path_rooted() {
        let e = Edits {
            strip: Some("/api".into()),
            ..Edits::default()
        };
        assert_eq!(e.rewrite_path("/api/users"), "/users");
        assert_eq!(e.rewrite_path("/api"), "/");
        assert_eq!(e.rewrite_path("/apix"), "/x");
        assert_eq!(e.rewrite_path("/other"), "/other");
    }
}

/// Fuzz target: no spelling of a path reaches a route its plain form would not, and no
/// path that a WHATWG URL parser (the `url` crate, what browsers and many frameworks use)
/// resolves through dot segments gets past [`routing_path`].
#[cfg(test)]
mod fuzz {
    use rand::Rng;
    use rand::rngs::StdRng;
    use testkit::fuzz::Fuzz;

    use super::routing_path;

    const UNRESERVED: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
    const OTHERS: [&str; 6] = ["%2F", "%20", "!", ";", "%25", "@"];

    /// A path of random segments (now and then `.` or `..`), plain.
    fn plain(rng: &mut StdRng) -> String {
        let mut path = String::new();
        for _ in 0..rng.random_range(1..6) {
            path.push('/');
            match rng.random_range(0..10) {
                0 => path.push('.'),
                1 => path.push_str(".."),
                _ => {
                    for _ in 0..rng.random_range(0..6) {
                        if rng.random_range(0..8) == 0 {
                            path.push_str(OTHERS[rng.random_range(0..OTHERS.len())]);
                        } else {
                            let c = UNRESERVED[rng.random_range(0..UNRESERVED.len())];
                            path.push(c as char);
                        }
                    }
                }
            }
        }
        path
    }

    /// `path` with some unreserved characters percent-encoded, in either case of hex.
    fn respelt(rng: &mut StdRng, path: &str) -> String {
        let mut out = String::new();
        for c in path.chars() {
            if UNRESERVED.contains(&(c as u8)) && rng.random_range(0..3) == 0 {
                let hex = format!("%{:02X}", c as u8);
                out.push_str(&if rng.random() {
                    hex
                } else {
                    hex.to_lowercase()
                });
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn no_spelling_of_a_path_routes_otherwise() {
        let mut fuzz = Fuzz::from_env("route::no_spelling_of_a_path_routes_otherwise");
        let mut rng = fuzz.rng();
        while fuzz.next_case() {
            let plain = plain(&mut rng);
            let spelt = respelt(&mut rng, &plain);
            let (a, b) = (routing_path(&plain), routing_path(&spelt));
            assert_eq!(
                a.as_deref().map_err(|_| ()),
                b.as_deref().map_err(|_| ()),
                "{}: `{plain}` and `{spelt}` route differently",
                fuzz.at()
            );
            let dotted = plain.split('/').any(|s| s == "." || s == "..");
            assert_eq!(b.is_err(), dotted, "{}: `{spelt}`", fuzz.at());
            // A WHATWG parser resolves dot segments, %2e spellings included: whatever it
            // would resolve differently must be among the refused.
            let url = url::Url::parse(&format!("http://x{spelt}")).unwrap();
            if let Ok(routed) = &b {
                let resolved = routing_path(url.path()).unwrap();
                assert_eq!(&resolved, routed, "{}: `{spelt}`", fuzz.at());
            }
        }
    }
}
