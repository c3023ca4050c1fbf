//! Watch's tables in the node's store: state changes, the alert log, bot users, targets
//! added through the API, the host metrics' averages.
//!
//! Entries 1-4 were global store versions 2, 3, 4 and 6 before each service tracked its own
//! (see `store`'s legacy mapping).

/// Every migration of the watch's tables, in order; handed to
/// [`store::Store::migrate`] under the name `"watch"`. Never edit an entry once released:
/// add one.
pub const MIGRATIONS: &[&str] = &[
    WATCH_LOG,
    WATCH_USERS,
    WATCH_TARGETS,
    WATCH_USER_ACCESS,
    WATCH_HOST_SAMPLES,
];

/// Watch: every state change of every target, and every alert sent (or not) on every channel.
const WATCH_LOG: &str = r#"
CREATE TABLE watch_transitions (
    at_ms INTEGER NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    up INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX watch_transitions_target ON watch_transitions(target, at_ms);
CREATE TABLE watch_alerts (
    at_ms INTEGER NOT NULL,
    target TEXT NOT NULL,
    kind TEXT,
    channel TEXT NOT NULL,
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX watch_alerts_at ON watch_alerts(at_ms);
"#;

/// Watch: people registered with the Telegram bot.
const WATCH_USERS: &str = r#"
CREATE TABLE watch_users (
    chat_id INTEGER PRIMARY KEY,
    name TEXT,
    email TEXT,
    step TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    approved_by INTEGER,
    muted_until_ms INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
"#;

/// Watch: targets added through the admin API (those in the file are not stored).
const WATCH_TARGETS: &str = r#"
CREATE TABLE watch_targets (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"#;

/// Watch: a registration waits for an admin (`access`: pending, approved, denied) and an
/// address gets alert mail only once confirmed with the code mailed to it. People
/// registered before this version must be approved again, except admins.
const WATCH_USER_ACCESS: &str = r#"
ALTER TABLE watch_users ADD COLUMN access TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE watch_users ADD COLUMN email_confirmed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE watch_users ADD COLUMN email_code TEXT;
ALTER TABLE watch_users ADD COLUMN email_code_sent_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE watch_users ADD COLUMN email_code_tries INTEGER NOT NULL DEFAULT 0;
UPDATE watch_users SET access = 'approved' WHERE admin = 1;
"#;

/// Watch: host metrics averaged over each bucket of `resolution_s` seconds starting at
/// `at_ms` (a minute, a quarter hour), so the graphs outlive a restart; `sample` is the mean
/// as the admin API serves it (JSON), `samples` how many raw samples it stands for, so a run
/// restarted within the bucket can merge its own into it. See `metrics`.
const WATCH_HOST_SAMPLES: &str = r#"
CREATE TABLE watch_host_samples (
    resolution_s INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    sample TEXT NOT NULL,
    PRIMARY KEY (resolution_s, at_ms)
);
"#;
