//! The Telegram bot end to end: a watch service started in-process against a local Bot API
//! server and a local SMTP server. Alerts come from transitions handed to its reporter, as
//! the proxy's and relay's forwarders hand them in a node. Also the watch's state across a
//! restart on the same store (host metrics' history).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::smtp::SmtpSink;
use testkit::telegram::{FakeBotApi, MAX_TEXT};
use testkit::{PATIENCE, TempDir, wait_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use watch::bot::users;
use watch::config::{EmailConfig, Registration, TelegramConfig};
use watch::engine::Transition;
use watch::metrics::{Sample, Tier};
use watch::{Watch, WatchConfig};

const TOKEN: &str = "42:test-token";
/// An admin from the configuration; its chat id is above everyone else's, so alerts reach
/// it last (recipients go in chat id order) and its alert proves the others were handled.
const ADMIN: i64 = 900;

/// A watch service with a bot and email, stopped when dropped.
struct Bench {
    bot: FakeBotApi,
    smtp: SmtpSink,
    watch: Arc<Watch>,
    /// The registry watch registered its metrics in.
    metrics: admin::Metrics,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(edit: impl FnOnce(&mut TelegramConfig)) -> Bench {
    let dir = TempDir::new();
    let bot = FakeBotApi::start(TOKEN).await.expect("fake Bot API");
    let smtp = SmtpSink::start().await.expect("SMTP sink");
    let mut telegram = TelegramConfig {
        token_env: "BOT_TOKEN".into(),
        api_url: bot.url(),
        admins: vec![ADMIN],
        registration: Registration::Approval,
        // Scripts talk faster than people; the flood test sets its own.
        rate_burst: 100,
        rate_per_minute: 100,
    };
    edit(&mut telegram);
    let cfg = WatchConfig {
        repeat: Duration::from_secs(3600),
        telegram: Some(telegram),
        email: Some(EmailConfig {
            smtp: smtp.url(),
            username: None,
            password_env: None,
            from: "lintas@example.com".into(),
            to: vec!["ops@example.com".into()],
        }),
        ..WatchConfig::default()
    };
    let shutdown = CancellationToken::new();
    let deps = service::Deps::new(
        net::Workers::default(),
        TaskTracker::new(),
        dir.path().join("data"),
        backplane::open(None, &dir.path().join("data"))
            .await
            .expect("the embedded backplane opens"),
    );
    let metrics = deps.metrics.clone();
    let watch = Watch::start_with_env(
        &cfg,
        &|var| (var == "BOT_TOKEN").then(|| TOKEN.to_owned()),
        deps,
        shutdown.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("watch did not start: {e:?}"));
    Bench {
        bot,
        smtp,
        watch,
        metrics,
        shutdown,
        _dir: dir,
    }
}

impl Bench {
    async fn ask(&self, chat: i64, text: &str) -> String {
        self.bot.ask(chat, text).await
    }

    /// `/start`, name, email; returns the last answer.
    async fn register(&self, chat: i64, name: &str, email: &str) -> String {
        self.ask(chat, "/start").await;
        self.ask(chat, name).await;
        self.ask(chat, email).await
    }

    /// Target `t1` goes down (or up).
    async fn report(&self, up: bool) {
        self.watch
            .reporter()
            .send(Transition {
                target: "t1".into(),
                detail: "127.0.0.1:1".into(),
                up,
                reason: "refused".into(),
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            })
            .await
            .expect("watch runs");
    }

    /// Waits for the alert starting with `prefix` sent to `chat`.
    async fn alert_to(&self, chat: i64, prefix: &str) {
        wait_until(&format!("{prefix} to {chat}"), PATIENCE, || async {
            self.bot.sent_to(chat).iter().any(|t| t.starts_with(prefix))
        })
        .await;
    }

    /// Mails whose subject is `subject`, with their recipients.
    fn mails(&self, subject: &str) -> Vec<Vec<String>> {
        self.smtp
            .mails()
            .into_iter()
            .filter(|m| m.data.contains(&format!("Subject: {subject}\n")))
            .map(|m| m.to)
            .collect()
    }

    /// The code mailed to `email` (the last one).
    async fn code_for(&self, email: &str) -> String {
        wait_until(&format!("a code mailed to {email}"), PATIENCE, || async {
            self.smtp.mails().iter().any(|m| m.to == [email])
        })
        .await;
        let mail = self
            .smtp
            .mails()
            .into_iter()
            .rfind(|m| m.to == [email])
            .expect("mail");
        let at = mail.data.find("/confirm ").expect("a code in the mail") + "/confirm ".len();
        mail.data[at..at + 6].to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_only_help_and_a_pending_notice_until_an_admin_approves() {
    const EVE: i64 = 50;
    let b = start(|_| {}).await;
    assert_eq!(
        b.register(ADMIN, "Root", "root@example.com").await,
        "Registered as Root <root@example.com>.\nYou will get alerts when something goes down and when it is back. You are an admin.\nI mailed a code to root@example.com: send /confirm CODE to get alerts by email too.\n/help lists what you can ask."
    );
    let before = b.bot.sent_to(ADMIN).len();
    assert_eq!(
        b.ask(EVE, "/status").await,
        "Send /start to register first."
    );
    assert_eq!(
        b.register(EVE, "Eve", "eve@example.com").await,
        "Registered as Eve <eve@example.com>.\nAn admin must approve you before you get alerts (your chat id is 50); I will tell you here.\nI mailed a code to eve@example.com: send /confirm CODE to get alerts by email too."
    );
    wait_until("the admin to hear of Eve", PATIENCE, || async {
        b.bot.sent_to(ADMIN).len() > before
    })
    .await;
    assert_eq!(
        b.bot.sent_to(ADMIN)[before..],
        [
            "New registration: Eve (50) <eve@example.com>.\n/approve 50 lets them in, /deny 50 turns them away."
        ]
    );
    let pending = "Your registration waits for an admin's approval.";
    for command in [
        "/status",
        "/mute 1h",
        "/cpu",
        "/users",
        "/approve 50",
        "hello",
    ] {
        assert_eq!(b.ask(EVE, command).await, pending, "after {command}");
    }
    assert_eq!(
        b.ask(EVE, "/help").await,
        format!("/start - register for alerts\n/help - this list\n{pending}")
    );

    let eve_before = b.bot.sent_to(EVE).len();
    b.report(false).await;
    b.alert_to(ADMIN, "DOWN t1 ").await;
    assert_eq!(
        b.bot.sent_to(EVE).len(),
        eve_before,
        "a pending registration gets no alert: {:?}",
        &b.bot.sent_to(EVE)[eve_before..]
    );

    assert_eq!(
        b.ask(ADMIN, "/approve 50").await,
        "Eve (50) is approved: they get alerts now."
    );
    wait_until("Eve to hear she is approved", PATIENCE, || async {
        b.bot.sent_to(EVE).last().map(String::as_str)
            == Some("An admin (Root (900)) approved you: you get alerts now. /help lists what you can ask.")
    })
    .await;
    assert_eq!(b.ask(EVE, "/status").await.lines().next(), Some("Down:"));
    assert_eq!(
        b.ask(EVE, "/cpu").await,
        "/cpu is for admins. An admin can /approve you: your chat id is 50."
    );
    b.report(true).await;
    b.alert_to(EVE, "UP t1 ").await;

    assert_eq!(
        b.ask(ADMIN, "/deny 50").await,
        "Eve (50) is turned away: no alerts, no answers."
    );
    assert_eq!(
        b.ask(EVE, "/status").await,
        "An admin turned your registration away."
    );
    assert_eq!(
        b.ask(ADMIN, "/deny 900").await,
        "900 is an admin in the configuration file; remove it there."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_mail_goes_only_to_confirmed_addresses() {
    const ANN: i64 = 10;
    const BOB: i64 = 20;
    let b = start(|t| t.registration = Registration::Open).await;
    assert_eq!(
        b.register(BOB, "Bob", "bob@example.com").await,
        "Registered as Bob <bob@example.com>.\nYou will get alerts when something goes down and when it is back.\nI mailed a code to bob@example.com: send /confirm CODE to get alerts by email too.\n/help lists what you can ask."
    );
    let code = b.code_for("bob@example.com").await;
    assert_eq!(
        b.mails("[lintas] your confirmation code"),
        [["bob@example.com"]]
    );
    assert_eq!(
        b.ask(BOB, &format!("/confirm {code}")).await,
        "bob@example.com is confirmed: alerts come by email too."
    );
    b.register(ANN, "Ann", "ann@example.com").await;
    let ann_code = b.code_for("ann@example.com").await;

    // Recipients go in order: the configured address, then people by chat id, so Bob's
    // mail is sent after Ann's would have been.
    b.report(false).await;
    wait_until("the DOWN mail to Bob", PATIENCE, || async {
        b.mails("[lintas] DOWN t1").len() == 2
    })
    .await;
    b.alert_to(ANN, "DOWN t1 ").await;
    assert_eq!(
        b.mails("[lintas] DOWN t1"),
        [["ops@example.com"], ["bob@example.com"]],
        "Ann's address is not confirmed"
    );

    let wrong = if ann_code == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_eq!(
        b.ask(ANN, &format!("/confirm {wrong}")).await,
        "That is not the code I mailed to ann@example.com; 4 tries left. /confirm alone mails a new one."
    );
    assert_eq!(
        b.ask(ANN, &format!("/confirm {ann_code}")).await,
        "ann@example.com is confirmed: alerts come by email too."
    );
    b.report(true).await;
    wait_until("the UP mails", PATIENCE, || async {
        b.mails("[lintas] UP t1").len() == 3
    })
    .await;
    assert_eq!(
        b.mails("[lintas] UP t1"),
        [
            ["ops@example.com"],
            ["ann@example.com"],
            ["bob@example.com"]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_name_cannot_forge_a_users_line() {
    const MALLORY: i64 = 66;
    let b = start(|t| t.registration = Registration::Open).await;
    b.ask(MALLORY, "/start").await;
    assert_eq!(
        b.ask(
            MALLORY,
            "Mallory\n900 Root <root@example.com> admin\u{202e}"
        )
        .await,
        "Thanks, Mallory 900 Root <root@example.com> admin. What is your email address?"
    );
    b.ask(MALLORY, "m@example.com").await;
    assert_eq!(
        b.ask(ADMIN, "/users").await,
        "1 registered:\n66 Mallory 900 Root <root@example.com> admin <m@example.com> (email not confirmed)"
    );
    b.ask(MALLORY + 1, "/start").await;
    let long = "N".repeat(5000);
    assert_eq!(
        b.ask(MALLORY + 1, &long).await,
        format!("Thanks, {}. What is your email address?", "N".repeat(64))
    );
    b.ask(MALLORY + 2, "/start").await;
    assert_eq!(
        b.ask(MALLORY + 2, "\u{7}\u{202e}").await,
        "A name needs letters. What is your name?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_list_longer_than_a_telegram_message_is_split_on_lines() {
    let b = start(|_| {}).await;
    let store = b.watch.store();
    let mut want = vec!["100 registered:".to_owned()];
    for i in 0..100_i64 {
        // Two UTF-16 units per 𝔸: the limit is counted as Telegram counts.
        let name = format!("{i:03} 𝔸𝔸𝔸𝔸𝔸𝔸𝔸𝔸𝔸𝔸 {}", "x".repeat(40));
        let chat = 1000 + i;
        users::start(store, chat).await.expect("start");
        users::set_name(store, chat, &name).await.expect("name");
        users::set_email(store, chat, &format!("u{i}@example.com"))
            .await
            .expect("email");
        want.push(format!(
            "{chat} {name} <u{i}@example.com> pending (email not confirmed)"
        ));
    }
    let want = want.join("\n");
    assert!(want.encode_utf16().count() > 8000);
    let before = b.bot.sent_to(ADMIN).len();
    b.bot.say(ADMIN, "/users");
    wait_until("the whole list", PATIENCE, || async {
        b.bot.sent_to(ADMIN)[before..].join("\n") == want
    })
    .await;
    let parts = &b.bot.sent_to(ADMIN)[before..];
    assert!(parts.len() >= 2, "{} parts", parts.len());
    for part in parts {
        assert!(part.encode_utf16().count() <= MAX_TEXT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_the_bot_cannot_read_is_skipped() {
    let b = start(|_| {}).await;
    b.bot.push_raw(json!({"future_kind": {"id": 7}}));
    b.bot.push_raw(json!({"message": {"unexpected": true}}));
    assert_eq!(
        b.ask(5, "/help").await,
        "/start - register for alerts\n/help - this list"
    );
    assert_eq!(b.bot.allowed_updates(), Some(json!(["message"])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_that_floods_is_told_once_to_slow_down_then_ignored() {
    const FLOOD: i64 = 77;
    let b = start(|t| {
        t.rate_burst = 3;
        t.rate_per_minute = 1;
    })
    .await;
    for _ in 0..6 {
        b.bot.say(FLOOD, "/help");
    }
    // Updates are answered in order: once another chat is answered, the flood was handled.
    b.ask(ADMIN, "/help").await;
    let help = "/start - register for alerts\n/help - this list";
    assert_eq!(
        b.bot.sent_to(FLOOD),
        [
            help,
            help,
            help,
            "Slow down: I answer 1 message a minute after a burst of 3. I ignore you until then."
        ]
    );
}

/// The sample lines of `/metrics` that start with `prefix`, sorted.
fn samples(metrics: &admin::Metrics, prefix: &str) -> Vec<String> {
    testkit::samples(&metrics.encode().expect("metrics encode"), prefix)
}

/// A target checked once (its interval is an hour) against a closed port goes down: one
/// failed check, one alert to the one recipient there is (the configured email address;
/// nobody has registered with the bot), and the target shown down.
#[tokio::test]
async fn metrics_count_checks_alerts_and_target_state() {
    let bench = start(|_| {}).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let target = serde_json::from_value(json!({
        "name": "db", "kind": "tcp", "address": closed.to_string(),
        "interval": "1h", "timeout": "2s", "fall": 1,
    }))
    .expect("a target spec");
    bench.watch.add_target(target).await.expect("target added");
    wait_until("the alert to be sent", PATIENCE, || async {
        !samples(&bench.metrics, "lintas_watch_alerts").is_empty()
    })
    .await;
    assert_eq!(
        samples(&bench.metrics, "lintas_watch_"),
        [
            "lintas_watch_alerts_total{channel=\"email\",outcome=\"sent\"} 1",
            "lintas_watch_checks_total{target=\"db\",result=\"fail\"} 1",
            "lintas_watch_checks_total{target=\"db\",result=\"pass\"} 0",
            "lintas_watch_target_up{target=\"db\"} 0",
        ]
    );
    // The one check is kept for the response-time graph; a target watch does not check
    // itself has none.
    let times = bench
        .watch
        .check_times("db")
        .expect("db is checked by watch");
    assert_eq!(times.len(), 1, "{times:?}");
    assert!(!times[0].ok);
    assert!(times[0].ms >= 0.0 && times[0].ms < 2000.0, "{times:?}");
    assert_eq!(bench.watch.check_times("web/app1"), None);
}

/// The console's people page through the admin API: the list as the store has it, approve
/// and revoke told through the bot like `/approve` and `/deny`, refusals with their reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_approved_and_revoked_through_the_admin_api() {
    const ANN: i64 = 60;
    const BOB: i64 = 61;
    let b = start(|_| {}).await;
    b.register(ANN, "Ann", "ann@example.com").await;
    b.ask(BOB, "/start").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, watch::admin::router(b.watch.clone())).into_future());
    let client = testkit::HttpClient::new();
    let call = |method: http::Method, path: &str| {
        let url = format!("{base}{path}");
        let client = client.clone();
        async move {
            let r = client.send(method, &url, &[], String::new()).await.unwrap();
            (
                r.status,
                serde_json::from_str::<serde_json::Value>(&r.body).unwrap(),
            )
        }
    };
    let (status, list) = call(http::Method::GET, "/api/watch/people").await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!({"people": [
            {"chat_id": ANN, "name": "Ann", "email": "ann@example.com", "email_confirmed": false,
             "registered": true, "access": "pending", "admin": false, "admin_in_file": false, "muted_until_ms": 0},
            {"chat_id": BOB, "name": null, "email": null, "email_confirmed": false,
             "registered": false, "access": "pending", "admin": false, "admin_in_file": false, "muted_until_ms": 0},
        ]})
    );
    assert_eq!(
        call(
            http::Method::POST,
            &format!("/api/watch/people/{BOB}/approve")
        )
        .await,
        (
            409,
            json!({"error": "? (61) has not finished registering (name and email); approve them once they have"})
        )
    );
    assert_eq!(
        call(http::Method::POST, "/api/watch/people/7/approve").await,
        (
            404,
            json!({"error": "nobody with chat id 7 talked to the bot"})
        )
    );
    let (status, approved) = call(
        http::Method::POST,
        &format!("/api/watch/people/{ANN}/approve"),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(
        (&approved["person"]["access"], &approved["notified"]),
        (&json!("approved"), &json!(true))
    );
    assert_eq!(
        b.bot.sent_to(ANN).last().map(String::as_str),
        Some(
            "An admin approved you in the console: you get alerts now. /help lists what you can ask."
        )
    );
    b.report(false).await;
    b.alert_to(ANN, "DOWN t1").await;
    assert_eq!(
        call(
            http::Method::POST,
            &format!("/api/watch/people/{ADMIN}/revoke")
        )
        .await,
        (
            409,
            json!({"error": "900 is an admin in the configuration file (watch.telegram.admins); remove it there"})
        )
    );
    let (status, revoked) = call(
        http::Method::POST,
        &format!("/api/watch/people/{ANN}/revoke"),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["person"]["access"], "denied");
    assert_eq!(
        b.bot.sent_to(ANN).last().map(String::as_str),
        Some("An admin turned your registration away.")
    );
    assert_eq!(
        users::get(b.watch.store(), ANN)
            .await
            .unwrap()
            .unwrap()
            .access,
        users::Access::Denied
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A watch service without bot or email on the store under `data`, sampling the host every
/// 100 ms into means over one and three seconds (minutes and quarter hours would make the
/// test last minutes); stopped with the token, drained with the tracker.
async fn start_sampling(data: &std::path::Path) -> (Arc<Watch>, CancellationToken, TaskTracker) {
    let hour = Duration::from_secs(3600);
    let cfg = WatchConfig {
        metrics_interval: Duration::from_millis(100),
        metrics_tiers: vec![
            Tier {
                step: Duration::from_secs(1),
                keep: hour,
            },
            Tier {
                step: Duration::from_secs(3),
                keep: hour,
            },
        ],
        ..WatchConfig::default()
    };
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let deps = service::Deps::new(
        net::Workers::default(),
        tasks.clone(),
        data.to_owned(),
        backplane::open(None, data)
            .await
            .expect("the embedded backplane opens"),
    );
    let watch = Watch::start_with_env(&cfg, &|_| None, deps, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("watch did not start: {e:?}"));
    (watch, shutdown, tasks)
}

/// The stored means of `resolution_s`, oldest first: (bucket start, samples, the mean).
async fn stored(watch: &Watch, resolution_s: i64) -> Vec<(i64, i64, Sample)> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT at_ms, samples, sample FROM watch_host_samples WHERE resolution_s = ? ORDER BY at_ms",
    )
    .bind(resolution_s)
    .fetch_all(watch.store().pool())
    .await
    .expect("the stored means");
    rows.into_iter()
        .map(|(at, n, sample)| (at, n, serde_json::from_str(&sample).expect("JSON")))
        .collect()
}

/// Per bucket of `step_ms` of `raw`: (start, samples, CPU, memory used, 1-minute load),
/// the means worked out here as `watch::metrics` documents them (to hundredths, to the byte).
fn means(raw: &[Sample], step_ms: i64) -> Vec<(i64, i64, f32, u64, f64)> {
    let hundredths = |x: f64| (x * 100.0).round() / 100.0;
    raw.chunk_by(|a, b| a.at_ms / step_ms == b.at_ms / step_ms)
        .map(|bucket| {
            let n = bucket.len();
            let cpu = bucket.iter().map(|s| f64::from(s.cpu)).sum::<f64>() / n as f64;
            let mem: u128 = bucket.iter().map(|s| u128::from(s.mem_used)).sum();
            let load = bucket.iter().map(|s| s.load[0]).sum::<f64>() / n as f64;
            (
                bucket[0].at_ms / step_ms * step_ms,
                n as i64,
                hundredths(cpu) as f32,
                ((mem + n as u128 / 2) / n as u128) as u64,
                hundredths(load),
            )
        })
        .collect()
}

/// The same fields of stored means.
fn fields(rows: &[(i64, i64, Sample)]) -> Vec<(i64, i64, f32, u64, f64)> {
    rows.iter()
        .map(|(at, n, s)| (*at, *n, s.cpu, s.mem_used, s.load[0]))
        .collect()
}

/// The host metrics' history outlives a restart: the first run stores a mean per bucket of
/// its raw samples (the last, partial one when it stops), and the next run on the same
/// store serves those means, exactly, before its own raw samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_metrics_history_survives_a_restart() {
    let dir = TempDir::new();
    let data = dir.path().join("data");
    let (first, stop, tasks) = start_sampling(&data).await;
    wait_until("two one-second means stored", PATIENCE, || async {
        stored(&first, 1).await.len() >= 2
    })
    .await;
    stop.cancel();
    tasks.close();
    tokio::time::timeout(PATIENCE, tasks.wait())
        .await
        .expect("the first run stops");

    let raw = first.metrics().since(0);
    assert!(
        raw.windows(2).all(|w| w[0].at_ms < w[1].at_ms),
        "the first run's raw samples, in order"
    );
    let seconds = stored(&first, 1).await;
    assert_eq!(fields(&seconds), means(&raw, 1000));
    assert_eq!(fields(&stored(&first, 3).await), means(&raw, 3000));
    drop(first);

    // The next run samples in later buckets, or its first samples would be merged into the
    // first run's last mean (which the unit tests show).
    let end = seconds.last().expect("a stored mean").0 + 1000;
    tokio::time::sleep(Duration::from_millis((end - now_ms()).max(0) as u64)).await;
    let (second, stop, _tasks) = start_sampling(&data).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/watch/metrics?since_ms=0",
        listener.local_addr().unwrap()
    );
    tokio::spawn(axum::serve(listener, watch::admin::router(second.clone())).into_future());
    let reply = testkit::HttpClient::new().get(&url).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let samples: Vec<Sample> = serde_json::from_value(body["samples"].clone()).expect("samples");
    let want: Vec<Sample> = seconds.into_iter().map(|(.., s)| s).collect();
    assert_eq!(samples.get(..want.len()), Some(&want[..]));
    assert_eq!(second.metrics().since(0).get(..want.len()), Some(&want[..]));
    let after: Vec<i64> = samples[want.len()..].iter().map(|s| s.at_ms).collect();
    assert!(
        after.iter().all(|at| *at >= end),
        "only the second run's raw samples after the stored means: {after:?}"
    );
    stop.cancel();
}
