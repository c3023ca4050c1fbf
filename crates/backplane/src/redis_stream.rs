//! The durable stream on Redis, for several lintas nodes: Redis Streams with one consumer
//! group per consumer (a relay destination), a lease so one node at a time consumes each
//! group, and claiming (`XAUTOCLAIM`) of what a dead node had read but not acknowledged.
//!
//! - **Offsets.** Entries are added with explicit ids `0-(offset+1)` from a counter, in one
//!   Lua script, so records get the same gapless `u64` offsets as in the embedded log and
//!   everything downstream (destinations' applied offsets, the API's record ids) is the same
//!   in both modes.
//! - **Idempotency** is checked and recorded in the same script as the append, so two nodes
//!   receiving one retried request cannot both store it.
//! - **Durability** is Redis's: with `appendonly yes` and `appendfsync always` an
//!   acknowledged append survives a Redis crash; with Redis's defaults it survives lintas
//!   crashes but not a Redis one. The operator chooses; lintas says so in its docs.
//! - **Trimming** removes entries below the lowest point any group still needs (its oldest
//!   pending entry, or its last delivered one), and only when every consumer has a group.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};

use crate::Entry;

/// Append script: checks and records the idempotency key and adds the entries atomically.
/// KEYS: stream, counter, idempotency key (or ""); ARGV: window ms, body hash, payloads.
/// Returns {0, first} when appended, {1, "first:count:hash"} when the key was used.
const APPEND: &str = r"
if KEYS[3] ~= '' then
  local v = redis.call('GET', KEYS[3])
  if v then return {1, v} end
end
local n = #ARGV - 2
local last = redis.call('INCRBY', KEYS[2], n)
local first = last - n
for i = 1, n do
  redis.call('XADD', KEYS[1], string.format('0-%d', first + i), 'r', ARGV[i + 2])
end
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], string.format('%d:%d:%s', first, n, ARGV[2]), 'PX', ARGV[1])
end
return {0, string.format('%d', first)}
";

/// Renews a lease only if this node holds it. KEYS: lease; ARGV: node, ttl ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Releases a lease only if this node holds it. KEYS: lease; ARGV: node.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What went wrong talking to Redis.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct RedisError(String);

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored at these offsets.
    Stored(Range<u64>),
    /// The idempotency key was used before: its offsets and body hash.
    Replayed {
        /// The first request's offsets.
        offsets: Range<u64>,
        /// Its body hash.
        body_hash: u64,
    },
}

/// A stream on Redis under `prefix`.
#[derive(Clone)]
pub struct RedisStream {
    conn: ConnectionManager,
    stream: String,
    counter: String,
    prefix: String,
    append: Script,
}

impl std::fmt::Debug for RedisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

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

/// Longest wait for one connection attempt to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `0-(offset+1)`.
fn id_of(offset: u64) -> String {
    format!("0-{}", offset + 1)
}

/// The offset of an id written by [`id_of`].
fn offset_of(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse::<u64>().ok()?.checked_sub(1)
}

impl RedisStream {
    /// Connects with `client` (see [`crate::BackplaneConfig::client`]); `name` names the
    /// stream within `prefix` (keys share a hash tag, so a Redis Cluster keeps them in one
    /// slot).
    pub async fn connect(
        client: redis::Client,
        prefix: &str,
        name: &str,
    ) -> Result<Self, RedisError> {
        let conn = ConnectionManager::new_with_config(client, connection_config()).await?;
        let base = format!("{prefix}:{{{name}}}");
        Ok(Self {
            conn,
            stream: format!("{base}:stream"),
            counter: format!("{base}:next"),
            prefix: base,
            append: Script::new(APPEND),
        })
    }

    /// A key under this stream's prefix, for other shared state (the stream's id).
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// A clone of the connection, for callers' own commands.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Appends `payloads`; with `idempotency` = (key, body hash, window), atomically
    /// returns the earlier append's offsets instead when the key was used.
    pub async fn append(
        &self,
        payloads: &[Bytes],
        idempotency: Option<(&str, u64, Duration)>,
    ) -> Result<Appended, RedisError> {
        let idem_key =
            idempotency.map_or_else(String::new, |(k, _, _)| self.key(&format!("idem:{k}")));
        let mut inv = self.append.prepare_invoke();
        inv.key(&self.stream).key(&self.counter).key(&idem_key);
        inv.arg(idempotency.map_or(0, |(_, _, w)| w.as_millis() as u64));
        inv.arg(idempotency.map_or(0, |(_, h, _)| h).to_string());
        for p in payloads {
            inv.arg(p.as_ref());
        }
        let mut conn = self.conn.clone();
        let (replayed, value): (u8, String) = inv.invoke_async(&mut conn).await?;
        let bad = || RedisError(format!("unexpected answer from the append script: {value}"));
        if replayed == 1 {
            let mut parts = value.split(':').map(str::parse::<u64>);
            let (Some(Ok(first)), Some(Ok(count)), Some(Ok(body_hash))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            return Ok(Appended::Replayed {
                offsets: first..first + count,
                body_hash,
            });
        }
        let first: u64 = value.parse().map_err(|_| bad())?;
        Ok(Appended::Stored(first..first + payloads.len() as u64))
    }

    /// One past the last offset appended.
    pub async fn end(&self) -> Result<u64, RedisError> {
        let mut conn = self.conn.clone();
        let v: Option<u64> = conn.get(&self.counter).await?;
        Ok(v.unwrap_or(0))
    }

    /// Up to `max` entries from offset `from` on.
    pub async fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, RedisError> {
        let mut conn = self.conn.clone();
        let v: Value = redis::cmd("XRANGE")
            .arg(&self.stream)
            .arg(id_of(from))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        Ok(entries(&v))
    }

    /// Takes the lease `name` for `node` for `ttl` if nobody holds it; true if held now.
    pub async fn acquire(&self, name: &str, node: &str, ttl: Duration) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let key = self.key(&format!("lease:{name}"));
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        self.renew(name, node, ttl).await
    }

    /// Extends the lease if `node` holds it; false if it does not (any more).
    pub async fn renew(&self, name: &str, node: &str, ttl: Duration) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let n: i64 = Script::new(RENEW)
            .key(self.key(&format!("lease:{name}")))
            .arg(node)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Gives the lease up if `node` holds it.
    pub async fn release(&self, name: &str, node: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let _: i64 = Script::new(RELEASE)
            .key(self.key(&format!("lease:{name}")))
            .arg(node)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Creates consumer group `group` delivering offsets from `start` on (no-op if it
    /// exists).
    pub async fn create_group(&self, group: &str, start: u64) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let r: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(group)
            .arg(format!("0-{start}"))
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Claims for `consumer` up to `max` entries pending in `group` under any consumer
    /// (a dead node's included), oldest first, from `cursor`; returns the next cursor
    /// (`None` when every pending entry was seen) and the entries.
    pub async fn claim(
        &self,
        group: &str,
        consumer: &str,
        cursor: &str,
        max: usize,
    ) -> Result<(Option<String>, Vec<Entry>), RedisError> {
        let mut conn = self.conn.clone();
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(cursor)
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await?;
        let Value::Array(parts) = v else {
            return Ok((None, Vec::new()));
        };
        let next = match parts.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => "0-0".into(),
        };
        let found = parts.get(1).map(entries).unwrap_or_default();
        Ok(((next != "0-0").then_some(next), found))
    }

    /// Reads up to `max` new entries for `consumer` in `group`, waiting up to `wait`.
    pub async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Entry>, RedisError> {
        let mut conn = self.conn.clone();
        let v: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut conn)
            .await?;
        // [[stream, [entries]]] or nil on timeout (RESP2), or a map (RESP3).
        let streams = match v {
            Value::Array(s) => s,
            Value::Map(m) => m
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k, v]))
                .collect(),
            _ => return Ok(Vec::new()),
        };
        Ok(streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(pair) => pair.get(1).map(entries),
                _ => None,
            })
            .flatten()
            .collect())
    }

    /// Acknowledges `offsets` in `group`.
    pub async fn ack(&self, group: &str, offsets: &[u64]) -> Result<(), RedisError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.stream).arg(group);
        for o in offsets {
            cmd.arg(id_of(*o));
        }
        let _: i64 = cmd.query_async(&mut conn).await?;
        Ok(())
    }

    /// Deletes entries every one of `groups` is past, and none from `below` on (what the
    /// caller still wants to show); returns the offset trimmed below. Does nothing while
    /// any of the groups has no group yet.
    pub async fn trim(&self, groups: &[String], below: u64) -> Result<Option<u64>, RedisError> {
        let mut conn = self.conn.clone();
        let info: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await
            .unwrap_or(Value::Nil);
        let mut floors: HashMap<String, u64> = HashMap::new();
        if let Value::Array(list) = info {
            for g in list {
                let fields = fields(&g);
                let (Some(name), Some(last)) =
                    (fields.get("name"), fields.get("last-delivered-id"))
                else {
                    continue;
                };
                let pending: u64 = fields
                    .get("pending")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let mut floor = offset_of(last).map_or(0, |o| o + 1);
                if pending > 0 {
                    let summary: Value = redis::cmd("XPENDING")
                        .arg(&self.stream)
                        .arg(name)
                        .query_async(&mut conn)
                        .await?;
                    if let Value::Array(s) = summary
                        && let Some(min) = s.get(1).and_then(text)
                        && let Some(o) = offset_of(&min)
                    {
                        floor = floor.min(o);
                    }
                }
                floors.insert(name.clone(), floor);
            }
        }
        let mut min = below;
        for g in groups {
            match floors.get(g) {
                Some(f) => min = min.min(*f),
                None => return Ok(None),
            }
        }
        if groups.is_empty() || min == 0 {
            return Ok(None);
        }
        let _: i64 = redis::cmd("XTRIM")
            .arg(&self.stream)
            .arg("MINID")
            .arg(id_of(min))
            .query_async(&mut conn)
            .await?;
        Ok(Some(min))
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat [k, v, k, v] reply (or a RESP3 map) as a map of texts.
fn fields(v: &Value) -> HashMap<String, String> {
    let mut out = HashMap::new();
    match v {
        Value::Array(kv) => {
            for pair in kv.chunks(2) {
                if let (Some(k), Some(v)) =
                    (pair.first().and_then(text), pair.get(1).and_then(text))
                {
                    out.insert(k, v);
                }
            }
        }
        Value::Map(m) => {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (text(k), text(v)) {
                    out.insert(k, v);
                }
            }
        }
        _ => {}
    }
    out
}

/// `[[id, [field, value, ...]], ...]` as entries (field `r` holds the payload); entries
/// deleted meanwhile (nil fields) are skipped.
fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(list) = v else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let Value::Array(pair) = e else { return None };
            let offset = offset_of(&text(pair.first()?)?)?;
            let Value::Array(kv) = pair.get(1)? else {
                return None;
            };
            let payload =
                kv.chunks(2)
                    .find_map(|p| match (p.first().and_then(text), p.get(1)) {
                        (Some(k), Some(Value::BulkString(b))) if k == "r" => {
                            Some(Bytes::copy_from_slice(b))
                        }
                        _ => None,
                    })?;
            Some(Entry { offset, payload })
        })
        .collect()
}
