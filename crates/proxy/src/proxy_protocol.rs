//! PROXY protocol headers sent to backends, so they see the client's address.
//!
//! Encoding is left to the `ppp` crate; this module only maps lintas's setting to it.

use std::net::SocketAddr;

use crate::config::ProxyProtocol;

/// The header announcing a connection from `client` to `local` (the listener's address).
///
/// Mixed families (IPv4 client on an IPv6 listener) are sent with both addresses in the
/// client's family, mapping the listener address, as the spec requires one family per header.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let local = same_family(client, local);
    match version {
        ProxyProtocol::V1 => ppp::v1::Addresses::from((client, local))
            .to_string()
            .into_bytes(),
        ProxyProtocol::V2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (client, local),
        )
        .build()
        .unwrap_or_default(),
    }
}

fn same_family(client: SocketAddr, local: SocketAddr) -> SocketAddr {
    match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V6(l)) => match l.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(ip.into(), l.port()),
            None => SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), l.port()),
        },
        (SocketAddr::V6(_), SocketAddr::V4(l)) => {
            SocketAddr::new(l.ip().to_ipv6_mapped().into(), l.port())
        }
        _ => local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_the_text_line() {
        let h = header(
            ProxyProtocol::V1,
            "192.0.2.1:5000".parse().unwrap(),
            "127.0.0.1:1883".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 127.0.0.1 5000 1883\r\n");
    }

    #[test]
    fn v2_is_the_binary_header() {
        let h = header(
            ProxyProtocol::V2,
            "192.0.2.1:5000".parse().unwrap(),
            "127.0.0.1:1883".parse().unwrap(),
        );
        let mut want = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        want.extend([
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 127, 0, 0, 1, 0x13, 0x88, 0x07, 0x5b,
        ]);
        assert_eq!(h, want);
    }
}
