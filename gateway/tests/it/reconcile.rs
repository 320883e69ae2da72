//! Issue 4, the reconciler, end to end against the real servers: Redis under
//! the test's own key prefix (only its keys are ever deleted: the Redis is
//! shared), ClickHouse in its own database, S3 in its own bucket, a private
//! tuned Mosquitto. The cold batch age is 1 s in these tests, so buckets seal
//! after `--seal-delay 2s`.

use std::time::{Duration, Instant};

use devices::{ledger::Ledger, testkit::Mosquitto, DeviceId, Message, MetricName, Reading};
use hot::window::Resolution;

use crate::{
    cold::ColdStores,
    support::{redis_url, sim_config, unique, TestGateway},
};

pub(crate) const SEAL: &str = "2s";

/// The stores of one test and a gateway on them (its own reconciler off
/// unless `extra` turns it on: these tests drive `thermocline reconcile`).
pub(crate) async fn setup(
    name: &str,
    extra: &[(&str, &str)],
) -> (Mosquitto, ColdStores, TestGateway) {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new(name);
    let mut env = stores.env_refs();
    env.push(("THERMOCLINE__SYNC__ENABLED", "false"));
    env.extend_from_slice(extra);
    let gw = TestGateway::start(name, &broker, &redis_url(), &env).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (broker, stores, gw)
}

/// `thermocline reconcile ARGS` against the test's stores: (success, stdout).
pub(crate) fn reconcile_cli(
    stores: &ColdStores,
    gw: &TestGateway,
    args: &[&str],
) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .arg("reconcile")
        .args(args)
        .envs(stores.env_refs())
        .env("THERMOCLINE__HOT__KEY_PREFIX", &gw.prefix)
        .env("THERMOCLINE__HOT__REDIS__URL", &gw.redis_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "$ thermocline reconcile {}\n{text}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A reader of only the finest (10 s) resolution: the one whose buckets seal
/// within seconds of a run's end.
pub(crate) fn reader_10s(gw: &TestGateway) -> hot::reader::Reader {
    let cfg = gw.hot_config();
    hot::reader::Reader::new(
        hot::connect::connect(&cfg.redis).unwrap(),
        hot::keys::Keys::new(&cfg.key_prefix),
        &[Resolution::new(
            Duration::from_secs(10),
            Duration::from_secs(3600),
        )],
    )
}

pub(crate) async fn redis(gw: &TestGateway) -> hot::connect::Conn {
    hot::connect::connect(&gw.hot_config().redis).unwrap()
}

/// Deletes the keys of `pattern` under the test's prefix (never FLUSHALL:
/// the Redis is shared). Returns how many.
pub(crate) async fn delete_keys(gw: &TestGateway, pattern: &str) -> usize {
    crate::fixtures::delete_matching(&format!("{}:{pattern}", gw.prefix)).await
}

/// Sleeps until every 10 s bucket up to `last_ts` is sealed (plus a margin).
pub(crate) async fn wait_sealed(last_ts: i64) {
    let sealed_at = (last_ts.div_euclid(10_000) + 1) * 10_000 + 2_000 + 300;
    let wait = sealed_at - hot::service::now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

pub(crate) async fn verify(
    reader: &hot::reader::Reader,
    ledger: &Ledger,
) -> sync::verify::HotReport {
    sync::verify::verify_hot(reader, ledger, hot::service::now_ms())
        .await
        .unwrap()
}

/// Issue 4, item 1: the hot keys are deleted in the middle of a simulated run
/// (a FLUSHALL of this test's keys). `reconcile --repair` makes `verify --hot`
/// exact over the sealed range (the 10 s buckets; coarser ones are still
/// open). Then, with the gateway stopped, the hot keys are deleted again and
/// `reconcile --seal-delay 0s --repair` rebuilds every resolution: `verify
/// --hot` is exact for the whole run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_run_is_rebuilt_from_clickhouse() {
    let (broker, stores, mut gw) = setup("recflush", &[]).await;
    // 40 devices × 30 messages at 200 msg/s: 6 s of traffic.
    let sim = sim_config(&broker, &unique("rf"), 40, 30, 200);
    let fleet = tokio::spawn(devices::sim::run(sim));
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let deleted = delete_keys(&gw, "*").await;
    assert!(deleted > 0, "nothing in Redis mid-run");
    let ledger = fleet.await.unwrap().unwrap();
    assert_eq!(ledger.total_readings(), 3_600);
    gw.wait_hot_done(3_600, Duration::from_secs(60)).await;
    stores.wait_exact(&ledger, Duration::from_secs(60)).await;

    let r10 = reader_10s(&gw);
    let before = verify(&r10, &ledger).await;
    assert!(!before.ok(), "deleting the keys mid-run lost nothing?");
    wait_sealed(ledger.max_ts_ms().unwrap()).await;

    let from = (ledger.min_ts_ms().unwrap() - 60_000).to_string();
    // Without --repair: reports, changes nothing, exits non-zero.
    let (ok, text) = reconcile_cli(&stores, &gw, &["--from", &from, "--seal-delay", SEAL]);
    assert!(!ok && text.contains("DIFFERENCES FOUND"), "{text}");
    assert!(!verify(&r10, &ledger).await.ok());

    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &["--from", &from, "--seal-delay", SEAL, "--repair"],
    );
    assert!(ok && text.contains("REPAIRED"), "{text}");
    let after = verify(&r10, &ledger).await;
    assert!(after.ok(), "{}", after.render());
    let (ok, text) = reconcile_cli(&stores, &gw, &["--from", &from, "--seal-delay", SEAL]);
    assert!(ok && text.contains("OK: Redis agrees"), "{text}");

    // Rebuild after losing Redis, ingestion stopped: every resolution.
    gw.gw.take().unwrap().stop().await;
    assert!(delete_keys(&gw, "*").await > 0);
    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &["--from", &from, "--seal-delay", "0s", "--repair", "--json"],
    );
    assert!(ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["ok"], true);
    assert!(
        json["report"]["repaired"]["missing_in_redis"]
            .as_u64()
            .unwrap()
            > 0
    );
    let full = verify(&gw.reader(), &ledger).await;
    assert!(full.ok(), "{}", full.render());
    assert_eq!(full.skipped_resolutions.len(), 0);
    // The latest view is rebuilt too (raised from the buckets' last values).
    let dev = DeviceId::parse(ledger.entries.keys().next().unwrap()).unwrap();
    let latest = gw.reader().latest(&dev).await.unwrap().unwrap();
    assert_eq!(
        latest.metrics["temp"].ts_ms,
        ledger.entries[dev.as_str()]["temp"].last_ts_ms
    );

    gw.stop_and_clean().await;
    stores.clean().await;
}

/// Issue 4, item 2: readings written to Redis a second time (a redelivery
/// the dedup horizon missed) are found as `values_differ` and repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_written_twice_are_found_and_repaired() {
    let (broker, stores, gw) = setup("rectwice", &[]).await;
    let sim = sim_config(&broker, &unique("rt"), 10, 10, 0);
    let ledger = devices::sim::run(sim.clone()).await.unwrap();
    gw.wait_hot_done(300, Duration::from_secs(30)).await;
    stores.wait_exact(&ledger, Duration::from_secs(60)).await;
    let r10 = reader_10s(&gw);
    assert!(verify(&r10, &ledger).await.ok());

    // Device 3's first message merged into Redis again, as a gateway whose
    // dedup horizon forgot it would.
    let device = DeviceId::parse(&devices::sim::device_id(&sim.prefix, 3)).unwrap();
    let ts = ledger.entries[device.as_str()]["temp"].first_ts_ms;
    let msg = Message {
        device_id: device.clone(),
        seq: Some(0),
        readings: devices::sim::values(sim.seed, 3, 0)
            .iter()
            .map(|(m, v)| Reading {
                device_id: device.clone(),
                metric: MetricName::parse(m).unwrap(),
                ts_ms: ts,
                value: *v,
                seq: Some(0),
            })
            .collect(),
    };
    let cfg = gw.hot_config();
    let mut agg =
        hot::aggregate::Aggregator::new(cfg.resolutions.clone(), hot::dedup::Dedup::new(64, 16));
    let now = hot::service::now_ms();
    agg.ingest(&msg, now);
    let writer = hot::writer::Writer::new(
        hot::connect::connect(&cfg.redis).unwrap(),
        hot::keys::Keys::new(&cfg.key_prefix),
        &cfg.resolutions,
        16,
    );
    writer.write(&agg.take(), now).await.unwrap();
    let twice = verify(&r10, &ledger).await;
    assert!(!twice.ok());
    assert!(twice
        .mismatches
        .iter()
        .all(|m| m.device_id == device.as_str()));
    wait_sealed(ledger.max_ts_ms().unwrap()).await;

    let from = (ledger.min_ts_ms().unwrap() - 60_000).to_string();
    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &["--from", &from, "--seal-delay", SEAL, "--json"],
    );
    assert!(!ok, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let report = &json["report"];
    // The three metrics' 10 s buckets at least; nothing else differs.
    assert!(
        report["differences"]["values_differ"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert!(
        report["differences"].get("missing_in_redis").is_none(),
        "{report}"
    );
    assert!(
        report["differences"].get("extra_in_redis").is_none(),
        "{report}"
    );
    assert!(report["examples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["device_id"] == device.as_str()
            && d["redis"]["count"].as_u64() == d["clickhouse"]["count"].as_u64().map(|c| c + 1)));

    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &["--from", &from, "--seal-delay", SEAL, "--repair"],
    );
    assert!(ok && text.contains("REPAIRED"), "{text}");
    let fixed = verify(&r10, &ledger).await;
    assert!(fixed.ok(), "{}", fixed.render());

    gw.stop_and_clean().await;
    stores.clean().await;
}

/// Issue 4, item 4: readings 30 minutes old, published after their buckets
/// sealed. The hot path merges them (within retention) and the cold path
/// ships them; one of their Redis buckets is also lost (as if that flush
/// failed). After `reconcile --repair`, hot and cold agree: verify --hot is
/// exact for the late readings and the rest of the run, and a second
/// reconcile finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_for_sealed_buckets_ends_up_in_both_stores() {
    let (broker, stores, gw) = setup("reclate", &[]).await;
    let sim = sim_config(&broker, &unique("rl"), 5, 10, 0);
    let ledger = devices::sim::run(sim.clone()).await.unwrap();
    gw.wait_hot_done(150, Duration::from_secs(30)).await;

    // Late readings: 30 min old, 4 messages per device, plain MQTT client.
    let mut full = ledger.clone();
    let mut late = ledger.clone();
    late.entries.clear();
    let base = hot::service::now_ms() - 30 * 60_000;
    let mut o = rumqttc::MqttOptions::new(unique("late"), "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = rumqttc::AsyncClient::new(o, 100);
    let mut sent = 0;
    for i in 0..5u32 {
        let dev = devices::sim::device_id(&sim.prefix, i);
        for k in 0..4u64 {
            let seq = 1_000 + k;
            let ts = base + i64::from(i) * 1_000 + k as i64 * 7_000;
            let (body, values) = devices::sim::payload(sim.seed, i, seq, ts);
            for (m, v) in values {
                full.record(&dev, m, ts, v);
                late.record(&dev, m, ts, v);
            }
            client
                .publish(sim.topic(i), rumqttc::QoS::AtLeastOnce, false, body)
                .await
                .unwrap();
            sent += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut acked = 0;
    while acked < sent {
        assert!(Instant::now() < deadline, "late publishes not acked");
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), ev.poll()).await
        {
            acked += 1;
        }
    }
    gw.wait_hot_done(150 + 60, Duration::from_secs(30)).await;
    stores.wait_exact(&full, Duration::from_secs(60)).await;

    // The hot path took them (10 s retention is 1 h)...
    let r10 = reader_10s(&gw);
    assert!(verify(&r10, &late).await.ok());
    // ...but one late 10 s bucket of device 2 is lost.
    let dev2 = DeviceId::parse(&devices::sim::device_id(&sim.prefix, 2)).unwrap();
    let lost = hot::keys::Keys::new(&gw.prefix).bucket(
        &dev2,
        "10s",
        (base + 2_000).div_euclid(10_000) * 10_000,
    );
    let n: i64 = redis::cmd("DEL")
        .arg(&lost)
        .query_async(&mut redis(&gw).await)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(!verify(&r10, &late).await.ok());
    wait_sealed(ledger.max_ts_ms().unwrap()).await;

    let (ok, text) = reconcile_cli(
        &stores,
        &gw,
        &["--from", "-40m", "--seal-delay", SEAL, "--repair"],
    );
    assert!(ok && text.contains("REPAIRED"), "{text}");
    assert!(text.contains("missing_in_redis"), "{text}");
    let after = verify(&r10, &late).await;
    assert!(after.ok(), "{}", after.render());
    let all = verify(&r10, &full).await;
    assert!(all.ok(), "{}", all.render());
    let (ok, text) = reconcile_cli(&stores, &gw, &["--from", "-40m", "--seal-delay", SEAL]);
    assert!(ok && text.contains("OK: Redis agrees"), "{text}");

    gw.stop_and_clean().await;
    stores.clean().await;
}

/// Inside `thermocline run`: the reconciler runs on its interval only while
/// this gateway holds the lease, and repairs what it finds (metrics say so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_reconciles_on_its_interval_under_a_lease() {
    let (broker, stores, gw) = setup(
        "reclease",
        &[
            ("THERMOCLINE__SYNC__ENABLED", "true"),
            ("THERMOCLINE__SYNC__INTERVAL", "1s"),
            ("THERMOCLINE__SYNC__SEAL_DELAY", SEAL),
            ("THERMOCLINE__GATEWAY__ID", "gw-lease"),
        ],
    )
    .await;
    // Another gateway holds the lease: this one must not run.
    let lease = format!("{}:reconcile:lease", gw.prefix);
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("gw-other")
        .arg("PX")
        .arg(4_000)
        .query_async(&mut redis(&gw).await)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let not_leader = gw.metric(
        "thermocline_reconcile_runs_total",
        Some(("outcome", "not_leader")),
    );
    assert!(
        not_leader >= 1.0,
        "no tick while another gateway held the lease"
    );
    assert_eq!(
        gw.metric("thermocline_reconcile_runs_total", Some(("outcome", "ok"))),
        0.0,
        "ran without the lease"
    );
    let sim = sim_config(&broker, &unique("rs"), 5, 10, 0);
    let ledger = devices::sim::run(sim).await.unwrap();
    gw.wait_hot_done(150, Duration::from_secs(30)).await;
    stores.wait_exact(&ledger, Duration::from_secs(60)).await;

    // Lose the sealed 10 s buckets; once the other lease expires this
    // gateway takes it and repairs them.
    wait_sealed(ledger.max_ts_ms().unwrap()).await;
    assert!(delete_keys(&gw, "*:w:10s:*").await > 0);
    let r10 = reader_10s(&gw);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if verify(&r10, &ledger).await.ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway did not repair");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let holder: String = redis::cmd("GET")
        .arg(&lease)
        .query_async(&mut redis(&gw).await)
        .await
        .unwrap();
    assert_eq!(holder, "gw-lease");
    assert!(gw.metric("thermocline_reconcile_runs_total", Some(("outcome", "ok"))) >= 1.0);
    assert!(
        gw.metric(
            "thermocline_reconcile_buckets_repaired_total",
            Some(("class", "missing_in_redis"))
        ) >= 15.0
    );
    assert!(gw.metric("thermocline_reconcile_buckets_checked_total", None) >= 15.0);
    assert!(gw.metric("thermocline_reconcile_last_run_timestamp_seconds", None) > 0.0);

    gw.stop_and_clean().await;
    stores.clean().await;
}

/// A clear error for an empty or reversed range, a bad time and an
/// unreachable store; no stores are needed for the first two.
#[test]
fn cli_errors_are_clear() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
            .arg("reconcile")
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = run(&["--from", "-1h", "--to", "-2h"], &[]);
    assert!(e.contains("empty or reversed range"), "{e}");
    let e = run(&["--from", "-1h", "--to", "-1h"], &[]);
    assert!(e.contains("empty or reversed range"), "{e}");
    let e = run(&["--from", "yesterday"], &[]);
    assert!(e.contains("\"yesterday\" is not a time"), "{e}");
    let e = run(
        &["--from", "-1h"],
        &[("THERMOCLINE__HOT__REDIS__URL", "redis://127.0.0.1:1")],
    );
    assert!(e.contains("redis is unreachable"), "{e}");
}
