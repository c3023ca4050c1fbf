//! Telling a record the database refuses from a database that cannot be used.
//!
//! The difference decides everything downstream: a refused record is dead-lettered and the
//! records behind it flow on; a failing database keeps every record and is retried with
//! backoff. Errors fall in five groups:
//!
//! - **data errors** lintas knows (constraint, type, range): the record's fault;
//! - **other statement errors** the database raised for this statement (an index
//!   expression that raises, a trigger's `SIGNAL`, a key too long for its index, a
//!   generated column over bad JSON): the record's fault *if the server is alive*, which
//!   the worker checks with a ping before isolating rows;
//! - **contention** (lock waits, deadlocks, serialization failures, statement timeouts):
//!   retried; only a batch that keeps failing this way `max_attempts` times has its first
//!   record tried alone and, if it fails again, dead-lettered;
//! - **schema drift** (a table or column gone): the route is checked again, and only its
//!   records are dead-lettered;
//! - everything else (connection, I/O, authentication, privileges, read-only, disk full):
//!   the database's fault; records are held. Holding is recoverable, dead-lettering good
//!   records is not.

use sqlx::error::ErrorKind;

/// What a failed statement means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// This record's values are refused (constraint, type, range); retrying will not help.
    Record(String),
    /// The database refused the statement for a reason lintas does not know: the record's
    /// fault once a ping shows the server is alive.
    Statement(String),
    /// A lock wait, deadlock or timeout: retry; the record's fault only when it keeps
    /// failing alone.
    Contention(String),
    /// The table or a column the statement names does not exist (any more).
    Schema(String),
    /// The database is unreachable, failing or misconfigured; retry later.
    Destination(String),
}

impl Failure {
    /// The database's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Record(m)
            | Self::Statement(m)
            | Self::Contention(m)
            | Self::Schema(m)
            | Self::Destination(m) => m,
        }
    }
}

/// MySQL/MariaDB error numbers that reject a row's data: NOT NULL (1048), no default (1364),
/// duplicate key (1062), out of range (1264, 1690), truncated (1265), bad date (1292),
/// incorrect value (1366), too long (1406), foreign key (1451, 1452), check (3819, 4025).
const MYSQL_RECORD_ERRORS: &[u16] = &[
    1048, 1062, 1264, 1265, 1292, 1364, 1366, 1406, 1451, 1452, 1690, 3819, 4025,
];

/// MySQL/MariaDB lock wait timeout (1205), deadlock (1213), query interrupted (1317),
/// statement time limits (1969 MariaDB, 3024 MySQL).
const MYSQL_CONTENTION: &[u16] = &[1205, 1213, 1317, 1969, 3024];

/// MySQL/MariaDB unknown column (1054), unknown table (1146).
const MYSQL_SCHEMA: &[u16] = &[1054, 1146];

/// MySQL/MariaDB errors about the server or the account, not the statement: too many
/// connections (1040), access denied (1044, 1045, 1142, 1143, 1227), unknown database
/// (1049), disk or table full (1021, 1114), out of memory (1037, 1038), shutting down
/// (1053), read-only (1290, 1792, 1836), killed (1927), too many locks (1206).
const MYSQL_DESTINATION: &[u16] = &[
    1021, 1037, 1038, 1040, 1044, 1045, 1049, 1053, 1114, 1142, 1143, 1206, 1227, 1290, 1792, 1836,
    1927,
];

/// Classifies `e`.
pub fn classify(e: &sqlx::Error) -> Failure {
    let message = e.to_string();
    let sqlx::Error::Database(db) = e else {
        return Failure::Destination(message);
    };
    let make: fn(String) -> Failure = match db.kind() {
        ErrorKind::UniqueViolation
        | ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation => Failure::Record,
        _ => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                mysql(my.number())
            } else if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                postgres(db.code().as_deref().unwrap_or_default())
            } else {
                sqlite(
                    db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0),
                    db.message(),
                )
            }
        }
    };
    make(message)
}

fn mysql(number: u16) -> fn(String) -> Failure {
    if MYSQL_RECORD_ERRORS.contains(&number) {
        Failure::Record
    } else if MYSQL_CONTENTION.contains(&number) {
        Failure::Contention
    } else if MYSQL_SCHEMA.contains(&number) {
        Failure::Schema
    } else if MYSQL_DESTINATION.contains(&number) || number >= 2000 {
        // 2000 and up are client-side errors (connection lost, server gone).
        Failure::Destination
    } else {
        Failure::Statement
    }
}

/// By SQLSTATE class: 22 data exception and 23 integrity constraint violation are the
/// record's; 40 (rollback), 55P03 (lock not available) and 57014 (statement timeout) are
/// contention; 42P01/42703/3F000 (undefined table, column or schema) schema drift;
/// connection (08), transaction state such as read-only (25), authorization (28, 42501),
/// missing database (3D), resources (53), operator intervention (57), system (58),
/// configuration (F0) and internal (XX) the database's; anything else is the statement's.
fn postgres(code: &str) -> fn(String) -> Failure {
    let class = code.get(..2).unwrap_or_default();
    match (class, code) {
        ("22" | "23", _) => Failure::Record,
        ("40", _) | (_, "55P03" | "57014") => Failure::Contention,
        (_, "42P01" | "42703" | "3F000") => Failure::Schema,
        ("08" | "25" | "28" | "3D" | "53" | "57" | "58" | "F0" | "XX", _) | (_, "42501") => {
            Failure::Destination
        }
        _ => Failure::Statement,
    }
}

/// By primary result code (the low byte of the extended code): CONSTRAINT (19) and
/// MISMATCH (20) are the record's; BUSY (5) and LOCKED (6) contention; plain ERROR (1) is
/// the statement's unless it names a missing table or column; the rest (I/O, read-only,
/// full, corrupt, permissions) the database's.
fn sqlite(code: i32, message: &str) -> fn(String) -> Failure {
    match code & 0xff {
        19 | 20 => Failure::Record,
        5 | 6 => Failure::Contention,
        1 if ["no such table", "no such column", "has no column named"]
            .iter()
            .any(|m| message.contains(m)) =>
        {
            Failure::Schema
        }
        1 => Failure::Statement,
        _ => Failure::Destination,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(f: fn(String) -> Failure) -> Failure {
        f(String::new())
    }

    #[test]
    fn postgres_classes() {
        let e = Failure::Statement(String::new());
        assert_eq!(kind(postgres("54000")), e, "index key too long");
        assert_eq!(kind(postgres("P0001")), e, "raised by a function");
        assert_eq!(kind(postgres("22P02")), Failure::Record(String::new()));
        assert_eq!(kind(postgres("40P01")), Failure::Contention(String::new()));
        assert_eq!(kind(postgres("55P03")), Failure::Contention(String::new()));
        assert_eq!(kind(postgres("42703")), Failure::Schema(String::new()));
        for down in ["25006", "42501", "53100", "57P01", "08006", "28P01"] {
            assert_eq!(
                kind(postgres(down)),
                Failure::Destination(String::new()),
                "{down}"
            );
        }
    }

    #[test]
    fn mysql_numbers() {
        assert_eq!(
            kind(mysql(1644)),
            Failure::Statement(String::new()),
            "SIGNAL"
        );
        assert_eq!(kind(mysql(1366)), Failure::Record(String::new()));
        assert_eq!(kind(mysql(1205)), Failure::Contention(String::new()));
        assert_eq!(kind(mysql(1054)), Failure::Schema(String::new()));
        for down in [1290, 1045, 2013] {
            assert_eq!(
                kind(mysql(down)),
                Failure::Destination(String::new()),
                "{down}"
            );
        }
    }

    #[test]
    fn sqlite_codes() {
        assert_eq!(
            kind(sqlite(1, "malformed JSON")),
            Failure::Statement(String::new())
        );
        assert_eq!(
            kind(sqlite(1, "table events has no column named total")),
            Failure::Schema(String::new())
        );
        assert_eq!(kind(sqlite(2067, "UNIQUE")), Failure::Record(String::new()));
        assert_eq!(kind(sqlite(5, "busy")), Failure::Contention(String::new()));
        assert_eq!(
            kind(sqlite(8, "readonly")),
            Failure::Destination(String::new())
        );
    }
}
