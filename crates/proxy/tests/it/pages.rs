//! What people and scrapers read: `/stats`, `/api/stats`, and the proxy's families in
//! `/metrics`.

use balance::Health;
use serde_json::json;

use crate::Admin;

#[tokio::test]
async fn stats_page_shows_every_backend_and_escapes_names() {
    let admin = Admin::start().await;
    let checked = admin.pool("checked");
    testkit::wait_until("the checked backend to go down", testkit::PATIENCE, || {
        let checked = checked.clone();
        async move { checked.backend("dead").unwrap().health() == Health::Down }
    })
    .await;
    admin
        .pool("web")
        .set_admin("app2", balance::AdminState::Drain)
        .unwrap();
    admin
        .pool("api")
        .set_admin("api1", balance::AdminState::Disabled)
        .unwrap();

    let r = admin.get("/stats").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    let page = &r.body;
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(!page.contains("src="), "the page must not load anything");
    assert!(!page.contains("<script>"), "a backend name was not escaped");
    assert!(page.contains("<td class=\"t\">&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
    for pool in [
        "<h2>Pool web <small>(round_robin)</small></h2>",
        "<h2>Pool api <small>(least_connections)</small></h2>",
    ] {
        assert!(page.contains(pool), "{pool}");
    }
    for (name, addr, state) in [
        ("app1", "127.0.0.1:1", "UP"),
        ("app2", "127.0.0.1:2", "DRAIN"),
        ("api1", "127.0.0.1:4", "MAINT"),
        ("dead", "127.0.0.1:1", "DOWN"),
    ] {
        let row = format!(
            "<tr class=\"{}\"><td class=\"t\">{name}</td><td class=\"t\">{addr}</td><td class=\"s t\">{state}</td>",
            state.to_lowercase()
        );
        assert!(page.contains(&row), "{row}\n{page}");
    }
    // How long each backend's health has held, after its state.
    assert!(
        page.contains("<th>state</th><th>for</th><th>weight</th>"),
        "{page}"
    );
    let app1 = page.split("<td class=\"t\">app1</td>").nth(1).unwrap();
    let held = app1.split("<td>").nth(1).unwrap();
    assert!(
        held.starts_with(|c: char| c.is_ascii_digit()) && held.contains("s</td>"),
        "{held}"
    );
    // The failed check and its detail are shown.
    assert!(page.contains("<td class=\"t bad\">failed</td>"), "{page}");
    // The listener row: name, mode, bound address, pool, then counters.
    let addr = admin.proxy.local_addr("front").await.unwrap();
    assert!(page.contains(&format!(
        "<tr><td class=\"t\">front</td><td class=\"t\">http</td><td class=\"t\">{addr}</td><td class=\"t\">web</td><td>0</td>"
    )));
}

#[tokio::test]
async fn api_stats_has_every_listener_and_pool() {
    let admin = Admin::start().await;
    let (status, v) = admin.json(axum::http::Method::GET, "/api/stats", "").await;
    assert_eq!(status, 200);
    let addr = admin.proxy.local_addr("front").await.unwrap().to_string();
    assert_eq!(
        v["listeners"],
        json!([{
            "name": "front", "mode": "http", "addr": addr, "pool": "web",
            "connections": 0, "active": 0, "requests": 0, "responses": [0, 0, 0, 0, 0],
            "no_backend": 0, "connect_failures": 0, "retries": 0, "timeouts": 0,
            "rate": 0, "rate_max": 0, "access_log_dropped": 0,
        }])
    );
    let pools = v["pools"].as_array().unwrap();
    let names: Vec<&str> = pools.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["api", "checked", "web"]);
    let web = &pools[2];
    assert_eq!(web["strategy"], "round_robin");
    assert_eq!(web["hash_key"], serde_json::Value::Null);
    assert_eq!(
        web["queue"],
        json!({
            "length": 0, "max_length": 0, "size": 1000, "timeout_ms": 30000, "queued": 0,
            "served": 0, "mean_wait_ms": 0.0, "waited_seconds": 0.0, "timeouts": 0, "full": 0,
        })
    );
    assert_eq!(web.as_object().unwrap().len(), 5, "{web}");
    let mut app2 = web["backends"][1].clone();
    let since = app2.as_object_mut().unwrap().remove("health_since_unix_ms");
    assert!(
        since.and_then(|s| s.as_u64()).is_some_and(|s| s > 0),
        "{web}"
    );
    assert_eq!(
        app2,
        json!({
            "name": "app2", "addr": "127.0.0.1:2", "weight": 2, "max_connections": 0, "backup": false,
            "admin": "enabled", "health": "up", "available": true, "in_flight": 0,
            "requests": 0, "failures": 0, "bytes_in": 0, "bytes_out": 0, "latency_ms": 30.0,
            "response_ms": null, "rate": 0, "rate_max": 0, "downtime_ms": 0, "downs": 0,
            "last_check": null,
        })
    );
}

#[tokio::test]
async fn metrics_have_exact_lines_for_a_known_backend() {
    let admin = Admin::start().await;
    admin.pool("web").set_weight("app2", 5).unwrap();
    admin
        .pool("web")
        .set_admin("app1", balance::AdminState::Drain)
        .unwrap();
    let r = admin.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let lines: Vec<&str> = r.body.lines().collect();
    let addr = admin.proxy.local_addr("front").await.unwrap();
    for expected in [
        "# HELP lintas_backend_up 1 when the backend's health is up (checks and traffic), 0 when down or ejected.",
        "# TYPE lintas_backend_up gauge",
        "lintas_backend_up{pool=\"web\",backend=\"app1\"} 1",
        "lintas_backend_available{pool=\"web\",backend=\"app1\"} 0",
        "lintas_backend_available{pool=\"web\",backend=\"app2\"} 1",
        "lintas_backend_weight{pool=\"web\",backend=\"app2\"} 5",
        "lintas_backend_in_flight{pool=\"web\",backend=\"app2\"} 0",
        "# TYPE lintas_backend_requests counter",
        "lintas_backend_requests_total{pool=\"web\",backend=\"app2\"} 0",
        "lintas_backend_failures_total{pool=\"web\",backend=\"app2\"} 0",
        "lintas_backend_bytes_in_total{pool=\"web\",backend=\"app2\"} 0",
        "lintas_backend_bytes_out_total{pool=\"web\",backend=\"app2\"} 0",
        "lintas_backend_latency_seconds{pool=\"web\",backend=\"app2\"} 0.03",
        "lintas_backend_max_request_rate{pool=\"web\",backend=\"app2\"} 0",
        "# TYPE lintas_backend_downtime_seconds counter",
        "lintas_backend_downtime_seconds_total{pool=\"web\",backend=\"app2\"} 0.0",
        "lintas_backend_downs_total{pool=\"web\",backend=\"app2\"} 0",
        "lintas_backend_up{pool=\"web\",backend=\"<script>alert(1)</script>\"} 1",
        "lintas_pool_available_backends{pool=\"web\"} 2",
        "lintas_pool_available_backends{pool=\"api\"} 1",
        "# TYPE lintas_pool_queue_length gauge",
        "lintas_pool_queue_length{pool=\"web\"} 0",
        "lintas_pool_queue_max_length{pool=\"web\"} 0",
        "lintas_pool_queued_total{pool=\"web\"} 0",
        "lintas_pool_queue_served_total{pool=\"web\"} 0",
        "# TYPE lintas_pool_queue_wait_seconds counter",
        "lintas_pool_queue_wait_seconds_total{pool=\"web\"} 0.0",
        "lintas_pool_queue_timeouts_total{pool=\"web\"} 0",
        "lintas_pool_queue_full_total{pool=\"web\"} 0",
        &format!(
            "lintas_listener_info{{listener=\"front\",mode=\"http\",address=\"{addr}\",pool=\"web\"}} 1"
        ),
        "# TYPE lintas_listener_connections counter",
        "lintas_listener_connections_total{listener=\"front\"} 0",
        "# TYPE lintas_listener_active_connections gauge",
        "lintas_listener_active_connections{listener=\"front\"} 0",
        "lintas_listener_requests_total{listener=\"front\"} 0",
        "lintas_listener_no_backend_total{listener=\"front\"} 0",
        "lintas_listener_connect_failures_total{listener=\"front\"} 0",
        "lintas_listener_retries_total{listener=\"front\"} 0",
        "lintas_listener_timeouts_total{listener=\"front\"} 0",
        "lintas_listener_max_request_rate{listener=\"front\"} 0",
        "lintas_listener_responses_total{listener=\"front\",class=\"2xx\"} 0",
        "lintas_listener_responses_total{listener=\"front\",class=\"5xx\"} 0",
    ] {
        assert!(
            lines.contains(&expected),
            "missing line {expected}\n{}",
            r.body
        );
    }
    assert_eq!(lines.last(), Some(&"# EOF"));
    // No measured response time before a backend answered; the family is still declared.
    assert!(lines.contains(&"# TYPE lintas_backend_response_seconds gauge"));
    assert!(!r.body.contains("lintas_backend_response_seconds{"));
    // Every sample line is `name{labels} value`, and every family is declared once (a
    // counter's samples are `<family>_total`).
    for line in lines.iter().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(
            series.starts_with("lintas_") && series.ends_with('}'),
            "{line}"
        );
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let name = &series[..series.find('{').unwrap()];
        let declared = match name.strip_suffix("_total") {
            Some(family) => format!("# TYPE {family} counter"),
            None => format!("# TYPE {name} "),
        };
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(&declared)).count(),
            1,
            "{name}"
        );
    }
}
