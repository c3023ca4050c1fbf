//! Refuses changes that a web page on another site makes a browser send.
//!
//! Browsers remember basic-auth credentials and attach them to any request to the admin
//! address — including a form another site posts to `http://127.0.0.1:9000/api/reload`.
//! Tools (curl, scripts, Prometheus) send no `Origin` or `Sec-Fetch-Site` header and are not
//! affected; browsers always send them on cross-site POST, PUT and DELETE, so a change is
//! refused when they name another site. Reads are left alone: a cross-site page cannot read
//! the answer anyway.

use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};

use crate::error::ApiError;

/// Checks an unsafe request's origin; `Err` is a 403 saying why.
pub(crate) fn check(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = || {
        ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "cross-site request refused: the admin API takes changes from tools (curl, scripts) \
             or from its own origin only",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(refuse());
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().map_err(|_| refuse())?;
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .ok_or_else(refuse)?;
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(refuse)?;
        if !authority.eq_ignore_ascii_case(host) {
            return Err(refuse());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn tools_and_same_origin_pass() {
        assert!(check(&Method::POST, &headers(&[("host", "127.0.0.1:9000")])).is_ok());
        assert!(
            check(
                &Method::POST,
                &headers(&[
                    ("host", "127.0.0.1:9000"),
                    ("origin", "http://127.0.0.1:9000"),
                    ("sec-fetch-site", "same-origin"),
                ])
            )
            .is_ok()
        );
    }

    #[test]
    fn cross_site_changes_are_refused_reads_are_not() {
        let evil = headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(check(&Method::POST, &evil).unwrap_err().status, 403);
        assert_eq!(check(&Method::DELETE, &evil).unwrap_err().status, 403);
        assert!(check(&Method::GET, &evil).is_ok());
        let fetch = headers(&[("host", "127.0.0.1:9000"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(check(&Method::PUT, &fetch).unwrap_err().status, 403);
        let null = headers(&[("host", "127.0.0.1:9000"), ("origin", "null")]);
        assert_eq!(check(&Method::POST, &null).unwrap_err().status, 403);
    }
}
