//! Fuzz targets for the codec ([`testkit::fuzz::Fuzz`]: `LINTAS_FUZZ_SECONDS` from
//! `LINTAS_FUZZ_SEED`, printed with any failure).
//!
//! Inputs are random valid packets of both versions (every packet type, random properties
//! from each packet's allowed list), one to three of them in a row, most of them then
//! mutated (bits flipped, bytes replaced, inserted, removed, the remaining length bumped,
//! the tail cut), and some pure random bytes.
//!
//! - [`codec_fuzz_round_trip`]: decoding never panics; the same bytes fed in random chunks
//!   give the same packets and the same error as fed at once; no packet longer than the
//!   maximum packet size is ever returned, and a refusal never grows the buffer; every
//!   decoded packet re-encodes to bytes [`encoded_len`] predicted, which decode to an
//!   equal packet.
//! - [`codec_fuzz_differential_rumqttc`]: the same single packet read by rumqttc 0.25's
//!   decoders (`rumqttc::mqttbytes::v4`, `rumqttc::v5::mqttbytes::v5`). Where both accept
//!   it, rumqttc's reading is written back with rumqttc's own encoder and read again by
//!   ours: the two readings must be equal (a field rumqttc read differently would come back
//!   different), so no field-by-field mapping between the two type sets is needed. Where
//!   only one side accepts, the case is counted by kind and printed.
//!
//! Known disagreements, decided from the specification (we follow it; rumqttc is a client
//! and lenient about what it reads). A run prints each kind with a count and an example.
//! - rumqttc accepts what we refuse: reserved fixed-header flags (§2.1.3), DUP on QoS 0
//!   (§3.3.1.1), reserved CONNECT and CONNACK flag bits (§3.1.2.3, §3.2.2.1), a password
//!   without user name in 3.1.1 (§3.1.2.9), non-minimal variable byte integers (§1.5.5),
//!   U+0000 in strings (§1.5.4) and any bytes in a PUBLISH topic, properties outside a
//!   packet's list, repeated, unknown or with forbidden values (§2.2.2.2; 0 for Receive
//!   Maximum / Topic Alias / Subscription Identifier, flags other than 0 or 1), a property
//!   value running past the property length (rumqttc reads properties from the rest of the
//!   packet), 3.1.1 subscription option bits 2-7, an UNSUBSCRIBE without filters
//!   (§3.10.3), trailing bytes after the last field, a zero packet identifier in PUBREL; and
//!   its v4 decoder reads a level-5 CONNECT without its properties (we read it as 5.0).
//! - We accept what rumqttc refuses: a password that is not UTF-8 (it is Binary Data,
//!   §3.1.3.5; rumqttc reads it as a string), AUTH (rumqttc 0.25 does not decode it), a
//!   5.0 DISCONNECT of remaining length 0 or 1 (§3.14.2.1 allows both), reason codes
//!   missing from rumqttc's enums (DISCONNECT 0x8C, UNSUBACK 0x8F, ...), and a SUBACK or
//!   UNSUBACK without reason codes (their count must match the SUBSCRIBE's filters, which
//!   only the session knows).
//! - rumqttc does not keep an empty user name or password: it reads both into one `Login`
//!   of two `String`s, kept only when one is non-empty, so "flag set, empty value" and "flag
//!   clear" are the same to it; CONNECTs are compared with empty ones taken as absent, and
//!   not at all with an empty user name, which it writes back as a password without user
//!   name (refused by §3.1.2.9 in 3.1.1).
//!
//! Unmutated inputs are our own encoding of a valid packet, so the kinds printed as
//! "accepted by us only" with an unmutated example are packets of ours a rumqttc client
//! would not read: 5.0 DISCONNECT in its short forms (which Mosquitto sends too) and reason
//! codes it lacks.

use std::collections::BTreeMap;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use mqtt::codec::{
    Ack, Auth, ByteString, ConnAck, Connect, DecodeError, Disconnect, Packet, PacketId, Properties,
    PropertyId, Publish, QoS, ReasonCode, RetainHandling, Scope, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Version, Will, decode, encode, encoded_len,
};
use rand::Rng;
use rand::rngs::StdRng;
use testkit::fuzz::Fuzz;

// --- inputs ---------------------------------------------------------------------------------

fn string(rng: &mut StdRng) -> ByteString {
    const PIECES: [&str; 8] = ["a", "b/", "+", "#", "é", "€", "𝄞", "$"];
    let n = rng.random_range(0..6);
    let text: String = (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect();
    ByteString::from(text)
}

fn nonempty_string(rng: &mut StdRng) -> ByteString {
    let s = string(rng);
    if s.is_empty() {
        ByteString::from_static("t")
    } else {
        s
    }
}

fn binary(rng: &mut StdRng, max: usize) -> Bytes {
    let n = rng.random_range(0..=max);
    Bytes::from((0..n).map(|_| rng.random::<u8>()).collect::<Vec<u8>>())
}

fn qos(rng: &mut StdRng) -> QoS {
    QoS::from_bits(rng.random_range(0..3)).expect("0..3 are QoS values")
}

fn packet_id(rng: &mut StdRng) -> PacketId {
    PacketId::new(rng.random_range(1..=u16::MAX)).expect("non-zero")
}

fn user(rng: &mut StdRng) -> Vec<(ByteString, ByteString)> {
    (0..rng.random_range(0..3))
        .map(|_| (string(rng), string(rng)))
        .collect()
}

/// Random properties from `scope`'s list, each present one time in four.
fn properties(rng: &mut StdRng, scope: Scope) -> Properties {
    let mut p = Properties::default();
    let pick = |rng: &mut StdRng, id: PropertyId| id.allowed_in(scope) && rng.random_bool(0.25);
    use PropertyId::*;
    if pick(rng, PayloadFormatIndicator) {
        p.payload_format_indicator = Some(rng.random())
    }
    if pick(rng, MessageExpiryInterval) {
        p.message_expiry_interval = Some(rng.random())
    }
    if pick(rng, ContentType) {
        p.content_type = Some(string(rng))
    }
    if pick(rng, ResponseTopic) {
        p.response_topic = Some(string(rng))
    }
    if pick(rng, CorrelationData) {
        p.correlation_data = Some(binary(rng, 8))
    }
    if pick(rng, SubscriptionIdentifier) {
        let n = if scope == Scope::Publish {
            rng.random_range(1..4)
        } else {
            1
        };
        p.subscription_identifiers = (0..n)
            .map(|_| NonZeroU32::new(rng.random_range(1..=268_435_455)).expect("non-zero"))
            .collect();
    }
    if pick(rng, SessionExpiryInterval) {
        p.session_expiry_interval = Some(rng.random())
    }
    if pick(rng, AssignedClientIdentifier) {
        p.assigned_client_identifier = Some(string(rng))
    }
    if pick(rng, ServerKeepAlive) {
        p.server_keep_alive = Some(rng.random())
    }
    if pick(rng, AuthenticationMethod) {
        p.authentication_method = Some(string(rng))
    }
    // Data only with a method (§3.1.2.11.10).
    if p.authentication_method.is_some() && pick(rng, AuthenticationData) {
        p.authentication_data = Some(binary(rng, 8))
    }
    if pick(rng, RequestProblemInformation) {
        p.request_problem_information = Some(rng.random())
    }
    if pick(rng, WillDelayInterval) {
        p.will_delay_interval = Some(rng.random())
    }
    if pick(rng, RequestResponseInformation) {
        p.request_response_information = Some(rng.random())
    }
    if pick(rng, ResponseInformation) {
        p.response_information = Some(string(rng))
    }
    if pick(rng, ServerReference) {
        p.server_reference = Some(string(rng))
    }
    if pick(rng, ReasonString) {
        p.reason_string = Some(string(rng))
    }
    if pick(rng, ReceiveMaximum) {
        p.receive_maximum = NonZeroU16::new(rng.random_range(1..=u16::MAX))
    }
    if pick(rng, TopicAliasMaximum) {
        p.topic_alias_maximum = Some(rng.random())
    }
    if pick(rng, TopicAlias) {
        p.topic_alias = NonZeroU16::new(rng.random_range(1..=u16::MAX))
    }
    if pick(rng, MaximumQos) {
        p.maximum_qos = Some(QoS::from_bits(rng.random_range(0..2)).expect("0 or 1"))
    }
    if pick(rng, RetainAvailable) {
        p.retain_available = Some(rng.random())
    }
    if pick(rng, UserProperty) {
        p.user = user(rng)
    }
    if pick(rng, MaximumPacketSize) {
        p.maximum_packet_size = NonZeroU32::new(rng.random_range(1..=u32::MAX))
    }
    if pick(rng, WildcardSubscriptionAvailable) {
        p.wildcard_subscription_available = Some(rng.random())
    }
    if pick(rng, SubscriptionIdentifierAvailable) {
        p.subscription_identifier_available = Some(rng.random())
    }
    if pick(rng, SharedSubscriptionAvailable) {
        p.shared_subscription_available = Some(rng.random())
    }
    p
}

/// A reason code valid in `packet`, for 5.0; Success for 3.1.1, which has none.
fn reason(rng: &mut StdRng, packet: mqtt::codec::PacketType, v5: bool) -> ReasonCode {
    if !v5 {
        return ReasonCode::Success;
    }
    let valid: Vec<ReasonCode> = (0..=255u8)
        .filter_map(ReasonCode::from_u8)
        .filter(|c| c.valid_in(packet))
        .collect();
    valid[rng.random_range(0..valid.len())]
}

/// A random valid packet that `version` can carry.
fn packet(rng: &mut StdRng, version: Version) -> Packet {
    use mqtt::codec::PacketType as T;
    let v5 = version == Version::V5;
    let props = |rng: &mut StdRng, scope| {
        if v5 {
            properties(rng, scope)
        } else {
            Properties::default()
        }
    };
    let kinds = if v5 { 15 } else { 14 };
    match rng.random_range(0..kinds) {
        0 => {
            let username = rng.random_bool(0.5).then(|| string(rng));
            let password = (username.is_some() || v5) && rng.random_bool(0.5);
            Packet::Connect(Box::new(Connect {
                version,
                clean_start: rng.random(),
                keep_alive: rng.random(),
                properties: props(rng, Scope::Connect),
                client_id: string(rng),
                will: rng.random_bool(0.5).then(|| Will {
                    properties: props(rng, Scope::Will),
                    topic: nonempty_string(rng),
                    payload: binary(rng, 16),
                    qos: qos(rng),
                    retain: rng.random(),
                }),
                username,
                password: password.then(|| binary(rng, 8)),
            }))
        }
        1 => {
            let reason_code = if v5 {
                reason(rng, T::ConnAck, true)
            } else {
                ReasonCode::from_v311_connack(rng.random_range(0..6)).expect("defined")
            };
            Packet::ConnAck(ConnAck {
                session_present: rng.random(),
                reason_code,
                properties: props(rng, Scope::ConnAck),
            })
        }
        2 => {
            let qos = qos(rng);
            let repeat = qos != QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: repeat && rng.random(),
                qos,
                retain: rng.random(),
                topic: nonempty_string(rng),
                packet_id: repeat.then(|| packet_id(rng)),
                properties: props(rng, Scope::Publish),
                payload: binary(rng, 64),
            })
        }
        3 => Packet::PubAck(Ack {
            packet_id: packet_id(rng),
            reason_code: reason(rng, T::PubAck, v5),
            properties: props(rng, Scope::PubAck),
        }),
        4 => Packet::PubRec(Ack {
            packet_id: packet_id(rng),
            reason_code: reason(rng, T::PubRec, v5),
            properties: props(rng, Scope::PubRec),
        }),
        5 => Packet::PubRel(Ack {
            packet_id: packet_id(rng),
            reason_code: reason(rng, T::PubRel, v5),
            properties: props(rng, Scope::PubRel),
        }),
        6 => Packet::PubComp(Ack {
            packet_id: packet_id(rng),
            reason_code: reason(rng, T::PubComp, v5),
            properties: props(rng, Scope::PubComp),
        }),
        7 => Packet::Subscribe(Subscribe {
            packet_id: packet_id(rng),
            properties: props(rng, Scope::Subscribe),
            filters: (0..rng.random_range(1..4))
                .map(|_| {
                    let options = SubscriptionOptions {
                        qos: qos(rng),
                        no_local: v5 && rng.random(),
                        retain_as_published: v5 && rng.random(),
                        retain_handling: match rng.random_range(0..if v5 { 3 } else { 1 }) {
                            0 => RetainHandling::OnSubscribe,
                            1 => RetainHandling::OnNewSubscription,
                            _ => RetainHandling::Never,
                        },
                    };
                    (nonempty_string(rng), options)
                })
                .collect(),
        }),
        8 => Packet::SubAck(SubAck {
            packet_id: packet_id(rng),
            properties: props(rng, Scope::SubAck),
            reason_codes: (0..rng.random_range(1..4))
                .map(|_| {
                    if v5 {
                        reason(rng, T::SubAck, true)
                    } else {
                        [
                            ReasonCode::Success,
                            ReasonCode::GrantedQos1,
                            ReasonCode::GrantedQos2,
                            ReasonCode::UnspecifiedError,
                        ][rng.random_range(0..4)]
                    }
                })
                .collect(),
        }),
        9 => Packet::Unsubscribe(Unsubscribe {
            packet_id: packet_id(rng),
            properties: props(rng, Scope::Unsubscribe),
            filters: (0..rng.random_range(1..4))
                .map(|_| nonempty_string(rng))
                .collect(),
        }),
        10 => Packet::UnsubAck(UnsubAck {
            packet_id: packet_id(rng),
            properties: props(rng, Scope::UnsubAck),
            reason_codes: if v5 {
                (0..rng.random_range(1..4))
                    .map(|_| reason(rng, T::UnsubAck, true))
                    .collect()
            } else {
                Vec::new()
            },
        }),
        11 => Packet::PingReq,
        12 => Packet::PingResp,
        13 => Packet::Disconnect(Disconnect {
            reason_code: reason(rng, T::Disconnect, v5),
            properties: props(rng, Scope::Disconnect),
        }),
        _ => Packet::Auth(Auth {
            reason_code: reason(rng, T::Auth, true),
            properties: props(rng, Scope::Auth),
        }),
    }
}

fn encoded(packet: &Packet, version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, u32::MAX, &mut out).expect("generated packets encode");
    out
}

/// One of the mutations a valid packet gets.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.random());
        return;
    }
    let at = rng.random_range(0..bytes.len());
    match rng.random_range(0..7) {
        0 => bytes[at] ^= 1 << rng.random_range(0..8),
        1 => bytes[at] = rng.random(),
        2 => bytes.insert(at, rng.random()),
        3 => {
            bytes.remove(at);
        }
        4 => bytes.truncate(at),
        // The remaining length (or the first byte of it) one up or down.
        5 if bytes.len() > 1 => {
            bytes[1] = bytes[1].wrapping_add(if rng.random() { 1 } else { 255 })
        }
        _ => bytes[0] = (bytes[0] & 0xf0) | rng.random_range(0..16),
    }
}

/// Bytes for one case: valid packets, mutated or not, or noise.
pub(crate) fn input(rng: &mut StdRng, version: Version, most: usize) -> Vec<u8> {
    if rng.random_bool(0.05) {
        return binary(rng, 64).to_vec();
    }
    let mut bytes = Vec::new();
    for _ in 0..rng.random_range(1..=most) {
        bytes.extend_from_slice(&encoded(&packet(rng, version), version));
    }
    if rng.random_bool(0.7) {
        for _ in 0..rng.random_range(1..4) {
            mutate(rng, &mut bytes);
        }
    }
    bytes
}

pub(crate) fn version(rng: &mut StdRng) -> Version {
    if rng.random() {
        Version::V5
    } else {
        Version::V311
    }
}

// --- round trip ----------------------------------------------------------------------------

/// What a stream decodes to: the packets (with the bytes each took) and how it ended.
#[derive(Debug, PartialEq)]
struct Decoded {
    packets: Vec<(Packet, usize)>,
    error: Option<DecodeError>,
}

/// Feeds `bytes` to the decoder in pieces of the given sizes (the rest at the end). A
/// refusal must not have grown the buffer: the limit is checked before the body is
/// waited for.
fn decode_stream(bytes: &[u8], version: Version, max: u32, pieces: &[usize], at: &str) -> Decoded {
    let mut buf = BytesMut::new();
    let mut out = Decoded {
        packets: Vec::new(),
        error: None,
    };
    let mut rest = bytes;
    let mut pieces = pieces.iter().copied();
    loop {
        let n = pieces.next().unwrap_or(usize::MAX).min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let (len, capacity) = (buf.len(), buf.capacity());
            match decode(&mut buf, version, max) {
                Ok(Some(packet)) => out.packets.push((packet, len - buf.len())),
                Ok(None) => break,
                Err(e) => {
                    assert!(buf.capacity() <= capacity, "{at}: {e} after reserving");
                    out.error = Some(e);
                    return out;
                }
            }
        }
        if rest.is_empty() {
            return out;
        }
    }
}

/// The version a packet is written in: a CONNECT names its own.
fn version_of(packet: &Packet, stream: Version) -> Version {
    match packet {
        Packet::Connect(c) => c.version,
        _ => stream,
    }
}

#[test]
fn codec_fuzz_round_trip() {
    let mut fuzz = Fuzz::from_env("codec_fuzz_round_trip");
    let mut rng = fuzz.rng();
    while fuzz.next_case() {
        let version = version(&mut rng);
        let bytes = input(&mut rng, version, 3);
        let max = if rng.random_bool(0.2) {
            rng.random_range(2..80)
        } else {
            u32::MAX
        };
        let whole = decode_stream(&bytes, version, max, &[], &fuzz.at());
        let pieces: Vec<usize> = (0..rng.random_range(1..8))
            .map(|_| rng.random_range(0..12))
            .collect();
        let chunked = decode_stream(&bytes, version, max, &pieces, &fuzz.at());
        let at = fuzz.at();
        assert_eq!(
            whole, chunked,
            "{at}: {version} pieces {pieces:?} input {bytes:02x?}"
        );
        for (packet, took) in &whole.packets {
            assert!(
                *took as u64 <= u64::from(max),
                "{at}: a {took}-byte packet passed max {max}: {bytes:02x?}"
            );
            let v = version_of(packet, version);
            let mut again = BytesMut::new();
            encode(packet, v, u32::MAX, &mut again).unwrap_or_else(|e| {
                panic!("{at}: decoded {packet:?} does not encode: {e}; input {bytes:02x?}")
            });
            assert_eq!(encoded_len(packet, v), Ok(again.len()), "{at}: {packet:?}");
            let back = decode(&mut again, v, u32::MAX);
            assert_eq!(
                back,
                Ok(Some(packet.clone())),
                "{at}: {v} input {bytes:02x?}"
            );
        }
    }
}

// --- differential against rumqttc -------------------------------------------------------------

/// rumqttc's reading of one packet, written back with rumqttc's encoder; `Err` with the
/// error's text when it refuses the bytes.
fn rumqttc_rewrite(bytes: &[u8], version: Version) -> Result<BytesMut, String> {
    let mut buf = BytesMut::from(bytes);
    let mut out = BytesMut::new();
    match version {
        Version::V311 => {
            let packet = rumqttc::mqttbytes::v4::Packet::read(&mut buf, usize::MAX)
                .map_err(|e| format!("{e:?}"))?;
            packet
                .write(&mut out, usize::MAX)
                .map_err(|e| format!("write: {e:?}"))?;
        }
        Version::V5 => {
            let packet = rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, None)
                .map_err(|e| format!("{e:?}"))?;
            packet
                .write(&mut out, None)
                .map_err(|e| format!("write: {e:?}"))?;
        }
    }
    Ok(out)
}

/// A CONNECT with the user name flag and an empty name: rumqttc writes it back without
/// the name but with the password, which 3.1.1 forbids (see the module doc).
fn empty_username(packet: &Packet) -> bool {
    matches!(packet, Packet::Connect(c) if c.username.as_deref() == Some(""))
}

/// What rumqttc's encoder is known not to write back (see the module doc).
fn normalise(packet: Packet) -> Packet {
    match packet {
        Packet::Connect(mut c) => {
            c.username = c.username.filter(|u| !u.is_empty());
            c.password = c.password.filter(|p| !p.is_empty());
            Packet::Connect(c)
        }
        other => other,
    }
}

#[test]
fn codec_fuzz_differential_rumqttc() {
    let mut fuzz = Fuzz::from_env("codec_fuzz_differential_rumqttc");
    let mut rng = fuzz.rng();
    let mut compared = 0u64;
    // Per kind of disagreement: how often, and the first input that showed it.
    let mut only_ours: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
    let mut only_theirs: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
    while fuzz.next_case() {
        let version = version(&mut rng);
        let bytes = input(&mut rng, version, 1);
        let mut buf = BytesMut::from(&bytes[..]);
        let ours = decode(&mut buf, version, u32::MAX);
        let theirs = rumqttc_rewrite(&bytes, version);
        match (ours, theirs) {
            (Ok(Some(packet)), Ok(mut rewritten)) => {
                if version_of(&packet, version) != version || empty_username(&packet) {
                    continue;
                }
                let again = decode(&mut rewritten, version, u32::MAX);
                let at = fuzz.at();
                let again = match again {
                    Ok(Some(p)) => p,
                    other => panic!(
                        "{at}: rumqttc rewrote {packet:?} as {rewritten:02x?}, which we read as {other:?}; input {bytes:02x?}"
                    ),
                };
                assert_eq!(
                    normalise(again),
                    normalise(packet),
                    "{at}: {version} input {bytes:02x?}"
                );
                compared += 1;
            }
            (Ok(Some(packet)), Err(e)) => {
                let kind = format!(
                    "{version} {} / rumqttc {}",
                    packet.packet_type(),
                    e.split(['(', ' ', '{']).next().unwrap_or("")
                );
                only_ours.entry(kind).or_insert((0, bytes.clone())).0 += 1;
            }
            (Err(e), Ok(_)) => {
                let problem = match e.problem() {
                    Some(p) => format!("{p:?}"),
                    None => format!("{e:?}"),
                };
                let name = problem.split(['(', ' ', '{']).next().unwrap_or("");
                let kind = match &e {
                    DecodeError::Invalid { packet, field, .. } => {
                        format!("{version} {packet} {field}: {name}")
                    }
                    _ => format!("{version} {name}"),
                };
                only_theirs.entry(kind).or_insert((0, bytes.clone())).0 += 1;
            }
            _ => {}
        }
    }
    eprintln!("codec_fuzz_differential_rumqttc: {compared} packets read alike by both");
    for (side, kinds) in [("us", &only_ours), ("rumqttc", &only_theirs)] {
        for (kind, (count, example)) in kinds {
            eprintln!("accepted by {side} only: {kind}: {count}, e.g. {example:02x?}");
        }
    }
}
