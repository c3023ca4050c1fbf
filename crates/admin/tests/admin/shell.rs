//! The shell's own routes (`/`, `/metrics`, `/api/reload`, the fallbacks) and the one error
//! shape every service's routes answer with.

use std::sync::atomic::Ordering;

use admin::ReloadError;
use axum::http::Method;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;

use crate::Admin;

#[tokio::test]
async fn root_redirects_to_the_console() {
    let admin = Admin::start().await;
    let r = admin.get("/").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/console");
}

#[tokio::test]
async fn metrics_encode_the_node_registry_as_openmetrics() {
    let admin = Admin::start().await;
    let events = Counter::<u64>::default();
    admin
        .metrics
        .register("lintas_test_events", "Events the test made", events.clone());
    events.inc_by(3);
    let r = admin.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        r.body,
        "# HELP lintas_test_events Events the test made.\n\
         # TYPE lintas_test_events counter\n\
         lintas_test_events_total 3\n\
         # EOF\n"
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_other_methods_405() {
    let admin = Admin::start().await;
    let (status, v) = admin.json(Method::GET, "/api/nothing", "").await;
    assert_eq!(status, 404);
    assert_eq!(
        v,
        json!({"error": "no route /api/nothing; see /stats, /metrics, /api/stats and /api/pools/{pool}/..."})
    );
    let r = admin.call(Method::GET, "/api/thing/off", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), "POST");
    assert_eq!(
        r.body,
        r#"{"error":"/api/thing/off does not take GET; the Allow header lists what it takes"}"#
    );
}

#[tokio::test]
async fn reload_calls_control_and_returns_its_summary() {
    let admin = Admin::start().await;
    let (status, v) = admin.json(Method::POST, "/api/reload", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"proxy": {"pools_updated": ["web"]}, "restart_needed": []})
    );
    assert_eq!(admin.control.calls.load(Ordering::SeqCst), 1);
}

/// An invalid file is the caller's to fix (422); a valid one a service refused is the
/// node's trouble (500). Either way the body is the control's message as it is.
#[tokio::test]
async fn failed_reload_is_a_json_error_whose_status_says_whose_fault() {
    let invalid = "config.toml:3:11: proxy.pools.web.backends: a pool needs at least one backend; the running configuration is unchanged";
    let refused = "config.toml:2:10: proxy.listeners.web.bind: address 127.0.0.1:80 in use";
    for (error, status, msg) in [
        (ReloadError::Invalid(invalid.to_owned()), 422, invalid),
        (ReloadError::Refused(refused.to_owned()), 500, refused),
    ] {
        let admin = Admin::start_with(Some(error)).await;
        let (got, v) = admin.json(Method::POST, "/api/reload", "").await;
        assert_eq!(got, status);
        assert_eq!(v, json!({ "error": msg }));
        assert_eq!(admin.control.calls.load(Ordering::SeqCst), 1);
    }
}

/// Whatever a service's route could not read, the answer is `{"error"}` with axum's status
/// and message: 400 for what does not parse, 422 for JSON of the wrong shape.
#[tokio::test]
async fn unreadable_bodies_paths_and_queries_are_json_errors() {
    let admin = Admin::start().await;
    let path = "/api/things/7/weight";
    let (status, v) = admin.json(Method::PUT, path, r#"{"weight": 7}"#).await;
    assert_eq!((status, v), (200, json!({"id": 7, "weight": 7})));
    let cases = [
        (
            path,
            r#"{"weight": -1}"#,
            422,
            "Failed to deserialize the JSON body into the target type: weight: invalid value: integer `-1`, expected u32 at line 1 column 13",
        ),
        (
            path,
            r#"{"weight": 1, "extra": 1}"#,
            422,
            "Failed to deserialize the JSON body into the target type: extra: unknown field `extra`, expected `weight` at line 1 column 21",
        ),
        (
            path,
            "{weight: 3",
            400,
            "Failed to parse the request body as JSON: key must be a string at line 1 column 2",
        ),
        (
            path,
            "",
            400,
            "Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 0",
        ),
        (
            "/api/things/seven/weight",
            r#"{"weight": 7}"#,
            400,
            "Invalid URL: Cannot parse `seven` to a `u32`",
        ),
    ];
    for (path, body, status, error) in cases {
        let (got, v) = admin.json(Method::PUT, path, body).await;
        assert_eq!((got, v), (status, json!({ "error": error })), "{body}");
    }
    let (status, v) = admin.json(Method::PUT, path, r#"{"weight": 999}"#).await;
    assert_eq!(
        (status, v),
        (
            422,
            json!({"error": "weight 999 is out of range; use 0 to 256"})
        )
    );
    let (status, v) = admin.json(Method::GET, "/api/things?limit=many", "").await;
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "Failed to deserialize query string: limit: invalid digit found in string"})
        )
    );
    let (status, v) = admin.json(Method::GET, "/api/things?limit=5", "").await;
    assert_eq!((status, v), (200, json!({"limit": 5})));
}

#[tokio::test]
async fn oversized_bodies_are_413_json_errors() {
    let admin = Admin::start().await;
    let body = format!(r#"{{"weight": 1, "pad": "{}"}}"#, "x".repeat(100 * 1024));
    let (status, v) = admin.json(Method::PUT, "/api/things/1/weight", &body).await;
    assert_eq!(
        (status, v),
        (
            413,
            json!({"error": "Failed to buffer the request body: length limit exceeded"})
        )
    );
}
