//! The chat page as the hub serves it. What it does in a browser is tested in headless
//! Chromium by crates/lintas/tests/it/hub_chat.rs; here: the three files, their types, and
//! a policy that lets them load nothing but themselves and the hub's own WebSocket.

use testkit::HttpClient;

use crate::harness::Node;

#[tokio::test]
async fn the_chat_page_and_its_assets_are_served_under_a_same_origin_policy() {
    let node = Node::start("").await;
    let http = HttpClient::new();
    let mut bodies = Vec::new();
    for (path, kind) in [
        ("/chat", "text/html"),
        ("/chat/chat.css", "text/css"),
        ("/chat/chat.js", "text/javascript"),
    ] {
        let reply = http.get(&format!("http://{}{path}", node.addr)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            reply.header("content-type").starts_with(kind),
            "{path}: {}",
            reply.header("content-type")
        );
        assert_eq!(
            reply.header("content-security-policy"),
            "default-src 'self'",
            "{path}"
        );
        assert_eq!(reply.header("x-content-type-options"), "nosniff", "{path}");
        assert!(
            !reply.body.contains("http://") && !reply.body.contains("https://"),
            "{path} names another site"
        );
        bodies.push(reply.body);
    }
    let html = &bodies[0];
    assert!(html.contains(r#"href="/chat/chat.css""#), "{html}");
    assert!(
        html.contains(r#"<script src="/chat/chat.js" defer></script>"#),
        "{html}"
    );
    assert_eq!(
        html.matches("<script").count(),
        1,
        "an inline script, which the policy would block: {html}"
    );
    assert_eq!(
        inline_handler(html),
        None,
        "an inline event handler, which the policy would block: {html}"
    );
    node.stop().await;
}

/// The first attribute like ` onclick=` in `html`.
fn inline_handler(html: &str) -> Option<&str> {
    html.match_indices(" on").find_map(|(i, _)| {
        let rest = &html[i + 1..];
        let name = rest
            .find(|c: char| !c.is_ascii_lowercase())
            .unwrap_or(rest.len());
        (name > 2 && rest[name..].starts_with('=')).then(|| &rest[..name])
    })
}
