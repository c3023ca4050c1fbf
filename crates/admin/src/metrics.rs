//! `GET /metrics`: the same numbers as the stats page in Prometheus' text format (0.0.4).
//!
//! Samples are grouped by metric family, each introduced once by `# HELP` and `# TYPE`, as
//! the format requires. Labels are low-cardinality by construction: pool, backend and
//! listener names (configured by people) and the five status classes. Label values are
//! escaped by [`LabelValue`], since names come from users.

use std::fmt::{self, Display, Formatter};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use balance::{BackendSnapshot, Health, PoolSnapshot};
use proxy::registry::ListenerSnapshot;

use crate::AdminState;

/// The content type Prometheus expects for the text exposition format.
pub(crate) const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub(crate) async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let text = Exposition {
        listeners: &state.registry.listener_snapshots(),
        pools: &state.registry.pool_snapshots(),
    }
    .to_string();
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text)
}

/// A label value escaped per the exposition format: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub(crate) struct LabelValue<'a>(pub &'a str);

impl Display for LabelValue<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A sample value: integers printed exactly, floats as Prometheus reads them.
enum Value {
    Int(u64),
    Float(f64),
}

impl Display for Value {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) if x.is_nan() => f.write_str("NaN"),
            Self::Float(x) if x.is_infinite() => {
                f.write_str(if *x > 0.0 { "+Inf" } else { "-Inf" })
            }
            Self::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One family of per-backend samples.
struct BackendMetric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&BackendSnapshot) -> Value,
}

const BACKEND_METRICS: &[BackendMetric] = &[
    BackendMetric {
        name: "lintas_backend_up",
        kind: "gauge",
        help: "1 when the backend's health is up (checks and traffic), 0 when down or ejected.",
        value: |b| Value::Int(u64::from(b.health == Health::Up)),
    },
    BackendMetric {
        name: "lintas_backend_available",
        kind: "gauge",
        help: "1 when the backend takes new traffic: up, enabled and weight above 0.",
        value: |b| Value::Int(u64::from(b.available)),
    },
    BackendMetric {
        name: "lintas_backend_weight",
        kind: "gauge",
        help: "Current weight of the backend (0 to 256).",
        value: |b| Value::Int(u64::from(b.weight)),
    },
    BackendMetric {
        name: "lintas_backend_in_flight",
        kind: "gauge",
        help: "Requests (HTTP) or connections (TCP) on the backend right now.",
        value: |b| Value::Int(b.in_flight),
    },
    BackendMetric {
        name: "lintas_backend_requests_total",
        kind: "counter",
        help: "Requests (HTTP) or connections (TCP) sent to the backend since it was added.",
        value: |b| Value::Int(b.requests),
    },
    BackendMetric {
        name: "lintas_backend_failures_total",
        kind: "counter",
        help: "Requests or connections to the backend that failed (refused, reset, timeout, 5xx).",
        value: |b| Value::Int(b.failures),
    },
    BackendMetric {
        name: "lintas_backend_bytes_in_total",
        kind: "counter",
        help: "Bytes sent from clients to the backend.",
        value: |b| Value::Int(b.bytes_in),
    },
    BackendMetric {
        name: "lintas_backend_bytes_out_total",
        kind: "counter",
        help: "Bytes sent from the backend to clients.",
        value: |b| Value::Int(b.bytes_out),
    },
    BackendMetric {
        name: "lintas_backend_latency_seconds",
        kind: "gauge",
        help: "Peak-EWMA latency of the backend, failures counted as slow.",
        value: |b| Value::Float(b.latency_ms / 1000.0),
    },
];

/// One family of per-listener samples.
struct ListenerMetric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&ListenerSnapshot) -> u64,
}

const LISTENER_METRICS: &[ListenerMetric] = &[
    ListenerMetric {
        name: "lintas_listener_connections_total",
        kind: "counter",
        help: "Client connections accepted.",
        value: |l| l.connections,
    },
    ListenerMetric {
        name: "lintas_listener_active_connections",
        kind: "gauge",
        help: "Client connections open now.",
        value: |l| l.active,
    },
    ListenerMetric {
        name: "lintas_listener_requests_total",
        kind: "counter",
        help: "HTTP requests received (TCP listeners: sessions).",
        value: |l| l.requests,
    },
    ListenerMetric {
        name: "lintas_listener_no_backend_total",
        kind: "counter",
        help: "Requests or sessions refused because no backend was available.",
        value: |l| l.no_backend,
    },
    ListenerMetric {
        name: "lintas_listener_connect_failures_total",
        kind: "counter",
        help: "Connection attempts to backends that failed.",
        value: |l| l.connect_failures,
    },
    ListenerMetric {
        name: "lintas_listener_retries_total",
        kind: "counter",
        help: "Requests retried on another backend or connection.",
        value: |l| l.retries,
    },
    ListenerMetric {
        name: "lintas_listener_timeouts_total",
        kind: "counter",
        help: "Requests whose backend did not answer within request_timeout.",
        value: |l| l.timeouts,
    },
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

struct Exposition<'a> {
    listeners: &'a [ListenerSnapshot],
    pools: &'a [PoolSnapshot],
}

fn family(f: &mut Formatter<'_>, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(f, "# HELP {name} {help}\n# TYPE {name} {kind}")
}

impl Display for Exposition<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for m in BACKEND_METRICS {
            family(f, m.name, m.kind, m.help)?;
            for p in self.pools {
                for b in &p.backends {
                    writeln!(
                        f,
                        "{}{{pool=\"{}\",backend=\"{}\"}} {}",
                        m.name,
                        LabelValue(&p.name),
                        LabelValue(&b.name),
                        (m.value)(b)
                    )?;
                }
            }
        }
        family(
            f,
            "lintas_pool_available_backends",
            "gauge",
            "Backends of the pool that take new traffic; 0 means every request is refused.",
        )?;
        for p in self.pools {
            let n = p.backends.iter().filter(|b| b.available).count();
            writeln!(
                f,
                "lintas_pool_available_backends{{pool=\"{}\"}} {n}",
                LabelValue(&p.name)
            )?;
        }
        family(
            f,
            "lintas_listener_info",
            "gauge",
            "Always 1; labels say the listener's mode, bound address and current pool.",
        )?;
        for l in self.listeners {
            let mode = l.mode.as_str();
            writeln!(
                f,
                "lintas_listener_info{{listener=\"{}\",mode=\"{mode}\",address=\"{}\",pool=\"{}\"}} 1",
                LabelValue(&l.name),
                LabelValue(&l.addr),
                LabelValue(&l.pool)
            )?;
        }
        for m in LISTENER_METRICS {
            family(f, m.name, m.kind, m.help)?;
            for l in self.listeners {
                writeln!(
                    f,
                    "{}{{listener=\"{}\"}} {}",
                    m.name,
                    LabelValue(&l.name),
                    (m.value)(l)
                )?;
            }
        }
        family(
            f,
            "lintas_listener_responses_total",
            "counter",
            "Responses sent to clients, by status class.",
        )?;
        for l in self.listeners {
            for (class, n) in CLASSES.iter().zip(l.responses) {
                writeln!(
                    f,
                    "lintas_listener_responses_total{{listener=\"{}\",class=\"{class}\"}} {n}",
                    LabelValue(&l.name)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(LabelValue("a\\b\"c\nd").to_string(), "a\\\\b\\\"c\\nd");
        assert_eq!(LabelValue("plain-name_1").to_string(), "plain-name_1");
        assert_eq!(LabelValue("").to_string(), "");
    }

    #[test]
    fn values_print_as_prometheus_reads_them() {
        assert_eq!(Value::Int(u64::MAX).to_string(), "18446744073709551615");
        assert_eq!(Value::Float(0.03).to_string(), "0.03");
        assert_eq!(Value::Float(f64::NAN).to_string(), "NaN");
        assert_eq!(Value::Float(f64::INFINITY).to_string(), "+Inf");
    }

    #[test]
    fn every_family_has_one_help_and_type() {
        let text = Exposition {
            listeners: &[],
            pools: &[],
        }
        .to_string();
        let names: Vec<&str> = BACKEND_METRICS
            .iter()
            .map(|m| m.name)
            .chain(LISTENER_METRICS.iter().map(|m| m.name))
            .collect();
        for name in names {
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
    }
}
