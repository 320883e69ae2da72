//! The ClickHouse sink against a real server: THERMOCLINE_TEST_CLICKHOUSE_URL
//! (default http://127.0.0.1:8123; `scripts/services up clickhouse`). Each
//! test owns the database `thermocline_it_<name>_<pid>` and drops it at the end.

mod cluster;
mod failures;

use std::{collections::BTreeMap, time::Duration, time::Instant};

use cold::{
    clickhouse::{
        connect, Agg, BucketAgg, ClickHouseMetrics, ClickHouseSink, DeviceFilter,
        RawClickHouseConfig,
    },
    row::{Batch, BatchId, ColdRow, SpoolPos, HOUR_MS},
    Error,
};
use devices::{DeviceId, MetricName};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// 2024-11-25 10:00 UTC.
const HOUR: i64 = 1_732_528_800_000;

fn url() -> String {
    std::env::var("THERMOCLINE_TEST_CLICKHOUSE_URL").unwrap_or("http://127.0.0.1:8123".into())
}

/// A sink on its own database, schema created.
struct TestDb {
    sink: ClickHouseSink,
    /// A plain client for checks the sink does not offer.
    raw: ::clickhouse::Client,
    db: String,
}

impl TestDb {
    async fn new(name: &str) -> Self {
        let raw_cfg = RawClickHouseConfig {
            url: url(),
            database: format!("thermocline_it_{name}_{}", std::process::id()),
            max_attempts: 2,
            retry_min_delay: Duration::from_millis(10),
            ..Default::default()
        };
        let cfg = raw_cfg.validate().unwrap();
        let raw = connect::client(&cfg).unwrap();
        let db = cfg.database.clone();
        exec(&raw, &format!("DROP DATABASE IF EXISTS {db}")).await;
        let sink =
            ClickHouseSink::connect(cfg, ClickHouseMetrics::unregistered().unwrap()).unwrap();
        sink.ensure_schema().await.unwrap();
        Self { sink, raw, db }
    }

    async fn count(&self, sql_from: &str) -> u64 {
        let sql = format!("SELECT toUInt64(count()) FROM {}.{sql_from}", self.db);
        self.raw.query(&sql).fetch_one::<u64>().await.unwrap()
    }

    async fn drop(self) {
        exec(&self.raw, &format!("DROP DATABASE {}", self.db)).await;
    }
}

async fn exec(c: &::clickhouse::Client, sql: &str) {
    c.query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `devices` × `metrics` × `per` readings in one event hour, values random.
fn batch(gateway: &str, first_offset: u64, devices: usize, metrics: usize, per: usize) -> Batch {
    let gw = DeviceId::parse(gateway).unwrap();
    let mut rng = StdRng::seed_from_u64(first_offset);
    let mut rows = Vec::new();
    for d in 0..devices {
        let device = DeviceId::parse(&format!("it-dev-{d:03}")).unwrap();
        for m in 0..metrics {
            let metric = MetricName::parse(&format!("m{m}")).unwrap();
            for i in 0..per {
                rows.push(ColdRow {
                    device_id: device.clone(),
                    metric: metric.clone(),
                    ts_ms: HOUR + (i as i64) * (HOUR_MS / per as i64) + d as i64,
                    value: rng.random_range(-40.0..60.0),
                    seq: i as u64 + 1,
                    gateway_id: gw.clone(),
                    received_at_ms: HOUR + HOUR_MS + i as i64,
                });
            }
        }
    }
    let pos = SpoolPos {
        segment: 1,
        offset: first_offset,
    };
    Batch {
        id: BatchId::new(&gw, pos, HOUR),
        hour_start_ms: HOUR,
        rows,
    }
}

/// What `aggregates_final` must say, computed here.
fn local_aggs(rows: &[ColdRow]) -> Vec<Agg> {
    let mut m: BTreeMap<(String, String), Agg> = BTreeMap::new();
    for r in rows {
        let key = (r.device_id.to_string(), r.metric.to_string());
        let a = m.entry(key.clone()).or_insert(Agg {
            device_id: key.0,
            metric: key.1,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            min_ts_ms: i64::MAX,
            max_ts_ms: i64::MIN,
        });
        a.count += 1;
        a.sum += r.value;
        a.min = a.min.min(r.value);
        a.max = a.max.max(r.value);
        a.min_ts_ms = a.min_ts_ms.min(r.ts_ms);
        a.max_ts_ms = a.max_ts_ms.max(r.ts_ms);
    }
    m.into_values().collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn assert_aggs_eq(got: &[Agg], want: &[Agg]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let exact = (
            &g.device_id,
            &g.metric,
            g.count,
            g.min,
            g.max,
            g.min_ts_ms,
            g.max_ts_ms,
        );
        let want_exact = (
            &w.device_id,
            &w.metric,
            w.count,
            w.min,
            w.max,
            w.min_ts_ms,
            w.max_ts_ms,
        );
        assert_eq!(exact, want_exact);
        assert!(
            close(g.sum, w.sum),
            "{}/{}: {} vs {}",
            g.device_id,
            g.metric,
            g.sum,
            w.sum
        );
    }
}

#[tokio::test]
async fn schema_is_idempotent_and_checked() {
    let t = TestDb::new("schema").await;
    t.sink.ensure_schema().await.unwrap();
    let engines: Vec<(String, String)> = t
        .raw
        .query("SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name")
        .bind(t.db.as_str())
        .fetch_all()
        .await
        .unwrap();
    let want = [
        ("batches", "ReplacingMergeTree"),
        ("readings", "ReplacingMergeTree"),
    ];
    assert_eq!(engines, want.map(|(a, b)| (a.to_owned(), b.to_owned())));

    // A readings table from elsewhere with a wrong type is refused, not written.
    exec(&t.raw, &format!("DROP TABLE {}.readings", t.db)).await;
    exec(
        &t.raw,
        &format!(
            "CREATE TABLE {}.readings (device_id String, metric String, ts_ms Int64, \
             value Float32, seq UInt64, gateway_id String, received_at_ms Int64) \
             ENGINE = MergeTree ORDER BY ts_ms",
            t.db
        ),
    )
    .await;
    let e = t.sink.ensure_schema().await.unwrap_err();
    assert!(matches!(e, Error::InvalidData { .. }), "{e:?}");
    assert!(e.to_string().contains("`value` is Float32"), "{e}");
    assert!(!t.sink.health().ok);
    t.drop().await;
}

#[tokio::test]
async fn a_batch_lands_exactly() {
    let t = TestDb::new("exact").await;
    let b = batch("it-gw-1", 0, 20, 5, 100);
    assert_eq!(b.rows.len(), 10_000);
    assert!(!t.sink.has_batch(&b.id).await.unwrap());
    t.sink.insert_batch(&b, "k/one.parquet").await.unwrap();

    assert_eq!(t.count("readings").await, 10_000);
    let want = local_aggs(&b.rows);
    let got = t
        .sink
        .aggregates_final(DeviceFilter::All, i64::MIN, i64::MAX)
        .await
        .unwrap();
    assert_aggs_eq(&got, &want);

    // Filters: a prefix, a list, a time range.
    let got = t
        .sink
        .aggregates_final(DeviceFilter::Prefix("it-dev-01"), 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(got.len(), 10 * 5);
    assert!(got.iter().all(|a| a.device_id.starts_with("it-dev-01")));
    let two = ["it-dev-003", "it-dev-007"];
    let got = t
        .sink
        .aggregates_final(DeviceFilter::Devices(&two), 0, i64::MAX)
        .await
        .unwrap();
    let want_two: Vec<_> = want
        .iter()
        .filter(|a| two.contains(&a.device_id.as_str()))
        .cloned()
        .collect();
    assert_aggs_eq(&got, &want_two);
    assert!(t
        .sink
        .aggregates_final(DeviceFilter::Devices(&[]), 0, i64::MAX)
        .await
        .unwrap()
        .is_empty());
    let half: Vec<_> = b
        .rows
        .iter()
        .filter(|r| r.ts_ms < HOUR + HOUR_MS / 2)
        .cloned()
        .collect();
    let got = t
        .sink
        .aggregates_final(DeviceFilter::All, HOUR, HOUR + HOUR_MS / 2)
        .await
        .unwrap();
    assert_aggs_eq(&got, &local_aggs(&half));

    // The batches table says what landed.
    assert!(t.sink.has_batch(&b.id).await.unwrap());
    let other = BatchId::new(&DeviceId::parse("it-gw-1").unwrap(), SpoolPos::default(), 0);
    assert!(!t.sink.has_batch(&other).await.unwrap());
    let recs = t.sink.batches(HOUR, HOUR + 1).await.unwrap();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r.batch_id.as_str(), r.s3_key.as_str()),
        (b.id.as_str(), "k/one.parquet")
    );
    assert_eq!((r.row_count, r.hour_start_ms), (10_000, HOUR));
    assert_eq!(
        (r.min_ts_ms, r.max_ts_ms),
        (b.min_ts_ms().unwrap(), b.max_ts_ms().unwrap())
    );
    assert!(t
        .sink
        .batch_ids(HOUR + HOUR_MS, i64::MAX)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(t.sink.batch_ids(0, HOUR).await.unwrap(), [b.id.to_string()]);

    let m = t.sink.metrics();
    assert_eq!(
        (m.rows_inserted.get(), m.batches_inserted.get()),
        (10_000, 1)
    );
    assert_eq!(m.insert_duration.get_sample_count(), 1);
    assert!(t.sink.health().ok);
    t.drop().await;
}

#[tokio::test]
async fn replays_and_redeliveries_collapse() {
    let t = TestDb::new("replay").await;
    let b = batch("it-gw-1", 0, 10, 3, 100);
    let want = local_aggs(&b.rows);
    // No background merge may collapse the copies before we count them.
    exec(&t.raw, &format!("SYSTEM STOP MERGES {}.readings", t.db)).await;
    t.sink.insert_batch(&b, "k/a.parquet").await.unwrap();
    // A replay: the same batch again (a lost response, a crash before the ack).
    t.sink.insert_batch(&b, "k/a.parquet").await.unwrap();
    let all = || {
        t.sink
            .aggregates_final(DeviceFilter::All, i64::MIN, i64::MAX)
    };
    assert_aggs_eq(&all().await.unwrap(), &want);
    assert!(t.sink.has_batch(&b.id).await.unwrap());
    assert_eq!(t.count("batches FINAL").await, 1);
    assert_eq!(t.sink.batch_ids(0, i64::MAX).await.unwrap().len(), 1);

    // A redelivery through another path: same readings, another gateway,
    // received later (another batch id too). They collapse as well; the
    // latest receipt is the row that stays.
    let mut again = batch("it-gw-2", 0, 10, 3, 100);
    for r in &mut again.rows {
        r.received_at_ms += 5_000;
    }
    assert_eq!(
        again.rows.iter().map(|r| r.value).sum::<f64>(),
        b.rows.iter().map(|r| r.value).sum::<f64>()
    );
    t.sink.insert_batch(&again, "k/b.parquet").await.unwrap();
    assert_eq!(
        t.count("readings").await,
        9_000,
        "stored thrice until merged"
    );
    assert_aggs_eq(&all().await.unwrap(), &want);
    let gateways: Vec<String> = t
        .raw
        .query(&format!(
            "SELECT DISTINCT gateway_id FROM {}.readings FINAL",
            t.db
        ))
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(gateways, ["it-gw-2"]);
    assert_eq!(
        t.count("batches FINAL").await,
        2,
        "two distinct batches landed"
    );

    // Merges collapse them for real.
    exec(&t.raw, &format!("SYSTEM START MERGES {}.readings", t.db)).await;
    exec(&t.raw, &format!("OPTIMIZE TABLE {}.readings FINAL", t.db)).await;
    assert_eq!(t.count("readings").await, 3_000);
    assert_aggs_eq(&all().await.unwrap(), &want);
    t.drop().await;
}

/// Buckets computed here as the hot path would: last = value at the latest
/// ts, the largest value on a tie.
fn local_buckets(rows: &[(i64, f64)], width: i64, from: i64, to: i64) -> Vec<BucketAgg> {
    let mut m: BTreeMap<i64, BucketAgg> = BTreeMap::new();
    for &(ts, v) in rows.iter().filter(|(ts, _)| (from..to).contains(ts)) {
        let start = ts.div_euclid(width) * width;
        let b = m.entry(start).or_insert(BucketAgg {
            bucket_start_ms: start,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: f64::NEG_INFINITY,
            last_ts_ms: i64::MIN,
        });
        b.count += 1;
        b.sum += v;
        b.min = b.min.min(v);
        b.max = b.max.max(v);
        if (ts, v) > (b.last_ts_ms, b.last) {
            (b.last_ts_ms, b.last) = (ts, v);
        }
    }
    m.into_values().collect()
}

#[tokio::test]
async fn bucket_aggregates_match_a_local_computation() {
    let t = TestDb::new("buckets").await;
    let mut b = batch("it-gw-1", 0, 2, 2, 0);
    let (dev, metric) = (
        DeviceId::parse("it-dev-b").unwrap(),
        MetricName::parse("temp").unwrap(),
    );
    let mut rng = StdRng::seed_from_u64(42);
    let mut pts = Vec::new();
    for seq in 1..=3_000u64 {
        // Irregular times over ~50 minutes, with repeated ts (ties for `last`).
        let ts = HOUR + rng.random_range(0..3_000_000i64) / 7 * 7;
        let value = rng.random_range(-10.0..10.0);
        pts.push((ts, value));
        b.rows.push(ColdRow {
            device_id: dev.clone(),
            metric: metric.clone(),
            ts_ms: ts,
            value,
            seq,
            gateway_id: DeviceId::parse("it-gw-1").unwrap(),
            received_at_ms: HOUR + HOUR_MS,
        });
    }
    assert!(
        pts.len()
            > pts
                .iter()
                .map(|p| p.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
    );
    t.sink.insert_batch(&b, "k").await.unwrap();
    for (from, to) in [(i64::MIN, i64::MAX), (HOUR + 90_000, HOUR + 1_234_567)] {
        let got = t
            .sink
            .bucket_aggregates(dev.as_str(), metric.as_str(), 60_000, from, to)
            .await
            .unwrap();
        let want = local_buckets(&pts, 60_000, from, to);
        assert!(got.len() >= 19, "{}", got.len());
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(
                (
                    g.bucket_start_ms,
                    g.count,
                    g.min,
                    g.max,
                    g.last,
                    g.last_ts_ms
                ),
                (
                    w.bucket_start_ms,
                    w.count,
                    w.min,
                    w.max,
                    w.last,
                    w.last_ts_ms
                )
            );
            assert!(close(g.sum, w.sum), "{g:?} {w:?}");
        }
    }
    assert!(t
        .sink
        .bucket_aggregates(dev.as_str(), "nope", 60_000, 0, i64::MAX)
        .await
        .unwrap()
        .is_empty());
    assert!(t
        .sink
        .bucket_aggregates(dev.as_str(), "temp", 0, 0, 1)
        .await
        .is_err());
    t.drop().await;
}

#[tokio::test]
async fn time_a_100k_row_insert() {
    let t = TestDb::new("timing").await;
    let b = batch("it-gw-1", 0, 100, 10, 100);
    assert_eq!(b.rows.len(), 100_000);
    t.sink.ping().await.unwrap();
    let started = Instant::now();
    t.sink.insert_batch(&b, "k").await.unwrap();
    let took = started.elapsed();
    println!(
        "clickhouse: 100k-row batch inserted in {took:?} ({:.0} rows/s)",
        100_000.0 / took.as_secs_f64()
    );
    assert_eq!(t.count("readings").await, 100_000);

    // Small batches show whether TCP_NODELAY is in effect (16–46 ms each without).
    let started = Instant::now();
    for i in 0..20 {
        t.sink
            .insert_batch(&batch("it-gw-1", 1 + i, 1, 1, 1), "k")
            .await
            .unwrap();
    }
    println!(
        "clickhouse: 1-row batch (2 inserts each) in {:?} on average",
        started.elapsed() / 20
    );
    assert_eq!(t.count("batches FINAL").await, 21);
    t.drop().await;
}
