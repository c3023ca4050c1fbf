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
//! - **Migrations** are numbered and applied in order inside one transaction each, tracked
//!   in `PRAGMA user_version`; a database newer than this binary is refused rather than
//!   misread.

mod migrations;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, SqlitePool};

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
    /// The file was written by a newer lintas.
    #[error(
        "{path} has schema version {found} but this lintas knows up to {known}; run the newer lintas or restore a backup"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
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
    /// Opens (creating if needed) the store in `data_dir` and applies pending migrations.
    /// A directory or database file created here is private to lintas's user (0700, 0600).
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
        store.migrate().await?;
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

    async fn migrate(&self) -> Result<(), StoreError> {
        let sql = |source| StoreError::Sql {
            path: self.path.clone(),
            source,
        };
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await
            .map_err(sql)?;
        let known = migrations::ALL.len() as i64;
        if found > known {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, migration) in migrations::ALL.iter().enumerate().skip(found as usize) {
            let mut tx = self.pool.begin().await.map_err(sql)?;
            // `Executor::execute` rather than `raw_sql(..).execute(..)`: the latter's
            // lifetime bounds make every future awaiting this one fail to prove `Send`
            // (launchbadge/sqlx#3150).
            (&mut *tx).execute(*migration).await.map_err(sql)?;
            (&mut *tx)
                .execute(format!("PRAGMA user_version = {}", i + 1).as_str())
                .await
                .map_err(sql)?;
            tx.commit().await.map_err(sql)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_migrates_and_reopens() {
        let dir = std::env::temp_dir().join(format!("lintas-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).await.expect("open");
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(store.pool())
            .await
            .expect("version");
        assert_eq!(version, migrations::ALL.len() as i64);
        store.pool().close().await;
        let again = Store::open(&dir).await.expect("reopen");
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(again.pool())
        .await
        .expect("tables");
        assert_eq!(
            tables,
            [
                "relay_applications",
                "relay_batches",
                "relay_dead_letters",
                "relay_destinations",
                "relay_routes",
                "relay_unmatched",
                "watch_alerts",
                "watch_targets",
                "watch_transitions",
                "watch_users"
            ]
        );
        again.pool().close().await;
        sqlx::raw_sql("PRAGMA user_version = 99")
            .execute(
                &mut <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
                    "sqlite://{}",
                    dir.join("lintas.db").display()
                ))
                .await
                .expect("conn"),
            )
            .await
            .expect("bump");
        let err = Store::open(&dir).await.expect_err("too new");
        assert!(err.to_string().contains("has schema version 99"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_data_directory_and_database_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        let dir = std::env::temp_dir().join(format!("lintas-store-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data_dir = dir.join("data");
        let store = Store::open(&data_dir).await.expect("open");
        sqlx::raw_sql("INSERT INTO watch_users (chat_id, name, email, step, created_ms) VALUES (1, 'a', 'a@example.com', 'done', 0)")
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
