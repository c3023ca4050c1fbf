//! Retained messages: stored, replaced, cleared by an empty payload, and sent to new
//! subscriptions as their Retain Handling says.

use mqtt::codec::{Publish, QoS, RetainHandling, SubscriptionOptions, Version};

use crate::harness::{Node, publish, subscribe, subscribe_with};

fn retained(topic: &str, payload: &'static str) -> Publish {
    Publish {
        retain: true,
        ..publish(topic, payload, QoS::AtLeastOnce, 1)
    }
}

#[tokio::test]
async fn a_retained_message_is_set_replaced_and_cleared() {
    let node = Node::start("").await;
    let mut publisher = node.client(Version::V311, "pub").await;
    publisher.publish(retained("r/a", "first")).await;
    publisher.publish(retained("r/a", "second")).await;
    publisher.publish(retained("r/b", "other")).await;

    let mut sub = node.client(Version::V311, "sub").await;
    sub.subscribe(subscribe(1, "r/a", QoS::AtMostOnce)).await;
    let got = sub.recv_publish().await;
    assert_eq!(
        (&got.payload[..], got.retain, got.qos),
        (&b"second"[..], true, QoS::AtMostOnce)
    );
    sub.ping().await;

    // Live messages reach a 3.1.1 subscriber without the RETAIN flag.
    publisher.publish(retained("r/a", "live")).await;
    let live = sub.recv_publish().await;
    assert_eq!((&live.payload[..], live.retain), (&b"live"[..], false));

    publisher.publish(retained("r/a", "")).await;
    assert_eq!(
        &sub.recv_publish().await.payload[..],
        b"",
        "the clearing message is routed"
    );
    assert_eq!(node.broker.index_sizes().1, 1);
    let mut late = node.client(Version::V311, "late").await;
    late.subscribe(subscribe(1, "r/#", QoS::AtMostOnce)).await;
    assert_eq!(&late.recv_publish().await.payload[..], b"other");
    late.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn retain_handling_and_retain_as_published_are_honoured() {
    let node = Node::start("").await;
    let mut publisher = node.client(Version::V5, "pub").await;
    publisher.publish(retained("h/t", "kept")).await;
    let mut sub = node.client(Version::V5, "sub").await;
    let opts = |retain_handling, retain_as_published| SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published,
        retain_handling,
    };
    sub.subscribe(subscribe_with(1, "h/t", opts(RetainHandling::Never, false)))
        .await;
    sub.ping().await;
    sub.subscribe(subscribe_with(
        2,
        "h/t",
        opts(RetainHandling::OnNewSubscription, true),
    ))
    .await;
    sub.ping().await;
    sub.subscribe(subscribe_with(
        3,
        "h/+",
        opts(RetainHandling::OnNewSubscription, true),
    ))
    .await;
    assert_eq!(&sub.recv_publish().await.topic[..], "h/t");
    sub.ping().await;
    sub.subscribe(subscribe_with(
        4,
        "h/+",
        opts(RetainHandling::OnSubscribe, true),
    ))
    .await;
    assert!(sub.recv_publish().await.retain);
    sub.ping().await;

    publisher.publish(retained("h/t", "again")).await;
    let live = sub.recv_publish().await;
    assert!(
        live.retain,
        "retain as published keeps the flag on live messages"
    );
    sub.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn shared_subscriptions_get_no_retained_messages() {
    let node = Node::start("").await;
    let mut publisher = node.client(Version::V5, "pub").await;
    publisher.publish(retained("s/t", "kept")).await;
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "$share/g/s/t", QoS::AtLeastOnce))
        .await;
    sub.ping().await;
    node.stop().await;
}

#[tokio::test]
async fn retained_messages_beyond_the_cap_are_refused_and_counted() {
    let node = Node::start("max_retained = 1").await;
    let mut publisher = node.client(Version::V5, "pub").await;
    publisher.publish(retained("c/1", "a")).await;
    publisher.publish(retained("c/2", "b")).await;
    publisher.publish(retained("c/1", "replaced")).await;
    assert_eq!(node.broker.index_sizes().1, 1);
    assert_eq!(node.broker.stats().snapshot().retained_refused, 1);
    let mut sub = node.client(Version::V5, "sub").await;
    sub.subscribe(subscribe(1, "c/#", QoS::AtMostOnce)).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"replaced");
    sub.ping().await;
    node.stop().await;
}
