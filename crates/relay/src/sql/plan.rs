//! A batch of rows for one table, turned into statements.

use std::ops::Range;

use super::{Dialect, SqlError};

/// A table, optionally in a schema (PostgreSQL) or database (MySQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    /// `public`, `shop`, … or none for the connection's default.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

/// What a route does to its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Add rows.
    Insert,
    /// Add rows, or update the row with the same key.
    Upsert,
    /// Change the rows with these keys (rows that do not exist are left alone).
    Update,
    /// Remove the rows with these keys.
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::Insert => "insert",
            Self::Upsert => "upsert",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// One route's write: a table, the columns it fills (in the order values come) and which of
/// them identify a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrite {
    /// Target table.
    pub table: TableRef,
    /// Columns, in the order each row's values are given.
    pub columns: Vec<String>,
    /// Key columns (a subset of `columns`).
    pub keys: Vec<String>,
    /// What to do.
    pub op: Operation,
    /// Empty, or one already-quoted type name per column that each placeholder is cast to
    /// (`$1::"numeric"`). PostgreSQL needs it because every value is bound as text; the names
    /// come from the live catalog, never from user text.
    pub casts: Vec<String>,
}

/// One statement of a plan and what to bind to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL, with placeholders.
    pub sql: String,
    /// The rows (indices into the batch) it covers.
    pub rows: Range<usize>,
    /// For each row in `rows`, in order: bind that row's value of each of these columns
    /// (indices into [`TableWrite::columns`]).
    pub binds: Vec<usize>,
}

/// The statements that write `rows` rows with `write`, each within the dialect's parameter
/// limit, in row order.
pub fn plan(dialect: Dialect, write: &TableWrite, rows: usize) -> Result<Vec<Statement>, SqlError> {
    let shape = Shape::new(dialect, write)?;
    let per_row = shape.binds.len();
    if per_row > dialect.max_params() {
        return Err(SqlError::TooManyColumns {
            columns: per_row,
            limit: dialect.max_params(),
            dialect: dialect.name(),
        });
    }
    let rows_per_statement = match write.op {
        Operation::Update => 1,
        _ => dialect.max_params() / per_row,
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < rows {
        let end = (start + rows_per_statement).min(rows);
        out.push(Statement {
            sql: shape.sql(dialect, end - start),
            rows: start..end,
            binds: shape.binds.clone(),
        });
        start = end;
    }
    Ok(out)
}

/// Everything about a write that does not depend on the number of rows.
struct Shape<'a> {
    write: &'a TableWrite,
    table: String,
    columns: Vec<String>,
    keys: Vec<String>,
    binds: Vec<usize>,
}

impl<'a> Shape<'a> {
    fn new(dialect: Dialect, write: &'a TableWrite) -> Result<Self, SqlError> {
        if write.columns.is_empty() {
            return Err(SqlError::NoColumns);
        }
        if write.op != Operation::Insert && write.keys.is_empty() {
            return Err(SqlError::NoKeys(write.op.name()));
        }
        let mut key_index = Vec::with_capacity(write.keys.len());
        for k in &write.keys {
            let i = write
                .columns
                .iter()
                .position(|c| c == k)
                .ok_or_else(|| SqlError::KeyNotMapped(k.clone()))?;
            key_index.push(i);
        }
        let non_keys: Vec<usize> = (0..write.columns.len())
            .filter(|i| !key_index.contains(i))
            .collect();
        let binds = match write.op {
            Operation::Insert | Operation::Upsert => (0..write.columns.len()).collect(),
            Operation::Update if non_keys.is_empty() => return Err(SqlError::NothingToUpdate),
            Operation::Update => non_keys.iter().chain(&key_index).copied().collect(),
            Operation::Delete => key_index.clone(),
        };
        let mut table = String::new();
        if let Some(schema) = &write.table.schema {
            table.push_str(&dialect.quote(schema)?);
            table.push('.');
        }
        table.push_str(&dialect.quote(&write.table.name)?);
        Ok(Self {
            write,
            table,
            columns: write
                .columns
                .iter()
                .map(|c| dialect.quote(c))
                .collect::<Result<_, _>>()?,
            keys: write
                .keys
                .iter()
                .map(|c| dialect.quote(c))
                .collect::<Result<_, _>>()?,
            binds,
        })
    }

    /// The statement for `rows` rows.
    fn sql(&self, dialect: Dialect, rows: usize) -> String {
        let mut sql = String::new();
        let mut n = 0;
        let casts = &self.write.casts;
        let mut param = |sql: &mut String, column: usize| {
            n += 1;
            dialect.placeholder(sql, n);
            if let Some(cast) = casts.get(column) {
                sql.push_str("::");
                sql.push_str(cast);
            }
        };
        match self.write.op {
            Operation::Insert | Operation::Upsert => {
                sql.push_str("INSERT INTO ");
                sql.push_str(&self.table);
                sql.push_str(" (");
                sql.push_str(&self.columns.join(", "));
                sql.push_str(") VALUES ");
                for r in 0..rows {
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    sql.push('(');
                    for c in 0..self.columns.len() {
                        if c > 0 {
                            sql.push_str(", ");
                        }
                        param(&mut sql, c);
                    }
                    sql.push(')');
                }
                if self.write.op == Operation::Upsert {
                    self.conflict_clause(dialect, &mut sql);
                }
            }
            Operation::Update => {
                sql.push_str("UPDATE ");
                sql.push_str(&self.table);
                sql.push_str(" SET ");
                let non_keys = self.binds.len() - self.keys.len();
                for (i, &c) in self.binds[..non_keys].iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&self.columns[c]);
                    sql.push_str(" = ");
                    param(&mut sql, c);
                }
                sql.push_str(" WHERE ");
                for (i, k) in self.keys.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(" AND ");
                    }
                    sql.push_str(k);
                    sql.push_str(" = ");
                    param(&mut sql, self.binds[non_keys + i]);
                }
            }
            Operation::Delete => {
                sql.push_str("DELETE FROM ");
                sql.push_str(&self.table);
                sql.push_str(" WHERE ");
                let tuple = self.keys.len() > 1;
                if tuple {
                    sql.push('(');
                }
                sql.push_str(&self.keys.join(", "));
                if tuple {
                    sql.push(')');
                }
                sql.push_str(" IN (");
                for r in 0..rows {
                    if r > 0 {
                        sql.push_str(", ");
                    }
                    if tuple {
                        sql.push('(');
                    }
                    for k in 0..self.keys.len() {
                        if k > 0 {
                            sql.push_str(", ");
                        }
                        param(&mut sql, self.binds[k]);
                    }
                    if tuple {
                        sql.push(')');
                    }
                }
                sql.push(')');
            }
        }
        sql
    }

    /// What an upsert does when the key exists: update every non-key column (or nothing).
    fn conflict_clause(&self, dialect: Dialect, sql: &mut String) {
        let updates: Vec<&String> = self
            .columns
            .iter()
            .filter(|c| !self.keys.contains(c))
            .collect();
        match dialect {
            Dialect::Postgres | Dialect::Sqlite => {
                let excluded = if dialect == Dialect::Postgres {
                    "EXCLUDED"
                } else {
                    "excluded"
                };
                sql.push_str(" ON CONFLICT (");
                sql.push_str(&self.keys.join(", "));
                sql.push_str(") DO ");
                if updates.is_empty() {
                    sql.push_str("NOTHING");
                    return;
                }
                sql.push_str("UPDATE SET ");
                let sets: Vec<String> = updates
                    .iter()
                    .map(|c| format!("{c} = {excluded}.{c}"))
                    .collect();
                sql.push_str(&sets.join(", "));
            }
            Dialect::Mysql => {
                sql.push_str(" ON DUPLICATE KEY UPDATE ");
                // With only key columns there is nothing to change: a no-op assignment keeps
                // the statement valid without an `INSERT IGNORE` that would hide real errors.
                let sets: Vec<String> = if updates.is_empty() {
                    vec![format!("{k} = {k}", k = self.keys[0])]
                } else {
                    updates
                        .iter()
                        .map(|c| format!("{c} = VALUES({c})"))
                        .collect()
                };
                sql.push_str(&sets.join(", "));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(op: Operation, columns: &[&str], keys: &[&str]) -> TableWrite {
        TableWrite {
            table: TableRef {
                schema: None,
                name: "items".into(),
            },
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            keys: keys.iter().map(|c| (*c).to_owned()).collect(),
            casts: Vec::new(),
            op,
        }
    }

    fn sql(dialect: Dialect, w: &TableWrite, rows: usize) -> Vec<String> {
        plan(dialect, w, rows)
            .unwrap()
            .into_iter()
            .map(|s| s.sql)
            .collect()
    }

    #[test]
    fn multi_row_insert() {
        let w = write(Operation::Insert, &["name", "price"], &[]);
        assert_eq!(
            sql(Dialect::Postgres, &w, 2),
            ["INSERT INTO \"items\" (\"name\", \"price\") VALUES ($1, $2), ($3, $4)"]
        );
        assert_eq!(
            sql(Dialect::Mysql, &w, 1),
            ["INSERT INTO `items` (`name`, `price`) VALUES (?, ?)"]
        );
    }

    #[test]
    fn postgres_placeholders_carry_the_column_casts() {
        let mut w = write(Operation::Update, &["id", "price"], &["id"]);
        w.casts = vec![
            "\"pg_catalog\".\"int8\"".into(),
            "\"pg_catalog\".\"numeric\"".into(),
        ];
        assert_eq!(
            sql(Dialect::Postgres, &w, 1),
            [
                "UPDATE \"items\" SET \"price\" = $1::\"pg_catalog\".\"numeric\" WHERE \"id\" = $2::\"pg_catalog\".\"int8\""
            ]
        );
        w.op = Operation::Delete;
        assert_eq!(
            sql(Dialect::Postgres, &w, 2),
            [
                "DELETE FROM \"items\" WHERE \"id\" IN ($1::\"pg_catalog\".\"int8\", $2::\"pg_catalog\".\"int8\")"
            ]
        );
    }

    #[test]
    fn upserts_per_dialect() {
        let w = write(Operation::Upsert, &["id", "name", "price"], &["id"]);
        assert_eq!(
            sql(Dialect::Postgres, &w, 1),
            [
                "INSERT INTO \"items\" (\"id\", \"name\", \"price\") VALUES ($1, $2, $3) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\", \"price\" = EXCLUDED.\"price\""
            ]
        );
        assert_eq!(
            sql(Dialect::Mysql, &w, 1),
            [
                "INSERT INTO `items` (`id`, `name`, `price`) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE `name` = VALUES(`name`), `price` = VALUES(`price`)"
            ]
        );
        assert_eq!(
            sql(Dialect::Sqlite, &w, 1),
            [
                "INSERT INTO \"items\" (\"id\", \"name\", \"price\") VALUES (?, ?, ?) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\", \"price\" = excluded.\"price\""
            ]
        );
        let keys_only = write(Operation::Upsert, &["id"], &["id"]);
        assert!(
            sql(Dialect::Postgres, &keys_only, 1)[0].ends_with("ON CONFLICT (\"id\") DO NOTHING")
        );
        assert!(
            sql(Dialect::Mysql, &keys_only, 1)[0].ends_with("ON DUPLICATE KEY UPDATE `id` = `id`")
        );
    }

    #[test]
    fn update_is_one_statement_per_row_with_keys_bound_last() {
        let w = write(Operation::Update, &["id", "name", "price"], &["id"]);
        let p = plan(Dialect::Postgres, &w, 2).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[1].sql,
            "UPDATE \"items\" SET \"name\" = $1, \"price\" = $2 WHERE \"id\" = $3"
        );
        assert_eq!(
            (p[1].rows.clone(), p[1].binds.clone()),
            (1..2, vec![1, 2, 0])
        );
    }

    #[test]
    fn delete_by_one_or_several_keys() {
        let w = write(Operation::Delete, &["id", "name"], &["id"]);
        assert_eq!(
            sql(Dialect::Sqlite, &w, 3),
            ["DELETE FROM \"items\" WHERE \"id\" IN (?, ?, ?)"]
        );
        let w = write(
            Operation::Delete,
            &["region", "id", "name"],
            &["region", "id"],
        );
        let p = plan(Dialect::Postgres, &w, 2).unwrap();
        assert_eq!(
            p[0].sql,
            "DELETE FROM \"items\" WHERE (\"region\", \"id\") IN (($1, $2), ($3, $4))"
        );
        assert_eq!(p[0].binds, vec![0, 1]);
    }

    #[test]
    fn batches_stay_under_the_parameter_limit() {
        let w = write(Operation::Insert, &["a", "b", "c"], &[]);
        let p = plan(Dialect::Postgres, &w, 50_000).unwrap();
        let sizes: Vec<usize> = p.iter().map(|s| s.rows.len()).collect();
        assert_eq!(sizes, vec![21_845, 21_845, 6_310]);
        assert!(p.iter().all(|s| s.rows.len() * 3 <= 65_535));
        let p = plan(Dialect::Sqlite, &w, 50_000).unwrap();
        assert_eq!(p[0].rows, 0..10_922);
        assert!(plan(Dialect::Mysql, &w, 0).unwrap().is_empty());
    }

    #[test]
    fn schema_qualified_tables_quote_each_part() {
        let mut w = write(Operation::Insert, &["name"], &[]);
        w.table.schema = Some("shop".into());
        assert_eq!(
            sql(Dialect::Mysql, &w, 1),
            ["INSERT INTO `shop`.`items` (`name`) VALUES (?)"]
        );
    }

    #[test]
    fn impossible_writes_are_refused_with_a_reason() {
        let err = |w: TableWrite| plan(Dialect::Postgres, &w, 1).unwrap_err().to_string();
        assert_eq!(
            err(write(Operation::Insert, &[], &[])),
            "a route must map at least one column"
        );
        assert_eq!(
            err(write(Operation::Upsert, &["a"], &[])),
            "upsert needs at least one key column to find rows by"
        );
        assert_eq!(
            err(write(Operation::Delete, &["a"], &["b"])),
            "key column `b` is not among the mapped columns"
        );
        assert_eq!(
            err(write(Operation::Update, &["id"], &["id"])),
            "update needs at least one mapped column besides the keys"
        );
        let wide: Vec<String> = (0..70_000).map(|i| format!("c{i}")).collect();
        let refs: Vec<&str> = wide.iter().map(String::as_str).collect();
        assert_eq!(
            err(write(Operation::Insert, &refs, &[])),
            "a row of 70000 columns needs more than the 65535 parameters PostgreSQL allows in one statement"
        );
    }
}
