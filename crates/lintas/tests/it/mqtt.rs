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
    let node = TestNode::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nuser = \"admin\"\npassword_hash = \"{password_hash}\"\n\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\nsys_interval = \"0s\"\nallow_anonymous = true\n"
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
