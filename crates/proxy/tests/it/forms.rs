//! The stats page's buttons (HAProxy's `stats admin`): plain form posts, admitted exactly like
//! the JSON API, that change the pool the proxy picks from and answer 303 back to `/stats`.

use axum::http::Method;
use balance::AdminState;

use crate::{Admin, PASSWORD, USER};

const FORM: &str = "application/x-www-form-urlencoded";
const DRAIN_APP1: &str = "/forms/pools/web/backends/app1/drain";

/// What a browser sends with a form posted from the page itself.
fn same_origin(admin: &Admin) -> [(&'static str, String); 3] {
    [
        ("content-type", FORM.to_owned()),
        ("origin", admin.base.clone()),
        ("sec-fetch-site", "same-origin".to_owned()),
    ]
}

/// Posts `body` to `path` with `extra` headers besides the same-origin ones.
async fn post(admin: &Admin, path: &str, extra: &[(&str, &str)], body: &str) -> testkit::Reply {
    let origin = same_origin(admin);
    let mut headers: Vec<(&str, &str)> = origin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.extend_from_slice(extra);
    admin.send(Method::POST, path, &headers, body).await
}

fn basic() -> String {
    testkit::basic(USER, PASSWORD)
}

fn admin_state(admin: &Admin, backend: &str) -> AdminState {
    let snapshot = admin.pool("web").snapshot();
    snapshot
        .backends
        .iter()
        .find(|b| b.name == backend)
        .unwrap_or_else(|| panic!("no backend {backend}"))
        .admin
}

#[tokio::test]
async fn stats_form_drains_enables_and_disables_then_303s_back_to_stats() {
    let admin = Admin::start().await;
    let auth = basic();
    let r = post(&admin, DRAIN_APP1, &[("authorization", &auth)], "weight=1").await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        "/stats?done=web%2Fapp1%3A%20draining%20%28no%20new%20traffic%3B%20connections%20in%20flight%20finish%29"
    );
    assert_eq!(admin_state(&admin, "app1"), AdminState::Drain);

    // The page it leads to says so, once: its next refresh drops the query.
    let page = admin.get(r.header("location")).await.body;
    assert!(
        page.contains(
            "<p class=\"done\">web/app1: draining (no new traffic; connections in flight finish)</p>"
        ),
        "{page}"
    );
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5; url=/stats\">"));
    assert!(page.contains("<td class=\"s t\">DRAIN</td>"));

    let path = "/forms/pools/web/backends/app1/disable";
    let r = post(&admin, path, &[("authorization", &auth)], "").await;
    assert_eq!(r.status, 303);
    assert_eq!(admin_state(&admin, "app1"), AdminState::Disabled);
    let path = "/forms/pools/web/backends/app1/enable";
    let r = post(&admin, path, &[("authorization", &auth)], "").await;
    assert_eq!(
        (r.status, r.header("location")),
        (
            303,
            "/stats?done=web%2Fapp1%3A%20enabled%20%28takes%20traffic%20when%20healthy%29"
        )
    );
    assert_eq!(admin_state(&admin, "app1"), AdminState::Enabled);

    // Without basic auth the page has no token to render.
    let page = admin.get("/stats").await.body;
    assert!(!page.contains("name=\"csrf\""));
    assert!(page.contains(
        "<form method=\"post\" action=\"/forms/pools/web/backends/app1/weight\"><input name=\"weight\" value=\"1\""
    ), "{page}");
    assert!(page.contains(
        "<button formaction=\"/forms/pools/web/backends/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/drain\">Drain</button>"
    ), "{page}");
}

#[tokio::test]
async fn stats_form_without_credentials_is_401() {
    let admin = Admin::start().await;
    let r = post(&admin, DRAIN_APP1, &[], "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, r#"{"error":"authentication required"}"#)
    );
    let wrong = testkit::basic(USER, "guess");
    let r = post(&admin, DRAIN_APP1, &[("authorization", &wrong)], "").await;
    assert_eq!(r.status, 401);
    assert_eq!(admin_state(&admin, "app1"), AdminState::Enabled);
}

#[tokio::test]
async fn stats_form_from_another_site_is_403_like_the_api() {
    let admin = Admin::start().await;
    let auth = basic();
    let refused = r#"{"error":"cross-site request refused: the admin API takes changes from tools (curl, scripts) or from its own origin only"}"#;
    let evil = ("origin", "https://evil.example");
    let fetch = ("sec-fetch-site", "cross-site");
    for cross_site in [vec![evil, fetch], vec![evil], vec![fetch]] {
        let mut headers = vec![("authorization", auth.as_str()), ("content-type", FORM)];
        headers.extend(cross_site);
        for path in [DRAIN_APP1, "/api/pools/web/backends/app1/drain"] {
            let r = admin.send(Method::POST, path, &headers, "").await;
            assert_eq!(
                (r.status, r.body.as_str()),
                (403, refused),
                "{path} {headers:?}"
            );
        }
    }
    assert_eq!(admin_state(&admin, "app1"), AdminState::Enabled);
}

#[tokio::test]
async fn stats_form_with_a_session_needs_the_pages_token() {
    let admin = Admin::start().await;
    let session = admin.log_in(USER, PASSWORD).await;
    let cookie = [("cookie", session.cookie.as_str())];

    // The page opened with the session renders its token in every form.
    let r = admin.send(Method::GET, "/stats", &cookie, "").await;
    assert_eq!(r.status, 200);
    let field = format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        session.csrf
    );
    assert_eq!(r.body.matches(&field).count(), 5, "one per backend");

    let refused = r#"{"error":"missing or wrong csrf form field: a form posted with the console's session must carry the token of the page it came from; reload the page and post again"}"#;
    let wrong = format!("csrf={}", &session.csrf[..session.csrf.len() - 1]);
    for body in ["", "weight=1", "csrf=forged", wrong.as_str()] {
        let r = post(&admin, DRAIN_APP1, &cookie, body).await;
        assert_eq!((r.status, r.body.as_str()), (403, refused), "{body}");
    }
    assert_eq!(admin_state(&admin, "app1"), AdminState::Enabled);

    // The JSON API is not opened by a form's field: it wants the header.
    let body = format!("csrf={}", session.csrf);
    let r = post(&admin, "/api/pools/web/backends/app1/drain", &cookie, &body).await;
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("missing or wrong X-CSRF-Token"),
        "{}",
        r.body
    );
    assert_eq!(admin_state(&admin, "app1"), AdminState::Enabled);

    let body = format!("csrf={}&weight=1", session.csrf);
    let r = post(&admin, DRAIN_APP1, &cookie, &body).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("location").starts_with("/stats?done=web%2Fapp1"));
    assert_eq!(admin_state(&admin, "app1"), AdminState::Drain);
}

#[tokio::test]
async fn stats_form_sets_the_weight_and_shows_the_pools_refusal() {
    let admin = Admin::start().await;
    let auth = basic();
    let path = "/forms/pools/web/backends/app2/weight";
    let r = post(&admin, path, &[("authorization", &auth)], "weight=7").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, "/stats?done=web%2Fapp2%3A%20weight%20set%20to%207")
    );
    assert_eq!(admin.pool("web").backend("app2").unwrap().weight(), 7);

    for (body, error) in [
        ("weight=999", "weight 999 is out of range; use 0 to 256"),
        (
            "weight=-1",
            "weight `-1` is not a whole number; use 0 to 256",
        ),
        ("", "weight `` is not a whole number; use 0 to 256"),
    ] {
        let r = post(&admin, path, &[("authorization", &auth)], body).await;
        assert_eq!(r.status, 303, "{body}");
        let location = r.header("location");
        assert!(location.starts_with("/stats?error="), "{location}");
        let page = admin.get(location).await.body;
        assert!(
            page.contains(&format!("<p class=\"error\">{error}</p>")),
            "{body}: {page}"
        );
    }
    assert_eq!(admin.pool("web").backend("app2").unwrap().weight(), 7);

    // An unknown backend is the API's 404 message, on the page.
    let path = "/forms/pools/web/backends/nope/weight";
    let r = post(&admin, path, &[("authorization", &auth)], "weight=1").await;
    let page = admin.get(r.header("location")).await.body;
    assert!(
        page.contains("<p class=\"error\">pool `web` has no backend named `nope`</p>"),
        "{page}"
    );
    // A query's markup is shown, not run.
    let page = admin.get("/stats?error=%3Cscript%3Ex").await.body;
    assert!(page.contains("<p class=\"error\">&lt;script&gt;x</p>"));
    assert!(!page.contains("<script>"));
}
