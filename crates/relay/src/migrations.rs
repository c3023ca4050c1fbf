//! The relay's tables in the node's store: its objects, the delivery log, dead letters.
//!
//! Entries 1-3 were global store versions 1, 5 and 7 before each service tracked its own
//! (see `store`'s legacy mapping).

/// Every migration of the relay's tables, in order; handed to
/// [`store::Store::migrate`] under the name `"relay"`. Never edit an entry once released:
/// add one.
pub const MIGRATIONS: &[&str] = &[RELAY_OBJECTS, RELAY_PASSWORDS, RELAY_UNMATCHED, RELAY_ROWS];

/// Relay applications, destinations and routes; the delivery log (one row per delivered
/// batch and application, so successes cost one row per batch) and dead letters (one row per
/// rejected record, in full).
const RELAY_OBJECTS: &str = r#"
CREATE TABLE relay_applications (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash BLOB NOT NULL UNIQUE,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    rotated_ms INTEGER
);
CREATE TABLE relay_destinations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    password_env TEXT,
    max_connections INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE relay_routes (
    id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL REFERENCES relay_applications(id) ON DELETE CASCADE,
    destination_id INTEGER NOT NULL REFERENCES relay_destinations(id) ON DELETE CASCADE,
    table_schema TEXT,
    table_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    columns TEXT NOT NULL,
    keys TEXT NOT NULL,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE INDEX relay_routes_application ON relay_routes(application_id);
CREATE TABLE relay_batches (
    destination_id INTEGER NOT NULL,
    application_id INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    records INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX relay_batches_offsets ON relay_batches(destination_id, last_offset);
CREATE INDEX relay_batches_at ON relay_batches(at_ms);
CREATE TABLE relay_dead_letters (
    destination_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    application_id INTEGER NOT NULL,
    route_id INTEGER NOT NULL,
    error TEXT NOT NULL,
    data_sent TEXT NOT NULL,
    row_values TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, record_offset, route_id)
);
CREATE INDEX relay_dead_letters_at ON relay_dead_letters(at_ms);
"#;

/// Relay: destination passwords given through the admin API, encrypted.
const RELAY_PASSWORDS: &str = r#"
ALTER TABLE relay_destinations ADD COLUMN password_enc TEXT;
"#;

/// Relay: records whose update or delete matched no row at a destination (one row each,
/// only for those; kept for `retention` like the delivery log).
const RELAY_UNMATCHED: &str = r#"
CREATE TABLE relay_unmatched (
    destination_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    route_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, record_offset, route_id)
);
CREATE INDEX relay_unmatched_at ON relay_unmatched(at_ms);
"#;

/// Relay: the row each record wrote at each destination, as written, and when that
/// destination committed it — the delivery log's "data received" and "sent at", kept for
/// `retention` like the rest of the log (one row per record and route; a record whose route
/// changes later still shows what was written then).
///
/// Route ids key that log (and dead letters), so they must never be reused: SQLite hands a
/// deleted last row's id to the next insert unless the key is AUTOINCREMENT, which only a
/// rebuilt table can get. Nothing references `relay_routes`, so it is rebuilt in place.
const RELAY_ROWS: &str = r#"
CREATE TABLE relay_routes_rebuilt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    application_id INTEGER NOT NULL REFERENCES relay_applications(id) ON DELETE CASCADE,
    destination_id INTEGER NOT NULL REFERENCES relay_destinations(id) ON DELETE CASCADE,
    table_schema TEXT,
    table_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    columns TEXT NOT NULL,
    keys TEXT NOT NULL,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
INSERT INTO relay_routes_rebuilt (id, application_id, destination_id, table_schema, table_name, operation, columns, keys, declared, created_ms)
    SELECT id, application_id, destination_id, table_schema, table_name, operation, columns, keys, declared, created_ms FROM relay_routes;
DROP TABLE relay_routes;
ALTER TABLE relay_routes_rebuilt RENAME TO relay_routes;
CREATE INDEX relay_routes_application ON relay_routes(application_id);
CREATE TABLE relay_rows (
    destination_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    route_id INTEGER NOT NULL,
    row_values TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, record_offset, route_id)
);
CREATE INDEX relay_rows_at ON relay_rows(at_ms);
"#;

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Routes made before the rebuild keep their rows and ids, and an id once used is not
    /// handed out again, even after the route holding the largest one is deleted.
    #[tokio::test]
    async fn routes_survive_the_rebuild_and_their_ids_are_never_reused() {
        let dir = testkit::TempDir::new();
        let store = store::Store::open(dir.path()).await.unwrap();
        store.migrate("relay", &MIGRATIONS[..3]).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO relay_applications (id, name, key_hash, created_ms) VALUES (1, 'a', x'01', 0);
             INSERT INTO relay_destinations (id, name, kind, url, max_connections, start_offset, created_ms)
                 VALUES (1, 'd', 'sqlite', 'sqlite:///x', 1, 0, 0);
             INSERT INTO relay_routes (application_id, destination_id, table_name, operation, columns, keys, created_ms)
                 VALUES (1, 1, 't1', 'insert', '{}', '[]', 0), (1, 1, 't2', 'insert', '{}', '[]', 0);",
        )
        .execute(store.pool())
        .await
        .unwrap();
        store.migrate("relay", MIGRATIONS).await.unwrap();
        let routes: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, table_name FROM relay_routes ORDER BY id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(routes, [(1, "t1".to_owned()), (2, "t2".to_owned())]);
        sqlx::query("DELETE FROM relay_routes WHERE id = 2")
            .execute(store.pool())
            .await
            .unwrap();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO relay_routes (application_id, destination_id, table_name, operation, columns, keys, created_ms)
             VALUES (1, 1, 't3', 'insert', '{}', '[]', 0) RETURNING id",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(id, 3, "id 2 was used once and is not given again");
        // The foreign key to applications still holds: deleting one deletes its routes.
        sqlx::query("DELETE FROM relay_applications WHERE id = 1")
            .execute(store.pool())
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM relay_routes")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
