//! rumqttc's 3.1.1 and 5.0 clients against the broker: every message of every QoS arrives
//! exactly once, in order, whichever client library speaks to it.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::harness::Node;

/// Messages per QoS.
const N: usize = 200;

/// One test per rumqttc client version: the two APIs are the same but for their types.
macro_rules! every_message_once_in_order {
    ($test:ident, $client:ty, $options:ty, $event:ty, $packet:ty, $qos:ty) => {
        #[tokio::test]
        async fn $test() {
            type Event = $event;
            type Packet = $packet;
            type QoS = $qos;
            let node = Node::start("").await;
            let options = |id: &str| {
                let mut o = <$options>::new(id, "127.0.0.1", node.addr.port());
                o.set_keep_alive(Duration::from_secs(30));
                o
            };
            let (sub, mut sub_loop) = <$client>::new(options("sub"), 100);
            let (got_tx, mut got) = mpsc::unbounded_channel();
            let (subacked_tx, mut subacked) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok(event) = sub_loop.poll().await {
                    match event {
                        Event::Incoming(Packet::Publish(p)) => {
                            drop(got_tx.send((p.qos as u8, p.payload)))
                        }
                        Event::Incoming(Packet::SubAck(_)) => drop(subacked_tx.send(())),
                        _ => {}
                    }
                }
            });
            let (publisher, mut pub_loop) = <$client>::new(options("pub"), 100);
            tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
            let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
            for (i, qos) in levels.into_iter().enumerate() {
                let topic = format!("rumqttc/{i}");
                sub.subscribe(&topic, qos).await.expect("subscribe queued");
                subacked.recv().await.expect("SUBACK");
                for n in 0..N {
                    publisher
                        .publish(&topic, qos, false, n.to_string())
                        .await
                        .expect("publish queued");
                }
            }
            expect_all(&mut got).await;
            node.stop().await;
        }
    };
}

every_message_once_in_order!(
    rumqttc_3_1_1_clients_get_every_message_once_in_order,
    rumqttc::AsyncClient,
    rumqttc::MqttOptions,
    rumqttc::Event,
    rumqttc::Packet,
    rumqttc::QoS
);

every_message_once_in_order!(
    rumqttc_5_0_clients_get_every_message_once_in_order,
    rumqttc::v5::AsyncClient,
    rumqttc::v5::MqttOptions,
    rumqttc::v5::Event,
    rumqttc::v5::mqttbytes::v5::Packet,
    rumqttc::v5::mqttbytes::QoS
);

/// Reads `N` messages of each QoS, in order, and nothing else.
async fn expect_all(got: &mut mpsc::UnboundedReceiver<(u8, bytes::Bytes)>) {
    for qos in 0..3u8 {
        for n in 0..N {
            let (q, payload) = tokio::time::timeout(testkit::PATIENCE, got.recv())
                .await
                .expect("messages keep coming")
                .expect("the subscriber runs");
            assert_eq!(
                (q, &payload[..]),
                (qos, n.to_string().as_bytes()),
                "QoS {qos} #{n}"
            );
        }
    }
    assert!(got.try_recv().is_err(), "no message twice");
}
