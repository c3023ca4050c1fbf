//! Delivery scenarios across databases: each destination its own columns, refused records
//! dead-lettered and replayed, unmatched updates shown as such. What every SQL kind must do
//! alike is in `destinations`.

use http::Method;
use testkit::TempDir;
use testkit::scratch::{Scratch, Server};

use crate::harness::{
    Node, application, config, destination, flat, route, route_from, sqlite, sqlite_rows,
};

/// The users' example: one record, db1 takes name and price, db2 name, category and type.
#[tokio::test]
async fn each_destination_takes_only_its_own_columns() {
    let dir = TempDir::new();
    let db1 = Scratch::create(Server::Postgres).await.unwrap();
    db1.exec("CREATE TABLE items (name text NOT NULL, price numeric(10,2))")
        .await
        .unwrap();
    let db2 = Scratch::create(Server::Mysql).await.unwrap();
    db2.exec(
        "CREATE TABLE items (name varchar(100) NOT NULL, category varchar(50), type varchar(50))",
    )
    .await
    .unwrap();
    let text = config(&format!(
        "{}{}{}{}",
        destination("db1", "postgres", &db1.url),
        destination("db2", "mysql", &db2.url),
        route(
            "db1",
            "items",
            "insert",
            "name = \"name\", price = \"price\"",
            ""
        ),
        route(
            "db2",
            "items",
            "insert",
            "name = \"name\", category = \"category\", type = \"type\"",
            ""
        ),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    node.ingest(
        r#"[{"name": "Oolong", "price": 12.5, "category": "tea", "sub_category": "blue", "type": "leaf"},
            {"name": "Sencha \"first flush\"", "price": "7", "category": "tea", "type": null},
            {"name": "Cup", "price": 3.25, "category": "ware", "sub_category": "glass", "type": "glass"}]"#,
    )
    .await;
    node.wait_delivered().await;
    assert_eq!(
        flat(
            db1.rows("SELECT name, price::text FROM items ORDER BY name")
                .await
                .unwrap()
        ),
        [
            ["Cup", "3.25"],
            ["Oolong", "12.50"],
            ["Sencha \"first flush\"", "7.00"]
        ]
    );
    assert_eq!(
        flat(
            db2.rows("SELECT name, category, type FROM items ORDER BY name")
                .await
                .unwrap()
        ),
        [
            ["Cup", "ware", "glass"],
            ["Oolong", "tea", "leaf"],
            ["Sencha \"first flush\"", "tea", "NULL"]
        ]
    );
    // The offsets each database applied, in the same transaction as the rows.
    assert_eq!(
        flat(
            db1.rows("SELECT next_offset::text FROM lintas_applied_offsets")
                .await
                .unwrap()
        ),
        [["3"]]
    );
    node.stop().await;
}

/// A record the database refuses is dead-lettered with the database's error while the
/// records around it are written; after the fix it is replayed.
#[tokio::test]
async fn a_refused_record_is_dead_lettered_and_replayed_after_a_fix() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    pg.exec("CREATE TABLE items (name text PRIMARY KEY, price numeric CONSTRAINT price_positive CHECK (price >= 0))")
        .await
        .unwrap();
    let my = Scratch::create(Server::Mysql).await.unwrap();
    my.exec("CREATE TABLE items (name varchar(20) PRIMARY KEY, qty int NOT NULL)")
        .await
        .unwrap();
    let text = config(&format!(
        "{}{}{}{}",
        destination("pg", "postgres", &pg.url),
        destination("my", "mysql", &my.url),
        route(
            "pg",
            "items",
            "insert",
            "name = \"name\", price = \"price\"",
            ""
        ),
        route(
            "my",
            "items",
            "insert",
            "name = \"name\", qty = \"qty\"",
            ""
        ),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    node.ingest(
        r#"[{"name": "a", "price": 1, "qty": 1}, {"name": "b", "price": -2.00000000000000000001, "qty": 2},
            {"name": "c", "price": 3, "qty": "three"}, {"name": "d", "price": 4, "qty": 4}]"#,
    )
    .await;
    node.ingest(r#"{"name": "e", "price": 5, "qty": 5}"#).await;
    node.wait_delivered().await;
    assert_eq!(
        flat(
            pg.rows("SELECT name, price::text FROM items ORDER BY name")
                .await
                .unwrap()
        ),
        [["a", "1"], ["c", "3"], ["d", "4"], ["e", "5"]]
    );
    assert_eq!(
        flat(
            my.rows("SELECT name, CAST(qty AS CHAR) FROM items ORDER BY name")
                .await
                .unwrap()
        ),
        [["a", "1"], ["b", "2"], ["d", "4"], ["e", "5"]]
    );
    let (status, dead) = node
        .admin(Method::GET, "/api/relay/deliveries?status=dead", "")
        .await;
    assert_eq!(status, 200, "{dead}");
    let dead = dead["dead"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let pg_letter = dead.iter().find(|d| d["destination"] == "pg").unwrap();
    assert_eq!(pg_letter["record_id"], 1);
    assert_eq!(pg_letter["status"], "dead");
    // As sent, digit for digit (an `f64` would make the price -2.0).
    let (status, raw) = node
        .admin_text(
            Method::GET,
            "/api/relay/deliveries?status=dead&destination=pg",
        )
        .await;
    assert_eq!(status, 200, "{raw}");
    assert!(
        raw.contains(r#""data_sent":{"name": "b", "price": -2.00000000000000000001, "qty": 2}"#),
        "{raw}"
    );
    assert_eq!(
        pg_letter["row"],
        serde_json::json!({"name": "b", "price": "-2.00000000000000000001"})
    );
    let error = pg_letter["error"].as_str().unwrap();
    assert!(
        error.contains("violates check constraint \"price_positive\""),
        "{error}"
    );
    let my_letter = dead.iter().find(|d| d["destination"] == "my").unwrap();
    assert_eq!(my_letter["record_id"], 2);
    let error = my_letter["error"].as_str().unwrap();
    assert!(
        error.contains("Incorrect integer value: 'three' for column"),
        "{error}"
    );

    // Replaying before the fix is refused again, with the database's error.
    let (status, body) = node
        .admin(Method::POST, "/api/relay/dead-letters/pg/1/replay", "")
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the database refused the record again: "),
        "{body}"
    );
    pg.exec("ALTER TABLE items DROP CONSTRAINT price_positive")
        .await
        .unwrap();
    let (status, body) = node
        .admin(Method::POST, "/api/relay/dead-letters/pg/1/replay", "")
        .await;
    assert_eq!((status, body), (200, serde_json::json!({"replayed": 1})));
    assert_eq!(
        flat(
            pg.rows("SELECT name, price::text FROM items WHERE name = 'b'")
                .await
                .unwrap()
        ),
        [["b", "-2.00000000000000000001"]]
    );
    let (_, record) = node.admin(Method::GET, "/api/relay/records/1", "").await;
    let pg_delivery = record["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination"] == "pg")
        .unwrap()
        .clone();
    assert_eq!(pg_delivery["status"], "replayed");
    let (status, raw) = node.admin_text(Method::GET, "/api/relay/records/1").await;
    assert_eq!(status, 200, "{raw}");
    assert!(
        raw.contains(r#""data_sent":{"name": "b", "price": -2.00000000000000000001, "qty": 2}"#),
        "{raw}"
    );
    node.stop().await;
}

/// An update or delete whose key matches no row is not logged as written: the delivery log
/// counts the rows the database changed, and the record shows "no matching row".
#[tokio::test]
async fn updates_and_deletes_matching_no_row_are_shown_as_such() {
    let dir = TempDir::new();
    let lite = sqlite(
        dir.path(),
        "stock.db",
        "CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL); INSERT INTO stock VALUES ('a', 1), ('b', 2)",
    )
    .await;
    let text = config(&format!(
        "{}{}{}{}",
        application("remover", "key-delete"),
        destination("lite", "sqlite", &lite),
        route(
            "lite",
            "stock",
            "update",
            "sku = \"sku\", qty = \"qty\"",
            "\"sku\""
        ),
        route_from(
            "remover",
            "lite",
            "stock",
            "delete",
            "sku = \"sku\"",
            "\"sku\""
        ),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    let updated = node
        .ingest(r#"[{"sku": "a", "qty": 5}, {"sku": "z", "qty": 9}]"#)
        .await;
    node.wait_delivered().await;
    let deleted = node.ingest_as("key-delete", r#"{"sku": "nope"}"#).await;
    node.wait_delivered().await;
    let deleted_both = node
        .ingest_as("key-delete", r#"[{"sku": "b"}, {"sku": "gone"}]"#)
        .await;
    node.wait_delivered().await;
    assert_eq!(
        flat(sqlite_rows(&lite, "SELECT sku, CAST(qty AS TEXT) FROM stock").await),
        [["a", "5"]]
    );
    let (status, log) = node
        .admin(Method::GET, "/api/relay/deliveries?status=delivered", "")
        .await;
    assert_eq!(status, 200, "{log}");
    let mut counts: Vec<(String, u64, u64, u64)> = log["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["application"].as_str().unwrap().to_owned(),
                b["first_id"].as_u64().unwrap(),
                b["records"].as_u64().unwrap(),
                b["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("remover".to_owned(), deleted[0], 1, 0),
            ("remover".to_owned(), deleted_both[0], 2, 1),
            ("shop".to_owned(), updated[0], 2, 1),
        ]
    );
    let status_of = |id: u64| {
        let node = &node;
        async move {
            let (_, record) = node
                .admin(Method::GET, &format!("/api/relay/records/{id}"), "")
                .await;
            record["deliveries"][0]["status"].clone()
        }
    };
    assert_eq!(status_of(updated[0]).await, "delivered");
    assert_eq!(status_of(updated[1]).await, "no matching row");
    assert_eq!(status_of(deleted[0]).await, "no matching row");
    node.stop().await;
}
