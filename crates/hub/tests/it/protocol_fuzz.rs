//! Fuzz target for the protocol's reader: random frames are read back as written, and
//! random, truncated and mutated texts never panic [`decode`]; whatever it accepts is a
//! frame whose written form reads back to the same frame (nothing half-read). Runs for
//! `LINTAS_FUZZ_SECONDS` from `LINTAS_FUZZ_SEED` ([`testkit::fuzz`]).

use hub::protocol::{Credentials, Data, Frame, Recover, Request, Room, decode};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use testkit::fuzz::Fuzz;
use testkit::fuzz::http1::pick;

fn text(rng: &mut StdRng) -> String {
    let parts = [
        "a", "Z", "9", "-", "_", ".", ":", " ", "é", "🍵", "\"", "\\", "\u{7}",
    ];
    (0..rng.random_range(0..8))
        .map(|_| *pick(rng, &parts))
        .collect()
}

fn value(rng: &mut StdRng) -> Data {
    let v: Value = match rng.random_range(0..6) {
        0 => Value::Null,
        1 => json!(rng.random::<i64>()),
        2 => json!(text(rng)),
        3 => json!([text(rng), rng.random::<bool>()]),
        4 => json!({ "k": text(rng) }),
        // Beyond a float's exact range: kept as text.
        _ => {
            let digits = format!(
                "-{}{:019}.5",
                rng.random_range(1..9),
                rng.random::<u64>() % 10u64.pow(19)
            );
            return Data::parse(&digits).expect("a JSON number");
        }
    };
    Data::parse(&v.to_string()).expect("a JSON value")
}

fn room(rng: &mut StdRng) -> Room {
    loop {
        if let Ok(r) = Room::parse(&text(rng)) {
            return r;
        }
    }
}

fn user(rng: &mut StdRng) -> String {
    loop {
        let t = text(rng);
        if !t.is_empty() && !t.chars().any(char::is_control) {
            return t;
        }
    }
}

fn frame(rng: &mut StdRng) -> Frame {
    let request = match rng.random_range(0..8) {
        0 => Request::Connect(Credentials::Token(text(rng))),
        1 => Request::Connect(Credentials::Anonymous(user(rng))),
        2 => Request::Join {
            room: room(rng),
            recover: rng.random_bool(0.5).then(|| Recover {
                epoch: text(rng),
                offset: rng.random(),
            }),
        },
        3 => Request::Leave { room: room(rng) },
        4 => Request::Publish {
            room: room(rng),
            data: value(rng),
        },
        5 => Request::Send {
            to: user(rng),
            data: value(rng),
        },
        6 => Request::Presence { room: room(rng) },
        _ => Request::History {
            room: room(rng),
            limit: rng.random_bool(0.5).then(|| rng.random()),
        },
    };
    Frame {
        id: rng.random_bool(0.5).then(|| rng.random()),
        request,
    }
}

#[test]
fn frames_read_back_as_written_and_mutations_never_half_read() {
    let mut fuzz = Fuzz::from_env("hub protocol");
    let mut rng = fuzz.rng();
    let (mut cases, mut accepted) = (0u64, 0u64);
    while fuzz.next_case() {
        cases += 1;
        let f = frame(&mut rng);
        let written = f.to_json();
        assert_eq!(decode(&written), Ok(f), "{}: {written}", fuzz.at());
        let mut bytes = written.into_bytes();
        match rng.random_range(0..4) {
            0 => bytes.truncate(rng.random_range(0..bytes.len())),
            1 => {
                let at = rng.random_range(0..bytes.len());
                let extra = *pick(
                    &mut rng,
                    &[&b",\"x\":1"[..], b"}", b"\"", b"\\u0000", b"-1", b"1e999"],
                );
                bytes.splice(at..at, extra.iter().copied());
            }
            _ => {
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = *pick(&mut rng, b"\"{}:,0a ");
                }
            }
        }
        let Ok(mutated) = String::from_utf8(bytes) else {
            continue;
        };
        if let Ok(read) = decode(&mutated) {
            accepted += 1;
            assert_eq!(
                decode(&read.to_json()),
                Ok(read.clone()),
                "{}: {mutated} read as {read:?}",
                fuzz.at()
            );
        }
    }
    // Some mutations keep a valid frame (a changed letter in a payload): the check above ran.
    assert!(
        accepted > 0 || cases < 1000,
        "no mutation was ever accepted in {cases} cases"
    );
}
