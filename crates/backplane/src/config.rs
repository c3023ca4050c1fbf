//! The `[backplane]` section: what several lintas nodes share.
//!
//! Absent, every node is on its own with everything embedded. With `redis` set, the nodes
//! that name the same Redis and `prefix` form one cluster: the relay's stream is a Redis
//! Stream and each destination is delivered by one node at a time (a lease of `lease`),
//! taken over by another when that node dies.

use std::time::Duration;

use configkit::{Issues, KeyPath};
use serde::Deserialize;

/// `[backplane]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackplaneConfig {
    /// `redis://host:port/db` (no password inline; use `password_env`).
    pub redis: String,
    /// Environment variable holding the Redis password, if it needs one.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Namespace of every key; nodes of one cluster share it.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How long a node's hold on a destination lasts without renewal: how soon another
    /// node takes over after a crash.
    #[serde(default = "default_lease", with = "configkit::duration")]
    pub lease: Duration,
}

fn default_prefix() -> String {
    "lintas".into()
}

fn default_lease() -> Duration {
    Duration::from_secs(10)
}

impl BackplaneConfig {
    /// Gathers the section's problems under `at`.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        match self.redis.split_once("://") {
            Some(("redis" | "rediss", rest)) => {
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.contains('@')
                    && authority.split('@').next().is_some_and(|u| u.contains(':'))
                {
                    issues.push(
                        at.key("redis"),
                        "the URL holds a password; remove it and name an environment variable in password_env",
                    );
                }
            }
            _ => issues.push(at.key("redis"), "expected a redis:// or rediss:// URL"),
        }
        if self.prefix.is_empty() {
            issues.push(at.key("prefix"), "needs at least one character");
        }
        if self.lease < Duration::from_millis(300) {
            issues.push(at.key("lease"), "must be at least 300ms");
        }
    }

    /// The URL with the password from the environment, if any.
    pub fn url(&self) -> Result<String, String> {
        let Some(var) = &self.password_env else {
            return Ok(self.redis.clone());
        };
        let password = std::env::var(var)
            .map_err(|_| format!("environment variable {var} (password_env) is not set"))?;
        let (scheme, rest) = self
            .redis
            .split_once("://")
            .unwrap_or(("redis", &self.redis));
        Ok(format!("{scheme}://:{password}@{rest}"))
    }
}
