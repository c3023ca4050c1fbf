//! Who may connect and what they may do, through the broker: user names and passwords,
//! anonymous clients, the ACL's answers on CONNECT (the will), SUBSCRIBE and PUBLISH in
//! each version, and `$SYS`, which no client may publish to.

use bytes::Bytes;
use mqtt::codec::{Connect, QoS, ReasonCode, Version, Will};

use crate::harness::{Node, Raw, connect, publish, subscribe};

/// A cheap argon2id hash of "pw" (64 KiB, one pass), so the tests do not wait for argon2.
const PW_HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$Hgsbc6FDwl/qbUWxDrr+ZjetYYKE+7fDe5btmNdDfm0";

/// Two users; alice may read and write her branch, everyone may read `public/#`, and
/// nobody may touch `public/secret/#`.
fn section(anonymous: bool) -> String {
    format!(
        "allow_anonymous = {anonymous}\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{PW_HASH}\"\n\
         [[users]]\nname = \"bob\"\npassword_hash = \"{PW_HASH}\"\n\
         [[acl]]\nuser = \"alice\"\ntopic = \"alice/#\"\naccess = \"readwrite\"\n\
         [[acl]]\ntopic = \"public/#\"\naccess = \"read\"\n\
         [[acl]]\nuser = \"alice\"\ntopic = \"public/#\"\naccess = \"write\"\n\
         [[acl]]\ntopic = \"public/secret/#\"\naccess = \"deny\"\n"
    )
}

fn login(version: Version, id: &str, user: Option<&str>, password: Option<&str>) -> Connect {
    let mut c = connect(version, id);
    c.username = user.map(Into::into);
    c.password = password.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    c
}

async fn refused_with(node: &Node, c: Connect) -> ReasonCode {
    let (mut raw, ack) = node.raw(c).await;
    if ack.reason_code != ReasonCode::Success {
        assert!(raw.closed().await.is_empty(), "closed after the refusal");
    }
    ack.reason_code
}

#[tokio::test]
async fn only_declared_users_with_their_password_connect_and_anonymous_needs_allowing() {
    let node = Node::start(&section(false)).await;
    for (version, bad, anonymous) in [
        (
            Version::V5,
            ReasonCode::BadUserNameOrPassword,
            ReasonCode::NotAuthorized,
        ),
        // 3.1.1's codes 0x04 and 0x05, read back as the 5.0 codes they map to.
        (
            Version::V311,
            ReasonCode::BadUserNameOrPassword,
            ReasonCode::NotAuthorized,
        ),
    ] {
        let cases = [
            (None, None, anonymous),
            (Some("alice"), Some("nope"), bad),
            (Some("mallory"), Some("pw"), bad),
            (Some("alice"), None, bad),
            (Some("alice"), Some("pw"), ReasonCode::Success),
        ];
        for (i, (user, password, want)) in cases.into_iter().enumerate() {
            let c = login(version, &format!("c{i}"), user, password);
            assert_eq!(
                refused_with(&node, c).await,
                want,
                "{version:?} user {user:?} password {password:?}"
            );
        }
    }
    node.stop().await;
    let open = Node::start(&section(true)).await;
    assert_eq!(
        refused_with(&open, login(Version::V5, "anon", None, None)).await,
        ReasonCode::Success
    );
    assert_eq!(
        refused_with(&open, login(Version::V5, "m", Some("mallory"), Some("pw"))).await,
        ReasonCode::BadUserNameOrPassword,
        "an unknown name is refused even when anonymous clients are allowed"
    );
    open.stop().await;
}

#[tokio::test]
async fn a_will_to_a_topic_the_client_may_not_publish_to_refuses_the_connect() {
    let node = Node::start(&section(false)).await;
    for version in [Version::V5, Version::V311] {
        let mut c = login(version, "w", Some("bob"), Some("pw"));
        c.will = Some(Will {
            properties: Default::default(),
            topic: "alice/status".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
        });
        assert_eq!(refused_with(&node, c).await, ReasonCode::NotAuthorized);
    }
    node.stop().await;
}

#[tokio::test]
async fn no_client_may_publish_to_sys_and_monitoring_never_sees_it() {
    // No rules at all: a connected client may do anything else.
    let node = Node::start("").await;
    let mut monitor = node.client(Version::V5, "monitor").await;
    let mut probe = subscribe(1, "$SYS/#", QoS::AtLeastOnce);
    probe
        .filters
        .push(subscribe(1, "probe", QoS::AtLeastOnce).filters.remove(0));
    assert_eq!(
        monitor.subscribe(probe.clone()).await,
        [ReasonCode::GrantedQos1, ReasonCode::GrantedQos1]
    );
    for (version, refused) in [
        (Version::V5, ReasonCode::NotAuthorized),
        // 3.1.1 cannot say it: acknowledged as usual, as Mosquitto does.
        (Version::V311, ReasonCode::Success),
    ] {
        let mut forger = node.client(version, &format!("forger-{version:?}")).await;
        for (qos, id) in [
            (QoS::AtMostOnce, 0),
            (QoS::AtLeastOnce, 1),
            (QoS::ExactlyOnce, 2),
        ] {
            let mut p = publish("$SYS/broker/clients/connected", "0", qos, id);
            p.retain = true;
            let want = if qos == QoS::AtMostOnce {
                ReasonCode::Success
            } else {
                refused
            };
            assert_eq!(forger.publish(p).await, want, "{version:?} {qos:?}");
        }
        // The forger's next message is the monitor's next: the forged ones never came.
        forger
            .publish(publish("probe", "after", QoS::AtLeastOnce, 3))
            .await;
        assert_eq!(&monitor.recv_publish().await.topic[..], "probe");
        let mut will = connect(version, &format!("will-{version:?}"));
        will.will = Some(Will {
            properties: Default::default(),
            topic: "$SYS/broker/uptime".into(),
            payload: Bytes::from_static(b"forged"),
            qos: QoS::AtMostOnce,
            retain: false,
        });
        assert_eq!(
            refused_with(&node, will).await,
            ReasonCode::NotAuthorized,
            "{version:?}: a will to $SYS, like one the ACL refuses"
        );
    }
    // Nothing was retained: a new subscriber's first message is the probe again.
    let mut late = node.client(Version::V311, "late").await;
    late.subscribe(probe).await;
    let mut forger = node.client(Version::V311, "forger-last").await;
    forger
        .publish(publish("probe", "late", QoS::AtLeastOnce, 1))
        .await;
    assert_eq!(&late.recv_publish().await.topic[..], "probe");
    assert_eq!(node.broker.stats().snapshot().denied, 6);
    node.stop().await;
}

/// alice and bob connected in `version`, and a watcher (alice) subscribed to everything
/// alice may read.
async fn clients(node: &Node, version: Version) -> (Raw, Raw) {
    let (alice, ack) = node
        .raw(login(version, "alice-1", Some("alice"), Some("pw")))
        .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let (bob, ack) = node
        .raw(login(version, "bob-1", Some("bob"), Some("pw")))
        .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    (alice, bob)
}

#[tokio::test]
async fn subscriptions_beyond_the_rules_are_refused_per_filter_in_each_version() {
    let node = Node::start(&section(false)).await;
    for (version, refused) in [
        (Version::V5, ReasonCode::NotAuthorized),
        // 3.1.1's SUBACK says 0x80 for any refusal.
        (Version::V311, ReasonCode::UnspecifiedError),
    ] {
        let (mut alice, mut bob) = clients(&node, version).await;
        let mut s = subscribe(1, "alice/#", QoS::AtLeastOnce);
        for filter in ["public/#", "$share/g/alice/jobs", "public/secret/x"] {
            let mut one = subscribe(1, filter, QoS::AtLeastOnce);
            s.filters.push(one.filters.remove(0));
        }
        assert_eq!(
            alice.subscribe(s).await,
            [
                ReasonCode::GrantedQos1,
                refused,
                ReasonCode::GrantedQos1,
                refused,
            ],
            "{version:?}: public/# overlaps the deny rule; the secret branch is denied"
        );
        assert_eq!(
            bob.subscribe(subscribe(2, "public/news/#", QoS::AtMostOnce))
                .await,
            [ReasonCode::GRANTED_QOS_0]
        );
        assert_eq!(
            bob.subscribe(subscribe(3, "alice/#", QoS::AtMostOnce))
                .await,
            [refused]
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn a_publish_the_rules_refuse_is_dropped_and_said_so_only_in_5_0() {
    let node = Node::start(&section(false)).await;
    for (version, refused) in [
        (Version::V5, ReasonCode::NotAuthorized),
        // 3.1.1 cannot say it: acknowledged as usual, as Mosquitto does.
        (Version::V311, ReasonCode::Success),
    ] {
        let (mut alice, mut bob) = clients(&node, version).await;
        assert_eq!(
            alice
                .subscribe(subscribe(1, "alice/#", QoS::AtLeastOnce))
                .await,
            [ReasonCode::GrantedQos1]
        );
        assert_eq!(
            bob.subscribe(subscribe(1, "public/news/#", QoS::AtLeastOnce))
                .await,
            [ReasonCode::GrantedQos1]
        );
        assert_eq!(
            bob.publish(publish("alice/inbox", "forged", QoS::AtLeastOnce, 7))
                .await,
            refused
        );
        assert_eq!(
            alice
                .publish(publish("public/news", "hello", QoS::AtLeastOnce, 8))
                .await,
            ReasonCode::Success
        );
        // bob sees alice's message; alice never sees bob's: the next thing she gets is
        // her own later message.
        assert_eq!(&bob.recv_publish().await.payload[..], b"hello");
        assert_eq!(
            alice
                .publish(publish("alice/inbox", "mine", QoS::AtLeastOnce, 9))
                .await,
            ReasonCode::Success
        );
        let got = alice.recv_publish().await;
        assert_eq!(
            (&*got.topic, &got.payload[..]),
            ("alice/inbox", &b"mine"[..])
        );
    }
    assert_eq!(
        node.broker.stats().snapshot().denied,
        2,
        "one refused PUBLISH per version"
    );
    node.stop().await;
}
