//! The two tables, as DDL that ClickHouse 18.16 and current releases both
//! accept, and the start-up check that an existing table still matches.
//!
//! 18.16 has no `DateTime64`, `CODEC`, `TTL` or (without a setting)
//! `LowCardinality`, so: times are `Int64` ms, each table has a `DateTime`
//! column derived from them for partitioning, and old data is dropped by
//! partition.
//!
//! # `readings`
//! A `ReplacingMergeTree` whose sorting key is the reading's identity
//! `(device_id, metric, ts_ms, seq)`. A batch inserted twice (a retry after a
//! lost response, a replay after a crash) and the same reading redelivered
//! through another path (another gateway, so another `gateway_id` and
//! `received_at_ms`) all collapse to one row: merges keep the row with the
//! largest `received_at_ms` (the version column), and on a tie the last
//! inserted — replays carry identical rows, so which one wins does not
//! matter. The partition (UTC day of `ts_ms`) is a function of the key, so
//! duplicates always share a partition, which replacing requires. Merges run
//! in the background; readers that need exact answers use `FINAL`.
//!
//! # `batches`
//! One row per batch that landed, keyed by `batch_id` (a replay collapses the
//! same way), so the reconciler can tell what is already in ClickHouse.

use std::collections::HashMap;

use serde::Deserialize;

use crate::{Error, Result};

/// The columns of `readings` the sink writes, in insert order, with types.
pub const READINGS_COLUMNS: &[(&str, &str)] = &[
    ("device_id", "String"),
    ("metric", "String"),
    ("ts_ms", "Int64"),
    ("value", "Float64"),
    ("seq", "UInt64"),
    ("gateway_id", "String"),
    ("received_at_ms", "Int64"),
];

/// The columns of `batches` the sink writes, in insert order, with types.
pub const BATCHES_COLUMNS: &[(&str, &str)] = &[
    ("batch_id", "String"),
    ("s3_key", "String"),
    ("hour_start_ms", "Int64"),
    ("row_count", "UInt64"),
    ("min_ts_ms", "Int64"),
    ("max_ts_ms", "Int64"),
    ("inserted_at_ms", "Int64"),
];

pub fn create_database(db: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS {db}")
}

pub fn create_readings(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.readings (
    device_id String,
    metric String,
    ts_ms Int64,
    value Float64,
    seq UInt64,
    gateway_id String,
    received_at_ms Int64,
    ts DateTime('UTC') MATERIALIZED toDateTime(intDiv(ts_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(received_at_ms)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (device_id, metric, ts_ms, seq)"
    )
}

pub fn create_batches(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.batches (
    batch_id String,
    s3_key String,
    hour_start_ms Int64,
    row_count UInt64,
    min_ts_ms Int64,
    max_ts_ms Int64,
    inserted_at_ms Int64,
    hour DateTime('UTC') MATERIALIZED toDateTime(intDiv(hour_start_ms, 1000), 'UTC'),
    inserted_at DateTime('UTC') MATERIALIZED toDateTime(intDiv(inserted_at_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(inserted_at_ms)
PARTITION BY toYYYYMM(hour)
ORDER BY batch_id"
    )
}

/// Every statement [`super::ClickHouseSink::ensure_schema`] runs, in order.
pub fn statements(db: &str) -> [String; 3] {
    [create_database(db), create_readings(db), create_batches(db)]
}

#[derive(Debug, clickhouse::Row, Deserialize)]
pub(crate) struct ColumnRow {
    pub name: String,
    pub r#type: String,
    /// Empty, or DEFAULT / MATERIALIZED / ALIAS.
    pub default_kind: String,
}

pub(crate) const COLUMNS_QUERY: &str =
    "SELECT name, type, default_kind FROM system.columns WHERE database = ? AND table = ?";

/// Checks an existing table against the columns the sink writes: each must
/// exist with exactly that type (RowBinary without validation would
/// otherwise write garbage), and any other column must have a default.
pub(crate) fn check_columns(
    db: &str,
    table: &str,
    actual: &[ColumnRow],
    expected: &[(&str, &str)],
) -> Result<()> {
    let bad = |reason: String| Error::InvalidData {
        what: format!("clickhouse table {db}.{table}"),
        reason,
    };
    if actual.is_empty() {
        return Err(bad("the table does not exist".into()));
    }
    let by_name: HashMap<&str, &ColumnRow> = actual.iter().map(|c| (c.name.as_str(), c)).collect();
    for (name, ty) in expected {
        match by_name.get(name) {
            None => return Err(bad(format!("column `{name}` is missing"))),
            Some(c) if c.r#type != *ty => {
                return Err(bad(format!(
                    "column `{name}` is {}, expected {ty}; drop or migrate the table",
                    c.r#type
                )))
            }
            Some(_) => {}
        }
    }
    for c in actual {
        if !expected.iter().any(|(n, _)| *n == c.name) && c.default_kind.is_empty() {
            return Err(bad(format!(
                "column `{}` is not written by the sink and has no default",
                c.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, default_kind: &str) -> ColumnRow {
        ColumnRow {
            name: name.into(),
            r#type: ty.into(),
            default_kind: default_kind.into(),
        }
    }

    #[test]
    fn ddl_avoids_what_18_16_lacks() {
        for s in statements("thermocline") {
            for word in [
                "DateTime64",
                "CODEC",
                "TTL",
                "LowCardinality",
                "Map(",
                "Bool",
            ] {
                assert!(!s.contains(word), "{word} in {s}");
            }
        }
    }

    #[test]
    fn column_check() {
        let good: Vec<_> = READINGS_COLUMNS
            .iter()
            .map(|(n, t)| col(n, t, ""))
            .chain([col("ts", "DateTime('UTC')", "MATERIALIZED")])
            .collect();
        check_columns("d", "readings", &good, READINGS_COLUMNS).unwrap();

        let mut wrong_type = good;
        wrong_type[3] = col("value", "Float32", "");
        let e = check_columns("d", "readings", &wrong_type, READINGS_COLUMNS).unwrap_err();
        assert!(e.to_string().contains("`value` is Float32"), "{e}");

        let mut extra = wrong_type;
        extra[3] = col("value", "Float64", "");
        extra.push(col("note", "String", ""));
        let e = check_columns("d", "readings", &extra, READINGS_COLUMNS).unwrap_err();
        assert!(e.to_string().contains("`note`"), "{e}");

        extra.remove(0);
        let e = check_columns("d", "readings", &extra, READINGS_COLUMNS).unwrap_err();
        assert!(e.to_string().contains("`device_id` is missing"), "{e}");
        assert!(check_columns("d", "readings", &[], READINGS_COLUMNS).is_err());
    }
}
