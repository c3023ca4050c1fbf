//! One destination database: connecting, reading its schema, and applying a batch together
//! with the stream offset it reaches, in one transaction.
//!
//! # Exactly once
//!
//! Each database holds a small table, `lintas_applied_offsets`, with one row per (lintas
//! stream, destination): the offset of the next record it has not applied. Every batch
//! updates that row in the same transaction as its rows, so either both are committed or
//! neither is. After a crash lintas reads the row back and resumes from it: a batch whose
//! commit made it is never applied again, even if lintas died before noting it, and a
//! batch that did not make it is applied again in full. Plain inserts are therefore never
//! doubled, with no unique key needed in the user's table.
//!
//! The row is read `FOR UPDATE` at the start of each batch, so two lintas nodes that both
//! believe they own a destination (a lease that just expired) serialize on it, and the later
//! one sees the offset has moved and skips what was applied.

mod errors;
mod schema;

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Database, Encode, Executor, IntoArguments, MySqlPool, PgPool, Pool, SqlitePool, Type};

pub use errors::{Failure, classify};
pub use schema::{Column, Table};

use crate::config::{DestinationSpec, Kind};
use crate::sql::Dialect;

/// How long connecting (or waiting for a free connection) may take before the destination
/// counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one batch's transaction may take before it is abandoned as a failure of the
/// destination (a cut link leaves a write waiting forever otherwise).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected destination.
#[derive(Debug, Clone)]
pub enum Db {
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL or MariaDB.
    Mysql(MySqlPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds.
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Postgres($pool) => $body,
            Db::Mysql($pool) => $body,
            Db::Sqlite($pool) => $body,
        }
    };
}

/// A statement of a batch with its values, and which batch items it writes.
#[derive(Debug, Clone)]
pub struct Exec {
    /// SQL with placeholders.
    pub sql: String,
    /// Every value as text (or NULL); the database converts it to the column's type.
    pub params: Vec<Option<String>>,
    /// The first batch item it covers; statements for isolation cover exactly one.
    pub item: usize,
}

/// What became of a batch.
#[derive(Debug)]
pub enum Applied {
    /// Committed; the destination's next offset is now the batch's end.
    Committed,
    /// Another writer already moved the destination to this offset; nothing was written.
    Behind(u64),
}

/// Why a batch was not committed.
#[derive(Debug)]
pub enum ApplyError {
    /// The statement of this item was refused for its data; the whole batch was rolled back.
    Record {
        /// The item of the refused statement.
        item: usize,
        /// The database's message.
        message: String,
    },
    /// The database could not be used (down, cut, timed out, schema gone).
    Destination(String),
}

impl Db {
    /// Connects to `spec` (one connection is made now, so a wrong URL, password or an
    /// unreachable host fails here).
    pub async fn connect(spec: &DestinationSpec) -> Result<Self, String> {
        let password = match &spec.password_env {
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| format!("environment variable {var} (password_env) is not set"))?,
            ),
            None => None,
        };
        let bad_url = |e: sqlx::Error| format!("bad URL: {e}");
        let down = |e: sqlx::Error| e.to_string();
        let n = spec.max_connections;
        Ok(match spec.kind {
            Kind::Postgres => {
                let mut o = PgConnectOptions::from_str(&spec.url)
                    .map_err(bad_url)?
                    .application_name("lintas");
                if let Some(p) = &password {
                    o = o.password(p);
                }
                Self::Postgres(
                    PgPoolOptions::new()
                        .max_connections(n)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .test_before_acquire(false)
                        .connect_with(o)
                        .await
                        .map_err(down)?,
                )
            }
            Kind::Mysql => {
                let mut o = MySqlConnectOptions::from_str(&spec.url).map_err(bad_url)?;
                if let Some(p) = &password {
                    o = o.password(p);
                }
                Self::Mysql(
                    MySqlPoolOptions::new()
                        .max_connections(n)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .test_before_acquire(false)
                        .connect_with(o)
                        .await
                        .map_err(down)?,
                )
            }
            Kind::Sqlite => {
                let o = SqliteConnectOptions::from_str(&spec.url)
                    .map_err(bad_url)?
                    .busy_timeout(CONNECT_TIMEOUT);
                Self::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(n)
                        .acquire_timeout(CONNECT_TIMEOUT)
                        .test_before_acquire(false)
                        .connect_with(o)
                        .await
                        .map_err(down)?,
                )
            }
        })
    }

    /// Its dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Postgres(_) => Dialect::Postgres,
            Self::Mysql(_) => Dialect::Mysql,
            Self::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    /// A round trip, for the heartbeat.
    pub async fn ping(&self) -> Result<(), String> {
        let q =
            async { with_pool!(self, p => sqlx::raw_sql("SELECT 1").execute(p).await.map(|_| ())) };
        match tokio::time::timeout(CONNECT_TIMEOUT, q).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer to a ping within {CONNECT_TIMEOUT:?}")),
        }
    }

    /// Creates `lintas_applied_offsets` if missing and returns the next offset recorded for
    /// `stream_key`, if any.
    pub async fn next_offset(&self, stream_key: &str) -> Result<Option<u64>, String> {
        let d = self.dialect();
        let r = with_pool!(self, p => read_offset(p, d, stream_key).await);
        r.map_err(|e| e.to_string())
    }

    /// Applies `execs` and moves `stream_key` from `from` to `to`, in one transaction.
    pub async fn apply(
        &self,
        stream_key: &str,
        from: u64,
        to: u64,
        execs: &[Exec],
    ) -> Result<Applied, ApplyError> {
        let d = self.dialect();
        let work =
            async { with_pool!(self, p => apply_in(p, d, stream_key, from, to, execs).await) };
        match tokio::time::timeout(WRITE_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(ApplyError::Destination(format!(
                "the batch took longer than {WRITE_TIMEOUT:?}; abandoned"
            ))),
        }
    }

    /// Like [`Db::apply`], but each statement (one item each) runs under a savepoint: the
    /// ones the database refuses for their data are rolled back alone and returned, the rest
    /// commit. `before_commit` runs with the refused ones before the commit, so their dead
    /// letters are durable before the offset moves past them.
    pub async fn apply_isolating<F, Fut>(
        &self,
        stream_key: &str,
        from: u64,
        to: u64,
        execs: &[Exec],
        before_commit: F,
    ) -> Result<Applied, ApplyError>
    where
        F: FnOnce(Vec<(usize, String)>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let d = self.dialect();
        let work = async {
            with_pool!(self, p => isolate_in(p, d, stream_key, from, to, execs, before_commit).await)
        };
        match tokio::time::timeout(WRITE_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(ApplyError::Destination(format!(
                "the batch took longer than {WRITE_TIMEOUT:?}; abandoned"
            ))),
        }
    }

    /// Runs `execs` in one transaction without touching the stream offset: for replaying
    /// dead letters, which lie behind it.
    pub async fn execute(&self, execs: &[Exec]) -> Result<(), ApplyError> {
        let work = async { with_pool!(self, p => execute_in(p, execs).await) };
        match tokio::time::timeout(WRITE_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(ApplyError::Destination(format!(
                "the write took longer than {WRITE_TIMEOUT:?}; abandoned"
            ))),
        }
    }

    /// Every table lintas could write to.
    pub async fn tables(&self) -> Result<Vec<Table>, String> {
        schema::tables(self, None).await.map_err(|e| e.to_string())
    }

    /// One table, if it exists.
    pub async fn table(&self, schema: Option<&str>, name: &str) -> Result<Option<Table>, String> {
        let all = schema::tables(self, Some((schema, name)))
            .await
            .map_err(|e| e.to_string())?;
        Ok(all.into_iter().next())
    }
}

fn offsets_ddl(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => {
            "CREATE TABLE IF NOT EXISTS lintas_applied_offsets (stream TEXT PRIMARY KEY, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        }
        Dialect::Mysql => {
            "CREATE TABLE IF NOT EXISTS lintas_applied_offsets (stream VARCHAR(128) PRIMARY KEY, next_offset BIGINT NOT NULL, updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)) ENGINE=InnoDB"
        }
        Dialect::Sqlite => {
            "CREATE TABLE IF NOT EXISTS lintas_applied_offsets (stream TEXT PRIMARY KEY, next_offset INTEGER NOT NULL, updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        }
    }
}

fn select_offset(d: Dialect, lock: bool) -> &'static str {
    match (d, lock) {
        (Dialect::Postgres, true) => {
            "SELECT next_offset FROM lintas_applied_offsets WHERE stream = $1 FOR UPDATE"
        }
        (Dialect::Postgres, false) => {
            "SELECT next_offset FROM lintas_applied_offsets WHERE stream = $1"
        }
        (Dialect::Mysql, true) => {
            "SELECT next_offset FROM lintas_applied_offsets WHERE stream = ? FOR UPDATE"
        }
        _ => "SELECT next_offset FROM lintas_applied_offsets WHERE stream = ?",
    }
}

fn upsert_offset(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => {
            "INSERT INTO lintas_applied_offsets (stream, next_offset) VALUES ($1, $2::bigint) ON CONFLICT (stream) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()"
        }
        Dialect::Mysql => {
            "INSERT INTO lintas_applied_offsets (stream, next_offset) VALUES (?, ?) ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset)"
        }
        Dialect::Sqlite => {
            "INSERT INTO lintas_applied_offsets (stream, next_offset) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET next_offset = excluded.next_offset, updated_at = CURRENT_TIMESTAMP"
        }
    }
}

async fn read_offset<DB: Database>(
    pool: &Pool<DB>,
    d: Dialect,
    stream_key: &str,
) -> Result<Option<u64>, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut conn = pool.acquire().await?;
    sqlx::query::<DB>(offsets_ddl(d))
        .execute(&mut *conn)
        .await?;
    let v: Option<i64> = sqlx::query_scalar::<DB, i64>(select_offset(d, false))
        .bind(stream_key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(v.map(|v| v as u64))
}

/// Opens the batch's transaction and checks the offset row: `Ok(None)` when the batch is
/// still to be applied from `from`.
async fn begin_batch<'p, DB: Database>(
    pool: &'p Pool<DB>,
    d: Dialect,
    stream_key: &str,
    from: u64,
) -> Result<(sqlx::Transaction<'p, DB>, Option<u64>), ApplyError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut tx = pool.begin().await.map_err(down)?;
    let current: Option<i64> = sqlx::query_scalar::<DB, i64>(select_offset(d, true))
        .bind(stream_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(down)?;
    let behind = current.map(|c| c as u64).filter(|c| *c != from);
    Ok((tx, behind))
}

fn down(e: sqlx::Error) -> ApplyError {
    ApplyError::Destination(e.to_string())
}

async fn run_exec<DB: Database>(conn: &mut DB::Connection, e: &Exec) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut q = sqlx::query::<DB>(&e.sql);
    for p in &e.params {
        q = q.bind(p.as_deref());
    }
    q.execute(conn).await.map(|_| ())
}

async fn finish_batch<DB: Database>(
    mut tx: sqlx::Transaction<'_, DB>,
    d: Dialect,
    stream_key: &str,
    to: u64,
) -> Result<Applied, ApplyError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let to = to.to_string();
    sqlx::query::<DB>(upsert_offset(d))
        .bind(stream_key)
        .bind(to.as_str())
        .execute(&mut *tx)
        .await
        .map_err(down)?;
    tx.commit().await.map_err(down)?;
    Ok(Applied::Committed)
}

async fn apply_in<DB: Database>(
    pool: &Pool<DB>,
    d: Dialect,
    stream_key: &str,
    from: u64,
    to: u64,
    execs: &[Exec],
) -> Result<Applied, ApplyError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let (mut tx, behind) = begin_batch(pool, d, stream_key, from).await?;
    if let Some(at) = behind {
        return Ok(Applied::Behind(at));
    }
    run_all::<DB>(&mut tx, execs).await?;
    finish_batch(tx, d, stream_key, to).await
}

/// Runs `execs` in order on `conn`, stopping at the first failure.
async fn run_all<DB: Database>(conn: &mut DB::Connection, execs: &[Exec]) -> Result<(), ApplyError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    for e in execs {
        if let Err(err) = run_exec::<DB>(conn, e).await {
            return Err(match classify(&err) {
                Failure::Record(message) => ApplyError::Record {
                    item: e.item,
                    message,
                },
                Failure::Destination(m) => ApplyError::Destination(m),
            });
        }
    }
    Ok(())
}

async fn execute_in<DB: Database>(pool: &Pool<DB>, execs: &[Exec]) -> Result<(), ApplyError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut tx = pool.begin().await.map_err(down)?;
    run_all::<DB>(&mut tx, execs).await?;
    tx.commit().await.map_err(down)
}

async fn isolate_in<DB: Database, F, Fut>(
    pool: &Pool<DB>,
    d: Dialect,
    stream_key: &str,
    from: u64,
    to: u64,
    execs: &[Exec],
    before_commit: F,
) -> Result<Applied, ApplyError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    F: FnOnce(Vec<(usize, String)>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let (mut tx, behind) = begin_batch(pool, d, stream_key, from).await?;
    if let Some(at) = behind {
        return Ok(Applied::Behind(at));
    }
    let mut refused = Vec::new();
    for e in execs {
        sqlx::query::<DB>("SAVEPOINT lintas_item")
            .execute(&mut *tx)
            .await
            .map_err(down)?;
        match run_exec::<DB>(&mut tx, e).await {
            Ok(()) => {}
            Err(err) => match classify(&err) {
                Failure::Record(message) => {
                    sqlx::query::<DB>("ROLLBACK TO SAVEPOINT lintas_item")
                        .execute(&mut *tx)
                        .await
                        .map_err(down)?;
                    refused.push((e.item, message));
                }
                Failure::Destination(m) => return Err(ApplyError::Destination(m)),
            },
        }
        sqlx::query::<DB>("RELEASE SAVEPOINT lintas_item")
            .execute(&mut *tx)
            .await
            .map_err(down)?;
    }
    if !refused.is_empty() {
        before_commit(refused)
            .await
            .map_err(|e| ApplyError::Destination(format!("cannot record dead letters: {e}")))?;
    }
    finish_batch(tx, d, stream_key, to).await
}
