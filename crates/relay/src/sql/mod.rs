//! Statements for a destination's table, built at run time.
//!
//! Tables and columns are chosen by users at run time, so statements cannot be written in
//! advance. Two rules keep that safe: identifiers are only ever emitted through
//! [`Dialect::quote`] (and, upstream of this module, only after they were found in the live
//! schema), and values are never spliced — every value is a bound parameter. A batch of rows
//! becomes as few statements as the driver's parameter limit allows ([`plan`]).
//!
//! | operation | PostgreSQL | MySQL / MariaDB | SQLite |
//! |---|---|---|---|
//! | insert | multi-row `INSERT` | multi-row `INSERT` | multi-row `INSERT` |
//! | upsert | `ON CONFLICT (keys) DO UPDATE SET c = EXCLUDED.c` | `ON DUPLICATE KEY UPDATE c = VALUES(c)` | `ON CONFLICT (keys) DO UPDATE SET c = excluded.c` |
//! | update | one `UPDATE … WHERE keys` per row | same | same |
//! | delete | `DELETE … WHERE (keys) IN (…)` | same | same |

mod dialect;
mod plan;

pub use dialect::Dialect;
pub use plan::{Operation, Statement, TableRef, TableWrite, plan};

/// A statement that cannot be built from what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// An empty identifier or one containing a NUL byte.
    #[error("`{0}` cannot be used as an SQL identifier: it is empty or contains a NUL byte")]
    BadIdentifier(String),
    /// No column to write.
    #[error("a route must map at least one column")]
    NoColumns,
    /// The operation needs key columns and none were given.
    #[error("{0} needs at least one key column to find rows by")]
    NoKeys(&'static str),
    /// A key column that is not among the mapped columns.
    #[error("key column `{0}` is not among the mapped columns")]
    KeyNotMapped(String),
    /// An update that would change nothing but its keys.
    #[error("update needs at least one mapped column besides the keys")]
    NothingToUpdate,
    /// One row needs more parameters than the driver allows in a statement.
    #[error(
        "a row of {columns} columns needs more than the {limit} parameters {dialect} allows in one statement"
    )]
    TooManyColumns {
        /// Columns per row.
        columns: usize,
        /// The driver's limit.
        limit: usize,
        /// Which dialect.
        dialect: &'static str,
    },
}
