//! The transactions, written once for every sqlx driver lintas uses.

use std::marker::PhantomData;

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};

use super::{Applied, ApplyError, Changed, Exec, Failure, classify};
use crate::sql::Dialect;

/// The rows a statement changed, which each driver reports through its own type.
pub(super) trait Affected {
    fn affected(&self) -> u64;
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

fn changed(e: &Exec, affected: u64) -> Changed {
    Changed {
        item: e.item,
        rows: e.rows,
        affected,
    }
}

/// Namespace for the generic transaction code; its one `where` clause holds the bounds that
/// PostgreSQL, MySQL and SQLite drivers all meet.
pub(super) struct Txn<DB>(PhantomData<DB>);

fn down(e: sqlx::Error) -> ApplyError {
    ApplyError::Destination(e.to_string())
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

impl<DB: Database> Txn<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    DB::QueryResult: Affected,
{
    /// Creates the offsets table if needed and reads `stream_key`'s next offset.
    pub(super) async fn read_offset(
        pool: &Pool<DB>,
        d: Dialect,
        stream_key: &str,
    ) -> Result<Option<u64>, sqlx::Error> {
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

    /// Opens the batch's transaction and locks the offset row; the second value is the
    /// offset the row holds when it is not `from` (another writer moved it).
    async fn begin_batch<'p>(
        pool: &'p Pool<DB>,
        d: Dialect,
        stream_key: &str,
        from: u64,
    ) -> Result<(Transaction<'p, DB>, Option<u64>), ApplyError> {
        let mut tx = pool.begin().await.map_err(down)?;
        let current: Option<i64> = sqlx::query_scalar::<DB, i64>(select_offset(d, true))
            .bind(stream_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(down)?;
        Ok((tx, current.map(|c| c as u64).filter(|c| *c != from)))
    }

    /// Moves the offset row to `to` and commits.
    async fn finish_batch(
        mut tx: Transaction<'_, DB>,
        d: Dialect,
        stream_key: &str,
        to: u64,
        affected: Vec<Changed>,
    ) -> Result<Applied, ApplyError> {
        let to = to.to_string();
        sqlx::query::<DB>(upsert_offset(d))
            .bind(stream_key)
            .bind(to.as_str())
            .execute(&mut *tx)
            .await
            .map_err(down)?;
        tx.commit().await.map_err(down)?;
        Ok(Applied::Committed(affected))
    }

    async fn run_exec(conn: &mut DB::Connection, e: &Exec) -> Result<u64, sqlx::Error> {
        let mut q = sqlx::query::<DB>(&e.sql);
        for p in &e.params {
            q = q.bind(p.as_deref());
        }
        q.execute(conn).await.map(|r| r.affected())
    }

    /// Runs `execs` in order on `conn`, stopping at the first failure; the rows each
    /// changed.
    async fn run_all(
        conn: &mut DB::Connection,
        execs: &[Exec],
    ) -> Result<Vec<Changed>, ApplyError> {
        let mut affected = Vec::with_capacity(execs.len());
        for e in execs {
            match Self::run_exec(conn, e).await {
                Ok(n) => affected.push(changed(e, n)),
                Err(err) => {
                    return Err(ApplyError::Statement {
                        item: e.item,
                        failure: classify(&err),
                    });
                }
            }
        }
        Ok(affected)
    }

    /// `execs` and the offset move, in one transaction.
    pub(super) async fn apply(
        pool: &Pool<DB>,
        d: Dialect,
        stream_key: &str,
        (from, to): (u64, u64),
        execs: &[Exec],
    ) -> Result<Applied, ApplyError> {
        let (mut tx, behind) = Self::begin_batch(pool, d, stream_key, from).await?;
        if let Some(at) = behind {
            return Ok(Applied::Behind(at));
        }
        let affected = Self::run_all(&mut tx, execs).await?;
        Self::finish_batch(tx, d, stream_key, to, affected).await
    }

    /// `execs` in one transaction, offsets untouched.
    pub(super) async fn execute(pool: &Pool<DB>, execs: &[Exec]) -> Result<(), ApplyError> {
        let mut tx = pool.begin().await.map_err(down)?;
        Self::run_all(&mut tx, execs).await?;
        tx.commit().await.map_err(down)
    }

    /// Like [`Txn::apply`], each statement under a savepoint; see `Db::apply_isolating`.
    pub(super) async fn isolate<F, Fut>(
        pool: &Pool<DB>,
        d: Dialect,
        stream_key: &str,
        (from, to): (u64, u64),
        execs: &[Exec],
        refusal: fn(&Failure) -> bool,
        before_commit: F,
    ) -> Result<Applied, ApplyError>
    where
        F: FnOnce(Vec<(usize, String)>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let (mut tx, behind) = Self::begin_batch(pool, d, stream_key, from).await?;
        if let Some(at) = behind {
            return Ok(Applied::Behind(at));
        }
        let mut refused = Vec::new();
        let mut affected = Vec::with_capacity(execs.len());
        for e in execs {
            sqlx::query::<DB>("SAVEPOINT lintas_item")
                .execute(&mut *tx)
                .await
                .map_err(down)?;
            match Self::run_exec(&mut tx, e).await {
                Ok(n) => affected.push(changed(e, n)),
                Err(err) => {
                    let failure = classify(&err);
                    if !refusal(&failure) {
                        return Err(ApplyError::Statement {
                            item: e.item,
                            failure,
                        });
                    }
                    sqlx::query::<DB>("ROLLBACK TO SAVEPOINT lintas_item")
                        .execute(&mut *tx)
                        .await
                        .map_err(down)?;
                    refused.push((e.item, failure.message().to_owned()));
                    affected.push(changed(e, 0));
                }
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
        Self::finish_batch(tx, d, stream_key, to, affected).await
    }
}
