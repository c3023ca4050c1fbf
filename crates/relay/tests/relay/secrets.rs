//! Destination secrets stay where they are put: the admin API cannot name environment
//! variables, connections read nothing from the environment or `.pgpass`, and TLS to the
//! databases works.

use std::process::Command;

use http::Method;
use relay::config::{DestinationSpec, Kind};
use relay::destination::Db;
use serde_json::json;
use testkit::TempDir;
use testkit::scratch::{Scratch, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Node, config};

/// Set in the child process that runs a test under a prepared environment.
const CHILD: &str = "LINTAS_TEST_SECRETS_CHILD";

fn spec(kind: Kind, url: &str) -> DestinationSpec {
    DestinationSpec {
        name: "d".into(),
        kind,
        url: url.into(),
        password_env: None,
        password: None,
        max_connections: 1,
    }
}

#[tokio::test]
async fn password_env_is_refused_over_the_api() {
    let dir = TempDir::new();
    let node = Node::start(&dir.path().join("data"), &config("")).await;
    let (status, body) = node
        .admin(
            Method::POST,
            "/api/relay/destinations",
            &json!({"name": "x", "kind": "postgres", "url": "postgres://postgres@127.0.0.1:5432/postgres", "password_env": "HOME"})
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"error": "password_env: the admin API does not read environment variables; send the password itself in password (it is stored encrypted)"})
        )
    );
    let (status, body) = node.admin(Method::GET, "/api/relay", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["destinations"], json!([]), "{body}");
    node.stop().await;
}

/// What a fake PostgreSQL server asking for a cleartext password received.
#[derive(Debug, PartialEq)]
struct Received {
    user: String,
    database: String,
    password: String,
}

/// Reads one length-prefixed startup-phase message (the length counts itself).
async fn startup_message(s: &mut TcpStream) -> Vec<u8> {
    let len = s.read_u32().await.unwrap() as usize;
    let mut body = vec![0; len - 4];
    s.read_exact(&mut body).await.unwrap();
    body
}

/// Plays a PostgreSQL server just far enough to be sent a password: refuses TLS, reads the
/// startup parameters, asks for the password in clear text and records it.
async fn fake_postgres(listener: TcpListener) -> Received {
    let (mut s, _) = listener.accept().await.unwrap();
    let mut startup = startup_message(&mut s).await;
    if startup == 80877103u32.to_be_bytes() {
        s.write_all(b"N").await.unwrap();
        startup = startup_message(&mut s).await;
    }
    let params: Vec<String> = startup[4..]
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .position(|p| p == name)
            .map(|i| params[i + 1].clone())
            .unwrap_or_default()
    };
    // AuthenticationCleartextPassword.
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'p');
    let message = startup_message(&mut s).await;
    Received {
        user: param("user"),
        database: param("database"),
        password: String::from_utf8_lossy(message.strip_suffix(&[0]).unwrap()).into_owned(),
    }
}

/// What the fake server receives from a destination `url` connected with `password`.
async fn sent_to_fake_postgres(path_and_query: &str, password: Option<&str>) -> Received {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "postgres://lintas@{}{path_and_query}",
        listener.local_addr().unwrap()
    );
    let server = tokio::spawn(fake_postgres(listener));
    let connected = Db::connect(&spec(Kind::Postgres, &url), password.map(String::from)).await;
    assert!(connected.is_err(), "the fake server lets nobody in");
    server.await.unwrap()
}

#[tokio::test]
async fn postgres_connections_read_nothing_from_the_environment_or_pgpass() {
    if std::env::var_os(CHILD).is_none() {
        // Run this very test again in a child whose environment holds every variable libpq
        // (and sqlx) would read, and a .pgpass matching any server.
        let dir = TempDir::new();
        let pgpass = dir.write("pgpass", "*:*:*:*:from-pgpass\n");
        std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "secrets::postgres_connections_read_nothing_from_the_environment_or_pgpass",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("PGPASSWORD", "from-the-environment")
            .env("PGPASSFILE", &pgpass)
            .env("HOME", dir.path())
            .env("PGUSER", "env-user")
            .env("PGDATABASE", "env-db")
            .env("PGHOST", "192.0.2.1")
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
        return;
    }
    assert_eq!(
        sent_to_fake_postgres("/orders", None).await,
        Received {
            user: "lintas".into(),
            database: "orders".into(),
            password: String::new(),
        }
    );
    assert_eq!(
        sent_to_fake_postgres("", Some("given")).await,
        Received {
            user: "lintas".into(),
            database: "lintas".into(),
            password: "given".into(),
        }
    );
}

#[tokio::test]
async fn postgres_sslmode_require_connects_over_tls() {
    let db = Scratch::create(Server::Postgres).await.unwrap();
    let url = format!("{}?sslmode=require", db.url);
    let Db::Postgres(pool) = Db::connect(&spec(Kind::Postgres, &url), None)
        .await
        .unwrap()
    else {
        panic!("a postgres URL gives a postgres pool");
    };
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is not encrypted");
    pool.close().await;

    // verify-full checks the certificate: the machine's is self-signed.
    let url = format!("{}?sslmode=verify-full", db.url);
    let err = Db::connect(&spec(Kind::Postgres, &url), None)
        .await
        .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn mysql_ssl_mode_required_attempts_tls() {
    // The machine's MariaDB has TLS off: REQUIRED must fail saying so, not connect in clear.
    let db = Scratch::create(Server::Mysql).await.unwrap();
    let url = format!("{}?ssl-mode=REQUIRED", db.url);
    let err = Db::connect(&spec(Kind::Mysql, &url), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "error occurred while attempting to establish a TLS connection: server does not support TLS"
    );
}

#[test]
fn destination_urls_take_only_known_parameters() {
    for (kind, url, problem) in [
        (
            Kind::Postgres,
            "postgres://u@h/db?password=x",
            "unknown URL parameter `password`; a postgres destination takes sslmode, sslrootcert, sslcert and sslkey",
        ),
        (
            Kind::Postgres,
            "postgres://u@h/db?sslmode=sometimes",
            "sslmode `sometimes` is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            Kind::Mysql,
            "mysql://u@h/db?socket=/tmp/x",
            "unknown URL parameter `socket`; a mysql destination takes ssl-mode, ssl-ca, ssl-cert and ssl-key",
        ),
        (
            Kind::Postgres,
            "postgres://h/db",
            "the URL names no user: postgres://USER@host:port/database",
        ),
    ] {
        assert_eq!(
            spec(kind, url).problems(),
            vec![("url", problem.to_owned())],
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_destination_stored_through_the_api_never_reads_the_environment() {
    // A row the admin API stored before it refused password_env.
    let dir = TempDir::new();
    let store = store::Store::open(dir.path()).await.unwrap();
    store.migrate("relay", relay::MIGRATIONS).await.unwrap();
    for (name, declared) in [("from-api", 0), ("from-file", 1)] {
        sqlx::query(
            "INSERT INTO relay_destinations (name, kind, url, password_env, max_connections, start_offset, declared, created_ms)
             VALUES (?, 'postgres', 'postgres://u@127.0.0.1/x', 'HOME', 1, 0, ?, 0)",
        )
        .bind(name)
        .bind(declared)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let catalog = relay::catalog::Catalog::load(store.pool()).await.unwrap();
    let env_of = |name: &str| catalog.destination(name).unwrap().spec.password_env.clone();
    assert_eq!(env_of("from-api"), None);
    assert_eq!(env_of("from-file"), Some("HOME".to_owned()));
    store.pool().close().await;
}
