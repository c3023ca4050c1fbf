//! Applications, destinations and routes: kept in the store, read through an in-memory
//! snapshot that ingest and the delivery workers consult without touching the database.
//!
//! Every change goes to the store first and then replaces the whole snapshot
//! ([`Catalog::load`]), so readers always see one consistent set of objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use configkit::KeyPath;
use serde::Serialize;
use sqlx::{Row, SqlitePool};

use crate::config::{DestinationSpec, Kind, RelayConfig, RouteSpec, operation};
use crate::keys;
use crate::sql::Operation;

/// An application that may POST records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Application {
    /// Stable id (records carry it, so renaming would not orphan them).
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Declared in the configuration file (read-only through the API).
    pub declared: bool,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: i64,
    /// When its key last changed, if ever.
    pub rotated_ms: Option<i64>,
}

/// A destination database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// Stable id; also its row in each database's `lintas_applied_offsets`.
    pub id: i64,
    /// What it is and how to reach it.
    #[serde(flatten)]
    pub spec: DestinationSpec,
    /// The stream offset it starts from: records older than the destination are not its.
    pub start_offset: u64,
    /// Its password, encrypted (given through the admin API).
    #[serde(skip)]
    pub password_enc: Option<String>,
    /// Declared in the configuration file.
    pub declared: bool,
}

/// A route from an application to a destination table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Stable id.
    pub id: i64,
    /// The application's id.
    #[serde(skip)]
    pub application_id: i64,
    /// The destination's id.
    #[serde(skip)]
    pub destination_id: i64,
    /// What it does, with names.
    #[serde(flatten)]
    pub spec: RouteSpec,
    /// Fields feeding the key columns, in key order.
    #[serde(skip)]
    pub key_fields: Vec<String>,
    /// Declared in the configuration file.
    pub declared: bool,
}

/// One consistent view of every relay object.
#[derive(Debug, Default)]
pub struct Catalog {
    applications: BTreeMap<i64, Arc<Application>>,
    by_key: HashMap<[u8; 32], i64>,
    destinations: BTreeMap<i64, Arc<Destination>>,
    routes: BTreeMap<i64, Arc<Route>>,
}

/// A change the catalog refuses.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// An object of that name exists.
    #[error("{0}")]
    Conflict(String),
    /// The object comes from the configuration file.
    #[error("{0} is declared in the configuration file; change it there and reload")]
    Declared(String),
    /// The request names something that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
}

/// A declaration in the file that cannot be applied, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclError {
    /// The key at fault.
    pub at: KeyPath,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Catalog {
    /// Reads every object from the store.
    pub async fn load(pool: &SqlitePool) -> Result<Self, sqlx::Error> {
        let mut cat = Self::default();
        for row in sqlx::query(
            "SELECT id, name, key_hash, declared, created_ms, rotated_ms FROM relay_applications",
        )
        .fetch_all(pool)
        .await?
        {
            let app = Application {
                id: row.get(0),
                name: row.get(1),
                declared: row.get(3),
                created_ms: row.get(4),
                rotated_ms: row.get(5),
            };
            let hash: Vec<u8> = row.get(2);
            if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                cat.by_key.insert(hash, app.id);
            }
            cat.applications.insert(app.id, Arc::new(app));
        }
        for row in sqlx::query(
            "SELECT id, name, kind, url, password_env, max_connections, start_offset, declared, password_enc FROM relay_destinations",
        )
        .fetch_all(pool)
        .await?
        {
            let kind: String = row.get(2);
            let declared: bool = row.get(7);
            let d = Destination {
                id: row.get(0),
                spec: DestinationSpec {
                    name: row.get(1),
                    kind: Kind::parse(&kind).unwrap_or(Kind::Sqlite),
                    url: row.get(3),
                    // Only the file may name environment variables; a row the admin API
                    // stored before it refused them does not get to read one.
                    password_env: if declared { row.get(4) } else { None },
                    password: None,
                    max_connections: row.get::<i64, _>(5) as u32,
                },
                start_offset: row.get::<i64, _>(6) as u64,
                password_enc: row.get(8),
                declared,
            };
            cat.destinations.insert(d.id, Arc::new(d));
        }
        for row in sqlx::query(
            "SELECT id, application_id, destination_id, table_schema, table_name, operation, columns, keys, declared FROM relay_routes",
        )
        .fetch_all(pool)
        .await?
        {
            let (application_id, destination_id): (i64, i64) = (row.get(1), row.get(2));
            let (Some(app), Some(dest)) = (
                cat.applications.get(&application_id),
                cat.destinations.get(&destination_id),
            ) else {
                continue;
            };
            let op: String = row.get(5);
            let columns: String = row.get(6);
            let keys: String = row.get(7);
            let spec = RouteSpec {
                application: app.name.clone(),
                destination: dest.spec.name.clone(),
                schema: row.get(3),
                table: row.get(4),
                operation: operation::parse(&op).unwrap_or(Operation::Insert),
                columns: serde_json::from_str(&columns).unwrap_or_default(),
                keys: serde_json::from_str(&keys).unwrap_or_default(),
            };
            let route = Route {
                id: row.get(0),
                application_id,
                destination_id,
                key_fields: spec.key_fields(),
                spec,
                declared: row.get(8),
            };
            cat.routes.insert(route.id, Arc::new(route));
        }
        Ok(cat)
    }

    /// The application whose key hashes to `hash`.
    pub fn application_by_key(&self, hash: &[u8; 32]) -> Option<&Arc<Application>> {
        self.by_key
            .get(hash)
            .and_then(|id| self.applications.get(id))
    }

    /// Every application, by id.
    pub fn applications(&self) -> impl Iterator<Item = &Arc<Application>> {
        self.applications.values()
    }

    /// The application called `name`.
    pub fn application(&self, name: &str) -> Option<&Arc<Application>> {
        self.applications.values().find(|a| a.name == name)
    }

    /// The application with this id.
    pub fn application_by_id(&self, id: i64) -> Option<&Arc<Application>> {
        self.applications.get(&id)
    }

    /// Every destination, by id.
    pub fn destinations(&self) -> impl Iterator<Item = &Arc<Destination>> {
        self.destinations.values()
    }

    /// The destination called `name`.
    pub fn destination(&self, name: &str) -> Option<&Arc<Destination>> {
        self.destinations.values().find(|d| d.spec.name == name)
    }

    /// The destination with this id.
    pub fn destination_by_id(&self, id: i64) -> Option<&Arc<Destination>> {
        self.destinations.get(&id)
    }

    /// Every route, by id.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// The route with this id.
    pub fn route(&self, id: i64) -> Option<&Arc<Route>> {
        self.routes.get(&id)
    }

    /// The routes taking `application`'s records.
    pub fn routes_from(&self, application: i64) -> impl Iterator<Item = &Arc<Route>> {
        self.routes
            .values()
            .filter(move |r| r.application_id == application)
    }

    /// The routes writing to `destination`.
    pub fn routes_to(&self, destination: i64) -> impl Iterator<Item = &Arc<Route>> {
        self.routes
            .values()
            .filter(move |r| r.destination_id == destination)
    }
}

/// Writes the file's declarations to the store: creates or updates what is declared, and
/// removes what was declared before but no longer is. Objects created through the API are
/// left alone unless the file now declares the same name (the file wins).
pub async fn sync_declared(
    pool: &SqlitePool,
    cfg: &RelayConfig,
    at: &KeyPath,
    log_end: u64,
) -> Result<(), DeclError> {
    let store = |e: sqlx::Error| DeclError {
        at: at.clone(),
        message: format!("store: {e}"),
    };
    let mut tx = pool.begin().await.map_err(store)?;
    let now = now_ms();
    let mut app_ids = HashMap::new();
    for (i, app) in cfg.applications.iter().enumerate() {
        let here = at.key("applications").index(i);
        let hash = match (&app.key_env, &app.key_sha256) {
            (Some(var), _) => match std::env::var(var) {
                Ok(key) if !key.is_empty() => keys::hash(&key),
                _ => {
                    return Err(DeclError {
                        at: here.key("key_env"),
                        message: format!(
                            "environment variable {var} is not set; export the application's API key in it"
                        ),
                    });
                }
            },
            (None, Some(hex)) => keys::parse_sha256(hex).unwrap_or_default(),
            (None, None) => continue,
        };
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO relay_applications (name, key_hash, declared, created_ms) VALUES (?, ?, 1, ?)
             ON CONFLICT (name) DO UPDATE SET key_hash = excluded.key_hash, declared = 1
             RETURNING id",
        )
        .bind(&app.name)
        .bind(hash.as_slice())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| DeclError {
            at: here.key("name"),
            message: format!("cannot store application `{}`: {e}", app.name),
        })?;
        app_ids.insert(app.name.clone(), id);
    }
    let mut dest_ids = HashMap::new();
    for (i, d) in cfg.destinations.iter().enumerate() {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO relay_destinations (name, kind, url, password_env, max_connections, start_offset, declared, created_ms)
             VALUES (?, ?, ?, ?, ?, ?, 1, ?)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, url = excluded.url,
                 password_env = excluded.password_env, max_connections = excluded.max_connections, declared = 1, password_enc = NULL
             RETURNING id",
        )
        .bind(&d.name)
        .bind(d.kind.as_str())
        .bind(&d.url)
        .bind(&d.password_env)
        .bind(i64::from(d.max_connections))
        .bind(log_end as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| DeclError {
            at: at.key("destinations").index(i).key("name"),
            message: format!("cannot store destination `{}`: {e}", d.name),
        })?;
        dest_ids.insert(d.name.clone(), id);
    }
    let mut route_ids = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let here = at.key("routes").index(i);
        let application_id = lookup_id(&mut tx, &app_ids, "relay_applications", &r.application)
            .await
            .map_err(store)?
            .ok_or_else(|| DeclError {
                at: here.key("application"),
                message: format!("no application `{}`; declare it in [[relay.applications]] or create it through the admin API", r.application),
            })?;
        let destination_id = lookup_id(&mut tx, &dest_ids, "relay_destinations", &r.destination)
            .await
            .map_err(store)?
            .ok_or_else(|| DeclError {
                at: here.key("destination"),
                message: format!("no destination `{}`; declare it in [[relay.destinations]] or create it through the admin API", r.destination),
            })?;
        let existing: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM relay_routes WHERE declared = 1 AND application_id = ? AND destination_id = ?
             AND table_schema IS ? AND table_name = ? AND operation = ? AND id NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(application_id)
        .bind(destination_id)
        .bind(&r.schema)
        .bind(&r.table)
        .bind(operation::name(r.operation))
        .bind(serde_json::to_string(&route_ids).unwrap_or_default())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store)?;
        let columns = serde_json::to_string(&r.columns).unwrap_or_default();
        let keys = serde_json::to_string(&r.keys).unwrap_or_default();
        let id = match existing {
            Some(id) => {
                sqlx::query("UPDATE relay_routes SET columns = ?, keys = ? WHERE id = ?")
                    .bind(&columns)
                    .bind(&keys)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(store)?;
                id
            }
            None => insert_route(&mut tx, application_id, destination_id, r, true)
                .await
                .map_err(store)?,
        };
        route_ids.push(id);
    }
    let declared_routes = serde_json::to_string(&route_ids).unwrap_or_default();
    sqlx::query(
        "DELETE FROM relay_routes WHERE declared = 1 AND id NOT IN (SELECT value FROM json_each(?))",
    )
    .bind(declared_routes)
    .execute(&mut *tx)
    .await
    .map_err(store)?;
    for (table, ids) in [
        (
            "relay_destinations",
            dest_ids.values().copied().collect::<Vec<_>>(),
        ),
        ("relay_applications", app_ids.values().copied().collect()),
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE declared = 1 AND id NOT IN (SELECT value FROM json_each(?))"
        ))
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .map_err(store)?;
    }
    tx.commit().await.map_err(store)
}

async fn lookup_id(
    tx: &mut sqlx::SqliteConnection,
    declared: &HashMap<String, i64>,
    table: &str,
    name: &str,
) -> Result<Option<i64>, sqlx::Error> {
    if let Some(id) = declared.get(name) {
        return Ok(Some(*id));
    }
    sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE name = ?"))
        .bind(name)
        .fetch_optional(tx)
        .await
}

async fn insert_route(
    tx: &mut sqlx::SqliteConnection,
    application_id: i64,
    destination_id: i64,
    r: &RouteSpec,
    declared: bool,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO relay_routes (application_id, destination_id, table_schema, table_name, operation, columns, keys, declared, created_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(application_id)
    .bind(destination_id)
    .bind(&r.schema)
    .bind(&r.table)
    .bind(operation::name(r.operation))
    .bind(serde_json::to_string(&r.columns).unwrap_or_default())
    .bind(serde_json::to_string(&r.keys).unwrap_or_default())
    .bind(declared)
    .bind(now_ms())
    .fetch_one(tx)
    .await
}

/// Changes made through the admin API.
pub mod edit {
    use super::*;

    fn unique(e: sqlx::Error, what: String) -> CatalogError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => CatalogError::Conflict(what),
            _ => CatalogError::Store(e),
        }
    }

    /// Creates an application; returns its id and its key (shown once, never stored).
    pub async fn create_application(pool: &SqlitePool, name: &str) -> Result<String, CatalogError> {
        if name.trim().is_empty() {
            return Err(CatalogError::Invalid("an application needs a name".into()));
        }
        let key = keys::generate();
        sqlx::query("INSERT INTO relay_applications (name, key_hash, created_ms) VALUES (?, ?, ?)")
            .bind(name)
            .bind(keys::hash(&key).as_slice())
            .bind(now_ms())
            .execute(pool)
            .await
            .map_err(|e| unique(e, format!("application `{name}` exists")))?;
        Ok(key)
    }

    /// Gives `app` a new key; the old one stops working at once.
    pub async fn rotate_key(pool: &SqlitePool, app: &Application) -> Result<String, CatalogError> {
        if app.declared {
            return Err(CatalogError::Declared(format!(
                "application `{}`",
                app.name
            )));
        }
        let key = keys::generate();
        sqlx::query("UPDATE relay_applications SET key_hash = ?, rotated_ms = ? WHERE id = ?")
            .bind(keys::hash(&key).as_slice())
            .bind(now_ms())
            .bind(app.id)
            .execute(pool)
            .await?;
        Ok(key)
    }

    /// Creates a destination starting at stream offset `start`, with its encrypted
    /// password if it has one.
    pub async fn create_destination(
        pool: &SqlitePool,
        spec: &DestinationSpec,
        start: u64,
        password_enc: Option<String>,
    ) -> Result<(), CatalogError> {
        sqlx::query(
            "INSERT INTO relay_destinations (name, kind, url, password_env, max_connections, start_offset, created_ms, password_enc)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&spec.name)
        .bind(spec.kind.as_str())
        .bind(&spec.url)
        .bind(&spec.password_env)
        .bind(i64::from(spec.max_connections))
        .bind(start as i64)
        .bind(now_ms())
        .bind(password_enc)
        .execute(pool)
        .await
        .map_err(|e| unique(e, format!("destination `{}` exists", spec.name)))?;
        Ok(())
    }

    /// Changes a destination made through the API (kind, URL, connections, and the
    /// password when `password_enc` is given; otherwise the stored one stays). Its id, its
    /// start and the offsets its databases hold do not change.
    pub async fn update_destination(
        pool: &SqlitePool,
        destination: &Destination,
        spec: &DestinationSpec,
        password_enc: Option<String>,
    ) -> Result<(), CatalogError> {
        if destination.declared {
            return Err(CatalogError::Declared(format!(
                "destination `{}`",
                destination.spec.name
            )));
        }
        sqlx::query(
            "UPDATE relay_destinations SET kind = ?, url = ?, max_connections = ?,
                 password_enc = COALESCE(?, password_enc) WHERE id = ?",
        )
        .bind(spec.kind.as_str())
        .bind(&spec.url)
        .bind(i64::from(spec.max_connections))
        .bind(password_enc)
        .bind(destination.id)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Creates a route between existing objects; returns its id.
    pub async fn create_route(
        pool: &SqlitePool,
        application: &Application,
        destination: &Destination,
        spec: &RouteSpec,
    ) -> Result<i64, CatalogError> {
        let mut conn = pool.acquire().await?;
        Ok(insert_route(&mut conn, application.id, destination.id, spec, false).await?)
    }

    /// Deletes a row of `table` by id, unless it was declared in the file.
    pub async fn delete(
        pool: &SqlitePool,
        table: &'static str,
        id: i64,
        what: String,
        declared: bool,
    ) -> Result<(), CatalogError> {
        if declared {
            return Err(CatalogError::Declared(what));
        }
        sqlx::query(&format!("DELETE FROM {table} WHERE id = ?"))
            .bind(id)
            .execute(pool)
            .await?;
        Ok(())
    }
}
