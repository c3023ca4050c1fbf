//! The console's sessions on a real socket: login, the cookie, the CSRF token on changes,
//! logout, and a browser without credentials sent to the login page.

use axum::http::Method;
use serde_json::{Value, json};

use crate::{Admin, PASSWORD, USER};

/// A logged-in browser: its cookie and the token its changes carry.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn log_in(admin: &Admin) -> Browser {
    let session = admin.log_in(USER, PASSWORD).await;
    let (pair, attributes) = session.set_cookie.split_once(';').expect("attributes");
    assert_eq!(
        attributes,
        " Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
    );
    let id = pair
        .strip_prefix("lintas_session=")
        .expect("the session cookie");
    assert_eq!(id.len(), 43, "256 random bits, base64url: {id}");
    assert_eq!(session.user, USER);
    assert_ne!(session.csrf, id);
    Browser {
        cookie: session.cookie,
        csrf: session.csrf,
    }
}

#[tokio::test]
async fn a_session_reads_and_with_its_token_changes() {
    let admin = Admin::start().await;
    let browser = log_in(&admin).await;

    let r = admin
        .send(
            Method::GET,
            "/api/thing",
            &[("cookie", &browser.cookie)],
            "",
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"on":true}"#));
    let r = admin
        .send(
            Method::GET,
            "/api/session",
            &[("cookie", &browser.cookie)],
            "",
        )
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"user": USER, "csrf": browser.csrf})
    );

    // The cookie alone changes nothing: another site's form would carry it too.
    for token in [None, Some("forged"), Some(&browser.csrf[1..])] {
        let mut headers = vec![("cookie", browser.cookie.as_str())];
        headers.extend(token.map(|t| ("x-csrf-token", t)));
        let r = admin
            .send(Method::POST, "/api/thing/off", &headers, "")
            .await;
        assert_eq!(r.status, 403, "{token:?}");
        assert_eq!(
            r.body,
            r#"{"error":"missing or wrong X-CSRF-Token: a change made with the console's session must carry the token GET /api/session gives"}"#
        );
    }
    assert!(admin.is_on());
    let r = admin
        .send(
            Method::POST,
            "/api/thing/off",
            &[("cookie", &browser.cookie), ("x-csrf-token", &browser.csrf)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!admin.is_on());

    // Another session's token is not this one's.
    let other = log_in(&admin).await;
    let r = admin
        .send(
            Method::POST,
            "/api/reload",
            &[("cookie", &other.cookie), ("x-csrf-token", &browser.csrf)],
            "",
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_form_carries_the_token_in_a_field_on_form_routes_only() {
    let admin = Admin::start().await;
    let browser = log_in(&admin).await;
    let form = "application/x-www-form-urlencoded";
    let post = |path: &'static str, content_type: &'static str, body: String| {
        let headers = [
            ("cookie", browser.cookie.clone()),
            ("content-type", content_type.to_owned()),
        ];
        let admin = &admin;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            admin.send(Method::POST, path, &headers, &body).await
        }
    };
    let form_refused = r#"{"error":"missing or wrong csrf form field: a form posted with the console's session must carry the token of the page it came from; reload the page and post again"}"#;
    for body in [
        "note=hi".to_owned(),
        "note=hi&csrf=forged".to_owned(),
        format!("csrf={}", &browser.csrf[1..]),
        format!("csrf={}x", browser.csrf),
    ] {
        let r = post("/forms/thing/off", form, body.clone()).await;
        assert_eq!((r.status, r.body.as_str()), (403, form_refused), "{body}");
    }
    assert!(admin.is_on());

    // The JSON API keeps its header: the same field does not open it.
    let r = post("/api/thing/off", form, format!("csrf={}", browser.csrf)).await;
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("missing or wrong X-CSRF-Token"),
        "{}",
        r.body
    );
    // Nor does a form route read a token from a body that is not a form.
    let json = json!({ "csrf": browser.csrf }).to_string();
    let r = post("/forms/thing/off", "application/json", json).await;
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("missing or wrong X-CSRF-Token"),
        "{}",
        r.body
    );
    assert!(admin.is_on());

    let body = format!("note=a%20b&csrf={}", browser.csrf);
    let r = post(
        "/forms/thing/off",
        "application/x-www-form-urlencoded; charset=UTF-8",
        body,
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"note":"a b"}"#));
    assert!(!admin.is_on());
}

#[tokio::test]
async fn logout_ends_the_session_and_clears_the_cookie() {
    let admin = Admin::start().await;
    let browser = log_in(&admin).await;
    let r = admin
        .send(
            Method::POST,
            "/logout",
            &[("cookie", &browser.cookie), ("x-csrf-token", &browser.csrf)],
            "",
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("set-cookie"),
        "lintas_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
    );
    let r = admin
        .send(
            Method::GET,
            "/api/thing",
            &[("cookie", &browser.cookie), ("sec-fetch-mode", "cors")],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"error":"authentication required"}"#);
    assert_eq!(
        r.header("www-authenticate"),
        "",
        "a page's script gets no challenge, so the browser shows no password dialog"
    );
}

#[tokio::test]
async fn wrong_logins_are_refused_and_throttled_like_basic_auth() {
    let admin = Admin::start().await;
    for (body, status, error) in [
        (
            json!({"user": USER, "password": "guess"}).to_string(),
            401,
            "wrong user name or password",
        ),
        (
            json!({"user": "root", "password": PASSWORD}).to_string(),
            401,
            "wrong user name or password",
        ),
        (
            r#"{"user": "admin"}"#.to_owned(),
            422,
            "Failed to deserialize the JSON body into the target type: missing field `password` at line 1 column 17",
        ),
    ] {
        let r = admin.send(Method::POST, "/login", &[], &body).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.header("set-cookie"), "");
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({ "error": error })
        );
    }
    // Five failures are free; the client has used two.
    for _ in 0..3 {
        let body = json!({"user": USER, "password": "guess"}).to_string();
        assert_eq!(
            admin.send(Method::POST, "/login", &[], &body).await.status,
            401
        );
    }
    let body = json!({"user": USER, "password": "guess"}).to_string();
    let r = admin.send(Method::POST, "/login", &[], &body).await;
    assert_eq!(r.status, 401);
    let r = admin.send(Method::POST, "/login", &[], &body).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("retry-after"), "1");
    // A login from another site is refused before the password is looked at.
    let body = json!({"user": USER, "password": PASSWORD}).to_string();
    let r = admin
        .send(
            Method::POST,
            "/login",
            &[("host", "127.0.0.1"), ("origin", "https://evil.example")],
            &body,
        )
        .await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn a_browser_without_a_session_is_sent_to_the_login_page() {
    let admin = Admin::start().await;
    let r = admin
        .send(
            Method::GET,
            "/api/thing?x=1",
            &[("sec-fetch-mode", "navigate"), ("accept", "text/html")],
            "",
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), "/login?next=%2Fapi%2Fthing%3Fx%3D1");
    // A forged or expired cookie is no session.
    let r = admin
        .send(
            Method::GET,
            "/api/thing",
            &[("cookie", "lintas_session=AAAA")],
            "",
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), "Basic realm=\"lintas\"");
    // The login page and the console's files are open (no console is mounted here: the
    // shell has only `POST /login`, and no assets).
    let r = admin.send(Method::GET, "/login", &[], "").await;
    assert_eq!(r.status, 405);
    let r = admin.send(Method::GET, "/assets/x.js", &[], "").await;
    assert_eq!(r.status, 404);
}

/// Fuzz target: no forged or altered `Cookie` / `X-CSRF-Token` pair makes a change. Each
/// case sends a change with headers built from the real session id and token — cut,
/// extended, one character changed, swapped, repeated, wrapped in other cookies, with stray
/// separators and bytes — and it must be refused (401 or 403) unless the pair is exactly the
/// session's own. Runs as every fuzz target does
/// ([`testkit::fuzz::Fuzz`]).
#[tokio::test]
async fn no_altered_cookie_or_token_makes_a_change() {
    use rand::Rng;
    let admin = Admin::start().await;
    let browser = log_in(&admin).await;
    let id = browser
        .cookie
        .strip_prefix("lintas_session=")
        .unwrap()
        .to_owned();
    let mut fuzz = testkit::fuzz::Fuzz::from_env("no_altered_cookie_or_token_makes_a_change");
    let mut rng = fuzz.rng();
    let alter = |rng: &mut rand::rngs::StdRng, s: &str| -> String {
        let mut b = s.as_bytes().to_vec();
        match rng.random_range(0..6) {
            0 => b.truncate(rng.random_range(0..b.len())),
            1 => b.push(*testkit::fuzz::http1::pick(rng, b"A-_=;x")),
            2 => {
                let i = rng.random_range(0..b.len());
                let c = *testkit::fuzz::http1::pick(rng, b"AZaz09-_");
                b[i] = if b[i] == c { b'Q' } else { c };
            }
            3 => b.reverse(),
            4 => b = b.to_ascii_uppercase(),
            _ => b.insert(rng.random_range(0..=b.len()), b' '),
        }
        String::from_utf8_lossy(&b).into_owned()
    };
    let mut granted = 0;
    while fuzz.next_case() {
        let exact_id = rng.random_bool(0.5);
        let exact_token = rng.random_bool(0.5);
        let cookie_value = if exact_id {
            id.clone()
        } else {
            alter(&mut rng, &id)
        };
        let token = if exact_token {
            browser.csrf.clone()
        } else {
            alter(&mut rng, &browser.csrf)
        };
        // Variants 0 and 1 carry the value as the session cookie; 2 puts an altered one
        // first (the first is the one read), 3 misspells the name's case.
        let cookie = match rng.random_range(0..4) {
            0 => format!("lintas_session={cookie_value}"),
            1 => format!("theme=dark; lintas_session={cookie_value}; x=1"),
            2 => format!(
                "lintas_session={}; lintas_session={cookie_value}",
                alter(&mut rng, &id)
            ),
            _ => format!("Lintas_Session={cookie_value}"),
        };
        // What RFC 6265 (5.4) reads: pairs split at `;`, spaces around each dropped, the
        // first `lintas_session` taken; HTTP drops the spaces around the token. Only the
        // exact id and token may pass (a trailing space or `;` is not a change).
        let read = cookie
            .trim()
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "lintas_session")
            .map(|(_, value)| value);
        let should_pass = read == Some(id.as_str()) && token.trim() == browser.csrf;
        let Ok(token_header) = axum::http::HeaderValue::from_str(&token) else {
            continue;
        };
        let Ok(cookie_header) = axum::http::HeaderValue::from_str(&cookie) else {
            continue;
        };
        let r = admin
            .send(
                Method::PUT,
                "/api/things/1/weight",
                &[
                    ("cookie", cookie_header.to_str().unwrap()),
                    ("x-csrf-token", token_header.to_str().unwrap()),
                ],
                r#"{"weight": 1}"#,
            )
            .await;
        if should_pass {
            assert_eq!(
                r.status,
                200,
                "{}: {cookie:?} {token:?}: {}",
                fuzz.at(),
                r.body
            );
            granted += 1;
        } else {
            assert!(
                r.status == 401 || r.status == 403,
                "{}: {cookie:?} {token:?} was let through: {} {}",
                fuzz.at(),
                r.status,
                r.body
            );
        }
    }
    assert!(
        granted > 0 || fuzz.cases < 8,
        "the exact pair was never tried"
    );
}
