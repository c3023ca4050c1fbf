//! The `[admin]` section: where the control plane listens and who may use it.
//!
//! The password is never written in the file: either `password_env` names an environment
//! variable that holds it (hashed at start, see [`crate::Auth::from_config`]), or
//! `password_hash` holds an argon2 PHC string made by `lintas hash-password`.

use std::net::SocketAddr;

use configkit::{Issues, KeyPath};
use serde::Deserialize;

/// The whole `[admin]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; loopback by default so the control plane is not exposed
    /// until someone decides it should be.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// User name expected in HTTP basic auth.
    #[serde(default = "default_user")]
    pub user: String,
    /// Name of an environment variable holding the plain password (kept out of the file).
    pub password_env: Option<String>,
    /// An argon2 PHC string (`$argon2id$v=19$...`), for deployments that keep no plain
    /// password anywhere.
    pub password_hash: Option<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

fn default_user() -> String {
    "admin".into()
}

impl AdminConfig {
    /// Checks what serde cannot, without I/O (the environment variable is read later, by
    /// [`crate::Auth::from_config`]); `at` is the path of the `[admin]` section.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.user.is_empty() {
            issues.push(at.key("user"), "user must not be empty");
        } else if self.user.contains(':') {
            issues.push(
                at.key("user"),
                "HTTP basic auth cannot carry a user name containing `:`; choose another name",
            );
        }
        match (&self.password_env, &self.password_hash) {
            (None, None) => issues.push(
                at.key("password_env"),
                "the admin listener needs a password: set password_env to the name of an \
                 environment variable holding it, or password_hash to the output of \
                 `lintas hash-password`",
            ),
            (Some(_), Some(_)) => issues.push(
                at.key("password_hash"),
                "set either password_env or password_hash, not both",
            ),
            (Some(env), None) => {
                if env.is_empty() || env.contains('=') || env.contains('\0') {
                    issues.push(
                        at.key("password_env"),
                        format!("`{env}` is not an environment variable name"),
                    );
                }
            }
            (None, Some(hash)) => {
                if let Err(e) = check_hash(hash) {
                    issues.push(at.key("password_hash"), e);
                }
            }
        }
    }

    /// Every address this section binds, with the key path that names it (for port conflict
    /// checks across services).
    pub fn binds(&self, at: &KeyPath) -> Vec<(SocketAddr, KeyPath)> {
        vec![(self.listen, at.key("listen"))]
    }
}

/// Checks that `hash` is an argon2 PHC string lintas can verify against, so a typo is reported
/// at start rather than as every login failing.
pub(crate) fn check_hash(hash: &str) -> Result<(), String> {
    crate::auth::HashedPassword::parse(hash).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_of(toml_text: &str) -> Vec<String> {
        let cfg: AdminConfig = toml::from_str(toml_text).unwrap();
        let mut issues = Issues::default();
        cfg.validate(&KeyPath::root("admin"), &mut issues);
        issues
            .0
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn defaults_listen_on_loopback_9000_as_admin() {
        let cfg: AdminConfig = toml::from_str("password_env = \"PW\"").unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.user, "admin");
        assert!(issues_of("password_env = \"PW\"").is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<AdminConfig>("password = \"x\"").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `password`"),
            "{err}"
        );
    }

    #[test]
    fn exactly_one_password_source() {
        assert_eq!(
            issues_of(""),
            vec![
                "admin.password_env: the admin listener needs a password: set password_env to \
                 the name of an environment variable holding it, or password_hash to the \
                 output of `lintas hash-password`"
            ]
        );
        let hash = crate::Auth::hash_password("pw");
        assert_eq!(
            issues_of(&format!("password_env = \"PW\"\npassword_hash = '{hash}'")),
            vec!["admin.password_hash: set either password_env or password_hash, not both"]
        );
        assert!(issues_of(&format!("password_hash = '{hash}'")).is_empty());
    }

    #[test]
    fn reports_bad_hash_user_and_env_name() {
        let got = issues_of("user = \"a:b\"\npassword_hash = \"secret\"");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            "admin.user: HTTP basic auth cannot carry a user name containing `:`; choose another name"
        );
        assert!(
            got[1].starts_with("admin.password_hash: password_hash is not a PHC string"),
            "{got:?}"
        );
        assert_eq!(
            issues_of("user = \"\"\npassword_env = \"\""),
            vec![
                "admin.user: user must not be empty",
                "admin.password_env: `` is not an environment variable name",
            ]
        );
    }

    #[test]
    fn non_argon2_phc_strings_are_refused() {
        let got = issues_of("password_hash = '$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo'");
        assert_eq!(
            got,
            vec![
                "admin.password_hash: password_hash is a `pbkdf2-sha256` hash; lintas verifies \
                 argon2 hashes only: make one with `lintas hash-password`"
            ]
        );
    }
}
