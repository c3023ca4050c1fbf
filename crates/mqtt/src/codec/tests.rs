//! The codec against real clients' bytes, hand-written vectors, and one test per rule it
//! enforces.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};

use super::*;

fn hex(s: &str) -> BytesMut {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("hex digits are ASCII");
            u8::from_str_radix(text, 16).expect("fixture is hex")
        })
        .collect::<Vec<u8>>()
        .as_slice()
        .into()
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("test packet identifiers are non-zero")
}

fn s(text: &'static str) -> ByteString {
    ByteString::from_static(text)
}

fn decode_all(bytes: &[u8], version: Version) -> Result<Option<Packet>, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, u32::MAX)?;
    if packet.is_some() {
        assert!(buf.is_empty(), "decode left {} bytes behind", buf.len());
    }
    Ok(packet)
}

fn decoded(bytes: &[u8], version: Version) -> Packet {
    decode_all(bytes, version)
        .expect("decodes")
        .expect("complete packet")
}

fn encoded(packet: &Packet, version: Version) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, u32::MAX, &mut out).expect("encodes");
    assert_eq!(
        encoded_len(packet, version),
        Ok(out.len()),
        "encoded_len of {packet:?}"
    );
    out
}

/// The packet type, field and problem of a refused packet.
fn refused(bytes: &[u8], version: Version) -> (PacketType, &'static str, Problem) {
    match decode_all(bytes, version) {
        Err(DecodeError::Invalid {
            packet,
            field,
            problem,
        }) => (packet, field, problem),
        other => panic!("expected a field error for {bytes:02x?}, got {other:?}"),
    }
}

/// Asserts that `bytes` are refused in `field` for `problem`; returns the reason code.
fn refusal(bytes: &str, version: Version, field: &str, problem: Problem) -> ReasonCode {
    let (_, got_field, got) = refused(&hex(bytes), version);
    assert_eq!((got_field, &got), (field, &problem), "{version} {bytes}");
    got.reason_code()
}

fn refused_connect(bytes: &[u8]) -> (&'static str, Problem) {
    match decode_connect(&mut BytesMut::from(bytes), u32::MAX) {
        Err(DecodeError::Invalid {
            packet: PacketType::Connect,
            field,
            problem,
        }) => (field, problem),
        other => panic!("expected a CONNECT field error for {bytes:02x?}, got {other:?}"),
    }
}

// --- fixtures captured from mosquitto_pub 2.0 -------------------------------------------

/// `mosquitto_pub -V mqttv311 -i lintas-fixture -u alice -P s3cret -k 30 -t sensors/t1
/// -m hello -q 1 --will-topic gone/lintas --will-payload bye --will-qos 1 --will-retain`
const MOSQUITTO_V311_CONNECT: &str = "103b00044d51545404ee001e000e6c696e7461732d666978747572\
    65000b676f6e652f6c696e74617300036279650005616c6963650006733363726574";
const MOSQUITTO_V311_PUBLISH: &str = "3213000a73656e736f72732f7431000168656c6c6f";

/// The same with `-V mqttv5 -D connect session-expiry-interval 60 -D connect user-property
/// region eu -D publish message-expiry-interval 120 -D publish content-type text/plain
/// -D publish user-property a b -D publish user-property a c -D will will-delay-interval 5`
/// (and no will retain).
const MOSQUITTO_V5_CONNECT: &str = "105700044d51545405ce001e15110000003c260006726567696f6e\
    00026575210014000e6c696e7461732d66697874757265051800000005000b676f6e652f6c696e7461730003\
    6279650005616c6963650006733363726574";
const MOSQUITTO_V5_PUBLISH: &str = "3234000a73656e736f72732f7431000120020000007803000a746578\
    742f706c61696e260001610001622600016100016368656c6c6f";

#[test]
fn mosquitto_v311_connect_decodes_and_re_encodes_to_the_same_bytes() {
    let bytes = hex(MOSQUITTO_V311_CONNECT);
    let connect = decode_connect(&mut bytes.clone(), 1024)
        .expect("decodes")
        .expect("complete");
    assert_eq!(
        connect,
        Connect {
            version: Version::V311,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::default(),
            client_id: s("lintas-fixture"),
            will: Some(Will {
                properties: Properties::default(),
                topic: s("gone/lintas"),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            username: Some(s("alice")),
            password: Some(Bytes::from_static(b"s3cret")),
        }
    );
    assert_eq!(
        encoded(&Packet::Connect(Box::new(connect)), Version::V311),
        bytes
    );
}

#[test]
fn mosquitto_v311_publish_decodes_and_re_encodes_to_the_same_bytes() {
    let bytes = hex(MOSQUITTO_V311_PUBLISH);
    let packet = decoded(&bytes, Version::V311);
    assert_eq!(
        packet,
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: s("sensors/t1"),
            packet_id: Some(pid(1)),
            properties: Properties::default(),
            payload: Bytes::from_static(b"hello"),
        })
    );
    assert_eq!(encoded(&packet, Version::V311), bytes);
}

#[test]
fn mosquitto_v5_connect_decodes_with_its_properties() {
    let connect = decode_connect(&mut hex(MOSQUITTO_V5_CONNECT), 1024)
        .expect("decodes")
        .expect("complete");
    let expected_properties = Properties {
        session_expiry_interval: Some(60),
        receive_maximum: NonZeroU16::new(20),
        user: vec![(s("region"), s("eu"))],
        ..Properties::default()
    };
    let will_properties = Properties {
        will_delay_interval: Some(5),
        ..Properties::default()
    };
    assert_eq!(connect.version, Version::V5);
    assert_eq!(connect.properties, expected_properties);
    assert_eq!(connect.client_id, "lintas-fixture");
    let will = connect.will.as_ref().expect("will flag set");
    assert_eq!(will.properties, will_properties);
    assert_eq!((will.qos, will.retain), (QoS::AtLeastOnce, false));
    assert_eq!(connect.username.as_deref(), Some("alice"));
    // Our encoder writes properties in identifier order (mosquitto put User Property
    // before Receive Maximum), so compare values, not bytes.
    let packet = Packet::Connect(Box::new(connect));
    let mut again = encoded(&packet, Version::V5);
    let Packet::Connect(back) = packet else {
        unreachable!("built as CONNECT")
    };
    assert_eq!(decode_connect(&mut again, 1024), Ok(Some(*back)));
}

#[test]
fn mosquitto_v5_publish_decodes_and_re_encodes_to_the_same_bytes() {
    let bytes = hex(MOSQUITTO_V5_PUBLISH);
    let packet = decoded(&bytes, Version::V5);
    let Packet::Publish(publish) = &packet else {
        panic!("not a PUBLISH: {packet:?}")
    };
    assert_eq!(
        publish.properties,
        Properties {
            message_expiry_interval: Some(120),
            content_type: Some(s("text/plain")),
            user: vec![(s("a"), s("b")), (s("a"), s("c"))],
            ..Properties::default()
        }
    );
    assert_eq!(publish.payload, "hello");
    assert_eq!(encoded(&packet, Version::V5), bytes);
}

/// `mosquitto_sub -V mqttv5 -q 2 -t 'sensors/+/temp' -t 'alerts/#' -D subscribe
/// subscription-identifier 7 -D subscribe user-property who me`, then its DISCONNECT when
/// stopped by a signal.
const MOSQUITTO_V5_SUBSCRIBE: &str = "822b00010c0b0726000377686f00026d65000e73656e736f72732f2b2f\
    74656d70020008616c657274732f2302";
const MOSQUITTO_V5_DISCONNECT: &str = "e00104";

#[test]
fn mosquitto_v5_subscribe_and_disconnect_decode_and_re_encode_to_the_same_bytes() {
    let subscribe = hex(MOSQUITTO_V5_SUBSCRIBE);
    let options = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        ..SubscriptionOptions::default()
    };
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Properties {
            subscription_identifiers: vec![NonZeroU32::new(7).expect("non-zero")],
            user: vec![(s("who"), s("me"))],
            ..Properties::default()
        },
        filters: vec![(s("sensors/+/temp"), options), (s("alerts/#"), options)],
    });
    assert_eq!(decoded(&subscribe, Version::V5), expected);
    assert_eq!(encoded(&expected, Version::V5), subscribe);
    let disconnect = hex(MOSQUITTO_V5_DISCONNECT);
    let expected = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DisconnectWithWillMessage,
        properties: Properties::default(),
    });
    assert_eq!(decoded(&disconnect, Version::V5), expected);
    assert_eq!(encoded(&expected, Version::V5), disconnect);
}

#[test]
fn publish_payload_and_topic_are_slices_of_the_read_buffer() {
    let mut buf = hex(MOSQUITTO_V311_PUBLISH);
    let start = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, Version::V311, 1024).expect("decodes") else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, start + 4);
    assert_eq!(p.payload.as_ptr() as usize, start + 16);
}

// --- hand-written vectors ---------------------------------------------------------------

#[test]
fn short_packets_have_their_exact_bytes() {
    let success = Packet::PubAck(Ack::success(pid(1)));
    let cases: Vec<(Packet, Version, &str)> = vec![
        (Packet::PingReq, Version::V311, "c000"),
        (Packet::PingResp, Version::V5, "d000"),
        (
            Packet::Disconnect(Disconnect::default()),
            Version::V311,
            "e000",
        ),
        (
            Packet::Disconnect(Disconnect::default()),
            Version::V5,
            "e000",
        ),
        (
            Packet::Disconnect(Disconnect {
                reason_code: ReasonCode::SessionTakenOver,
                properties: Properties::default(),
            }),
            Version::V5,
            "e0018e",
        ),
        (success.clone(), Version::V311, "40020001"),
        (success, Version::V5, "40020001"),
        (
            Packet::PubRec(Ack {
                packet_id: pid(0x1234),
                reason_code: ReasonCode::NoMatchingSubscribers,
                properties: Properties::default(),
            }),
            Version::V5,
            "5003123410",
        ),
        (
            Packet::PubRel(Ack {
                packet_id: pid(7),
                reason_code: ReasonCode::PacketIdentifierNotFound,
                properties: Properties {
                    reason_string: Some(s("gone")),
                    ..Properties::default()
                },
            }),
            Version::V5,
            "620b0007 92 07 1f0004676f6e65",
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: Properties::default(),
            }),
            Version::V311,
            "20020100",
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NotAuthorized,
                properties: Properties::default(),
            }),
            Version::V311,
            "20020005",
        ),
        (
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: ReasonCode::NotAuthorized,
                properties: Properties::default(),
            }),
            Version::V5,
            "2003008700",
        ),
        (
            Packet::SubAck(SubAck {
                packet_id: pid(10),
                properties: Properties::default(),
                reason_codes: vec![
                    ReasonCode::GrantedQos1,
                    ReasonCode::UnspecifiedError,
                    ReasonCode::GRANTED_QOS_0,
                ],
            }),
            Version::V311,
            "9005000a 01 80 00",
        ),
        (
            Packet::Subscribe(Subscribe {
                packet_id: pid(10),
                properties: Properties {
                    subscription_identifiers: vec![NonZeroU32::new(200).expect("non-zero")],
                    ..Properties::default()
                },
                filters: vec![(
                    s("a/+"),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::Never,
                    },
                )],
            }),
            Version::V5,
            "820c000a 03 0bc801 0003612f2b 2e",
        ),
        (
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid(2),
                properties: Properties::default(),
                filters: vec![s("a"), s("b/#")],
            }),
            Version::V311,
            "a20a0002 000161 0003622f23",
        ),
    ];
    for (packet, version, bytes) in cases {
        let bytes = hex(bytes);
        assert_eq!(encoded(&packet, version), bytes, "{version} {packet:?}");
        assert_eq!(decoded(&bytes, version), packet, "{version} {bytes:02x?}");
    }
}

#[test]
fn five_point_zero_acks_accept_every_short_form() {
    // Reason code and property length may each be left out (§3.4.2.1).
    let expected = Packet::PubAck(Ack::success(pid(1)));
    for bytes in ["40020001", "4003000100", "400400010000"] {
        assert_eq!(decoded(&hex(bytes), Version::V5), expected, "{bytes}");
    }
}

// --- round trip of every packet type in both versions ----------------------------------

/// Every property allowed in `scope`, set.
fn full_properties(scope: Scope) -> Properties {
    let all = Properties {
        payload_format_indicator: Some(true),
        message_expiry_interval: Some(3600),
        content_type: Some(s("application/json")),
        response_topic: Some(s("replies/1")),
        correlation_data: Some(Bytes::from_static(&[0, 1, 0xff])),
        subscription_identifiers: vec![
            NonZeroU32::new(1).expect("non-zero"),
            NonZeroU32::new(268_435_455).expect("non-zero"),
        ],
        session_expiry_interval: Some(u32::MAX),
        assigned_client_identifier: Some(s("auto-1")),
        server_keep_alive: Some(120),
        authentication_method: Some(s("SCRAM-SHA-256")),
        authentication_data: Some(Bytes::from_static(b"nonce")),
        request_problem_information: Some(false),
        will_delay_interval: Some(10),
        request_response_information: Some(true),
        response_information: Some(s("replies/")),
        server_reference: Some(s("other:1883")),
        reason_string: Some(s("because")),
        receive_maximum: NonZeroU16::new(100),
        topic_alias_maximum: Some(0),
        topic_alias: NonZeroU16::new(3),
        maximum_qos: Some(QoS::AtLeastOnce),
        retain_available: Some(false),
        user: vec![(s("k"), s("v1")), (s("k"), s("v2")), (s(""), s("é"))],
        maximum_packet_size: NonZeroU32::new(65_536),
        wildcard_subscription_available: Some(true),
        subscription_identifier_available: Some(false),
        shared_subscription_available: Some(true),
    };
    let keep = |id: PropertyId| id.allowed_in(scope);
    let mut p = all;
    macro_rules! drop_unless {
        ($($id:ident => $field:ident),* $(,)?) => {
            $(if !keep(PropertyId::$id) { p.$field = Default::default(); })*
        };
    }
    drop_unless!(
        PayloadFormatIndicator => payload_format_indicator,
        MessageExpiryInterval => message_expiry_interval,
        ContentType => content_type,
        ResponseTopic => response_topic,
        CorrelationData => correlation_data,
        SubscriptionIdentifier => subscription_identifiers,
        SessionExpiryInterval => session_expiry_interval,
        AssignedClientIdentifier => assigned_client_identifier,
        ServerKeepAlive => server_keep_alive,
        AuthenticationMethod => authentication_method,
        AuthenticationData => authentication_data,
        RequestProblemInformation => request_problem_information,
        WillDelayInterval => will_delay_interval,
        RequestResponseInformation => request_response_information,
        ResponseInformation => response_information,
        ServerReference => server_reference,
        ReasonString => reason_string,
        ReceiveMaximum => receive_maximum,
        TopicAliasMaximum => topic_alias_maximum,
        TopicAlias => topic_alias,
        MaximumQos => maximum_qos,
        RetainAvailable => retain_available,
        UserProperty => user,
        MaximumPacketSize => maximum_packet_size,
        WildcardSubscriptionAvailable => wildcard_subscription_available,
        SubscriptionIdentifierAvailable => subscription_identifier_available,
        SharedSubscriptionAvailable => shared_subscription_available,
    );
    if scope == Scope::Subscribe {
        p.subscription_identifiers.truncate(1);
    }
    p
}

/// One packet of every type, with everything `version` can carry set.
fn every_packet(version: Version) -> Vec<Packet> {
    let v5 = version == Version::V5;
    let props = |scope| {
        if v5 {
            full_properties(scope)
        } else {
            Properties::default()
        }
    };
    let code = |c: ReasonCode| if v5 { c } else { ReasonCode::Success };
    let ack = |scope, c| Ack {
        packet_id: pid(0xffff),
        reason_code: code(c),
        properties: props(scope),
    };
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: v5,
        retain_as_published: v5,
        retain_handling: if v5 {
            RetainHandling::OnNewSubscription
        } else {
            RetainHandling::OnSubscribe
        },
    };
    let mut packets = vec![
        Packet::Connect(Box::new(Connect {
            version,
            clean_start: false,
            keep_alive: 65_535,
            properties: props(Scope::Connect),
            client_id: s(""),
            will: Some(Will {
                properties: props(Scope::Will),
                topic: s("last/will"),
                payload: Bytes::from_static(b"\0binary\xff"),
                qos: QoS::ExactlyOnce,
                retain: true,
            }),
            username: Some(s("user")),
            password: Some(Bytes::new()),
        })),
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::BadUserNameOrPassword,
            properties: props(Scope::ConnAck),
        }),
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: s("a/b/ç"),
            packet_id: Some(pid(9)),
            properties: props(Scope::Publish),
            payload: Bytes::from(vec![7u8; 300]),
        }),
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: s("t"),
            packet_id: None,
            properties: Properties::default(),
            payload: Bytes::new(),
        }),
        Packet::PubAck(ack(Scope::PubAck, ReasonCode::QuotaExceeded)),
        Packet::PubRec(ack(Scope::PubRec, ReasonCode::Success)),
        Packet::PubRel(ack(Scope::PubRel, ReasonCode::PacketIdentifierNotFound)),
        Packet::PubComp(ack(Scope::PubComp, ReasonCode::Success)),
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: props(Scope::Subscribe),
            filters: vec![
                (s("a/#"), options),
                (s("+/b"), SubscriptionOptions::default()),
            ],
        }),
        Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: props(Scope::SubAck),
            reason_codes: vec![ReasonCode::GrantedQos2, ReasonCode::UnspecifiedError],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: props(Scope::Unsubscribe),
            filters: vec![s("a/#"), s("c")],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: pid(2),
            properties: props(Scope::UnsubAck),
            reason_codes: if v5 {
                vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
            } else {
                Vec::new()
            },
        }),
        Packet::PingReq,
        Packet::PingResp,
        Packet::Disconnect(Disconnect {
            reason_code: code(ReasonCode::DisconnectWithWillMessage),
            properties: props(Scope::Disconnect),
        }),
    ];
    if v5 {
        packets.push(Packet::Auth(Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: props(Scope::Auth),
        }));
    }
    packets
}

#[test]
fn every_packet_type_round_trips_in_both_versions() {
    for version in [Version::V311, Version::V5] {
        let packets = every_packet(version);
        assert_eq!(packets.len(), if version == Version::V5 { 16 } else { 15 });
        for packet in packets {
            let bytes = encoded(&packet, version);
            let back = match &packet {
                Packet::Connect(_) => decode_connect(&mut bytes.clone(), u32::MAX)
                    .map(|c| c.map(|c| Packet::Connect(Box::new(c)))),
                _ => decode_all(&bytes, version),
            };
            assert_eq!(back, Ok(Some(packet.clone())), "{version} {bytes:02x?}");
        }
    }
}

#[test]
fn every_prefix_of_a_packet_asks_for_more_bytes() {
    for version in [Version::V311, Version::V5] {
        for packet in every_packet(version) {
            let bytes = encoded(&packet, version);
            for cut in 0..bytes.len() {
                let mut buf = BytesMut::from(&bytes[..cut]);
                assert_eq!(
                    decode(&mut buf, version, u32::MAX),
                    Ok(None),
                    "{version} cut {cut}"
                );
                assert_eq!(buf.len(), cut, "an incomplete packet stays in the buffer");
            }
        }
    }
}

#[test]
fn two_packets_in_one_buffer_come_out_in_order() {
    let mut buf = hex("c000 40020001 d000");
    let mut out = Vec::new();
    while let Some(packet) = decode(&mut buf, Version::V311, 16).expect("decodes") {
        out.push(packet);
    }
    assert_eq!(
        out,
        vec![
            Packet::PingReq,
            Packet::PubAck(Ack::success(pid(1))),
            Packet::PingResp
        ]
    );
}

// --- size limits --------------------------------------------------------------------------

#[test]
fn announced_size_over_the_limit_is_refused_from_the_header_alone() {
    // PUBLISH announcing 256 MiB - 1 of remaining length: only the 5 header bytes arrived.
    let mut buf = hex("30ffffff7f");
    let capacity = buf.capacity();
    let err = decode(&mut buf, Version::V5, 1 << 20).expect_err("too large");
    assert_eq!(
        err,
        DecodeError::TooLarge {
            packet: PacketType::Publish,
            size: 268_435_460,
            max: 1 << 20
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
    assert_eq!(
        buf.capacity(),
        capacity,
        "nothing was reserved for the body"
    );
}

#[test]
fn maximum_packet_size_counts_the_fixed_header() {
    // PINGREQ is 2 bytes in all.
    assert_eq!(
        decode(&mut hex("c000"), Version::V311, 2),
        Ok(Some(Packet::PingReq))
    );
    assert_eq!(
        decode(&mut hex("c000"), Version::V311, 1),
        Err(DecodeError::TooLarge {
            packet: PacketType::PingReq,
            size: 2,
            max: 1
        })
    );
    assert_eq!(
        decode_connect(&mut hex(MOSQUITTO_V311_CONNECT), 60),
        Err(DecodeError::TooLarge {
            packet: PacketType::Connect,
            size: 61,
            max: 60
        })
    );
}

#[test]
fn encode_refuses_a_packet_over_the_peer_maximum() {
    let packet = decoded(&hex(MOSQUITTO_V311_PUBLISH), Version::V311);
    let mut out = BytesMut::new();
    assert_eq!(
        encode(&packet, Version::V311, 20, &mut out),
        Err(EncodeError::TooLarge {
            packet: PacketType::Publish,
            size: 21,
            max: 20
        })
    );
    assert!(out.is_empty());
    assert_eq!(encoded_len(&packet, Version::V311), Ok(21));
}

// --- one test per rejected rule -----------------------------------------------------------

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    let cases = [
        ("60020001", PacketType::PubRel, 0b0000, 0b0010),
        ("80060001000161 00", PacketType::Subscribe, 0b0000, 0b0010),
        ("a0050001000161", PacketType::Unsubscribe, 0b0000, 0b0010),
        ("41020001", PacketType::PubAck, 0b0001, 0),
        ("c800", PacketType::PingReq, 0b1000, 0),
        ("e200", PacketType::Disconnect, 0b0010, 0),
    ];
    for (bytes, packet, got, want) in cases {
        let (p, field, problem) = refused(&hex(bytes), Version::V5);
        assert_eq!((p, field), (packet, "fixed header flags"), "{bytes}");
        assert_eq!(problem, Problem::ReservedFlags { got, want }, "{bytes}");
        assert_eq!(problem.reason_code(), ReasonCode::MalformedPacket);
    }
}

#[test]
fn publish_qos_3_is_malformed() {
    let (packet, field, problem) = refused(&hex("3607000174000168"), Version::V311);
    assert_eq!(
        (packet, field, problem),
        (PacketType::Publish, "fixed header flags", Problem::QoS3)
    );
}

#[test]
fn dup_on_qos_0_publish_is_malformed() {
    let (_, field, problem) = refused(&hex("3803000174"), Version::V311);
    assert_eq!(
        (field, problem),
        ("fixed header flags", Problem::DupWithQoS0)
    );
}

#[test]
fn packet_identifier_zero_is_a_protocol_error() {
    for (bytes, packet) in [
        ("40020000", PacketType::PubAck),
        ("3205000174 0000", PacketType::Publish),
        ("a2050000000161", PacketType::Unsubscribe),
    ] {
        let (p, field, problem) = refused(&hex(bytes), Version::V311);
        assert_eq!(
            (p, field, problem.clone()),
            (packet, "packet identifier", Problem::ZeroPacketId)
        );
        assert_eq!(problem.reason_code(), ReasonCode::ProtocolError);
    }
}

/// A 3.1.1 CONNECT with client id "c" and the given flags (and nothing the flags announce).
fn connect_with_flags(flags: u8) -> BytesMut {
    let mut bytes = hex("100d00044d5154540400003c000163");
    bytes[9] = flags;
    bytes
}

#[test]
fn connect_reserved_flag_is_malformed() {
    assert_eq!(
        refused_connect(&connect_with_flags(0x03)),
        ("connect flags", Problem::ReservedBit(0x03))
    );
}

#[test]
fn will_qos_or_retain_without_will_flag_is_malformed() {
    for flags in [0x08, 0x10, 0x20] {
        assert_eq!(
            refused_connect(&connect_with_flags(flags)),
            ("connect flags", Problem::WillFlagsWithoutWill),
            "flags {flags:#04x}"
        );
    }
}

#[test]
fn will_qos_3_is_malformed() {
    assert_eq!(
        refused_connect(&connect_with_flags(0x1c)),
        ("will QoS", Problem::QoS3)
    );
}

#[test]
fn password_without_user_name_is_refused_in_3_1_1_only() {
    assert_eq!(
        refused_connect(&connect_with_flags(0x40)),
        ("connect flags", Problem::PasswordWithoutUsername)
    );
    // 5.0: level 5, empty properties, client id "c", password "pw".
    let v5 = hex("101200044d5154540540003c00 00016300027077");
    let connect = decode_connect(&mut v5.clone(), 64)
        .expect("5.0 allows it")
        .expect("complete");
    assert_eq!(
        (connect.username, connect.password),
        (None, Some(Bytes::from_static(b"pw")))
    );
}

#[test]
fn authentication_data_without_method_is_a_protocol_error() {
    // 5.0 CONNECT with properties: Authentication Data (0x16) "x", no method.
    let bytes = hex("101100044d5154540502003c 04 16000178 000163");
    assert_eq!(
        refused_connect(&bytes),
        ("properties", Problem::AuthDataWithoutMethod)
    );
    assert_eq!(
        Problem::AuthDataWithoutMethod.reason_code(),
        ReasonCode::ProtocolError
    );
}

#[test]
fn mqtt_3_1_and_unknown_levels_are_unsupported_protocol_versions() {
    // "MQIsdp" level 3, as MQTT 3.1 clients send it.
    let v31 = hex("100f00064d514973647003020000000163");
    let (field, problem) = refused_connect(&v31);
    assert_eq!(field, "protocol level");
    assert_eq!(
        problem,
        Problem::UnsupportedProtocol {
            name: "MQIsdp".into(),
            level: 3
        }
    );
    assert_eq!(
        problem.reason_code(),
        ReasonCode::UnsupportedProtocolVersion
    );
    assert_eq!(problem.reason_code().to_v311_connack(), Some(0x01));
    let mut level6 = connect_with_flags(0x02);
    level6[8] = 6;
    assert_eq!(
        refused_connect(&level6).1,
        Problem::UnsupportedProtocol {
            name: "MQTT".into(),
            level: 6
        }
    );
}

#[test]
fn first_packet_other_than_connect_is_a_protocol_error() {
    let err = decode_connect(&mut hex("c000"), 64).expect_err("PINGREQ first");
    assert_eq!(
        err,
        DecodeError::Invalid {
            packet: PacketType::PingReq,
            field: "packet type",
            problem: Problem::Sequence("the first packet is not CONNECT"),
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn subscribe_without_filters_is_a_protocol_error() {
    let code = refusal(
        "82020001",
        Version::V311,
        "payload",
        Problem::NoTopicFilters,
    );
    assert_eq!(code, ReasonCode::ProtocolError);
    refusal(
        "a2030001 00",
        Version::V5,
        "payload",
        Problem::NoTopicFilters,
    );
}

#[test]
fn subscription_options_reserved_bits_are_malformed() {
    // 5.0: bits 6-7 reserved.
    let (_, field, problem) = refused(&hex("82070001 00 000161 40"), Version::V5);
    assert_eq!(
        (field, problem),
        ("subscription options", Problem::ReservedBit(0x40))
    );
    // 3.1.1: bits 2-7 reserved (No Local does not exist there).
    let (_, _, problem) = refused(&hex("82060001 000161 04"), Version::V311);
    assert_eq!(problem, Problem::ReservedBit(0x04));
}

#[test]
fn retain_handling_3_is_malformed() {
    let (_, field, problem) = refused(&hex("82070001 00 000161 30"), Version::V5);
    assert_eq!(
        (field, problem),
        ("subscription options", Problem::RetainHandling3)
    );
}

#[test]
fn subscription_qos_3_is_malformed() {
    let (_, _, problem) = refused(&hex("82060001 000161 03"), Version::V311);
    assert_eq!(problem, Problem::QoS3);
}

#[test]
fn strings_must_be_well_formed_utf8_without_nul() {
    // Topic "a\0".
    let (_, field, problem) = refused(&hex("3004 0002 6100"), Version::V311);
    assert_eq!((field, problem), ("topic name", Problem::NulChar));
    // Topic "\xed\xa0\x80" (an encoded surrogate U+D800).
    let (_, field, problem) = refused(&hex("3005 0003 eda080"), Version::V311);
    assert_eq!((field, problem), ("topic name", Problem::InvalidUtf8));
    // Client identifier "\xff".
    let mut bytes = connect_with_flags(0x02);
    bytes[14] = 0xff;
    assert_eq!(
        refused_connect(&bytes),
        ("client identifier", Problem::InvalidUtf8)
    );
}

#[test]
fn bytes_after_the_last_field_are_malformed() {
    let (_, field, problem) = refused(&hex("c00100"), Version::V311);
    assert_eq!(
        (field, problem),
        ("end of packet", Problem::TrailingBytes(1))
    );
    let (_, _, problem) = refused(&hex("4003000100"), Version::V311);
    assert_eq!(problem, Problem::TrailingBytes(1));
    let (_, _, problem) = refused(&hex("50060001 10 00 0000"), Version::V5);
    assert_eq!(problem, Problem::TrailingBytes(2));
    let mut connect = hex(MOSQUITTO_V311_CONNECT);
    connect[1] += 1;
    connect.extend_from_slice(&[0]);
    assert_eq!(
        refused_connect(&connect),
        ("end of packet", Problem::TrailingBytes(1))
    );
}

#[test]
fn a_length_past_the_end_of_the_packet_is_malformed() {
    // Topic length 10 in a 4-byte body.
    let (_, field, problem) = refused(&hex("3004 000a 6162"), Version::V311);
    assert_eq!((field, problem.clone()), ("topic name", Problem::Truncated));
    assert_eq!(problem.reason_code(), ReasonCode::MalformedPacket);
    // Property length 5 with 1 byte of properties.
    let (_, field, problem) = refused(&hex("3005 000174 05 01"), Version::V5);
    assert_eq!((field, problem), ("properties", Problem::Truncated));
}

#[test]
fn remaining_length_must_be_at_most_four_minimal_bytes() {
    let (_, field, problem) = refused(&hex("30ffffffff01"), Version::V311);
    assert_eq!(
        (field, problem),
        ("remaining length", Problem::VarIntTooLong)
    );
    let (_, field, problem) = refused(&hex("c08000"), Version::V311);
    assert_eq!(
        (field, problem),
        ("remaining length", Problem::VarIntNotMinimal)
    );
}

#[test]
fn packet_type_0_and_auth_in_3_1_1_are_malformed() {
    assert_eq!(
        decode_all(&hex("0000"), Version::V5),
        Err(DecodeError::ReservedPacketType { byte1: 0 })
    );
    let (packet, field, problem) = refused(&hex("f000"), Version::V311);
    assert_eq!(
        (packet, field, problem),
        (PacketType::Auth, "packet type", Problem::AuthInV311)
    );
    assert_eq!(
        decoded(&hex("f000"), Version::V5),
        Packet::Auth(Auth::default())
    );
}

#[test]
fn empty_topic_needs_a_topic_alias_in_5_0() {
    let problem = refused(&hex("3003 0000 00"), Version::V5).2;
    assert_eq!(
        problem.reason_code(),
        ReasonCode::ProtocolError,
        "{problem}"
    );
    assert_eq!(problem, Problem::EmptyTopicWithoutAlias);
    let Packet::Publish(p) = decoded(&hex("3006 0000 03 230007"), Version::V5) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(
        (p.topic.len(), p.properties.topic_alias),
        (0, NonZeroU16::new(7))
    );
}

#[test]
fn property_not_allowed_in_the_packet_is_a_protocol_error() {
    // Topic Alias (0x23) in a PUBACK.
    let (_, field, problem) = refused(&hex("4007000100 03 230001"), Version::V5);
    assert_eq!(
        (field, problem.clone()),
        (
            "properties",
            Problem::PropertyNotAllowed(PropertyId::TopicAlias)
        )
    );
    assert_eq!(problem.reason_code(), ReasonCode::ProtocolError);
    // Will Delay Interval in CONNECT's own properties rather than the will's.
    let bytes = hex("101200044d51545405020000 05 1800000001 000163");
    assert_eq!(
        refused_connect(&bytes),
        (
            "properties",
            Problem::PropertyNotAllowed(PropertyId::WillDelayInterval)
        )
    );
}

#[test]
fn repeated_property_is_a_protocol_error_except_user_property() {
    // Message Expiry Interval twice.
    let (_, _, problem) = refused(&hex("300e 000174 0a 0200000001 0200000002"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyRepeated(PropertyId::MessageExpiryInterval)
    );
    // Subscription Identifier twice: allowed in PUBLISH, refused in SUBSCRIBE.
    let Packet::Publish(p) = decoded(&hex("3008 000174 04 0b010b02"), Version::V5) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.properties.subscription_identifiers.len(), 2);
    let (_, _, problem) = refused(&hex("820b 0001 04 0b010b02 000161 00"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyRepeated(PropertyId::SubscriptionIdentifier)
    );
}

#[test]
fn forbidden_property_values_are_protocol_errors() {
    let (_, _, problem) = refused(&hex("2006 0000 03 210000"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyValue {
            id: PropertyId::ReceiveMaximum,
            value: 0
        }
    );
    let (_, _, problem) = refused(&hex("3007 000174 03 230000"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyValue {
            id: PropertyId::TopicAlias,
            value: 0
        }
    );
    let (_, _, problem) = refused(&hex("3006 000174 02 0b00"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyValue {
            id: PropertyId::SubscriptionIdentifier,
            value: 0
        }
    );
    let (_, _, problem) = refused(&hex("3006 000174 02 0102"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyValue {
            id: PropertyId::PayloadFormatIndicator,
            value: 2
        }
    );
    let (_, _, problem) = refused(&hex("2005 0000 02 2402"), Version::V5);
    assert_eq!(
        problem,
        Problem::PropertyValue {
            id: PropertyId::MaximumQos,
            value: 2
        }
    );
}

#[test]
fn unknown_property_identifier_is_malformed() {
    let (_, _, problem) = refused(&hex("3006 000174 02 0500"), Version::V5);
    assert_eq!(problem.clone(), Problem::UnknownProperty(0x05));
    assert_eq!(problem.reason_code(), ReasonCode::MalformedPacket);
}

#[test]
fn reason_code_outside_the_packet_table_is_a_protocol_error() {
    // 0x92 (Packet Identifier not found) belongs to PUBREL/PUBCOMP, not PUBACK.
    let (_, field, problem) = refused(&hex("4003000192"), Version::V5);
    assert_eq!((field, problem), ("reason code", Problem::ReasonCode(0x92)));
    // 0x03 is not defined at all.
    let (_, _, problem) = refused(&hex("e00103"), Version::V5);
    assert_eq!(problem, Problem::ReasonCode(0x03));
}

#[test]
fn reserved_3_1_1_return_codes_are_malformed() {
    let (_, field, problem) = refused(&hex("20020006"), Version::V311);
    assert_eq!((field, problem), ("return code", Problem::ReturnCode(0x06)));
    let (_, _, problem) = refused(&hex("90030001 03"), Version::V311);
    assert_eq!(problem, Problem::ReturnCode(0x03));
}

#[test]
fn connack_reserved_flags_are_malformed() {
    let (_, field, problem) = refused(&hex("20020200"), Version::V311);
    assert_eq!(
        (field, problem),
        ("acknowledge flags", Problem::ReservedBit(0x02))
    );
}

// --- what encode refuses ------------------------------------------------------------------

#[test]
fn encode_refuses_what_the_version_cannot_say() {
    let v311 = |packet: Packet| encoded_len(&packet, Version::V311);
    assert_eq!(
        v311(Packet::Auth(Auth::default())),
        Err(EncodeError::Unrepresentable {
            packet: PacketType::Auth,
            version: Version::V311,
            what: "AUTH, which 3.1.1 does not have",
        })
    );
    let banned = ConnAck {
        session_present: false,
        reason_code: ReasonCode::Banned,
        properties: Properties::default(),
    };
    assert!(matches!(
        v311(Packet::ConnAck(banned)),
        Err(EncodeError::Unrepresentable { .. })
    ));
    let no_id = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("t"),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::new(),
    };
    assert!(matches!(
        encoded_len(&Packet::Publish(no_id), Version::V5),
        Err(EncodeError::Unrepresentable {
            what: "a QoS 1 or 2 PUBLISH without a packet identifier",
            ..
        })
    ));
}

#[test]
fn encode_refuses_a_string_longer_than_65535_bytes() {
    let long = ByteString::from("x".repeat(65_536));
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: long,
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::new(),
    };
    assert_eq!(
        encoded_len(&Packet::Publish(publish), Version::V311),
        Err(EncodeError::FieldTooLong {
            packet: PacketType::Publish,
            field: "topic name",
            len: 65_536
        })
    );
}

#[test]
fn v311_output_leaves_out_what_3_1_1_lacks() {
    let ack = Packet::PubAck(Ack {
        packet_id: pid(1),
        reason_code: ReasonCode::NoMatchingSubscribers,
        properties: Properties {
            reason_string: Some(s("none")),
            ..Properties::default()
        },
    });
    assert_eq!(encoded(&ack, Version::V311), hex("40020001"));
    let qos0 = Packet::Publish(Publish {
        dup: true,
        qos: QoS::AtMostOnce,
        retain: true,
        topic: s("t"),
        packet_id: Some(pid(5)),
        properties: Properties::default(),
        payload: Bytes::from_static(b"x"),
    });
    // QoS 0: neither DUP nor the packet identifier is written.
    assert_eq!(encoded(&qos0, Version::V5), hex("3105 000174 00 78"));
    // Every refusal is 3.1.1's one failure code.
    let suback = Packet::SubAck(SubAck {
        packet_id: pid(1),
        properties: Properties::default(),
        reason_codes: vec![ReasonCode::NotAuthorized, ReasonCode::QuotaExceeded],
    });
    assert_eq!(encoded(&suback, Version::V311), hex("90040001 80 80"));
}
