//! This node's own durable state, in one embedded SQLite database in `data_dir`.
//!
//! What users manage at run time (relay applications, destinations, routes) and what the
//! services record about their work (the relay's delivery log and dead letters) must outlive
//! a restart without any other service beside lintas, so it lives in `data_dir/lintas.db`.
//! Queries belong to the service that owns the tables; this crate opens the database with
//! the settings every caller relies on and brings its schema up to date.
//!
//! - **Durability.** WAL journal with `synchronous = FULL`: a commit is on disk when it
//!   returns. Writes here are rare (object changes, one delivery-log row per batch), so the
//!   sync is cheap next to what it protects (a dead letter must not be lost).
//! - **Migrations** belong to the service that owns the tables: it hands its list to
//!   [`Store::migrate`], which applies what is missing in order, one transaction each, and
//!   records the version reached in `schema_migrations` under the service's name. A
//!   service's schema newer than this binary is refused rather than misread. A database
//!   from a release that numbered every migration in one list (`PRAGMA user_version`) is
//!   converted when opened (see `migrations`).

mod migrations;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Executor, SqlitePool};
use tracing::info;

/// What can go wrong opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory or the database file cannot be created.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("{path}: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: sqlx::Error,
    },
    /// The file, or one service's tables in it, were written by a newer lintas.
    #[error(
        "{path} has {schema} version {found} but this lintas knows up to {known}; run the newer lintas or restore a backup"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Whose schema: `schema` for the file's own format, `relay schema` for a service's.
        schema: String,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
}

/// The store: a pool of connections to `data_dir/lintas.db`, schema up to date.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`, ready for the services'
    /// [`Store::migrate`]; a database of an earlier release is converted to per-service
    /// tracking, keeping every table and row. A directory or database file created here is private to lintas's user (0700, 0600).
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::Dir {
                path: data_dir.to_owned(),
                source,
            })?;
        let path = data_dir.join("lintas.db");
        // Created here, 0600, rather than by SQLite (0644): it holds emails, dead letters and
        // sealed passwords. SQLite gives the -wal and -shm files the database file's mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Dir {
                path: path.clone(),
                source,
            })?;
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(sql)?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(sql)?;
        let store = Self { pool, path };
        store.track_per_service().await?;
        Ok(store)
    }

    /// The connection pool, for the services' own queries.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings `service`'s tables up to date: applies the entries of `migrations` past the
    /// version recorded for it, in order, each in its own transaction with the new version.
    /// Entry `i` takes the service from version `i` to `i + 1`; released entries are never
    /// edited, only added. Refuses a service whose recorded version is beyond `migrations`
    /// (a newer lintas wrote it).
    pub async fn migrate(&self, service: &str, migrations: &[&str]) -> Result<(), StoreError> {
        let sql = |source| self.sql_error(source);
        let known = migrations.len() as i64;
        let mut conn = self.pool.acquire().await.map_err(sql)?;
        loop {
            // IMMEDIATE: two services migrating at once wait for each other instead of one
            // failing to upgrade its read to a write.
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(sql)?;
            let found: i64 =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE service = ?")
                    .bind(service)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(sql)?
                    .unwrap_or(0);
            if found > known {
                return Err(StoreError::TooNew {
                    path: self.path.clone(),
                    schema: format!("{service} schema"),
                    found,
                    known,
                });
            }
            let Some(migration) = migrations.get(found as usize) else {
                return Ok(());
            };
            // `Executor::execute` rather than `raw_sql(..).execute(..)`: the latter's
            // lifetime bounds make every future awaiting this one fail to prove `Send`
            // (launchbadge/sqlx#3150), and services migrate in their `start`.
            (&mut *tx).execute(*migration).await.map_err(sql)?;
            sqlx::query(
                "INSERT INTO schema_migrations (service, version) VALUES (?, ?)
                 ON CONFLICT (service) DO UPDATE SET version = excluded.version",
            )
            .bind(service)
            .bind(found + 1)
            .execute(&mut *tx)
            .await
            .map_err(sql)?;
            tx.commit().await.map_err(sql)?;
            info!(service, version = found + 1, "store schema migrated");
        }
    }

    /// Makes sure versions are tracked per service: creates `schema_migrations` in a new
    /// database, converts one an earlier release numbered globally, refuses a newer format.
    async fn track_per_service(&self) -> Result<(), StoreError> {
        let sql = |source| self.sql_error(source);
        let mut conn = self.pool.acquire().await.map_err(sql)?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(sql)?;
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql)?;
        match found {
            migrations::PER_SERVICE => return Ok(()),
            0..=migrations::LEGACY_LATEST => {}
            _ => {
                return Err(StoreError::TooNew {
                    path: self.path.clone(),
                    schema: "schema".into(),
                    found,
                    known: if found > migrations::PER_SERVICE {
                        migrations::PER_SERVICE
                    } else {
                        migrations::LEGACY_LATEST
                    },
                });
            }
        }
        (&mut *tx)
            .execute(migrations::SCHEMA_MIGRATIONS)
            .await
            .map_err(sql)?;
        for (service, version) in migrations::legacy_versions(found) {
            sqlx::query("INSERT INTO schema_migrations (service, version) VALUES (?, ?)")
                .bind(service)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(sql)?;
        }
        (&mut *tx)
            .execute(format!("PRAGMA user_version = {}", migrations::PER_SERVICE).as_str())
            .await
            .map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        if found > 0 {
            info!(
                global_version = found,
                "store converted to per-service schema versions"
            );
        }
        Ok(())
    }

    fn sql_error(&self, source: sqlx::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lintas-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    async fn versions(store: &Store) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT service, version FROM schema_migrations ORDER BY service")
            .fetch_all(store.pool())
            .await
            .expect("versions")
    }

    /// Sets `PRAGMA user_version` behind the store's back.
    async fn set_user_version(dir: &Path, version: i64) {
        let url = format!("sqlite://{}", dir.join("lintas.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("conn");
        sqlx::raw_sql(&format!("PRAGMA user_version = {version}"))
            .execute(&mut conn)
            .await
            .expect("set");
    }

    const A_V1: &str = "CREATE TABLE a_items (v TEXT);";
    const A_V2: &str = "ALTER TABLE a_items ADD COLUMN w TEXT;";
    const B_V1: &str = "CREATE TABLE b_log (at INTEGER);";

    #[tokio::test]
    async fn each_service_migrates_its_own_tables_once() {
        let dir = scratch("migrate");
        let store = Store::open(&dir).await.expect("open");
        store.migrate("a", &[A_V1]).await.expect("a v1");
        store.migrate("b", &[B_V1]).await.expect("b v1");
        sqlx::query("INSERT INTO a_items (v) VALUES ('kept')")
            .execute(store.pool())
            .await
            .expect("insert");
        assert_eq!(versions(&store).await, [("a".into(), 1), ("b".into(), 1)]);
        store.pool().close().await;

        // Reopened by a newer binary: only a's new entry runs (re-running A_V1 would fail).
        let store = Store::open(&dir).await.expect("reopen");
        store.migrate("a", &[A_V1, A_V2]).await.expect("a v2");
        store.migrate("b", &[B_V1]).await.expect("b unchanged");
        assert_eq!(versions(&store).await, [("a".into(), 2), ("b".into(), 1)]);
        let kept: (String, Option<String>) = sqlx::query_as("SELECT v, w FROM a_items")
            .fetch_one(store.pool())
            .await
            .expect("row");
        assert_eq!(kept, ("kept".into(), None));
        let user_version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(store.pool())
            .await
            .expect("user_version");
        assert_eq!(user_version, migrations::PER_SERVICE);

        // An older binary knows only a's first entry.
        let err = store.migrate("a", &[A_V1]).await.expect_err("too new");
        assert_eq!(
            err.to_string(),
            format!(
                "{} has a schema version 2 but this lintas knows up to 1; run the newer lintas or restore a backup",
                dir.join("lintas.db").display()
            )
        );
        store.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_of_an_unknown_format_is_refused() {
        let dir = scratch("too-new");
        Store::open(&dir)
            .await
            .expect("create")
            .pool()
            .close()
            .await;
        for (found, known) in [
            (99, migrations::LEGACY_LATEST),
            (1001, migrations::PER_SERVICE),
        ] {
            set_user_version(&dir, found).await;
            let err = Store::open(&dir).await.expect_err("too new");
            assert_eq!(
                err.to_string(),
                format!(
                    "{} has schema version {found} but this lintas knows up to {known}; run the newer lintas or restore a backup",
                    dir.join("lintas.db").display()
                )
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_data_directory_and_database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        let dir = scratch("modes");
        let data_dir = dir.join("data");
        let store = Store::open(&data_dir).await.expect("open");
        store.migrate("a", &[A_V1]).await.expect("migrate");
        sqlx::raw_sql("INSERT INTO a_items (v) VALUES ('a@example.com')")
            .execute(store.pool())
            .await
            .expect("a write, so the WAL exists");
        assert_eq!(mode(&data_dir), 0o700);
        for file in ["lintas.db", "lintas.db-wal", "lintas.db-shm"] {
            assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
        }
        store.pool().close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
