//! Integration tests of the load balancer: real sockets, real processes, exact outcomes.
//!
//! One test binary (faster to link than one per file); each module is one concern:
//!
//! - `access_log`: the balancer's access log (combined and JSON lines, TCP sessions,
//!   reopening on reload) and error pages.
//! - `config_fuzz`: the configuration loader fed mutated copies of the example file.
//! - `console`: the admin console in headless Chromium (Playwright), every page against a
//!   node with real PostgreSQL and MariaDB destinations.
//! - `distribution`: which backend each strategy picks, counted exactly.
//! - `failover`: dead, refusing and unreachable backends; health events; retries.
//! - `h1_differential`: a differential fuzzer of the HTTP/1 path against hyper's parser.
//! - `hub_chat`: the hub's chat page in headless Chromium (Playwright), two nodes behind a
//!   balancer, one SIGKILLed while a page recovers.
//! - `http`: layer-7 behaviour — headers, bodies, timeouts, WebSocket, h2c, TLS, bad input.
//! - `http1`: the HTTP/1 path byte by byte against scripted backends — body framing,
//!   keep-alive on both sides, HTTP/1.0, smuggling guards, broken backends.
//! - `slow_clients`: every timeout of an HTTP listener, against clients that trickle or
//!   go silent.
//! - `tcp`: layer-4 behaviour — half-close, idle timeout, PROXY protocol, a real MQTT session.
//! - `queue`: per-backend `max_connections` and the pool's queue — the users' job mix,
//!   503s of a full queue and of a long wait, TCP sessions waiting.
//! - `routing`: listener routes — HTTP by host, path, method and header with rewrites and
//!   redirects (HTTP/1 and h2), TCP by SNI, and `lintas check` on shadowed routes.
//! - `reload`: configuration reloads and strategy changes under load.
//! - `cli`: the `lintas` binary itself — `check`, `run`, `--version`, SIGTERM.
//! - `mqtt`: the MQTT broker in a node — its clients on the admin API, its metrics.
//! - `mqtt_cluster`: three MQTT nodes on a Redis of their own behind a balancer, as
//!   processes, driven by hundreds of paho-mqtt clients; nodes and Redis SIGKILLed.
//! - `relay`: the relay in the real binary — SIGKILL mid-load, restart, exactly once.
//! - `store_upgrade`: a store of the globally numbered schema upgraded to per-service
//!   versions in place.
//! - `watch`: alerts for killed backends and failing targets, reminders, retries, pauses.
//!
//! Shared setup lives in `harness`.

// clippy.toml allows `unwrap` inside `#[test]` functions only; the harness and the helpers
// beside the tests are test code too, where a panic is how a test reports a failure.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic fails the test with its message"
)]

mod access_log;
mod cli;
mod config_fuzz;
mod console;
mod distribution;
mod failover;
mod h1_differential;
mod harness;
mod http;
mod http1;
mod hub_chat;
mod hub_cluster;
mod mqtt;
mod mqtt_cluster;
mod queue;
mod relay;
mod reload;
mod routing;
mod script;
mod slow_clients;
mod store_upgrade;
mod tcp;
mod watch;
