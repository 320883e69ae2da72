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
//!
//! # On a cluster (`cold.clickhouse.cluster`)
//! Each shard holds `readings_local` and `batches_local` (the tables above,
//! under those names) and `readings` / `batches` are `Distributed` tables
//! over them, sharded by `cityHash64(device_id)` and `cityHash64(batch_id)`:
//! every copy of one reading (and of one `batches` row) lands on the same
//! shard, so `FINAL`, which collapses per shard, stays exact through the
//! Distributed table. The Distributed tables list only the written columns:
//! 18.16 refuses to forward an insert to a table whose MATERIALIZED column
//! the Distributed table also has. All five statements run on every shard
//! (the sink connects to each; no `ON CLUSTER`, so no ZooKeeper), so any
//! shard can take the inserts and queries.

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
    readings_table(db, "readings")
}

fn readings_table(db: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (
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
    batches_table(db, "batches")
}

fn batches_table(db: &str, table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (
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

/// The `Distributed` table `table` over `{table}_local` on `cluster`,
/// with the written `columns` only, sharded by `cityHash64(key)`.
fn distributed(
    db: &str,
    table: &str,
    cluster: &str,
    columns: &[(&str, &str)],
    key: &str,
) -> String {
    let cols: Vec<String> = columns
        .iter()
        .map(|(n, t)| format!("    {n} {t}"))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (\n{}\n) ENGINE = Distributed({cluster}, {db}, {table}_local, cityHash64({key}))",
        cols.join(",\n")
    )
}

/// What [`super::ClickHouseSink::ensure_schema`] runs on each shard of a
/// cluster, in order.
pub fn shard_statements(db: &str, cluster: &str) -> [String; 5] {
    [
        create_database(db),
        readings_table(db, "readings_local"),
        batches_table(db, "batches_local"),
        distributed(db, "readings", cluster, READINGS_COLUMNS, "device_id"),
        distributed(db, "batches", cluster, BATCHES_COLUMNS, "batch_id"),
    ]
}

#[derive(Debug, clickhouse::Row, Deserialize)]
pub(crate) struct EngineRow {
    pub engine: String,
}

pub(crate) const ENGINE_QUERY: &str =
    "SELECT engine FROM system.tables WHERE database = ? AND name = ?";

pub(crate) const CLUSTER_SHARDS_QUERY: &str =
    "SELECT toUInt64(uniqExact(shard_num)) FROM system.clusters WHERE cluster = ?";

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
        for s in statements("thermocline")
            .into_iter()
            .chain(shard_statements("thermocline", "c"))
        {
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
    fn cluster_ddl_shards_by_the_reading_key_and_skips_materialized_columns() {
        let [_, readings_local, batches_local, readings, batches] = shard_statements("db", "two");
        assert!(
            readings_local.contains("db.readings_local ("),
            "{readings_local}"
        );
        assert!(readings_local.contains("ReplacingMergeTree(received_at_ms)"));
        assert!(
            batches_local.contains("db.batches_local ("),
            "{batches_local}"
        );
        assert!(
            readings
                .ends_with("ENGINE = Distributed(two, db, readings_local, cityHash64(device_id))"),
            "{readings}"
        );
        assert!(
            batches.ends_with("ENGINE = Distributed(two, db, batches_local, cityHash64(batch_id))"),
            "{batches}"
        );
        assert!(!readings.contains("MATERIALIZED") && !batches.contains("MATERIALIZED"));
        for (n, t) in READINGS_COLUMNS {
            assert!(readings.contains(&format!("{n} {t}")), "{n} in {readings}");
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
