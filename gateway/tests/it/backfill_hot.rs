//! Issue 4: `backfill --device` and `backfill --hot` against the real
//! ClickHouse, S3 and Redis. The batch objects are put into the test's S3
//! bucket as the cold path writes them (`fixtures`); each test has its own
//! database, bucket and Redis key prefix.

use std::collections::BTreeMap;

use devices::{ledger::Ledger, DeviceId};
use sync::timearg::fmt_ms;

use crate::{
    backfill::{clickhouse, database, env_with_hot, hot_reader, run, show},
    cold::ColdStores,
    fixtures::{batches, ch_count, delete_prefix, device, fleet, only, put_batches, sinks},
    support::unique,
};

async fn verify_hot(prefix: &str, ledger: &Ledger) -> sync::verify::HotReport {
    sync::verify::verify_hot(&hot_reader(prefix), ledger, hot::service::now_ms())
        .await
        .unwrap()
}

/// Rows per device in `readings FINAL`.
async fn per_device(stores: &ColdStores, devices: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for d in devices {
        let n = ch_count(
            stores,
            &format!("SELECT count() FROM {{db}}.readings FINAL WHERE device_id = '{d}'"),
        )
        .await;
        out.insert(d.clone(), n);
    }
    out
}

/// `--device D` restores only D: 6 devices' rows in 10 objects; ClickHouse
/// and the hot keys of D are lost (ClickHouse wholly, Redis only D's keys).
/// `backfill --device D --hot` puts back exactly D's 200 rows (recorded as
/// `{batch}+D` in `batches`) and D's windows; the other devices stay absent
/// from ClickHouse and their windows stay exact (not merged twice). A rerun
/// does nothing; a later full backfill restores the rest exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_device_restores_only_that_device() {
    let stores = ColdStores::new("bfdev");
    let hot_prefix = unique("bfdev-hot");
    let env = env_with_hot(&stores, &hot_prefix);
    let (s3, _ch) = sinks(&stores).await;
    let now = hot::service::now_ms();
    let fleet_prefix = unique("bfd");
    let (rows, ledger) = fleet(&fleet_prefix, 6, 200, now - 30 * 60_000, 5_000);
    // Objects of the even devices and of the odd ones (as two gateways
    // sharing the fleet would write them): half lack the target device.
    let (even, odd): (Vec<_>, Vec<_>) = rows
        .iter()
        .cloned()
        .partition(|r| r.device_id.as_str().ends_with(['0', '2', '4']));
    let objects = [batches(&even, 120, "gw-even"), batches(&odd, 120, "gw-odd")].concat();
    let n_objects = objects.len() as u64;
    assert!(n_objects >= 10, "{n_objects}");
    put_batches(&s3, &objects).await;
    let from = fmt_ms(ledger.min_ts_ms().unwrap());
    let to = fmt_ms(ledger.max_ts_ms().unwrap() + 1);
    let all: Vec<String> = (0..6).map(|i| device(&fleet_prefix, i)).collect();
    let target = all[2].clone();

    // Everything in both stores first (the state before the loss).
    let (out, s) = run(
        &["backfill", "--from", &from, "--to", &to, "--hot", "--json"],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["batches_inserted"], n_objects, "{s}");
    assert_eq!(s["rows_inserted"], 1_200, "{s}");
    assert!(verify_hot(&hot_prefix, &ledger).await.ok());

    // Lose ClickHouse, and D's hot keys.
    let db = database(&stores);
    clickhouse(&format!("TRUNCATE TABLE {db}.readings")).await;
    clickhouse(&format!("TRUNCATE TABLE {db}.batches")).await;
    assert!(delete_prefix(&format!("{hot_prefix}:{{{target}}}")).await > 0);
    let others = only(&ledger, |d| d != target);
    let mine = only(&ledger, |d| d == target);
    assert!(!verify_hot(&hot_prefix, &mine).await.ok());

    let with_target = objects
        .iter()
        .filter(|b| b.rows.iter().any(|r| r.device_id.as_str() == target))
        .count() as u64;
    assert!(with_target < n_objects, "{with_target} of {n_objects}");
    let args = [
        "backfill", "--from", &from, "--to", &to, "--device", &target, "--hot", "--json",
    ];
    let (out, s) = run(&args, &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["objects"], n_objects, "{s}");
    assert_eq!(s["batches_inserted"], with_target, "{s}");
    assert_eq!(s["rows_inserted"], 200, "{s}");
    assert_eq!(s["hot_readings"], 200, "{s}");
    let counts = per_device(&stores, &all).await;
    for d in &all {
        let expected = if *d == target { 200 } else { 0 };
        assert_eq!(counts[d], expected, "{d}: {counts:?}");
    }
    assert_eq!(
        ch_count(&stores, "SELECT count() FROM {db}.readings").await,
        200,
        "raw rows: none inserted twice"
    );
    assert_eq!(
        ch_count(
            &stores,
            &format!("SELECT count() FROM {{db}}.batches WHERE endsWith(batch_id, '+{target}')")
        )
        .await,
        with_target
    );
    assert_eq!(
        ch_count(&stores, "SELECT count() FROM {db}.batches").await,
        with_target
    );
    let h = verify_hot(&hot_prefix, &mine).await;
    assert!(h.ok(), "the device's windows: {}", h.render());
    let h = verify_hot(&hot_prefix, &others).await;
    assert!(h.ok(), "other devices' windows touched: {}", h.render());

    // Again: nothing.
    let (out, s) = run(&args, &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["batches_inserted"], 0, "{s}");
    assert_eq!(s["rows_inserted"], 0, "{s}");
    assert_eq!(s["already_present"], with_target, "{s}");
    assert_eq!(per_device(&stores, &all).await, counts);
    assert!(verify_hot(&hot_prefix, &ledger).await.ok());

    // A full backfill (no --hot) still sees every batch as missing and
    // restores the rest; D's rows collapse under FINAL.
    let (out, s) = run(&["backfill", "--from", &from, "--to", &to, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["batches_inserted"], n_objects, "{s}");
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 1_200);
    assert!(verify_hot(&hot_prefix, &ledger).await.ok());

    // A device id that is not one: a clear error.
    let (out, _) = run(
        &[
            "backfill", "--from", &from, "--to", &to, "--device", "bad id",
        ],
        &env,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--device") && !err.contains("panicked"),
        "{}",
        show(&out)
    );

    delete_prefix(&hot_prefix).await;
    stores.clean().await;
}

/// `backfill --hot` after losing Redis (every key of this test's prefix)
/// and ClickHouse (both tables truncated), both having held everything: 10
/// devices with 100 readings in the last 40 minutes, 50 three
/// days ago and 20 forty days ago; one device has published again since the
/// loss. The backfill restores all 1,700 rows to ClickHouse; it merges the
/// 1,500 within some retention into the windows and counts the 200 past every
/// retention. `verify --hot` is exact for the recent part at every
/// resolution and for the 3-day-old part at 5m and 1h; the fleet index and
/// each latest view (`seen` too) are back at the newest event time, except
/// for the device that published since, whose newer view stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_hot_rebuilds_lost_redis_windows_index_and_latest() {
    let stores = ColdStores::new("bfhot");
    let hot_prefix = unique("bfhot-hot");
    let env = env_with_hot(&stores, &hot_prefix);
    let (s3, _ch) = sinks(&stores).await;
    let now = hot::service::now_ms();
    let fp = unique("bfh");
    let day = 86_400_000;
    let (recent_rows, recent) = fleet(&fp, 10, 100, now - 40 * 60_000, 20_000);
    let (old_rows, old) = fleet(&fp, 10, 50, now - 3 * day, 30_000);
    let (ancient_rows, _) = fleet(&fp, 10, 20, now - 40 * day, 30_000);
    let mut all = recent.clone();
    for r in old_rows.iter().chain(&ancient_rows) {
        all.record(r.device_id.as_str(), r.metric.as_str(), r.ts_ms, r.value);
    }
    let rows: Vec<_> = [recent_rows, old_rows, ancient_rows].concat();
    let objects = batches(&rows, 100, "gw-1");
    put_batches(&s3, &objects).await;
    let from = fmt_ms(all.min_ts_ms().unwrap());
    let args = [
        "backfill", "--from", &from, "--to", "now", "--hot", "--json",
    ];

    // Both stores full first (the state before the loss)...
    let (out, s) = run(&args, &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["rows_inserted"], 1_700, "{s}");
    assert!(verify_hot(&hot_prefix, &recent).await.ok());
    // ...then Redis loses this test's every key, and ClickHouse its tables.
    assert!(delete_prefix(&hot_prefix).await > 0);
    let db = database(&stores);
    clickhouse(&format!("TRUNCATE TABLE {db}.readings")).await;
    clickhouse(&format!("TRUNCATE TABLE {db}.batches")).await;
    assert!(hot_reader(&hot_prefix)
        .active_devices(0, 100)
        .await
        .unwrap()
        .is_empty());

    // Device 0 published after the loss: a newer reading, already in Redis.
    let live = DeviceId::parse(&device(&fp, 0)).unwrap();
    let live_ts = now - 1_000;
    let cfg = {
        let mut raw = hot::RawHotConfig::default();
        raw.redis.url = crate::support::redis_url();
        raw.key_prefix = hot_prefix.clone();
        raw.validate().unwrap()
    };
    let mut agg =
        hot::aggregate::Aggregator::new(cfg.resolutions.clone(), hot::dedup::Dedup::new(64, 16));
    agg.ingest(
        &devices::Message {
            device_id: live.clone(),
            seq: Some(10_000),
            readings: vec![devices::Reading {
                device_id: live.clone(),
                metric: devices::MetricName::parse("temp").unwrap(),
                ts_ms: live_ts,
                value: 1234.5,
                seq: Some(10_000),
            }],
        },
        now,
    );
    hot::writer::Writer::new(
        hot::connect::connect(&cfg.redis).unwrap(),
        hot::keys::Keys::new(&hot_prefix),
        &cfg.resolutions,
        16,
    )
    .write(&agg.take(), now)
    .await
    .unwrap();
    let mut recent_and_live = recent.clone();
    recent_and_live.record(live.as_str(), "temp", live_ts, 1234.5);

    let (out, s) = run(&args, &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["objects"], objects.len() as u64, "{s}");
    assert_eq!(s["batches_inserted"], objects.len() as u64, "{s}");
    assert_eq!(s["rows_inserted"], 1_700, "{s}");
    assert_eq!(s["hot_readings"], 1_500, "{s}");
    assert_eq!(s["hot_expired"], 200, "{s}");
    let report = stores.verify(&all).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 1_700);

    let h = verify_hot(&hot_prefix, &recent_and_live).await;
    assert!(h.ok(), "{}", h.render());
    assert!(
        h.skipped_resolutions.is_empty(),
        "{:?}",
        h.skipped_resolutions
    );
    let h = verify_hot(&hot_prefix, &old).await;
    assert!(h.ok(), "{}", h.render());
    assert_eq!(h.skipped_resolutions, ["10s", "1m"]);

    // The fleet index and the latest views, as the active-devices API reads them.
    let reader = hot_reader(&hot_prefix);
    let active: BTreeMap<String, i64> = reader
        .active_devices(now - 3_600_000, 1_000)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(active.len(), 10, "{active:?}");
    for (d, metrics) in &recent.entries {
        let newest = metrics["temp"].last_ts_ms;
        let id = DeviceId::parse(d).unwrap();
        let latest = reader.latest(&id).await.unwrap().unwrap();
        if id == live {
            assert_eq!(active[d], now, "the live device's score moved back");
            assert_eq!(latest.last_seen_ms, now);
            assert_eq!(latest.metrics["temp"].ts_ms, live_ts);
            assert_eq!(latest.metrics["temp"].value, 1234.5);
        } else {
            assert_eq!(active[d], newest, "{d}");
            assert_eq!(latest.last_seen_ms, newest, "{d}");
            assert_eq!(latest.metrics["temp"].ts_ms, newest, "{d}");
        }
    }

    delete_prefix(&hot_prefix).await;
    stores.clean().await;
}
