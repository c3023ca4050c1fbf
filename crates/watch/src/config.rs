//! The `[watch]` section: alert rules, extra targets, maintenance windows and channels.

use std::time::Duration;

use configkit::{Issues, KeyPath, StatusRange};
use serde::{Deserialize, Serialize};

/// `[watch]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Reminder cadence while a target is down (the users' 10 s).
    #[serde(default = "default_repeat", with = "configkit::duration")]
    pub repeat: Duration,
    /// This many state changes within `flap_window` make a target flapping.
    #[serde(default = "default_flap_changes")]
    pub flap_changes: usize,
    /// The flapping window; a flapping target must hold still this long to settle.
    #[serde(default = "default_flap_window", with = "configkit::duration")]
    pub flap_window: Duration,
    /// Print alerts on standard output too.
    #[serde(default)]
    pub console: bool,
    /// Targets checked by watch itself (proxy backends and relay destinations are watched
    /// without being listed).
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Times when alerts for some targets are not sent.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceConfig>,
    /// JSON POSTs of every alert.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// The Telegram bot: alerts to registered users, commands.
    #[serde(default)]
    pub telegram: Option<TelegramConfig>,
    /// Alerts by email to registered users and `to`.
    #[serde(default)]
    pub email: Option<EmailConfig>,
    /// How often host metrics are sampled.
    #[serde(default = "default_metrics_interval", with = "configkit::duration")]
    pub metrics_interval: Duration,
    /// How long samples are kept (in memory).
    #[serde(default = "default_metrics_retention", with = "configkit::duration")]
    pub metrics_retention: Duration,
    /// The stored averages of host metrics: [`crate::metrics::TIERS`], not read from the
    /// file. Tests shorten the buckets to seconds so a restart can be shown in seconds
    /// rather than minutes.
    #[doc(hidden)]
    #[serde(skip_deserializing, default = "default_metrics_tiers")]
    pub metrics_tiers: Vec<crate::metrics::Tier>,
    /// How long state changes and the alert log are kept in the store.
    #[serde(default = "default_history_retention", with = "configkit::duration")]
    pub history_retention: Duration,
}

fn default_history_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_metrics_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_metrics_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_metrics_tiers() -> Vec<crate::metrics::Tier> {
    crate::metrics::TIERS.to_vec()
}

/// `[watch.telegram]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramConfig {
    /// Environment variable holding the bot token (from @BotFather).
    pub token_env: String,
    /// The Bot API's base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Chat ids that are admins from the start (others become admins by `/approve ID admin`).
    #[serde(default)]
    pub admins: Vec<i64>,
    /// Whether a stranger's registration waits for an admin (the default) or is let in.
    #[serde(default)]
    pub registration: Registration,
    /// Messages a chat may send in a burst; beyond it the bot says "slow down" once and
    /// ignores the chat until its allowance refills.
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
    /// How fast a chat's allowance refills, in messages per minute.
    #[serde(default = "default_rate_per_minute")]
    pub rate_per_minute: u32,
}

/// Who the bot serves after `/start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// New people wait for an admin's `/approve`; until then they get `/help` only.
    #[default]
    Approval,
    /// Anyone who registers gets alerts and `/status` (for a bot whose link is private).
    Open,
}

fn default_api_url() -> String {
    "https://api.telegram.org".into()
}
fn default_rate_burst() -> u32 {
    10
}
fn default_rate_per_minute() -> u32 {
    20
}

/// `[watch.email]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server: `smtp://host:port` (plain), `smtp://host:587?tls=required` (STARTTLS) or
    /// `smtps://host:465`; no password inline.
    pub smtp: String,
    /// SMTP user name, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Sender address.
    pub from: String,
    /// Who gets every alert besides registered users.
    #[serde(default)]
    pub to: Vec<String>,
}

fn default_repeat() -> Duration {
    Duration::from_secs(10)
}
fn default_flap_changes() -> usize {
    6
}
fn default_flap_window() -> Duration {
    Duration::from_secs(120)
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            repeat: default_repeat(),
            flap_changes: default_flap_changes(),
            flap_window: default_flap_window(),
            console: false,
            targets: Vec::new(),
            maintenance: Vec::new(),
            webhooks: Vec::new(),
            telegram: None,
            email: None,
            metrics_interval: default_metrics_interval(),
            metrics_retention: default_metrics_retention(),
            metrics_tiers: default_metrics_tiers(),
            history_retention: default_history_retention(),
        }
    }
}

/// A target watch checks itself.
///
/// In the file and in the admin API a target is one flat table whose `kind` says which
/// fields it takes (`[[watch.targets]] kind = "http"` with `url`, …); here the kind is a
/// [`TargetCheck`] variant carrying exactly its own fields, so a checker never meets an
/// http target without a URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "TargetTable", into = "TargetTable")]
pub struct TargetConfig {
    /// Its name in alerts.
    pub name: String,
    /// What is checked, and how.
    pub check: TargetCheck,
    /// Time between checks.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Failed checks in a row that make it down.
    pub fall: u32,
    /// Passed checks in a row that make it up again.
    pub rise: u32,
}

/// How a target is checked: `kind` in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetCheck {
    /// `kind = "http"`: `GET url` must answer a status in `expect_status` with a body
    /// containing `body_contains`.
    Http {
        /// `http://host:port/path`.
        url: HttpUrl,
        /// Statuses that pass.
        expect_status: StatusRange,
        /// Text the body must contain.
        body_contains: Option<String>,
    },
    /// `kind = "tcp"`: a TCP connect to `address` must succeed.
    Tcp {
        /// `host:port`.
        address: String,
    },
}

impl TargetCheck {
    /// What is checked, as alerts name it: the URL or the address.
    pub fn detail(&self) -> String {
        match self {
            Self::Http { url, .. } => url.to_string(),
            Self::Tcp { address } => address.clone(),
        }
    }
}

/// A plain-HTTP URL, checked when it is read: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(http::Uri);

impl HttpUrl {
    /// The host to connect to.
    pub fn host(&self) -> &str {
        self.0.host().unwrap_or_default()
    }

    /// The port to connect to (80 when the URL has none).
    pub fn port(&self) -> u16 {
        self.0.port_u16().unwrap_or(80)
    }

    /// `host[:port]` as written, for the `Host` header.
    pub fn authority(&self) -> &str {
        self.0.authority().map_or("", |a| a.as_str())
    }

    /// Path and query, `/` when the URL has none.
    pub fn path_and_query(&self) -> &str {
        self.0.path_and_query().map_or("/", |p| p.as_str())
    }
}

impl std::str::FromStr for HttpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(Self(uri)),
            _ => Err(format!(
                "`{s}` is not an http URL; write url = \"http://host:port/path\""
            )),
        }
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How a target is checked, as written: the value of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum TargetKind {
    /// [`TargetCheck::Http`].
    Http,
    /// [`TargetCheck::Tcp`].
    Tcp,
}

/// A target as written in the file and the admin API: one flat table, every kind's fields
/// optional, turned into a [`TargetConfig`] (or refused, naming the field) as it is read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    name: String,
    kind: TargetKind,
    #[serde(default)]
    url: Option<HttpUrl>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default = "default_interval", with = "configkit::duration")]
    interval: Duration,
    #[serde(default = "default_timeout", with = "configkit::duration")]
    timeout: Duration,
    #[serde(default = "default_fall")]
    fall: u32,
    #[serde(default = "default_rise")]
    rise: u32,
    #[serde(default)]
    expect_status: Option<StatusRange>,
    #[serde(default)]
    body_contains: Option<String>,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}

impl TryFrom<TargetTable> for TargetConfig {
    type Error = String;

    /// Refuses a kind's missing field and another kind's field, as `field: what to do`.
    fn try_from(t: TargetTable) -> Result<Self, String> {
        let check = match t.kind {
            TargetKind::Http => {
                if t.address.is_some() {
                    return Err("address: an http target is checked at its url; remove address or write kind = \"tcp\"".to_owned());
                }
                let Some(url) = t.url else {
                    return Err(
                        "url: an http target needs url = \"http://host:port/path\"".to_owned()
                    );
                };
                TargetCheck::Http {
                    url,
                    expect_status: t.expect_status.unwrap_or_default(),
                    body_contains: t.body_contains,
                }
            }
            TargetKind::Tcp => {
                let http_only = [
                    ("url", t.url.is_some()),
                    ("expect_status", t.expect_status.is_some()),
                    ("body_contains", t.body_contains.is_some()),
                ];
                if let Some((field, _)) = http_only.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "{field}: only http targets take {field}; remove it or write kind = \"http\""
                    ));
                }
                match t.address {
                    Some(address) if address.contains(':') => TargetCheck::Tcp { address },
                    _ => {
                        return Err(
                            "address: a tcp target needs address = \"host:port\"".to_owned()
                        );
                    }
                }
            }
        };
        Ok(Self {
            name: t.name,
            check,
            interval: t.interval,
            timeout: t.timeout,
            fall: t.fall,
            rise: t.rise,
        })
    }
}

impl From<TargetConfig> for TargetTable {
    fn from(t: TargetConfig) -> Self {
        let (kind, url, address, expect_status, body_contains) = match t.check {
            TargetCheck::Http {
                url,
                expect_status,
                body_contains,
            } => (
                TargetKind::Http,
                Some(url),
                None,
                Some(expect_status),
                body_contains,
            ),
            TargetCheck::Tcp { address } => (TargetKind::Tcp, None, Some(address), None, None),
        };
        Self {
            name: t.name,
            kind,
            url,
            address,
            interval: t.interval,
            timeout: t.timeout,
            fall: t.fall,
            rise: t.rise,
            expect_status,
            body_contains,
        }
    }
}

impl TargetConfig {
    /// Reads a target the admin API stored. Targets stored before kinds were typed carry
    /// every kind's fields (a tcp target has `"url": null` and `"expect_status":
    /// "200-399"`), so another kind's fields are dropped here rather than refused.
    pub fn from_stored(json: &str) -> Result<Self, String> {
        let mut t: TargetTable = serde_json::from_str(json).map_err(|e| e.to_string())?;
        match t.kind {
            TargetKind::Http => t.address = None,
            TargetKind::Tcp => {
                t.url = None;
                t.expect_status = None;
                t.body_contains = None;
            }
        }
        Self::try_from(t)
    }

    /// What is wrong with the target beyond its shape, each with its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.name.is_empty() || self.name.contains('/') {
            out.push((
                "name",
                "a target needs a name without `/` (names with `/` are the proxy's pool/backend and relay/destination)".to_owned(),
            ));
        }
        if self.fall == 0 || self.rise == 0 {
            out.push(("fall", "fall and rise must be at least 1".to_owned()));
        }
        if self.timeout.is_zero() || self.interval.is_zero() {
            out.push((
                "interval",
                "interval and timeout must be above zero".to_owned(),
            ));
        }
        out
    }
}

/// A maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Target names it covers (`*` matches anything: `web/*`).
    pub targets: String,
    /// Start, RFC 3339 (`2026-12-01T02:00:00Z`).
    pub from: String,
    /// End, RFC 3339.
    pub until: String,
}

/// A webhook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host:port/path` receiving `POST` with the alert as JSON.
    pub url: String,
}

impl WatchConfig {
    /// Gathers the section's problems under `at`.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.repeat < Duration::from_millis(100) {
            issues.push(at.key("repeat"), "must be at least 100ms");
        }
        if self.flap_changes < 2 {
            issues.push(at.key("flap_changes"), "must be at least 2");
        }
        for (i, t) in self.targets.iter().enumerate() {
            let here = at.key("targets").index(i);
            for (key, message) in t.problems() {
                issues.push(here.key(key), message);
            }
            if self.targets[..i].iter().any(|o| o.name == t.name) {
                issues.push(
                    here.key("name"),
                    format!("target `{}` is declared twice", t.name),
                );
            }
        }
        for (i, m) in self.maintenance.iter().enumerate() {
            let here = at.key("maintenance").index(i);
            for (key, value) in [("from", &m.from), ("until", &m.until)] {
                if let Err(e) = configkit::parse_time_ms(value) {
                    issues.push(here.key(key), e);
                }
            }
        }
        if let Some(t) = &self.telegram {
            let here = at.key("telegram");
            for (key, value) in [
                ("rate_burst", t.rate_burst),
                ("rate_per_minute", t.rate_per_minute),
            ] {
                if value == 0 {
                    issues.push(here.key(key), "must be at least 1");
                }
            }
        }
        if let Some(e) = &self.email {
            let here = at.key("email");
            if !(e.smtp.starts_with("smtp://") || e.smtp.starts_with("smtps://")) {
                issues.push(
                    here.key("smtp"),
                    "expected smtp://host:port or smtps://host:port",
                );
            } else if e
                .smtp
                .split("://")
                .nth(1)
                .is_some_and(|r| r.split('/').next().is_some_and(|a| a.contains('@')))
            {
                issues.push(
                    here.key("smtp"),
                    "no credentials in the URL; use username and password_env",
                );
            }
            for (key, addr) in
                std::iter::once(("from", &e.from)).chain(e.to.iter().map(|t| ("to", t)))
            {
                if !crate::bot::valid_email(addr) {
                    issues.push(here.key(key), format!("`{addr}` is not an email address"));
                }
            }
        }
        if self.metrics_interval < Duration::from_millis(100) {
            issues.push(at.key("metrics_interval"), "must be at least 100ms");
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            if !w.url.starts_with("http://") || w.url.parse::<http::Uri>().is_err() {
                issues.push(
                    at.key("webhooks").index(i).key("url"),
                    "expected http://host:port/path",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stored_in_the_untyped_shape_still_load() {
        let tcp = r#"{"name":"db","kind":"tcp","url":null,"address":"127.0.0.1:5432","interval":"100ms","timeout":"100ms","fall":1,"rise":1,"expect_status":"200-399","body_contains":null}"#;
        let http = r#"{"name":"site","kind":"http","url":"http://127.0.0.1:8080/health","address":null,"interval":"5s","timeout":"2s","fall":3,"rise":2,"expect_status":"204","body_contains":"ok"}"#;
        assert_eq!(
            TargetConfig::from_stored(tcp),
            Ok(TargetConfig {
                name: "db".into(),
                check: TargetCheck::Tcp {
                    address: "127.0.0.1:5432".into()
                },
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(100),
                fall: 1,
                rise: 1,
            })
        );
        let site = TargetConfig::from_stored(http).expect("http target");
        assert_eq!(
            site.check,
            TargetCheck::Http {
                url: "http://127.0.0.1:8080/health".parse().expect("url"),
                expect_status: "204".parse().expect("range"),
                body_contains: Some("ok".into()),
            }
        );
        assert_eq!(
            serde_json::to_string(&site).expect("json"),
            r#"{"name":"site","kind":"http","url":"http://127.0.0.1:8080/health","address":null,"interval":"5s","timeout":"2s","fall":3,"rise":2,"expect_status":"204","body_contains":"ok"}"#,
            "written in the flat shape the admin API has always shown"
        );
    }

    #[test]
    fn a_target_takes_only_its_kinds_fields() {
        let refused = |json: &str| {
            serde_json::from_str::<TargetConfig>(json)
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            refused(r#"{"name":"s","kind":"http"}"#),
            "url: an http target needs url = \"http://host:port/path\""
        );
        assert_eq!(
            refused(r#"{"name":"s","kind":"http","url":"ftp://x/"}"#),
            "`ftp://x/` is not an http URL; write url = \"http://host:port/path\" at line 1 column 43"
        );
        assert_eq!(
            refused(r#"{"name":"s","kind":"http","url":"http://x/","address":"x:1"}"#),
            "address: an http target is checked at its url; remove address or write kind = \"tcp\""
        );
        assert_eq!(
            refused(r#"{"name":"s","kind":"tcp","address":"x:1","body_contains":"ok"}"#),
            "body_contains: only http targets take body_contains; remove it or write kind = \"http\""
        );
        assert_eq!(
            refused(r#"{"name":"s","kind":"tcp","address":"x"}"#),
            "address: a tcp target needs address = \"host:port\""
        );
    }
}
