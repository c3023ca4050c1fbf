//! What differs between the databases lintas writes to: quoting, placeholders, limits.

use super::SqlError;

/// A destination database's SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Mysql => "MySQL",
            Self::Sqlite => "SQLite",
        }
    }

    /// Most bound parameters one statement may carry: PostgreSQL's and MySQL's protocols
    /// count them in 16 bits; SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` is 32766.
    pub fn max_params(self) -> usize {
        match self {
            Self::Postgres | Self::Mysql => 65_535,
            Self::Sqlite => 32_766,
        }
    }

    /// `ident` as a quoted identifier: wrapped in the dialect's quote character, with that
    /// character doubled inside, so no name can end the quoting early.
    pub fn quote(self, ident: &str) -> Result<String, SqlError> {
        if ident.is_empty() || ident.contains('\0') {
            return Err(SqlError::BadIdentifier(ident.to_owned()));
        }
        let q = match self {
            Self::Postgres | Self::Sqlite => '"',
            Self::Mysql => '`',
        };
        let mut out = String::with_capacity(ident.len() + 2);
        out.push(q);
        for c in ident.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
        Ok(out)
    }

    /// The `n`-th (1-based) parameter placeholder.
    pub(crate) fn placeholder(self, out: &mut String, n: usize) {
        match self {
            Self::Postgres => {
                out.push('$');
                out.push_str(&n.to_string());
            }
            Self::Mysql | Self::Sqlite => out.push('?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote_character() {
        assert_eq!(Dialect::Postgres.quote("items").unwrap(), "\"items\"");
        assert_eq!(Dialect::Postgres.quote("we\"ird").unwrap(), "\"we\"\"ird\"");
        assert_eq!(Dialect::Mysql.quote("a`b").unwrap(), "`a``b`");
        assert_eq!(
            Dialect::Sqlite.quote("x; DROP TABLE y").unwrap(),
            "\"x; DROP TABLE y\""
        );
        assert_eq!(
            Dialect::Mysql.quote("").unwrap_err().to_string(),
            "`` cannot be used as an SQL identifier: it is empty or contains a NUL byte"
        );
    }

    #[test]
    fn placeholders() {
        let mut s = String::new();
        Dialect::Postgres.placeholder(&mut s, 12);
        Dialect::Mysql.placeholder(&mut s, 12);
        assert_eq!(s, "$12?");
    }
}
