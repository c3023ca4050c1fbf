//! Backends written as host names, against a DNS server the test controls
//! ([`testkit::dns::DnsServer`] on 127.0.0.1) and real backends on 127.0.0.1 and 127.0.0.2
//! (both loopback on Linux) sharing one port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use proxy::Proxy;
use proxy::config::ProxyConfig;
use serde_json::json;
use service::Service;
use testkit::dns::DnsServer;
use testkit::{PATIENCE, wait_until};
use tokio_util::sync::CancellationToken;

use crate::traffic::get_through;
use crate::{Admin, Backend};

const ONE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Two backends on one port, one on 127.0.0.1 and one on 127.0.0.2.
async fn two_backends() -> (Backend, Backend) {
    for _ in 0..50 {
        let one = Backend::start(Duration::ZERO).await;
        let two_addr = SocketAddr::new(TWO, one.addr.port());
        // The port may be taken on 127.0.0.2 by something else: try another.
        if std::net::TcpListener::bind(two_addr).is_ok() {
            return (one, Backend::restart(two_addr).await);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Pool `web` with backend `app` at `app.test:PORT`, resolved by `dns`, behind listener
/// `front`.
fn config(dns: &DnsServer, port: u16) -> String {
    format!(
        r#"
dns = {{ servers = ["{}"], timeout = "300ms", max_ttl = "30s" }}

[pools.web]
backends = [{{ name = "app", address = "app.test:{port}" }}]

[[listeners]]
name = "front"
mode = "http"
listen = "127.0.0.1:0"
pool = "web"
"#,
        dns.addr()
    )
}

/// The pool's backends as `name=address`, in pool order.
fn members(admin: &Admin) -> Vec<String> {
    admin
        .pool("web")
        .snapshot()
        .backends
        .iter()
        .map(|b| format!("{}={}", b.name, b.addr))
        .collect()
}

#[tokio::test]
async fn a_host_name_backend_follows_its_dns_answers_keeping_the_backends_that_stay() {
    let (one, two) = two_backends().await;
    let port = one.addr.port();
    let dns = DnsServer::start().await.unwrap();
    dns.set("app.test", &[ONE], 1);
    let admin = Admin::start_with(&config(&dns, port)).await;
    assert_eq!(members(&admin), [format!("app=127.0.0.1:{port}")]);
    let front = admin.proxy.local_addr("front").await.unwrap();
    for _ in 0..3 {
        assert_eq!(get_through(front).await, 200);
    }
    let first = admin.pool("web").backend("app").unwrap();
    assert_eq!(first.stats().requests.load(Ordering::Relaxed), 3);

    // A second address: a backend of its own; the first keeps its name and object.
    dns.set("app.test", &[TWO, ONE], 1);
    wait_until("the second address joins the pool", PATIENCE, || async {
        members(&admin).len() == 2
    })
    .await;
    assert_eq!(
        members(&admin),
        [
            format!("app=127.0.0.1:{port}"),
            format!("app#2=127.0.0.2:{port}")
        ]
    );
    let kept = admin.pool("web").backend("app").unwrap();
    assert!(
        Arc::ptr_eq(&first, &kept),
        "the backend that stayed is the same object"
    );
    assert_eq!(kept.stats().requests.load(Ordering::Relaxed), 3);

    // Round-robin: the new address gets traffic.
    for _ in 0..4 {
        assert_eq!(get_through(front).await, 200);
    }
    let added = admin.pool("web").backend("app#2").unwrap();
    assert_eq!(added.addr(), two.addr);
    assert_eq!(added.stats().requests.load(Ordering::Relaxed), 2);

    // The server stops answering: the last addresses are kept and the failure is shown.
    dns.mute(true);
    wait_until("a failed resolution", PATIENCE, || async {
        admin.proxy.registry().dns_snapshots()[0].failures >= 1
    })
    .await;
    assert_eq!(
        members(&admin),
        [
            format!("app=127.0.0.1:{port}"),
            format!("app#2=127.0.0.2:{port}")
        ]
    );
    let (status, mut stats) = admin.json(Method::GET, "/api/stats", "").await;
    assert_eq!(status, 200);
    let entry = &mut stats["dns"][0];
    assert!(entry["next_in_s"].as_f64().unwrap() <= 30.0);
    entry["next_in_s"] = json!(0);
    entry["failures"] = json!(1);
    assert_eq!(
        *entry,
        json!({
            "pool": "web",
            "backend": "app",
            "address": format!("app.test:{port}"),
            "members": [
                {"name": "app", "address": format!("127.0.0.1:{port}")},
                {"name": "app#2", "address": format!("127.0.0.2:{port}")},
            ],
            "failures": 1,
            "error": "no answer within 300ms",
            "next_in_s": 0,
        })
    );
    let metrics = admin.get("/metrics").await.body;
    let failures = testkit::samples(&metrics, "lintas_pool_dns_failures_total");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].starts_with("lintas_pool_dns_failures_total{pool=\"web\"} "));
    assert_eq!(get_through(front).await, 200);

    // Answering again without the first address: it leaves, the second stays.
    dns.set("app.test", &[TWO], 1);
    dns.mute(false);
    wait_until("the first address leaves the pool", PATIENCE, || async {
        members(&admin).len() == 1
    })
    .await;
    assert_eq!(members(&admin), [format!("app#2=127.0.0.2:{port}")]);
    assert!(Arc::ptr_eq(
        &added,
        &admin.pool("web").backend("app#2").unwrap()
    ));
    assert_eq!(admin.proxy.registry().dns_snapshots()[0].error, None);
    drop(one);
    for _ in 0..3 {
        assert_eq!(get_through(front).await, 200);
    }
}

#[tokio::test]
async fn a_reload_keeps_resolved_backends_and_refuses_a_name_that_does_not_resolve() {
    let (one, _two) = two_backends().await;
    let port = one.addr.port();
    let dns = DnsServer::start().await.unwrap();
    dns.set("app.test", &[TWO, ONE], 300);
    let text = config(&dns, port);
    let admin = Admin::start_with(&text).await;
    assert_eq!(
        members(&admin),
        [
            format!("app#1=127.0.0.1:{port}"),
            format!("app#2=127.0.0.2:{port}")
        ]
    );
    let before = admin.pool("web").backend("app#1").unwrap();
    let asked = dns.answered();

    // A new weight: the same backends, not asked again (their refresh keeps them current).
    let reweighted: ProxyConfig =
        toml::from_str(&text.replace("address = ", "weight = 3, address = ")).unwrap();
    admin.proxy.apply(&reweighted).await.unwrap();
    let after = admin.pool("web").backend("app#1").unwrap();
    assert!(Arc::ptr_eq(&before, &after));
    assert_eq!(after.weight(), 3);
    assert_eq!(dns.answered(), asked);

    // A name that does not resolve: refused, naming it; nothing changes.
    let broken: ProxyConfig = toml::from_str(&text.replace(
        "backends = [",
        "backends = [{ name = \"other\", address = \"nope.test:80\" }, ",
    ))
    .unwrap();
    let err = admin.proxy.apply(&broken).await.unwrap_err();
    assert_eq!(
        err.key_path(&configkit::KeyPath::root("proxy")).to_string(),
        "proxy.pools.web.backends[0].address"
    );
    assert_eq!(
        err.to_string(),
        "pool `web`: backend `other`: cannot resolve `nope.test`: no such name (NXDOMAIN); check the name and the name servers ([proxy.dns] servers, else /etc/resolv.conf)"
    );
    assert_eq!(members(&admin).len(), 2);
}

#[tokio::test]
async fn start_fails_on_a_name_that_does_not_resolve_naming_its_key() {
    let dns = DnsServer::start().await.unwrap();
    dns.mute(true);
    let cfg: ProxyConfig = toml::from_str(&config(&dns, 8080)).unwrap();
    let err = Proxy::start(&cfg, crate::deps().await, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.at.to_string(), "proxy.pools.web.backends[0].address");
    assert_eq!(
        err.message,
        "pool `web`: backend `app`: cannot resolve `app.test`: no answer within 300ms; check the name and the name servers ([proxy.dns] servers, else /etc/resolv.conf)"
    );
}
