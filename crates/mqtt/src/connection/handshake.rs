//! CONNECT to CONNACK: reading the first packet within `connect_timeout`, refusing what
//! cannot be served with the code each version has for it, and settling what the
//! connection runs with (client identifier, keep alive, session expiry, the client's
//! limits).
//!
//! Refusals: a protocol other than MQTT 3.1.1 or 5.0 gets the 3.1.1 CONNACK 0x01, which
//! every version reads; a malformed CONNECT that names level 5 gets a 5.0 CONNACK with the
//! codec's reason code, one naming another level just a closed connection (3.1.1 has no
//! code for it). A client identifier longer than [`MAX_CLIENT_ID_BYTES`], an empty one with
//! `clean_session = 0` in 3.1.1, or a 3.1.1 keep alive of 0 or above `max_keep_alive` gets
//! 0x02 / 0x85 (Mosquitto's answer since 2.0.12: keep alive 0 would let a silent client hold
//! its connection and session forever, and 3.1.1 cannot be told another value); a 5.0 client with an empty identifier is given one (Assigned Client Identifier),
//! a 3.1.1 one too (it cannot be told, and with a clean session it needs none). A will
//! whose topic is not a valid topic name gets 0x90 in 5.0 and a closed connection in 3.1.1.
//! Then [`admit`] checks the user name and password and the will's topic against the ACL,
//! with the codes of [`crate::auth`].

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use crate::auth::{Access, Identity};
use crate::broker::Broker;
use crate::codec::{
    self, ByteString, ConnAck, Connect, DecodeError, Problem, Properties, ReasonCode, Version,
};
use crate::session::{ClientId, WillSpec};
use crate::topic::TopicName;

/// Longest client identifier accepted. MQTT 5.0 lets a server refuse long ones (§3.1.3.1);
/// identifiers become keys in the cluster's key/value space and labels in the admin API,
/// and no client we know of needs more than a UUID and a prefix.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// What reading the CONNECT gave.
pub(super) enum Opening {
    /// A CONNECT to answer.
    Connect(Box<Connect>),
    /// Something to answer with before closing (possibly nothing).
    Refuse(Option<(Version, ReasonCode)>),
}

/// Reads the CONNECT from `reader` within `connect_timeout`.
pub(super) async fn read_connect<R: AsyncRead + Unpin>(
    broker: &Broker,
    reader: &mut R,
    buf: &mut BytesMut,
) -> Opening {
    let cfg = broker.config();
    let read = async {
        loop {
            match codec::decode_connect(buf, cfg.max_packet_size) {
                Ok(Some(connect)) => return Opening::Connect(Box::new(connect)),
                Ok(None) => {}
                Err(e) => return refusal(&e, buf),
            }
            match super::read::read_some(reader, buf).await {
                Ok(0) | Err(_) => return Opening::Refuse(None),
                Ok(_) => {}
            }
        }
    };
    match tokio::time::timeout(cfg.connect_timeout, read).await {
        Ok(opening) => opening,
        Err(_) => Opening::Refuse(None),
    }
}

/// The answer to a CONNECT the codec refused.
fn refusal(e: &DecodeError, buf: &BytesMut) -> Opening {
    if let Some(Problem::UnsupportedProtocol { .. }) = e.problem() {
        return Opening::Refuse(Some((
            Version::V311,
            ReasonCode::UnsupportedProtocolVersion,
        )));
    }
    if claimed_level(buf) == Some(Version::V5.level()) {
        return Opening::Refuse(Some((Version::V5, e.reason_code())));
    }
    Opening::Refuse(None)
}

/// The protocol level a CONNECT at the front of `buf` names, if its header got that far:
/// fixed header, remaining length, "MQTT" with its length, then the level.
fn claimed_level(buf: &[u8]) -> Option<u8> {
    let len_bytes = buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    buf.get(1 + len_bytes + 6).copied()
}

/// What the connection runs with once CONNECT is accepted.
#[derive(Debug)]
pub(super) struct Accepted {
    /// The client identifier (assigned if the client sent none).
    pub client_id: ClientId,
    /// Whether it was assigned (5.0 sends it back).
    pub assigned: bool,
    /// The protocol version.
    pub version: Version,
    /// Clean start / clean session.
    pub clean_start: bool,
    /// The keep alive in force, in seconds (0: none).
    pub keep_alive: u16,
    /// Whether it differs from what the client asked (5.0 Server Keep Alive).
    pub keep_alive_changed: bool,
    /// The session expiry interval in force, in seconds.
    pub expiry: u32,
    /// Whether it differs from what the 5.0 client asked.
    pub expiry_changed: bool,
    /// The will.
    pub will: Option<WillSpec>,
    /// The client's Receive Maximum (our in-flight window towards it, before our cap).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size.
    pub max_packet_size: u32,
}

/// Checks `connect` against the broker's rules; `Err` is the code to refuse it with
/// (`None`: close without answering). Takes the box so that it is freed here: a box moved
/// out of in the connection task would stay allocated as long as the connection.
pub(super) fn accept(
    broker: &Broker,
    connect: Box<Connect>,
) -> Result<Accepted, Option<ReasonCode>> {
    let connect = *connect;
    let cfg = broker.config();
    let v5 = connect.version == Version::V5;
    let (client_id, assigned) = if connect.client_id.is_empty() {
        if !v5 && !connect.clean_start {
            return Err(Some(ReasonCode::ClientIdentifierNotValid));
        }
        (broker.assign_client_id(), true)
    } else if connect.client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(Some(ReasonCode::ClientIdentifierNotValid));
    } else {
        // A copy: a slice would keep the whole first read alive as long as the session.
        (ClientId::from(&*connect.client_id), false)
    };
    let max = cfg.max_keep_alive;
    let (keep_alive, keep_alive_changed) = match connect.keep_alive {
        asked if max == 0 || (asked != 0 && asked <= max) => (asked, false),
        _ if v5 => (max, true),
        _ => return Err(Some(ReasonCode::ClientIdentifierNotValid)),
    };
    let (expiry, expiry_changed) = if v5 {
        let asked = connect.properties.session_expiry_interval.unwrap_or(0);
        let granted = asked.min(cfg.session_expiry_max_secs());
        (granted, granted != asked)
    } else if connect.clean_start {
        (0, false)
    } else {
        (cfg.persistent_session_secs(), false)
    };
    if let Some(will) = &connect.will
        && TopicName::parse(&will.topic, cfg.max_topic_levels).is_err()
    {
        return Err(v5.then_some(ReasonCode::TopicNameInvalid));
    }
    let props = &connect.properties;
    Ok(Accepted {
        client_id,
        assigned,
        version: connect.version,
        clean_start: connect.clean_start,
        keep_alive,
        keep_alive_changed,
        expiry,
        expiry_changed,
        receive_maximum: props.receive_maximum.map_or(u16::MAX, NonZeroU16::get),
        max_packet_size: props.maximum_packet_size.map_or(u32::MAX, NonZeroU32::get),
        will: connect.will.map(|will| WillSpec {
            delay: will.properties.will_delay_interval.unwrap_or(0),
            will: Box::new(will),
        }),
    })
}

/// Who the client is, if `accepted` may connect as it asked: its user name and password
/// checked ([`crate::auth::Auth::connect`]), and its will's topic allowed by the ACL.
/// `Err` is the CONNACK code refusing it.
pub(super) async fn admit(
    broker: &Broker,
    accepted: &Accepted,
    (username, password): (Option<ByteString>, Option<Bytes>),
    peer: SocketAddr,
) -> Result<Identity, ReasonCode> {
    let identity = broker
        .auth()
        .connect(
            username.as_deref(),
            password.as_deref(),
            &accepted.client_id,
            peer.ip(),
        )
        .await
        .map_err(|refusal| refusal.reason_code(accepted.version))?;
    if let Some(will) = &accepted.will {
        let name = TopicName::parse(&will.will.topic, broker.config().max_topic_levels)
            .map_err(|_| ReasonCode::TopicNameInvalid)?;
        if !broker.acl().allows(&identity, Access::Publish(name)) {
            return Err(ReasonCode::NotAuthorized);
        }
    }
    Ok(identity)
}

/// The CONNACK for an accepted connection.
pub(super) fn connack(broker: &Broker, a: &Accepted, session_present: bool) -> ConnAck {
    let cfg = broker.config();
    let properties = if a.version == Version::V5 {
        Properties {
            session_expiry_interval: a.expiry_changed.then_some(a.expiry),
            receive_maximum: NonZeroU16::new(cfg.receive_maximum),
            maximum_packet_size: NonZeroU32::new(cfg.max_packet_size),
            topic_alias_maximum: (cfg.topic_alias_maximum != 0).then_some(cfg.topic_alias_maximum),
            assigned_client_identifier: a.assigned.then(|| a.client_id.clone()),
            server_keep_alive: a.keep_alive_changed.then_some(a.keep_alive),
            ..Properties::default()
        }
    } else {
        Properties::default()
    };
    ConnAck {
        session_present,
        reason_code: ReasonCode::Success,
        properties,
    }
}

/// The CONNACK refusing a connection.
pub(super) fn refused(code: ReasonCode) -> ConnAck {
    ConnAck {
        session_present: false,
        reason_code: code,
        properties: Properties::default(),
    }
}

/// How long without a packet closes the connection: one and a half times the keep alive
/// (§3.1.2.10); `None` when keep alive is off.
pub(super) fn keep_alive_limit(keep_alive: u16) -> Option<Duration> {
    (keep_alive != 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claimed_level_is_read_past_a_multi_byte_length() {
        let mut connect = vec![0x10, 0x80, 0x01, 0x00, 0x04];
        connect.extend_from_slice(b"MQTT");
        connect.push(5);
        assert_eq!(claimed_level(&connect), Some(5));
        assert_eq!(claimed_level(&connect[..8]), None);
        assert_eq!(
            claimed_level(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4]),
            Some(4)
        );
    }

    #[test]
    fn keep_alive_closes_at_one_and_a_half_times() {
        assert_eq!(keep_alive_limit(0), None);
        assert_eq!(keep_alive_limit(2), Some(Duration::from_secs(3)));
    }
}
