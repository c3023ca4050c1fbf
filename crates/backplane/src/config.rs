//! The `[backplane]` section: what several lintas nodes share.
//!
//! Absent, every node is on its own with everything embedded. With `redis` set, the nodes
//! that name the same Redis and `prefix` form one cluster: the relay's stream is a Redis
//! Stream and each destination is delivered by one node at a time (a lease of `lease`),
//! taken over by another when that node dies.

use std::path::PathBuf;
use std::time::Duration;

use configkit::{Issues, KeyPath};
use serde::Deserialize;

use crate::BackplaneError;

/// `[backplane]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackplaneConfig {
    /// `redis://host:port/db` (no password inline; use `password_env`).
    pub redis: String,
    /// Environment variable holding the Redis password, if it needs one.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PEM file of the authority that signed the Redis server's certificate, for a
    /// `rediss://` URL to a server with a private CA; without it the system's roots are
    /// trusted.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
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
        if self.tls_ca_file.is_some() && !self.redis.starts_with("rediss://") {
            issues.push(
                at.key("tls_ca_file"),
                "only a rediss:// URL uses TLS; change the URL to rediss:// or remove tls_ca_file",
            );
        }
        if self.prefix.is_empty() {
            issues.push(at.key("prefix"), "needs at least one character");
        }
        if self.lease < Duration::from_millis(300) {
            issues.push(at.key("lease"), "must be at least 300ms");
        }
    }

    /// A client for the configured Redis: the password from `password_env` (set as it is,
    /// never spliced into the URL), and for `rediss://` TLS trusting `tls_ca_file` or the
    /// system's roots. The error names the setting to fix.
    pub fn client(&self) -> Result<redis::Client, BackplaneError> {
        let password = match &self.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| BackplaneError::Config {
                key: "backplane.password_env",
                message: format!(
                    "environment variable {var} is not set; set it to the Redis password"
                ),
            })?),
            None => None,
        };
        let info = connection_info(&self.redis, password)?;
        let client = match &self.tls_ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| BackplaneError::Config {
                    key: "backplane.tls_ca_file",
                    message: format!("cannot read {}: {e}", path.display()),
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certs)
            }
            None => redis::Client::open(info),
        };
        client.map_err(bad_url)
    }
}

fn bad_url(e: redis::RedisError) -> BackplaneError {
    BackplaneError::Config {
        key: "backplane.redis",
        message: format!("{e}; write it as redis://host:port/db or rediss://host:port/db"),
    }
}

/// The connection settings of `url`, with `password` (when given) replacing any in it.
fn connection_info(
    url: &str,
    password: Option<String>,
) -> Result<redis::ConnectionInfo, BackplaneError> {
    let mut info = redis::IntoConnectionInfo::into_connection_info(url).map_err(bad_url)?;
    if password.is_some() {
        info.redis.password = password;
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_used_as_it_is_whatever_it_holds() {
        let password = "p@ss/w:rd#?%".to_owned();
        let info = connection_info("rediss://redis.example:6380/2", Some(password.clone()))
            .expect("a valid URL");
        assert_eq!(info.redis.password, Some(password));
        assert_eq!(info.redis.db, 2);
        assert_eq!(
            info.addr.to_string(),
            "redis.example:6380",
            "the password must not change where lintas connects"
        );
    }

    #[test]
    fn tls_ca_file_needs_a_rediss_url() {
        let cfg = BackplaneConfig {
            redis: "redis://127.0.0.1:6379".into(),
            password_env: None,
            tls_ca_file: Some("/etc/ssl/redis-ca.pem".into()),
            prefix: default_prefix(),
            lease: default_lease(),
        };
        let mut issues = Issues::default();
        cfg.validate(&KeyPath::root("backplane"), &mut issues);
        let found: Vec<(String, &str)> = issues
            .0
            .iter()
            .map(|i| (i.path.to_string(), i.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [(
                "backplane.tls_ca_file".to_owned(),
                "only a rediss:// URL uses TLS; change the URL to rediss:// or remove tls_ca_file"
            )]
        );
    }
}
