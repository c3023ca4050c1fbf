//! What the stats page measures of real traffic and real outages: measured response time,
//! request rates, downtime. Each test puts a real backend (`crate::Backend`) behind a real
//! HTTP listener.

use std::net::SocketAddr;
use std::time::Duration;

use balance::{BackendSnapshot, Health};

use crate::{Admin, Backend};

/// Pool `live` with one backend `b` at `addr`, TCP-checked every 50 ms (one failure takes it
/// down, one pass brings it back), behind the HTTP listener `front`.
fn live(addr: SocketAddr) -> String {
    format!(
        r#"
[pools.live]
backends = [{{ name = "b", address = "{addr}" }}]
health = {{ kind = "tcp", interval = "50ms", timeout = "500ms", rise = 1, fall = 1 }}

[[listeners]]
name = "front"
mode = "http"
listen = "127.0.0.1:0"
pool = "live"
"#
    )
}

fn backend(admin: &Admin) -> BackendSnapshot {
    admin.pool("live").snapshot().backends.remove(0)
}

/// The cells of backend `name`'s row on the stats page, as text.
fn row(page: &str, name: &str) -> Vec<String> {
    let start = page
        .find(&format!("<td class=\"t\">{name}</td>"))
        .unwrap_or_else(|| panic!("no row for {name}: {page}"));
    let row = &page[start..start + page[start..].find("</tr>").expect("the row ends")];
    row.split("<td")
        .skip(1)
        .map(|cell| {
            let text = &cell[cell.find('>').expect("a cell's tag ends") + 1..];
            text[..text.find("</td>").expect("the cell ends")].to_owned()
        })
        .collect()
}

/// A cell of `row` by the header's name in the pool table.
fn cell<'a>(page: &str, row: &'a [String], header: &str) -> &'a str {
    let table = &page[page.find("<th>backend</th>").expect("a pool table")..];
    let headers: Vec<&str> = table[..table.find("</tr>").expect("the header row ends")]
        .split("<th>")
        .skip(1)
        .map(|h| h.trim_end_matches("</th>"))
        .collect();
    let i = headers
        .iter()
        .position(|h| *h == header)
        .unwrap_or_else(|| panic!("no column {header}: {headers:?}"));
    &row[i]
}

pub(crate) async fn get_through(front: SocketAddr) -> u16 {
    testkit::HttpClient::new()
        .get(&format!("http://{front}/"))
        .await
        .status
}

#[tokio::test]
async fn measured_response_time_of_a_slow_backend_is_at_least_its_delay() {
    let slow = Backend::start(Duration::from_millis(50)).await;
    let admin = Admin::start_with(&live(slow.addr)).await;
    assert_eq!(backend(&admin).response_ms, None, "none before an answer");
    let page = admin.get("/stats").await.body;
    assert_eq!(cell(&page, &row(&page, "b"), "response ms"), "");

    let front = admin.proxy.local_addr("front").await.unwrap();
    for _ in 0..3 {
        assert_eq!(get_through(front).await, 200);
    }
    let b = backend(&admin);
    let measured = b.response_ms.expect("measured after three answers");
    assert!(measured >= 50.0, "{measured}");
    // The balancer keeps its own estimate for the strategies.
    assert!(b.latency_ms > 0.0);
    let page = admin.get("/stats").await.body;
    let shown: f64 = cell(&page, &row(&page, "b"), "response ms")
        .parse()
        .unwrap();
    assert!(shown >= 50.0, "{shown}");
    let metrics = admin.get("/metrics").await.body;
    let line = testkit::samples(&metrics, "lintas_backend_response_seconds{pool=\"live\"");
    let seconds: f64 = line[0].rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!(seconds >= 0.05, "{line:?}");
}

#[tokio::test]
async fn rates_show_traffic_and_keep_their_max() {
    let fast = Backend::start(Duration::ZERO).await;
    let admin = Admin::start_with(&live(fast.addr)).await;
    let front = admin.proxy.local_addr("front").await.unwrap();
    let traffic = tokio::spawn(async move {
        let client = testkit::HttpClient::new();
        loop {
            // Errors do not matter: the test reads what got through.
            let _ = client
                .send(
                    axum::http::Method::GET,
                    &format!("http://{front}/"),
                    &[],
                    "",
                )
                .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let listener = |admin: &Admin| admin.proxy.registry().listener_snapshots().remove(0);
    testkit::wait_until("the rates to show the traffic", testkit::PATIENCE, || {
        let (b, l) = (backend(&admin), listener(&admin));
        async move { b.rate > 0 && l.rate > 0 }
    })
    .await;
    let (b, l) = (backend(&admin), listener(&admin));
    assert!(b.rate_max >= b.rate && b.rate_max > 0, "{b:?}");
    assert!(l.rate_max >= l.rate && l.rate_max > 0, "{l:?}");
    let page = admin.get("/stats").await.body;
    let cells = row(&page, "b");
    let rate: u64 = cell(&page, &cells, "rate").parse().unwrap();
    let max: u64 = cell(&page, &cells, "rate max").parse().unwrap();
    assert!(rate > 0 && max >= rate, "{rate} {max}");

    traffic.abort();
    testkit::wait_until("the rate to fall to 0", testkit::PATIENCE, || {
        let b = backend(&admin);
        async move { b.rate == 0 }
    })
    .await;
    let b = backend(&admin);
    assert!(b.rate_max > 0, "the max holds: {b:?}");
    let metrics = admin.get("/metrics").await.body;
    assert_eq!(
        testkit::samples(&metrics, "lintas_backend_max_request_rate{pool=\"live\""),
        [format!(
            "lintas_backend_max_request_rate{{pool=\"live\",backend=\"b\"}} {}",
            b.rate_max
        )]
    );
    let l = listener(&admin);
    assert_eq!(
        testkit::samples(&metrics, "lintas_listener_max_request_rate"),
        [format!(
            "lintas_listener_max_request_rate{{listener=\"front\"}} {}",
            l.rate_max
        )]
    );
}

#[tokio::test]
async fn downtime_grows_while_a_backend_is_down_and_stops_when_it_is_back() {
    let up = Backend::start(Duration::ZERO).await;
    let addr = up.addr;
    let admin = Admin::start_with(&live(addr)).await;
    testkit::wait_until("a passed check", testkit::PATIENCE, || {
        let b = backend(&admin);
        async move { b.last_check.is_some_and(|c| c.ok) }
    })
    .await;
    assert_eq!((backend(&admin).downtime_ms, backend(&admin).downs), (0, 0));

    drop(up);
    testkit::wait_until("the backend to go down", testkit::PATIENCE, || {
        let b = backend(&admin);
        async move { b.health == Health::Down }
    })
    .await;
    testkit::wait_until("a second of downtime", testkit::PATIENCE, || {
        let b = backend(&admin);
        async move { b.downtime_ms >= 1000 }
    })
    .await;
    let b = backend(&admin);
    assert_eq!(b.downs, 1);
    let page = admin.get("/stats").await.body;
    let cells = row(&page, "b");
    assert_eq!(cell(&page, &cells, "downs"), "1");
    let shown = cell(&page, &cells, "downtime");
    assert!(
        shown.ends_with('s') && shown != "0s",
        "downtime shown as {shown}"
    );
    assert!(page.contains("<td class=\"bad\">1</td>"), "downs in red");

    let _back = Backend::restart(addr).await;
    testkit::wait_until("the backend to come back", testkit::PATIENCE, || {
        let b = backend(&admin);
        async move { b.health == Health::Up }
    })
    .await;
    let frozen = backend(&admin).downtime_ms;
    assert!(frozen >= 1000, "{frozen}");
    let checked = backend(&admin).last_check.unwrap().at_unix_ms;
    testkit::wait_until("two more checks", testkit::PATIENCE, || {
        let b = backend(&admin);
        async move { b.last_check.is_some_and(|c| c.at_unix_ms > checked + 60) }
    })
    .await;
    assert_eq!(backend(&admin).downtime_ms, frozen, "no downtime while up");
    let metrics = admin.get("/metrics").await.body;
    assert_eq!(
        testkit::samples(&metrics, "lintas_backend_downs_total{pool=\"live\""),
        ["lintas_backend_downs_total{pool=\"live\",backend=\"b\"} 1"]
    );
    let line = testkit::samples(
        &metrics,
        "lintas_backend_downtime_seconds_total{pool=\"live\"",
    );
    let seconds: f64 = line[0].rsplit_once(' ').unwrap().1.parse().unwrap();
    assert!((seconds * 1000.0 - frozen as f64).abs() < 1.0, "{line:?}");
}
