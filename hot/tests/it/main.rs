//! Hot path against a real Redis (THERMOCLINE_TEST_REDIS_URL, default
//! redis://127.0.0.1:6379). Each test uses its own key prefix and deletes it.

use std::time::Duration;

use devices::{DeviceId, Message, MetricName, Reading};
use hot::connect::Conn;
use hot::{
    aggregate::Aggregator,
    config::RawHotConfig,
    connect::connect,
    dedup::Dedup,
    keys::Keys,
    reader::Reader,
    service::now_ms,
    window::{Agg, Resolution},
    writer::Writer,
};

mod cluster;
mod reads;

struct Ctx {
    conn: Conn,
    keys: Keys,
    res: Vec<Resolution>,
}

impl Ctx {
    async fn new(name: &str) -> Self {
        let mut raw = RawHotConfig::default();
        if let Ok(url) = std::env::var("THERMOCLINE_TEST_REDIS_URL") {
            raw.redis.url = url;
        }
        raw.key_prefix = format!("it-{name}-{}", std::process::id());
        let cfg = raw.validate().unwrap();
        let conn = connect(&cfg.redis).unwrap();
        let ctx = Self {
            conn,
            keys: Keys::new(&cfg.key_prefix),
            res: cfg.resolutions,
        };
        ctx.cleanup().await;
        ctx
    }

    fn writer(&self) -> Writer {
        Writer::new(self.conn.clone(), self.keys.clone(), &self.res, 3)
    }

    fn reader(&self) -> Reader {
        Reader::new(self.conn.clone(), self.keys.clone(), &self.res)
    }

    async fn cleanup(&self) {
        let pattern = format!("{}:*", self.keys.prefix());
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut self.conn.clone())
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut self.conn.clone())
                .await
                .unwrap();
        }
    }
}

fn msg(dev: &str, seq: u64, ts: i64, vals: &[(&str, f64)]) -> Message {
    let d = DeviceId::parse(dev).unwrap();
    Message {
        device_id: d.clone(),
        seq: Some(seq),
        readings: vals
            .iter()
            .map(|(m, v)| Reading {
                device_id: d.clone(),
                metric: MetricName::parse(m).unwrap(),
                ts_ms: ts,
                value: *v,
                seq: Some(seq),
            })
            .collect(),
    }
}

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn metric(s: &str) -> MetricName {
    MetricName::parse(s).unwrap()
}

#[tokio::test]
async fn written_windows_read_back_exactly() {
    let ctx = Ctx::new("roundtrip").await;
    let now = now_ms();
    let mut agg = Aggregator::new(ctx.res.clone(), Dedup::new(256, 1000));
    let mut expect = Agg::one(now - 3000, 0.1);
    agg.ingest(&msg("d1", 0, now - 3000, &[("temp", 0.1)]), now);
    for (i, v) in [21.5, -3.25, 1e-7, 99.99].into_iter().enumerate() {
        let ts = now - 2000 + i as i64;
        agg.ingest(
            &msg("d1", i as u64 + 1, ts, &[("temp", v), ("urn:x:hum", 40.0)]),
            now,
        );
        expect.observe(ts, v);
    }
    // Split across two flushes so the script's merge path runs too.
    let first = agg.take();
    ctx.writer().write(&first, now).await.unwrap();
    agg.ingest(&msg("d1", 10, now - 1000, &[("temp", 7.0)]), now);
    expect.observe(now - 1000, 7.0);
    ctx.writer().write(&agg.take(), now).await.unwrap();

    let reader = ctx.reader();
    for res in &ctx.res {
        let buckets = reader
            .buckets(&dev("d1"), &metric("temp"), res, now - 10_000, now)
            .await
            .unwrap();
        let got = Agg::merged(buckets.iter().map(|b| &b.agg)).unwrap();
        assert_eq!(got.count, expect.count, "{}", res.label);
        assert_eq!(
            (got.min, got.max, got.last, got.last_ts_ms),
            (expect.min, expect.max, expect.last, expect.last_ts_ms)
        );
        assert!(
            (got.sum - expect.sum).abs() <= 1e-9 * expect.sum.abs(),
            "{} vs {}",
            got.sum,
            expect.sum
        );
        // Every bucket expires at its end plus the retention.
        for b in &buckets {
            let key = ctx.keys.bucket(&dev("d1"), &res.label, b.start_ms);
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(&key)
                .query_async(&mut ctx.conn.clone())
                .await
                .unwrap();
            assert_eq!(at, res.expires_at_ms(b.start_ms), "{key}");
        }
    }
    let latest = reader.latest(&dev("d1")).await.unwrap().unwrap();
    assert_eq!(latest.metrics["temp"].value, 7.0);
    assert_eq!(latest.metrics["temp"].ts_ms, now - 1000);
    assert_eq!(latest.metrics["urn:x:hum"].value, 40.0);
    assert!(latest.last_seen_ms >= now);
    assert!(reader.latest(&dev("nobody")).await.unwrap().is_none());
    let active = reader.active_devices(now - 60_000, 10).await.unwrap();
    assert_eq!(
        active.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(),
        ["d1"]
    );
    assert!(reader
        .active_devices(now + 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    ctx.cleanup().await;
}

/// Several gateways writing the same buckets at once: counts add up, min/max/last stay right.
#[tokio::test]
async fn concurrent_writers_merge_atomically() {
    let ctx = Ctx::new("concurrent").await;
    let now = now_ms();
    let base = ctx.res[0].bucket_start(now - 20_000);
    let mut tasks = Vec::new();
    let mut expect: Option<Agg> = None;
    for w in 0..8u64 {
        let mut agg = Aggregator::new(ctx.res.clone(), Dedup::new(256, 1000));
        for i in 0..50u64 {
            let ts = base + (i * 97 + w * 13) as i64 % 10_000;
            let v = (w * 1000 + i) as f64 * 0.5 - 700.0;
            for d in 0..5 {
                agg.ingest(&msg(&format!("d{d}"), w * 1000 + i, ts, &[("m", v)]), now);
            }
            match expect.as_mut() {
                Some(e) => e.observe(ts, v),
                None => expect = Some(Agg::one(ts, v)),
            }
        }
        let batch = agg.take();
        let writer = ctx.writer();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                writer.write(&batch, now).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expect = expect.unwrap();
    for d in 0..5 {
        let buckets = ctx
            .reader()
            .buckets(
                &dev(&format!("d{d}")),
                &metric("m"),
                &ctx.res[0],
                base,
                base,
            )
            .await
            .unwrap();
        assert_eq!(buckets.len(), 1);
        let got = buckets[0].agg;
        assert_eq!(got.count, 3 * expect.count);
        assert_eq!(
            (got.min, got.max, got.last, got.last_ts_ms),
            (expect.min, expect.max, expect.last, expect.last_ts_ms)
        );
        assert!((got.sum - 3.0 * expect.sum).abs() <= 1e-9 * expect.sum.abs().max(1.0));
    }
    ctx.cleanup().await;
}

/// After Redis loses its script cache (a restart, SCRIPT FLUSH), writes reload it.
#[tokio::test]
async fn reloads_script_after_script_flush() {
    let ctx = Ctx::new("noscript").await;
    let now = now_ms();
    let mut agg = Aggregator::new(ctx.res.clone(), Dedup::new(256, 1000));
    agg.ingest(&msg("d1", 1, now, &[("m", 1.0)]), now);
    ctx.writer().write(&agg.take(), now).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut ctx.conn.clone())
        .await
        .unwrap();
    agg.ingest(&msg("d1", 2, now, &[("m", 2.0)]), now);
    ctx.writer().write(&agg.take(), now).await.unwrap();
    let b = ctx
        .reader()
        .buckets(&dev("d1"), &metric("m"), &ctx.res[0], now, now)
        .await
        .unwrap();
    assert_eq!(b[0].agg.count, 2);
    ctx.cleanup().await;
}

#[tokio::test]
async fn oversized_ranges_are_refused() {
    let ctx = Ctx::new("range").await;
    let now = now_ms();
    let err = ctx
        .reader()
        .buckets(
            &dev("d1"),
            &metric("m"),
            &ctx.res[0],
            now - 86_400_000 * 2,
            now,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, hot::Error::BadRequest(_)), "{err}");
    let err = ctx
        .reader()
        .buckets(&dev("d1"), &metric("m"), &ctx.res[0], now, now - 1)
        .await
        .unwrap_err();
    assert!(matches!(err, hot::Error::BadRequest(_)), "{err}");
}

/// The service end to end: messages through the bounded channel, flushed on
/// the interval, and everything flushed when the sender closes.
#[tokio::test]
async fn service_flushes_on_close() {
    let mut raw = RawHotConfig::default();
    if let Ok(url) = std::env::var("THERMOCLINE_TEST_REDIS_URL") {
        raw.redis.url = url;
    }
    raw.key_prefix = format!("it-service-{}", std::process::id());
    raw.flush_interval = Duration::from_secs(30);
    raw.channel_capacity = 4;
    let cfg = raw.validate().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = hot::HotMetrics::new(&registry).unwrap();
    let (path, tx) = hot::HotPath::start(&cfg, metrics.clone()).unwrap();
    let now = now_ms();
    for i in 0..100 {
        tx.send(msg("d1", i, now, &[("m", i as f64)]))
            .await
            .unwrap();
    }
    tx.send(msg("d1", 5, now, &[("m", 1e9)])).await.unwrap(); // a redelivery
    let reader = path.reader.clone();
    drop(tx);
    path.join().await;
    assert_eq!(metrics.readings_written.get(), 100);
    assert_eq!(
        metrics
            .readings_skipped
            .with_label_values(&["duplicate"])
            .get(),
        1
    );
    assert_eq!(metrics.channel_depth.get(), 0);
    let b = reader
        .buckets(&dev("d1"), &metric("m"), &cfg.resolutions[0], now, now)
        .await
        .unwrap();
    assert_eq!(
        (b[0].agg.count, b[0].agg.sum, b[0].agg.max),
        (100, 4950.0, 99.0)
    );
    Ctx::new("service").await.cleanup().await;
}

/// A device with more metrics than one script entry carries (a bucket hash is
/// then split over several entries of the same call): nothing is lost.
#[tokio::test]
async fn many_metrics_per_device_are_split_and_merged() {
    let ctx = Ctx::new("wide").await;
    let now = now_ms();
    let names: Vec<String> = (0..450).map(|i| format!("m{i}")).collect();
    let vals: Vec<(&str, f64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as f64))
        .collect();
    for round in 0..2 {
        let mut agg = Aggregator::new(ctx.res.clone(), Dedup::new(256, 1000));
        agg.ingest(&msg("d1", round, now, &vals), now);
        ctx.writer().write(&agg.take(), now).await.unwrap();
    }
    let reader = ctx.reader();
    for (i, n) in names.iter().enumerate().step_by(37) {
        let b = reader
            .buckets(&dev("d1"), &metric(n), &ctx.res[0], now, now)
            .await
            .unwrap();
        assert_eq!(
            (b[0].agg.count, b[0].agg.sum, b[0].agg.max),
            (2, 2.0 * i as f64, i as f64),
            "{n}"
        );
    }
    let latest = reader.latest(&dev("d1")).await.unwrap().unwrap();
    assert_eq!(latest.metrics.len(), 450);
    ctx.cleanup().await;
}

/// The reconciler's repair: replaces one metric's six fields, leaves the
/// others, keeps the bucket's expiry, raises but never lowers the latest
/// view, and does not undo a flush that landed after the bucket was read.
#[tokio::test]
async fn repair_replaces_one_metric_and_never_undoes_a_newer_flush() {
    use hot::repair::{Expect, MetricRepair, Repairer, Stored};
    let ctx = Ctx::new("repair").await;
    let rep = Repairer::new(ctx.conn.clone(), ctx.keys.clone(), &ctx.res);
    let w = ctx.writer();
    let now = now_ms();
    let ts = now - 60_000;
    let dev = DeviceId::parse("rp-1").unwrap();
    let (t, h) = (
        MetricName::parse("t").unwrap(),
        MetricName::parse("h").unwrap(),
    );
    let mut a = Aggregator::new(ctx.res.clone(), Dedup::new(64, 16));
    a.ingest(&msg("rp-1", 0, ts, &[("t", 1.0), ("h", 5.0)]), now);
    a.ingest(&msg("rp-1", 0, ts, &[("t", 1.0), ("h", 5.0)]), now); // dropped by dedup
    w.write(&a.take(), now).await.unwrap();
    // Written twice, as a redelivery past the horizon would.
    let mut b = Aggregator::new(ctx.res.clone(), Dedup::new(64, 16));
    b.ingest(&msg("rp-1", 0, ts, &[("t", 1.0)]), now);
    w.write(&b.take(), now).await.unwrap();

    let res = &ctx.res[0];
    let start = res.bucket_start(ts);
    let read = rep
        .read_buckets(&dev, res, &[start, start + res.width_ms])
        .await
        .unwrap();
    assert_eq!(read.len(), 1, "absent buckets are left out");
    let Stored::Agg(seen) = read[0].metrics["t"] else {
        panic!("corrupt")
    };
    assert_eq!(seen.count, 2);
    let truth = Agg::one(ts, 1.0);
    let ttl_before: i64 = redis::cmd("PTTL")
        .arg(ctx.keys.bucket(&dev, &res.label, start))
        .query_async(&mut ctx.conn.clone())
        .await
        .unwrap();

    // A flush lands between the read and the repair: the repair stands down.
    let mut c = Aggregator::new(ctx.res.clone(), Dedup::new(64, 16));
    c.ingest(&msg("rp-1", 1, ts + 1, &[("t", 2.0)]), now);
    w.write(&c.take(), now).await.unwrap();
    let fix = |expect| MetricRepair {
        metric: t.clone(),
        expect,
        value: Some(truth),
    };
    let applied = rep
        .repair_bucket(&dev, res, start, &[fix(Expect::Agg(seen))], now)
        .await
        .unwrap();
    assert_eq!(applied, [false]);
    let got = ctx.reader().buckets(&dev, &t, res, ts, ts).await.unwrap();
    assert_eq!(got[0].agg.count, 3, "the newer flush was undone");

    // Read again and repair: t is replaced, h untouched, expiry kept.
    let read = rep.read_buckets(&dev, res, &[start]).await.unwrap();
    let Stored::Agg(seen) = read[0].metrics["t"] else {
        panic!("corrupt")
    };
    let applied = rep
        .repair_bucket(&dev, res, start, &[fix(Expect::Agg(seen))], now)
        .await
        .unwrap();
    assert_eq!(applied, [true]);
    let got = ctx.reader().buckets(&dev, &t, res, ts, ts).await.unwrap();
    assert_eq!(got[0].agg, truth);
    let hh = ctx.reader().buckets(&dev, &h, res, ts, ts).await.unwrap();
    assert_eq!(hh[0].agg, Agg::one(ts, 5.0));
    let ttl_after: i64 = redis::cmd("PTTL")
        .arg(ctx.keys.bucket(&dev, &res.label, start))
        .query_async(&mut ctx.conn.clone())
        .await
        .unwrap();
    assert!(
        ttl_after > 0 && ttl_after <= ttl_before,
        "{ttl_before} {ttl_after}"
    );
    // The latest view (ts + 1, 2.0) is not lowered to the repaired bucket's last.
    let latest = ctx.reader().latest(&dev).await.unwrap().unwrap();
    assert_eq!(latest.metrics["t"].ts_ms, ts + 1);

    // Extra in Redis: deleted; a missing bucket is created with the writer's expiry.
    let applied = rep
        .repair_bucket(
            &dev,
            res,
            start,
            &[MetricRepair {
                metric: h.clone(),
                expect: Expect::Agg(Agg::one(ts, 5.0)),
                value: None,
            }],
            now,
        )
        .await
        .unwrap();
    assert_eq!(applied, [true]);
    assert!(ctx
        .reader()
        .buckets(&dev, &h, res, ts, ts)
        .await
        .unwrap()
        .is_empty());
    let later = start + 3 * res.width_ms;
    let applied = rep
        .repair_bucket(&dev, res, later, &[fix(Expect::Absent)], now)
        .await
        .unwrap();
    assert_eq!(applied, [true]);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(ctx.keys.bucket(&dev, &res.label, later))
        .query_async(&mut ctx.conn.clone())
        .await
        .unwrap();
    let expected = res.expires_at_ms(later) - now_ms();
    assert!((ttl - expected).abs() < 5_000, "{ttl} vs {expected}");

    // The lease: taken, renewed by its holder, refused to another.
    assert!(rep
        .acquire_lease("gw-a", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(rep
        .acquire_lease("gw-a", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(!rep
        .acquire_lease("gw-b", Duration::from_secs(5))
        .await
        .unwrap());
    assert_eq!(rep.lease_holder().await.unwrap().as_deref(), Some("gw-a"));
    ctx.cleanup().await;
}

/// A rebuild after Redis lost a device: the repair recreates its latest view
/// with `seen` (the newest event time restored) and `index_devices` puts it
/// back in the fleet index; neither moves a newer view or score back.
#[tokio::test]
async fn repair_restores_seen_and_fleet_index_without_lowering_them() {
    use hot::repair::{Expect, MetricRepair, Repairer};
    let ctx = Ctx::new("repair-seen").await;
    let rep = Repairer::new(ctx.conn.clone(), ctx.keys.clone(), &ctx.res);
    let now = now_ms();
    let ts = now - 120_000;
    let res = &ctx.res[0];
    let (lost, live) = (dev("rs-lost"), dev("rs-live"));
    let fix = |ts: i64, v: f64| MetricRepair {
        metric: metric("t"),
        expect: Expect::Absent,
        value: Some(Agg::one(ts, v)),
    };

    // Nothing in Redis: the repair creates latest with value, ts and seen.
    let applied = rep
        .repair_bucket(&lost, res, res.bucket_start(ts), &[fix(ts, 3.0)], now)
        .await
        .unwrap();
    assert_eq!(applied, [true]);
    let latest = ctx.reader().latest(&lost).await.unwrap().unwrap();
    assert_eq!(latest.last_seen_ms, ts);
    assert_eq!(latest.metrics["t"].ts_ms, ts);
    assert_eq!(latest.metrics["t"].value, 3.0);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(ctx.keys.latest(&lost))
        .query_async(&mut ctx.conn.clone())
        .await
        .unwrap();
    assert!(ttl > 0, "a recreated latest view has an expiry: {ttl}");

    // A device that published after the loss: newer view and score stay.
    let mut a = Aggregator::new(ctx.res.clone(), Dedup::new(64, 16));
    a.ingest(&msg("rs-live", 9, now - 1_000, &[("t", 9.0)]), now);
    ctx.writer().write(&a.take(), now).await.unwrap();
    let applied = rep
        .repair_bucket(&live, res, res.bucket_start(ts), &[fix(ts, 4.0)], now)
        .await
        .unwrap();
    assert_eq!(applied, [true]);
    let latest = ctx.reader().latest(&live).await.unwrap().unwrap();
    assert_eq!(latest.last_seen_ms, now, "seen moved back");
    assert_eq!(latest.metrics["t"].ts_ms, now - 1_000);
    assert_eq!(latest.metrics["t"].value, 9.0);

    rep.index_devices(&[(lost.clone(), ts), (live.clone(), ts)])
        .await
        .unwrap();
    rep.index_devices(&[]).await.unwrap();
    let active = ctx.reader().active_devices(ts - 1, 10).await.unwrap();
    assert_eq!(
        active,
        [("rs-live".to_string(), now), ("rs-lost".to_string(), ts)]
    );
    // Raised, never lowered.
    rep.index_devices(&[(lost.clone(), ts + 5), (live.clone(), ts - 5)])
        .await
        .unwrap();
    let active = ctx.reader().active_devices(ts - 1, 10).await.unwrap();
    assert_eq!(
        active,
        [
            ("rs-live".to_string(), now),
            ("rs-lost".to_string(), ts + 5)
        ]
    );
    ctx.cleanup().await;
}

/// Issue 8: a valid message with thousands of metrics (2,000 is 23 KiB of
/// JSON; 6,000 still fits the 64 KiB payload limit) lands in the buckets and
/// the latest view, on the first write and on a merge. Before the latest view
/// was chunked the script overflowed Lua's `unpack` and nothing landed.
#[tokio::test]
async fn thousands_of_metrics_land_in_buckets_and_latest_view() {
    let ctx = Ctx::new("widest").await;
    let now = now_ms();
    for (dev_name, n) in [("d2k", 2_000usize), ("d6k", 6_000)] {
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let vals: Vec<(&str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as f64))
            .collect();
        for round in 0..2 {
            let mut agg = Aggregator::new(ctx.res.clone(), Dedup::new(256, 1000));
            agg.ingest(&msg(dev_name, round, now - round as i64, &vals), now);
            let w = ctx.writer().write_counted(&agg.take(), now).await;
            assert!(w.error.is_none(), "{dev_name}: {:?}", w.error);
            assert_eq!((w.readings, w.failed, w.devices), (n as u64, 0, 1));
        }
        let reader = ctx.reader();
        let latest = reader.latest(&dev(dev_name)).await.unwrap().unwrap();
        assert_eq!(latest.metrics.len(), n, "{dev_name}");
        assert_eq!(latest.metrics[&format!("m{}", n - 1)].ts_ms, now);
        assert!(latest.last_seen_ms >= now);
        for i in [0, n / 2, n - 1] {
            let b = reader
                .buckets(&dev(dev_name), &metric(&names[i]), &ctx.res[0], now, now)
                .await
                .unwrap();
            assert_eq!(
                (b[0].agg.count, b[0].agg.sum, b[0].agg.last_ts_ms),
                (2, 2.0 * i as f64, now),
                "{dev_name} {}",
                names[i]
            );
        }
    }
    ctx.cleanup().await;
}

/// One device whose script fails (its latest key is not a hash) fails alone:
/// the other devices of the same pipeline are counted as written and are in
/// Redis; the failed device's readings are counted as failed.
#[tokio::test]
async fn a_failing_device_script_fails_only_that_device() {
    let ctx = Ctx::new("onefails").await;
    let now = now_ms();
    let _: () = redis::cmd("SET")
        .arg(ctx.keys.latest(&dev("d2")))
        .arg("not a hash")
        .query_async(&mut ctx.conn.clone())
        .await
        .unwrap();
    let mut agg = Aggregator::new(ctx.res.clone(), Dedup::new(256, 1000));
    agg.ingest(&msg("d1", 0, now, &[("m", 1.0)]), now);
    agg.ingest(&msg("d2", 0, now, &[("m", 2.0), ("n", 2.0)]), now);
    agg.ingest(&msg("d3", 0, now, &[("m", 3.0)]), now);
    // ctx.writer() puts 3 devices in one pipeline.
    let w = ctx.writer().write_counted(&agg.take(), now).await;
    assert_eq!((w.readings, w.failed), (2, 2));
    assert_eq!((w.devices, w.failed_devices), (2, 1));
    assert!(
        w.error.as_ref().is_some_and(|e| !e.is_retriable()),
        "{:?}",
        w.error
    );
    let reader = ctx.reader();
    for (d, v) in [("d1", 1.0), ("d3", 3.0)] {
        let latest = reader.latest(&dev(d)).await.unwrap().unwrap();
        assert_eq!(latest.metrics["m"].value, v, "{d}");
    }
    ctx.cleanup().await;
}
