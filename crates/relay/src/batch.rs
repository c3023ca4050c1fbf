//! Turning stream entries into the statements of one destination transaction.
//!
//! Each entry is offered to every route from its application to this destination; each
//! route that takes it contributes one row of the route's mapped columns (fields the record
//! lacks are left out of the row, so the column keeps its default or, for an update, its
//! value). Consecutive rows for the same route and the same set of columns share a
//! multi-row statement, split under the driver's parameter limit; a row whose key repeats
//! one already in the statement starts a new statement, so the database sees the same
//! order of effects as the records had.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use backplane::Entry;
use serde_json::value::RawValue;

use crate::catalog::Route;
use crate::destination::{Changed, Exec, Table};
use crate::record::Record;
use crate::sql::{Dialect, Operation, SqlError, TableRef, TableWrite, plan};

/// A route ready to write: its spec and its table as the database has it.
#[derive(Debug, Clone)]
pub struct RouteWrite {
    /// The route.
    pub route: Arc<Route>,
    /// Its table, from the live schema.
    pub table: Table,
}

impl RouteWrite {
    /// Checks `route` against `table`: every mapped column exists, and an insert or upsert
    /// fills every column that has neither a default nor NULL. The error does not name the
    /// route; callers say which one ([`crate::config::RouteSpec::label`]).
    pub fn check(route: &Arc<Route>, table: Table) -> Result<Self, String> {
        for column in route.spec.columns.values() {
            if table.column(column).is_none() {
                return Err(format!("table `{}` has no column `{column}`", table.name));
            }
        }
        if matches!(route.spec.operation, Operation::Insert | Operation::Upsert) {
            let mapped: HashSet<&String> = route.spec.columns.values().collect();
            if let Some(c) = table
                .columns
                .iter()
                .find(|c| !c.nullable && !c.has_default && !mapped.contains(&c.name))
            {
                return Err(format!(
                    "column `{}` of `{}` is NOT NULL without a default; map a field to it",
                    c.name, table.name
                ));
            }
        }
        Ok(Self {
            route: route.clone(),
            table,
        })
    }
}

impl AsRef<Route> for RouteWrite {
    fn as_ref(&self) -> &Route {
        &self.route
    }
}

/// One row to write: which entry and route it comes from and its values.
#[derive(Debug, Clone)]
pub struct Item {
    /// Stream offset of the record.
    pub offset: u64,
    /// Index into the routes.
    pub route: usize,
    /// Which of the route's columns (in mapping order) the record fills.
    pub present: Vec<bool>,
    /// The values of the present columns, in mapping order, as text (`None` for NULL).
    pub values: Vec<Option<String>>,
    /// Which of `values` were JSON booleans (written `true`/`false`, or 1/0 into numeric
    /// columns of MySQL and SQLite, which have no boolean type); empty for most records.
    pub booleans: Vec<usize>,
}

impl Item {
    /// The row as `{column: value}`, values as the text sent (for the delivery log).
    pub fn row(&self, route: &Route) -> serde_json::Map<String, serde_json::Value> {
        let mut row = serde_json::Map::new();
        let mut values = self.values.iter();
        for (column, present) in route.spec.columns.values().zip(&self.present) {
            if *present {
                let v = values.next().cloned().flatten();
                row.insert(
                    column.clone(),
                    v.map_or(serde_json::Value::Null, serde_json::Value::String),
                );
            }
        }
        row
    }
}

/// A record that cannot be written by a route without asking the database.
#[derive(Debug, Clone)]
pub struct Rejected {
    /// Stream offset.
    pub offset: u64,
    /// Index into the routes.
    pub route: usize,
    /// Why.
    pub reason: String,
}

/// A built batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Rows, in record order.
    pub items: Vec<Item>,
    /// Records rejected before reaching the database.
    pub rejected: Vec<Rejected>,
    /// Per application name: (records, rows) in this batch.
    pub per_application: HashMap<String, (u64, u64)>,
    /// The decoded records by offset (for dead letters and the log).
    pub records: HashMap<u64, Record>,
}

/// Builds the rows for `entries` (the table is not needed for that, so plain routes do,
/// as for a record's detail).
pub fn build<R: AsRef<Route>>(routes: &[R], entries: &[Entry]) -> Batch {
    let mut batch = Batch::default();
    for entry in entries {
        let Ok(record) = Record::decode(&entry.payload) else {
            continue;
        };
        let mine: Vec<usize> = (0..routes.len())
            .filter(|&i| routes[i].as_ref().spec.application == record.application)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let counts = batch
            .per_application
            .entry(record.application.clone())
            .or_default();
        counts.0 += 1;
        let fields: HashMap<String, &RawValue> = match serde_json::from_slice(&record.json) {
            Ok(f) => f,
            Err(e) => {
                for &route in &mine {
                    batch.rejected.push(Rejected {
                        offset: entry.offset,
                        route,
                        reason: format!("the stored record is not a JSON object: {e}"),
                    });
                }
                continue;
            }
        };
        for &route in &mine {
            let spec = &routes[route].as_ref().spec;
            if let Some(missing) = routes[route]
                .as_ref()
                .key_fields
                .iter()
                .find(|f| fields.get(*f).is_none_or(|v| v.get() == "null"))
            {
                batch.rejected.push(Rejected {
                    offset: entry.offset,
                    route,
                    reason: format!(
                        "the record has no value for `{missing}`, which this route needs as a key"
                    ),
                });
                continue;
            }
            let mut present = Vec::with_capacity(spec.columns.len());
            let mut values = Vec::with_capacity(spec.columns.len());
            let mut booleans = Vec::new();
            for field in spec.columns.keys() {
                match fields.get(field) {
                    Some(raw) => {
                        present.push(true);
                        if matches!(raw.get(), "true" | "false") {
                            booleans.push(values.len());
                        }
                        values.push(text_of(raw));
                    }
                    None => present.push(false),
                }
            }
            if values.is_empty() {
                continue;
            }
            counts.1 += 1;
            batch.items.push(Item {
                offset: entry.offset,
                route,
                present,
                values,
                booleans,
            });
        }
        batch.records.insert(entry.offset, record);
    }
    batch
}

/// A JSON value as the text a parameter carries: strings unescaped, numbers exactly as
/// sent, booleans as `true`/`false` (see [`Item::booleans`] for numeric columns), objects
/// and arrays as JSON; null as NULL.
fn text_of(raw: &RawValue) -> Option<String> {
    let s = raw.get();
    match s.as_bytes().first() {
        Some(b'n') => None,
        Some(b'"') => Some(serde_json::from_str::<String>(s).unwrap_or_default()),
        _ => Some(s.to_owned()),
    }
}

/// Whether a JSON boolean bound to each of `columns` of `rw` is written 1/0: on MySQL and
/// SQLite, for a column that is not textual (their booleans are numbers); PostgreSQL casts
/// `true`/`false` to its boolean and refuses them for numbers, as it should.
fn numeric_booleans(dialect: Dialect, rw: &RouteWrite, columns: &[String]) -> Vec<bool> {
    columns
        .iter()
        .map(|c| dialect != Dialect::Postgres && rw.table.column(c).is_some_and(|c| !c.textual()))
        .collect()
}

/// The table write for `route` with only the `present` columns.
fn write_for(dialect: Dialect, rw: &RouteWrite, present: &[bool]) -> TableWrite {
    let spec = &rw.route.spec;
    let columns: Vec<String> = spec
        .columns
        .values()
        .zip(present)
        .filter(|(_, p)| **p)
        .map(|(c, _)| c.clone())
        .collect();
    let casts = if dialect == Dialect::Postgres {
        columns
            .iter()
            .map(|c| {
                rw.table
                    .column(c)
                    .and_then(|c| c.cast.clone())
                    .unwrap_or_else(|| "text".into())
            })
            .collect()
    } else {
        Vec::new()
    };
    TableWrite {
        table: TableRef {
            schema: spec.schema.clone(),
            name: spec.table.clone(),
        },
        keys: spec.keys.clone(),
        columns,
        op: spec.operation,
        casts,
    }
}

/// The key values of `item`, to spot a key repeated within one statement.
fn key_of(rw: &RouteWrite, item: &Item) -> Vec<Option<String>> {
    let spec = &rw.route.spec;
    let mut at = 0;
    let mut key = Vec::new();
    for (column, present) in spec.columns.values().zip(&item.present) {
        if *present {
            if spec.keys.contains(column) {
                key.push(item.values[at].clone());
            }
            at += 1;
        }
    }
    key
}

/// The statements for `items` (indices into `batch.items`), grouped as the module explains;
/// with `single`, one statement per item (for isolating refused records).
pub fn statements(
    dialect: Dialect,
    routes: &[RouteWrite],
    batch: &Batch,
    single: bool,
) -> Result<Vec<Exec>, SqlError> {
    let mut out = Vec::new();
    let mut i = 0;
    let items = &batch.items;
    while i < items.len() {
        let first = &items[i];
        let rw = &routes[first.route];
        let mut end = i + 1;
        if !single {
            let mut keys = HashSet::from([key_of(rw, first)]);
            while end < items.len()
                && items[end].route == first.route
                && items[end].present == first.present
                && (rw.route.spec.operation == Operation::Insert
                    || keys.insert(key_of(rw, &items[end])))
            {
                end += 1;
            }
        }
        let write = write_for(dialect, rw, &first.present);
        let numeric = numeric_booleans(dialect, rw, &write.columns);
        match plan(dialect, &write, end - i) {
            Ok(stmts) => {
                for s in stmts {
                    let mut params = Vec::with_capacity(s.rows.len() * s.binds.len());
                    for row in s.rows.clone() {
                        let item = &items[i + row];
                        for &b in &s.binds {
                            let value = &item.values[b];
                            params.push(if numeric[b] && item.booleans.contains(&b) {
                                value
                                    .as_deref()
                                    .map(|v| if v == "true" { "1" } else { "0" }.to_owned())
                            } else {
                                value.clone()
                            });
                        }
                    }
                    out.push(Exec {
                        sql: s.sql,
                        params,
                        item: i + s.rows.start,
                        rows: s.rows.len(),
                    });
                }
            }
            // An update whose record carries only keys changes nothing: skip it.
            Err(SqlError::NothingToUpdate) => {}
            Err(e) => return Err(e),
        }
        i = end;
    }
    Ok(out)
}

/// What committed statements did not write: the items of updates and deletes that matched
/// no row, and per application how many rows fewer than items were changed. A multi-row
/// delete that changed some of its rows says how many but not which, so its items are
/// not listed.
pub fn unmatched(
    routes: &[RouteWrite],
    batch: &Batch,
    changed: &[Changed],
) -> (Vec<usize>, HashMap<String, u64>) {
    let mut items = Vec::new();
    let mut missing: HashMap<String, u64> = HashMap::new();
    for c in changed {
        let first = &batch.items[c.item];
        if !matches!(
            routes[first.route].route.spec.operation,
            Operation::Update | Operation::Delete
        ) {
            continue;
        }
        let written = c.affected.min(c.rows as u64);
        let short = c.rows as u64 - written;
        if short == 0 {
            continue;
        }
        if let Some(record) = batch.records.get(&first.offset) {
            *missing.entry(record.application.clone()).or_default() += short;
        }
        if written == 0 {
            items.extend(c.item..c.item + c.rows);
        }
    }
    (items, missing)
}
