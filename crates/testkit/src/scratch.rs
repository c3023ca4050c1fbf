//! Scratch databases on the machine's real PostgreSQL and MariaDB: one fresh database per
//! test, dropped when the test ends, so tests running in parallel never see each other's
//! tables.
//!
//! Servers are found at `LINTAS_TEST_PG` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `LINTAS_TEST_MYSQL` (default `mysql://root@127.0.0.1:3306/mysql`); `scripts/test`
//! starts them when they are missing.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{AnyConnection, Connection, Row};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL.
    Postgres,
    /// MariaDB / MySQL.
    Mysql,
}

/// A database created for one test.
#[derive(Debug)]
pub struct Scratch {
    server: Server,
    admin_url: String,
    /// The database's name.
    pub name: String,
    /// A URL to it (no password).
    pub url: String,
}

fn admin_url(server: Server) -> String {
    match server {
        Server::Postgres => std::env::var("LINTAS_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        Server::Mysql => std::env::var("LINTAS_TEST_MYSQL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".into()),
    }
}

impl Scratch {
    /// Creates an empty database on `server`.
    pub async fn create(server: Server) -> Result<Self, sqlx::Error> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        sqlx::any::install_default_drivers();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "lintas_t_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = admin_url(server);
        let mut conn = AnyConnection::connect(&admin_url).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Ok(Self {
            server,
            admin_url,
            name,
            url,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        let authority = self
            .url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.rsplit('@').next())
            .unwrap_or_default();
        authority.parse().unwrap_or_else(|_| {
            std::net::SocketAddr::from((
                [127, 0, 0, 1],
                if self.server == Server::Postgres {
                    5432
                } else {
                    3306
                },
            ))
        })
    }

    /// The same database reached through another address (a [`crate::link::Link`]).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        self.url
            .replacen(&self.addr().to_string(), &addr.to_string(), 1)
    }

    /// Runs `sql` (one or more statements).
    pub async fn exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        let mut conn = AnyConnection::connect(&self.url).await?;
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        conn.close().await
    }

    /// The rows of `sql`, every column read as text (cast in the query: `x::text`,
    /// `CAST(x AS CHAR)`); NULL as `None`.
    pub async fn rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
        let mut conn = AnyConnection::connect(&self.url).await?;
        let rows = sqlx::query(sql).fetch_all(&mut conn).await?;
        conn.close().await?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<Option<String>, _>(i))
                    .collect()
            })
            .collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (server, url, name) = (self.server, self.admin_url.clone(), self.name.clone());
        // Dropping needs a connection; do it on a thread of its own so no runtime is needed.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = AnyConnection::connect(&url).await {
                    let sql = match server {
                        Server::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                        Server::Mysql => format!("DROP DATABASE IF EXISTS {name}"),
                    };
                    let _ = sqlx::raw_sql(&sql).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}
