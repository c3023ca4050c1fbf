//! The cluster route table over a real Redis: two or three nodes in one process, each with
//! its own backplane connection under one prefix, as separate lintas processes would have.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backplane::{Backplane, BackplaneConfig};
use mqtt::cluster::{NodeId, RouteTable};
use mqtt::topic::{SubscriptionTarget, TopicName};
use testkit::{PATIENCE, TempDir, wait_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The database the gap test selects, so it can find its own subscribing connections in
/// `CLIENT LIST`; no other test uses it.
const KILL_DB: u8 = 10;

pub(crate) fn redis_url() -> String {
    std::env::var("LINTAS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// How long the nodes here keep a dead node's routes.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// A cluster of nodes under a prefix of its own.
pub(crate) struct Cluster {
    cfg: BackplaneConfig,
    dir: TempDir,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Cluster {
    pub(crate) fn new(url: &str, tag: &str) -> Self {
        Self {
            cfg: BackplaneConfig {
                redis: url.to_owned(),
                password_env: None,
                tls_ca_file: None,
                prefix: format!(
                    "lintas-test-{tag}-{}-{}",
                    std::process::id(),
                    rand::random::<u32>()
                ),
                lease: Duration::from_millis(900),
            },
            dir: TempDir::new(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// The Redis key prefix of this cluster.
    pub(crate) fn prefix(&self) -> &str {
        &self.cfg.prefix
    }

    pub(crate) async fn backplane(&self) -> Arc<dyn Backplane> {
        backplane::open(Some(&self.cfg), self.dir.path())
            .await
            .expect("Redis is reachable")
    }

    async fn node(&self, name: &str) -> Arc<RouteTable> {
        RouteTable::start(
            self.backplane().await,
            (name.into(), GRACE),
            &self.tasks,
            self.stop.clone(),
        )
        .await
        .expect("the route table starts")
    }
}

fn target(s: &str) -> SubscriptionTarget {
    SubscriptionTarget::parse(s, 32).expect("a valid filter")
}

/// The other nodes `table` would forward a message on `topic` to (plain subscriptions).
fn nodes(table: &RouteTable, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    let name = TopicName::parse(topic, 32).expect("a valid name");
    table.matching(name, |n| out.push(n.to_string()), |_, _| {});
    out.sort();
    out
}

/// The shared groups `topic` matches, with their remote members.
fn groups(table: &RouteTable, topic: &str) -> Vec<(String, Vec<(NodeId, u32)>)> {
    let mut out = Vec::new();
    let name = TopicName::parse(topic, 32).expect("a valid name");
    table.matching(
        name,
        |_| {},
        |g, members| out.push((g.to_owned(), members.to_vec())),
    );
    out
}

async fn wait_for_nodes(table: &RouteTable, topic: &str, want: &[&str]) {
    wait_until(
        &format!("{topic} to route to {want:?}"),
        PATIENCE,
        || async { nodes(table, topic) == want },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_reaches_the_other_nodes_and_leaves_with_its_last_subscriber() {
    let cluster = Cluster::new(&redis_url(), "routes");
    let (a, b) = (cluster.node("a").await, cluster.node("b").await);
    a.add(&target("sensors/+/temp")).await.unwrap();
    a.add(&target("sensors/+/temp")).await.unwrap();
    b.add(&target("sensors/#")).await.unwrap();
    wait_for_nodes(&b, "sensors/1/temp", &["a"]).await;
    wait_for_nodes(&a, "sensors/1/temp", &["b"]).await;
    assert_eq!(nodes(&b, "sensors/1/hum"), Vec::<String>::new());
    assert_eq!(nodes(&b, "$SYS/sensors/1/temp"), Vec::<String>::new());
    // One of two sessions unsubscribes: still routed; the second: gone.
    a.remove(&target("sensors/+/temp")).await.unwrap();
    b.add(&target("other")).await.unwrap();
    wait_for_nodes(&a, "other", &["b"]).await;
    assert_eq!(nodes(&b, "sensors/1/temp"), ["a"]);
    a.remove(&target("sensors/+/temp")).await.unwrap();
    wait_for_nodes(&b, "sensors/1/temp", &[]).await;
    // A node started later reads what is already there.
    let c = cluster.node("c").await;
    assert_eq!(nodes(&c, "sensors/9/temp"), ["b"]);
    cluster.stop.cancel();
    cluster.tasks.close();
    cluster.tasks.wait().await;
    let left = cluster.backplane().await.scan("mqtt:node:").await.unwrap();
    assert_eq!(left, Vec::new(), "a clean shutdown says the nodes are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_is_split_across_nodes_in_proportion_to_members() {
    let cluster = Cluster::new(&redis_url(), "shared");
    let (a, b, c) = (
        cluster.node("a").await,
        cluster.node("b").await,
        cluster.node("c").await,
    );
    let jobs = target("$share/workers/jobs/#");
    a.add(&jobs).await.unwrap();
    for _ in 0..3 {
        c.add(&jobs).await.unwrap();
    }
    wait_until("b to see both nodes' members", PATIENCE, || async {
        groups(&b, "jobs/1")
            .first()
            .is_some_and(|(_, m)| m.iter().map(|(_, n)| n).sum::<u32>() == 4)
    })
    .await;
    let (group, members) = groups(&b, "jobs/1").remove(0);
    assert_eq!(group, "$share/workers/jobs/#");
    let mut picked: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..400 {
        let node = b.pick_node(&group, &members, 2).expect("members exist");
        *picked.entry(node.to_string()).or_default() += 1;
    }
    let want: BTreeMap<String, u32> =
        [("a".into(), 67), ("b".into(), 134), ("c".into(), 199)].into();
    // 400 turns over 6 members: 66 full rounds (a 1, b 2, c 3), then a, b, b, c.
    assert_eq!(picked, want);
    assert_eq!(b.pick_node("$share/none/x", &[], 0), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_of_a_node_that_stopped_renewing_are_dropped_and_come_back_with_it() {
    let cluster = Cluster::new(&redis_url(), "liveness");
    let (a, b) = (cluster.node("a").await, cluster.node("b").await);
    a.add(&target("t/#")).await.unwrap();
    wait_for_nodes(&b, "t/1", &["a"]).await;
    // As if a's key expired while it could not reach Redis: its routes are kept for the
    // grace, and a renews, finds its key gone, and announces its routes again.
    let bp = cluster.backplane().await;
    assert!(bp.delete("mqtt:node:a").await.unwrap());
    b.sync().await.unwrap();
    assert_eq!(nodes(&b, "t/1"), ["a"], "kept during the grace");
    wait_until("a to renew its key", PATIENCE, || async {
        bp.get("mqtt:node:a").await.unwrap().is_some()
    })
    .await;
    assert_eq!(
        bp.get("mqtt:routes:a:t/#").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    // A node that never comes back (routes without a liveness key): once the grace (2 s
    // here) has passed, an orphan whose sessions the broker adopts; its routes are kept
    // until then, and dropped and deleted after.
    bp.set("mqtt:routes:z:z/#", "1".into(), None).await.unwrap();
    b.sync().await.unwrap();
    assert_eq!(nodes(&b, "z/1"), ["z"]);
    assert!(b.orphans().is_empty(), "in its grace");
    wait_until("z to be an orphan", PATIENCE, || async {
        b.sync().await.unwrap();
        !b.orphans().is_empty()
    })
    .await;
    assert_eq!(b.orphans(), [NodeId::from("z")]);
    assert_eq!(nodes(&b, "z/1"), ["z"], "kept until adopted");
    b.adopted(&NodeId::from("z"));
    b.sync().await.unwrap();
    assert!(nodes(&b, "z/1").is_empty());
    assert_eq!(bp.get("mqtt:routes:z:z/#").await.unwrap(), None, "deleted");
    assert_eq!(nodes(&b, "t/1"), ["a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_missed_while_the_channel_was_down_is_read_after_it() {
    let url = format!("{}/{KILL_DB}", redis_url().trim_end_matches('/'));
    let cluster = Cluster::new(&url, "gap");
    let (a, b) = (cluster.node("a").await, cluster.node("b").await);
    let mut admin = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    let ours = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == format!("db={KILL_DB}")))
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")));
    let mut killed = 0;
    for id in ours {
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut admin)
            .await
            .unwrap();
        killed += n;
    }
    assert_eq!(killed, 2, "both nodes' subscribing connections");
    // Announced while b's subscribing connection is being remade: the message may be lost,
    // the route must not be.
    a.add(&target("late/+")).await.unwrap();
    wait_for_nodes(&b, "late/x", &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_the_keys_could_not_be_read_back_with_is_refused() {
    let cluster = Cluster::new(&redis_url(), "names");
    for name in ["", "a:b", "a\tb"] {
        let started = RouteTable::start(
            cluster.backplane().await,
            (name.into(), GRACE),
            &cluster.tasks,
            cluster.stop.clone(),
        )
        .await;
        assert!(
            matches!(started, Err(mqtt::cluster::RouteError::NodeName(ref n)) if n == name),
            "{name:?}: {started:?}"
        );
    }
}
