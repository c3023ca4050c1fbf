//! Turning state changes into alerts: down, up, reminders while down, a flapping guard,
//! silences and maintenance windows.
//!
//! Pure logic over explicit times (milliseconds since the Unix epoch), so every rule is
//! tested exactly; the service feeds it transitions as they happen and calls
//! [`Engine::tick`] when [`Engine::next_due`] says something is due.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

/// A target changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The target's name (`web/app2`, `relay/db1`, a configured target's name).
    pub target: String,
    /// Where it is (address or URL), for the message.
    pub detail: String,
    /// Up after the change.
    pub up: bool,
    /// Why (the failed check, the database's error).
    pub reason: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// What an alert says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AlertKind {
    /// The target went down.
    Down,
    /// It is still down (the `n`-th reminder).
    Reminder {
        /// 1 for the first reminder.
        n: u32,
    },
    /// It came back.
    Up,
    /// It changes state too often; alerts about it pause until it settles.
    Flapping,
}

/// One alert, to every channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// The target.
    pub target: String,
    /// Down, reminder, up or flapping.
    #[serde(flatten)]
    pub kind: AlertKind,
    /// Where the target is.
    pub detail: String,
    /// Why it changed.
    pub reason: String,
    /// When the alert was raised.
    pub at_ms: i64,
    /// How long the target has been (or was) down.
    pub down_for_ms: Option<i64>,
    /// The message as people read it.
    pub text: String,
}

/// The engine's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Reminder cadence while down.
    pub repeat: Duration,
    /// This many changes within `flap_window` make a target flapping.
    pub flap_changes: usize,
    /// The flapping window, and how long a flapping target must stay unchanged to settle.
    pub flap_window: Duration,
}

impl Alert {
    /// What happened to which target, in a few words (an email's subject).
    pub fn headline(&self) -> String {
        let what = match self.kind {
            AlertKind::Down => "DOWN",
            AlertKind::Reminder { .. } => "STILL DOWN",
            AlertKind::Up => "UP",
            AlertKind::Flapping => "FLAPPING",
        };
        format!("{what} {}", self.target)
    }
}

/// A pause of alerts for targets matching a pattern (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// Which targets.
    pub pattern: String,
    /// From when (ms since the Unix epoch).
    pub from_ms: i64,
    /// Until when.
    pub until_ms: i64,
    /// Who or what set it (`maintenance`, `silence by Ann`).
    pub reason: String,
}

impl Pause {
    fn covers(&self, target: &str, now: i64) -> bool {
        self.from_ms <= now && now < self.until_ms && glob(&self.pattern, target)
    }
}

/// `*`-only glob.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Debug, Default)]
struct TargetState {
    detail: String,
    reason: String,
    down_since: Option<i64>,
    reminders: u32,
    next_reminder: Option<i64>,
    changes: VecDeque<i64>,
    flapping: bool,
}

/// Alert state of every target.
#[derive(Debug)]
pub struct Engine {
    rules: Rules,
    targets: BTreeMap<String, TargetState>,
    pauses: Vec<Pause>,
}

/// A duration for people: `42s`, `3m 5s`, `2h 10m`.
pub fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

impl Engine {
    /// An engine with no targets yet.
    pub fn new(rules: Rules) -> Self {
        Self {
            rules,
            targets: BTreeMap::new(),
            pauses: Vec::new(),
        }
    }

    /// Pauses alerts (maintenance windows, silences); expired pauses are dropped on
    /// [`Engine::tick`].
    pub fn pause(&mut self, pause: Pause) {
        self.pauses.push(pause);
    }

    /// Ends the pauses with this pattern; returns how many.
    pub fn unpause(&mut self, pattern: &str) -> usize {
        let before = self.pauses.len();
        self.pauses.retain(|p| p.pattern != pattern);
        before - self.pauses.len()
    }

    /// The pauses in force or to come.
    pub fn pauses(&self) -> &[Pause] {
        &self.pauses
    }

    /// Targets currently down, with since when.
    pub fn down(&self) -> Vec<(&str, i64)> {
        self.targets
            .iter()
            .filter_map(|(n, s)| s.down_since.map(|d| (n.as_str(), d)))
            .collect()
    }

    fn paused(&self, target: &str, now: i64) -> bool {
        self.pauses.iter().any(|p| p.covers(target, now))
    }

    /// Whether `t` only repeats the state the engine knows (a target starts up): the
    /// forwarders resend every target's state after missing events, and those repeats are
    /// neither alerts nor history.
    pub fn is_repeat(&self, t: &Transition) -> bool {
        let down = self
            .targets
            .get(&t.target)
            .is_some_and(|s| s.down_since.is_some());
        down != t.up
    }

    /// A state change; returns the alerts to send now.
    pub fn on_transition(&mut self, t: Transition) -> Vec<Alert> {
        if self.is_repeat(&t) {
            return Vec::new();
        }
        let rules = self.rules;
        let paused = self.paused(&t.target, t.at_ms);
        let state = self.targets.entry(t.target.clone()).or_default();
        let was_down = state.down_since;
        state.detail = t.detail.clone();
        state.reason = t.reason.clone();
        state.changes.push_back(t.at_ms);
        let window = rules.flap_window.as_millis() as i64;
        while state.changes.front().is_some_and(|c| *c < t.at_ms - window) {
            state.changes.pop_front();
        }
        let mut out = Vec::new();
        let became_flapping = !state.flapping && state.changes.len() >= rules.flap_changes;
        if t.up {
            state.down_since = None;
            state.next_reminder = None;
            state.reminders = 0;
        } else {
            state.down_since = Some(t.at_ms);
            state.next_reminder = Some(t.at_ms + rules.repeat.as_millis() as i64);
            state.reminders = 0;
        }
        if became_flapping {
            state.flapping = true;
            if !paused {
                out.push(Alert {
                    target: t.target.clone(),
                    kind: AlertKind::Flapping,
                    detail: t.detail,
                    reason: t.reason,
                    at_ms: t.at_ms,
                    down_for_ms: None,
                    text: format!(
                        "FLAPPING {}: {} changes in {}; alerts about it pause until it holds still for {}",
                        t.target,
                        state.changes.len(),
                        human(window),
                        human(window)
                    ),
                });
            }
            return out;
        }
        if state.flapping || paused {
            return out;
        }
        let text = if t.up {
            let down_for = was_down.map_or(0, |d| t.at_ms - d);
            format!(
                "UP {} ({}): back after {}",
                t.target,
                t.detail,
                human(down_for)
            )
        } else {
            format!("DOWN {} ({}): {}", t.target, t.detail, t.reason)
        };
        out.push(Alert {
            target: t.target,
            kind: if t.up { AlertKind::Up } else { AlertKind::Down },
            detail: t.detail,
            reason: t.reason,
            at_ms: t.at_ms,
            down_for_ms: if t.up {
                was_down.map(|d| t.at_ms - d)
            } else {
                Some(0)
            },
            text,
        });
        out
    }

    /// Reminders due at `now`, and flapping targets that settled; drops expired pauses.
    pub fn tick(&mut self, now: i64) -> Vec<Alert> {
        self.pauses.retain(|p| p.until_ms > now);
        let rules = self.rules;
        let window = rules.flap_window.as_millis() as i64;
        let repeat = rules.repeat.as_millis() as i64;
        let paused: Vec<bool> = self
            .targets
            .keys()
            .map(|name| self.pauses.iter().any(|p| p.covers(name, now)))
            .collect();
        let mut out = Vec::new();
        for ((name, state), paused) in self.targets.iter_mut().zip(paused) {
            if state.flapping && state.changes.back().is_none_or(|c| *c <= now - window) {
                state.flapping = false;
                state.changes.clear();
                let (kind, text) = match state.down_since {
                    Some(d) => (
                        AlertKind::Down,
                        format!(
                            "DOWN {name} ({}): settled down, down for {}: {}",
                            state.detail,
                            human(now - d),
                            state.reason
                        ),
                    ),
                    None => (
                        AlertKind::Up,
                        format!("UP {name} ({}): settled up", state.detail),
                    ),
                };
                if let Some(d) = state.down_since {
                    state.next_reminder = Some(now + repeat);
                    state.reminders = 0;
                    let _ = d;
                }
                if !paused {
                    out.push(Alert {
                        target: name.clone(),
                        kind,
                        detail: state.detail.clone(),
                        reason: state.reason.clone(),
                        at_ms: now,
                        down_for_ms: state.down_since.map(|d| now - d),
                        text,
                    });
                }
                continue;
            }
            let (Some(since), Some(due)) = (state.down_since, state.next_reminder) else {
                continue;
            };
            if now < due {
                continue;
            }
            // One reminder however late the tick; the next one a cadence after this.
            state.next_reminder = Some(now + repeat);
            if state.flapping || paused {
                continue;
            }
            state.reminders += 1;
            out.push(Alert {
                target: name.clone(),
                kind: AlertKind::Reminder { n: state.reminders },
                detail: state.detail.clone(),
                reason: state.reason.clone(),
                at_ms: now,
                down_for_ms: Some(now - since),
                text: format!(
                    "STILL DOWN {name} ({}): down for {} (reminder {}): {}",
                    state.detail,
                    human(now - since),
                    state.reminders,
                    state.reason
                ),
            });
        }
        out
    }

    /// When [`Engine::tick`] next has something to do.
    pub fn next_due(&self) -> Option<i64> {
        let window = self.rules.flap_window.as_millis() as i64;
        self.targets
            .values()
            .filter_map(|s| {
                if s.flapping {
                    s.changes.back().map(|c| c + window)
                } else {
                    s.next_reminder
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn rules() -> Rules {
        Rules {
            repeat: Duration::from_secs(10),
            flap_changes: 4,
            flap_window: Duration::from_secs(60),
        }
    }

    fn change(target: &str, up: bool, at_ms: i64) -> Transition {
        Transition {
            target: target.into(),
            detail: "127.0.0.1:8002".into(),
            up,
            reason: if up {
                "HTTP 200".into()
            } else {
                "connection refused".into()
            },
            at_ms,
        }
    }

    #[test]
    fn repeated_states_are_recognised() {
        let mut e = Engine::new(rules());
        assert!(e.is_repeat(&change("a", true, 0)), "targets start up");
        assert!(!e.is_repeat(&change("a", false, 0)));
        e.on_transition(change("a", false, 0));
        assert!(e.is_repeat(&change("a", false, S)));
        assert!(!e.is_repeat(&change("a", true, S)));
    }

    fn texts(alerts: &[Alert]) -> Vec<String> {
        alerts.iter().map(|a| a.text.clone()).collect()
    }

    #[test]
    fn down_reminders_every_repeat_then_up_once() {
        let mut e = Engine::new(rules());
        assert_eq!(
            texts(&e.on_transition(change("web/app2", false, 100 * S))),
            ["DOWN web/app2 (127.0.0.1:8002): connection refused"]
        );
        assert_eq!(
            e.on_transition(change("web/app2", false, 101 * S)),
            [],
            "no change, no alert"
        );
        assert_eq!(e.next_due(), Some(110 * S));
        assert_eq!(e.tick(109 * S), []);
        assert_eq!(
            texts(&e.tick(110 * S)),
            ["STILL DOWN web/app2 (127.0.0.1:8002): down for 10s (reminder 1): connection refused"]
        );
        assert_eq!(
            texts(&e.tick(125 * S)),
            ["STILL DOWN web/app2 (127.0.0.1:8002): down for 25s (reminder 2): connection refused"],
            "a late tick sends one reminder"
        );
        assert_eq!(e.next_due(), Some(135 * S));
        assert_eq!(
            texts(&e.on_transition(change("web/app2", true, 130 * S))),
            ["UP web/app2 (127.0.0.1:8002): back after 30s"]
        );
        assert_eq!(e.next_due(), None);
        assert_eq!(e.tick(200 * S), []);
    }

    #[test]
    fn flapping_sends_one_alert_then_waits_until_it_settles() {
        let mut e = Engine::new(rules());
        let mut all = Vec::new();
        for (i, up) in [false, true, false, true, false, true, false]
            .iter()
            .enumerate()
        {
            all.extend(e.on_transition(change("web/app1", *up, (i as i64) * 5 * S)));
            all.extend(e.tick((i as i64) * 5 * S + 1));
        }
        assert_eq!(
            texts(&all),
            [
                "DOWN web/app1 (127.0.0.1:8002): connection refused",
                "UP web/app1 (127.0.0.1:8002): back after 5s",
                "DOWN web/app1 (127.0.0.1:8002): connection refused",
                "FLAPPING web/app1: 4 changes in 1m 0s; alerts about it pause until it holds still for 1m 0s",
            ]
        );
        assert_eq!(e.next_due(), Some(30 * S + 60 * S));
        assert_eq!(e.tick(89 * S), []);
        assert_eq!(
            texts(&e.tick(90 * S)),
            ["DOWN web/app1 (127.0.0.1:8002): settled down, down for 1m 0s: connection refused"]
        );
        assert_eq!(
            texts(&e.tick(100 * S)),
            [
                "STILL DOWN web/app1 (127.0.0.1:8002): down for 1m 10s (reminder 1): connection refused"
            ]
        );
    }

    #[test]
    fn pauses_silence_matching_targets_until_they_end() {
        let mut e = Engine::new(rules());
        e.pause(Pause {
            pattern: "web/*".into(),
            from_ms: 0,
            until_ms: 120 * S,
            reason: "maintenance".into(),
        });
        assert_eq!(e.on_transition(change("web/app2", false, 100 * S)), []);
        assert_eq!(
            texts(&e.on_transition(change("db/main", false, 100 * S))).len(),
            1
        );
        assert_eq!(
            e.tick(110 * S)
                .iter()
                .map(|a| a.target.as_str())
                .collect::<Vec<_>>(),
            ["db/main"]
        );
        let after = e.tick(121 * S);
        assert_eq!(
            texts(&after),
            [
                "STILL DOWN db/main (127.0.0.1:8002): down for 21s (reminder 2): connection refused",
                "STILL DOWN web/app2 (127.0.0.1:8002): down for 21s (reminder 1): connection refused",
            ],
            "reminders resume when the pause ends"
        );
        assert!(e.pauses().is_empty());
    }

    #[test]
    fn glob_matches_stars() {
        assert!(glob("web/*", "web/app1"));
        assert!(glob("*", "anything"));
        assert!(glob("*/app1", "web/app1"));
        assert!(glob("w*b/*1", "web/app1"));
        assert!(!glob("web/*", "db/main"));
        assert!(!glob("web/app1", "web/app10"));
        assert!(!glob("a*a", "a"));
    }
}
