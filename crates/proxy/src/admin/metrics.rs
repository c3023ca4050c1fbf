//! The proxy's metrics: the same numbers as the stats page, read from the registry at each
//! scrape (the counters already live in the pools and listeners, so nothing is counted
//! twice and a backend removed at run time disappears from the next scrape).
//!
//! Names and label sets are the ones dashboards use: `lintas_backend_*{pool, backend}`,
//! `lintas_pool_available_backends{pool}`, `lintas_pool_dns_failures{pool}`,
//! `lintas_listener_info{listener, mode, address, pool}` and `lintas_listener_*{listener}` (responses also by `class`). Counters are
//! exposed as `<family>_total`, as OpenMetrics names them.

use std::fmt;
use std::sync::Arc;

use admin::metrics::encode_family;
use balance::{BackendSnapshot, Health, QueueSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::registry::{ListenerSnapshot, Registry};

/// Registers the proxy's metrics in the node's registry.
pub fn register(registry: &Arc<Registry>, metrics: &admin::Metrics) {
    metrics.register_collector(ProxyCollector(registry.clone()));
}

/// Reads the registry's snapshots at scrape time.
struct ProxyCollector(Arc<Registry>);

impl fmt::Debug for ProxyCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyCollector")
    }
}

/// Whether a family is a gauge or a counter, and how to read it from a snapshot.
enum Read<T> {
    Gauge(fn(&T) -> i64),
    GaugeFloat(fn(&T) -> f64),
    /// A gauge some items have no value of yet; they get no sample (rather than a made-up 0).
    MaybeGaugeFloat(fn(&T) -> Option<f64>),
    Counter(fn(&T) -> u64),
    CounterFloat(fn(&T) -> f64),
}

/// One family of per-backend or per-listener samples; a counter's name has no `_total`.
struct Family<T: 'static> {
    name: &'static str,
    help: &'static str,
    read: Read<T>,
}

const BACKEND_FAMILIES: &[Family<BackendSnapshot>] = &[
    Family {
        name: "lintas_backend_up",
        help: "1 when the backend's health is up (checks and traffic), 0 when down or ejected.",
        read: Read::Gauge(|b| i64::from(b.health == Health::Up)),
    },
    Family {
        name: "lintas_backend_available",
        help: "1 when the backend takes new traffic: up, enabled and weight above 0.",
        read: Read::Gauge(|b| i64::from(b.available)),
    },
    Family {
        name: "lintas_backend_weight",
        help: "Current weight of the backend (0 to 256).",
        read: Read::Gauge(|b| i64::from(b.weight)),
    },
    Family {
        name: "lintas_backend_in_flight",
        help: "Requests (HTTP) or connections (TCP) on the backend right now.",
        read: Read::Gauge(|b| i64::try_from(b.in_flight).unwrap_or(i64::MAX)),
    },
    Family {
        name: "lintas_backend_requests",
        help: "Requests (HTTP) or connections (TCP) sent to the backend since it was added.",
        read: Read::Counter(|b| b.requests),
    },
    Family {
        name: "lintas_backend_failures",
        help: "Requests or connections to the backend that failed (refused, reset, timeout, 5xx).",
        read: Read::Counter(|b| b.failures),
    },
    Family {
        name: "lintas_backend_bytes_in",
        help: "Bytes sent from clients to the backend.",
        read: Read::Counter(|b| b.bytes_in),
    },
    Family {
        name: "lintas_backend_bytes_out",
        help: "Bytes sent from the backend to clients.",
        read: Read::Counter(|b| b.bytes_out),
    },
    Family {
        name: "lintas_backend_latency_seconds",
        help: "Peak-EWMA latency of the backend, failures counted as slow.",
        read: Read::GaugeFloat(|b| b.latency_ms / 1000.0),
    },
    Family {
        name: "lintas_backend_response_seconds",
        help: "Mean measured response time of the backend's last ~256 successful requests \
               (TCP: connects); no sample before the first.",
        read: Read::MaybeGaugeFloat(|b| b.response_ms.map(|ms| ms / 1000.0)),
    },
    Family {
        name: "lintas_backend_max_request_rate",
        help: "Highest requests (TCP: connections) per second sent to the backend since it was \
               added; the current rate is rate(lintas_backend_requests_total).",
        read: Read::Gauge(|b| i64::try_from(b.rate_max).unwrap_or(i64::MAX)),
    },
    Family {
        name: "lintas_backend_downtime_seconds",
        help: "Time the backend's health spent down or ejected since it was added.",
        read: Read::CounterFloat(|b| b.downtime_ms as f64 / 1000.0),
    },
    Family {
        name: "lintas_backend_downs",
        help: "Times the backend's health left up.",
        read: Read::Counter(|b| b.downs),
    },
];

const QUEUE_FAMILIES: &[Family<QueueSnapshot>] = &[
    Family {
        name: "lintas_pool_queue_length",
        help: "Requests waiting now because every eligible backend is at its max_connections.",
        read: Read::Gauge(|q| i64::try_from(q.length).unwrap_or(i64::MAX)),
    },
    Family {
        name: "lintas_pool_queue_max_length",
        help: "Most requests waiting at once since start.",
        read: Read::Gauge(|q| i64::try_from(q.max_length).unwrap_or(i64::MAX)),
    },
    Family {
        name: "lintas_pool_queued",
        help: "Requests that had to wait for a backend slot.",
        read: Read::Counter(|q| q.queued),
    },
    Family {
        name: "lintas_pool_queue_served",
        help: "Requests that waited and then got a backend.",
        read: Read::Counter(|q| q.served),
    },
    Family {
        name: "lintas_pool_queue_wait_seconds",
        help: "Total time the served requests waited; divided by lintas_pool_queue_served, the mean wait.",
        read: Read::CounterFloat(|q| q.waited_seconds),
    },
    Family {
        name: "lintas_pool_queue_timeouts",
        help: "Requests refused (503) after waiting queue_timeout.",
        read: Read::Counter(|q| q.timeouts),
    },
    Family {
        name: "lintas_pool_queue_full",
        help: "Requests refused (503) because queue_size requests already waited.",
        read: Read::Counter(|q| q.full),
    },
];

const LISTENER_FAMILIES: &[Family<ListenerSnapshot>] = &[
    Family {
        name: "lintas_listener_connections",
        help: "Client connections accepted.",
        read: Read::Counter(|l| l.connections),
    },
    Family {
        name: "lintas_listener_active_connections",
        help: "Client connections open now.",
        read: Read::Gauge(|l| i64::try_from(l.active).unwrap_or(i64::MAX)),
    },
    Family {
        name: "lintas_listener_requests",
        help: "HTTP requests received (TCP listeners: sessions).",
        read: Read::Counter(|l| l.requests),
    },
    Family {
        name: "lintas_listener_no_backend",
        help: "Requests or sessions refused because no backend was available.",
        read: Read::Counter(|l| l.no_backend),
    },
    Family {
        name: "lintas_listener_connect_failures",
        help: "Connection attempts to backends that failed.",
        read: Read::Counter(|l| l.connect_failures),
    },
    Family {
        name: "lintas_listener_retries",
        help: "Requests retried on another backend or connection.",
        read: Read::Counter(|l| l.retries),
    },
    Family {
        name: "lintas_listener_timeouts",
        help: "Requests whose backend did not answer within request_timeout.",
        read: Read::Counter(|l| l.timeouts),
    },
    Family {
        name: "lintas_listener_access_log_dropped",
        help: "Access log lines dropped because the log's writer fell behind (its channel was full).",
        read: Read::Counter(|l| l.access_log_dropped),
    },
    Family {
        name: "lintas_listener_max_request_rate",
        help: "Highest requests (TCP: sessions) per second since the listener started; the \
               current rate is rate(lintas_listener_requests_total).",
        read: Read::Gauge(|l| i64::try_from(l.rate_max).unwrap_or(i64::MAX)),
    },
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Writes `family` with one sample per `(labels, item)`.
fn encode<'a, L, T: 'a>(
    encoder: &mut DescriptorEncoder<'_>,
    family: &Family<T>,
    items: impl Iterator<Item = (L, &'a T)>,
) -> fmt::Result
where
    L: prometheus_client::encoding::EncodeLabelSet,
{
    let (name, help) = (family.name, family.help);
    match family.read {
        Read::Gauge(read) => encode_family(
            encoder,
            name,
            help,
            items.map(|(l, t)| (l, ConstGauge::new(read(t)))),
        ),
        Read::GaugeFloat(read) => encode_family(
            encoder,
            name,
            help,
            items.map(|(l, t)| (l, ConstGauge::new(read(t)))),
        ),
        Read::MaybeGaugeFloat(read) => encode_family(
            encoder,
            name,
            help,
            items.filter_map(|(l, t)| Some((l, ConstGauge::new(read(t)?)))),
        ),
        Read::Counter(read) => encode_family(
            encoder,
            name,
            help,
            items.map(|(l, t)| (l, ConstCounter::new(read(t)))),
        ),
        Read::CounterFloat(read) => encode_family(
            encoder,
            name,
            help,
            items.map(|(l, t)| (l, ConstCounter::new(read(t)))),
        ),
    }
}

impl Collector for ProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let pools = self.0.pool_snapshots();
        let listeners = self.0.listener_snapshots();
        for family in BACKEND_FAMILIES {
            let backends = pools.iter().flat_map(|p| {
                p.backends
                    .iter()
                    .map(|b| ([("pool", p.name.as_str()), ("backend", b.name.as_str())], b))
            });
            encode(&mut encoder, family, backends)?;
        }
        encode_family(
            &mut encoder,
            "lintas_pool_available_backends",
            "Backends of the pool that take new traffic; 0 means every request is refused.",
            pools.iter().map(|p| {
                let n = p.backends.iter().filter(|b| b.available).count();
                (
                    [("pool", p.name.as_str())],
                    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)),
                )
            }),
        )?;
        let mut dns_failures = std::collections::BTreeMap::<String, u64>::new();
        for d in self.0.dns_snapshots() {
            *dns_failures.entry(d.pool).or_default() += d.failures;
        }
        encode_family(
            &mut encoder,
            "lintas_pool_dns_failures",
            "Failed resolutions of the pool's backends written as host names (each keeps its \
             last addresses); only pools with such backends have a sample.",
            dns_failures
                .iter()
                .map(|(pool, n)| ([("pool", pool.as_str())], ConstCounter::new(*n))),
        )?;
        for family in QUEUE_FAMILIES {
            let by_pool = pools
                .iter()
                .map(|p| ([("pool", p.name.as_str())], &p.queue));
            encode(&mut encoder, family, by_pool)?;
        }
        encode_family(
            &mut encoder,
            "lintas_listener_info",
            "Always 1; labels say the listener's mode, bound address and current pool.",
            listeners.iter().map(|l| {
                (
                    [
                        ("listener", l.name.as_str()),
                        ("mode", l.mode.as_str()),
                        ("address", l.addr.as_str()),
                        ("pool", l.pool.as_str()),
                    ],
                    ConstGauge::new(1_i64),
                )
            }),
        )?;
        for family in LISTENER_FAMILIES {
            let by_listener = listeners
                .iter()
                .map(|l| ([("listener", l.name.as_str())], l));
            encode(&mut encoder, family, by_listener)?;
        }
        encode_family(
            &mut encoder,
            "lintas_listener_responses",
            "Responses sent to clients, by status class.",
            listeners.iter().flat_map(|l| {
                CLASSES.iter().zip(l.responses).map(|(class, n)| {
                    (
                        [("listener", l.name.as_str()), ("class", *class)],
                        ConstCounter::new(n),
                    )
                })
            }),
        )
    }
}
