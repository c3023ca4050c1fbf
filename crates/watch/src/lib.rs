//! The watch service: what is up, what is down, and who is told.
//!
//! Changes come from three places — the proxy's pools (every backend's health, so no
//! backend is checked twice), the relay's destinations (their heartbeat) and targets watch
//! checks itself ([`checks`]) — as [`engine::Transition`]s through [`Watch::reporter`].
//! One task feeds them to the [`engine`], which decides what to say and when (down,
//! reminders every `repeat`, up, flapping, pauses), and hands each alert to every channel.
//!
//! # Layout
//!
//! - [`config`]: the `[watch]` section.
//! - [`engine`]: the alert rules, as pure logic over explicit times.
//! - [`checks`]: HTTP and TCP targets.
//! - [`channels`]: console and webhook, retried and logged.

pub mod channels;
pub mod checks;
pub mod config;
pub mod engine;

use std::sync::{Arc, Mutex};

use store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

pub use config::WatchConfig;
use engine::{Alert, Engine, Pause, Rules, Transition};

use channels::Channel;

/// Changes waiting for the engine; sources wait when it is full.
const QUEUE: usize = 1024;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The running watch service.
pub struct Watch {
    engine: Mutex<Engine>,
    input: mpsc::Sender<Transition>,
    store: Store,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    /// Starts the engine, the configured targets' checks and the channels on `tracker`
    /// until `shutdown`; state history and the alert log go to `store`.
    pub fn start(
        cfg: &WatchConfig,
        store: Store,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let mut engine = Engine::new(Rules {
            repeat: cfg.repeat,
            flap_changes: cfg.flap_changes,
            flap_window: cfg.flap_window,
        });
        for m in &cfg.maintenance {
            if let (Ok(from_ms), Ok(until_ms)) = (
                configkit::parse_time_ms(&m.from),
                configkit::parse_time_ms(&m.until),
            ) {
                engine.pause(Pause {
                    pattern: m.targets.clone(),
                    from_ms,
                    until_ms,
                    reason: "maintenance".into(),
                });
            }
        }
        let mut channels = Vec::new();
        if cfg.console {
            channels.push(Arc::new(Channel::Console));
        }
        for w in &cfg.webhooks {
            channels.push(Arc::new(Channel::webhook(&w.url)));
        }
        let (input, rx) = mpsc::channel(QUEUE);
        let watch = Arc::new(Self {
            engine: Mutex::new(engine),
            input,
            store,
        });
        for t in &cfg.targets {
            tracker.spawn(checks::run(
                t.clone(),
                watch.input.clone(),
                shutdown.clone(),
            ));
        }
        tracker.spawn(run(watch.clone(), rx, channels, tracker.clone(), shutdown));
        watch
    }

    /// Where sources send their changes.
    pub fn reporter(&self) -> mpsc::Sender<Transition> {
        self.input.clone()
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Targets down now, with since when (ms since the Unix epoch).
    pub fn down(&self) -> Vec<(String, i64)> {
        self.engine()
            .down()
            .into_iter()
            .map(|(n, d)| (n.to_owned(), d))
            .collect()
    }
}

async fn record(store: &Store, t: &Transition) {
    let r = sqlx::query(
        "INSERT INTO watch_transitions (at_ms, target, detail, up, reason) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(t.at_ms)
    .bind(&t.target)
    .bind(&t.detail)
    .bind(t.up)
    .bind(&t.reason)
    .execute(store.pool())
    .await;
    if let Err(e) = r {
        warn!(error = %e, "cannot write the watch history");
    }
}

/// Feeds changes to the engine and due times to its tick; hands alerts to the channels.
async fn run(
    watch: Arc<Watch>,
    mut rx: mpsc::Receiver<Transition>,
    channels: Vec<Arc<Channel>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let due = watch.engine().next_due();
        let wait = due.map_or(std::time::Duration::from_secs(3600), |d| {
            std::time::Duration::from_millis((d - now_ms()).max(0) as u64)
        });
        let alerts: Vec<Alert> = tokio::select! {
            _ = shutdown.cancelled() => return,
            t = rx.recv() => {
                let Some(t) = t else { return };
                record(&watch.store, &t).await;
                watch.engine().on_transition(t)
            }
            _ = tokio::time::sleep(wait) => watch.engine().tick(now_ms()),
        };
        for alert in alerts {
            let alert = Arc::new(alert);
            for channel in &channels {
                tracker.spawn(channels::deliver(
                    channel.clone(),
                    alert.clone(),
                    watch.store.clone(),
                ));
            }
        }
    }
}
