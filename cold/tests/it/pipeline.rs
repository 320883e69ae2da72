//! The whole cold pipeline ([`ColdPath`]) against the real ClickHouse and S3,
//! fed through [`ColdIngest::spool`] (no broker): each test has its own spool
//! directory, ClickHouse database and S3 prefix.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cold::{
    clickhouse::{connect, schema, RawClickHouseConfig},
    pipeline::{ColdPath, RawColdConfig},
    row::HOUR_MS,
    s3::RawS3Config,
    spool::{RawSpoolConfig, Spool, SpoolMetrics},
};
use devices::{config::DevicesConfig, DeviceId};
use prometheus::Registry;
use secrecy::SecretString;

use crate::support::{env_or, unique};

/// One test's config: its own spool dir, database and S3 prefix; batches cut
/// after 200 ms, retries fast.
fn config(name: &str, spool: &std::path::Path) -> RawColdConfig {
    RawColdConfig {
        retry_min_delay: Duration::from_millis(20),
        retry_max_delay: Duration::from_millis(200),
        spool: RawSpoolConfig {
            dir: spool.to_path_buf(),
            ..Default::default()
        },
        batch: cold::batcher::RawBatchConfig {
            max_age: Duration::from_millis(200),
            age_jitter: Duration::from_millis(10),
            ..Default::default()
        },
        s3: RawS3Config {
            endpoint: Some(env_or(
                "THERMOCLINE_TEST_S3_ENDPOINT",
                "http://127.0.0.1:9000",
            )),
            bucket: "thermocline-it".into(),
            prefix: format!("{}/", unique(name)),
            access_key_id: Some(env_or("THERMOCLINE_TEST_S3_ACCESS_KEY", "thermocline")),
            secret_access_key: Some(SecretString::from(env_or(
                "THERMOCLINE_TEST_S3_SECRET_KEY",
                "thermocline-secret",
            ))),
            ..Default::default()
        },
        clickhouse: RawClickHouseConfig {
            url: env_or("THERMOCLINE_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123"),
            database: format!("thermocline_it_{name}_{}", std::process::id()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn counter(registry: &Registry, name: &str, label: (&str, &str)) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == label.0 && l.value() == label.1)
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Issue 12: a batch ClickHouse refuses for good (here a row the table's own
/// `throwIf` rejects, as a poison row would) is not retried forever: it goes
/// to a rejected-batch object in S3 with the server's reason, is counted
/// (`thermocline_cold_batches_rejected_total{store="clickhouse"}`), and its
/// spool range is released; the other batch of the same range lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_clickhouse_rejects_for_good_is_dead_lettered_and_its_range_released() {
    let dir = tempfile::tempdir().unwrap();
    let raw = config("poison", &dir.path().join("spool"));
    let cfg = raw.validate().unwrap();
    let ch = connect::client(&cfg.clickhouse).unwrap();
    let db = cfg.clickhouse.database.clone();
    ch.query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .unwrap();
    ch.query(&schema::create_database(&db))
        .execute()
        .await
        .unwrap();
    // The sink's own table, plus a column that refuses the value 666.
    let poisoned = schema::create_readings(&db).replace(
        "received_at_ms Int64,",
        "received_at_ms Int64,\n    poison UInt8 MATERIALIZED throwIf(value = 666),",
    );
    assert!(poisoned.contains("throwIf"), "{poisoned}");
    ch.query(&poisoned).execute().await.unwrap();

    let registry = Registry::new();
    let gw = DeviceId::parse("gw-poison").unwrap();
    let (path, ingest) = ColdPath::start(
        cfg.clone(),
        gw,
        DevicesConfig::default(),
        &registry,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    // Two event hours, so two batches of one range: this hour's five good
    // readings, and last hour's two readings, one of them poison.
    let now = now_ms();
    let last_hour = now - HOUR_MS;
    let mut messages = Vec::new();
    for seq in 0..5u64 {
        messages.push(("good", now - 1000 + seq as i64, seq, 20.0 + seq as f64));
    }
    messages.push(("bad", last_hour, 0, 666.0));
    messages.push(("bad", last_hour + 1, 1, 7.0));
    let mut tickets = Vec::new();
    for (device, ts, seq, value) in messages {
        let payload = format!(r#"{{"ts":{ts},"seq":{seq},"metrics":{{"temp":{value}}}}}"#);
        let t = ingest
            .spool(
                now_ms(),
                &format!("devices/{device}/telemetry"),
                &Bytes::from(payload),
            )
            .await
            .unwrap();
        tickets.push(t);
    }
    for t in tickets {
        t.wait().await.unwrap();
    }
    // Shutdown ships what is held (within the 20 s deadline) and closes the spool.
    drop(ingest);
    path.join().await;

    // Nothing is left to replay: the rejected batch's range was released.
    let reopened = Spool::open(
        cfg.spool.clone(),
        SpoolMetrics::new(&Registry::new()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        reopened.report.messages, 0,
        "spooled messages left unreleased: {:?}",
        reopened.report
    );
    drop(reopened);

    let landed: u64 = ch
        .query(&format!(
            "SELECT toUInt64(count()) FROM {db}.readings FINAL"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(landed, 5, "the good batch lands whole");
    assert_eq!(
        counter(
            &registry,
            "thermocline_cold_batches_rejected_total",
            ("store", "clickhouse")
        ),
        1.0
    );

    // The rejected batch is in S3 with its reason and both its readings.
    let s3 = cold::s3::S3Sink::connect(
        cfg.s3.clone(),
        cold::s3::S3Metrics::new(&Registry::new()).unwrap(),
    )
    .await
    .unwrap();
    let keys = s3.list_rejected_batches(i64::MIN..i64::MAX).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let rejected = s3.get_rejected_batch(&keys[0]).await.unwrap();
    assert_eq!(rejected.store, "clickhouse");
    assert!(rejected.reason.contains("395"), "{}", rejected.reason);
    let mut values: Vec<f64> = rejected.rows.iter().map(|r| r.value).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, [7.0, 666.0]);
    // The batch's Parquet object is in S3 too (S3 took it before ClickHouse refused).
    assert!(s3.has_object(&rejected.s3_key.unwrap()).await.unwrap());

    ch.query(&format!("DROP DATABASE {db}"))
        .execute()
        .await
        .unwrap();
}

fn gauge(registry: &Registry, name: &str) -> i64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_gauge().get_value() as i64)
        .sum()
}

/// A port nothing listens on: an S3 that is down.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Issue 12: replay keeps to `cold.max_pending_bytes`. A spool filled during
/// an S3 outage (about 3.7 MB of decoded rows, all cut) is replayed by a
/// gateway restarted with a 1 MiB bound while S3 is still down: the bytes it
/// holds never pass the bound plus what ingest spooled ahead of a cut marker
/// (the channel) plus one batch (the old replay decoded and queued everything). A third start with S3 back ships it all: ClickHouse
/// holds every reading and nothing is left to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_an_outage_keeps_to_the_memory_bound_then_ends_exact() {
    const MESSAGES: u64 = 4000;
    const METRICS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = config("replaybound", &dir.path().join("spool"));
    raw.batch.max_bytes = bytesize::ByteSize::kib(64);
    // Ingest appends to the spool ahead of the pipeline by at most the
    // channel: that many messages can stand between two cut markers, and
    // replay must hold them together (the marker names their batch). A small
    // channel keeps that part of the bound well below what the spool holds.
    const CHANNEL: usize = 256;
    raw.channel_capacity = CHANNEL;
    let up = raw.clone();
    raw.s3.endpoint = Some(dead_endpoint());
    raw.s3.max_attempts = 1;
    let gw = DeviceId::parse("gw-replay").unwrap();
    let start = |raw: RawColdConfig, registry: Registry, shutdown: Duration| {
        let gw = gw.clone();
        async move {
            let cfg = raw.validate().unwrap();
            let (path, ingest) =
                ColdPath::start(cfg, gw, DevicesConfig::default(), &registry, shutdown)
                    .await
                    .unwrap();
            (path, ingest, registry)
        }
    };

    // 1. S3 down, a generous bound: everything is spooled and cut.
    let mut outage = raw.clone();
    outage.max_pending_bytes = bytesize::ByteSize::mib(64);
    let (path, ingest, registry) = start(outage, Registry::new(), Duration::from_secs(1)).await;
    let now = now_ms();
    let mut last = None;
    for i in 0..MESSAGES {
        let metrics: Vec<String> = (0..METRICS)
            .map(|m| format!(r#""m{m}":{}"#, i * METRICS + m))
            .collect();
        let payload = format!(
            r#"{{"ts":{},"seq":{i},"metrics":{{{}}}}}"#,
            now - 60_000 + i as i64,
            metrics.join(",")
        );
        let t = ingest
            .spool(now_ms(), "devices/d1/telemetry", &Bytes::from(payload))
            .await
            .unwrap();
        last = Some(t);
    }
    last.unwrap().wait().await.unwrap();
    let held = |r: &Registry| gauge(r, "thermocline_cold_pending_bytes");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while held(&registry) < 3 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "rows never held: {}",
            held(&registry)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ingest);
    path.join().await; // S3 down: the 1 s deadline passes, nothing is released.

    // 2. Restart with a 1 MiB bound, S3 still down.
    let mut low = raw.clone();
    low.max_pending_bytes = bytesize::ByteSize::mib(1);
    // The documented replay bound: max_pending_bytes, plus the messages the
    // channel let ingest spool ahead of a cut marker, plus one batch. Each
    // message here is METRICS rows of 93 estimated bytes (`row_bytes`).
    let per_message = METRICS as usize * 93;
    let bound = ((1 << 20) + (64 << 10) + CHANNEL * per_message) as i64;
    let (path, ingest, registry) = start(low, Registry::new(), Duration::from_secs(1)).await;
    let (mut peak, mut samples) = (0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while samples < 40 {
        let h = held(&registry);
        peak = peak.max(h);
        assert!(h <= bound, "replay holds {h} bytes, bound {bound}");
        if peak >= 1 << 19 {
            // Replay has reached the bound; keep watching a while.
            samples += 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replay never held rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ingest);
    path.join().await;

    // 3. S3 back: everything ships.
    let (path, ingest, _registry) =
        start(up.clone(), Registry::new(), Duration::from_secs(60)).await;
    drop(ingest);
    path.join().await;
    let cfg = up.validate().unwrap();
    let reopened = Spool::open(
        cfg.spool.clone(),
        SpoolMetrics::new(&Registry::new()).unwrap(),
    )
    .unwrap();
    assert_eq!(reopened.report.messages, 0, "{:?}", reopened.report);
    drop(reopened);
    let ch = connect::client(&cfg.clickhouse).unwrap();
    let db = &cfg.clickhouse.database;
    let landed: u64 = ch
        .query(&format!(
            "SELECT toUInt64(count()) FROM {db}.readings FINAL"
        ))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(landed, MESSAGES * METRICS);
    ch.query(&format!("DROP DATABASE {db}"))
        .execute()
        .await
        .unwrap();
}
