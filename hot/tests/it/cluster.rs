//! The hot path against a real Redis Cluster (THERMOCLINE_TEST_REDIS_CLUSTER_NODES,
//! comma-separated; default the three local masters `scripts/services up
//! redis-cluster` starts on 7000-7002). Each test uses its own key prefix and
//! deletes its keys, never FLUSHALL: CI runs the tests in parallel.

use hot::{
    aggregate::Aggregator, config::RawHotConfig, connect::connect, dedup::Dedup, keys::Keys,
    reader::Reader, service::now_ms, window::Agg, writer::Writer,
};

use super::{dev, metric, msg};

pub fn cluster_nodes() -> Vec<String> {
    std::env::var("THERMOCLINE_TEST_REDIS_CLUSTER_NODES")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
        })
        .split(',')
        .map(str::to_string)
        .collect()
}

/// 200 devices (spread over every master's slots) × 3 metrics, merged over
/// two flushes through the cluster: every bucket, latest view and the fleet
/// index read back exactly, and the keys live on more than one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_writes_and_reads_back_devices_across_slots() {
    let mut raw = RawHotConfig::default();
    raw.redis.cluster_nodes = cluster_nodes();
    raw.key_prefix = format!("itc-rw-{}", std::process::id());
    let cfg = raw.validate().unwrap();
    let conn = connect(&cfg.redis).unwrap();
    assert!(conn.is_cluster());
    let keys = Keys::new(&cfg.key_prefix);
    let writer = Writer::new(conn.clone(), keys.clone(), &cfg.resolutions, 64);
    let reader = Reader::new(conn.clone(), keys.clone(), &cfg.resolutions);
    let now = now_ms();
    let names: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    let mut expect: Vec<Agg> = Vec::new();
    for round in 0..2u64 {
        let mut agg = Aggregator::new(cfg.resolutions.clone(), Dedup::new(256, 1000));
        for (i, d) in names.iter().enumerate() {
            let v = (i as u64 * 10 + round) as f64;
            let ts = now - 1000 + round as i64;
            agg.ingest(&msg(d, round, ts, &[("a", v), ("b", -v), ("c", 1.5)]), now);
            if round == 0 {
                expect.push(Agg::one(ts, v));
            } else {
                expect[i].observe(ts, v);
            }
        }
        let w = writer.write_counted(&agg.take(), now).await;
        assert!(w.error.is_none(), "{:?}", w.error);
        assert_eq!((w.readings, w.failed, w.devices), (600, 0, 200));
    }
    for (i, d) in names.iter().enumerate() {
        for res in &cfg.resolutions {
            let b = reader
                .buckets(&dev(d), &metric("a"), res, now - 1000, now)
                .await
                .unwrap();
            let got = Agg::merged(b.iter().map(|b| &b.agg)).unwrap();
            assert_eq!(got, expect[i], "{d} {}", res.label);
        }
        let latest = reader.latest(&dev(d)).await.unwrap().unwrap();
        assert_eq!(latest.metrics["a"].value, expect[i].last, "{d}");
        assert_eq!(latest.metrics["b"].value, -expect[i].last, "{d}");
    }
    let active = reader.active_devices(now - 60_000, 1000).await.unwrap();
    assert_eq!(active.len(), 200);
    reader.ping().await.unwrap();

    // The keys are spread over the masters, and are all ours to delete.
    let mut nodes_with_keys = 0;
    let mut all = Vec::new();
    for node in cluster_nodes() {
        let mut c = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ks: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", cfg.key_prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        nodes_with_keys += usize::from(!ks.is_empty());
        for k in &ks {
            // Through the cluster client: a slot another test is migrating
            // answers ASK, which it follows.
            let _: () = redis::cmd("DEL")
                .arg(k)
                .query_async(&mut conn.clone())
                .await
                .unwrap();
        }
        all.extend(ks);
    }
    assert!(nodes_with_keys >= 2, "all keys on one node");
    // 200 latest + 200 × 4 bucket hashes + the index.
    assert_eq!(all.len(), 200 + 800 + 1);
}

fn node_id(port: u16) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "myid"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A slot migration while the writer merges: 300 slots move from the first
/// master to the second (`redis-cli --cluster reshard`) during 30 flushes of
/// 200 devices; every reading lands exactly once, none counted failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_slot_migration_during_writes_stays_exact() {
    let mut raw = RawHotConfig::default();
    raw.redis.cluster_nodes = cluster_nodes();
    raw.key_prefix = format!("itc-mig-{}", std::process::id());
    let cfg = raw.validate().unwrap();
    let conn = connect(&cfg.redis).unwrap();
    let keys = Keys::new(&cfg.key_prefix);
    let writer = Writer::new(conn.clone(), keys.clone(), &cfg.resolutions, 64);
    let reader = Reader::new(conn.clone(), keys.clone(), &cfg.resolutions);
    let (from, to) = (node_id(7000), node_id(7001));
    let reshard = tokio::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            "127.0.0.1:7000",
            "--cluster-from",
            &from,
        ])
        .args([
            "--cluster-to",
            &to,
            "--cluster-slots",
            "300",
            "--cluster-yes",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let now = now_ms();
    let names: Vec<String> = (0..200).map(|i| format!("m{i:03}")).collect();
    for round in 0..30u64 {
        let mut agg = Aggregator::new(cfg.resolutions.clone(), Dedup::new(256, 1000));
        for d in &names {
            agg.ingest(&msg(d, round, now - 1000, &[("a", 1.0)]), now);
        }
        let w = writer.write_counted(&agg.take(), now).await;
        assert!(w.error.is_none(), "round {round}: {:?}", w.error);
        assert_eq!((w.readings, w.failed), (200, 0));
    }
    let status = reshard.wait_with_output().await.unwrap().status;
    assert!(status.success(), "reshard failed");
    // Move 300 slots back, so repeated runs leave the cluster balanced.
    let back = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            "127.0.0.1:7000",
            "--cluster-from",
            &to,
        ])
        .args([
            "--cluster-to",
            &from,
            "--cluster-slots",
            "300",
            "--cluster-yes",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(back.success(), "reshard back failed");
    for d in &names {
        let b = reader
            .buckets(&dev(d), &metric("a"), &cfg.resolutions[0], now - 1000, now)
            .await
            .unwrap();
        assert_eq!(b[0].agg.count, 30, "{d}");
    }
    for node in cluster_nodes() {
        let mut c = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ks: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", cfg.key_prefix))
            .query_async(&mut c)
            .await
            .unwrap();
        for k in &ks {
            // Through the cluster client: a slot another test is migrating
            // answers ASK, which it follows.
            let _: () = redis::cmd("DEL")
                .arg(k)
                .query_async(&mut conn.clone())
                .await
                .unwrap();
        }
    }
}

/// Hostile input through the cluster: a 6,000-metric device lands whole, and a
/// device whose latest key is not a hash fails alone, in its own slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_device_lands_and_a_failing_device_fails_alone() {
    let mut raw = RawHotConfig::default();
    raw.redis.cluster_nodes = cluster_nodes();
    raw.key_prefix = format!("itc-hostile-{}", std::process::id());
    let cfg = raw.validate().unwrap();
    let conn = connect(&cfg.redis).unwrap();
    let keys = Keys::new(&cfg.key_prefix);
    let writer = Writer::new(conn.clone(), keys.clone(), &cfg.resolutions, 64);
    let reader = Reader::new(conn.clone(), keys.clone(), &cfg.resolutions);
    let _: () = redis::cmd("SET")
        .arg(keys.latest(&dev("bad")))
        .arg("not a hash")
        .query_async(&mut conn.clone())
        .await
        .unwrap();
    let now = now_ms();
    let names: Vec<String> = (0..6_000).map(|i| format!("m{i}")).collect();
    let vals: Vec<(&str, f64)> = names.iter().map(|n| (n.as_str(), 2.5)).collect();
    let mut agg = Aggregator::new(cfg.resolutions.clone(), Dedup::new(256, 1000));
    agg.ingest(&msg("wide", 0, now, &vals), now);
    agg.ingest(&msg("bad", 0, now, &[("a", 1.0)]), now);
    for i in 0..20 {
        agg.ingest(&msg(&format!("ok{i}"), 0, now, &[("a", 1.0)]), now);
    }
    let w = writer.write_counted(&agg.take(), now).await;
    assert_eq!((w.readings, w.failed), (6_020, 1));
    assert_eq!((w.devices, w.failed_devices), (21, 1));
    let latest = reader.latest(&dev("wide")).await.unwrap().unwrap();
    assert_eq!(latest.metrics.len(), 6_000);
    for i in 0..20 {
        assert!(reader
            .latest(&dev(&format!("ok{i}")))
            .await
            .unwrap()
            .is_some());
    }
    let mut mine: Vec<String> = vec![keys.latest(&dev("bad")), keys.device_index()];
    for d in ["wide".to_string(), "bad".to_string()]
        .into_iter()
        .chain((0..20).map(|i| format!("ok{i}")))
    {
        mine.push(keys.latest(&dev(&d)));
        for res in &cfg.resolutions {
            mine.push(keys.bucket(&dev(&d), &res.label, res.bucket_start(now)));
        }
    }
    for k in mine {
        let _: () = redis::cmd("DEL")
            .arg(&k)
            .query_async(&mut conn.clone())
            .await
            .unwrap();
    }
}
