//! The Telegram bot: registration, alerts to approved people, and commands.
//!
//! It long-polls the Bot API (`getUpdates`, messages only), so it needs no public address;
//! an update it cannot read is skipped, never retried forever. People register with
//! `/start` (name, then a valid email). A registration waits for an admin's `/approve`
//! unless `registration = "open"`: until then the person gets `/help` and a notice, no
//! alerts. Alert mail goes to an address only after it answered the code mailed to it
//! (`/confirm CODE`). Admins are the chat ids in the configuration and the people an admin
//! approved with `/approve ID admin`; nobody can make themself one. Every chat has a rate
//! limit ([`rate`]), and long answers are split to fit Telegram's message limit.
//!
//! | who | commands |
//! |---|---|
//! | anyone | `/start`, `/help`, `/confirm` |
//! | approved | `/status`, `/mute [30m\|off]` |
//! | admins | `/cpu`, `/ram`, `/disk`, `/system`, `/top`, `/pools`, `/silence`, `/approve`, `/deny`, `/users` |

pub mod rate;
pub mod telegram;
pub mod users;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use frankenstein::AsyncTelegramApi;
use frankenstein::methods::GetUpdatesParams;
use frankenstein::response::MethodResponse;
use frankenstein::types::AllowedUpdate;
use frankenstein::updates::{Update, UpdateContent};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::channels::Mailer;
use crate::config::{Registration, TelegramConfig};
use crate::engine::{Pause, human};
use crate::{Watch, now_ms};
use rate::{RateLimit, Verdict};
use telegram::Telegram;
use users::{Access, Confirm, Step, User};

/// Seconds a `getUpdates` call waits for updates on the server.
pub const POLL_TIMEOUT: u32 = 25;

/// Longest email address accepted (RFC 5321's path limit).
const EMAIL_MAX: usize = 254;

/// Whether `s` looks like an email address: `local@domain.tld`, no spaces or control
/// characters, at most 254 bytes.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && s.len() <= EMAIL_MAX
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
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

/// What a chat may do, from the configuration and its registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not (fully) registered.
    Stranger,
    /// Registered, waiting for an admin.
    Pending,
    /// Turned away by an admin.
    Denied,
    /// Approved: alerts, `/status`, `/mute`.
    Member,
    /// Everything.
    Admin,
}

const PENDING: &str = "Your registration waits for an admin's approval.";
pub(crate) const DENIED: &str = "An admin turned your registration away.";

/// The bot of one node.
pub struct Bot {
    api: Telegram,
    watch: Arc<Watch>,
    admins: Vec<i64>,
    registration: Registration,
    mailer: Option<Mailer>,
    limits: Mutex<RateLimit>,
    /// The rate limit as people read it, for the "slow down" answer.
    limit_text: String,
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
    /// A bot answering through `api` about `watch`, as `cfg` says; codes that confirm email
    /// addresses go through `mailer` (without one, no address is confirmed and no alert
    /// mail goes to people).
    pub fn new(
        api: Telegram,
        watch: Arc<Watch>,
        cfg: &TelegramConfig,
        mailer: Option<Mailer>,
    ) -> Self {
        let plural = if cfg.rate_per_minute == 1 { "" } else { "s" };
        Self {
            api,
            watch,
            admins: cfg.admins.clone(),
            registration: cfg.registration,
            mailer,
            limits: Mutex::new(RateLimit::new(cfg.rate_burst, cfg.rate_per_minute)),
            limit_text: format!(
                "Slow down: I answer {} message{plural} a minute after a burst of {}. I ignore you until then.",
                cfg.rate_per_minute, cfg.rate_burst
            ),
        }
    }

    /// Polls for messages and answers them until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        // Admins of the file who registered before registrations needed approval.
        for &admin in &self.admins {
            if let Err(e) = users::set_access(self.watch.store(), admin, Access::Approved).await {
                warn!(chat = admin, error = %e, "cannot mark an admin of the file approved");
            }
        }
        let mut offset: i64 = 0;
        let mut failures: u32 = 0;
        loop {
            let params = GetUpdatesParams::builder()
                .offset(offset)
                .timeout(POLL_TIMEOUT)
                .allowed_updates(vec![AllowedUpdate::Message])
                .build();
            // Updates are read one by one, so one the types do not know is skipped rather
            // than failing the whole batch again and again.
            let updates = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.api.request::<_, MethodResponse<Vec<serde_json::Value>>>("getUpdates", Some(params)) => r,
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
            for raw in updates {
                let Some(id) = raw.get("update_id").and_then(serde_json::Value::as_i64) else {
                    warn!("Telegram sent an update without update_id; skipped");
                    continue;
                };
                offset = offset.max(id + 1);
                match serde_json::from_value::<Update>(raw) {
                    Ok(update) => self.on_update(update).await,
                    Err(e) => {
                        warn!(update_id = id, error = %e, "Telegram update not understood; skipped")
                    }
                }
            }
        }
    }

    async fn on_update(&self, update: Update) {
        let UpdateContent::Message(m) = update.content else {
            return;
        };
        let Some(text) = m.text.as_deref() else {
            return;
        };
        let chat = m.chat.id;
        let verdict = self
            .limits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(chat, std::time::Instant::now());
        let replies = match verdict {
            Verdict::Drop => return,
            Verdict::Warn => vec![(chat, self.limit_text.clone())],
            Verdict::Allow => match self.handle(chat, text).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "bot command failed");
                    vec![(
                        chat,
                        "Something went wrong on the server; try again.".into(),
                    )]
                }
            },
        };
        for (chat, reply) in replies {
            if let Err(e) = self.api.send_text(chat, &reply).await {
                warn!(chat, error = %e, "cannot answer on Telegram");
            }
        }
    }

    fn role(&self, chat: i64, user: Option<&User>) -> Role {
        if self.admins.contains(&chat) {
            return Role::Admin;
        }
        let Some(u) = user else {
            return Role::Stranger;
        };
        match u.access {
            Access::Denied => Role::Denied,
            Access::Approved if u.admin => Role::Admin,
            _ if !u.registered() => Role::Stranger,
            Access::Approved => Role::Member,
            Access::Pending => Role::Pending,
        }
    }

    /// The answers to `text` from `chat`.
    pub async fn handle(&self, chat: i64, text: &str) -> Result<Replies, sqlx::Error> {
        let store = self.watch.store();
        let user = users::get(store, chat).await?;
        let role = self.role(chat, user.as_ref());
        let text = text.trim();
        let one = |s: String| Ok(vec![(chat, s)]);
        if role == Role::Denied {
            return one(DENIED.into());
        }
        if !text.starts_with('/') {
            return match user.as_ref().map(|u| u.step) {
                Some(Step::Name) => {
                    let name = users::clean_name(text);
                    if name.is_empty() {
                        return one("A name needs letters. What is your name?".into());
                    }
                    users::set_name(store, chat, &name).await?;
                    one(format!("Thanks, {name}. What is your email address?"))
                }
                Some(Step::Email) if valid_email(text) => {
                    self.finish_registration(chat, user.as_ref(), role, text)
                        .await
                }
                Some(Step::Email) => one(format!(
                    "\"{}\" is not an email address (like name@example.com). What is your email address?",
                    users::clean_name(text)
                )),
                _ if role == Role::Pending => one(PENDING.into()),
                _ => one(help(role)),
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
            "/cpu", "/ram", "/disk", "/system", "/top", "/pools", "/silence", "/approve", "/deny",
            "/users",
        ];
        let gated = USER.contains(&command) || ADMIN.contains(&command);
        match command {
            "/start" => {
                match user.filter(User::registered) {
                    Some(u) => one(format!(
                        "You are registered as {} <{}>. {}",
                        u.name.unwrap_or_default(),
                        u.email.unwrap_or_default(),
                        if role == Role::Pending {
                            PENDING
                        } else {
                            "/help lists what you can ask."
                        }
                    )),
                    None => {
                        users::start(store, chat).await?;
                        one("Hello! lintas sends alerts about your servers here. What is your name?".into())
                    }
                }
            }
            "/help" => one(help(role)),
            "/confirm" => one(self.confirm(chat, user.as_ref(), &args).await?),
            _ if gated && role == Role::Pending => one(PENDING.into()),
            _ if gated && role == Role::Stranger => one("Send /start to register first.".into()),
            c if ADMIN.contains(&c) && role != Role::Admin => one(format!(
                "{c} is for admins. An admin can /approve you: your chat id is {chat}."
            )),
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
            "/deny" => self.deny(chat, &args).await,
            "/users" => one(users_list(&users::all(store).await?)),
            _ => one(format!(
                "Unknown command {}.\n{}",
                users::clean_name(command),
                help(role)
            )),
        }
    }

    /// `chat` gave a valid `email`: registration is done. Approved at once when the file
    /// makes them an admin, registration is open or an admin approved them before;
    /// otherwise the admins hear of it (the first time only, so re-registering cannot
    /// flood them). A code goes to the address.
    async fn finish_registration(
        &self,
        chat: i64,
        user: Option<&User>,
        role: Role,
        email: &str,
    ) -> Result<Replies, sqlx::Error> {
        let store = self.watch.store();
        let first_time = user.is_none_or(|u| u.email.is_none());
        users::set_email(store, chat, email).await?;
        let approved = role == Role::Admin
            || self.registration == Registration::Open
            || user.is_some_and(|u| u.access == Access::Approved);
        if approved {
            users::set_access(store, chat, Access::Approved).await?;
        }
        let name = user.and_then(|u| u.name.clone()).unwrap_or_default();
        let mut lines = vec![format!("Registered as {name} <{email}>.")];
        lines.push(if approved {
            let admin = if role == Role::Admin {
                " You are an admin."
            } else {
                ""
            };
            format!("You will get alerts when something goes down and when it is back.{admin}")
        } else {
            format!("An admin must approve you before you get alerts (your chat id is {chat}); I will tell you here.")
        });
        if self.mailer.is_some() {
            lines.push(self.mail_code(chat, email).await?);
        }
        if approved {
            lines.push("/help lists what you can ask.".into());
        }
        let mut replies = vec![(chat, lines.join("\n"))];
        if !approved && first_time {
            let notice = format!(
                "New registration: {name} ({chat}) <{email}>.\n/approve {chat} lets them in, /deny {chat} turns them away."
            );
            let mut admins = self.admins.clone();
            admins.extend(users::admins(store).await?);
            admins.sort_unstable();
            admins.dedup();
            replies.extend(admins.into_iter().map(|a| (a, notice.clone())));
        }
        Ok(replies)
    }

    /// Mails a new code to `email`; says what happened.
    async fn mail_code(&self, chat: i64, email: &str) -> Result<String, sqlx::Error> {
        let Some(mailer) = &self.mailer else {
            return Ok("This server sends no email.".into());
        };
        let code = format!("{:06}", rand::random_range(0..1_000_000u32));
        if !users::set_code(self.watch.store(), chat, &code, now_ms()).await? {
            return Ok(
                "I mailed a code less than a minute ago; send /confirm in a minute for a new one."
                    .into(),
            );
        }
        let body = format!(
            "Send /confirm {code} to the lintas bot to get its alerts at this address.\nThe code is good for an hour. If you did not ask for this, ignore this mail."
        );
        Ok(
            match mailer
                .send(email, "[lintas] your confirmation code", &body)
                .await
            {
                Ok(()) => format!(
                    "I mailed a code to {email}: send /confirm CODE to get alerts by email too."
                ),
                Err(e) => {
                    warn!(chat, error = %e, "cannot mail a confirmation code");
                    format!("I could not mail a code to {email}; send /confirm to try again.")
                }
            },
        )
    }

    /// `/confirm CODE` confirms the address; `/confirm` alone mails a new code.
    async fn confirm(
        &self,
        chat: i64,
        user: Option<&User>,
        args: &[&str],
    ) -> Result<String, sqlx::Error> {
        let Some(email) = user
            .filter(|u| u.registered())
            .and_then(|u| u.email.clone())
        else {
            return Ok("Send /start to register first.".into());
        };
        if user.is_some_and(|u| u.email_confirmed) {
            return Ok(format!("{email} is confirmed already."));
        }
        let [code] = args else {
            return self.mail_code(chat, &email).await;
        };
        Ok(
            match users::confirm(self.watch.store(), chat, code, now_ms()).await? {
                Confirm::Confirmed => format!("{email} is confirmed: alerts come by email too."),
                Confirm::Wrong(left) if left > 0 => format!(
                    "That is not the code I mailed to {email}; {left} tries left. /confirm alone mails a new one."
                ),
                Confirm::Wrong(_) | Confirm::NoCode => {
                    "That code is no longer good. /confirm alone mails a new one.".into()
                }
            },
        )
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
        let (target, admin) = match args {
            [id] => (id.parse::<i64>().ok(), false),
            [id, "admin"] => (id.parse::<i64>().ok(), true),
            _ => (None, false),
        };
        let Some(target) = target else {
            return Ok(vec![(
                chat,
                "Usage: /approve CHAT_ID lets a registration in, /approve CHAT_ID admin makes an admin (/users lists them)".into(),
            )]);
        };
        let Some(user) = users::get(store, target).await?.filter(User::registered) else {
            return Ok(vec![(
                chat,
                format!("No registered user with chat id {target}."),
            )]);
        };
        let by = me.map_or_else(|| chat.to_string(), User::label);
        if admin {
            users::approve(store, target, chat).await?;
            return Ok(vec![
                (chat, format!("{} is now an admin.", user.label())),
                (
                    target,
                    format!(
                        "You are now an admin (approved by {by}). /help lists the admin commands."
                    ),
                ),
            ]);
        }
        users::set_access(store, target, Access::Approved).await?;
        Ok(vec![
            (
                chat,
                format!("{} is approved: they get alerts now.", user.label()),
            ),
            (
                target,
                format!(
                    "An admin ({by}) approved you: you get alerts now. /help lists what you can ask."
                ),
            ),
        ])
    }

    /// `/deny CHAT_ID`: turns a registration away (or takes back an approval).
    async fn deny(&self, chat: i64, args: &[&str]) -> Result<Replies, sqlx::Error> {
        let store = self.watch.store();
        let Some(target) = args.first().and_then(|a| a.parse::<i64>().ok()) else {
            return Ok(vec![(
                chat,
                "Usage: /deny CHAT_ID (/users lists them)".into(),
            )]);
        };
        if self.admins.contains(&target) {
            return Ok(vec![(
                chat,
                format!("{target} is an admin in the configuration file; remove it there."),
            )]);
        }
        let Some(user) = users::get(store, target).await? else {
            return Ok(vec![(
                chat,
                format!("No registration with chat id {target}."),
            )]);
        };
        users::set_access(store, target, Access::Denied).await?;
        Ok(vec![
            (
                chat,
                format!("{} is turned away: no alerts, no answers.", user.label()),
            ),
            (target, DENIED.into()),
        ])
    }
}

fn help(role: Role) -> String {
    let mut out = String::from("/start - register for alerts\n/help - this list");
    match role {
        Role::Member | Role::Admin => out.push_str(
            "\n/status - what is down\n/mute 1h - no alerts to you for a while (/mute off)\n/confirm - confirm your email address",
        ),
        Role::Pending => {
            out.push('\n');
            out.push_str(PENDING);
        }
        Role::Stranger | Role::Denied => {}
    }
    if role == Role::Admin {
        out.push_str(
            "\n/cpu /ram /disk /system /top - this server\n/pools - the load balancer's backends\n/silence web/* 30m - pause alerts (/silence off web/*)\n/approve CHAT_ID - let a registration in (/approve CHAT_ID admin: make an admin)\n/deny CHAT_ID - turn a registration away\n/users - who is registered",
        );
    }
    out
}

fn users_list(all: &[User]) -> String {
    let registered: Vec<&User> = all.iter().filter(|u| u.registered()).collect();
    let mut lines = vec![format!("{} registered:", registered.len())];
    for u in registered {
        let role = match (u.access, u.admin) {
            (Access::Denied, _) => " denied",
            (Access::Pending, _) => " pending",
            (Access::Approved, true) => " admin",
            (Access::Approved, false) => "",
        };
        lines.push(format!(
            "{} {} <{}>{role}{}",
            u.chat_id,
            u.name.as_deref().unwrap_or_default(),
            u.email.as_deref().unwrap_or_default(),
            if u.email_confirmed {
                ""
            } else {
                " (email not confirmed)"
            }
        ));
    }
    lines.join("\n")
}
