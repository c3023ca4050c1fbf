//! The admin console: one web UI for pools, relay and watch, served by the admin listener.
//!
//! The pages are hand-written HTML, CSS and JavaScript modules in `assets/`, embedded with
//! `include_str!` so `cargo run` needs no front-end build and the binary carries its UI. They
//! call only the JSON routes the services document (`/api/stats`, `/api/pools/...`,
//! `/api/relay/...`, `/api/watch/...`) — what a person can do here, a script can do with curl,
//! and the console cannot drift from the API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /login` | the login page (open to anyone; it posts to the admin shell's `POST /login`) |
//! | `GET /console` | the console (behind the admin listener's authentication) |
//! | `GET /assets/{version}/{file}` | a script or style sheet, cached for a year: `version` changes with any asset |
//!
//! Security: every page is sent with a Content-Security-Policy that allows scripts, styles
//! and connections from the listener itself only (no inline script, no framing); the
//! scripts build the DOM with `textContent`, never `innerHTML`, so a record's fields or a
//! backend's name cannot inject markup. Sessions and CSRF tokens are the admin shell's
//! (`admin::login`).

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// An embedded file: its name under `/assets/{version}/`, its type and its text.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    text: &'static str,
}

macro_rules! assets {
    ($($name:literal => $type:expr),* $(,)?) => {
        &[$(Asset { name: $name, content_type: $type, text: include_str!(concat!("../assets/", $name)) }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every script and style sheet the pages load.
const ASSETS: &[Asset] = assets![
    "console.css" => "text/css; charset=utf-8",
    "dom.js" => JS,
    "api.js" => JS,
    "graph.js" => JS,
    "app.js" => JS,
    "login.js" => JS,
    "overview.js" => JS,
    "pools.js" => JS,
    "relay.js" => JS,
    "deliveries.js" => JS,
    "watch.js" => JS,
];

const INDEX: &str = include_str!("../assets/index.html");
const LOGIN: &str = include_str!("../assets/login.html");

/// A digest of every asset: it names the asset directory, so a browser never runs a
/// script from one build with a page from another, and assets can be cached for good.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut all = String::new();
    for asset in ASSETS {
        all.push_str(asset.name);
        all.push('\0');
        all.push_str(asset.text);
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(all.as_bytes()))
});

/// The pages with the asset directory filled in.
static PAGES: LazyLock<(String, String)> = LazyLock::new(|| {
    (
        INDEX.replace("{{assets}}", &format!("/assets/{}", *VERSION)),
        LOGIN.replace("{{assets}}", &format!("/assets/{}", *VERSION)),
    )
});

/// Scripts, styles, connections and images from the listener only; no frames, no plugins,
/// forms post only to the listener.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; the admin listener adds authentication (the login page and the
/// assets are let through without it).
pub fn router() -> Router {
    Router::new()
        .route("/console", get(|| async { page(&PAGES.0) }))
        .route("/login", get(|| async { page(&PAGES.1) }))
        .route("/assets/{version}/{file}", get(asset))
}

fn page(html: &'static str) -> Response {
    let mut resp = (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let found = ASSETS.iter().find(|a| a.name == file);
    match found {
        Some(asset) if version == *VERSION => (
            [
                (CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
                (
                    CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                ),
                (
                    HeaderName::from_static("x-content-type-options"),
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            asset.text,
        )
            .into_response(),
        // An old page asking for an old build's file: not cached, so a reload fetches the
        // new page.
        _ => (
            StatusCode::NOT_FOUND,
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            format!("no asset {version}/{file}; reload the page"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = router()
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("a body").to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn pages_name_their_assets_by_version_and_every_asset_is_served() {
        let (status, headers, html) = get("/console").await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-security-policy"], CSP);
        let dir = format!("/assets/{}/", *VERSION);
        assert!(html.contains(&format!("{dir}app.js")), "{html}");
        assert!(!html.contains("{{"), "every placeholder filled: {html}");
        let (_, _, login) = get("/login").await;
        assert!(login.contains(&format!("{dir}login.js")), "{login}");
        for asset in ASSETS {
            let (status, headers, text) = get(&format!("{dir}{}", asset.name)).await;
            assert_eq!(status, 200, "{}", asset.name);
            assert_eq!(headers["content-type"], asset.content_type);
            assert_eq!(
                headers["cache-control"],
                "public, max-age=31536000, immutable"
            );
            assert_eq!(text, asset.text);
        }
        let (status, headers, text) = get("/assets/0000000000000000/app.js").await;
        assert_eq!(status, 404);
        assert!(headers.get("cache-control").is_none());
        assert_eq!(text, "no asset 0000000000000000/app.js; reload the page");
        let (status, _, _) = get(&format!("{dir}..%2FCargo.toml")).await;
        assert_eq!(status, 404);
    }

    /// Every module a script imports is an asset, so no page breaks on a missing file.
    #[test]
    fn every_import_is_an_embedded_asset() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.text.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .rsplit_once("from \"./")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("{}: unexpected import: {line}", asset.name));
                assert!(
                    ASSETS.iter().any(|a| a.name == target),
                    "{} imports {target}, which is not embedded",
                    asset.name
                );
            }
        }
    }
}
