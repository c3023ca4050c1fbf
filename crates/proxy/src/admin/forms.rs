//! The stats page's buttons (HAProxy's `stats admin`): drain, enable, disable and set the
//! weight of a backend from plain HTML forms.
//!
//! A form posts to `POST /forms/pools/{pool}/backends/{backend}/{action}`, under the admin
//! shell's `admin::FORM_PREFIX`, so the shell admits it exactly like the JSON API (basic
//! auth or a session, cross-site posts refused) except that a session's CSRF token comes in
//! the form's hidden `csrf` field, which the page renders. The change itself goes through
//! [`api::change_backend`], the JSON API's own path.
//!
//! The answer is a 303 back to `/stats` (so reloading the page does not post again) with
//! the outcome in the query: `?done=...` or `?error=...`, which the page shows escaped.
//! Refusals by the shell (401, 403, 413) stay JSON errors: they mean the form was not the
//! operator's own, and the page is not the place to explain them.

use std::sync::Arc;

use admin::extract::{Path, form_field};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use balance::{AdminState as BackendAdmin, MAX_WEIGHT};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::api::{self, BackendChange};
use crate::Proxy;

/// The route, for the router and for the page's form actions.
pub(crate) const ROUTE: &str = "/forms/pools/{pool}/backends/{backend}/{action}";

/// Longest outcome message carried back to the page, in characters: a pool's refusal fits,
/// and a crafted link cannot fill the page with text.
pub(crate) const MAX_NOTICE: usize = 300;

/// `POST /forms/pools/{pool}/backends/{backend}/{action}`, `action` one of `drain`,
/// `enable`, `disable`, `weight` (with the form field `weight`).
pub(crate) async fn post(
    State(proxy): State<Arc<Proxy>>,
    Path((pool, backend, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let change = match action.as_str() {
        "drain" => BackendChange::Admin(BackendAdmin::Drain),
        "enable" => BackendChange::Admin(BackendAdmin::Enabled),
        "disable" => BackendChange::Admin(BackendAdmin::Disabled),
        "weight" => {
            let text = form_field(&body, "weight").unwrap_or_default();
            match text.trim().parse() {
                Ok(weight) => BackendChange::Weight(weight),
                Err(_) => {
                    let error =
                        format!("weight `{text}` is not a whole number; use 0 to {MAX_WEIGHT}");
                    return back("error", &error).into_response();
                }
            }
        }
        _ => {
            return admin::ApiError::not_found(format!(
                "no form action `{action}`; the stats page posts drain, enable, disable or weight"
            ))
            .into_response();
        }
    };
    let outcome = api::change_backend(&proxy, &pool, &backend, change);
    match outcome {
        Ok(_) => back("done", &format!("{pool}/{backend}: {}", done(change))),
        Err(e) => back("error", &e.message),
    }
    .into_response()
}

/// What the page says a change did.
fn done(change: BackendChange) -> String {
    match change {
        BackendChange::Admin(BackendAdmin::Drain) => {
            "draining (no new traffic; connections in flight finish)".into()
        }
        BackendChange::Admin(BackendAdmin::Enabled) => {
            "enabled (takes traffic when healthy)".into()
        }
        BackendChange::Admin(BackendAdmin::Disabled) => {
            "disabled (maintenance: no traffic, no checks)".into()
        }
        BackendChange::Weight(weight) => format!("weight set to {weight}"),
    }
}

/// 303 to `/stats?{key}={message}`, the message [`cut`] (it may quote what was typed).
fn back(key: &str, message: &str) -> Redirect {
    Redirect::to(&format!(
        "/stats?{key}={}",
        utf8_percent_encode(cut(message), NON_ALPHANUMERIC)
    ))
}

/// `text` cut to [`MAX_NOTICE`] characters, on a character boundary: what a form sends back
/// and what the page shows of a query, which anyone can write.
pub(crate) fn cut(text: &str) -> &str {
    text.char_indices()
        .nth(MAX_NOTICE)
        .map_or(text, |(end, _)| &text[..end])
}

/// A form action for `action` on `backend` of `pool`, names percent-encoded (a name may hold
/// `/`, `?` or markup); still to be HTML-escaped by the page.
pub(crate) fn action(pool: &str, backend: &str, action: &str) -> String {
    ROUTE
        .replace(
            "{pool}",
            &utf8_percent_encode(pool, NON_ALPHANUMERIC).to_string(),
        )
        .replace(
            "{backend}",
            &utf8_percent_encode(backend, NON_ALPHANUMERIC).to_string(),
        )
        .replace("{action}", action)
}
