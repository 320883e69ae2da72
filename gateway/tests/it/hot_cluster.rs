//! The gateway against the local Redis Cluster (THERMOCLINE_TEST_REDIS_CLUSTER_NODES,
//! comma-separated; `scripts/services up redis-cluster`). Own key prefix, own
//! keys deleted; never FLUSHALL (CI runs tests in parallel).

use std::time::Duration;

use crate::hot_path::thermocline;
use crate::support::{sim_config, unique, TestGateway};
use devices::testkit::Mosquitto;

fn cluster_nodes() -> String {
    std::env::var("THERMOCLINE_TEST_REDIS_CLUSTER_NODES").unwrap_or_else(|_| {
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
    })
}

/// 100 devices × 100 messages through a gateway whose `hot.redis` is the
/// cluster (set from the environment): `verify --hot` against the cluster is
/// exact, and the read API answers from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_through_redis_cluster_verifies_exactly() {
    let broker = Mosquitto::start().await.unwrap();
    let nodes = cluster_nodes();
    let extra = [
        ("THERMOCLINE__HOT__REDIS__URL", ""),
        ("THERMOCLINE__HOT__REDIS__CLUSTER_NODES", nodes.as_str()),
    ];
    let gw = TestGateway::start("clu", &broker, "", &extra).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("clu"), 100, 100, 0))
        .await
        .unwrap();
    gw.wait_hot_done(30_000, Duration::from_secs(60)).await;
    assert_eq!(
        gw.metric("thermocline_hot_readings_failed_total", None),
        0.0
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    ledger.write(&path).unwrap();
    let env = [
        ("THERMOCLINE__HOT__KEY_PREFIX", gw.prefix.as_str()),
        ("THERMOCLINE__HOT__REDIS__CLUSTER_NODES", nodes.as_str()),
    ];
    let out = thermocline(
        &["verify", "--hot", "--ledger", path.to_str().unwrap()],
        &env,
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("OK: hot windows match the ledger exactly"),
        "verify failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = ledger.entries.keys().next().unwrap();
    let r = reqwest::get(format!("{}/api/v1/devices/{device}/latest", gw.http))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["metrics"]["temp"]["ts_ms"],
        ledger.entries[device]["temp"].last_ts_ms
    );

    // Delete our keys through the cluster (the gateway's own config).
    let mut gw = gw;
    if let Some(g) = gw.gw.take() {
        g.stop().await;
    }
    let mut raw = hot::RawHotConfig::default();
    raw.redis.cluster_nodes = nodes.split(',').map(str::to_string).collect();
    raw.key_prefix = gw.prefix.clone();
    let cfg = raw.validate().unwrap();
    let mut conn = hot::connect::connect(&cfg.redis).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", gw.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() > 100, "{} keys", keys.len());
    for k in keys {
        let _: () = redis::cmd("DEL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}
