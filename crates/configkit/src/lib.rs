//! What every service's configuration shares.
//!
//! Services validate their own section without I/O and report [`Issue`]s that carry a
//! [`KeyPath`] (`proxy.listeners[1].pool`), not a position: the binary, which holds the file
//! text, turns the path into `file:line:col`. That keeps the sections plain serde structs
//! and still lets `lintas check` point at the exact field.

use std::fmt;

mod address;
pub use address::Address;

pub use humantime_serde::re::humantime::format_duration;

/// Parses a duration written as in the configuration (`"500ms"`, `"2s"`, `"5m"`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. \"500ms\", \"2s\", \"5m\""))
}

/// The HTTP statuses a check accepts, written `"200-399"` or `"204"`.
///
/// Parsed when the configuration (or an admin API body) is read, so a check holds the
/// range itself and never falls back to a default for a string it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// Lowest accepted status.
    lo: u16,
    /// Highest accepted status (equal to `lo` for a single status).
    hi: u16,
}

impl StatusRange {
    /// 200 to 399: success and redirects, what checks accept unless told otherwise.
    pub const SUCCESS_OR_REDIRECT: Self = Self { lo: 200, hi: 399 };

    /// Whether `status` passes.
    pub fn contains(self, status: u16) -> bool {
        (self.lo..=self.hi).contains(&status)
    }
}

impl Default for StatusRange {
    fn default() -> Self {
        Self::SUCCESS_OR_REDIRECT
    }
}

impl std::str::FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a status range; write \"200-399\" or \"200\"");
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return Err(bad());
        }
        Ok(Self { lo, hi })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl serde::Serialize for StatusRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an RFC 3339 time (`"2026-12-01T02:00:00Z"`) into ms since the Unix epoch.
pub fn parse_time_ms(s: &str) -> Result<i64, String> {
    humantime_serde::re::humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("`{s}` is not a time ({e}); write e.g. \"2026-12-01T02:00:00Z\""))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
}

/// Serde adapter for durations written as `"500ms"`, `"2s"`, `"5m"`.
pub mod duration {
    pub use humantime_serde::{deserialize, serialize};
}

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Where in the TOML document a value lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path of a top-level key.
    pub fn root(key: &str) -> Self {
        Self(vec![Seg::Key(key.into())])
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Key(key.into()));
        Self(v)
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        Self(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem found while validating a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The offending value.
    pub path: KeyPath,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Collects every issue of a validation pass, so the user sees all of them at once.
#[derive(Debug, Default)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: KeyPath, message: impl Into<String>) {
        self.0.push(Issue {
            path,
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse_and_display_as_written() {
        let range: StatusRange = "200-399".parse().unwrap();
        assert_eq!(range, StatusRange::SUCCESS_OR_REDIRECT);
        assert_eq!(range.to_string(), "200-399");
        assert!(range.contains(200) && range.contains(399));
        assert!(!range.contains(199) && !range.contains(400));
        let single: StatusRange = " 204 ".parse().unwrap();
        assert_eq!(single.to_string(), "204");
        assert!(single.contains(204) && !single.contains(205));
        for bad in ["399-200", "abc", "600", "99-200", "200,204", ""] {
            assert_eq!(
                bad.parse::<StatusRange>(),
                Err(format!(
                    "`{bad}` is not a status range; write \"200-399\" or \"200\""
                ))
            );
        }
    }

    #[test]
    fn path_displays_like_toml_access() {
        let p = KeyPath::root("proxy").key("listeners").index(2).key("pool");
        assert_eq!(p.to_string(), "proxy.listeners[2].pool");
    }
}
