//! A store written by a release that numbered every migration in one list (`PRAGMA
//! user_version`) is upgraded in place when a node starts: each service's migrations are
//! tracked under its own name, nothing is re-run, nothing is lost.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use watch::config::TargetCheck;

use crate::harness::{TempDir, TestNode};

/// The global list as the earlier release applied it: the services' migrations
/// interleaved in the order they were released.
fn global_list() -> [&'static str; 7] {
    let (r, w) = (relay::MIGRATIONS, watch::MIGRATIONS);
    [r[0], w[0], w[1], w[2], r[1], w[3], r[2]]
}

/// Writes `data/lintas.db` as the earlier release left it at global `version`.
async fn old_store(data: &std::path::Path, version: usize) -> SqliteConnection {
    std::fs::create_dir_all(data).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(data.join("lintas.db"))
        .create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
    for (i, migration) in global_list().iter().take(version).enumerate() {
        sqlx::raw_sql(migration).execute(&mut conn).await.unwrap();
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn
}

async fn versions(conn: &mut SqliteConnection) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT service, version FROM schema_migrations ORDER BY service")
        .fetch_all(conn)
        .await
        .unwrap()
}

fn config(data: &std::path::Path) -> String {
    format!(
        "data_dir = \"{}\"\n\n[relay]\nlisten = \"127.0.0.1:0\"\n\n[watch]\n",
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_latest_global_version_keeps_every_row_and_runs_nothing_again() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let mut conn = old_store(&data, 7).await;
    // What the admin API stored before target kinds were typed.
    sqlx::raw_sql(
        r#"INSERT INTO watch_targets (name, spec, created_ms) VALUES ('db', '{"name":"db","kind":"tcp","url":null,"address":"127.0.0.1:9","interval":"1h","timeout":"1s","fall":3,"rise":2,"expect_status":"200-399","body_contains":null}', 0);
        INSERT INTO watch_users (chat_id, step, created_ms, access) VALUES (7, 'done', 0, 'approved');"#,
    )
    .execute(&mut conn)
    .await
    .unwrap();
    // Recent, or watch's pruning of old history would take it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlx::query("INSERT INTO watch_transitions (at_ms, target, detail, up, reason) VALUES (?, 'web/a', '127.0.0.1:1', 0, 'refused')")
        .bind(now_ms)
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let node = TestNode::start(&config(&data)).await;
    let targets = node.node.watch.as_ref().unwrap().targets();
    assert_eq!(targets.len(), 1);
    assert_eq!(
        (&targets[0].0.name, &targets[0].0.check, targets[0].1),
        (
            &"db".to_owned(),
            &TargetCheck::Tcp {
                address: "127.0.0.1:9".into()
            },
            false
        )
    );
    let mut conn = old_store(&data, 0).await;
    assert_eq!(
        versions(&mut conn).await,
        [("relay".into(), 4), ("watch".into(), 5)]
    );
    let user_version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user_version, 1000);
    let kept: (i64, i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM watch_transitions), chat_id, access FROM watch_users",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(kept, (1, 7, "approved".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_halfway_through_the_global_list_gets_each_services_missing_migrations() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    // Global 4: relay's first migration and watch's first three.
    let mut conn = old_store(&data, 4).await;
    sqlx::raw_sql(
        "INSERT INTO watch_users (chat_id, step, admin, created_ms) VALUES (1, 'done', 1, 0), (2, 'done', 0, 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let _node = TestNode::start(&config(&data)).await;
    let mut conn = old_store(&data, 0).await;
    assert_eq!(
        versions(&mut conn).await,
        [("relay".into(), 4), ("watch".into(), 5)]
    );
    // Watch's fourth migration ran once: admins approved, others waiting.
    let access: Vec<(i64, String)> =
        sqlx::query_as("SELECT chat_id, access FROM watch_users ORDER BY chat_id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        access,
        [(1, "approved".to_owned()), (2, "pending".to_owned())]
    );
    // Relay's second and third ran: the sealed password column and the unmatched log.
    let relay_columns: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pragma_table_info('relay_destinations') WHERE name = 'password_enc'),
                (SELECT count(*) FROM sqlite_master WHERE name = 'relay_unmatched')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(relay_columns, (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_schema_newer_than_the_binary_stops_the_node_naming_it() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let _first = TestNode::start(&config(&data)).await;
    let mut conn = old_store(&data, 0).await;
    sqlx::raw_sql("UPDATE schema_migrations SET version = 99 WHERE service = 'watch'")
        .execute(&mut conn)
        .await
        .unwrap();
    let text = config(&data);
    let loaded = lintas::config::parse(std::path::Path::new("test.toml"), text).unwrap();
    assert_eq!(
        TestNode::refused(loaded).await,
        format!(
            "test.toml:1:12: data_dir: {} has watch schema version 99 but this lintas knows up to 5; run the newer lintas or restore a backup",
            data.join("lintas.db").display()
        )
    );
}
