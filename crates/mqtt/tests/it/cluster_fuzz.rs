//! The decoders of what nodes read back from the backplane — envelopes (messages between
//! nodes), batches of them, journal records and handed-over sessions — fuzzed: random
//! valid values round trip exactly, and mutated bytes (a byte changed, the end cut, a run
//! repeated) are refused or read as something that round trips itself, never a panic.
//! The message inside is a PUBLISH read by the codec, whose own fuzz targets hold it to
//! rumqttc.

use std::num::NonZeroU32;

use bytes::{Bytes, BytesMut};
use mqtt::cluster::envelope::{framed, push_framed};
use mqtt::cluster::journal::{self, Copy, Record};
use mqtt::cluster::sessions::Carried;
use mqtt::cluster::{Envelope, MessageId};
use mqtt::codec::{QoS, RetainHandling, SubscriptionOptions};
use mqtt::message::Message;
use mqtt::session::{Outgoing, SubOptions};
use mqtt::topic::SubscriptionTarget;
use rand::Rng;
use rand::rngs::StdRng;
use testkit::fuzz::Fuzz;
use tokio::time::Instant;

fn text(rng: &mut StdRng, alphabet: &[&str], max: usize) -> String {
    (0..rng.random_range(0..=max))
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

fn qos(rng: &mut StdRng) -> QoS {
    [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][rng.random_range(0..3)]
}

fn message(rng: &mut StdRng) -> Message {
    let mut topic = text(rng, &["a", "b", "/", "é", "$"], 6);
    if topic.is_empty() {
        topic.push('t');
    }
    let payload: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
    Message::new(topic.into(), Bytes::from(payload), qos(rng), rng.random())
}

fn envelope(rng: &mut StdRng) -> Envelope {
    Envelope {
        id: MessageId {
            origin: text(rng, &["n", "1", "-", "ü"], 8).into(),
            seq: rng.random(),
        },
        message: message(rng),
        plain: rng.random(),
        groups: (0..rng.random_range(0..3))
            .map(|_| format!("$share/{}/a/#", text(rng, &["g", "h"], 3)))
            .collect(),
    }
}

fn identifiers(rng: &mut StdRng) -> Vec<NonZeroU32> {
    (0..rng.random_range(0..3))
        .filter_map(|_| NonZeroU32::new(rng.random_range(1..268_435_455)))
        .collect()
}

fn carried(rng: &mut StdRng) -> Carried {
    let filters = ["a/+", "a/#", "#", "$share/g/b", "x/y/z", "+/+"];
    let mut subscriptions: Vec<(SubscriptionTarget, SubOptions)> = Vec::new();
    for filter in filters {
        if rng.random_bool(0.5) {
            let options = SubOptions {
                options: SubscriptionOptions {
                    qos: qos(rng),
                    no_local: rng.random(),
                    retain_as_published: rng.random(),
                    retain_handling: [
                        RetainHandling::OnSubscribe,
                        RetainHandling::OnNewSubscription,
                        RetainHandling::Never,
                    ][rng.random_range(0..3)],
                },
                identifier: identifiers(rng).first().copied(),
            };
            let target = SubscriptionTarget::parse(filter, 32).expect("a valid filter");
            subscriptions.push((target, options));
        }
    }
    let messages = (0..rng.random_range(0..4))
        .map(|_| {
            let mut m = message(rng);
            let q = qos(rng);
            m.qos = q;
            Outgoing {
                retain: m.retain,
                message: m,
                qos: q,
                identifiers: identifiers(rng),
                journal: 0,
            }
        })
        .collect();
    Carried {
        expiry_interval: rng.random(),
        subscriptions,
        messages,
        adopted: false,
    }
}

/// `bytes` with one to three random changes.
fn mutate(rng: &mut StdRng, bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if out.is_empty() {
            out.push(rng.random());
            continue;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..3) {
            0 => out[at] = rng.random(),
            1 => out.truncate(at),
            _ => {
                let end = (at + rng.random_range(1..8)).min(out.len());
                let run = out[at..end].to_vec();
                out.splice(at..at, run);
            }
        }
    }
    out
}

fn encoded(e: &Envelope, now: Instant) -> Vec<u8> {
    let mut out = BytesMut::new();
    e.encode(now, &mut out);
    out.to_vec()
}

#[test]
fn cluster_decoders_round_trip_and_refuse_what_they_cannot_read() {
    let mut fuzz = Fuzz::from_env("cluster_decoders");
    let mut rng = fuzz.rng();
    let now = Instant::now();
    while fuzz.next_case() {
        let at = fuzz.at();
        let e = envelope(&mut rng);
        let bytes = encoded(&e, now);
        assert_eq!(Envelope::decode(&bytes, now).as_ref(), Ok(&e), "{at}");

        let copies: Vec<Copy> = (0..rng.random_range(0..3))
            .map(|i| Copy {
                client: format!("c{i}"),
                qos: qos(&mut rng),
                retain: rng.random(),
                identifiers: identifiers(&mut rng),
            })
            .collect();
        let jseq = rng.random();
        let record = journal::message_record(jseq, &copies, &e, now);
        match journal::read(&record, now) {
            Ok(Record::Message {
                jseq: j,
                copies: c,
                envelope: back,
            }) => assert_eq!((j, c, back), (jseq, copies, e.clone()), "{at}"),
            other => panic!("{at}: {other:?}"),
        }

        let c = carried(&mut rng);
        let state = c.encode(now);
        let back = Carried::decode(&state, now).unwrap_or_else(|| panic!("{at}: {c:?}"));
        assert_eq!(back.subscriptions, c.subscriptions, "{at}");
        assert_eq!(back.expiry_interval, c.expiry_interval, "{at}");
        let shape = |m: &[Outgoing]| -> Vec<_> {
            m.iter()
                .map(|o| (o.message.clone(), o.qos, o.retain, o.identifiers.clone()))
                .collect()
        };
        assert_eq!(shape(&back.messages), shape(&c.messages), "{at}");

        let mut batch = BytesMut::new();
        push_framed(&mut batch, &bytes);
        push_framed(&mut batch, &bytes);
        let parts: Vec<_> = framed(batch.freeze()).collect();
        assert_eq!(parts.len(), 2, "{at}");

        for original in [&bytes[..], &record[..], &state[..]] {
            let bad = mutate(&mut rng, original);
            if let Ok(read) = Envelope::decode(&bad, now) {
                let again = encoded(&read, now);
                assert_eq!(
                    Envelope::decode(&again, now).as_ref(),
                    Ok(&read),
                    "{at}: {bad:02x?}"
                );
            }
            if let Ok(Record::Message { envelope, .. }) = journal::read(&bad, now) {
                let again = encoded(&envelope, now);
                assert!(Envelope::decode(&again, now).is_ok(), "{at}: {bad:02x?}");
            }
            if let Some(read) = Carried::decode(&bad, now) {
                let again = read.encode(now);
                let twice = Carried::decode(&again, now);
                assert_eq!(
                    twice.map(|t| t.subscriptions),
                    Some(read.subscriptions),
                    "{at}: {bad:02x?}"
                );
            }
            for part in framed(Bytes::from(bad.clone())).flatten() {
                let _ = Envelope::decode(&part, now);
            }
        }
    }
}
