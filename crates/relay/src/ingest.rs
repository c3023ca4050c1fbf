//! The ingest API: `POST /v1/records` with `Authorization: Bearer <key>`, one JSON object or
//! an array of them. 202 with the records' ids once they are durable in the stream.
//!
//! | status | when | body |
//! |---|---|---|
//! | 202 | stored (fsync'd) | `{"ids": [17, 18]}` |
//! | 400 | not JSON, not an object or array of objects, empty array, bad `Idempotency-Key` | `{"error": "malformed JSON: … at line 1 column 17"}` |
//! | 401 | no key or an unknown key | `{"error": …}` |
//! | 408 | a body that stops for `body_timeout`, or arrives slower than `min_body_rate` | `{"error": "the body stopped for 30s (relay.body_timeout)"}` |
//! | 413 | body over `max_body_bytes` | `{"error": …}` |
//! | 422 | a record lacks a field a route needs as key; or an `Idempotency-Key` reused with another body | `{"error": …, "record": 2, "field": "sku"}` |
//! | 503 | the stream cannot store | `{"error": …}` |
//!
//! A request is all or nothing: when one record is refused, none is stored.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use backplane::{Appended, BackplaneError, IdempotencyKey, Stream};
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Application, now_ms};
use crate::keys;
use crate::objects::Objects;
use crate::record::Record;
use crate::telemetry::{Refusal, Telemetry};

/// Most bytes reserved for a body before it arrives.
const INITIAL_BODY: u64 = 16 * 1024;

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// What ingest reads and writes: the applications and their routes, the stream, its
/// counters and the limits every request is held to.
#[derive(Debug)]
pub(crate) struct Ingest {
    /// Who may post, and the routes whose keys a record must carry.
    pub objects: Arc<Objects>,
    /// Where records are stored.
    pub stream: Arc<dyn Stream>,
    /// Stored and refused requests.
    pub telemetry: Arc<Telemetry>,
    /// `relay.max_body_bytes`.
    pub max_body_bytes: usize,
    /// The listener's connection cap and timeouts (`RelayConfig::limits`).
    pub limits: net::Limits,
}

/// Serves ingest on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/records", post(post_records))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                json!({"error": "no such endpoint; POST records to /v1/records"}),
            )
        });
    let limits = ingest.limits;
    net::serve_router(listener, app.with_state(ingest), limits, shutdown).await
}

fn refuse(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A refused request, kept small until it becomes a response.
struct Refused {
    status: StatusCode,
    body: Box<Value>,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut resp = refuse(self.status, *self.body);
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lintas\""),
            );
        }
        resp
    }
}

impl Refused {
    /// Why, for the refusal counter: each check refuses with its own status.
    fn reason(&self) -> Refusal {
        match self.status {
            StatusCode::UNAUTHORIZED => Refusal::Unauthorized,
            StatusCode::REQUEST_TIMEOUT => Refusal::SlowBody,
            StatusCode::PAYLOAD_TOO_LARGE => Refusal::TooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => Refusal::MissingKey,
            _ => Refusal::Malformed,
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused {
        status,
        body: Box::new(json!({ "error": message.into() })),
    }
}

async fn post_records(State(ingest): State<Arc<Ingest>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let checked = async {
        let app = authenticate(&ingest, &parts.headers)?;
        let key = idempotency_key(&parts.headers)?;
        let body = read_body(&ingest, &parts.headers, body).await?;
        let records = parse(&ingest, &app, &body)?;
        Ok::<_, Refused>((app, key, body, records))
    };
    let (app, idempotency_key, body, records) = match checked.await {
        Ok(c) => c,
        Err(r) => {
            ingest.telemetry.refused(r.reason());
            return r.into_response();
        }
    };
    let key = idempotency_key.map(|k| IdempotencyKey {
        key: crate::record::idempotency_key(&app.name, &k),
        body_hash: xxhash_rust::xxh3::xxh3_64(&body),
    });
    let refused = |why: Refusal, status: StatusCode, message: String| {
        ingest.telemetry.refused(why);
        error(status, message).into_response()
    };
    match ingest.stream.append(records, key).await {
        Ok(Appended { offsets: ids, replayed }) => {
            if !replayed {
                ingest
                    .telemetry
                    .ingested(&app.name, ids.end - ids.start, ids.end);
            }
            let ids: Vec<u64> = ids.collect();
            let mut resp = refuse(StatusCode::ACCEPTED, json!({ "ids": ids }));
            if replayed {
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
            }
            resp
        }
        Err(BackplaneError::KeyReused) => refused(
            Refusal::KeyReused,
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used with a different body; use a new key for a new request".into(),
        ),
        Err(e) => refused(
            Refusal::NotStored,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the records were not stored ({e}); retry later"),
        ),
    }
}

fn authenticate(ingest: &Ingest, headers: &HeaderMap) -> Result<Arc<Application>, Refused> {
    let unauthorized = |message: &str| error(StatusCode::UNAUTHORIZED, message);
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(unauthorized(
            "missing API key: send the application's key as Authorization: Bearer <key>",
        ));
    };
    let key = value
        .to_str()
        .ok()
        .and_then(keys::from_authorization)
        .unwrap_or_default();
    ingest
        .objects
        .catalog()
        .application_by_key(&keys::hash(key))
        .cloned()
        .ok_or_else(|| {
            unauthorized("unknown API key: check the key, or rotate it through the admin API")
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.len() <= MAX_IDEMPOTENCY_KEY => Ok(Some(s.to_owned())),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )),
    }
}

async fn read_body(ingest: &Ingest, headers: &HeaderMap, body: Body) -> Result<Bytes, Refused> {
    let limit = ingest.max_body_bytes;
    let too_large = |size: Option<u64>| {
        let size = size.map_or_else(|| "the body".to_owned(), |n| format!("a body of {n} bytes"));
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{size} is over the {limit}-byte limit (relay.max_body_bytes); send fewer records per request"
            ),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(declared));
    }
    let limits = ingest.limits;
    let mut rate = net::MinRate::new(limits.min_body_rate, limits.body_rate_grace);
    let mut body = body;
    // Grown as data arrives: a Content-Length is a claim, and ten thousand connections
    // each claiming the limit must not reserve it before sending a byte.
    let mut out = Vec::with_capacity(declared.unwrap_or(0).min(INITIAL_BODY) as usize);
    loop {
        let idle = tokio::time::Instant::now() + limits.body_timeout;
        let deadline = rate.deadline().map_or(idle, |d| d.min(idle));
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return Ok(Bytes::from(out)),
            Ok(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
            Ok(Some(Err(e))) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                ));
            }
            Err(_) if deadline == idle => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body stopped for {} (relay.body_timeout)",
                        configkit::format_duration(limits.body_timeout)
                    ),
                ));
            }
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body arrived slower than {} bytes/s (relay.min_body_rate)",
                        limits.min_body_rate
                    ),
                ));
            }
        };
        rate.add(frame.len());
        if out.len() + frame.len() > limit {
            return Err(too_large(None));
        }
        out.extend_from_slice(&frame);
    }
}

/// The body's records, checked against the application's routes.
fn parse(ingest: &Ingest, app: &Application, body: &Bytes) -> Result<Vec<Bytes>, Refused> {
    let bad = |m: String| error(StatusCode::BAD_REQUEST, m);
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let raws: Vec<&RawValue> = match first {
        Some(b'[') => {
            serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?
        }
        Some(b'{') => {
            vec![serde_json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))?]
        }
        None => {
            return Err(bad(
                "empty body: send a JSON object or an array of objects".into()
            ));
        }
        Some(_) => {
            return Err(bad(
                "expected a JSON object or an array of objects at line 1 column 1".into(),
            ));
        }
    };
    if raws.is_empty() {
        return Err(bad("the array is empty: send at least one record".into()));
    }
    let catalog = ingest.objects.catalog();
    let routes: Vec<_> = catalog.routes_from(app.id).collect();
    // Field lookups are only needed when a route has keys; otherwise the one parse that
    // split the body is all the work a record costs.
    let needs_keys = routes.iter().any(|r| !r.key_fields.is_empty());
    let received_ms = now_ms() as u64;
    let mut out = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let not_object = || {
            bad(format!(
                "record {i} is not a JSON object (records are objects of field: value)"
            ))
        };
        if !raw.get().starts_with('{') {
            return Err(not_object());
        }
        if needs_keys {
            let fields: HashMap<String, &RawValue> =
                serde_json::from_str(raw.get()).map_err(|_| not_object())?;
            for route in &routes {
                if let Some(missing) = route
                    .key_fields
                    .iter()
                    .find(|f| fields.get(*f).is_none_or(|v| v.get() == "null"))
                {
                    return Err(Refused {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        body: Box::new(json!({
                            "error": format!(
                                "record {i} has no value for `{missing}`, which route {} needs as a key",
                                route.spec.label()
                            ),
                            "record": i,
                            "field": missing,
                        })),
                    });
                }
            }
        }
        out.push(
            Record {
                application: app.name.clone(),
                received_ms,
                idempotency: None,
                json: Bytes::copy_from_slice(raw.get().as_bytes()),
            }
            .encode(),
        );
    }
    Ok(out)
}
