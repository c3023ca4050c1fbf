//! Addresses written as `ip:port` or `host:port`, checked as the file is read.
//!
//! A host name is only checked for shape here (labels of letters, digits, `-` and `_`);
//! resolving it is I/O and belongs to the service that connects.

use std::fmt;
use std::net::SocketAddr;

/// Where to connect: an IP address, or a host name to resolve, with a port (1 to 65535).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// `10.0.0.5:8080`, `[::1]:8080`.
    Ip(SocketAddr),
    /// `app.internal:8080`: resolved by whoever connects.
    Host {
        /// The name as written, without a trailing dot.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Address {
    /// The IP address, when one was written.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(a) => Some(*a),
            Self::Host { .. } => None,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Self {
        Self::Ip(a)
    }
}

impl std::str::FromStr for Address {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "`{s}` is not an address; write ip:port (\"10.0.0.5:8080\", \"[::1]:8080\") or host:port (\"app.internal:8080\")"
            )
        };
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!(
                "`{s}` has no port; write ip:port or host:port, e.g. \"{s}:8080\""
            ));
        };
        let port = parse_port(port).ok_or_else(shape)??;
        if let Some(inner) = host.strip_prefix('[') {
            // Only an IPv6 address is written in brackets.
            return match inner
                .strip_suffix(']')
                .map(str::parse::<std::net::Ipv6Addr>)
            {
                Some(Ok(ip)) => Ok(Self::Ip(SocketAddr::from((ip, port)))),
                _ => Err(format!("`{host}` is not an IPv6 address")),
            };
        }
        if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            return Ok(Self::Ip(SocketAddr::from((ip, port))));
        }
        if host.contains(':') {
            return Err(format!(
                "`{s}` is not an address; write an IPv6 address in brackets, e.g. \"[::1]:8080\""
            ));
        }
        let name = host.strip_suffix('.').unwrap_or(host);
        let labels_ok = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !labels_ok {
            return Err(shape());
        }
        // A name whose last label is all digits is a mistyped IPv4 address, not a host.
        if name
            .rsplit('.')
            .next()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("`{host}` is not an IPv4 address"));
        }
        Ok(Self::Host {
            host: name.to_owned(),
            port,
        })
    }
}

/// `None` when `p` is not digits; `Some(Err)` when it is out of range.
fn parse_port(p: &str) -> Option<Result<u16, String>> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let range = || format!("port {p} is out of range; use 1 to 65535");
    Some(match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(range()),
    })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => a.fmt(f),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str, port: u16) -> Address {
        Address::Host {
            host: h.into(),
            port,
        }
    }

    #[test]
    fn ip_and_host_names_with_ports() {
        for (text, want) in [
            (
                "127.0.0.1:8001",
                Address::Ip("127.0.0.1:8001".parse().unwrap()),
            ),
            ("[::1]:80", Address::Ip("[::1]:80".parse().unwrap())),
            ("app.internal:8080", host("app.internal", 8080)),
            ("app.test.:53", host("app.test", 53)),
            ("localhost:1", host("localhost", 1)),
            ("my_app-2:65535", host("my_app-2", 65535)),
            ("1password.com:443", host("1password.com", 443)),
        ] {
            assert_eq!(text.parse::<Address>(), Ok(want), "{text}");
        }
        assert_eq!(host("app.internal", 8080).to_string(), "app.internal:8080");
    }

    #[test]
    fn refusals_say_what_to_write() {
        for (text, message) in [
            (
                "app.internal",
                "`app.internal` has no port; write ip:port or host:port, e.g. \"app.internal:8080\"",
            ),
            ("app:0", "port 0 is out of range; use 1 to 65535"),
            ("app:99999", "port 99999 is out of range; use 1 to 65535"),
            (
                "127.0.0.1:99999",
                "port 99999 is out of range; use 1 to 65535",
            ),
            (
                "app:http",
                "`app:http` is not an address; write ip:port (\"10.0.0.5:8080\", \"[::1]:8080\") or host:port (\"app.internal:8080\")",
            ),
            (
                "not an address:80",
                "`not an address:80` is not an address; write ip:port (\"10.0.0.5:8080\", \"[::1]:8080\") or host:port (\"app.internal:8080\")",
            ),
            (
                ":80",
                "`:80` is not an address; write ip:port (\"10.0.0.5:8080\", \"[::1]:8080\") or host:port (\"app.internal:8080\")",
            ),
            (
                "a..b:80",
                "`a..b:80` is not an address; write ip:port (\"10.0.0.5:8080\", \"[::1]:8080\") or host:port (\"app.internal:8080\")",
            ),
            ("127.0.0.300:80", "`127.0.0.300` is not an IPv4 address"),
            ("[::g]:80", "`[::g]` is not an IPv6 address"),
            (
                "::1:80",
                "`::1:80` is not an address; write an IPv6 address in brackets, e.g. \"[::1]:8080\"",
            ),
        ] {
            assert_eq!(text.parse::<Address>(), Err(message.to_owned()), "{text}");
        }
    }
}
