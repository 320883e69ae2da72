//! The hot path end to end: MQTT → decode → Redis windows, the CLI's
//! simulate/verify, hostile input, a Redis outage, shutdown, dedup and
//! persistent sessions. The read API and check-config are in `operator.rs`.

use std::{process::Output, time::Duration};

use crate::support::{redis_url, sim_config, unique, RedisServer, TestGateway};
use devices::{ledger::Ledger, testkit::Mosquitto};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

pub(crate) fn thermocline(args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Text of `/metrics`, and one sample's value from it.
async fn scrape(gw: &TestGateway) -> String {
    reqwest::get(format!("{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
        .parse()
        .unwrap()
}

/// Issue 2, item 2: 100 devices × 100 messages through Mosquitto with the CLI's
/// `simulate`, then the CLI's `verify --hot` passes exactly; and it fails when
/// Redis disagrees with the ledger by a single reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_fleet_verifies_exactly() {
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start("e2e", &broker, &redis_url(), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.json");
    let port = broker.port.to_string();
    let sim_prefix = unique("fleet");
    let out = thermocline(
        &[
            "simulate",
            "--port",
            &port,
            "--devices",
            "100",
            "--messages",
            "100",
            "--seed",
            "42",
            "--prefix",
            &sim_prefix,
            "--ledger",
            ledger_path.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ledger = Ledger::read(&ledger_path).unwrap();
    assert_eq!(ledger.total_readings(), 30_000);
    gw.wait_hot_done(30_000, Duration::from_secs(60)).await;
    assert_eq!(
        gw.metric("thermocline_ingest_messages_received_total", None),
        10_000.0
    );
    assert_eq!(
        gw.metric("thermocline_hot_readings_failed_total", None),
        0.0
    );

    let env = [
        ("THERMOCLINE__HOT__KEY_PREFIX", gw.prefix.as_str()),
        ("THERMOCLINE__HOT__REDIS__URL", gw.redis_url.as_str()),
    ];
    let out = thermocline(
        &["verify", "--hot", "--ledger", ledger_path.to_str().unwrap()],
        &env,
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify failed:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("OK: hot windows match the ledger exactly"),
        "{report}"
    );
    // Every metric and resolution row reads 100 devices, 10,000 expected, 10,000 found.
    let rows: Vec<Vec<&str>> = report
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|c: &Vec<&str>| c.len() == 6 && c[0] != "metric")
        .collect();
    assert_eq!(rows.len(), 12, "3 metrics x 4 resolutions:\n{report}");
    assert!(
        rows.iter()
            .all(|c| c[2..] == ["100", "10000", "10000", "0"]),
        "{report}"
    );

    // One extra reading in one bucket must make verify fail, naming it.
    let device = ledger.entries.keys().next().unwrap().clone();
    let reader = gw.reader();
    let res = &reader.resolutions()[1];
    let metric = devices::MetricName::parse("temp").unwrap();
    let dev = devices::DeviceId::parse(&device).unwrap();
    let first = ledger.entries[&device]["temp"].first_ts_ms;
    let key = hot::keys::Keys::new(&gw.prefix).bucket(&dev, &res.label, res.bucket_start(first));
    let mut conn = hot::connect::connect(&gw.hot_config().redis).unwrap();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(&key)
        .arg(&hot::keys::Keys::bucket_fields(&metric)[0])
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let out = thermocline(
        &["verify", "--hot", "--ledger", ledger_path.to_str().unwrap()],
        &env,
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verify must fail on a tampered bucket:\n{report}"
    );
    assert!(
        report.contains(&format!("MISMATCH {device} temp {} count", res.label)),
        "{report}"
    );
    gw.stop_and_clean().await;
}

async fn publisher(broker: &Mosquitto, id: &str) -> AsyncClient {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut ev) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    client
}

/// Issue 2, item 3: hostile input in the same run as valid traffic. Every bad
/// message is rejected with its reason counted in /metrics, the gateway keeps
/// running, and the valid devices' ledger is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_and_counted() {
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start("hostile", &broker, &redis_url(), &[]).await;
    let now = hot::service::now_ms();
    let good = |ts: i64| format!(r#"{{"ts":{ts},"seq":1,"metrics":{{"t":1.5}}}}"#);
    let long_id = "x".repeat(200);
    let hostile: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "devices/ok-1/telemetry".into(),
            b"{\"metrics\":{\"t\":".to_vec(),
            "malformed",
        ),
        (
            "devices/ok-1/telemetry".into(),
            br#"{"metrics":{"t":NaN}}"#.to_vec(),
            "malformed",
        ),
        (
            "devices/ok-1/telemetry".into(),
            vec![b' '; 1 << 20],
            "too_large",
        ),
        (
            "devices/ok-1/telemetry".into(),
            br#"{"metrics":{"t":1e999}}"#.to_vec(),
            "non_finite",
        ),
        (
            "devices/ok-1/telemetry".into(),
            br#"{"metrics":{"t":"hot"}}"#.to_vec(),
            "non_numeric",
        ),
        (
            "devices/ok-1/telemetry".into(),
            good(now + 3_600_000).into_bytes(),
            "future_timestamp",
        ),
        (
            "devices/ok-1/telemetry".into(),
            br#"{"metrics":{"bad metric":1}}"#.to_vec(),
            "invalid_metric",
        ),
        (
            "devices/a:b/telemetry".into(),
            good(now).into_bytes(),
            "invalid_device_id",
        ),
        (
            "devices/*/telemetry".into(),
            good(now).into_bytes(),
            "invalid_device_id",
        ),
        (
            "devices/../x/telemetry".into(),
            good(now).into_bytes(),
            "invalid_topic",
        ),
        (
            format!("devices/{long_id}/telemetry"),
            good(now).into_bytes(),
            "invalid_device_id",
        ),
        (
            "devices/温度/telemetry".into(),
            good(now).into_bytes(),
            "invalid_device_id",
        ),
        (
            "devices//telemetry".into(),
            good(now).into_bytes(),
            "invalid_device_id",
        ),
        (
            "devices/ok-1/other".into(),
            good(now).into_bytes(),
            "invalid_topic",
        ),
    ];
    let prefix = unique("valid");
    let fleet = tokio::spawn(devices::sim::run(sim_config(
        &broker, &prefix, 20, 50, 2000,
    )));
    let client = publisher(&broker, &unique("hostile-pub")).await;
    for (topic, payload, _) in &hostile {
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = fleet.await.unwrap().unwrap();
    gw.wait_hot_done(ledger.total_readings(), Duration::from_secs(30))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.metric("thermocline_ingest_messages_received_total", None)
        < (1000 + hostile.len()) as f64
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not every hostile message arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = scrape(&gw).await;
    for reason in devices::RejectReason::ALL {
        let expected = hostile.iter().filter(|h| h.2 == reason.as_str()).count() as f64;
        let got = sample(
            &text,
            &format!(
                "thermocline_ingest_messages_rejected_total{{reason=\"{}\"}}",
                reason.as_str()
            ),
        );
        assert_eq!(got, expected, "rejections for {reason}");
    }
    assert_eq!(gw.ready().await.0, 200, "gateway still running and ready");
    let report = sync::verify::verify_hot(&gw.reader(), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(report.ok(), "{}", report.render());
    // Nothing of the rejected messages reached Redis: only the fleet's devices are known.
    let active = gw.reader().active_devices(0, 1000).await.unwrap();
    assert_eq!(active.len(), 20, "{active:?}");
    assert!(active.iter().all(|(d, _)| d.starts_with(&prefix)));
    gw.stop_and_clean().await;
}

/// Issue 2, item 4: Redis stopped for 10 s mid-run and started again. The
/// gateway keeps running, is not ready meanwhile, recovers, and counts what it
/// could not write; every reading is either written or counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_survived_and_counted() {
    let broker = Mosquitto::start().await.unwrap();
    let mut redis = RedisServer::start().await;
    let gw = TestGateway::start("outage", &broker, &redis.url(), &[]).await;
    let prefix = unique("outage");
    // 50 devices × 300 messages at 750 msg/s: about 20 s of traffic.
    let fleet = tokio::spawn(devices::sim::run(sim_config(
        &broker, &prefix, 50, 300, 750,
    )));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let written_before = gw.metric("thermocline_hot_readings_written_total", None);
    assert!(written_before > 0.0, "traffic flows before the outage");

    redis.stop().await;
    let outage = std::time::Instant::now();
    let deadline = outage + Duration::from_secs(5);
    loop {
        let (code, body) = gw.ready().await;
        if code == 503 {
            assert_eq!(body["redis"], false, "{body}");
            assert_eq!(body["mqtt"], true, "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still ready with Redis down: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    assert_eq!(gw.ready().await.0, 503);
    redis.restart().await;
    gw.wait_ready(Duration::from_secs(10)).await;

    let ledger = fleet.await.unwrap().unwrap();
    let total = ledger.total_readings();
    gw.wait_hot_done(total, Duration::from_secs(30)).await;
    let written = gw.metric("thermocline_hot_readings_written_total", None);
    let failed = gw.metric("thermocline_hot_readings_failed_total", None);
    assert!(failed > 0.0, "the outage lost writes and must count them");
    assert!(
        written > written_before,
        "writes resume after Redis returns"
    );
    assert_eq!(
        written + failed,
        total as f64,
        "every reading is written or counted as failed"
    );
    assert!(gw.metric("thermocline_hot_redis_errors_total", None) > 0.0);
    assert_eq!(gw.metric("thermocline_hot_redis_up", None), 1.0);
    // After recovery the newest readings are in Redis again.
    let dev = devices::DeviceId::parse(ledger.entries.keys().next().unwrap()).unwrap();
    let latest = gw
        .reader()
        .latest(&dev)
        .await
        .unwrap()
        .expect("latest view rewritten after recovery");
    assert_eq!(
        latest.metrics["temp"].ts_ms,
        ledger.entries[dev.as_str()]["temp"].last_ts_ms
    );
    gw.stop_and_clean().await;
}

/// Shutdown flushes what the hot path holds: with a 30 s flush interval nothing
/// is written until the gateway is stopped, and then everything is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_pending_windows() {
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start(
        "shutdown",
        &broker,
        &redis_url(),
        &[("THERMOCLINE__HOT__FLUSH_INTERVAL", "30s")],
    )
    .await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("shut"), 10, 10, 0))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.metric("thermocline_ingest_messages_received_total", None) < 100.0
        || gw.metric("thermocline_hot_channel_depth", None) > 0.0
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.metric("thermocline_hot_readings_written_total", None),
        0.0,
        "nothing flushed before the interval"
    );
    let registry = gw.registry().clone();
    let reader = gw.reader();
    let started = std::time::Instant::now();
    let TestGateway {
        gw: inner,
        prefix,
        redis_url,
        http,
    } = gw;
    inner.unwrap().stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown within its deadline"
    );
    assert_eq!(
        crate::support::metric(&registry, "thermocline_hot_readings_written_total", None),
        300.0
    );
    let report = sync::verify::verify_hot(&reader, &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(report.ok(), "{}", report.render());
    assert!(
        reqwest::get(format!("{http}/healthz")).await.is_err(),
        "HTTP stopped too"
    );
    TestGateway {
        gw: None,
        http,
        prefix,
        redis_url,
    }
    .stop_and_clean()
    .await;
}

/// A redelivered message (same device and seq, e.g. after a reconnect) is not
/// counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_seq_is_not_counted_twice() {
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start("dedup", &broker, &redis_url(), &[]).await;
    let client = publisher(&broker, &unique("dup-pub")).await;
    let dev = unique("dup");
    let now = hot::service::now_ms();
    for (seq, v) in [(1, 10.0), (2, 20.0), (1, 10.0), (2, 20.0), (3, 30.0)] {
        let body = format!(
            r#"{{"ts":{},"seq":{seq},"metrics":{{"t":{v}}}}}"#,
            now + seq
        );
        client
            .publish(
                format!("devices/{dev}/telemetry"),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await
            .unwrap();
    }
    gw.wait_hot_done(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gw.metric(
            "thermocline_hot_readings_skipped_total",
            Some(("reason", "duplicate"))
        ),
        2.0
    );
    let reader = gw.reader();
    let d = devices::DeviceId::parse(&dev).unwrap();
    let b = reader
        .buckets(
            &d,
            &devices::MetricName::parse("t").unwrap(),
            &reader.resolutions()[3],
            now,
            now + 10,
        )
        .await
        .unwrap();
    assert_eq!((b[0].agg.count, b[0].agg.sum), (3, 60.0));
    gw.stop_and_clean().await;
}

/// A persistent session: messages published while the gateway was away are
/// queued by the broker and ingested when it connects with the same client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_what_was_queued_while_away() {
    let broker = Mosquitto::start().await.unwrap();
    let client_id = format!("gw-{}", unique("persist"));
    // Register the persistent session and its subscription, then leave.
    {
        let mut o = MqttOptions::new(&client_id, "127.0.0.1", broker.port);
        o.set_clean_session(false);
        let (c, mut ev) = AsyncClient::new(o, 10);
        c.subscribe("devices/#", QoS::AtLeastOnce).await.unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.unwrap() {
                break;
            }
        }
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while ev.poll().await.is_ok() {}
        })
        .await;
    }
    let ledger = devices::sim::run(sim_config(&broker, &unique("away"), 10, 50, 0))
        .await
        .unwrap();
    let gw = TestGateway::start(
        "persist",
        &broker,
        &redis_url(),
        &[("THERMOCLINE__MQTT__CLIENT_ID", &client_id)],
    )
    .await;
    gw.wait_hot_done(ledger.total_readings(), Duration::from_secs(20))
        .await;
    let report = sync::verify::verify_hot(&gw.reader(), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(report.ok(), "{}", report.render());
    gw.stop_and_clean().await;
}
