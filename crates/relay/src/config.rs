//! The `[relay]` section: where ingest listens, how delivery paces itself, and the
//! applications, destinations and routes declared in the file.
//!
//! Objects declared here are written to the store at start and on reload and marked as
//! declared: the admin API shows them but refuses to change them (the file is their source
//! of truth). Objects created through the API live only in the store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use configkit::{Issues, KeyPath};
use serde::{Deserialize, Serialize};

use crate::sql::Operation;

/// `[relay]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Where producers POST records.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted (bytes); larger gets 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Ingest connections served at once; more wait in the kernel's accept queue.
    #[serde(default = "default_ingest_connections")]
    pub max_connections: usize,
    /// A request head must arrive whole within this from its first byte (408 after).
    #[serde(default = "default_head_timeout", with = "configkit::duration")]
    pub head_timeout: Duration,
    /// A connection on which nothing moves for this long is closed.
    #[serde(default = "default_idle_timeout", with = "configkit::duration")]
    pub idle_timeout: Duration,
    /// A request body that stops for this long is refused (408).
    #[serde(default = "default_body_timeout", with = "configkit::duration")]
    pub body_timeout: Duration,
    /// After 5 s, a request body must have averaged at least this many bytes per second
    /// (408 otherwise); 0 turns the check off.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    /// Most records one destination transaction carries.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// First wait after a destination fails; doubles per failure up to `retry_max`.
    #[serde(default = "default_retry_min", with = "configkit::duration")]
    pub retry_min: Duration,
    /// Longest wait between attempts at a destination that is down.
    #[serde(default = "default_retry_max", with = "configkit::duration")]
    pub retry_max: Duration,
    /// How many times a batch may fail while its database answers before its first record
    /// is tried alone and, if that fails again, dead-lettered; failures that say the
    /// database itself is unusable (read-only, no privilege, disk full) never count down to
    /// a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How often an idle destination is pinged, so an outage is noticed (and announced)
    /// before records are waiting for it.
    #[serde(default = "default_heartbeat", with = "configkit::duration")]
    pub heartbeat: Duration,
    /// How long delivery-log rows and dead letters are kept.
    #[serde(default = "default_retention", with = "configkit::duration")]
    pub retention: Duration,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(default = "default_idempotency_window", with = "configkit::duration")]
    pub idempotency_window: Duration,
    /// Key that encrypts destination passwords given through the admin API; default
    /// `data_dir/secret.key`, created on first start.
    #[serde(default)]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// Applications declared in the file.
    #[serde(default)]
    pub applications: Vec<ApplicationDecl>,
    /// Destinations declared in the file.
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
    /// Routes declared in the file.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

impl RelayConfig {
    /// What the ingest listener holds each client to.
    pub fn limits(&self) -> net::Limits {
        net::Limits {
            max_connections: self.max_connections,
            head_timeout: self.head_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
            min_body_rate: self.min_body_rate,
            ..net::Limits::API
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            max_connections: default_ingest_connections(),
            head_timeout: default_head_timeout(),
            idle_timeout: default_idle_timeout(),
            body_timeout: default_body_timeout(),
            min_body_rate: default_min_body_rate(),
            batch_records: default_batch_records(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            max_attempts: default_max_attempts(),
            heartbeat: default_heartbeat(),
            retention: default_retention(),
            idempotency_window: default_idempotency_window(),
            secret_key_file: None,
            applications: Vec::new(),
            destinations: Vec::new(),
            routes: Vec::new(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8088))
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_ingest_connections() -> usize {
    net::Limits::API.max_connections
}
fn default_head_timeout() -> Duration {
    net::Limits::API.head_timeout
}
fn default_idle_timeout() -> Duration {
    net::Limits::API.idle_timeout
}
fn default_body_timeout() -> Duration {
    net::Limits::API.body_timeout
}
fn default_min_body_rate() -> u64 {
    net::Limits::API.min_body_rate
}
fn default_batch_records() -> usize {
    1000
}
fn default_retry_min() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_attempts() -> u32 {
    10
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_idempotency_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// An application declared in the file. Its key comes from the environment (never the file),
/// or as the SHA-256 of the key, so the file holds no secret.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationDecl {
    /// Its name, as routes refer to it.
    pub name: String,
    /// Environment variable holding the API key.
    pub key_env: Option<String>,
    /// Hex SHA-256 of the API key (what `POST /api/relay/applications` stores).
    pub key_sha256: Option<String>,
}

/// Which database a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
    /// SQLite (a file on this node).
    Sqlite,
}

impl Kind {
    /// Its name in files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "postgres" => Some(Self::Postgres),
            "mysql" => Some(Self::Mysql),
            "sqlite" => Some(Self::Sqlite),
            _ => None,
        }
    }

    /// Its SQL dialect.
    pub fn dialect(self) -> crate::sql::Dialect {
        match self {
            Self::Postgres => crate::sql::Dialect::Postgres,
            Self::Mysql => crate::sql::Dialect::Mysql,
            Self::Sqlite => crate::sql::Dialect::Sqlite,
        }
    }

    /// URL schemes a destination of this kind may use.
    fn schemes(self) -> &'static [&'static str] {
        match self {
            Self::Postgres => &["postgres", "postgresql"],
            Self::Mysql => &["mysql", "mariadb"],
            Self::Sqlite => &["sqlite"],
        }
    }
}

/// A destination database, as declared in the file or sent to the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    /// Its name, as routes refer to it.
    pub name: String,
    /// Which database.
    pub kind: Kind,
    /// Connection URL without a password: `postgres://user@host:5432/db?sslmode=verify-full`,
    /// `mysql://user@host:3306/db?ssl-mode=VERIFY_IDENTITY`, `sqlite:///var/lib/app.db`
    /// (see [`crate::destination::options`] for the parameters taken).
    pub url: String,
    /// Environment variable holding the password, if the database needs one. Only in the
    /// configuration file: the admin API refuses it, since whoever holds the API need not
    /// be allowed to read this process's environment.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The password itself — only through the admin API, which stores it encrypted and
    /// never shows it again; the configuration file uses `password_env`.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// Connections lintas keeps to it.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    2
}

impl DestinationSpec {
    /// What is wrong with the spec on its own (names, URL shape), each with the field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(("name", "a destination needs a name".to_owned()));
        }
        match self.url.split_once("://") {
            Some((scheme, _)) if self.kind.schemes().contains(&scheme) => {
                let options = match self.kind {
                    Kind::Postgres => crate::destination::options::postgres(&self.url, None).err(),
                    Kind::Mysql => crate::destination::options::mysql(&self.url, None).err(),
                    Kind::Sqlite => None,
                };
                if let Some(problem) = options {
                    out.push(("url", problem));
                }
            }
            _ => out.push((
                "url",
                format!(
                    "a {} destination's URL starts with {}://",
                    self.kind.as_str(),
                    self.kind.schemes()[0]
                ),
            )),
        }
        if self.max_connections == 0 {
            out.push(("max_connections", "needs at least 1".to_owned()));
        }
        out
    }
}

/// A route: records of one application written to one table of one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The application whose records this route takes.
    pub application: String,
    /// The destination it writes to.
    pub destination: String,
    /// Schema (PostgreSQL) or database (MySQL) of the table; the connection's default if
    /// absent.
    #[serde(default)]
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// insert, upsert, update or delete.
    #[serde(with = "operation")]
    pub operation: Operation,
    /// Record field → table column. Fields not listed are not sent to this destination.
    pub columns: BTreeMap<String, String>,
    /// Columns that identify a row (needed by upsert, update and delete); each must be one
    /// of the mapped columns, and every record must carry its field.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl RouteSpec {
    /// What is wrong with the route on its own, each with the field; the live schema is
    /// checked later, when the destination is reachable.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.columns.is_empty() {
            out.push(("columns", "map at least one field to a column".to_owned()));
        }
        for k in &self.keys {
            if !self.columns.values().any(|c| c == k) {
                out.push((
                    "keys",
                    format!(
                        "key column `{k}` is not a mapped column; map a field to it in columns"
                    ),
                ));
            }
        }
        if self.operation != Operation::Insert && self.keys.is_empty() {
            out.push((
                "keys",
                format!(
                    "{} needs key columns to find rows by",
                    operation::name(self.operation)
                ),
            ));
        }
        if self.operation == Operation::Update
            && self.columns.values().all(|c| self.keys.contains(c))
        {
            out.push((
                "columns",
                "update needs a mapped column besides the keys".to_owned(),
            ));
        }
        out
    }

    /// How messages name the route: `application → destination.table` (routes have no name
    /// of their own, and an id means nothing to whoever reads a log or an error).
    pub fn label(&self) -> String {
        match &self.schema {
            Some(schema) => format!(
                "{} → {}.{schema}.{}",
                self.application, self.destination, self.table
            ),
            None => format!("{} → {}.{}", self.application, self.destination, self.table),
        }
    }

    /// The record fields that feed the key columns.
    pub fn key_fields(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter_map(|k| {
                self.columns
                    .iter()
                    .find(|(_, c)| *c == k)
                    .map(|(f, _)| f.clone())
            })
            .collect()
    }
}

/// Operations as the lowercase words of files and the API.
pub mod operation {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::sql::Operation;

    /// The word for `op`.
    pub fn name(op: Operation) -> &'static str {
        match op {
            Operation::Insert => "insert",
            Operation::Upsert => "upsert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }

    /// Parses [`name`].
    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "insert" => Some(Operation::Insert),
            "upsert" => Some(Operation::Upsert),
            "update" => Some(Operation::Update),
            "delete" => Some(Operation::Delete),
            _ => None,
        }
    }

    /// Serde: as [`name`].
    pub fn serialize<S: Serializer>(op: &Operation, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*op))
    }

    /// Serde: from [`name`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Operation, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown operation `{s}`; expected insert, upsert, update or delete"
            ))
        })
    }
}

impl RelayConfig {
    /// Gathers every problem of the section, with key paths under `at`.
    pub fn validate(&self, at: &KeyPath, issues: &mut Issues) {
        if self.max_body_bytes == 0 {
            issues.push(at.key("max_body_bytes"), "needs at least 1 byte");
        }
        if self.max_connections == 0 {
            issues.push(at.key("max_connections"), "needs at least 1 connection");
        }
        for (key, d) in [
            ("head_timeout", self.head_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d.is_zero() {
                issues.push(at.key(key), "must be above zero");
            }
        }
        if self.batch_records == 0 {
            issues.push(at.key("batch_records"), "needs at least 1 record");
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            issues.push(
                at.key("retry_min"),
                "must be above zero and no longer than retry_max",
            );
        }
        if self.max_attempts == 0 {
            issues.push(at.key("max_attempts"), "needs at least 1 attempt");
        }
        if self.heartbeat.is_zero() {
            issues.push(at.key("heartbeat"), "must be above zero");
        }
        let apps = at.key("applications");
        for (i, app) in self.applications.iter().enumerate() {
            let here = apps.index(i);
            if app.name.trim().is_empty() {
                issues.push(here.key("name"), "an application needs a name");
            }
            if self.applications[..i].iter().any(|o| o.name == app.name) {
                issues.push(
                    here.key("name"),
                    format!("application `{}` is declared twice", app.name),
                );
            }
            match (&app.key_env, &app.key_sha256) {
                (Some(_), None) => {}
                (None, Some(h)) if crate::keys::parse_sha256(h).is_some() => {}
                (None, Some(_)) => issues.push(
                    here.key("key_sha256"),
                    "expected 64 hexadecimal digits (the SHA-256 of the key)",
                ),
                _ => issues.push(
                    here.key("key_env"),
                    "set exactly one of key_env (a variable holding the key) and key_sha256",
                ),
            }
        }
        let dests = at.key("destinations");
        for (i, d) in self.destinations.iter().enumerate() {
            let here = dests.index(i);
            for (field, message) in d.problems() {
                issues.push(here.key(field), message);
            }
            if d.password.is_some() {
                issues.push(
                    here.key("password"),
                    "passwords are not written in the file; name an environment variable in password_env",
                );
            }
            if self.destinations[..i].iter().any(|o| o.name == d.name) {
                issues.push(
                    here.key("name"),
                    format!("destination `{}` is declared twice", d.name),
                );
            }
        }
        let routes = at.key("routes");
        for (i, r) in self.routes.iter().enumerate() {
            let here = routes.index(i);
            for (field, message) in r.problems() {
                issues.push(here.key(field), message);
            }
        }
    }
}
