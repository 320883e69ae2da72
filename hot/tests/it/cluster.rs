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
            let _: () = redis::cmd("DEL").arg(k).query_async(&mut c).await.unwrap();
        }
        all.extend(ks);
    }
    assert!(nodes_with_keys >= 2, "all keys on one node");
    // 200 latest + 200 × 4 bucket hashes + the index.
    assert_eq!(all.len(), 200 + 800 + 1);
}
