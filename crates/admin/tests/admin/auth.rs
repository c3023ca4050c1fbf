//! Basic auth on every route, and the cross-site guard on changes.

use axum::http::Method;

use testkit::basic;

use crate::{Admin, PASSWORD, USER};

const REFUSED: &str = r#"{"error":"authentication required"}"#;

#[tokio::test]
async fn every_route_needs_credentials() {
    let admin = Admin::start().await;
    let wrong_password = basic(USER, "s3cret");
    let wrong_user = basic("root", PASSWORD);
    let routes = [
        (Method::GET, "/"),
        (Method::GET, "/metrics"),
        (Method::GET, "/api/thing"),
        (Method::POST, "/api/reload"),
        (Method::POST, "/api/thing/off"),
        (Method::GET, "/no/such/route"),
    ];
    let unchecked: [&[(&str, &str)]; 3] = [
        &[],
        &[("authorization", "Basic not-base64!")],
        &[("authorization", "Bearer abc")],
    ];
    // Wrong credentials count against the client's address (five are free), so they are
    // tried on the two routes that change something.
    let wrong: [&[(&str, &str)]; 2] = [
        &[("authorization", &wrong_password)],
        &[("authorization", &wrong_user)],
    ];
    let cases = unchecked
        .iter()
        .flat_map(|h| routes.iter().map(move |r| (*h, r)))
        .chain(
            wrong
                .iter()
                .flat_map(|h| routes[3..5].iter().map(move |r| (*h, r))),
        );
    for (headers, (method, path)) in cases {
        let r = admin.send(method.clone(), path, headers, "").await;
        assert_eq!(r.status, 401, "{method} {path} {headers:?}");
        assert_eq!(r.body, REFUSED);
        assert_eq!(r.header("www-authenticate"), "Basic realm=\"lintas\"");
        assert_eq!(r.header("content-type"), "application/json");
    }
    assert_eq!(
        admin
            .control
            .calls
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(admin.is_on());
}

#[tokio::test]
async fn right_credentials_pass_every_time() {
    let admin = Admin::start().await;
    for _ in 0..3 {
        let r = admin.get("/api/thing").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), "no-store");
    }
    // The scheme is case-insensitive.
    let lower = basic(USER, PASSWORD).replacen("Basic", "basic", 1);
    let r = admin
        .send(Method::GET, "/api/thing", &[("authorization", &lower)], "")
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn cross_site_changes_are_refused() {
    let admin = Admin::start().await;
    let auth = basic(USER, PASSWORD);
    let r = admin
        .send(
            Method::POST,
            "/api/thing/off",
            &[("authorization", &auth), ("origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        r#"{"error":"cross-site request refused: the admin API takes changes from tools (curl, scripts) or from its own origin only"}"#
    );
    assert!(admin.is_on());

    // The same origin (the page itself) may.
    let host = admin.base.trim_start_matches("http://").to_string();
    let origin = admin.base.clone();
    let r = admin
        .send(
            Method::POST,
            "/api/thing/off",
            &[
                ("authorization", &auth),
                ("origin", &origin),
                ("host", &host),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!admin.is_on());
}
