//! The Redis backplane: several nodes naming the same Redis and `prefix`.
//!
//! - **Streams** (`stream`): Redis Streams with consumer groups, offsets from a counter,
//!   idempotency in the append script. Durability is Redis's: with `appendonly yes` and
//!   `appendfsync always` an acknowledged append survives a Redis crash; with Redis's
//!   defaults it survives lintas crashes but not a Redis one.
//! - **Pub/sub** (`pubsub`): `PUBLISH`, and one subscribing connection per node that
//!   resubscribes after it is lost, fanned out to this node's subscribers.
//! - **Key/value**: plain keys `{prefix}:kv:{key}` with `PX` expiry; compare-and-set in a
//!   script.

mod pubsub;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};

use crate::fanout::Fanout;
use crate::named::Named;
use crate::{
    Backplane, BackplaneConfig, BackplaneError, Kind, Stream, StreamOptions, Subscription,
};

/// If `KEYS[1]` holds `ARGV[1]`: deletes it when `ARGV[2]` is `0`, else sets it to
/// `ARGV[3]`, expiring after `ARGV[4]` ms unless that is `0`. Returns 1 if it did.
const COMPARE_AND_SET: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
elseif ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

/// Longest wait for one connection attempt to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection to Redis is made and remade: a few quick attempts (1 s, then 2 s apart)
/// that each give up after [`CONNECT_TIMEOUT`]. redis-rs's default multiplies the wait by
/// 100 per attempt up to a minute, so a Redis that was down or refused TLS at start kept
/// lintas waiting about five minutes before it said so.
fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_factor(2)
        .set_number_of_retries(2)
        .set_connection_timeout(CONNECT_TIMEOUT)
}

/// 16 random bytes in hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds of `ttl` for a `PX` argument, at least 1 (`PX 0` is an error).
fn px(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// The backplane on one Redis.
pub(crate) struct RedisBackplane {
    conn: ConnectionManager,
    /// Opens the connections streams' feeds read on.
    client: redis::Client,
    prefix: String,
    lease: Duration,
    /// Streams opened so far, so a name opened twice is one stream.
    streams: Named<stream::RedisStream>,
    fanout: Arc<Fanout>,
    pubsub: pubsub::Handle,
    compare_and_set: Script,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackplane {
    /// Connects to the configured Redis; fails (naming it) if it does not answer.
    pub(crate) async fn connect(cfg: &BackplaneConfig) -> Result<Self, BackplaneError> {
        let client = cfg.client()?;
        let conn = ConnectionManager::new_with_config(client.clone(), connection_config()).await?;
        let prefix = cfg.prefix.clone();
        let (fanout, pubsub) = pubsub::start(client.clone(), format!("{prefix}:ps:"));
        Ok(Self {
            conn,
            client,
            prefix,
            lease: cfg.lease,
            streams: Named::default(),
            fanout,
            pubsub,
            compare_and_set: Script::new(COMPARE_AND_SET),
        })
    }

    fn kv_key(&self, key: &str) -> String {
        format!("{}:kv:{key}", self.prefix)
    }

    /// `SET` of `key` (only if absent with `nx`), expiring after `ttl` when given.
    fn set_cmd(&self, key: &str, value: &Bytes, nx: bool, ttl: Option<Duration>) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.kv_key(key)).arg(value.as_ref());
        if nx {
            cmd.arg("NX");
        }
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(px(ttl));
        }
        cmd
    }
}

/// `s` with the characters `SCAN MATCH` treats specially escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn kind(&self) -> Kind {
        Kind::Redis
    }

    fn lease_ttl(&self) -> Duration {
        self.lease
    }

    async fn stream(
        &self,
        name: &str,
        options: StreamOptions,
    ) -> Result<Arc<dyn Stream>, BackplaneError> {
        let opened = self
            .streams
            .get_or_open(name, || {
                stream::RedisStream::open(
                    self.conn.clone(),
                    self.client.clone(),
                    &self.prefix,
                    name,
                    options.idempotency_window,
                )
            })
            .await?;
        Ok(opened)
    }

    async fn delete_stream(&self, name: &str) -> Result<bool, BackplaneError> {
        let keys = stream::keys(&self.prefix, name);
        let conn = self.conn.clone();
        self.streams
            .forget(name, || async move {
                let mut conn = conn;
                let deleted: u64 = conn.del(&keys[..]).await?;
                Ok(deleted > 0)
            })
            .await
    }

    async fn publish(&self, channel: &str, message: Bytes) -> Result<(), BackplaneError> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .publish(self.pubsub.channel(channel), message.as_ref())
            .await?;
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BackplaneError> {
        // Waiting until the subscribing task has confirmed the channel and delivered what
        // arrived before: a message published just before this call, still on its way over
        // the node's shared connection, must not reach the new subscriber.
        let (sub, _) = self.fanout.add(channel, false);
        self.pubsub.subscribe(channel).await?;
        Ok(sub)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackplaneError> {
        let mut conn = self.conn.clone();
        let v: Option<Vec<u8>> = conn.get(self.kv_key(key)).await?;
        Ok(v.map(Bytes::from))
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackplaneError> {
        let mut conn = self.conn.clone();
        let _: Value = self
            .set_cmd(key, &value, false, ttl)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = self
            .set_cmd(key, &value, true, ttl)
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: &[u8],
        new: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<bool, BackplaneError> {
        let mut inv = self.compare_and_set.prepare_invoke();
        inv.key(self.kv_key(key))
            .arg(expected)
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.as_deref().unwrap_or_default())
            .arg(ttl.map_or(0, px));
        let mut conn = self.conn.clone();
        let done: i64 = inv.invoke_async(&mut conn).await?;
        Ok(done == 1)
    }

    async fn delete(&self, key: &str) -> Result<bool, BackplaneError> {
        let mut conn = self.conn.clone();
        let n: i64 = conn.del(self.kv_key(key)).await?;
        Ok(n > 0)
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Bytes)>, BackplaneError> {
        let mut conn = self.conn.clone();
        let strip = self.kv_key("");
        let pattern = format!("{}*", glob_escape(&self.kv_key(prefix)));
        let mut cursor = 0u64;
        let mut keys = Vec::new();
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(found);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(k, v)| Some((k.strip_prefix(&strip)?.to_owned(), Bytes::from(v?))))
            .collect())
    }
}
