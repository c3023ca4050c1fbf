//! One record cannot stop a destination: statements a live database refuses are dead
//! letters, a batch stuck on one record is capped or skipped by an operator, backoff grows
//! across reconnects, and one application's broken route does not hold the others.

use http::Method;
use relay::status::State;
use serde_json::{Value, json};
use testkit::scratch::{Scratch, Server};
use testkit::{PATIENCE, TempDir, wait_until};

use crate::harness::{
    Node, application, config, destination, flat, route, route_from, sqlite, sqlite_rows,
};

/// The dead letters of the node, oldest record first.
async fn dead_letters(node: &Node) -> Vec<Value> {
    let (status, body) = node
        .admin(Method::GET, "/api/relay/deliveries?status=dead", "")
        .await;
    assert_eq!(status, 200, "{body}");
    let mut dead = body["dead"].as_array().unwrap().clone();
    dead.sort_by_key(|d| d["record_id"].as_u64());
    dead
}

/// Waits until the node holds `n` dead letters and returns them.
async fn wait_dead(node: &Node, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} dead letters"), PATIENCE, || async {
        dead_letters(node).await.len() >= n
    })
    .await;
    dead_letters(node).await
}

/// Rows of a scratch database's query, NULL as "NULL".
async fn rows(db: &Scratch, sql: &str) -> Vec<Vec<String>> {
    flat(db.rows(sql).await.unwrap())
}

/// Waits for the one dead letter the node should hold, for `record`, with an error
/// holding `error`; returns it.
async fn one_dead_letter(node: &Node, record: u64, error: &str) -> Value {
    let dead = wait_dead(node, 1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["record_id"], record);
    let said = dead[0]["error"].as_str().unwrap();
    assert!(said.contains(error), "{said}");
    dead[0].clone()
}

/// 5,000 characters that do not compress, so PostgreSQL cannot shrink them under the
/// btree key limit.
fn incompressible() -> String {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..5_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// PostgreSQL refuses an index key over 2704 bytes with SQLSTATE 54000, which is not a data
/// error class: the server answers, so the record is a dead letter and its neighbours land.
#[tokio::test]
async fn postgres_index_refusing_one_key_dead_letters_only_that_record() {
    let dir = TempDir::new();
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    pg.exec("CREATE TABLE notes (id integer NOT NULL, body text); CREATE INDEX notes_body ON notes (body)")
        .await
        .unwrap();
    let text = config(&format!(
        "{}{}",
        destination("pg", "postgres", &pg.url),
        route("pg", "notes", "insert", "id = \"id\", body = \"body\"", ""),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    let body = json!([{"id": 1, "body": "short"}, {"id": 2, "body": incompressible()}, {"id": 3, "body": "also short"}]);
    node.ingest(&body.to_string()).await;
    node.wait_delivered().await;
    assert_eq!(
        rows(&pg, "SELECT id::text, body FROM notes ORDER BY id").await,
        [["1", "short"], ["3", "also short"]]
    );
    one_dead_letter(&node, 1, "index row size").await;
    node.stop().await;
}

/// SQLite's `json_extract` in a stored generated column fails on bad JSON with a plain
/// SQLITE_ERROR: that record is dead-lettered, the others are written.
#[tokio::test]
async fn sqlite_generated_column_on_bad_json_dead_letters_only_that_record() {
    let dir = TempDir::new();
    let lite = sqlite(
        dir.path(),
        "events.db",
        "CREATE TABLE events (id INTEGER NOT NULL, payload TEXT, name TEXT GENERATED ALWAYS AS (json_extract(payload, '$.name')) STORED)",
    )
    .await;
    let text = config(&format!(
        "{}{}",
        destination("lite", "sqlite", &lite),
        route(
            "lite",
            "events",
            "insert",
            "id = \"id\", payload = \"payload\"",
            ""
        ),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    node.ingest(
        r#"[{"id": 1, "payload": "{\"name\": \"a\"}"}, {"id": 2, "payload": "not json"},
            {"id": 3, "payload": "{\"name\": \"c\"}"}]"#,
    )
    .await;
    node.wait_delivered().await;
    assert_eq!(
        flat(
            sqlite_rows(
                &lite,
                "SELECT CAST(id AS TEXT), name FROM events ORDER BY id"
            )
            .await
        ),
        [["1", "a"], ["3", "c"]]
    );
    one_dead_letter(&node, 1, "malformed JSON").await;
    node.stop().await;
}

/// A MariaDB trigger that SIGNALs for one value (error 1644, outside the data errors)
/// dead-letters that record only.
#[tokio::test]
async fn mariadb_trigger_refusing_one_record_dead_letters_only_that_record() {
    let dir = TempDir::new();
    let my = Scratch::create(Server::Mysql).await.unwrap();
    my.exec("CREATE TABLE items (name varchar(20) NOT NULL)")
        .await
        .unwrap();
    my.exec(
        "CREATE TRIGGER no_bad BEFORE INSERT ON items FOR EACH ROW BEGIN IF NEW.name = 'bad' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bad is not an item'; END IF; END",
    )
    .await
    .unwrap();
    let text = config(&format!(
        "{}{}",
        destination("my", "mysql", &my.url),
        route("my", "items", "insert", "name = \"name\"", ""),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    node.ingest(r#"[{"name": "good"}, {"name": "bad"}, {"name": "fine"}]"#)
        .await;
    node.wait_delivered().await;
    assert_eq!(
        rows(&my, "SELECT name FROM items ORDER BY name").await,
        [["fine"], ["good"]]
    );
    one_dead_letter(&node, 1, "bad is not an item").await;
    node.stop().await;
}

/// A database that accepts connections but fails every batch (a read-only SQLite file):
/// the attempts keep counting across reconnects, so the backoff grows, and nothing is
/// dead-lettered for a fault of the database.
#[tokio::test]
async fn backoff_grows_across_reconnects_while_batches_fail() {
    let dir = TempDir::new();
    let lite = sqlite(
        dir.path(),
        "ro.db",
        "CREATE TABLE events (id INTEGER NOT NULL); CREATE TABLE lintas_applied_offsets (stream TEXT PRIMARY KEY, next_offset INTEGER NOT NULL, updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .await;
    let text = format!(
        "max_attempts = 3\n{}",
        config(&format!(
            "{}{}",
            destination("ro", "sqlite", &format!("{lite}?mode=ro")),
            route("ro", "events", "insert", "id = \"id\"", ""),
        ))
    );
    let node = Node::start(&dir.path().join("data"), &text).await;
    node.ingest(r#"[{"id": 1}, {"id": 2}]"#).await;
    let id = node.relay.catalog().destination("ro").unwrap().id;
    wait_until("five failed attempts in a row", PATIENCE, || async {
        node.relay.status(id).is_some_and(|s| s.attempts >= 5)
    })
    .await;
    let status = node.relay.status(id).unwrap();
    assert_eq!(status.state, State::Down);
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("readonly"),
        "{status:?}"
    );
    assert_eq!(dead_letters(&node).await, Vec::<Value>::new());
    node.stop().await;
}

/// A PostgreSQL table whose row `a` another session holds locked; lintas waits 200 ms for
/// locks there.
async fn locked_stock() -> (Scratch, sqlx::PgConnection) {
    use sqlx::Connection;
    let pg = Scratch::create(Server::Postgres).await.unwrap();
    pg.exec(&format!(
        "CREATE TABLE stock (sku text PRIMARY KEY, qty integer NOT NULL); INSERT INTO stock VALUES ('a', 0), ('b', 0); ALTER DATABASE {} SET lock_timeout = '200ms'",
        pg.name
    ))
    .await
    .unwrap();
    let mut holder = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT * FROM stock WHERE sku = 'a' FOR UPDATE")
        .execute(&mut holder)
        .await
        .unwrap();
    (pg, holder)
}

fn stock_config(pg: &Scratch, max_attempts: u32) -> String {
    format!(
        "max_attempts = {max_attempts}\n{}",
        config(&format!(
            "{}{}",
            destination("pg", "postgres", &pg.url),
            route(
                "pg",
                "stock",
                "upsert",
                "sku = \"sku\", qty = \"qty\"",
                "\"sku\""
            ),
        ))
    )
}

/// A record whose row stays locked fails its batch every time while the database answers:
/// after `max_attempts` the record is dead-lettered alone and the rest flow.
#[tokio::test]
async fn a_batch_failing_max_attempts_times_dead_letters_its_first_record() {
    let dir = TempDir::new();
    let (pg, _holder) = locked_stock().await;
    let node = Node::start(&dir.path().join("data"), &stock_config(&pg, 3)).await;
    node.ingest(r#"[{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]"#)
        .await;
    node.wait_delivered().await;
    assert_eq!(
        rows(&pg, "SELECT sku, qty::text FROM stock ORDER BY sku").await,
        [["a", "0"], ["b", "2"]]
    );
    one_dead_letter(&node, 0, "lock").await;
    node.stop().await;
}

/// An operator skips the record a destination is stuck on: it becomes a dead letter and the
/// records behind it are delivered.
#[tokio::test]
async fn skipping_the_stuck_record_dead_letters_it_and_delivery_resumes() {
    let dir = TempDir::new();
    let (pg, _holder) = locked_stock().await;
    let node = Node::start(&dir.path().join("data"), &stock_config(&pg, 1000)).await;
    node.ingest(r#"{"sku": "a", "qty": 1}"#).await;
    node.ingest(r#"{"sku": "b", "qty": 2}"#).await;
    let id = node.relay.catalog().destination("pg").unwrap().id;
    wait_until("the destination to be stuck", PATIENCE, || async {
        node.relay
            .status(id)
            .is_some_and(|s| s.state == State::Down && s.attempts >= 2)
    })
    .await;
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations/pg/skip",
            r#"{"record": 1}"#,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        json!({"error": "destination `pg` is stuck on record 0, not 1"})
    );
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations/pg/skip",
            r#"{"record": 0}"#,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"destination": "pg", "record": 0}));
    node.wait_delivered().await;
    assert_eq!(
        rows(&pg, "SELECT sku, qty::text FROM stock ORDER BY sku").await,
        [["a", "0"], ["b", "2"]]
    );
    let dead = one_dead_letter(&node, 0, "skipped by an operator").await;
    assert_eq!(dead["row"], json!({"sku": "a", "qty": "1"}));
    node.stop().await;
}

/// One application's route names a column the table does not have: its records are
/// dead-lettered with the reason, the other application's records flow, and the API
/// shows the broken route.
#[tokio::test]
async fn a_broken_route_does_not_hold_other_applications() {
    let dir = TempDir::new();
    let lite = sqlite(
        dir.path(),
        "shared.db",
        "CREATE TABLE orders (id INTEGER NOT NULL); CREATE TABLE visits (page TEXT NOT NULL)",
    )
    .await;
    let text = config(&format!(
        "{}{}{}{}",
        application("web", "key-web"),
        destination("lite", "sqlite", &lite),
        route(
            "lite",
            "orders",
            "insert",
            "id = \"id\", total = \"total\"",
            ""
        ),
        route_from("web", "lite", "visits", "insert", "page = \"page\"", ""),
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    node.ingest(r#"{"id": 1, "total": 5}"#).await;
    node.ingest_as("key-web", r#"[{"page": "/"}, {"page": "/about"}]"#)
        .await;
    node.wait_delivered().await;
    assert_eq!(
        flat(sqlite_rows(&lite, "SELECT page FROM visits ORDER BY page").await),
        [["/"], ["/about"]]
    );
    one_dead_letter(
        &node,
        0,
        "route shop → lite.orders: table `orders` has no column `total`",
    )
    .await;
    let (status, overview) = node.admin(Method::GET, "/api/relay", "").await;
    assert_eq!(status, 200, "{overview}");
    let lite_status = &overview["destinations"][0]["status"];
    assert_eq!(lite_status["state"], "up", "{overview}");
    assert_eq!(lite_status["dead"], 1, "{overview}");
    assert_eq!(overview["stream_end"], 3, "{overview}");
    assert_eq!(
        overview["destinations"][0]["backlog"], 0,
        "the dead letter was taken: {overview}"
    );
    assert_eq!(
        lite_status["broken_routes"],
        json!([{"route": "shop → lite.orders", "error": "table `orders` has no column `total`"}]),
        "{overview}"
    );
    node.stop().await;
}
