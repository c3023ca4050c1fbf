//! The chat page (`assets/`): plain HTML, CSS and JavaScript built into the binary, served
//! at `/chat`, `/chat/chat.css` and `/chat/chat.js` on the hub's listener.
//!
//! The page loads nothing from elsewhere, so every response carries a Content-Security-Policy
//! of `default-src 'self'`: a message that slipped into the DOM as HTML could then still run
//! no script and reach no other site. `'self'` covers the page's own WebSocket (same host).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const HTML: &str = include_str!("../assets/chat.html");
const CSS: &str = include_str!("../assets/chat.css");
const JS: &str = include_str!("../assets/chat.js");

/// The page's three routes.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/chat",
            get(|| async { asset(HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/chat/chat.css",
            get(|| async { asset(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/chat/chat.js",
            get(|| async { asset(JS, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // Revalidated on every load, so a new binary's page is never mixed with an old
            // script from the cache.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
