//! The `allow_anonymous`, `users` and `acl` keys of `[mqtt]`, checked without I/O and built
//! into an [`Auth`] and an [`Acl`] by the same pass, so what validation accepts is exactly
//! what the broker can run.

use configkit::{Issues, KeyPath};
use serde::Deserialize;

use super::acl::{Acl, Template};
use super::login::Auth;

/// Who may connect and what they may do. The broker keeps these three keys in its own
/// section (`mqtt.users`, not `mqtt.auth.users`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether a client without a user name may connect; off, so that a broker is closed
    /// until someone opens it.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// The user names clients may connect with, each with its password's hash.
    #[serde(default)]
    pub users: Vec<User>,
    /// Access rules; none means every client that connected may do anything.
    #[serde(default)]
    pub acl: Vec<AclRule>,
}

/// One user clients may connect as.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user name of CONNECT, compared exactly.
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$...`), from `lintas hash-password`: only the
    /// hash is kept, so the file does not hold the password.
    pub password_hash: String,
}

/// One access rule, as Mosquitto's `topic` (fixed filter) and `pattern` (`%u`, `%c`) lines.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// The user the rule is for; none: every client, anonymous ones included.
    #[serde(default)]
    pub user: Option<String>,
    /// A topic filter; `%u` and `%c` are replaced by the client's user name and client
    /// identifier.
    pub topic: String,
    /// What the rule allows, or `deny`.
    pub access: RuleAccess,
}

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAccess {
    /// Subscribe to what the filter covers.
    Read,
    /// Publish to what the filter matches.
    Write,
    /// Both.
    ReadWrite,
    /// Nothing the filter touches, whatever other rules allow.
    Deny,
}

impl AuthConfig {
    /// Reports every problem at its key path under `at` (the `[mqtt]` section): a user
    /// without a name or declared twice, a hash lintas cannot verify against, a rule whose
    /// filter is invalid or that names an undeclared user, and a configuration no client can
    /// connect with.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        self.compile(at, issues);
    }

    /// The checker and the rules, or every problem [`validate`](Self::validate) reports.
    pub fn build(&self, at: &KeyPath) -> Result<(Auth, Acl), Issues> {
        let mut issues = Issues::default();
        let built = self.compile(at, &mut issues);
        if issues.0.is_empty() {
            Ok(built)
        } else {
            Err(issues)
        }
    }

    /// Builds what is valid and reports the rest.
    fn compile(&self, at: &KeyPath, issues: &mut Issues) -> (Auth, Acl) {
        if !self.allow_anonymous && self.users.is_empty() {
            issues.push(
                at.key("allow_anonymous"),
                "no client can connect: declare [[mqtt.users]] (name, password_hash), or set \
                 allow_anonymous = true",
            );
        }
        let mut users = Vec::with_capacity(self.users.len());
        for (i, user) in self.users.iter().enumerate() {
            let here = at.key("users").index(i);
            if user.name.is_empty() {
                issues.push(here.key("name"), "a user needs a name");
            } else if let Some(first) = self.users[..i].iter().position(|u| u.name == user.name) {
                issues.push(
                    here.key("name"),
                    format!(
                        "user `{}` is declared twice (first at {}); keep one",
                        user.name,
                        at.key("users").index(first)
                    ),
                );
            }
            match admin::auth::HashedPassword::parse(&user.password_hash) {
                Ok(hash) => users.push((user.name.as_str(), hash)),
                Err(message) => issues.push(here.key("password_hash"), message),
            }
        }
        let mut rules = Vec::with_capacity(self.acl.len());
        for (i, rule) in self.acl.iter().enumerate() {
            let here = at.key("acl").index(i);
            if let Some(user) = &rule.user
                && !self.users.iter().any(|u| &u.name == user)
            {
                issues.push(
                    here.key("user"),
                    format!(
                        "no user `{user}` in {}: the rule could never apply; declare the user or \
                         fix the name",
                        at.key("users")
                    ),
                );
            }
            match Template::parse(&rule.topic) {
                Ok(topic) => rules.push((rule.user.as_deref(), topic, rule.access)),
                Err(message) => issues.push(here.key("topic"), message),
            }
        }
        (Auth::new(self.allow_anonymous, users), Acl::new(rules))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::PW_HASH;

    fn issues(toml_text: &str) -> Vec<String> {
        let cfg: AuthConfig = toml::from_str(toml_text).expect("the test's TOML parses");
        let mut issues = Issues::default();
        cfg.validate(&KeyPath::root("mqtt"), &mut issues);
        issues
            .0
            .iter()
            .map(|i| format!("{}: {}", i.path, i.message))
            .collect()
    }

    #[test]
    fn a_complete_configuration_has_no_issues_and_builds() {
        let text = format!(
            r#"
            allow_anonymous = true
            users = [{{ name = "alice", password_hash = "{PW_HASH}" }}]
            acl = [
                {{ user = "alice", topic = "a/#", access = "readwrite" }},
                {{ topic = "devices/%u/%c/#", access = "write" }},
                {{ topic = "secret/#", access = "deny" }},
                {{ topic = "x%uy/+", access = "read" }},
            ]
            "#
        );
        assert_eq!(issues(&text), Vec::<String>::new());
        let cfg: AuthConfig = toml::from_str(&text).expect("parses");
        assert!(cfg.build(&KeyPath::root("mqtt")).is_ok());
    }

    #[test]
    fn defaults_are_closed_and_say_how_to_open() {
        let cfg: AuthConfig = toml::from_str("").expect("parses");
        assert_eq!(cfg, AuthConfig::default());
        assert!(!cfg.allow_anonymous);
        assert_eq!(
            issues(""),
            [
                "mqtt.allow_anonymous: no client can connect: declare [[mqtt.users]] (name, \
              password_hash), or set allow_anonymous = true"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_accesses_are_refused() {
        let err = toml::from_str::<AuthConfig>("allow_anonymus = true")
            .expect_err("a misspelt key")
            .to_string();
        assert!(err.contains("unknown field `allow_anonymus`"), "{err}");
        let err = toml::from_str::<AuthConfig>(r#"acl = [{ topic = "a", access = "all" }]"#)
            .expect_err("an unknown access")
            .to_string();
        assert!(err.contains("unknown variant `all`"), "{err}");
    }

    #[test]
    fn user_problems_are_reported_at_their_keys() {
        let text = format!(
            r#"
            users = [
                {{ name = "alice", password_hash = "{PW_HASH}" }},
                {{ name = "", password_hash = "{PW_HASH}" }},
                {{ name = "alice", password_hash = "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA" }},
            ]
            "#
        );
        assert_eq!(
            issues(&text),
            [
                "mqtt.users[1].name: a user needs a name",
                "mqtt.users[2].name: user `alice` is declared twice (first at mqtt.users[0]); keep one",
                "mqtt.users[2].password_hash: password_hash is a `scrypt` hash; lintas verifies \
                 argon2 hashes only: make one with `lintas hash-password`",
            ]
        );
    }

    #[test]
    fn rule_problems_are_reported_at_their_keys() {
        let text = format!(
            r#"
            users = [{{ name = "alice", password_hash = "{PW_HASH}" }}]
            acl = [
                {{ user = "bob", topic = "a", access = "read" }},
                {{ topic = "a/#/b", access = "read" }},
                {{ topic = "a/%u+", access = "write" }},
                {{ topic = "", access = "deny" }},
                {{ topic = "$share/g/a", access = "read" }},
            ]
            "#
        );
        assert_eq!(
            issues(&text),
            [
                "mqtt.acl[0].user: no user `bob` in mqtt.users: the rule could never apply; \
                 declare the user or fix the name",
                "mqtt.acl[1].topic: '#' must be the last level (level 2 of 'a/#/b' is '#')",
                "mqtt.acl[2].topic: '+' must occupy a whole level (level 2 of 'a/%u+')",
                "mqtt.acl[3].topic: the topic filter is empty; a topic needs at least one character",
                "mqtt.acl[4].topic: a rule for a shared subscription never applies: lintas checks \
                 the filter after `$share/{group}/`, so write `a`",
            ]
        );
    }

    #[test]
    fn build_returns_every_issue_validate_reports() {
        let cfg: AuthConfig =
            toml::from_str(r#"acl = [{ topic = "a/#/b", access = "read" }]"#).expect("parses");
        let issues = cfg
            .build(&KeyPath::root("mqtt"))
            .expect_err("the configuration is invalid");
        let paths: Vec<String> = issues.0.iter().map(|i| i.path.to_string()).collect();
        assert_eq!(paths, ["mqtt.allow_anonymous", "mqtt.acl[0].topic"]);
    }
}
