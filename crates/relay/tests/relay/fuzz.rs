//! Fuzz targets for the relay's inputs: stream records as bytes, and ingest bodies as JSON.
//!
//! - `record_bytes_decode_to_an_error_or_to_exactly_their_encoding`: random, truncated and
//!   mutated payloads never panic [`Record::decode`], and whatever it accepts is exactly
//!   the encoding of what it returned (no byte ignored or misread); random records survive
//!   `decode(encode(x)) == x`.
//! - `ingest_stores_exactly_the_records_a_json_parser_reads`: generated and mutated JSON
//!   bodies posted to a real relay are answered as `serde_json` (the reference) reads them:
//!   202 and one stored record per object, each holding that object, or 400/422 with the
//!   documented error body, never anything else.
//!
//! Both run for `LINTAS_FUZZ_SECONDS` from `LINTAS_FUZZ_SEED` ([`testkit::fuzz`]).

use bytes::Bytes;
use http::Method;
use rand::Rng;
use rand::rngs::StdRng;
use relay::record::{IdempotencyMark, Record};
use serde_json::Value;
use testkit::TempDir;
use testkit::fuzz::Fuzz;
use testkit::fuzz::http1::pick;

use crate::harness::{Node, config, destination, route, sqlite};

/// Text of a random string: ASCII, escapes, quotes, non-ASCII letters, emoji.
fn text(rng: &mut StdRng) -> String {
    let parts = [
        "a", "Tea", " ", "é", "名前", "🍵", "\"", "\\", "\n", "\u{0}", "0", "-",
    ];
    (0..rng.random_range(0..6))
        .map(|_| *pick(rng, &parts))
        .collect()
}

#[test]
fn record_bytes_decode_to_an_error_or_to_exactly_their_encoding() {
    let mut fuzz = Fuzz::from_env("relay records");
    let mut rng = fuzz.rng();
    let mut accepted = 0u64;
    while fuzz.next_case() {
        let any = rng.random();
        let record = Record {
            application: text(&mut rng),
            received_ms: *pick(&mut rng, &[0, u64::MAX, any]),
            idempotency: rng.random_bool(0.5).then(|| IdempotencyMark {
                key: format!("k{}", text(&mut rng)),
                count: rng.random(),
                body_hash: rng.random(),
            }),
            json: Bytes::from(serde_json::to_vec(&text(&mut rng)).unwrap()),
        };
        let encoded = record.encode();
        assert_eq!(
            Record::decode(&encoded),
            Ok(record.clone()),
            "{}",
            fuzz.at()
        );
        let mut bytes = encoded.to_vec();
        match rng.random_range(0..4) {
            0 => bytes = (0..rng.random_range(0..40)).map(|_| rng.random()).collect(),
            1 => bytes.truncate(rng.random_range(0..bytes.len())),
            _ => {
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    let any = rng.random();
                    bytes[at] = *pick(&mut rng, &[0, 1, 0xff, 0x80, any]);
                }
            }
        }
        let bytes = Bytes::from(bytes);
        if let Ok(read) = Record::decode(&bytes) {
            assert_eq!(
                read.encode(),
                bytes,
                "{}: \"{}\" decoded to {read:?}",
                fuzz.at(),
                bytes.escape_ascii()
            );
            accepted += 1;
        }
    }
    eprintln!("relay records: {accepted} mutated payloads decoded, every one exactly");
}

/// A JSON value from a grammar of the kinds a producer sends.
fn value(rng: &mut StdRng, depth: u32) -> String {
    match rng.random_range(0..if depth > 2 { 5 } else { 7 }) {
        0 => "null".into(),
        1 => (*pick(rng, &["true", "false"])).into(),
        2 => (*pick(
            rng,
            &[
                "0",
                "-0",
                "12.5",
                "1e3",
                "-7",
                "18446744073709551616",
                "9007199254740993",
                "1.5E-7",
            ],
        ))
        .into(),
        3 | 4 => serde_json::to_string(&text(rng)).unwrap(),
        5 => {
            let items: Vec<String> = (0..rng.random_range(0..3))
                .map(|_| value(rng, depth + 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        _ => object(rng, depth + 1),
    }
}

/// A JSON object, usually with the key field `name`.
fn object(rng: &mut StdRng, depth: u32) -> String {
    let mut fields = Vec::new();
    if depth == 0 && rng.random_bool(0.9) {
        fields.push(format!("\"name\": {}", value(rng, 3)));
    }
    for _ in 0..rng.random_range(0..4) {
        let name = *pick(rng, &["price", "note", "name", "名", "a b", ""]);
        fields.push(format!(
            "{}:{}",
            serde_json::to_string(name).unwrap(),
            value(rng, depth)
        ));
    }
    format!("{{{}}}", fields.join(", "))
}

/// A body: one object or an array of them (sometimes of something else), then mutated.
fn body(rng: &mut StdRng) -> Vec<u8> {
    let text = match rng.random_range(0..6) {
        0 => object(rng, 0),
        1 => value(rng, 0),
        _ => {
            let items: Vec<String> = (0..rng.random_range(0..4))
                .map(|_| object(rng, 0))
                .collect();
            format!(" [ {} ]\n", items.join(" ,\n"))
        }
    };
    let mut bytes = text.into_bytes();
    if rng.random_bool(0.3) && !bytes.is_empty() {
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..4) {
            0 => drop(bytes.remove(at)),
            1 => bytes.insert(at, *pick(rng, b",}]\"\\:{ \xff")),
            2 => bytes.truncate(at),
            _ => bytes[at] = rng.random(),
        }
    }
    bytes
}

/// The records a body holds, or the status (and index of the record at fault) it is refused
/// with.
type Verdict = Result<Vec<Value>, (u16, Option<usize>)>;

/// What the relay must answer for `body`, as `serde_json` reads it: the records (the array's
/// objects, or the object), or the status of the first record that is refused — 400 for
/// one that is not an object, 422 (with its index) for one without a `name` — or 400 for a
/// body that is not JSON or an empty array.
///
/// `None` for valid JSON that `serde_json::Value` cannot hold: a number beyond `f64`'s range
/// (`1E400`). The relay passes numbers on as sent, so the reference cannot judge those.
fn expected(body: &[u8]) -> Option<Verdict> {
    let records = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) if !items.is_empty() => items,
        Ok(o @ Value::Object(_)) => vec![o],
        Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => return None,
        _ => return Some(Err((400, None))),
    };
    for (i, r) in records.iter().enumerate() {
        if !r.is_object() {
            return Some(Err((400, None)));
        }
        if r.get("name").is_none_or(Value::is_null) {
            return Some(Err((422, Some(i))));
        }
    }
    Some(Ok(records))
}

#[tokio::test]
async fn ingest_stores_exactly_the_records_a_json_parser_reads() {
    let dir = TempDir::new();
    let url = sqlite(
        dir.path(),
        "items.db",
        "CREATE TABLE items (name TEXT PRIMARY KEY)",
    )
    .await;
    let text = config(&format!(
        "{}{}",
        destination("db", "sqlite", &url),
        route("db", "items", "upsert", "name = \"name\"", "\"name\"")
    ));
    let node = Node::start(&dir.path().join("data"), &text).await;
    let mut fuzz = Fuzz::from_env("relay ingest");
    let mut rng = fuzz.rng();
    let (mut stored, mut refused, mut beyond) = (0, 0, 0);
    while fuzz.next_case() {
        let body = body(&mut rng);
        let Some(want) = expected(&body) else {
            beyond += 1;
            continue;
        };
        let reply = node
            .client
            .send(
                Method::POST,
                &node.ingest,
                &[("authorization", &format!("Bearer {}", crate::harness::KEY))],
                body.clone(),
            )
            .await
            .unwrap();
        let answer: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        let at = || {
            format!(
                "{}: body \"{}\" answered {} {}; the reference says {want:?}",
                fuzz.at(),
                body.escape_ascii(),
                reply.status,
                reply.body
            )
        };
        match &want {
            Ok(records) => {
                assert_eq!(reply.status, 202, "{}", at());
                let ids = answer["ids"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}", at()));
                assert_eq!(ids.len(), records.len(), "{}", at());
                for (id, record) in ids.iter().zip(records) {
                    let (status, read) = node
                        .admin(Method::GET, &format!("/api/relay/records/{id}"), "")
                        .await;
                    assert_eq!(status, 200, "{}: {read}", at());
                    assert_eq!(&read["data_sent"], record, "{}", at());
                    assert_eq!(read["application"], "shop", "{}", at());
                }
                stored += records.len();
            }
            Err((status, record)) => {
                assert_eq!(reply.status, *status, "{}", at());
                let error = answer["error"].as_str().unwrap_or_default();
                assert!(!error.is_empty(), "{}", at());
                if let Some(i) = record {
                    assert_eq!(answer["record"], *i, "{}", at());
                    assert_eq!(answer["field"], "name", "{}", at());
                    assert!(
                        error.starts_with(&format!("record {i} has no value for `name`")),
                        "{}",
                        at()
                    );
                }
                refused += 1;
            }
        }
    }
    eprintln!(
        "relay ingest: {stored} records stored as sent, {refused} bodies refused as the reference refused them, {beyond} left out (numbers beyond f64)"
    );
    node.stop().await;
}
