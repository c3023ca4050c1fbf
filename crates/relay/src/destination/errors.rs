//! Telling a record the database refuses from a database that cannot be used.
//!
//! The difference decides everything downstream: a refused record is dead-lettered and the
//! records behind it flow on; a failing database keeps every record and is retried with
//! backoff. When unsure, lintas assumes the database is at fault — holding records is
//! recoverable, dead-lettering good ones is not.

use sqlx::error::ErrorKind;

/// What a failed statement means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// This record's values are refused (constraint, type, range); retrying will not help.
    Record(String),
    /// The database is unreachable, failing or misconfigured; retry later.
    Destination(String),
}

/// MySQL/MariaDB error numbers that reject a row's data: NOT NULL (1048), no default (1364),
/// duplicate key (1062), out of range (1264, 1690), truncated (1265), bad date (1292),
/// incorrect value (1366), too long (1406), foreign key (1451, 1452), check (3819, 4025).
const MYSQL_RECORD_ERRORS: &[u16] = &[
    1048, 1062, 1264, 1265, 1292, 1364, 1366, 1406, 1451, 1452, 1690, 3819, 4025,
];

/// Classifies `e`.
pub fn classify(e: &sqlx::Error) -> Failure {
    let message = e.to_string();
    let sqlx::Error::Database(db) = e else {
        return Failure::Destination(message);
    };
    let record = match db.kind() {
        ErrorKind::UniqueViolation
        | ErrorKind::ForeignKeyViolation
        | ErrorKind::NotNullViolation
        | ErrorKind::CheckViolation => true,
        _ => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                MYSQL_RECORD_ERRORS.contains(&my.number())
            } else if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // Class 22: data exception; class 23: integrity constraint violation.
                db.code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
            } else {
                // SQLite: primary result code 19 (CONSTRAINT) or 20 (MISMATCH), under any
                // extended code.
                db.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| matches!(c & 0xff, 19 | 20))
            }
        }
    };
    if record {
        Failure::Record(message)
    } else {
        Failure::Destination(message)
    }
}
