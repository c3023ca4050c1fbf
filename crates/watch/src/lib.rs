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
//! - [`channels`]: console, webhook, Telegram and email; retried and logged.
//! - [`bot`]: the Telegram bot (registration, commands) and its Bot API client.
//! - [`admin`]: the admin API routes.
//! - [`metrics`]: host metrics sampled into a history, averaged into the store.
//! - [`migrations`]: watch's tables in the node's store.
//! - `telemetry`: alerts sent, checks run and targets up, in the node's metrics registry.

pub mod admin;
pub mod bot;
pub mod channels;
pub mod checks;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod migrations;
mod telemetry;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use configkit::KeyPath;
use service::{Deps, StartError};
use store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{TargetConfig, WatchConfig};
use engine::{Alert, Engine, Pause, Rules, Transition};
pub use migrations::MIGRATIONS;

use bot::telegram::Telegram;
use channels::Channel;
use metrics::Metrics;
use telemetry::Telemetry;

/// Changes waiting for the engine; sources wait when it is full.
const QUEUE: usize = 1024;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the binary lets watch see of the load balancer, for the bot's `/pools`.
pub trait Pools: Send + Sync {
    /// One line per pool: how many backends are up, which are not.
    fn summary(&self) -> Vec<String>;
}

/// The running watch service.
pub struct Watch {
    engine: Mutex<Engine>,
    input: mpsc::Sender<Transition>,
    store: Store,
    metrics: Arc<Metrics>,
    /// The load balancer's pools, when this node runs one: attached by the node after
    /// both services started.
    pools: std::sync::OnceLock<Arc<dyn Pools>>,
    /// The `[watch]` section in force.
    cfg: WatchConfig,
    targets: Mutex<BTreeMap<String, Running>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Alerts sent and checks run, registered in the node's metrics.
    telemetry: Telemetry,
    /// The bot's Bot API client, when `[watch.telegram]` is set: the admin API tells a
    /// person approved or turned away in the console, as `/approve` and `/deny` do.
    telegram: Option<Telegram>,
}

/// A target being checked.
struct Running {
    spec: TargetConfig,
    declared: bool,
    stop: CancellationToken,
    times: Arc<checks::ResponseTimes>,
}

/// Why a target cannot be added or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The spec is not valid: (field, message).
    Invalid(&'static str, String),
    /// A target of that name exists.
    Exists(String),
    /// No target of that name.
    NotFound(String),
    /// It comes from the configuration file.
    Declared(String),
    /// The store failed.
    Store(String),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(field, m) => write!(f, "{field}: {m}"),
            Self::Exists(n) => write!(f, "target `{n}` exists"),
            Self::NotFound(n) => write!(f, "no target `{n}`"),
            Self::Declared(n) => write!(
                f,
                "target `{n}` is declared in the configuration file; change it there and restart"
            ),
            Self::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl service::Service for Watch {
    type Config = WatchConfig;
    type Changes = Reloaded;
    const SECTION: &'static str = "watch";

    /// Starts the engine, the configured targets' checks (and those added through the API in
    /// earlier runs), the metrics sampler, the bot and the channels; state history, the alert
    /// log and bot users go to the node's store. Fails when a channel cannot be set up (an
    /// unset token variable).
    async fn start(
        cfg: &WatchConfig,
        deps: Deps,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        Self::start_with_env(cfg, &|name| std::env::var(name).ok(), deps, shutdown).await
    }

    /// Nothing in `[watch]` applies while running; targets can be added and removed through
    /// the admin API instead.
    async fn reload(self: &Arc<Self>, _: &WatchConfig) -> Result<Reloaded, StartError> {
        Ok(Reloaded {
            targets: self.lock_targets().len(),
        })
    }

    fn restart_needed(&self, cfg: &WatchConfig) -> Vec<KeyPath> {
        if *cfg == self.cfg {
            Vec::new()
        } else {
            vec![KeyPath::root(Self::SECTION)]
        }
    }

    fn routes(self: &Arc<Self>) -> axum::Router {
        admin::router(self.clone())
    }
}

/// What a reload of `[watch]` left in force.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Reloaded {
    /// Targets checked by watch itself (pools' backends are the proxy's).
    pub targets: usize,
}

impl Watch {
    /// [`Watch::start`] reading the secrets' environment variables (`token_env`,
    /// `password_env`) through `env`, so tests can give them without touching the process
    /// environment.
    pub async fn start_with_env(
        cfg: &WatchConfig,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
        deps: Deps,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let at = KeyPath::root(<Self as service::Service>::SECTION);
        let store = deps.store().await?;
        store.migrate("watch", MIGRATIONS).await?;
        let tracker = &deps.tasks;
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
        let mailer = match &cfg.email {
            Some(e) => Some(
                channels::Mailer::new(e, env)
                    .map_err(|message| StartError::new(at.key("email"), message))?,
            ),
            None => None,
        };
        if let Some(m) = &mailer {
            channels.push(Arc::new(Channel::Email(Box::new(m.clone()))));
        }
        let telegram = match &cfg.telegram {
            Some(t) => {
                let token = env(&t.token_env).ok_or_else(|| {
                    StartError::new(
                        at.key("telegram").key("token_env"),
                        format!(
                            "environment variable {} (token_env) is not set; export the bot token from @BotFather in it",
                            t.token_env
                        ),
                    )
                })?;
                if t.admins.is_empty() && t.registration == config::Registration::Approval {
                    warn!(
                        "watch.telegram has no admins, so only admins approved earlier can let registrations in; put your chat id (the bot tells it when you register) in admins"
                    );
                }
                let api = Telegram::new(&t.api_url, &token);
                channels.push(Arc::new(Channel::Telegram(Box::new(api.clone()))));
                Some((api, t))
            }
            None => None,
        };
        let metrics = Metrics::new(
            cfg.metrics_interval,
            cfg.metrics_retention,
            &cfg.metrics_tiers,
            store.clone(),
        );
        // The graphs can do without their past: a store that cannot give it is no reason
        // not to watch.
        match metrics.load().await {
            Ok(0) => {}
            Ok(means) => info!(means, "host metrics of earlier runs are graphed again"),
            Err(e) => {
                warn!(error = %e, "cannot read the stored host metrics; the graphs start empty")
            }
        }
        tracker.spawn(metrics.clone().run(cfg.metrics_interval, shutdown.clone()));
        let (input, rx) = mpsc::channel(QUEUE);
        let watch = Arc::new(Self {
            engine: Mutex::new(engine),
            input,
            store,
            metrics,
            pools: std::sync::OnceLock::new(),
            cfg: cfg.clone(),
            targets: Mutex::new(BTreeMap::new()),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            telemetry: Telemetry::default(),
            telegram: telegram.as_ref().map(|(api, _)| api.clone()),
        });
        watch.telemetry.register(&deps.metrics, &watch);
        for t in &cfg.targets {
            watch.spawn_target(t.clone(), true);
        }
        if let Some((api, t)) = telegram {
            let bot = Arc::new(bot::Bot::new(api, watch.clone(), t, mailer));
            tracker.spawn(bot.run(shutdown.clone()));
        }
        tracker.spawn(prune(
            watch.store.clone(),
            cfg.history_retention,
            cfg.metrics_tiers.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(run(watch.clone(), rx, channels, tracker.clone(), shutdown));
        let restored = watch
            .restore_targets()
            .await
            .map_err(|e| StartError::new(at, format!("store: {e}")))?;
        if restored > 0 {
            info!(
                targets = restored,
                "targets added through the API are checked again"
            );
        }
        Ok(watch)
    }

    fn spawn_target(&self, spec: TargetConfig, declared: bool) {
        let stop = self.shutdown.child_token();
        let times = Arc::new(checks::ResponseTimes::default());
        self.tracker.spawn(checks::run(
            spec.clone(),
            self.input.clone(),
            self.telemetry.checks_of(&spec.name),
            times.clone(),
            stop.clone(),
        ));
        self.lock_targets().insert(
            spec.name.clone(),
            Running {
                spec,
                declared,
                stop,
                times,
            },
        );
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts checking the targets added through the API in earlier runs.
    pub async fn restore_targets(&self) -> Result<usize, sqlx::Error> {
        let specs: Vec<String> = sqlx::query_scalar("SELECT spec FROM watch_targets ORDER BY name")
            .fetch_all(self.store.pool())
            .await?;
        let mut n = 0;
        for spec in specs {
            match TargetConfig::from_stored(&spec) {
                Ok(t) if !self.lock_targets().contains_key(&t.name) => {
                    self.spawn_target(t, false);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "a stored watch target is unreadable; skipped"),
            }
        }
        Ok(n)
    }

    /// Every target watch checks itself: (spec, declared in the file).
    pub fn targets(&self) -> Vec<(TargetConfig, bool)> {
        self.lock_targets()
            .values()
            .map(|r| (r.spec.clone(), r.declared))
            .collect()
    }

    /// The latest checks of target `name` (oldest first), or `None` for a target watch does
    /// not check itself.
    pub fn check_times(&self, name: &str) -> Option<Vec<checks::CheckTime>> {
        self.lock_targets().get(name).map(|r| r.times.all())
    }

    /// Adds a target (kept in the store across restarts) and starts checking it.
    pub async fn add_target(&self, spec: TargetConfig) -> Result<(), TargetError> {
        if let Some((field, m)) = spec.problems().into_iter().next() {
            return Err(TargetError::Invalid(field, m));
        }
        if self.lock_targets().contains_key(&spec.name) {
            return Err(TargetError::Exists(spec.name));
        }
        sqlx::query("INSERT INTO watch_targets (name, spec, created_ms) VALUES (?, ?, ?)")
            .bind(&spec.name)
            .bind(serde_json::to_string(&spec).unwrap_or_default())
            .bind(now_ms())
            .execute(self.store.pool())
            .await
            .map_err(|e| TargetError::Store(e.to_string()))?;
        self.spawn_target(spec, false);
        Ok(())
    }

    /// Stops checking a target added through the API and forgets it.
    pub async fn remove_target(&self, name: &str) -> Result<(), TargetError> {
        match self.lock_targets().get(name) {
            None => return Err(TargetError::NotFound(name.to_owned())),
            Some(r) if r.declared => return Err(TargetError::Declared(name.to_owned())),
            Some(_) => {}
        }
        sqlx::query("DELETE FROM watch_targets WHERE name = ?")
            .bind(name)
            .execute(self.store.pool())
            .await
            .map_err(|e| TargetError::Store(e.to_string()))?;
        if let Some(r) = self.lock_targets().remove(name) {
            r.stop.cancel();
        }
        Ok(())
    }

    /// Sends `text` to a person's chat through the bot; whether it went (false without a
    /// bot). A failure is logged: the change it announces is made either way.
    pub async fn tell(&self, chat: i64, text: &str) -> bool {
        let Some(api) = &self.telegram else {
            return false;
        };
        match api.send_text(chat, text).await {
            Ok(()) => true,
            Err(e) => {
                warn!(chat, error = %e, "cannot tell a person through the bot");
                false
            }
        }
    }

    /// Chat ids made admins by the configuration file (`[watch.telegram] admins`).
    pub fn file_admins(&self) -> &[i64] {
        self.cfg
            .telegram
            .as_ref()
            .map_or(&[], |t| t.admins.as_slice())
    }

    /// The store (bot users, history, alert log).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Host metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Lets the bot's `/pools` answer from the node's load balancer. Only the first call
    /// counts: a node has one.
    pub fn attach_pools(&self, pools: Arc<dyn Pools>) {
        let _ = self.pools.set(pools);
    }

    /// The load balancer's pools, one line each.
    pub fn pools_summary(&self) -> String {
        match self.pools.get() {
            Some(p) => {
                let lines = p.summary();
                if lines.is_empty() {
                    "No pools.".into()
                } else {
                    lines.join("\n")
                }
            }
            None => "No load balancer on this node.".into(),
        }
    }

    /// Silences and maintenance windows in force or to come.
    pub fn pauses(&self) -> Vec<Pause> {
        self.engine().pauses().to_vec()
    }

    /// Adds a silence or maintenance window.
    pub fn pause(&self, p: Pause) {
        self.engine().pause(p);
    }

    /// Ends the pauses with this pattern; returns how many.
    pub fn unpause(&self, pattern: &str) -> usize {
        self.engine().unpause(pattern)
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

/// Deletes state changes and alert-log rows older than `retention`, and the host metrics'
/// means older than their tier keeps, hourly.
async fn prune(
    store: Store,
    retention: std::time::Duration,
    tiers: Vec<metrics::Tier>,
    shutdown: CancellationToken,
) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hourly.tick() => {}
        }
        let cutoff = now_ms() - retention.as_millis() as i64;
        for table in ["watch_transitions", "watch_alerts"] {
            let r = sqlx::query(&format!("DELETE FROM {table} WHERE at_ms < ?"))
                .bind(cutoff)
                .execute(store.pool())
                .await;
            if let Err(e) = r {
                warn!(error = %e, table, "cannot prune the watch history");
            }
        }
        metrics::prune(&store, &tiers, now_ms()).await;
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
        // The change is written to the history after its alerts are on their way, so the
        // store's sync never delays an alert.
        let (alerts, change): (Vec<Alert>, Option<Transition>) = tokio::select! {
            _ = shutdown.cancelled() => return,
            t = rx.recv() => {
                let Some(t) = t else { return };
                let mut engine = watch.engine();
                if engine.is_repeat(&t) {
                    continue;
                }
                (engine.on_transition(t.clone()), Some(t))
            }
            _ = tokio::time::sleep(wait) => (watch.engine().tick(now_ms()), None),
        };
        for alert in alerts {
            let alert = Arc::new(alert);
            for channel in &channels {
                tracker.spawn(channels::deliver(
                    channel.clone(),
                    alert.clone(),
                    watch.store.clone(),
                    watch.telemetry.clone(),
                ));
            }
        }
        if let Some(t) = change {
            record(&watch.store, &t).await;
        }
    }
}
