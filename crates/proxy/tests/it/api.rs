//! The runtime API: each call's answer, and its effect on the pool the proxy picks from.

use axum::http::Method;
use balance::{AdminState, StrategyKind};
use serde_json::json;

use crate::Admin;

/// Names the pool hands out for `n` picks.
fn picks(admin: &Admin, pool: &str, n: usize) -> Vec<String> {
    let pool = admin.pool(pool);
    (0..n)
        .filter_map(|_| pool.pick(None, &[]))
        .map(|l| l.backend().name().to_string())
        .collect()
}

#[tokio::test]
async fn drain_disable_and_enable_move_traffic() {
    let admin = Admin::start().await;
    let path = "/api/pools/web/backends/app1";

    let (status, v) = admin.json(Method::POST, &format!("{path}/drain"), "").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            v["name"].clone(),
            v["admin"].clone(),
            v["available"].clone()
        ),
        (json!("app1"), json!("drain"), json!(false))
    );
    assert!(!picks(&admin, "web", 8).contains(&"app1".to_string()));

    let (status, v) = admin
        .json(Method::POST, &format!("{path}/disable"), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (v["admin"].clone(), v["available"].clone()),
        (json!("disabled"), json!(false))
    );
    assert_eq!(
        admin.pool("web").backend("app1").unwrap().admin_state(),
        AdminState::Disabled
    );

    let (status, v) = admin
        .json(Method::POST, &format!("{path}/enable"), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (v["admin"].clone(), v["available"].clone()),
        (json!("enabled"), json!(true))
    );
    assert!(picks(&admin, "web", 8).contains(&"app1".to_string()));
}

#[tokio::test]
async fn weight_changes_and_out_of_range_is_422() {
    let admin = Admin::start().await;
    let path = "/api/pools/web/backends/app2/weight";

    let (status, v) = admin.json(Method::PUT, path, r#"{"weight": 7}"#).await;
    assert_eq!(status, 200);
    assert_eq!(v["weight"], 7);
    assert_eq!(admin.pool("web").backend("app2").unwrap().weight(), 7);

    let (status, v) = admin.json(Method::PUT, path, r#"{"weight": 999}"#).await;
    assert_eq!(status, 422);
    assert_eq!(
        v,
        json!({"error": "weight 999 is out of range; use 0 to 256"})
    );
    assert_eq!(admin.pool("web").backend("app2").unwrap().weight(), 7);

    let (status, v) = admin.json(Method::PUT, path, r#"{"weight": -1}"#).await;
    assert_eq!(status, 422);
    assert_eq!(
        v["error"],
        "Failed to deserialize the JSON body into the target type: weight: invalid value: \
         integer `-1`, expected u32 at line 1 column 13"
    );

    let (status, v) = admin.json(Method::PUT, path, "{weight: 3").await;
    assert_eq!(status, 400);
    assert_eq!(
        v["error"],
        "Failed to parse the request body as JSON: key must be a string at line 1 column 2"
    );

    let (status, v) = admin.json(Method::PUT, path, "").await;
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap().contains("EOF while parsing"),
        "{v}"
    );

    // Weight 0 takes the backend out of new traffic.
    let (status, v) = admin.json(Method::PUT, path, r#"{"weight": 0}"#).await;
    assert_eq!((status, v["available"].clone()), (200, json!(false)));
}

#[tokio::test]
async fn backends_are_added_and_removed() {
    let admin = Admin::start().await;
    let body =
        r#"{"name": "app4", "address": "127.0.0.1:8084", "weight": 3, "max_connections": 2}"#;

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (status, mut v) = admin
        .json(Method::POST, "/api/pools/api/backends", body)
        .await;
    assert_eq!(status, 201);
    // Up since it was added.
    let since = v
        .as_object_mut()
        .unwrap()
        .remove("health_since_unix_ms")
        .and_then(|s| s.as_u64())
        .expect("health_since_unix_ms");
    assert!(
        since >= before && since < before + 60_000,
        "{since} {before}"
    );
    assert_eq!(
        v,
        json!({
            "name": "app4", "addr": "127.0.0.1:8084", "weight": 3, "max_connections": 2, "backup": false,
            "admin": "enabled",
            "health": "up", "available": true, "in_flight": 0, "requests": 0, "failures": 0,
            "bytes_in": 0, "bytes_out": 0, "latency_ms": 30.0, "response_ms": null, "rate": 0,
            "rate_max": 0, "downtime_ms": 0, "downs": 0, "last_check": null,
        })
    );
    assert!(picks(&admin, "api", 4).contains(&"app4".to_string()));

    let (status, v) = admin
        .json(Method::POST, "/api/pools/api/backends", body)
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        v,
        json!({"error": "pool `api` already has a backend named `app4`; names must be unique"})
    );

    // Weight defaults to 1; a bad address is a 400 naming it.
    let (status, v) = admin
        .json(
            Method::POST,
            "/api/pools/api/backends",
            r#"{"name": "app5", "address": "127.0.0.1:8085"}"#,
        )
        .await;
    assert_eq!((status, v["weight"].clone()), (201, json!(1)));
    let (status, v) = admin
        .json(
            Method::POST,
            "/api/pools/api/backends",
            r#"{"name": "app6", "address": "localhost"}"#,
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("invalid socket address syntax"),
        "{v}"
    );
    let (status, v) = admin
        .json(
            Method::POST,
            "/api/pools/api/backends",
            r#"{"name": "", "address": "127.0.0.1:1"}"#,
        )
        .await;
    assert_eq!(status, 422, "{v}");

    let (status, v) = admin
        .json(Method::DELETE, "/api/pools/api/backends/app4", "")
        .await;
    assert_eq!(status, 200);
    let names: Vec<&str> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        (v["name"].clone(), names),
        (json!("api"), vec!["api1", "app5"])
    );
    assert!(admin.pool("api").backend("app4").is_none());

    let (status, v) = admin
        .json(Method::DELETE, "/api/pools/api/backends/app4", "")
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"error": "pool `api` has no backend named `app4`"})
    );
}

#[tokio::test]
async fn strategy_changes_and_bad_ones_are_refused() {
    let admin = Admin::start().await;
    let path = "/api/pools/web/strategy";

    let (status, v) = admin
        .json(Method::PUT, path, r#"{"strategy": "least_connections"}"#)
        .await;
    assert_eq!(
        (status, v["strategy"].clone()),
        (200, json!("least_connections"))
    );
    assert_eq!(
        admin.pool("web").state().kind,
        StrategyKind::LeastConnections
    );

    let (status, v) = admin
        .json(Method::PUT, path, r#"{"strategy": "consistent_hash"}"#)
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        v,
        json!({"error": "consistent_hash needs a hash_key: \"client_ip\", \"header:NAME\" or \"cookie:NAME\""})
    );
    assert_eq!(
        admin.pool("web").state().kind,
        StrategyKind::LeastConnections
    );

    let (status, v) = admin
        .json(Method::PUT, path, r#"{"strategy": "fastest"}"#)
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        v,
        json!({"error": "unknown strategy `fastest`; expected one of round_robin, weighted_round_robin, least_connections, random_two_choices, peak_ewma, consistent_hash"})
    );

    let (status, v) = admin
        .json(
            Method::PUT,
            path,
            r#"{"strategy": "consistent_hash", "hash_key": "ip"}"#,
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        v,
        json!({"error": "`ip` is not a hash key; use \"client_ip\", \"header:NAME\" or \"cookie:NAME\""})
    );

    let (status, v) = admin
        .json(
            Method::PUT,
            path,
            r#"{"strategy": "round_robin", "extra": 1}"#,
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `extra`"),
        "{v}"
    );

    let (status, v) = admin
        .json(
            Method::PUT,
            path,
            r#"{"strategy": "consistent_hash", "hash_key": "header:X-User"}"#,
        )
        .await;
    assert_eq!(
        (status, v["strategy"].clone()),
        (200, json!("consistent_hash"))
    );
    let state = admin.pool("web").state();
    assert_eq!(state.kind, StrategyKind::ConsistentHash);
    assert_eq!(
        state.hash_key,
        Some(balance::HashKey::Header("x-user".into()))
    );
}

#[tokio::test]
async fn unknown_pool_backend_and_route_are_404() {
    let admin = Admin::start().await;
    let (status, v) = admin
        .json(Method::POST, "/api/pools/nope/backends/app1/drain", "")
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"error": "no pool named `nope`; pools: api, checked, web"})
    );

    let (status, v) = admin
        .json(
            Method::PUT,
            "/api/pools/nope/strategy",
            r#"{"strategy": "round_robin"}"#,
        )
        .await;
    assert_eq!(
        (status, v),
        (
            404,
            json!({"error": "no pool named `nope`; pools: api, checked, web"})
        )
    );

    let (status, v) = admin
        .json(Method::POST, "/api/pools/web/backends/zz/drain", "")
        .await;
    assert_eq!(status, 404);
    assert_eq!(v, json!({"error": "pool `web` has no backend named `zz`"}));

    let (status, v) = admin
        .json(
            Method::PUT,
            "/api/pools/web/backends/zz/weight",
            r#"{"weight": 1}"#,
        )
        .await;
    assert_eq!(
        (status, v),
        (
            404,
            json!({"error": "pool `web` has no backend named `zz`"})
        )
    );

    let (status, v) = admin.json(Method::GET, "/api/nothing", "").await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"error": "no route /api/nothing; see /stats, /metrics, /api/stats and /api/pools/{pool}/..."})
    );

    let r = admin
        .call(Method::GET, "/api/pools/web/backends/app1/drain", "")
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "POST");
    assert_eq!(
        r.body,
        r#"{"error":"/api/pools/web/backends/app1/drain does not take GET; the Allow header lists what it takes"}"#
    );
}

#[tokio::test]
async fn pools_and_backends_can_be_read_one_by_one() {
    let admin = Admin::start().await;
    let (status, v) = admin.json(Method::GET, "/api/pools/api", "").await;
    assert_eq!(
        (status, v["name"].clone(), v["strategy"].clone()),
        (200, json!("api"), json!("least_connections"))
    );
    // Names are percent-decoded, so any backend name can be addressed.
    let (status, v) = admin
        .json(
            Method::GET,
            "/api/pools/web/backends/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "",
        )
        .await;
    assert_eq!((status, v["addr"].clone()), (200, json!("127.0.0.1:3")));
}
