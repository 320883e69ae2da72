//! The sink on a two-shard cluster (`scripts/services up clickhouse-cluster`:
//! THERMOCLINE_TEST_CLICKHOUSE_CLUSTER, default `thermocline_2shards`, and
//! THERMOCLINE_TEST_CLICKHOUSE_SHARD_URLS, default
//! `http://127.0.0.1:8124,http://127.0.0.1:8125`). Each test owns a database
//! on every shard and drops it at the end.

use super::*;

pub fn cluster() -> String {
    std::env::var("THERMOCLINE_TEST_CLICKHOUSE_CLUSTER").unwrap_or("thermocline_2shards".into())
}

pub fn shard_urls() -> Vec<String> {
    std::env::var("THERMOCLINE_TEST_CLICKHOUSE_SHARD_URLS")
        .unwrap_or("http://127.0.0.1:8124,http://127.0.0.1:8125".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

fn raw_cfg(name: &str, shards: Vec<String>) -> RawClickHouseConfig {
    RawClickHouseConfig {
        url: shards[0].clone(),
        database: format!("thermocline_it_{name}_{}", std::process::id()),
        cluster: cluster(),
        shard_urls: shards,
        max_attempts: 2,
        retry_min_delay: Duration::from_millis(10),
        ..Default::default()
    }
}

/// A plain client per shard, the test's database dropped on each.
async fn shards(db: &str) -> Vec<::clickhouse::Client> {
    let mut out = Vec::new();
    for url in shard_urls() {
        let cfg = RawClickHouseConfig {
            url,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let c = connect::client(&cfg).unwrap();
        exec(&c, &format!("DROP DATABASE IF EXISTS {db}")).await;
        out.push(c);
    }
    out
}

async fn count(c: &::clickhouse::Client, sql: &str) -> u64 {
    c.query(sql).fetch_one::<u64>().await.unwrap()
}

/// Readings of 40 devices inserted through the Distributed table, twice (a
/// replay) and once more by another gateway (a redelivery): every shard
/// holds rows, each device's rows live on exactly one shard, and `readings
/// FINAL` read through any shard equals the readings once; `batches` and
/// `has_batch` see every batch.
#[tokio::test]
async fn cluster_schema_shards_by_device_and_final_is_exact() {
    let cfg = raw_cfg("cluster", shard_urls()).validate().unwrap();
    let db = cfg.database.clone();
    let shard = shards(&db).await;
    let sink = ClickHouseSink::connect(cfg, ClickHouseMetrics::unregistered().unwrap()).unwrap();
    sink.ensure_schema().await.unwrap();
    sink.ensure_schema().await.unwrap();

    for c in &shard {
        let engines: Vec<(String, String)> = c
            .query("SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name")
            .bind(db.as_str())
            .fetch_all()
            .await
            .unwrap();
        let want = [
            ("batches", "Distributed"),
            ("batches_local", "ReplacingMergeTree"),
            ("readings", "Distributed"),
            ("readings_local", "ReplacingMergeTree"),
        ];
        assert_eq!(engines, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    }

    let first = batch("gw-a", 0, 40, 2, 5);
    let mut other = batch("gw-b", 0, 40, 2, 5);
    for r in &mut other.rows {
        r.received_at_ms += 1;
    }
    sink.insert_batch(&first, "k/a").await.unwrap();
    sink.insert_batch(&first, "k/a").await.unwrap();
    sink.insert_batch(&other, "k/b").await.unwrap();
    let n = first.rows.len() as u64;

    // Synchronous Distributed inserts: the rows are on the shards now.
    let mut on_shards = Vec::new();
    for c in &shard {
        on_shards.push(
            count(
                c,
                &format!("SELECT toUInt64(count()) FROM {db}.readings_local"),
            )
            .await,
        );
    }
    assert!(
        on_shards.iter().all(|&k| k > 0),
        "rows per shard {on_shards:?}"
    );
    assert_eq!(on_shards.iter().sum::<u64>(), 3 * n);
    let devices_per_shard: Vec<Vec<String>> = {
        let mut v = Vec::new();
        for c in &shard {
            v.push(
                c.query(&format!(
                    "SELECT DISTINCT device_id FROM {db}.readings_local ORDER BY device_id"
                ))
                .fetch_all::<String>()
                .await
                .unwrap(),
            );
        }
        v
    };
    assert!(
        devices_per_shard[0]
            .iter()
            .all(|d| !devices_per_shard[1].contains(d)),
        "a device on both shards"
    );
    assert_eq!(devices_per_shard[0].len() + devices_per_shard[1].len(), 40);

    assert_eq!(sink.raw_row_count().await.unwrap(), 3 * n);
    let got = sink
        .aggregates_final(DeviceFilter::All, HOUR, HOUR + HOUR_MS)
        .await
        .unwrap();
    assert_aggs_eq(&got, &local_aggs(&first.rows));
    let via_second = count(
        &shard[1],
        &format!("SELECT toUInt64(count()) FROM {db}.readings FINAL"),
    )
    .await;
    assert_eq!(via_second, n, "FINAL through the second shard");

    let mut ids = sink.batch_ids(HOUR, HOUR + HOUR_MS).await.unwrap();
    ids.sort();
    let mut want = vec![first.id.as_str().to_owned(), other.id.as_str().to_owned()];
    want.sort();
    assert_eq!(ids, want);
    assert!(sink.has_batch(&first.id).await.unwrap());

    for c in &shard {
        exec(c, &format!("DROP DATABASE {db}")).await;
    }
}

/// A `shard_urls` list that does not match the cluster's shards is refused
/// at start, naming the key; so is a plain `readings` table where the
/// cluster needs a Distributed one.
#[tokio::test]
async fn cluster_schema_refuses_a_wrong_shard_list_and_a_local_readings_table() {
    let mut urls = shard_urls();
    urls.truncate(1);
    let cfg = raw_cfg("cluster_bad", urls).validate().unwrap();
    let db = cfg.database.clone();
    let shard = shards(&db).await;
    let sink = ClickHouseSink::connect(cfg, ClickHouseMetrics::unregistered().unwrap()).unwrap();
    let e = sink.ensure_schema().await.unwrap_err().to_string();
    assert!(e.contains("cold.clickhouse.shard_urls"), "{e}");
    assert!(!sink.health().ok);

    // A one-server schema in the database, then the full cluster config.
    for c in &shard {
        exec(c, &format!("DROP DATABASE IF EXISTS {db}")).await;
    }
    let single = RawClickHouseConfig {
        url: shard_urls()[0].clone(),
        database: db.clone(),
        ..Default::default()
    }
    .validate()
    .unwrap();
    ClickHouseSink::connect(single, ClickHouseMetrics::unregistered().unwrap())
        .unwrap()
        .ensure_schema()
        .await
        .unwrap();
    let mut cfg = raw_cfg("cluster_bad", shard_urls());
    cfg.database = db.clone();
    let sink = ClickHouseSink::connect(
        cfg.validate().unwrap(),
        ClickHouseMetrics::unregistered().unwrap(),
    )
    .unwrap();
    let e = sink.ensure_schema().await.unwrap_err().to_string();
    assert!(e.contains("needs a Distributed table"), "{e}");

    for c in &shard {
        exec(c, &format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}
