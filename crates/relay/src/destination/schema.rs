//! Reading a destination's live schema: which tables exist and their columns, so routes are
//! checked against what is really there and PostgreSQL placeholders get their column types.

use serde::Serialize;
use sqlx::Row;

use super::Db;
use crate::sql::Dialect;

/// A table lintas can write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Its schema (PostgreSQL) or database (MySQL); none for SQLite.
    pub schema: Option<String>,
    /// Its name.
    pub name: String,
    /// Its columns in table order.
    pub columns: Vec<Column>,
}

/// A column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type as the database names it.
    pub data_type: String,
    /// Whether it takes NULL.
    pub nullable: bool,
    /// Whether the database fills it when a row leaves it out (default, identity,
    /// auto-increment, generated).
    pub has_default: bool,
    /// PostgreSQL: the type to cast a text parameter to, quoted (`"pg_catalog"."int4"`).
    #[serde(skip)]
    pub cast: Option<String>,
}

impl Column {
    /// Whether the column holds text (character, text, JSON, enum and set types), by the
    /// type name MySQL's catalog or SQLite's declaration gives.
    pub fn textual(&self) -> bool {
        let t = self.data_type.to_ascii_lowercase();
        ["char", "text", "clob", "json", "enum"]
            .iter()
            .any(|k| t.contains(k))
            || t == "set"
    }
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

type Flat = (Option<String>, String, Column);

/// Tables (all, or the one of `only`) in `db`, sorted by schema and name.
pub(super) async fn tables(
    db: &Db,
    only: Option<(Option<&str>, &str)>,
) -> Result<Vec<Table>, sqlx::Error> {
    let (schema, name) = match only {
        Some((s, n)) => (s, Some(n)),
        None => (None, None),
    };
    let flat: Vec<Flat> = match db {
        Db::Postgres(p) => {
            let rows = sqlx::query(
                "SELECT c.table_schema::text, c.table_name::text, c.column_name::text, c.udt_schema::text, c.udt_name::text,
                        c.is_nullable = 'YES', (c.column_default IS NOT NULL OR c.is_identity = 'YES' OR c.is_generated <> 'NEVER')
                 FROM information_schema.columns c
                 JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
                 WHERE t.table_type = 'BASE TABLE'
                   AND c.table_schema NOT IN ('pg_catalog', 'information_schema')
                   AND c.table_name <> 'lintas_applied_offsets'
                   AND ($1::text IS NULL OR c.table_name = $1)
                   AND (($2::text IS NULL AND ($1::text IS NULL OR c.table_schema = current_schema())) OR c.table_schema = $2)
                 ORDER BY 1, 2, c.ordinal_position",
            )
            .bind(name)
            .bind(schema)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    let (udt_schema, udt_name): (String, String) = (r.get(3), r.get(4));
                    let cast = [udt_schema, udt_name.clone()]
                        .iter()
                        .map(|s| Dialect::Postgres.quote(s))
                        .collect::<Result<Vec<_>, _>>()
                        .ok()
                        .map(|q| q.join("."));
                    (
                        Some(r.get(0)),
                        r.get(1),
                        Column {
                            name: r.get(2),
                            data_type: udt_name,
                            nullable: r.get(5),
                            has_default: r.get(6),
                            cast,
                        },
                    )
                })
                .collect()
        }
        Db::Mysql(p) => {
            let rows = sqlx::query(
                "SELECT CAST(c.TABLE_SCHEMA AS CHAR), CAST(c.TABLE_NAME AS CHAR), CAST(c.COLUMN_NAME AS CHAR),
                        CAST(c.COLUMN_TYPE AS CHAR), c.IS_NULLABLE = 'YES',
                        (c.COLUMN_DEFAULT IS NOT NULL OR c.EXTRA LIKE '%auto_increment%' OR c.EXTRA LIKE '%GENERATED%')
                 FROM information_schema.COLUMNS c
                 JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
                 WHERE t.TABLE_TYPE = 'BASE TABLE'
                   AND c.TABLE_SCHEMA = COALESCE(?, DATABASE())
                   AND c.TABLE_NAME <> 'lintas_applied_offsets'
                   AND (? IS NULL OR c.TABLE_NAME = ?)
                 ORDER BY 1, 2, c.ORDINAL_POSITION",
            )
            .bind(schema)
            .bind(name)
            .bind(name)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    (
                        Some(r.get(0)),
                        r.get(1),
                        Column {
                            name: r.get(2),
                            data_type: r.get(3),
                            nullable: r.get::<i64, _>(4) != 0,
                            has_default: r.get::<i64, _>(5) != 0,
                            cast: None,
                        },
                    )
                })
                .collect()
        }
        Db::Sqlite(p) => {
            let rows = sqlx::query(
                "SELECT m.name, c.name, c.type, c.\"notnull\" = 0, (c.dflt_value IS NOT NULL OR (c.pk = 1 AND lower(c.type) = 'integer'))
                 FROM sqlite_schema m, pragma_table_info(m.name) c
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> 'lintas_applied_offsets'
                   AND (?1 IS NULL OR m.name = ?1)
                 ORDER BY m.name, c.cid",
            )
            .bind(name)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    (
                        None,
                        r.get(0),
                        Column {
                            name: r.get(1),
                            data_type: r.get(2),
                            nullable: r.get(3),
                            has_default: r.get(4),
                            cast: None,
                        },
                    )
                })
                .collect()
        }
    };
    let mut out: Vec<Table> = Vec::new();
    for (schema, name, column) in flat {
        match out.last_mut() {
            Some(t) if t.schema == schema && t.name == name => t.columns.push(column),
            _ => out.push(Table {
                schema,
                name,
                columns: vec![column],
            }),
        }
    }
    Ok(out)
}
