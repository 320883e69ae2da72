//! Issue 4: a Redis rebuild by the reconciler restores the fleet index
//! (`{prefix}:devices`) and each latest view's `seen`, so the active-devices
//! API lists the devices again; a device that published since the loss keeps
//! its newer view. Real Redis, ClickHouse, S3 and a private Mosquitto.

use std::{collections::BTreeMap, time::Duration};

use devices::{DeviceId, MetricName};

use crate::{
    reconcile::{delete_keys, reconcile_cli, setup, verify},
    support::{sim_config, unique},
};

/// 20 devices × 10 messages through the gateway; then every key of the
/// test's prefix is deleted (the API lists no device), and device 0 publishes
/// once more into Redis only (a newer reading the cold path has not shipped).
/// `reconcile --seal-delay 0s --repair` rebuilds every window (`verify --hot`
/// exact) and, through the HTTP API: 20 active devices, each scored and
/// `last_seen_ms` at its newest event time, each latest metric at the
/// ledger's last reading; device 0 keeps its newer reading, `seen` and score.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_restores_fleet_index_and_seen_without_moving_latest_back() {
    let (broker, stores, gw) = setup("recfleet", &[]).await;
    let sim = sim_config(&broker, &unique("rfl"), 20, 10, 0);
    let ledger = devices::sim::run(sim.clone()).await.unwrap();
    gw.wait_hot_done(600, Duration::from_secs(30)).await;
    stores.wait_exact(&ledger, Duration::from_secs(60)).await;
    let api = |path: &str| {
        let url = format!("{}{path}", gw.http);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let active = |v: serde_json::Value| -> BTreeMap<String, i64> {
        v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["device_id"].as_str().unwrap().to_string(),
                    d["last_seen_ms"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let (_, before) = api("/api/v1/devices?active_within=10m").await;
    assert_eq!(active(before).len(), 20);

    // Redis loses everything of this gateway.
    assert!(delete_keys(&gw, "*").await > 0);
    let (_, lost) = api("/api/v1/devices?active_within=10m").await;
    assert_eq!(active(lost).len(), 0);

    // Device 0 publishes again: into Redis only, newer than anything cold.
    let live = DeviceId::parse(&devices::sim::device_id(&sim.prefix, 0)).unwrap();
    let cfg = gw.hot_config();
    let now = hot::service::now_ms();
    let live_ts = now - 500;
    let mut agg =
        hot::aggregate::Aggregator::new(cfg.resolutions.clone(), hot::dedup::Dedup::new(64, 16));
    agg.ingest(
        &devices::Message {
            device_id: live.clone(),
            seq: Some(5_000),
            readings: vec![devices::Reading {
                device_id: live.clone(),
                metric: MetricName::parse("temp").unwrap(),
                ts_ms: live_ts,
                value: -777.25,
                seq: Some(5_000),
            }],
        },
        now,
    );
    hot::writer::Writer::new(
        hot::connect::connect(&cfg.redis).unwrap(),
        hot::keys::Keys::new(&gw.prefix),
        &cfg.resolutions,
        16,
    )
    .write(&agg.take(), now)
    .await
    .unwrap();

    let from = (ledger.min_ts_ms().unwrap() - 60_000).to_string();
    let to = (ledger.max_ts_ms().unwrap() + 1).to_string();
    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &[
            "--from",
            &from,
            "--to",
            &to,
            "--seal-delay",
            "0s",
            "--repair",
            "--json",
        ],
    );
    assert!(ok, "{text}");
    let full = verify(&gw.reader(), &ledger).await;
    assert!(full.ok(), "{}", full.render());

    let (code, body) = api("/api/v1/devices?active_within=10m&limit=1000").await;
    assert_eq!(code, 200, "{body}");
    let active = active(body);
    assert_eq!(active.len(), 20, "{active:?}");
    for (d, metrics) in &ledger.entries {
        let newest = metrics.values().map(|e| e.last_ts_ms).max().unwrap();
        let (code, latest) = api(&format!("/api/v1/devices/{d}/latest")).await;
        assert_eq!(code, 200, "{latest}");
        if d == live.as_str() {
            assert_eq!(active[d], now, "the live device's score moved back");
            assert_eq!(latest["last_seen_ms"], now, "{latest}");
            assert_eq!(latest["metrics"]["temp"]["ts_ms"], live_ts, "{latest}");
            assert_eq!(latest["metrics"]["temp"]["value"], -777.25, "{latest}");
            assert_eq!(
                latest["metrics"]["hum"]["ts_ms"], metrics["hum"].last_ts_ms,
                "{latest}"
            );
        } else {
            assert_eq!(active[d], newest, "{d}");
            assert_eq!(latest["last_seen_ms"], newest, "{latest}");
            for (m, e) in metrics {
                assert_eq!(latest["metrics"][m]["ts_ms"], e.last_ts_ms, "{d} {m}");
            }
        }
    }

    // A second rebuild changes nothing and moves nothing back.
    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &[
            "--from",
            &from,
            "--to",
            &to,
            "--seal-delay",
            "0s",
            "--repair",
        ],
    );
    assert!(ok && text.contains("OK: Redis agrees"), "{text}");
    let (_, body) = api("/api/v1/devices?active_within=10m&limit=1000").await;
    assert_eq!(active.len(), 20);
    assert_eq!(
        body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (
                d["device_id"].as_str().unwrap().to_string(),
                d["last_seen_ms"].as_i64().unwrap()
            ))
            .collect::<BTreeMap<_, _>>(),
        active
    );

    gw.stop_and_clean().await;
    stores.clean().await;
}
