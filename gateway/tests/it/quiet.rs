//! Issue 11, devices that go quiet: `GET /api/v1/devices?silent_for=…` and
//! the `thermocline_fleet_devices_quiet{for}` gauges, on the real Redis fleet
//! index `{prefix}:devices` of a running gateway.

use std::time::{Duration, Instant};

use devices::testkit::Mosquitto;

use crate::support::{redis_url, TestGateway};

const MIN: i64 = 60_000;

async fn get(gw: &TestGateway, query: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(format!("{}/api/v1/devices?{query}", gw.http))
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn ids(body: &serde_json::Value) -> Vec<(String, i64)> {
    body["devices"]
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
}

/// Four devices in the index, last seen 2 h, 20 min and 1 min ago and 40 days
/// ago (past the 30-day retention): `silent_for=10m` lists the 2 h and 20 min
/// ones oldest first with their last-seen times, `silent_for=1h` only the
/// 2 h one, `limit` cuts from the oldest, the 40-day one never shows; the
/// gauges for the default thresholds (10m, 1h) read 2 and 1 and the indexed
/// gauge 3; bad requests answer 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_listed_oldest_first_and_counted_per_threshold() {
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start(
        "quiet",
        &broker,
        &redis_url(),
        &[("THERMOCLINE__FLEET__QUIET_REFRESH_INTERVAL", "200ms")],
    )
    .await;
    let now = hot::service::now_ms();
    let seeded = [
        ("q-2h", now - 120 * MIN),
        ("q-20m", now - 20 * MIN),
        ("q-1m", now - MIN),
        ("q-40d", now - 40 * 24 * 60 * MIN),
    ];
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (d, t) in seeded {
        let _: i64 = redis::cmd("ZADD")
            .arg(format!("{}:devices", gw.prefix))
            .arg(t)
            .arg(d)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    let (code, body) = get(&gw, "silent_for=10m").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["silent_for_ms"], 600_000);
    assert_eq!(
        ids(&body),
        [
            ("q-2h".to_string(), seeded[0].1),
            ("q-20m".to_string(), seeded[1].1)
        ]
    );
    let (_, body) = get(&gw, "silent_for=1h").await;
    assert_eq!(ids(&body), [("q-2h".to_string(), seeded[0].1)]);
    let (_, body) = get(&gw, "silent_for=10m&limit=1").await;
    assert_eq!(ids(&body), [("q-2h".to_string(), seeded[0].1)]);
    let (_, body) = get(&gw, "silent_for=1000d").await;
    assert_eq!(ids(&body), []);

    for bad in [
        "silent_for=soon",
        "silent_for=10m&active_within=5m",
        "silent_for=10m&limit=0",
    ] {
        let (code, body) = get(&gw, bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let q10 = gw.metric("thermocline_fleet_devices_quiet", Some(("for", "10m")));
        let q1h = gw.metric("thermocline_fleet_devices_quiet", Some(("for", "1h")));
        let all = gw.metric("thermocline_fleet_devices_indexed", None);
        if (q10, q1h, all) == (2.0, 1.0, 3.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges: 10m={q10} 1h={q1h} indexed={all}, want 2, 1, 3"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop_and_clean().await;
}
