//! The `[watch]` section: alert rules, extra targets, maintenance windows and channels.

use std::time::Duration;

use configkit::{Issues, KeyPath};
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
            history_retention: default_history_retention(),
        }
    }
}

/// How a target is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// `GET url`, status in `expect_status`, body containing `body_contains`.
    Http,
    /// A TCP connect to `address`.
    Tcp,
}

/// A target watch checks itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Its name in alerts.
    pub name: String,
    /// http or tcp.
    pub kind: TargetKind,
    /// For http: `http://host:port/path`.
    #[serde(default)]
    pub url: Option<String>,
    /// For tcp: `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    /// Time between checks.
    #[serde(default = "default_interval", with = "configkit::duration")]
    pub interval: Duration,
    /// How long one check may take.
    #[serde(default = "default_timeout", with = "configkit::duration")]
    pub timeout: Duration,
    /// Failed checks in a row that make it down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Passed checks in a row that make it up again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// For http: statuses that pass.
    #[serde(default = "default_expect")]
    pub expect_status: String,
    /// For http: text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
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
fn default_expect() -> String {
    "200-399".into()
}

impl TargetConfig {
    /// What is wrong with the target, each with its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.name.is_empty() || self.name.contains('/') {
            out.push((
                "name",
                "a target needs a name without `/` (names with `/` are the proxy's pool/backend and relay/destination)".to_owned(),
            ));
        }
        match self.kind {
            TargetKind::Http => match &self.url {
                Some(u) if u.starts_with("http://") && u.parse::<http::Uri>().is_ok() => {}
                _ => out.push((
                    "url",
                    "an http target needs url = \"http://host:port/path\"".to_owned(),
                )),
            },
            TargetKind::Tcp => {
                if self.address.as_deref().is_none_or(|a| !a.contains(':')) {
                    out.push((
                        "address",
                        "a tcp target needs address = \"host:port\"".to_owned(),
                    ));
                }
            }
        }
        if let Err(e) = configkit::parse_status_range(&self.expect_status) {
            out.push(("expect_status", e));
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
