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
pub mod options;
mod schema;
mod txn;

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{MySqlPool, PgPool, SqlitePool};

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
    /// How many items it covers, from `item` on.
    pub rows: usize,
}

/// The rows one statement changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed {
    /// Its first item ([`Exec::item`]).
    pub item: usize,
    /// How many items it covers.
    pub rows: usize,
    /// How many rows the database says it changed (0 for one rolled back as refused).
    pub affected: u64,
}

/// What became of a batch.
#[derive(Debug)]
pub enum Applied {
    /// Committed; the destination's next offset is now the batch's end. Holds what each
    /// statement changed, so an update or delete that matched nothing is not reported as
    /// written.
    Committed(Vec<Changed>),
    /// Another writer already moved the destination to this offset; nothing was written.
    Behind(u64),
}

/// Why a batch was not committed.
#[derive(Debug)]
pub enum ApplyError {
    /// The statement of this item failed (see [`Failure`] for whose fault that is); the
    /// whole batch was rolled back.
    Statement {
        /// The item of the failed statement.
        item: usize,
        /// What the failure means.
        failure: Failure,
    },
    /// The database could not be used outside any one statement (down, cut, timed out).
    Destination(String),
}

impl ApplyError {
    /// The message to log or show.
    pub fn message(&self) -> &str {
        match self {
            Self::Statement { failure, .. } => failure.message(),
            Self::Destination(m) => m,
        }
    }
}

impl Db {
    /// Connects to `spec` with `password` (one connection is made now, so a wrong URL,
    /// password or an unreachable host fails here).
    pub async fn connect(spec: &DestinationSpec, password: Option<String>) -> Result<Self, String> {
        let bad_url = |e: sqlx::Error| format!("bad URL: {e}");
        let down = |e: sqlx::Error| e.to_string();
        let n = spec.max_connections;
        Ok(match spec.kind {
            Kind::Postgres => {
                let o = options::postgres(&spec.url, password.as_deref())?;
                Self::Postgres(pool_options(n).connect_with(o).await.map_err(down)?)
            }
            Kind::Mysql => {
                let o = options::mysql(&spec.url, password.as_deref())?;
                Self::Mysql(pool_options(n).connect_with(o).await.map_err(down)?)
            }
            Kind::Sqlite => {
                let o = SqliteConnectOptions::from_str(&spec.url)
                    .map_err(bad_url)?
                    .busy_timeout(CONNECT_TIMEOUT);
                Self::Sqlite(pool_options(n).connect_with(o).await.map_err(down)?)
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
        let r = with_pool!(self, p => txn::Txn::read_offset(p, d, stream_key).await);
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
        within(async {
            with_pool!(self, p => txn::Txn::apply(p, d, stream_key, (from, to), execs).await)
        })
        .await
    }

    /// Like [`Db::apply`], but each statement (one item each) runs under a savepoint: the
    /// ones failing in a way `refused` accepts as the record's fault are rolled back alone
    /// and returned, the rest commit; any other failure rolls everything back.
    /// `before_commit` runs with the refused ones before the commit, so their dead letters
    /// are durable before the offset moves past them.
    pub async fn apply_isolating<F, Fut>(
        &self,
        stream_key: &str,
        (from, to): (u64, u64),
        execs: &[Exec],
        refused: fn(&Failure) -> bool,
        before_commit: F,
    ) -> Result<Applied, ApplyError>
    where
        F: FnOnce(Vec<(usize, String)>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let d = self.dialect();
        within(async {
            with_pool!(self, p => txn::Txn::isolate(p, d, stream_key, (from, to), execs, refused, before_commit).await)
        })
        .await
    }

    /// Runs `execs` in one transaction without touching the stream offset: for replaying
    /// dead letters, which lie behind it.
    pub async fn execute(&self, execs: &[Exec]) -> Result<(), ApplyError> {
        within(async { with_pool!(self, p => txn::Txn::execute(p, execs).await) }).await
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

/// `work`, or a destination failure once it has taken [`WRITE_TIMEOUT`].
async fn within<T>(work: impl Future<Output = Result<T, ApplyError>>) -> Result<T, ApplyError> {
    tokio::time::timeout(WRITE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(ApplyError::Destination(format!(
                "the write took longer than {WRITE_TIMEOUT:?}; abandoned"
            )))
        })
}

/// The pool settings every destination gets: `n` connections, a bounded wait for one, and no
/// ping before each use (a dead connection fails the batch, which is retried anyway).
fn pool_options<DB: sqlx::Database>(n: u32) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(n)
        .acquire_timeout(CONNECT_TIMEOUT)
        .test_before_acquire(false)
}
