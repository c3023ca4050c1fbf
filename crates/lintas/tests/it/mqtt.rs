//! The MQTT broker inside a node: started from `[mqtt]`, its admin routes behind the admin
//! listener's authentication and its metrics in the node's `/metrics`.

use http::Method;
use testkit::HttpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::TestNode;

/// A 3.1.1 CONNECT of client `c1` with a clean session and a 60 s keep alive.
const CONNECT: [u8; 16] = [
    0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, b'c', b'1',
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_serves_clients_and_shows_them_on_the_admin_listener() {
    let password_hash = admin::Auth::hash_password("pw");
    // The broker keeps its sessions on disk: in a directory of the test's own.
    let dir = crate::harness::TempDir::new();
    let node = TestNode::start(&format!(
        "data_dir = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"admin\"\npassword_hash = \"{password_hash}\"\n\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval = \"0s\"\nallow_anonymous = true\n",
        dir.path().display()
    ))
    .await;
    let broker = node.node.mqtt.as_ref().expect("[mqtt] starts the broker");
    let mut client = TcpStream::connect(broker.local_addr()).await.unwrap();
    client.write_all(&CONNECT).await.unwrap();
    let mut connack = [0u8; 4];
    client.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);

    let admin = node.node.admin_addr.unwrap();
    let http = HttpClient::new();
    let url = format!("http://{admin}/api/mqtt/clients");
    assert_eq!(http.get(&url).await.status, 401);
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::prelude::BASE64_STANDARD, "admin:pw")
    );
    let auth = [("authorization", basic.as_str())];
    let r = http.send(Method::GET, &url, &auth, "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let clients: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(clients[0]["client_id"], "c1");
    assert_eq!(clients[0]["version"], "3.1.1");

    let metrics = http
        .send(Method::GET, &format!("http://{admin}/metrics"), &auth, "")
        .await
        .unwrap();
    let samples = testkit::samples(&metrics.body, "lintas_mqtt_connections ");
    assert_eq!(samples, ["lintas_mqtt_connections 1"]);
}

/// Runs a Mosquitto command-line client (`mosquitto_pub`, `mosquitto_sub`) against `port`
/// to its end (killed after [`testkit::PATIENCE`]); returns its standard output, panicking
/// with its output if it fails.
async fn mosquitto(tool: &'static str, port: u16, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let shown = format!("{tool} {args:?}");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg(testkit::PATIENCE.as_secs().to_string())
            .arg(tool)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
            .args(&args)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{shown}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The user's single node, SIGKILLed and started again on its data directory, with
/// Mosquitto's own clients: the persistent session of `mosquitto_sub -c` gets every QoS 1
/// message `mosquitto_pub` had been acknowledged before the kill and the one published
/// after the restart, before it reconnected; the retained message is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_sigkilled_and_restarted_keeps_persistent_sessions_and_retained_messages() {
    let dir = crate::harness::TempDir::new();
    let mqtt = crate::harness::unused_addr();
    let config = dir.path().join("lintas.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n\n[mqtt]\nlisten = \"{mqtt}\"\nallow_anonymous = true\nsys_interval = \"0s\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let run = |n: &str| crate::cli::Lintas::spawn_named(&dir, n, &["run", "-c", &config]);
    let mut node = run("first");
    crate::mqtt_cluster::wait_listening("the node", &mut node, mqtt).await;
    let port = mqtt.port();
    let keeper = ["-c", "-i", "keeper", "-q", "1", "-t", "jobs/#"];
    mosquitto("mosquitto_sub", port, &[&keeper[..], &["-E"]].concat()).await;
    for (topic, text) in [("jobs/1", "one"), ("jobs/2", "two"), ("jobs/3", "three")] {
        mosquitto("mosquitto_pub", port, &["-q", "1", "-t", topic, "-m", text]).await;
    }
    mosquitto(
        "mosquitto_pub",
        port,
        &["-q", "1", "-r", "-t", "status", "-m", "up"],
    )
    .await;
    drop(node);

    let mut node = run("second");
    crate::mqtt_cluster::wait_listening("the restarted node", &mut node, mqtt).await;
    mosquitto(
        "mosquitto_pub",
        port,
        &["-q", "1", "-t", "jobs/4", "-m", "four"],
    )
    .await;
    let got = mosquitto(
        "mosquitto_sub",
        port,
        &[&keeper[..], &["-v", "-C", "4", "-W", "30"]].concat(),
    )
    .await;
    assert_eq!(got, "jobs/1 one\njobs/2 two\njobs/3 three\njobs/4 four\n");
    let retained = mosquitto(
        "mosquitto_sub",
        port,
        &["-v", "-t", "status", "-C", "1", "-W", "30"],
    )
    .await;
    assert_eq!(retained, "status up\n");
}
