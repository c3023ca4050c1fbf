//! A tiny authoritative DNS server on 127.0.0.1 (UDP) whose answers the test sets.
//!
//! It answers A and AAAA queries for the names it was given, with the TTL it was given;
//! other names get NXDOMAIN, other types an empty answer. [`DnsServer::set`] changes a
//! name's addresses and [`DnsServer::mute`] makes it stop answering (queries are read and
//! dropped, as from a server that went away), so a test drives a resolver through changes
//! and outages. It counts the queries it answered, so a test can wait for the next one.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// Names (lower case, without the trailing dot) to their addresses and TTL in seconds.
type Zone = BTreeMap<String, (Vec<IpAddr>, u32)>;

/// What the server task shares with the test.
#[derive(Debug, Default)]
struct Shared {
    zone: Mutex<Zone>,
    muted: AtomicBool,
    answered: AtomicU64,
}

/// The server; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Starts answering on an ephemeral UDP port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(serve(socket, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// Where it listens (give it as the resolver's name server).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on `name` resolves to `addrs` with `ttl` seconds; no addresses is NXDOMAIN.
    pub fn set(&self, name: &str, addrs: &[IpAddr], ttl: u32) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = self.shared.zone.lock().unwrap_or_else(|e| e.into_inner());
        if addrs.is_empty() {
            zone.remove(&key);
        } else {
            zone.insert(key, (addrs.to_vec(), ttl));
        }
    }

    /// Stops answering (`true`) or answers again (`false`).
    pub fn mute(&self, muted: bool) {
        self.shared.muted.store(muted, Ordering::SeqCst);
    }

    /// Queries answered so far.
    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        if shared.muted.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let reply = answer(
            &query,
            &shared.zone.lock().unwrap_or_else(|e| e.into_inner()),
        );
        if let Ok(bytes) = reply.to_vec()
            && socket.send_to(&bytes, peer).await.is_ok()
        {
            shared.answered.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn answer(query: &Message, zone: &Zone) -> Message {
    let mut reply = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.add_queries(query.queries.iter().cloned());
    for q in &query.queries {
        let name: &Name = q.name();
        let key = name.to_string().trim_end_matches('.').to_ascii_lowercase();
        let Some((addrs, ttl)) = zone.get(&key) else {
            reply.metadata.response_code = ResponseCode::NXDomain;
            continue;
        };
        for ip in addrs {
            let rdata = match (q.query_type(), ip) {
                (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            reply.add_answer(Record::from_rdata(name.clone(), *ttl, rdata));
        }
    }
    reply
}
