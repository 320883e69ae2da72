//! Several gateways merging into the same buckets at once (issue 8): one
//! shared subscription, so the broker hands each device's successive messages
//! to different gateways.

use std::time::{Duration, Instant};

use crate::hot_path::thermocline;
use crate::support::{redis_url, sim_config, unique, TestGateway};
use devices::testkit::Mosquitto;

/// Three gateways on `$share/…` of one private tuned Mosquitto, one Redis
/// prefix: 100 devices × 100 messages. `verify --hot` is exact (count, sum,
/// min, max, and the last value and its ts); every gateway wrote, and each
/// took messages of (so merged into the buckets of) at least 90 of the 100
/// devices, read from its own metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_one_shared_subscription_merge_exactly() {
    let broker = Mosquitto::start().await.unwrap();
    let prefix = unique("trio");
    let extra = [
        ("THERMOCLINE__HOT__KEY_PREFIX", prefix.as_str()),
        ("THERMOCLINE__MQTT__SHARED_GROUP", "trio"),
        // Short flushes: many small merges racing on the same buckets.
        ("THERMOCLINE__HOT__FLUSH_INTERVAL", "5ms"),
    ];
    let mut gws = Vec::new();
    for i in 0..3 {
        let mut gw = TestGateway::start(&format!("trio{i}"), &broker, &redis_url(), &extra).await;
        gw.prefix = prefix.clone();
        gws.push(gw);
    }
    // Every subscription is in place before the fleet publishes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("trio"), 100, 100, 0))
        .await
        .unwrap();
    assert_eq!(ledger.total_readings(), 30_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = |gws: &[TestGateway]| -> f64 {
        gws.iter()
            .map(|g| {
                g.metric("thermocline_hot_readings_written_total", None)
                    + g.metric("thermocline_hot_readings_failed_total", None)
            })
            .sum()
    };
    while done(&gws) < 30_000.0 {
        assert!(Instant::now() < deadline, "handled {} of 30000", done(&gws));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut received = 0.0;
    for (i, g) in gws.iter().enumerate() {
        let msgs = g.metric("thermocline_ingest_messages_received_total", None);
        let devices = g.metric("thermocline_hot_dedup_devices", None);
        let ok = g.metric(
            "thermocline_hot_device_writes_total",
            Some(("outcome", "ok")),
        );
        eprintln!("gateway {i}: {msgs} messages from {devices} devices, {ok} device writes");
        assert_eq!(g.metric("thermocline_hot_readings_failed_total", None), 0.0);
        assert!(
            devices >= 90.0,
            "gateway {i} took messages of only {devices} devices"
        );
        assert!(ok >= 90.0, "gateway {i} made only {ok} device writes");
        received += msgs;
    }
    assert_eq!(
        received, 10_000.0,
        "each message went to exactly one gateway"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    ledger.write(&path).unwrap();
    let env = [
        ("THERMOCLINE__HOT__KEY_PREFIX", prefix.as_str()),
        ("THERMOCLINE__HOT__REDIS__URL", gws[0].redis_url.as_str()),
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
    // The latest view agrees with the ledger's last value and its ts too.
    let reader = gws[0].reader();
    for (device, metrics) in &ledger.entries {
        let dev = devices::DeviceId::parse(device).unwrap();
        let latest = reader.latest(&dev).await.unwrap().unwrap();
        for (m, e) in metrics {
            let got = latest.metrics[m];
            assert_eq!(
                (got.ts_ms, Some(got.value)),
                (e.last_ts_ms, e.last),
                "{device} {m}"
            );
        }
    }
    for g in gws {
        g.stop_and_clean().await;
    }
}
