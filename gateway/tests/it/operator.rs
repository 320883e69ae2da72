//! What operators and their tools meet first: the read API's answers and
//! refusals, and `thermocline check-config`.

use std::time::Duration;

use devices::testkit::Mosquitto;

use crate::{
    hot_path::thermocline,
    support::{redis_url, sim_config, unique, TestGateway},
};

/// The read API: shapes, 404 for unknown devices, 400 for bad parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_api_answers_and_refuses_bad_requests() {
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start("api", &broker, &redis_url(), &[]).await;
    let prefix = unique("api");
    let ledger = devices::sim::run(sim_config(&broker, &prefix, 3, 20, 0))
        .await
        .unwrap();
    gw.wait_hot_done(ledger.total_readings(), Duration::from_secs(20))
        .await;
    let dev = ledger.entries.keys().next().unwrap();
    let entry = &ledger.entries[dev]["hum"];
    let get = |path: String| {
        let url = format!("{}{path}", gw.http);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };

    let (code, body) = get(format!("/api/v1/devices/{dev}/latest")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metrics"]["hum"]["ts_ms"], entry.last_ts_ms);

    let (code, body) = get(format!(
        "/api/v1/devices/{dev}/metrics/hum/windows?resolution=1m&last=15m"
    ))
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["aggregate"]["count"], entry.count);
    assert_eq!(body["aggregate"]["min"], entry.min);
    assert_eq!(body["aggregate"]["max"], entry.max);
    assert!(
        (body["aggregate"]["sum"].as_f64().unwrap() - entry.sum).abs() <= 1e-9 * entry.sum.abs()
    );
    assert!(!body["buckets"].as_array().unwrap().is_empty());

    let (code, body) = get("/api/v1/devices?active_within=5m".into()).await;
    assert_eq!(code, 200);
    let listed: Vec<&str> = body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{body}");

    for (path, want) in [
        ("/api/v1/devices/nobody-here/latest".to_string(), 404),
        (
            "/api/v1/devices/nobody-here/metrics/hum/windows".to_string(),
            404,
        ),
        ("/api/v1/devices/a:b/latest".to_string(), 400),
        (
            format!("/api/v1/devices/{dev}/metrics/hum/windows?resolution=7m"),
            400,
        ),
        (
            format!("/api/v1/devices/{dev}/metrics/hum/windows?last=forever"),
            400,
        ),
        (
            format!("/api/v1/devices/{dev}/metrics/hum/windows?resolution=10s&last=30d"),
            400,
        ),
        (
            format!("/api/v1/devices/{dev}/metrics/hum/windows?from=10&last=1m"),
            400,
        ),
        (
            format!("/api/v1/devices/{dev}/metrics/hum/windows?colour=red"),
            400,
        ),
        ("/api/v1/devices?active_within=soon".to_string(), 400),
        ("/api/v1/devices?limit=0".to_string(), 400),
    ] {
        let (code, body) = get(path.clone()).await;
        assert_eq!(code, want, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
    gw.stop_and_clean().await;
}

/// `thermocline check-config` shows the effective config with secrets redacted,
/// and a broken config is a clear error naming the key.
#[test]
fn check_config_redacts_and_names_bad_keys() {
    let out = thermocline(
        &["check-config"],
        &[
            ("THERMOCLINE__MQTT__USERNAME", "gw"),
            ("THERMOCLINE__MQTT__PASSWORD", "s3cr3t-mqtt"),
            ("THERMOCLINE__HOT__REDIS__PASSWORD", "s3cr3t-redis"),
        ],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("s3cr3t"), "{all}");
    assert!(
        all.contains("<redacted>") && all.contains("flush_interval"),
        "{all}"
    );

    let out = thermocline(
        &["check-config"],
        &[("THERMOCLINE__HOT__FLUSH_INTERVAL", "0ms")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("hot.flush_interval"), "{err}");
}
