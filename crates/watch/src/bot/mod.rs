//! The Telegram bot: registration, alerts to registered people, and commands.
//!
//! It long-polls the Bot API (`getUpdates`), so it needs no public address. People register
//! with `/start` (name, then a valid email). Admins are the chat ids in the configuration
//! and the people an admin approved with `/approve`; nobody can make themself one.
//!
//! | who | commands |
//! |---|---|
//! | anyone | `/start`, `/help` |
//! | registered | `/status`, `/mute [30m\|off]` |
//! | admins | `/cpu`, `/ram`, `/disk`, `/system`, `/top`, `/pools`, `/silence`, `/approve`, `/users` |

pub mod telegram;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use frankenstein::AsyncTelegramApi;
use frankenstein::methods::{GetUpdatesParams, SendMessageParams};
use frankenstein::updates::UpdateContent;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::engine::{Pause, human};
use crate::{Watch, now_ms};
use telegram::Telegram;
use users::{Step, User};

/// Seconds a `getUpdates` call waits for updates on the server.
pub const POLL_TIMEOUT: u32 = 25;

/// Whether `s` looks like an email address: `local@domain.tld`, no spaces.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|l| !l.is_empty())
}

fn gib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else {
        format!("{:.0} MiB", b / 1024.0 / 1024.0)
    }
}

fn percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// The bot of one node.
pub struct Bot {
    api: Telegram,
    watch: Arc<Watch>,
    admins: Vec<i64>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

/// Replies: (chat, text).
type Replies = Vec<(i64, String)>;

impl Bot {
    /// A bot answering through `api` about `watch`.
    pub fn new(api: Telegram, watch: Arc<Watch>, admins: Vec<i64>) -> Self {
        Self { api, watch, admins }
    }

    /// Polls for messages and answers them until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut offset: i64 = 0;
        let mut failures: u32 = 0;
        loop {
            let params = GetUpdatesParams::builder()
                .offset(offset)
                .timeout(POLL_TIMEOUT)
                .build();
            let updates = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.api.get_updates(&params) => r,
            };
            let updates = match updates {
                Ok(u) => {
                    failures = 0;
                    u.result
                }
                Err(e) => {
                    failures += 1;
                    let pause = Duration::from_secs(1 << failures.min(5));
                    warn!(error = %e, retry_in = ?pause, "Telegram getUpdates failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            };
            for update in updates {
                offset = i64::from(update.update_id) + 1;
                let UpdateContent::Message(m) = update.content else {
                    continue;
                };
                let Some(text) = m.text.as_deref() else {
                    continue;
                };
                let replies = match self.handle(m.chat.id, text).await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(error = %e, "bot command failed");
                        vec![(
                            m.chat.id,
                            "Something went wrong on the server; try again.".into(),
                        )]
                    }
                };
                for (chat, reply) in replies {
                    if let Err(e) = self.send(chat, &reply).await {
                        warn!(chat, error = %e, "cannot answer on Telegram");
                    }
                }
            }
        }
    }

    /// Sends `text` to `chat`.
    pub async fn send(&self, chat: i64, text: &str) -> Result<(), telegram::TelegramError> {
        let params = SendMessageParams::builder()
            .chat_id(chat)
            .text(text)
            .build();
        self.api.send_message(&params).await.map(|_| ())
    }

    /// The answers to `text` from `chat`.
    pub async fn handle(&self, chat: i64, text: &str) -> Result<Replies, sqlx::Error> {
        let store = self.watch.store();
        let user = users::get(store, chat).await?;
        let registered = user.as_ref().is_some_and(User::registered);
        let admin = self.admins.contains(&chat) || user.as_ref().is_some_and(|u| u.admin);
        let text = text.trim();
        let one = |s: String| Ok(vec![(chat, s)]);
        if !text.starts_with('/') {
            return match user.as_ref().map(|u| u.step) {
                Some(Step::Name) => {
                    users::set_name(store, chat, text).await?;
                    one(format!("Thanks, {text}. What is your email address?"))
                }
                Some(Step::Email) if valid_email(text) => {
                    users::set_email(store, chat, text).await?;
                    let name = user.and_then(|u| u.name).unwrap_or_default();
                    let role = if admin { " You are an admin." } else { "" };
                    one(format!(
                        "Registered as {name} <{text}>. You will get alerts when something goes down and when it is back.{role} /help lists what you can ask."
                    ))
                }
                Some(Step::Email) => one(format!(
                    "\"{text}\" is not an email address (like name@example.com). What is your email address?"
                )),
                _ => one(help(registered, admin)),
            };
        }
        let mut words = text.split_whitespace();
        let command = words
            .next()
            .unwrap_or_default()
            .split('@')
            .next()
            .unwrap_or_default();
        let args: Vec<&str> = words.collect();
        const USER: &[&str] = &["/status", "/mute"];
        const ADMIN: &[&str] = &[
            "/cpu", "/ram", "/disk", "/system", "/top", "/pools", "/silence", "/approve", "/users",
        ];
        match command {
            "/start" => {
                match user.filter(User::registered) {
                    Some(u) => one(format!(
                        "You are registered as {} <{}>. /help lists what you can ask.",
                        u.name.unwrap_or_default(),
                        u.email.unwrap_or_default()
                    )),
                    None => {
                        users::start(store, chat).await?;
                        one("Hello! lintas sends alerts about your servers here. What is your name?".into())
                    }
                }
            }
            "/help" => one(help(registered, admin)),
            c if ADMIN.contains(&c) && !admin => one(if registered {
                format!("{c} is for admins. An admin can /approve you: your chat id is {chat}.")
            } else {
                "Send /start to register first.".into()
            }),
            c if USER.contains(&c) && !registered && !admin => {
                one("Send /start to register first.".into())
            }
            "/status" => one(self.status()),
            "/mute" => {
                let until = match args.first() {
                    Some(&"off") => 0,
                    Some(d) => match configkit::parse_duration(d) {
                        Ok(d) => now_ms() + d.as_millis() as i64,
                        Err(_) => return one("Usage: /mute 30m, /mute 2h or /mute off".into()),
                    },
                    None => now_ms() + 3_600_000,
                };
                users::mute(store, chat, until).await?;
                one(if until == 0 {
                    "Alerts are on again.".into()
                } else {
                    format!(
                        "No alerts to you for {}. /mute off turns them back on.",
                        human(until - now_ms())
                    )
                })
            }
            "/cpu" => one(self.cpu().await),
            "/ram" => one(self.ram().await),
            "/disk" => one(self.disk().await),
            "/system" => one(self.system().await),
            "/top" => one(self.top().await),
            "/pools" => one(self.watch.pools_summary()),
            "/silence" => one(self.silence(chat, user.as_ref(), &args)),
            "/approve" => self.approve(chat, user.as_ref(), &args).await,
            "/users" => one(users_list(&users::all(store).await?)),
            other => one(format!(
                "Unknown command {other}.\n{}",
                help(registered, admin)
            )),
        }
    }

    fn status(&self) -> String {
        let down = self.watch.down();
        if down.is_empty() {
            return "Everything watched is up.".into();
        }
        let now = now_ms();
        let lines: Vec<String> = down
            .iter()
            .map(|(t, since)| format!("{t} down for {}", human(now - since)))
            .collect();
        format!("Down:\n{}", lines.join("\n"))
    }

    async fn cpu(&self) -> String {
        let Some(s) = self.watch.metrics().latest().await else {
            return "No sample yet.".into();
        };
        let cores: Vec<String> = s.cores.iter().map(|c| format!("{c:.0}%")).collect();
        format!(
            "CPU {:.0}% ({} cores: {})\nload {:.2} {:.2} {:.2}",
            s.cpu,
            s.cores.len(),
            cores.join(" "),
            s.load[0],
            s.load[1],
            s.load[2]
        )
    }

    async fn ram(&self) -> String {
        let Some(s) = self.watch.metrics().latest().await else {
            return "No sample yet.".into();
        };
        format!(
            "RAM {} of {} ({}%)\nswap {} of {}",
            gib(s.mem_used),
            gib(s.mem_total),
            percent(s.mem_used, s.mem_total),
            gib(s.swap_used),
            gib(s.swap_total)
        )
    }

    async fn disk(&self) -> String {
        let Some(s) = self.watch.metrics().latest().await else {
            return "No sample yet.".into();
        };
        let lines: Vec<String> = s
            .disks
            .iter()
            .map(|d| {
                format!(
                    "{} {} of {} ({}%)",
                    d.mount,
                    gib(d.used),
                    gib(d.total),
                    percent(d.used, d.total)
                )
            })
            .collect();
        if lines.is_empty() {
            "No disks found.".into()
        } else {
            lines.join("\n")
        }
    }

    async fn system(&self) -> String {
        let metrics = self.watch.metrics();
        let info = metrics.info();
        let up = human(info.uptime_s as i64 * 1000);
        let mut out = format!(
            "{}\n{}\nkernel {}\nup {up}, {} cores",
            info.hostname, info.os, info.kernel, info.cores
        );
        if let Some(s) = metrics.latest().await {
            out.push_str(&format!(
                "\nCPU {:.0}%  RAM {}%  load {:.2}",
                s.cpu,
                percent(s.mem_used, s.mem_total),
                s.load[0]
            ));
        }
        out
    }

    async fn top(&self) -> String {
        let list = self.watch.metrics().top(5).await;
        let lines: Vec<String> = list
            .iter()
            .map(|p| format!("{} {} {:.0}% {}", p.pid, p.name, p.cpu, gib(p.mem)))
            .collect();
        format!("Top processes (pid name CPU RAM):\n{}", lines.join("\n"))
    }

    fn silence(&self, chat: i64, user: Option<&User>, args: &[&str]) -> String {
        match args {
            [] => {
                let pauses = self.watch.pauses();
                if pauses.is_empty() {
                    return "No silences. /silence web/* 30m pauses alerts for matching targets.".into();
                }
                let now = now_ms();
                let lines: Vec<String> = pauses
                    .iter()
                    .map(|p| format!("{} for {} ({})", p.pattern, human(p.until_ms - now), p.reason))
                    .collect();
                lines.join("\n")
            }
            ["off", pattern] => match self.watch.unpause(pattern) {
                0 => format!("No silence for {pattern}."),
                _ => format!("Alerts for {pattern} are on again."),
            },
            [pattern, duration] => match configkit::parse_duration(duration) {
                Ok(d) => {
                    let now = now_ms();
                    let who = user.map_or_else(|| chat.to_string(), User::label);
                    self.watch.pause(Pause {
                        pattern: (*pattern).to_owned(),
                        from_ms: now,
                        until_ms: now + d.as_millis() as i64,
                        reason: format!("silence by {who}"),
                    });
                    format!("No alerts for {pattern} for {}. /silence off {pattern} ends it.", human(d.as_millis() as i64))
                }
                Err(_) => "Usage: /silence PATTERN DURATION (like /silence web/* 30m), /silence off PATTERN".into(),
            },
            _ => "Usage: /silence PATTERN DURATION (like /silence web/* 30m), /silence off PATTERN".into(),
        }
    }

    async fn approve(
        &self,
        chat: i64,
        me: Option<&User>,
        args: &[&str],
    ) -> Result<Replies, sqlx::Error> {
        let store = self.watch.store();
        let Some(target) = args.first().and_then(|a| a.parse::<i64>().ok()) else {
            return Ok(vec![(
                chat,
                "Usage: /approve CHAT_ID (/users lists them)".into(),
            )]);
        };
        let Some(user) = users::get(store, target).await?.filter(User::registered) else {
            return Ok(vec![(
                chat,
                format!("No registered user with chat id {target}."),
            )]);
        };
        users::approve(store, target, chat).await?;
        let by = me.map_or_else(|| chat.to_string(), User::label);
        Ok(vec![
            (chat, format!("{} is now an admin.", user.label())),
            (
                target,
                format!("You are now an admin (approved by {by}). /help lists the admin commands."),
            ),
        ])
    }
}

fn help(registered: bool, admin: bool) -> String {
    let mut out = String::from("/start - register for alerts\n/help - this list");
    if registered || admin {
        out.push_str(
            "\n/status - what is down\n/mute 1h - no alerts to you for a while (/mute off)",
        );
    }
    if admin {
        out.push_str(
            "\n/cpu /ram /disk /system /top - this server\n/pools - the load balancer's backends\n/silence web/* 30m - pause alerts (/silence off web/*)\n/approve CHAT_ID - make a user an admin\n/users - who is registered",
        );
    }
    out
}

fn users_list(all: &[User]) -> String {
    let registered: Vec<&User> = all.iter().filter(|u| u.registered()).collect();
    let mut lines = vec![format!("{} registered:", registered.len())];
    for u in registered {
        lines.push(format!(
            "{} {} <{}>{}",
            u.chat_id,
            u.name.as_deref().unwrap_or_default(),
            u.email.as_deref().unwrap_or_default(),
            if u.admin { " admin" } else { "" }
        ));
    }
    lines.join("\n")
}
