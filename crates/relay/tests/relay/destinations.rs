//! One suite of destination behaviours, run against every SQL kind: each behaviour is an
//! `async fn(Kind)`, and [`on_every_kind`] instantiates it as a test per kind
//! (`destinations::postgres::…`, `destinations::mariadb::…`, `destinations::sqlite::…`), so
//! a behaviour cannot be written for one database and forgotten for another.
//!
//! Tables are created with one DDL for all three (SQLite takes any type name and gives it an
//! affinity); where a database stores a value its own way (booleans, decimals) the
//! expectation says so per kind, and every assertion is on exact row contents.

use std::path::{Path, PathBuf};

use http::Method;
use relay::status::State;
use serde_json::json;
use testkit::link::Link;
use testkit::scratch::{Scratch, Server};
use testkit::{PATIENCE, TempDir, wait_until};

use crate::harness::{
    KEY, Node, application, config, destination, flat, route, route_from, sqlite, sqlite_rows,
};

/// The SQL databases the relay delivers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Postgres,
    Mariadb,
    Sqlite,
}

impl Kind {
    /// The destination's `kind` in the configuration.
    fn config_name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mariadb => "mysql",
            Self::Sqlite => "sqlite",
        }
    }

    /// `column` as text in a SELECT.
    fn text(self, column: &str) -> String {
        match self {
            Self::Postgres => format!("{column}::text"),
            Self::Mariadb => format!("CAST({column} AS CHAR)"),
            Self::Sqlite => format!("CAST({column} AS TEXT)"),
        }
    }

    /// The value this kind stores, where the kinds differ.
    fn per_kind<'a>(self, postgres: &'a str, mariadb: &'a str, sqlite: &'a str) -> &'a str {
        match self {
            Self::Postgres => postgres,
            Self::Mariadb => mariadb,
            Self::Sqlite => sqlite,
        }
    }
}

/// A scratch database of one kind, with the tables of `ddl`.
struct Db {
    kind: Kind,
    /// The URL the relay is given.
    url: String,
    /// The server's scratch database; none for SQLite.
    scratch: Option<Scratch>,
    /// The SQLite file's URL (the relay's may point where no file is yet).
    file: String,
}

impl Db {
    async fn new(kind: Kind, dir: &Path, ddl: &str) -> Self {
        let server = match kind {
            Kind::Postgres => Server::Postgres,
            Kind::Mariadb => Server::Mysql,
            Kind::Sqlite => {
                let url = sqlite(dir, "dest.db", ddl).await;
                return Self {
                    kind,
                    url: url.clone(),
                    scratch: None,
                    file: url,
                };
            }
        };
        let scratch = Scratch::create(server).await.unwrap();
        for statement in ddl.split(';').filter(|s| !s.trim().is_empty()) {
            scratch.exec(statement).await.unwrap();
        }
        Self {
            kind,
            url: scratch.url.clone(),
            scratch: Some(scratch),
            file: String::new(),
        }
    }

    async fn exec(&self, sql: &str) {
        match &self.scratch {
            Some(s) => s.exec(sql).await.unwrap(),
            None => {
                let pool = sqlx::SqlitePool::connect(&self.file).await.unwrap();
                sqlx::raw_sql(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// Rows of `sql`, NULL as "NULL".
    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match &self.scratch {
            Some(s) => flat(s.rows(sql).await.unwrap()),
            None => flat(sqlite_rows(&self.file, sql).await),
        }
    }

    /// `[[destinations]]` entry named `db`.
    fn destination(&self) -> String {
        destination("db", self.kind.config_name(), &self.url)
    }
}

/// A relay delivering `shop`'s records over `routes` (to the destination `db`, with any
/// further applications they need) into a new database of one kind made with `ddl`.
struct Run {
    /// Holds the SQLite file and the relay's data until the test ends.
    dir: TempDir,
    db: Db,
    node: Node,
    /// The relay's configuration, to start it again.
    text: String,
}

async fn run(kind: Kind, ddl: &str, routes: &[String]) -> Run {
    let dir = TempDir::new();
    let db = Db::new(kind, dir.path(), ddl).await;
    let text = config(&format!("{}{}", db.destination(), routes.concat()));
    let node = Node::start(&dir.path().join("data"), &text).await;
    Run {
        dir,
        db,
        node,
        text,
    }
}

/// Every behaviour below, one test per kind.
macro_rules! on_every_kind {
    ($($behaviour:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test] async fn $behaviour() { super::$behaviour(super::Kind::Postgres).await; })*
        }
        mod mariadb {
            $(#[tokio::test] async fn $behaviour() { super::$behaviour(super::Kind::Mariadb).await; })*
        }
        mod sqlite {
            $(#[tokio::test] async fn $behaviour() { super::$behaviour(super::Kind::Sqlite).await; })*
        }
    };
}

on_every_kind!(
    upsert_update_and_delete_land_in_record_order,
    json_values_are_converted_to_each_column_type,
    columns_are_mapped_and_other_fields_ignored,
    a_dropped_column_dead_letters_only_that_routes_records,
    an_unreachable_database_holds_records_until_it_is_back,
    retried_requests_and_restarts_write_no_row_twice,
);

/// Upserts, updates and deletes from three applications, applied in record order.
async fn upsert_update_and_delete_land_in_record_order(kind: Kind) {
    let columns = "sku = \"sku\", qty = \"qty\", note = \"note\"";
    let Run {
        dir: _dir,
        db,
        node,
        ..
    } = run(
        kind,
        "CREATE TABLE stock (sku varchar(20) PRIMARY KEY, qty integer NOT NULL, note varchar(50))",
        &[
            application("updater", "key-update"),
            application("remover", "key-delete"),
            route("db", "stock", "upsert", columns, "\"sku\""),
            route_from("updater", "db", "stock", "update", columns, "\"sku\""),
            route_from(
                "remover",
                "db",
                "stock",
                "delete",
                "sku = \"sku\"",
                "\"sku\"",
            ),
        ],
    )
    .await;
    node.ingest(
        r#"[{"sku": "a", "qty": 1, "note": "first"}, {"sku": "b", "qty": 2}, {"sku": "a", "qty": 5},
            {"sku": "c", "qty": 9, "note": "gone soon"}]"#,
    )
    .await;
    node.ingest_as(
        "key-update",
        r#"[{"sku": "b", "note": "checked"}, {"sku": "z", "note": "no such row"}]"#,
    )
    .await;
    node.ingest_as("key-delete", r#"{"sku": "c"}"#).await;
    node.ingest(r#"{"sku": "c", "qty": 1}"#).await;
    node.ingest_as("key-delete", r#"{"sku": "c"}"#).await;
    node.wait_delivered().await;
    let q = format!(
        "SELECT sku, {}, note FROM stock ORDER BY sku",
        kind.text("qty")
    );
    assert_eq!(
        db.rows(&q).await,
        [["a", "5", "first"], ["b", "2", "checked"]]
    );
    node.stop().await;
}

/// JSON booleans, NULL, missing fields, Unicode, 64-bit integers and decimals, as each
/// kind stores them: a boolean is a word in a text column and the kind's boolean in a
/// boolean column; integers beyond 2^53 arrive exactly.
async fn json_values_are_converted_to_each_column_type(kind: Kind) {
    let ddl = "CREATE TABLE vals (id integer PRIMARY KEY, label varchar(20), flag boolean, big bigint, amount decimal(20,4), note varchar(50))";
    let columns = "id = \"id\", label = \"label\", flag = \"flag\", big = \"big\", amount = \"amount\", note = \"note\"";
    let Run {
        dir: _dir,
        db,
        node,
        ..
    } = run(kind, ddl, &[route("db", "vals", "insert", columns, "")]).await;
    node.ingest(
        r#"[{"id": 1, "label": true, "flag": true, "big": 9007199254740993, "amount": 12.5, "note": "é 🍵 名前"},
            {"id": 2, "label": false, "flag": false, "big": -9223372036854775808, "amount": "0.0001", "note": null},
            {"id": 3, "label": "it's \"quoted\"", "big": 0}]"#,
    )
    .await;
    node.wait_delivered().await;
    let q = format!(
        "SELECT {}, label, {}, {}, {}, note FROM vals ORDER BY id",
        kind.text("id"),
        kind.text("flag"),
        kind.text("big"),
        kind.text("amount")
    );
    let (yes, no) = (
        kind.per_kind("true", "1", "1"),
        kind.per_kind("false", "0", "0"),
    );
    assert_eq!(
        db.rows(&q).await,
        [
            [
                "1",
                "true",
                yes,
                "9007199254740993",
                kind.per_kind("12.5000", "12.5000", "12.5"),
                "é 🍵 名前"
            ],
            [
                "2",
                "false",
                no,
                "-9223372036854775808",
                kind.per_kind("0.0001", "0.0001", "0.0001"),
                "NULL"
            ],
            ["3", "it's \"quoted\"", "NULL", "0", "NULL", "NULL"],
        ]
    );
    node.stop().await;
}

/// Each field a route maps (`field = "column"`) lands in its column, under any name, and
/// fields no route maps are not written anywhere.
async fn columns_are_mapped_and_other_fields_ignored(kind: Kind) {
    let Run {
        dir: _dir,
        db,
        node,
        ..
    } = run(
        kind,
        "CREATE TABLE items (title varchar(100) NOT NULL, price decimal(10,2), kind varchar(20))",
        &[route(
            "db",
            "items",
            "insert",
            "name = \"title\", price = \"price\", category = \"kind\"",
            "",
        )],
    )
    .await;
    node.ingest(
        r#"[{"name": "Oolong", "price": 12.5, "category": "tea", "sub_category": "blue", "title": "ignored"},
            {"name": "Sencha \"first flush\"", "price": "7", "type": null}]"#,
    )
    .await;
    node.wait_delivered().await;
    let q = format!(
        "SELECT title, {}, kind FROM items ORDER BY title",
        kind.text("price")
    );
    assert_eq!(
        db.rows(&q).await,
        [
            ["Oolong", kind.per_kind("12.50", "12.50", "12.5"), "tea"],
            [
                "Sencha \"first flush\"",
                kind.per_kind("7.00", "7.00", "7"),
                "NULL"
            ],
        ]
    );
    // The offsets applied, written in the same transaction as the rows.
    let q = format!(
        "SELECT {} FROM lintas_applied_offsets",
        kind.text("next_offset")
    );
    assert_eq!(db.rows(&q).await, [["2"]]);
    node.stop().await;
}

/// A column dropped while the relay runs: the records of the route that writes it are
/// dead-lettered with the reason, and the route to another table of the same database
/// goes on.
async fn a_dropped_column_dead_letters_only_that_routes_records(kind: Kind) {
    let ddl = "CREATE TABLE items (name varchar(20) NOT NULL, note varchar(20)); CREATE TABLE audit (name varchar(20) NOT NULL)";
    let Run {
        dir: _dir,
        db,
        node,
        ..
    } = run(
        kind,
        ddl,
        &[
            route(
                "db",
                "items",
                "insert",
                "name = \"name\", note = \"note\"",
                "",
            ),
            route("db", "audit", "insert", "name = \"name\"", ""),
        ],
    )
    .await;
    node.ingest(r#"{"name": "a", "note": "kept"}"#).await;
    node.wait_delivered().await;
    db.exec("ALTER TABLE items DROP COLUMN note").await;
    node.ingest(r#"{"name": "b", "note": "lost"}"#).await;
    node.wait_delivered().await;
    assert_eq!(
        db.rows("SELECT name FROM items ORDER BY name").await,
        [["a"]]
    );
    assert_eq!(
        db.rows("SELECT name FROM audit ORDER BY name").await,
        [["a"], ["b"]]
    );
    let (status, dead) = node
        .admin(Method::GET, "/api/relay/deliveries?status=dead", "")
        .await;
    assert_eq!(status, 200, "{dead}");
    let dead = dead["dead"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (
            &dead[0]["destination"],
            &dead[0]["record_id"],
            &dead[0]["data_sent"]
        ),
        (
            &json!("db"),
            &json!(1),
            &json!({"name": "b", "note": "lost"})
        )
    );
    let error = dead[0]["error"].as_str().unwrap();
    assert!(error.contains("note"), "{error}");
    node.stop().await;
}

/// A database that cannot be reached (a cut link; for SQLite, a file in a directory that
/// is not there yet) is marked down and its records are held, none dead-lettered; once it
/// is back they are all written, once.
async fn an_unreachable_database_holds_records_until_it_is_back(kind: Kind) {
    let dir = TempDir::new();
    let ddl = "CREATE TABLE events (seq integer NOT NULL, body varchar(20))";
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let mut db = Db::new(kind, &staging, ddl).await;
    let later: PathBuf = dir.path().join("later");
    let link = match &db.scratch {
        Some(scratch) => {
            let link = Link::start(scratch.addr()).await.unwrap();
            db.url = scratch.url_via(link.addr());
            link.cut();
            Some(link)
        }
        None => {
            db.url = format!("sqlite://{}", later.join("dest.db").display());
            None
        }
    };
    let text = format!(
        "{}{}",
        db.destination(),
        route(
            "db",
            "events",
            "insert",
            "seq = \"seq\", body = \"body\"",
            ""
        )
    );
    let node = Node::start(&dir.path().join("data"), &config(&text)).await;
    let id = node.relay.catalog().destination("db").unwrap().id;
    node.ingest(r#"[{"seq": 1, "body": "x"}, {"seq": 2, "body": "y"}]"#)
        .await;
    wait_until("the database to be marked down", PATIENCE, || async {
        node.relay
            .status(id)
            .is_some_and(|s| s.state == State::Down && s.last_error.is_some())
    })
    .await;
    let (_, dead) = node
        .admin(Method::GET, "/api/relay/deliveries?status=dead", "")
        .await;
    assert_eq!(dead["dead"], json!([]));
    match &link {
        Some(link) => link.restore(),
        // The database appears whole, table and all, in one rename.
        None => {
            std::fs::rename(&staging, &later).unwrap();
            db.file = format!("sqlite://{}", later.join("dest.db").display());
        }
    }
    node.ingest(r#"{"seq": 3, "body": "z"}"#).await;
    node.wait_delivered().await;
    let q = format!("SELECT {}, body FROM events ORDER BY seq", kind.text("seq"));
    assert_eq!(db.rows(&q).await, [["1", "x"], ["2", "y"], ["3", "z"]]);
    node.stop().await;
}

/// A producer's retry with its Idempotency-Key, and a restart of the relay, write no row
/// twice into a table without keys (where a second write would be a second row).
async fn retried_requests_and_restarts_write_no_row_twice(kind: Kind) {
    let Run {
        dir,
        db,
        node,
        text,
    } = run(
        kind,
        "CREATE TABLE events (seq integer NOT NULL)",
        &[route("db", "events", "insert", "seq = \"seq\"", "")],
    )
    .await;
    let auth = format!("Bearer {KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "batch-1"),
    ];
    let body = r#"[{"seq": 1}, {"seq": 2}]"#;
    for _ in 0..3 {
        let r = node.post_with(&headers, body).await;
        assert_eq!((r.status, r.body.as_str()), (202, r#"{"ids":[0,1]}"#));
    }
    node.wait_delivered().await;
    node.stop().await;
    let node = Node::start(&dir.path().join("data"), &text).await;
    let r = node.post_with(&headers, body).await;
    assert_eq!((r.status, r.body.as_str()), (202, r#"{"ids":[0,1]}"#));
    node.ingest(r#"{"seq": 3}"#).await;
    node.wait_delivered().await;
    let q = format!("SELECT {} FROM events ORDER BY seq", kind.text("seq"));
    assert_eq!(db.rows(&q).await, [["1"], ["2"], ["3"]]);
    node.stop().await;
}
