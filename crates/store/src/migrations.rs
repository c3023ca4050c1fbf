//! The store's schema, one entry per version; never edit an entry once released, add one.

/// Every migration in order; entry `i` takes the schema from version `i` to `i + 1`.
pub(crate) const ALL: &[&str] = &[
    RELAY_OBJECTS,
    WATCH_LOG,
    WATCH_USERS,
    WATCH_TARGETS,
    RELAY_PASSWORDS,
    WATCH_USER_ACCESS,
    RELAY_UNMATCHED,
];

/// Relay applications, destinations and routes; the delivery log (one row per delivered
/// batch and application, so successes cost one row per batch) and dead letters (one row per
/// rejected record, in full).
const RELAY_OBJECTS: &str = r#"
CREATE TABLE relay_applications (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_hash BLOB NOT NULL UNIQUE,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    rotated_ms INTEGER
);
CREATE TABLE relay_destinations (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    password_env TEXT,
    max_connections INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE relay_routes (
    id INTEGER PRIMARY KEY,
    application_id INTEGER NOT NULL REFERENCES relay_applications(id) ON DELETE CASCADE,
    destination_id INTEGER NOT NULL REFERENCES relay_destinations(id) ON DELETE CASCADE,
    table_schema TEXT,
    table_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    columns TEXT NOT NULL,
    keys TEXT NOT NULL,
    declared INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE INDEX relay_routes_application ON relay_routes(application_id);
CREATE TABLE relay_batches (
    destination_id INTEGER NOT NULL,
    application_id INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    records INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX relay_batches_offsets ON relay_batches(destination_id, last_offset);
CREATE INDEX relay_batches_at ON relay_batches(at_ms);
CREATE TABLE relay_dead_letters (
    destination_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    application_id INTEGER NOT NULL,
    route_id INTEGER NOT NULL,
    error TEXT NOT NULL,
    data_sent TEXT NOT NULL,
    row_values TEXT NOT NULL,
    status TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, record_offset, route_id)
);
CREATE INDEX relay_dead_letters_at ON relay_dead_letters(at_ms);
"#;

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

/// Relay: destination passwords given through the admin API, encrypted.
const RELAY_PASSWORDS: &str = r#"
ALTER TABLE relay_destinations ADD COLUMN password_enc TEXT;
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

/// Relay: records whose update or delete matched no row at a destination (one row each,
/// only for those; kept for `retention` like the delivery log).
const RELAY_UNMATCHED: &str = r#"
CREATE TABLE relay_unmatched (
    destination_id INTEGER NOT NULL,
    record_offset INTEGER NOT NULL,
    route_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination_id, record_offset, route_id)
);
CREATE INDEX relay_unmatched_at ON relay_unmatched(at_ms);
"#;
