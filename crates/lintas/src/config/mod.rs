//! The configuration file: one TOML document, one optional section per service.
//!
//! Loading goes parse → validate → (the services) build. Parsing is serde with
//! `deny_unknown_fields`, so a misspelt key is an error, not a silently ignored line.
//! Every problem is reported in one run, as `file:line:col: key: what`: a syntax error
//! ends reading (nothing after it can be trusted), but a value of the wrong shape does not —
//! it is noted, taken out of the document, and the rest read again, until what is left
//! reads; validation then gathers every problem of what is left, plus what no section can
//! see alone (two services on one port).

mod locate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use admin::AdminConfig;
use backplane::BackplaneConfig;
use configkit::{Issues, KeyPath, Seg};
use hub::HubConfig;
use mqtt::MqttConfig;
use proxy::config::ProxyConfig;
use relay::RelayConfig;
use serde::Deserialize;
use watch::WatchConfig;

pub use locate::{Position, key_at, locate, position};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[admin]`: stats page, metrics and runtime API.
    pub admin: Option<AdminConfig>,
    /// `[proxy]`: the load balancer.
    pub proxy: Option<ProxyConfig>,
    /// `[relay]`: HTTP ingest delivered to SQL databases.
    pub relay: Option<RelayConfig>,
    /// `[mqtt]`: the MQTT 3.1.1 and 5.0 broker.
    pub mqtt: Option<MqttConfig>,
    /// `[hub]`: WebSocket rooms, direct messages, presence and history.
    pub hub: Option<HubConfig>,
    /// `[backplane]`: what the nodes of a cluster share (Redis); absent, the node is alone.
    pub backplane: Option<BackplaneConfig>,
    /// `[watch]`: health monitoring and alerts.
    pub watch: Option<WatchConfig>,
    /// Where this node keeps its state (the relay's stream, the store); relative paths are
    /// taken from the configuration file's directory. Default `lintas-data`.
    pub data_dir: Option<PathBuf>,
}

/// A configuration together with the text it came from, so that errors found later (an
/// address already in use) can still point at a line.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

impl Loaded {
    /// The data directory, resolved against the file's directory.
    pub fn data_dir(&self) -> PathBuf {
        let dir = self
            .config
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("lintas-data"));
        match self.path.parent() {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir,
        }
    }

    /// An error about the value at `key`, positioned in this file.
    pub fn error_at(&self, key: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            problems: vec![Problem::at(&self.text, key, message.into())],
        }
    }
}

/// One thing wrong in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where.
    pub position: Position,
    /// The key, when known.
    pub key: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    fn at(text: &str, key: &KeyPath, message: String) -> Self {
        Self {
            position: locate(text, key),
            key: Some(key.to_string()),
            message,
        }
    }
}

/// Everything wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Its problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: ",
                self.file.display(),
                p.position.line,
                p.position.col
            )?;
            if let Some(k) = &p.key {
                write!(f, "{k}: ")?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        problems: vec![Problem {
            position: Position { line: 1, col: 1 },
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        }],
    })?;
    parse(path, text)
}

/// Parses and validates `text`, naming `path` in errors.
pub fn parse(path: &Path, text: String) -> Result<Loaded, ConfigError> {
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                position: position(&text, offset),
                key: key_at(&text, offset).map(|k| k.to_string()),
                message: e.message().trim().to_string(),
            }],
        }
    })?;
    let (config, mut problems) = read_all(table, &text);
    let issues = validate(&config.config);
    problems.extend(issues.0.into_iter().filter_map(|i| {
        let at = problems_path(&i.path, &config.pruned);
        // A table or array whose content was taken out (now empty, say) is not a problem
        // of its own.
        let consequence = config.taken.iter().any(|t| t.0.starts_with(&at.0));
        (!consequence).then(|| Problem::at(&text, &at, i.message))
    }));
    if !problems.is_empty() {
        problems.sort_by_key(|p| (p.position.line, p.position.col));
        return Err(ConfigError {
            file: path.to_owned(),
            problems,
        });
    }
    Ok(Loaded {
        config: config.config,
        path: path.to_owned(),
        text,
    })
}

/// What [`read_all`] could read, and what it took out to get there.
struct Read {
    config: Config,
    /// Paths taken out, in the file's indexes.
    taken: Vec<KeyPath>,
    /// Array elements taken out: (array path in the file's terms, element index in the
    /// file), so paths found later are told in the file's indexes.
    pruned: Vec<(KeyPath, usize)>,
}

/// Most values of the wrong shape reported before giving up on the rest.
const MAX_SHAPE_PROBLEMS: usize = 50;

/// Reads `table` as a [`Config`], taking out each value serde refuses (noting why) until
/// the rest reads; an empty configuration when nothing is left that reads.
fn read_all(table: toml::Table, text: &str) -> (Read, Vec<Problem>) {
    let mut root = toml::Value::Table(table);
    let mut problems = Vec::new();
    let mut pruned: Vec<(KeyPath, usize)> = Vec::new();
    // Paths taken out so far, in the file's indexes.
    let mut taken: Vec<KeyPath> = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, Config>(root.clone()) {
            Ok(config) => {
                let read = Read {
                    config,
                    pruned,
                    taken,
                };
                return (read, problems);
            }
            Err(e) => {
                let at = key_path(e.path());
                let message = e.inner().message().trim().to_string();
                let in_file = problems_path(&at, &pruned);
                // A field taken out for its shape is missing now: already reported.
                let consequence =
                    missing_field(&message).is_some_and(|key| taken.contains(&in_file.key(key)));
                if !consequence {
                    problems.push(Problem::at(text, &in_file, message));
                }
                taken.push(in_file.clone());
                if at.0.is_empty()
                    || problems.len() >= MAX_SHAPE_PROBLEMS
                    || !take_out(&mut root, &at, &in_file, &mut pruned)
                {
                    let read = Read {
                        config: Config::default(),
                        pruned,
                        taken,
                    };
                    return (read, problems);
                }
            }
        }
    }
}

/// The key serde named in "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(key, _)| key)
}

/// A path as serde_path_to_error gives it, as a [`KeyPath`].
fn key_path(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    KeyPath(
        path.iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect(),
    )
}

/// `at` (in the pruned document's indexes) in the file's: every element taken out before
/// an index of the same array shifts it up by one.
fn problems_path(at: &KeyPath, pruned: &[(KeyPath, usize)]) -> KeyPath {
    let mut out = KeyPath::default();
    for seg in &at.0 {
        match seg {
            Seg::Index(i) => {
                let mut taken: Vec<usize> = pruned
                    .iter()
                    .filter(|(array, _)| *array == out)
                    .map(|(_, i)| *i)
                    .collect();
                taken.sort_unstable();
                let mut index = *i;
                for t in taken {
                    if t <= index {
                        index += 1;
                    }
                }
                out.0.push(Seg::Index(index));
            }
            key => out.0.push(key.clone()),
        }
    }
    out
}

/// Takes the value at `at` out of `root` (`in_file` is the same path in the file's
/// indexes, recorded for array elements); false when there is nothing there to take.
fn take_out(
    root: &mut toml::Value,
    at: &KeyPath,
    in_file: &KeyPath,
    pruned: &mut Vec<(KeyPath, usize)>,
) -> bool {
    let Some((last, parent)) = at.0.split_last() else {
        return false;
    };
    let mut node = root;
    for seg in parent {
        let next = match (node, seg) {
            (toml::Value::Table(t), Seg::Key(k)) => t.get_mut(k),
            (toml::Value::Array(a), Seg::Index(i)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match (node, last) {
        (toml::Value::Table(t), Seg::Key(k)) => t.remove(k).is_some(),
        (toml::Value::Array(a), Seg::Index(i)) if *i < a.len() => {
            a.remove(*i);
            let mut array = in_file.clone();
            if let Some(Seg::Index(original)) = array.0.pop() {
                pruned.push((array, original));
            }
            true
        }
        _ => false,
    }
}

/// Every section's own checks plus the cross-section port check.
fn validate(config: &Config) -> Issues {
    let mut issues = Issues::default();
    let mut binds: Vec<(SocketAddr, KeyPath)> = Vec::new();
    if let Some(a) = &config.admin {
        let at = KeyPath::root("admin");
        a.validate(&at, &mut issues);
        binds.push((a.listen, at.key("listen")));
    }
    if let Some(p) = &config.proxy {
        let at = KeyPath::root("proxy");
        p.validate(&at, &mut issues);
        binds.extend(p.binds(&at));
    }
    if let Some(w) = &config.watch {
        w.validate(&KeyPath::root("watch"), &mut issues);
    }
    if let Some(b) = &config.backplane {
        b.validate(&KeyPath::root("backplane"), &mut issues);
    }
    if let Some(r) = &config.relay {
        let at = KeyPath::root("relay");
        r.validate(&at, &mut issues);
        binds.push((r.listen, at.key("listen")));
    }
    if let Some(m) = &config.mqtt {
        let at = KeyPath::root("mqtt");
        m.validate(&at, &mut issues);
        binds.extend(m.listeners().map(|(key, addr)| (addr, at.key(key))));
    }
    if let Some(h) = &config.hub {
        let at = KeyPath::root("hub");
        h.validate(&at, &mut issues);
        binds.push((h.listen, at.key("listen")));
    }
    for (i, (addr, key)) in binds.iter().enumerate() {
        if addr.port() == 0 {
            continue;
        }
        if let Some((_, first)) = binds[..i]
            .iter()
            .find(|(a, k)| a == addr && !same_section_duplicate(k, key))
        {
            issues.push(
                key.clone(),
                format!("{addr} is also used by {first}; every listener needs its own address"),
            );
        }
    }
    issues
}

/// Duplicates inside `[proxy]` and `[mqtt]` are already reported by their own validation.
fn same_section_duplicate(a: &KeyPath, b: &KeyPath) -> bool {
    a.0.first() == b.0.first()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        parse(Path::new("lintas.toml"), text.to_string())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn syntax_errors_name_file_line_and_column() {
        assert_eq!(
            errors("[proxy]\nlisteners = [\n"),
            "lintas.toml:2:14: unclosed array, expected `]`"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = errors("[proxy.pools.web]\nbackends = []\nstrategy = \"round_robin\"\nretry = 3\n");
        assert_eq!(
            e,
            "lintas.toml:2:12: proxy.pools.web.backends: a pool needs at least one backend\n\
             lintas.toml:4:9: proxy.pools.web.retry: unknown field `retry`, expected one of `strategy`, `hash_key`, `backends`, `health`, `passive`, `queue_size`, `queue_timeout`, `slow_start`"
        );
    }

    /// A missing field takes its whole entry out, and what comes after it is still named by
    /// its place in the file.
    #[test]
    fn every_problem_is_reported_in_one_run() {
        let text = r#"
[proxy.pools.web]
backends = [
    { name = "a", address = "nowhere" },
    { name = "b", address = "127.0.0.1:2", wieght = 2 },
    { name = "b", address = "127.0.0.1:3" },
]
strategy = "fastest"

[[proxy.listeners]]
name = "l0"
listen = "127.0.0.1:1"
pool = "web"

[[proxy.listeners]]
name = "l1"
mode = "http"
listen = "127.0.0.1:1"
pool = "web"
retries = "many"

[[proxy.listeners]]
name = "l2"
mode = "http"
listen = "127.0.0.1:1"
pool = "nope"
"#;
        assert_eq!(
            errors(text),
            "lintas.toml:4:29: proxy.pools.web.backends[0].address: `nowhere` has no port; write ip:port or host:port, e.g. \"nowhere:8080\"\n\
             lintas.toml:5:53: proxy.pools.web.backends[1].wieght: unknown field `wieght`, expected one of `name`, `address`, `weight`, `backup`, `max_connections`\n\
             lintas.toml:6:14: proxy.pools.web.backends[2].name: backend name `b` is used twice in pool `web`\n\
             lintas.toml:8:12: proxy.pools.web.strategy: unknown variant `fastest`, expected one of `round_robin`, `weighted_round_robin`, `least_connections`, `random_two_choices`, `peak_ewma`, `consistent_hash`\n\
             lintas.toml:10:1: proxy.listeners[0]: missing field `mode`\n\
             lintas.toml:20:11: proxy.listeners[1].retries: invalid type: string \"many\", expected u32\n\
             lintas.toml:25:10: proxy.listeners[2].listen: 127.0.0.1:1 is already used by another listener\n\
             lintas.toml:26:8: proxy.listeners[2].pool: no pool named `nope`; defined pools: web"
        );
    }

    #[test]
    fn wrong_types_point_at_the_value() {
        let e = errors(
            "[[proxy.listeners]]\nname = \"l\"\nmode = \"udp\"\nlisten = \"127.0.0.1:1\"\npool = \"p\"\n",
        );
        assert_eq!(
            e,
            "lintas.toml:3:8: proxy.listeners[0].mode: unknown variant `udp`, expected `tcp` or `http`"
        );
    }

    #[test]
    fn validation_problems_name_the_field_in_order() {
        let text = r#"
[admin]
listen = "127.0.0.1:9000"
password_env = "LINTAS_TEST_PW"

[proxy.pools.web]
backends = [{ name = "a", address = "127.0.0.1:8081" }]

[[proxy.listeners]]
name = "web"
mode = "http"
listen = "127.0.0.1:9000"
pool = "nope"
"#;
        assert_eq!(
            errors(text),
            "lintas.toml:12:10: proxy.listeners[0].listen: 127.0.0.1:9000 is also used by admin.listen; every listener needs its own address\n\
             lintas.toml:13:8: proxy.listeners[0].pool: no pool named `nope`; defined pools: web"
        );
    }

    #[test]
    fn mqtt_problems_name_the_field_and_a_shared_port() {
        let text = r#"
[relay]
listen = "127.0.0.1:8088"

[mqtt]
listen = "127.0.0.1:8088"
max_inflight = 0
connect_timeout = "soon"
allow_anonymous = true
"#;
        // A value of the wrong shape does not hide the other problems.
        assert_eq!(
            errors(text),
            "lintas.toml:6:10: mqtt.listen: 127.0.0.1:8088 is also used by relay.listen; every listener needs its own address\n\
             lintas.toml:7:16: mqtt.max_inflight: must be at least 1\n\
             lintas.toml:8:19: mqtt.connect_timeout: invalid value: string \"soon\", expected a duration"
        );
    }

    #[test]
    fn relay_problems_name_the_field() {
        let text = r#"
[relay]
listen = "127.0.0.1:8088"

[[relay.applications]]
name = "shop"

[[relay.destinations]]
name = "db1"
kind = "postgres"
url = "postgres://u:pw@127.0.0.1/x"

[[relay.routes]]
application = "shop"
destination = "db1"
table = "items"
operation = "upsert"
columns = { name = "name" }
keys = ["sku"]
"#;
        assert_eq!(
            errors(text),
            "lintas.toml:5:1: relay.applications[0].key_env: set exactly one of key_env (a variable holding the key) and key_sha256\n\
             lintas.toml:11:7: relay.destinations[0].url: the URL holds a password; give it in password_env (file) or password (admin API)\n\
             lintas.toml:19:8: relay.routes[0].keys: key column `sku` is not a mapped column; map a field to it in columns"
        );
    }

    #[test]
    fn typed_values_are_refused_where_they_are_written() {
        assert_eq!(
            errors("[proxy.pools.web]\nbackends = []\nhash_key = \"ip\"\n"),
            "lintas.toml:2:12: proxy.pools.web.backends: a pool needs at least one backend\n\
             lintas.toml:3:12: proxy.pools.web.hash_key: `ip` is not a hash key; use \"client_ip\", \"header:NAME\" or \"cookie:NAME\""
        );
        assert_eq!(
            errors(
                "[watch]\n\n[[watch.targets]]\nname = \"site\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nexpect_status = \"2xx\"\n"
            ),
            "lintas.toml:7:17: watch.targets[0].expect_status: `2xx` is not a status range; write \"200-399\" or \"200\""
        );
    }

    #[test]
    fn a_backend_address_without_a_port_is_refused_where_it_is_written() {
        assert_eq!(
            errors(
                "[proxy.pools.web]\nbackends = [\n  { name = \"a\", address = \"app.internal\" },\n]\n"
            ),
            "lintas.toml:3:27: proxy.pools.web.backends[0].address: `app.internal` has no port; write ip:port or host:port, e.g. \"app.internal:8080\""
        );
    }

    #[test]
    fn a_target_missing_its_kinds_field_names_the_target_and_the_field() {
        assert_eq!(
            errors("[watch]\n\n[[watch.targets]]\nname = \"site\"\nkind = \"http\"\n"),
            "lintas.toml:3:1: watch.targets[0]: url: an http target needs url = \"http://host:port/path\""
        );
        assert_eq!(
            errors(
                "[watch]\ntargets = [\n  { name = \"db\", kind = \"tcp\", address = \"127.0.0.1:5432\", url = \"http://127.0.0.1:1/\" },\n]\n"
            ),
            "lintas.toml:3:3: watch.targets[0]: url: only http targets take url; remove it or write kind = \"http\""
        );
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../../lintas.example.toml");
        parse(Path::new("lintas.example.toml"), text.to_string()).unwrap();
    }
}
