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
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rand::Rng;
    use rand::rngs::StdRng;
    use testkit::fuzz::Fuzz;
    use testkit::fuzz::http1::pick;

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

    /// An address of either family, often one of the edge cases (unspecified, loopback,
    /// all-ones, IPv4-mapped) and with edge ports.
    fn address(rng: &mut StdRng) -> SocketAddr {
        let v4 = |rng: &mut StdRng| -> Ipv4Addr {
            let any = rng.random::<u32>().into();
            *pick(
                rng,
                &[
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::LOCALHOST,
                    Ipv4Addr::BROADCAST,
                    any,
                ],
            )
        };
        let ip: IpAddr = match rng.random_range(0..5) {
            0 | 1 => v4(rng).into(),
            2 => v4(rng).to_ipv6_mapped().into(),
            3 => Ipv6Addr::from(rng.random::<u128>()).into(),
            _ => (*pick(rng, &[Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST])).into(),
        };
        let any = rng.random();
        let port = *pick(rng, &[0, 1, 65_535, any]);
        SocketAddr::new(ip, port)
    }

    /// The header written from the HAProxy spec by hand: both addresses in the client's
    /// family (the listener's mapped, or unspecified when it cannot be).
    fn by_the_spec(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
        let local_ip: IpAddr = match (client.ip(), local.ip()) {
            (IpAddr::V4(_), IpAddr::V6(l)) => {
                l.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED).into()
            }
            (IpAddr::V6(_), IpAddr::V4(l)) => l.to_ipv6_mapped().into(),
            (_, l) => l,
        };
        let family = if client.is_ipv4() { "4" } else { "6" };
        match version {
            ProxyProtocol::V1 => format!(
                "PROXY TCP{family} {} {local_ip} {} {}\r\n",
                client.ip(),
                client.port(),
                local.port()
            )
            .into_bytes(),
            ProxyProtocol::V2 => {
                let octets = |ip: IpAddr| match ip {
                    IpAddr::V4(ip) => ip.octets().to_vec(),
                    IpAddr::V6(ip) => ip.octets().to_vec(),
                };
                let mut addresses = octets(client.ip());
                addresses.extend(octets(local_ip));
                addresses.extend(client.port().to_be_bytes());
                addresses.extend(local.port().to_be_bytes());
                let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
                out.extend([0x21, if client.is_ipv4() { 0x11 } else { 0x21 }]);
                out.extend((addresses.len() as u16).to_be_bytes());
                out.extend(addresses);
                out
            }
        }
    }

    /// Fuzz target: random address pairs, both versions. The header is the spec's byte for
    /// byte, and `ppp` reads back exactly the addresses, consuming exactly the header when
    /// the connection's first bytes follow it.
    #[test]
    fn headers_match_the_spec_and_read_back_through_ppp() {
        let mut fuzz = Fuzz::from_env("proxy protocol");
        let mut rng = fuzz.rng();
        while fuzz.next_case() {
            let (client, local) = (address(&mut rng), address(&mut rng));
            for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
                let h = header(version, client, local);
                let at = || {
                    format!(
                        "{}: {version:?} {client} -> {local}: {}",
                        fuzz.at(),
                        h.escape_ascii()
                    )
                };
                assert_eq!(h, by_the_spec(version, client, local), "{}", at());
                let mut stream = h.clone();
                stream.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
                let local_ip = same_family(client, local).ip();
                match version {
                    ProxyProtocol::V1 => {
                        assert!(h.len() <= 107, "{}", at());
                        let read = ppp::v1::Header::try_from(&stream[..])
                            .unwrap_or_else(|e| panic!("{}: {e}", at()));
                        assert_eq!(read.header.len(), h.len(), "{}", at());
                        let want = match (client.ip(), local_ip) {
                            (IpAddr::V4(c), IpAddr::V4(l)) => {
                                ppp::v1::Addresses::new_tcp4(c, l, client.port(), local.port())
                            }
                            (IpAddr::V6(c), IpAddr::V6(l)) => {
                                ppp::v1::Addresses::new_tcp6(c, l, client.port(), local.port())
                            }
                            _ => panic!("{}: mixed families", at()),
                        };
                        assert_eq!(read.addresses, want, "{}", at());
                    }
                    ProxyProtocol::V2 => {
                        let read = ppp::v2::Header::try_from(&stream[..])
                            .unwrap_or_else(|e| panic!("{}: {e}", at()));
                        assert_eq!(read.header.len(), h.len(), "{}", at());
                        assert_eq!(read.command, ppp::v2::Command::Proxy, "{}", at());
                        assert_eq!(read.protocol, ppp::v2::Protocol::Stream, "{}", at());
                        let want: ppp::v2::Addresses = match (client.ip(), local_ip) {
                            (IpAddr::V4(c), IpAddr::V4(l)) => {
                                ppp::v2::IPv4::new(c, l, client.port(), local.port()).into()
                            }
                            (IpAddr::V6(c), IpAddr::V6(l)) => {
                                ppp::v2::IPv6::new(c, l, client.port(), local.port()).into()
                            }
                            _ => panic!("{}: mixed families", at()),
                        };
                        assert_eq!(read.addresses, want, "{}", at());
                    }
                }
            }
        }
    }
}
