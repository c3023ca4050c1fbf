//! The broker fed random packet streams (valid packets of every type, mutated ones, noise)
//! after a valid CONNECT, from clients that share a few client identifiers (so sessions are
//! resumed and taken over as they go). After every case two bystanders must still exchange
//! a QoS 1 message, and once the fuzzing clients have gone the broker must count exactly the
//! bystanders as connected: a connection task that panicked or hung would leave its count
//! behind.

use mqtt::codec::{Packet, QoS, Version};
use rand::Rng;
use testkit::fuzz::Fuzz;

use crate::codec_fuzz::{input, version};
use crate::harness::{Node, Raw, connect, publish, subscribe};

#[tokio::test]
async fn broker_fuzz_random_packet_streams() {
    let node = Node::start("max_packet_size = 4096\nreceive_maximum = 4").await;
    let mut watcher = node.client(Version::V5, "bystander-sub").await;
    watcher
        .subscribe(subscribe(1, "bystander/#", QoS::AtLeastOnce))
        .await;
    let mut talker = node.client(Version::V311, "bystander-pub").await;
    let mut fuzz = Fuzz::from_env("broker_fuzz_random_packet_streams");
    let mut rng = fuzz.rng();
    let mut open: Vec<Raw> = Vec::new();
    while fuzz.next_case() {
        let version = version(&mut rng);
        let mut hello = connect(version, &format!("fuzz-{}", rng.random_range(0..4)));
        hello.clean_start = rng.random();
        hello.keep_alive = rng.random_range(0..3);
        let mut c = Raw::open(node.addr, version).await;
        c.send(&Packet::Connect(Box::new(hello))).await;
        let bytes = input(&mut rng, version, 6);
        c.send_bytes(&bytes).await;
        open.push(c);
        if open.len() > 3 || rng.random_bool(0.5) {
            let at = rng.random_range(0..open.len());
            drop(open.swap_remove(at));
        }
        let id = u16::try_from(fuzz.cases % 60_000).expect("fits") + 1;
        talker
            .publish(publish("bystander/t", "alive", QoS::AtLeastOnce, id))
            .await;
        let got = watcher.recv_publish().await;
        assert_eq!(&got.payload[..], b"alive", "{}: after {bytes:?}", fuzz.at());
    }
    drop(open);
    testkit::wait_until(
        "the fuzzing clients are gone",
        testkit::PATIENCE,
        || async { node.broker.stats().snapshot().connections == 2 },
    )
    .await;
    node.stop().await;
}
