//! Relay objects through the admin API: applications with keys shown once and rotated,
//! destinations checked by connecting, routes checked against the live schema, the
//! delivery log and a record's detail.

use http::Method;
use serde_json::json;
use testkit::{PATIENCE, TempDir, wait_until};

use crate::harness::{Node, config, flat, ids, sqlite, sqlite_rows};

#[tokio::test]
async fn objects_are_managed_and_checked_through_the_api() {
    let dir = TempDir::new();
    let node = Node::start(&dir.path().join("data"), &config("")).await;

    let (status, created) = node
        .admin(
            Method::POST,
            "/api/relay/applications",
            r#"{"name": "crm"}"#,
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["application"]["name"], "crm");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("lk_"), "{key}");
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/applications",
            r#"{"name": "crm"}"#,
        )
        .await;
    assert_eq!(
        (status, body),
        (409, json!({"error": "application `crm` exists"}))
    );

    let auth = |k: &str| format!("Bearer {k}");
    let r = node
        .post_with(&[("authorization", &auth(&key))], r#"{"id": 1}"#)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let (status, rotated) = node
        .admin(Method::POST, "/api/relay/applications/crm/rotate", "")
        .await;
    assert_eq!(status, 200);
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    let r = node
        .post_with(&[("authorization", &auth(&key))], r#"{"id": 1}"#)
        .await;
    assert_eq!(r.status, 401, "the old key stops working");

    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations",
            r#"{"name": "nowhere", "kind": "postgres", "url": "postgres://postgres@127.0.0.1:1/x"}"#,
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot connect to `nowhere`: "),
        "{body}"
    );
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations",
            r#"{"name": "x", "kind": "postgres", "url": "postgres://u:secret@127.0.0.1/x"}"#,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"error": "url: the URL holds a password; give it in password_env (file) or password (admin API)"})
        )
    );

    let lite = sqlite(
        dir.path(),
        "crm.db",
        "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT)",
    )
    .await;
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations",
            &json!({"name": "crm-db", "kind": "sqlite", "url": lite}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, schema) = node
        .admin(Method::GET, "/api/relay/destinations/crm-db/schema", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        schema,
        json!({"destination": "crm-db", "tables": [{"schema": null, "name": "contacts", "columns": [
            {"name": "id", "data_type": "INTEGER", "nullable": true, "has_default": true},
            {"name": "email", "data_type": "TEXT", "nullable": false, "has_default": false},
            {"name": "name", "data_type": "TEXT", "nullable": true, "has_default": false},
        ]}]})
    );

    let route = |columns: serde_json::Value| {
        json!({"application": "crm", "destination": "crm-db", "table": "contacts",
               "operation": "insert", "columns": columns})
        .to_string()
    };
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/routes",
            &route(json!({"mail": "e_mail"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"error": "route crm → crm-db.contacts: table `contacts` has no column `e_mail`"})
        )
    );
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/routes",
            &route(json!({"name": "name"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"error": "route crm → crm-db.contacts: column `email` of `contacts` is NOT NULL without a default; map a field to it"})
        )
    );
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/routes",
            &route(json!({"mail": "email", "who": "name"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let r = node
        .post_with(
            &[("authorization", &auth(&new_key))],
            r#"{"mail": "ann@example.com", "who": "Ann", "age": 40}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let id = ids(&r.body)[0];
    node.wait_delivered().await;
    assert_eq!(
        flat(sqlite_rows(&lite, "SELECT email, name FROM contacts").await),
        [["ann@example.com", "Ann"]]
    );
    let (_, record) = node
        .admin(Method::GET, &format!("/api/relay/records/{id}"), "")
        .await;
    assert_eq!(
        record["data_sent"],
        json!({"mail": "ann@example.com", "who": "Ann", "age": 40})
    );
    assert_eq!(record["deliveries"][0]["status"], "delivered");
    assert_eq!(
        record["deliveries"][0]["row"],
        json!({"email": "ann@example.com", "name": "Ann"})
    );
    assert_eq!(record["deliveries"][0]["row_is"], "written");
    let committed = record["deliveries"][0]["committed_ms"].clone();
    assert!(committed.as_i64().is_some(), "{record}");
    // The route changes: the record still shows what was written then, and when.
    let route_id = record["deliveries"][0]["route_id"].as_i64().unwrap();
    let (status, _) = node
        .admin(Method::DELETE, &format!("/api/relay/routes/{route_id}"), "")
        .await;
    assert_eq!(status, 204);
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/routes",
            &route(json!({"mail": "email"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, record) = node
        .admin(Method::GET, &format!("/api/relay/records/{id}"), "")
        .await;
    let deliveries = record["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{record}");
    let today = deliveries
        .iter()
        .find(|d| d["route_id"] != route_id)
        .unwrap();
    assert_eq!(
        (&today["row"], &today["row_is"]),
        (&json!({"email": "ann@example.com"}), &json!("planned")),
        "the new route never wrote this record: {record}"
    );
    let then = deliveries
        .iter()
        .find(|d| d["route_id"] == route_id)
        .unwrap();
    assert_eq!(
        (
            &then["row"],
            &then["row_is"],
            &then["committed_ms"],
            &then["status"]
        ),
        (
            &json!({"email": "ann@example.com", "name": "Ann"}),
            &json!("written"),
            &committed,
            &json!("delivered")
        ),
        "{record}"
    );
    let (_, log) = node
        .admin(
            Method::GET,
            "/api/relay/deliveries?application=crm&status=delivered",
            "",
        )
        .await;
    let delivered = log["delivered"].as_array().unwrap();
    assert_eq!(delivered.len(), 1, "{log}");
    assert_eq!(
        (
            &delivered[0]["destination"],
            &delivered[0]["first_id"],
            &delivered[0]["last_id"],
            &delivered[0]["rows"]
        ),
        (&json!("crm-db"), &json!(id), &json!(id), &json!(1))
    );
    let (status, body) = node
        .admin(Method::GET, "/api/relay/deliveries?status=lost", "")
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "status `lost`: expected delivered, retrying or dead"})
        )
    );
    let (status, body) = node
        .admin(Method::DELETE, "/api/relay/applications/shop", "")
        .await;
    assert_eq!(
        (status, body),
        (
            409,
            json!({"error": "application `shop` is declared in the configuration file; change it there and reload"})
        )
    );
    let (status, _) = node
        .admin(Method::DELETE, "/api/relay/applications/crm", "")
        .await;
    assert_eq!(status, 204);
    let r = node
        .post_with(&[("authorization", &auth(&new_key))], "{}")
        .await;
    assert_eq!(r.status, 401);
    node.stop().await;
}

#[tokio::test]
async fn a_password_given_through_the_api_is_stored_encrypted_and_used() {
    use testkit::scratch::{Scratch, Server};
    let dir = TempDir::new();
    let my = Scratch::create(Server::Mysql).await.unwrap();
    let user = format!("u{}", &my.name[my.name.len().saturating_sub(20)..]);
    my.exec(&format!(
        "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 's3cret';
         CREATE USER '{user}'@'localhost' IDENTIFIED BY 's3cret';
         GRANT ALL ON {db}.* TO '{user}'@'127.0.0.1';
         GRANT ALL ON {db}.* TO '{user}'@'localhost';
         CREATE TABLE notes (v varchar(20))",
        db = my.name
    ))
    .await
    .unwrap();
    let node = Node::start(&dir.path().join("data"), &config("")).await;
    let url = format!("mysql://{user}@127.0.0.1:3306/{}", my.name);
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations",
            &json!({"name": "locked", "kind": "mysql", "url": url, "password": "wrong"})
                .to_string(),
        )
        .await;
    assert_eq!(status, 422);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("cannot connect to `locked`: ") && error.contains("Access denied"),
        "{error}"
    );
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations",
            &json!({"name": "locked", "kind": "mysql", "url": url, "password": "s3cret"})
                .to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(!body.to_string().contains("s3cret"), "{body}");
    let stored: String = {
        let pool = sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            dir.path().join("data/lintas.db").display()
        ))
        .await
        .unwrap();
        let v =
            sqlx::query_scalar("SELECT password_enc FROM relay_destinations WHERE name = 'locked'")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        v
    };
    assert!(!stored.contains("s3cret") && stored.len() > 20, "{stored}");
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/routes",
            r#"{"application": "shop", "destination": "locked", "table": "notes", "operation": "insert", "columns": {"v": "v"}}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    node.ingest(r#"{"v": "hello"}"#).await;
    node.wait_delivered().await;
    assert_eq!(
        flat(my.rows("SELECT v FROM notes").await.unwrap()),
        [["hello"]]
    );
    node.stop().await;
    my.exec(&format!(
        "DROP USER '{user}'@'127.0.0.1'; DROP USER '{user}'@'localhost'"
    ))
    .await
    .unwrap();
}

/// A body the API cannot read (an unknown enum value, a missing field, bad JSON) gets the
/// API's JSON error shape with what was wrong and where, not axum's plain text.
#[tokio::test]
async fn unreadable_bodies_get_json_errors() {
    let dir = TempDir::new();
    let node = Node::start(&dir.path().join("data"), &config("")).await;
    let cases = [
        (
            "/api/relay/destinations",
            r#"{"name": "x", "kind": "oracle", "url": "oracle://x"}"#,
            422,
            "Failed to deserialize the JSON body into the target type: kind: unknown variant `oracle`, expected one of `postgres`, `mysql`, `sqlite` at line 1 column 30",
        ),
        (
            "/api/relay/routes",
            r#"{"application": "a", "destination": "d", "table": "t", "operation": "merge", "columns": {"a": "a"}}"#,
            422,
            "Failed to deserialize the JSON body into the target type: operation: unknown operation `merge`; expected insert, upsert, update or delete at line 1 column 75",
        ),
        (
            "/api/relay/applications",
            r#"{"name": "#,
            400,
            "Failed to parse the request body as JSON: name: EOF while parsing a value at line 1 column 9",
        ),
    ];
    for (path, body, status, error) in cases {
        let (got, answer) = node.admin(Method::POST, path, body).await;
        assert_eq!((got, answer), (status, json!({ "error": error })), "{path}");
    }
    let (got, answer) = node
        .admin(Method::GET, "/api/relay/deliveries?limit=many", "")
        .await;
    assert_eq!(
        (got, answer),
        (
            400,
            json!({"error": "Failed to deserialize query string: limit: invalid digit found in string"})
        )
    );
    node.stop().await;
}

/// The console's "Test connection": `?dry_run=true` connects with the spec as it is (password
/// included) and saves nothing, whether it works or not.
#[tokio::test]
async fn a_dry_run_tests_the_connection_and_saves_nothing() {
    let dir = TempDir::new();
    let node = Node::start(&dir.path().join("data"), &config("")).await;
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations?dry_run=true",
            r#"{"name": "nowhere", "kind": "postgres", "url": "postgres://postgres@127.0.0.1:1/x"}"#,
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot connect to `nowhere`: "),
        "{body}"
    );
    let lite = sqlite(
        dir.path(),
        "shop.db",
        "CREATE TABLE items (name TEXT PRIMARY KEY, price NUMERIC); CREATE TABLE notes (t TEXT)",
    )
    .await;
    let spec = json!({"name": "shop", "kind": "sqlite", "url": lite}).to_string();
    let (status, body) = node
        .admin(Method::POST, "/api/relay/destinations?dry_run=true", &spec)
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ok": true, "destination": "shop", "tables": ["items", "notes"]})
        )
    );
    let (_, overview) = node.admin(Method::GET, "/api/relay", "").await;
    assert_eq!(
        overview["destinations"],
        json!([]),
        "a dry run saves nothing"
    );
    let (status, body) = node
        .admin(Method::POST, "/api/relay/destinations?dry_run=yes", &spec)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = node
        .admin(Method::POST, "/api/relay/destinations", &spec)
        .await;
    assert_eq!(status, 201);
}

/// A destination edited through the API: checked by connecting first, a dry run changes
/// nothing, and once saved its worker reconnects with the new settings — a database that
/// holds no offset of it gets the destination's records from its start.
#[tokio::test]
async fn a_destination_is_edited_and_its_worker_follows() {
    let dir = TempDir::new();
    let node = Node::start(&dir.path().join("data"), &config("")).await;
    let ddl = "CREATE TABLE notes (n TEXT)";
    let first = sqlite(dir.path(), "first.db", ddl).await;
    let second = sqlite(dir.path(), "second.db", ddl).await;
    let (_, created) = node
        .admin(
            Method::POST,
            "/api/relay/applications",
            r#"{"name": "app"}"#,
        )
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let spec = |url: &str| json!({"name": "notes", "kind": "sqlite", "url": url}).to_string();
    let (status, body) = node
        .admin(Method::POST, "/api/relay/destinations", &spec(&first))
        .await;
    assert_eq!(status, 201, "{body}");
    let route = json!({"application": "app", "destination": "notes", "table": "notes",
                       "operation": "insert", "columns": {"n": "n"}});
    let (status, body) = node
        .admin(Method::POST, "/api/relay/routes", &route.to_string())
        .await;
    assert_eq!(status, 201, "{body}");
    node.ingest_as(&key, r#"{"n": 1}"#).await;
    node.wait_delivered().await;
    assert_eq!(
        flat(sqlite_rows(&first, "SELECT n FROM notes").await),
        [["1"]]
    );

    let (status, body) = node
        .admin(
            Method::PUT,
            "/api/relay/destinations/notes",
            &json!({"name": "other", "kind": "sqlite", "url": second}).to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"error": "name: `other` is not `notes`; a destination cannot be renamed (create another)"})
        )
    );
    let (status, body) = node
        .admin(
            Method::PUT,
            "/api/relay/destinations/notes",
            &spec("postgres://postgres@127.0.0.1:1/x").replace("sqlite\"", "postgres\""),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot connect to `notes`: "),
        "{body}"
    );
    let (status, body) = node
        .admin(
            Method::PUT,
            "/api/relay/destinations/notes?dry_run=true",
            &spec(&second),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ok": true, "destination": "notes", "tables": ["notes"]})
        )
    );
    let (_, overview) = node.admin(Method::GET, "/api/relay", "").await;
    assert_eq!(
        overview["destinations"][0]["url"],
        json!(first),
        "a dry run changes nothing"
    );

    let (status, body) = node
        .admin(Method::PUT, "/api/relay/destinations/notes", &spec(&second))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["url"], json!(second));
    node.ingest_as(&key, r#"{"n": 2}"#).await;
    wait_until("both records in the second database", PATIENCE, || async {
        flat(sqlite_rows(&second, "SELECT n FROM notes ORDER BY n").await) == [["1"], ["2"]]
    })
    .await;
    assert_eq!(
        flat(sqlite_rows(&first, "SELECT n FROM notes").await),
        [["1"]],
        "the first database is left as it was"
    );
    let (status, body) = node
        .admin(
            Method::PUT,
            "/api/relay/destinations/nowhere",
            &spec(&second),
        )
        .await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "no destination `nowhere`"}))
    );
    node.stop().await;
}
