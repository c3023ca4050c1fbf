//! Reading packets off a connection's buffer.
//!
//! [`decode`] and [`decode_connect`] look at the fixed header first: the type and its flag
//! bits are checked on the first byte, and the remaining length against the maximum packet
//! size as soon as its last byte is in, so a client announcing a packet over the limit is
//! refused before its body is read or buffered. Only when the whole packet is in the buffer
//! is it split off, frozen, and read field by field through a [`Reader`] whose slices share
//! that storage: a PUBLISH costs the split and a few reference counts, no copy.

use bytes::{Buf, BytesMut};

use super::Version;
use super::error::{DecodeError, Problem};
use super::packet::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketId, PacketType, Publish, QoS,
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use super::properties::{Properties, Scope};
use super::reason::ReasonCode;
use super::wire::{Reader, VarInt, parse_var_int};

/// A field's problem, before the packet type is attached.
type Field<T> = Result<T, (&'static str, Problem)>;

/// Names the field a [`Problem`] was found in.
trait At<T> {
    fn at(self, field: &'static str) -> Field<T>;
}

impl<T> At<T> for Result<T, Problem> {
    fn at(self, field: &'static str) -> Field<T> {
        self.map_err(|problem| (field, problem))
    }
}

/// Takes the next packet of a connection whose CONNECT said `version` off the front of
/// `buf`.
///
/// `Ok(None)` means the packet is not complete yet: read more into `buf` (which has been
/// reserved room for the rest once the size is known) and call again. A packet larger than
/// `max_packet_size` bytes in all is refused as soon as its fixed header is in. A CONNECT is
/// read in the version it names: on a connection that already has one it is the session's
/// Protocol Error to act on (§3.1.0). On any error the connection must be closed (after a
/// DISCONNECT with [`DecodeError::reason_code`] for a 5.0 client).
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some((packet, flags, mut r)) = frame(buf, max_packet_size, |packet| match packet {
        PacketType::Auth if version == Version::V311 => Err(Problem::AuthInV311),
        _ => Ok(()),
    })?
    else {
        return Ok(None);
    };
    let read = body(packet, flags, version, &mut r);
    whole(packet, &r, read)
}

/// Takes the CONNECT that opens a connection off the front of `buf`; the version it names
/// is the one [`decode`] reads the rest of the connection in.
///
/// A protocol other than "MQTT" level 4 or 5 is [`Problem::UnsupportedProtocol`], whose
/// reason code is Unsupported Protocol Version: answer with the 3.1.1 form of CONNACK and
/// return code 0x01 (`20 02 00 01`, which 3.1 and 3.1.1 clients read and 5.0 §3.1.2.2
/// allows), then close.
pub fn decode_connect(
    buf: &mut BytesMut,
    max_packet_size: u32,
) -> Result<Option<Connect>, DecodeError> {
    let Some((packet, _, mut r)) = frame(buf, max_packet_size, |packet| match packet {
        PacketType::Connect => Ok(()),
        _ => Err(Problem::Sequence("the first packet is not CONNECT")),
    })?
    else {
        return Ok(None);
    };
    let read = connect(&mut r);
    whole(packet, &r, read)
}

/// What was read, once nothing is left over; errors get the packet type.
fn whole<T>(packet: PacketType, r: &Reader, read: Field<T>) -> Result<Option<T>, DecodeError> {
    read.and_then(|value| r.finish().at("end of packet").map(|()| Some(value)))
        .map_err(|(field, problem)| DecodeError::Invalid {
            packet,
            field,
            problem,
        })
}

/// Splits the next whole packet off `buf`: its type, its flag bits and a reader over its
/// body; `None` while it is incomplete. `expect` refuses types out of sequence before
/// anything else is read.
fn frame(
    buf: &mut BytesMut,
    max_packet_size: u32,
    expect: impl Fn(PacketType) -> Result<(), Problem>,
) -> Result<Option<(PacketType, u8, Reader)>, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let packet =
        PacketType::from_nibble(byte1 >> 4).ok_or(DecodeError::ReservedPacketType { byte1 })?;
    let invalid = |field, problem| DecodeError::Invalid {
        packet,
        field,
        problem,
    };
    expect(packet).map_err(|problem| invalid("packet type", problem))?;
    let flags = byte1 & 0x0f;
    check_flags(packet, flags).map_err(|problem| invalid("fixed header flags", problem))?;
    let (remaining, len_len) = match parse_var_int(&buf[1..]) {
        Ok(VarInt::Complete { value, len }) => (value, len),
        Ok(VarInt::Incomplete) => return Ok(None),
        Err(problem) => return Err(invalid("remaining length", problem)),
    };
    let size = 1 + len_len as u64 + u64::from(remaining);
    if size > u64::from(max_packet_size) {
        return Err(DecodeError::TooLarge {
            packet,
            size,
            max: max_packet_size,
        });
    }
    // Within the limit, and at most 256 MiB: fits usize on every target we build for.
    let size = size as usize;
    if buf.len() < size {
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut body = buf.split_to(size).freeze();
    body.advance(1 + len_len);
    Ok(Some((packet, flags, Reader::new(body))))
}

/// §2.1.3: PUBLISH's flags are DUP, QoS and RETAIN; every other type's are fixed.
fn check_flags(packet: PacketType, flags: u8) -> Result<(), Problem> {
    if packet == PacketType::Publish {
        let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(Problem::QoS3)?;
        if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
            return Err(Problem::DupWithQoS0);
        }
        return Ok(());
    }
    let want = packet.fixed_flags();
    if flags != want {
        return Err(Problem::ReservedFlags { got: flags, want });
    }
    Ok(())
}

fn body(packet: PacketType, flags: u8, version: Version, r: &mut Reader) -> Field<Packet> {
    let v5 = version == Version::V5;
    Ok(match packet {
        PacketType::Connect => Packet::Connect(Box::new(connect(r)?)),
        PacketType::ConnAck => Packet::ConnAck(connack(r, v5)?),
        PacketType::Publish => Packet::Publish(publish(r, flags, v5)?),
        PacketType::PubAck => Packet::PubAck(ack(r, packet, Scope::PubAck, v5)?),
        PacketType::PubRec => Packet::PubRec(ack(r, packet, Scope::PubRec, v5)?),
        PacketType::PubRel => Packet::PubRel(ack(r, packet, Scope::PubRel, v5)?),
        PacketType::PubComp => Packet::PubComp(ack(r, packet, Scope::PubComp, v5)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(r, v5)?),
        PacketType::SubAck => Packet::SubAck(suback(r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason_code, properties) =
                reason_and_properties(r, packet, Scope::Disconnect, v5)?;
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        }
        PacketType::Auth => {
            let (reason_code, properties) = reason_and_properties(r, packet, Scope::Auth, v5)?;
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        }
    })
}

fn connect(r: &mut Reader) -> Field<Connect> {
    let name = r.binary().at("protocol name")?;
    let level = r.u8().at("protocol level")?;
    let version = match (&name[..], level) {
        (b"MQTT", 4) => Version::V311,
        (b"MQTT", 5) => Version::V5,
        _ => {
            let name = String::from_utf8_lossy(&name).into_owned();
            return Err(Problem::UnsupportedProtocol { name, level }).at("protocol level");
        }
    };
    let v5 = version == Version::V5;
    let flags = r.u8().at("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(Problem::ReservedBit(flags)).at("connect flags");
    }
    let has_will = flags & 0x04 != 0;
    let will_qos = QoS::from_bits((flags >> 3) & 0b11)
        .ok_or(Problem::QoS3)
        .at("will QoS")?;
    let will_retain = flags & 0x20 != 0;
    if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(Problem::WillFlagsWithoutWill).at("connect flags");
    }
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !v5 && has_password && !has_username {
        return Err(Problem::PasswordWithoutUsername).at("connect flags");
    }
    let keep_alive = r.u16().at("keep alive")?;
    let properties = properties(r, Scope::Connect, v5)?;
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(Problem::AuthDataWithoutMethod).at("properties");
    }
    let client_id = r.string().at("client identifier")?;
    let will = if has_will {
        Some(Will {
            properties: properties_at(r, Scope::Will, v5, "will properties")?,
            topic: r.string().at("will topic")?,
            payload: r.binary().at("will payload")?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string().at("user name")?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary().at("password")?)
    } else {
        None
    };
    Ok(Connect {
        version,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Field<ConnAck> {
    let flags = r.u8().at("acknowledge flags")?;
    if flags & 0xfe != 0 {
        return Err(Problem::ReservedBit(flags)).at("acknowledge flags");
    }
    let code = r.u8().at("reason code")?;
    let reason_code = if v5 {
        reason(code, PacketType::ConnAck)?
    } else {
        ReasonCode::from_v311_connack(code)
            .ok_or(Problem::ReturnCode(code))
            .at("return code")?
    };
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason_code,
        properties: properties(r, Scope::ConnAck, v5)?,
    })
}

fn publish(r: &mut Reader, flags: u8, v5: bool) -> Field<Publish> {
    let qos = QoS::from_bits((flags >> 1) & 0b11)
        .ok_or(Problem::QoS3)
        .at("fixed header flags")?;
    let topic = r.string().at("topic name")?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = properties(r, Scope::Publish, v5)?;
    if v5 && topic.is_empty() && properties.topic_alias.is_none() {
        return Err(Problem::EmptyTopicWithoutAlias).at("topic name");
    }
    let payload = r.rest();
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn ack(r: &mut Reader, packet: PacketType, scope: Scope, v5: bool) -> Field<Ack> {
    let packet_id = packet_id(r)?;
    let (reason_code, properties) = reason_and_properties(r, packet, scope, v5)?;
    Ok(Ack {
        packet_id,
        reason_code,
        properties,
    })
}

/// The tail shared by the acknowledgements, DISCONNECT and AUTH in 5.0: a reason code and
/// properties, each of which may be left out from the end (§3.4.2.1, §3.14.2.1, §3.15.2.1).
fn reason_and_properties(
    r: &mut Reader,
    packet: PacketType,
    scope: Scope,
    v5: bool,
) -> Field<(ReasonCode, Properties)> {
    if !v5 || r.remaining() == 0 {
        return Ok((ReasonCode::Success, Properties::default()));
    }
    let reason_code = reason(r.u8().at("reason code")?, packet)?;
    if r.remaining() == 0 {
        return Ok((reason_code, Properties::default()));
    }
    Ok((reason_code, properties(r, scope, true)?))
}

fn subscribe(r: &mut Reader, v5: bool) -> Field<Subscribe> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, Scope::Subscribe, v5)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string().at("topic filter")?;
        let options = subscription_options(r.u8().at("subscription options")?, v5)
            .at("subscription options")?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(Problem::NoTopicFilters).at("payload");
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn subscription_options(byte: u8, v5: bool) -> Result<SubscriptionOptions, Problem> {
    let reserved = if v5 { 0b1100_0000 } else { 0b1111_1100 };
    if byte & reserved != 0 {
        return Err(Problem::ReservedBit(byte));
    }
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::OnSubscribe,
        1 => RetainHandling::OnNewSubscription,
        2 => RetainHandling::Never,
        _ => return Err(Problem::RetainHandling3),
    };
    Ok(SubscriptionOptions {
        qos: QoS::from_bits(byte & 0b11).ok_or(Problem::QoS3)?,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Field<SubAck> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, Scope::SubAck, v5)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while r.remaining() > 0 {
        let code = r.u8().at("reason code")?;
        reason_codes.push(if v5 {
            reason(code, PacketType::SubAck)?
        } else {
            match code {
                0x00 | 0x01 | 0x02 | 0x80 => ReasonCode::from_u8(code),
                _ => None,
            }
            .ok_or(Problem::ReturnCode(code))
            .at("return code")?
        });
    }
    Ok(SubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Field<Unsubscribe> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, Scope::Unsubscribe, v5)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string().at("topic filter")?);
    }
    if filters.is_empty() {
        return Err(Problem::NoTopicFilters).at("payload");
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Field<UnsubAck> {
    let packet_id = packet_id(r)?;
    let properties = properties(r, Scope::UnsubAck, v5)?;
    let mut reason_codes = Vec::with_capacity(if v5 { r.remaining() } else { 0 });
    while v5 && r.remaining() > 0 {
        reason_codes.push(reason(r.u8().at("reason code")?, PacketType::UnsubAck)?);
    }
    Ok(UnsubAck {
        packet_id,
        properties,
        reason_codes,
    })
}

fn packet_id(r: &mut Reader) -> Field<PacketId> {
    let id = r.u16().at("packet identifier")?;
    PacketId::new(id)
        .ok_or(Problem::ZeroPacketId)
        .at("packet identifier")
}

fn reason(code: u8, packet: PacketType) -> Field<ReasonCode> {
    ReasonCode::from_u8(code)
        .filter(|c| c.valid_in(packet))
        .ok_or(Problem::ReasonCode(code))
        .at("reason code")
}

/// A packet's properties in 5.0; none in 3.1.1.
fn properties(r: &mut Reader, scope: Scope, v5: bool) -> Field<Properties> {
    properties_at(r, scope, v5, "properties")
}

fn properties_at(r: &mut Reader, scope: Scope, v5: bool, field: &'static str) -> Field<Properties> {
    if !v5 {
        return Ok(Properties::default());
    }
    Properties::decode(r, scope).at(field)
}
