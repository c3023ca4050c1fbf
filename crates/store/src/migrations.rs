//! How the store tracks its schema, and how the one global numbering of earlier releases
//! maps onto per-service versions.
//!
//! Each service owns its tables and hands its migrations to [`crate::Store::migrate`]; the
//! version each service has reached is a row of `schema_migrations`. Releases before that
//! numbered every service's migrations in one list, tracked in `PRAGMA user_version`; a
//! database they wrote is converted once, in place, by [`legacy_versions`].

use std::collections::BTreeMap;

/// `PRAGMA user_version` of a store tracked per service. Far above any global version an
/// earlier release wrote, so such a release refuses the file ("has schema version 1000 but
/// this lintas knows up to 7") instead of misreading tables newer than it knows.
pub(crate) const PER_SERVICE: i64 = 1000;

/// The store's own table: the version each service's migrations have reached.
pub(crate) const SCHEMA_MIGRATIONS: &str = r#"
CREATE TABLE schema_migrations (
    service TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
"#;

/// Which service each migration of the global numbering belonged to: entry `i` took
/// `user_version` from `i` to `i + 1`. Frozen: it describes files already written.
const LEGACY_OWNERS: [&str; 7] = [
    "relay", // relay objects, delivery log, dead letters
    "watch", // state changes, alert log
    "watch", // bot users
    "watch", // targets added through the API
    "relay", // sealed destination passwords
    "watch", // bot users' access and email confirmation
    "relay", // unmatched updates and deletes
];

/// The highest `user_version` an earlier release wrote.
pub(crate) const LEGACY_LATEST: i64 = LEGACY_OWNERS.len() as i64;

/// The per-service versions a database at global version `global` (at most
/// [`LEGACY_LATEST`]) has reached: how many of each service's migrations it has applied.
pub(crate) fn legacy_versions(global: i64) -> BTreeMap<&'static str, i64> {
    let mut versions = BTreeMap::new();
    for owner in LEGACY_OWNERS.iter().take(global.max(0) as usize) {
        *versions.entry(*owner).or_default() += 1;
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_versions_map_to_each_services_count() {
        assert!(legacy_versions(0).is_empty());
        assert_eq!(
            legacy_versions(4),
            BTreeMap::from([("relay", 1), ("watch", 3)])
        );
        assert_eq!(
            legacy_versions(LEGACY_LATEST),
            BTreeMap::from([("relay", 3), ("watch", 4)])
        );
    }
}
