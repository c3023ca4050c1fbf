//! A stream on Redis, for several lintas nodes: a Redis Stream with consumer groups, and
//! claiming (`XAUTOCLAIM`) of what a dead consumer had read but not acknowledged.
//!
//! Keys (one hash tag, so a Redis Cluster keeps them in one slot): `{prefix}:{name}:stream`
//! (the entries, field `r`), `:next` (the offset counter), `:idem:{key}` (idempotency keys,
//! expiring after the window), `:id` (the stream's identity).
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
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value};

use crate::{Appended, BackplaneError, Entry, Feed, IdempotencyKey, Stream};

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

/// The keys of stream `name` share: `{prefix}:{name}` with the name as the hash tag.
fn base(prefix: &str, name: &str) -> String {
    format!("{prefix}:{{{name}}}")
}

/// Stream `name`'s keys but its idempotency keys (which expire on their own): the entries,
/// the offset counter and the identity.
pub(crate) fn keys(prefix: &str, name: &str) -> [String; 3] {
    let base = base(prefix, name);
    [
        format!("{base}:stream"),
        format!("{base}:next"),
        format!("{base}:id"),
    ]
}

/// A stream on Redis under `prefix`; clones share the connection.
#[derive(Clone)]
pub(crate) struct RedisStream {
    conn: ConnectionManager,
    /// Opens each feed's own connection: a blocking `XREADGROUP` holds its connection
    /// until it returns, and on the node's shared one it would hold back every other
    /// command of every service for as long as it waits.
    client: redis::Client,
    id: String,
    stream: String,
    counter: String,
    prefix: String,
    window: Duration,
    append: Script,
}

impl std::fmt::Debug for RedisStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStream")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// `0-(offset+1)`.
fn id_of(offset: u64) -> String {
    format!("0-{}", offset + 1)
}

/// The offset of an id written by [`id_of`].
fn offset_of(id: &str) -> Option<u64> {
    id.strip_prefix("0-")?.parse::<u64>().ok()?.checked_sub(1)
}

impl RedisStream {
    /// The stream `name` under `prefix` on `conn`, its identity made if it is new.
    pub(crate) async fn open(
        conn: ConnectionManager,
        client: redis::Client,
        prefix: &str,
        name: &str,
        window: Duration,
    ) -> Result<Self, BackplaneError> {
        let [stream, counter, id_key] = keys(prefix, name);
        let mut c = conn.clone();
        let _: bool = c.set_nx(&id_key, super::random_id()).await?;
        let id: String = c.get(&id_key).await?;
        Ok(Self {
            conn,
            client,
            id,
            stream,
            counter,
            prefix: base(prefix, name),
            window,
            append: Script::new(APPEND),
        })
    }

    fn corrupt(&self, why: String) -> BackplaneError {
        BackplaneError::Corrupt {
            what: format!("Redis key {}", self.stream),
            why,
        }
    }

    /// Creates consumer group `group` delivering offsets from `start` on (no-op if it
    /// exists).
    async fn create_group(&self, group: &str, start: u64) -> Result<(), BackplaneError> {
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
    async fn claim(
        &self,
        group: &str,
        consumer: &str,
        cursor: &str,
        max: usize,
    ) -> Result<(Option<String>, Vec<Entry>), BackplaneError> {
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
    async fn read_group(
        &self,
        mut conn: ConnectionManager,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Entry>, BackplaneError> {
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
    async fn ack(&self, group: &str, offsets: &[u64]) -> Result<(), BackplaneError> {
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
}

#[async_trait]
impl Stream for RedisStream {
    fn id(&self) -> &str {
        &self.id
    }

    /// Checks and records the key in the same script as the append, so two nodes
    /// receiving one retried request cannot both store it.
    async fn append(
        &self,
        records: Vec<Bytes>,
        key: Option<IdempotencyKey>,
    ) -> Result<Appended, BackplaneError> {
        let idem_key = key
            .as_ref()
            .map_or_else(String::new, |k| format!("{}:idem:{}", self.prefix, k.key));
        let mut inv = self.append.prepare_invoke();
        inv.key(&self.stream).key(&self.counter).key(&idem_key);
        inv.arg(self.window.as_millis() as u64);
        inv.arg(key.as_ref().map_or(0, |k| k.body_hash).to_string());
        for p in &records {
            inv.arg(p.as_ref());
        }
        let mut conn = self.conn.clone();
        let (replayed, value): (u8, String) = inv.invoke_async(&mut conn).await?;
        let bad = || self.corrupt(format!("unexpected answer from the append script: {value}"));
        if replayed == 1 {
            let mut parts = value.split(':').map(str::parse::<u64>);
            let (Some(Ok(first)), Some(Ok(count)), Some(Ok(body_hash))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            if key.is_some_and(|k| k.body_hash != body_hash) {
                return Err(BackplaneError::KeyReused);
            }
            return Ok(Appended {
                offsets: first..first + count,
                replayed: true,
            });
        }
        let first: u64 = value.parse().map_err(|_| bad())?;
        Ok(Appended {
            offsets: first..first + records.len() as u64,
            replayed: false,
        })
    }

    async fn end(&self) -> Result<u64, BackplaneError> {
        let mut conn = self.conn.clone();
        let v: Option<u64> = conn.get(&self.counter).await?;
        Ok(v.unwrap_or(0))
    }

    async fn read(&self, from: u64, max: usize) -> Result<Vec<Entry>, BackplaneError> {
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

    async fn feed(
        &self,
        group: &str,
        consumer: &str,
        from: u64,
    ) -> Result<Box<dyn Feed>, BackplaneError> {
        self.create_group(group, from).await?;
        let reader =
            ConnectionManager::new_with_config(self.client.clone(), super::connection_config())
                .await?;
        Ok(Box::new(RedisFeed {
            stream: self.clone(),
            reader,
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            cursor: Some("0-0".into()),
        }))
    }

    /// Removes entries below the lowest point any group still needs (its oldest pending
    /// entry, or its last delivered one), and only when every consumer has a group.
    async fn trim(&self, groups: &[String], below: u64) -> Result<Option<u64>, BackplaneError> {
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

    async fn truncate(&self, below: u64) -> Result<(), BackplaneError> {
        if below > 0 {
            let mut conn = self.conn.clone();
            let _: i64 = redis::cmd("XTRIM")
                .arg(&self.stream)
                .arg("MINID")
                .arg(id_of(below))
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }
}

/// A consumer of a group: first what is pending (claimed from any consumer, dead ones'
/// included), then new entries.
struct RedisFeed {
    stream: RedisStream,
    /// This feed's own connection for blocking reads (see [`RedisStream::client`]).
    reader: ConnectionManager,
    group: String,
    consumer: String,
    /// Where the sweep of pending entries stands; `None` once done.
    cursor: Option<String>,
}

#[async_trait]
impl Feed for RedisFeed {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Entry>, BackplaneError> {
        if let Some(at) = self.cursor.clone() {
            let (next, found) = self
                .stream
                .claim(&self.group, &self.consumer, &at, max)
                .await?;
            self.cursor = next;
            if !found.is_empty() {
                return Ok(found);
            }
        }
        self.stream
            .read_group(self.reader.clone(), &self.group, &self.consumer, max, wait)
            .await
    }

    async fn ack(&mut self, _next: u64, offsets: &[u64]) -> Result<(), BackplaneError> {
        self.stream.ack(&self.group, offsets).await
    }

    /// What was read and not acknowledged is pending: the sweep starts over to claim it.
    fn rewind(&mut self, _next: u64) {
        self.cursor = Some("0-0".into());
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
