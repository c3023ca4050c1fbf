//! The broker as a lintas service: bound, served, published about and managed like the
//! others.
//!
//! `start` binds every listener ([`crate::listener`]: `listen`, and `tls_listen`,
//! `ws_listen`, `wss_listen` when set) on every worker thread, so a port already taken is
//! an error naming its key, serves each connection as a task on the node's tracker, registers
//! the `lintas_mqtt_*` metrics and starts the `$SYS` publisher. On shutdown the accept loops
//! stop and every connection says goodbye (5.0: DISCONNECT 0x8B). Nothing in `[mqtt]` can
//! change while running yet, so a reload reports the section as needing a restart when it
//! differs. Admin routes: `GET /api/mqtt` (listen address and counters) and
//! `GET /api/mqtt/clients` (the connected clients).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use configkit::KeyPath;
use serde::Serialize;
use service::{Deps, StartError};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, ClientInfo};
use crate::cluster::Cluster;
use crate::codec::QoS;
use crate::config::MqttConfig;
use crate::message::Message;
use crate::stats::Snapshot;
use backplane::Kind;

/// What a reload of `[mqtt]` did: nothing yet (every setting needs a restart).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reloaded {}

impl service::Service for Broker {
    type Config = MqttConfig;
    type Changes = Reloaded;
    const SECTION: &'static str = "mqtt";

    async fn start(
        cfg: &MqttConfig,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let at = KeyPath::root(Self::SECTION);
        let bound = crate::listener::bind(cfg, &deps, &at)?;
        let access = cfg.auth().build(&at).map_err(|issues| {
            let first = issues.0.into_iter().next();
            first.map_or_else(
                || StartError::new(at.clone(), "invalid authentication settings"),
                |issue| StartError::new(issue.path, issue.message),
            )
        })?;
        let (cluster, blame) = match deps.backplane.kind() {
            Kind::Redis => {
                let started = Cluster::start(
                    deps.backplane.clone(),
                    (deps.node.clone(), cfg.dead_node_grace),
                    &deps.tasks,
                    shutdown.clone(),
                )
                .await;
                let blame = KeyPath::root("backplane").key("redis");
                let started = started.map_err(|e| StartError::new(blame.clone(), e.to_string()))?;
                (started, blame)
            }
            Kind::Embedded => {
                let started = Cluster::alone(
                    deps.backplane.clone(),
                    deps.node.clone(),
                    &deps.tasks,
                    shutdown.clone(),
                )
                .await;
                let blame = KeyPath::root("data_dir");
                let started = started.map_err(|e| StartError::new(blame.clone(), e.to_string()))?;
                (started, blame)
            }
        };
        let broker = Arc::new(Broker::new(
            cfg.clone(),
            access,
            bound.iter().map(|b| (b.key, b.addr)).collect(),
            Some(cluster),
            (deps.tasks.clone(), shutdown.clone()),
        ));
        broker
            .join()
            .await
            .map_err(|e| StartError::new(blame, e.to_string()))?;
        crate::stats::register(&deps.metrics, &broker);
        crate::listener::serve(&broker, bound, &deps, &shutdown);
        if !cfg.sys_interval.is_zero() {
            deps.tasks.spawn(publish_sys(broker.clone()));
        }
        Ok(broker)
    }

    async fn reload(self: &Arc<Self>, _cfg: &MqttConfig) -> Result<Reloaded, StartError> {
        Ok(Reloaded {})
    }

    fn restart_needed(&self, cfg: &MqttConfig) -> Vec<KeyPath> {
        service::whole_section_if_changed(self.config(), cfg, Self::SECTION)
    }

    fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/mqtt", get(overview))
            .route("/api/mqtt/clients", get(clients))
            .with_state(self.clone())
    }
}

/// `GET /api/mqtt`.
#[derive(Debug, Serialize)]
struct Overview {
    listen: std::net::SocketAddr,
    subscriptions: usize,
    retained: usize,
    #[serde(flatten)]
    stats: Snapshot,
}

async fn overview(State(broker): State<Arc<Broker>>) -> axum::Json<Overview> {
    let (subscriptions, retained) = broker.index_sizes();
    axum::Json(Overview {
        listen: broker.local_addr(),
        subscriptions,
        retained,
        stats: broker.stats().snapshot(),
    })
}

async fn clients(State(broker): State<Arc<Broker>>) -> axum::Json<Vec<ClientInfo>> {
    axum::Json(broker.clients())
}

/// Publishes the `$SYS/broker/...` topics every `sys_interval`, retained, under Mosquitto's
/// names.
async fn publish_sys(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config().sys_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = broker.shutdown().clone();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let s = broker.stats().snapshot();
        let (subscriptions, retained) = broker.index_sizes();
        let values = [
            ("clients/connected", s.connections),
            ("messages/received", s.received.iter().sum()),
            ("messages/sent", s.sent.iter().sum()),
            ("subscriptions/count", subscriptions as u64),
            ("retained messages/count", retained as u64),
        ];
        for (topic, value) in values {
            sys(&broker, topic, value.to_string());
        }
        sys(
            &broker,
            "uptime",
            format!("{} seconds", broker.uptime().as_secs()),
        );
    }
}

fn sys(broker: &Broker, topic: &str, value: String) {
    let message = Message::new(
        format!("$SYS/broker/{topic}").into(),
        Bytes::from(value),
        QoS::AtMostOnce,
        true,
    );
    broker.publish(&message, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use service::Service;
    use tokio_util::task::TaskTracker;

    #[test]
    fn any_change_to_the_section_needs_a_restart() {
        let cfg = MqttConfig::default();
        let broker = Broker::new(
            cfg.clone(),
            crate::auth::tests::open(),
            vec![("listen", cfg.listen)],
            None,
            (TaskTracker::new(), CancellationToken::new()),
        );
        assert!(broker.restart_needed(&cfg).is_empty());
        let changed = MqttConfig {
            max_queued: 5,
            ..cfg
        };
        assert_eq!(broker.restart_needed(&changed), [KeyPath::root("mqtt")]);
    }
}
