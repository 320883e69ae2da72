//! Issue 3 end to end: the cold path against the real ClickHouse and S3
//! (THERMOCLINE_TEST_CLICKHOUSE_URL, THERMOCLINE_TEST_S3_ENDPOINT /
//! _ACCESS_KEY / _SECRET_KEY; defaults are the local servers `scripts/services`
//! starts). Each test has its own ClickHouse database, S3 bucket, spool dir,
//! Redis key prefix and broker.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use devices::{ledger::Ledger, testkit::Mosquitto};
use sync::verify_cold::{verify_cold, ColdReport};

use crate::support::{free_port, redis_url, sim_config, unique, TestGateway};

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// One test's private corner of the cold stores, as gateway config env vars.
pub struct ColdStores {
    database: String,
    clickhouse_url: String,
    _spool: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl ColdStores {
    /// On the shared test servers.
    pub fn new(name: &str) -> Self {
        Self::on(
            name,
            &env_or("THERMOCLINE_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123"),
            &env_or("THERMOCLINE_TEST_S3_ENDPOINT", "http://127.0.0.1:9000"),
        )
    }

    /// On the given servers (a test's private ones).
    pub fn on(name: &str, clickhouse_url: &str, s3_endpoint: &str) -> Self {
        let pid = std::process::id();
        let tag = unique(name).replace('_', "-");
        let database = format!(
            "thermocline_it_{name}_{pid}_{}",
            tag.rsplit('-').next().unwrap()
        );
        let bucket = format!("tc-it-{tag}");
        let spool = tempfile::tempdir().unwrap();
        let env = vec![
            ("THERMOCLINE__COLD__ENABLED", "true".to_string()),
            (
                "THERMOCLINE__COLD__SPOOL__DIR",
                spool.path().join("spool").display().to_string(),
            ),
            ("THERMOCLINE__COLD__BATCH__MAX_AGE", "1s".into()),
            ("THERMOCLINE__COLD__BATCH__AGE_JITTER", "100ms".into()),
            ("THERMOCLINE__COLD__RETRY_MAX_DELAY", "2s".into()),
            ("THERMOCLINE__COLD__S3__ENDPOINT", s3_endpoint.to_string()),
            (
                "THERMOCLINE__COLD__S3__ACCESS_KEY_ID",
                env_or("THERMOCLINE_TEST_S3_ACCESS_KEY", "thermocline"),
            ),
            (
                "THERMOCLINE__COLD__S3__SECRET_ACCESS_KEY",
                env_or("THERMOCLINE_TEST_S3_SECRET_KEY", "thermocline-secret"),
            ),
            ("THERMOCLINE__COLD__S3__BUCKET", bucket),
            (
                "THERMOCLINE__COLD__CLICKHOUSE__URL",
                clickhouse_url.to_string(),
            ),
            ("THERMOCLINE__COLD__CLICKHOUSE__DATABASE", database.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            database,
            clickhouse_url: clickhouse_url.to_string(),
            _spool: spool,
            env,
        }
    }

    /// This test's ClickHouse database.
    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    pub fn config(&self) -> cold::pipeline::ColdConfig {
        gateway::config::load_with_env(None, self.env.clone())
            .unwrap()
            .validate()
            .unwrap()
            .cold
    }

    /// `verify --cold` of the ledger, or the error (e.g. the database is not
    /// created yet: the pipeline creates it with its first batch).
    pub async fn try_verify(&self, ledger: &Ledger) -> sync::Result<ColdReport> {
        let cfg = self.config();
        let registry = prometheus::Registry::new();
        let ch = cold::clickhouse::ClickHouseSink::connect(
            cfg.clickhouse,
            cold::clickhouse::ClickHouseMetrics::new(&registry).unwrap(),
        )
        .unwrap();
        let s3 = cold::s3::S3Sink::connect(cfg.s3, cold::s3::S3Metrics::new(&registry).unwrap())
            .await
            .unwrap();
        verify_cold(&ch, &s3, ledger).await
    }

    /// Verifies until exact (shipping takes a batch age or two) or `within`.
    /// Verifies once; the stores must answer.
    pub async fn verify(&self, ledger: &Ledger) -> ColdReport {
        self.try_verify(ledger).await.unwrap()
    }

    pub async fn wait_exact(&self, ledger: &Ledger, within: Duration) -> ColdReport {
        let deadline = Instant::now() + within;
        loop {
            let report = self.try_verify(ledger).await;
            match &report {
                Ok(r) if r.ok() => return report.unwrap(),
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "cold stores not exact after {within:?}:\n{}",
                match report {
                    Ok(r) => r.render(),
                    Err(e) => e.to_string(),
                }
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Drops the test's database (the bucket's objects stay with the S3 server's data).
    pub async fn clean(&self) {
        let _ = reqwest::Client::new()
            .post(&self.clickhouse_url)
            .body(format!("DROP DATABASE IF EXISTS {}", self.database))
            .send()
            .await;
    }
}

/// Issue 3, item 1: 500 devices × 100 messages through Mosquitto; then
/// `verify --cold` (library and CLI) is exact in ClickHouse and in S3, with no
/// reading in two S3 objects, and `verify --hot` is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_lands_exactly_in_clickhouse_and_s3() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("fleet");
    let gw = TestGateway::start("coldfleet", &broker, &redis_url(), &stores.env_refs()).await;
    let (code, ready) = gw.ready().await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["cold"]["spool"], true, "{ready}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let ledger = devices::sim::run(sim_config(&broker, &unique("cf"), 500, 100, 0))
        .await
        .unwrap();
    let published = started.elapsed();
    assert_eq!(ledger.total_readings(), 150_000);
    gw.wait_hot_done(150_000, Duration::from_secs(120)).await;
    let report = stores.wait_exact(&ledger, Duration::from_secs(120)).await;
    eprintln!(
        "50,000 messages published (and acked after fsync) in {published:?}; cold exact after {:?}\n{}",
        started.elapsed(),
        report.render()
    );
    assert_eq!(report.clickhouse.found_readings, 150_000);
    assert_eq!(report.s3.found_readings, 150_000);
    assert_eq!(report.s3_duplicates, 0);

    let hot = sync::verify::verify_hot(&gw.reader(), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(hot.ok(), "{}", hot.render());

    // The CLI says the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.json");
    ledger.write(&path).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .args(["verify", "--cold", "--ledger", path.to_str().unwrap()])
        .envs(stores.env_refs())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("OK: ClickHouse and S3 match the ledger exactly"),
        "{text}"
    );

    // Shipped metrics and a drained spool.
    assert!(gw.metric("thermocline_cold_batches_shipped_total", None) > 0.0);
    assert_eq!(gw.metric("thermocline_cold_batches_pending", None), 0.0);
    gw.stop_and_clean().await;
    stores.clean().await;
}

/// `thermocline run` as a child process, killable with SIGKILL.
pub struct GatewayChild {
    pub child: tokio::process::Child,
    pub http: String,
}

impl GatewayChild {
    pub async fn start(env: &[(String, String)], log: &std::path::Path) -> Self {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
            .arg("run")
            .envs(env.iter().cloned())
            .env("THERMOCLINE__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,rumqttc=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let gw = Self {
            child,
            http: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", gw.http)).await {
                if r.status().as_u16() == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "gateway child not ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Issue 3, item 2: the gateway is killed with SIGKILL mid-run while the fleet
/// keeps publishing into the broker's queue for its persistent session; it is
/// restarted with the same spool and client id and finishes. ClickHouse and S3
/// then match the ledger exactly: nothing lost, nothing twice after FINAL, no
/// reading in two S3 objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_and_duplicates_nothing() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("crash");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let prefix = unique("crash");
    let mut env = stores.env.clone();
    env.extend(
        [
            ("THERMOCLINE__MQTT__PORT", broker.port.to_string()),
            ("THERMOCLINE__MQTT__CLIENT_ID", format!("gw-{prefix}")),
            ("THERMOCLINE__GATEWAY__ID", "gw-crash".to_string()),
            ("THERMOCLINE__HOT__KEY_PREFIX", prefix.clone()),
            ("THERMOCLINE__HOT__REDIS__URL", redis_url()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let mut gw = GatewayChild::start(&env, &log).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 300 devices × 60 messages at 3,000 msg/s: about 6 s of traffic.
    let sim = sim_config(&broker, &unique("cr"), 300, 60, 3_000);
    let fleet = tokio::spawn(devices::sim::run(sim.clone()));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let before = gw.metrics().await;
    let received = sample(&before, "thermocline_ingest_messages_received_total");
    assert!(received > 0.0, "nothing received before the kill");
    gw.kill9().await;
    eprintln!(
        "killed with {received} messages received, {} batches shipped",
        sample(&before, "thermocline_cold_batches_shipped_total")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    let gw = GatewayChild::start(&env, &log).await;
    let ledger = fleet.await.unwrap().unwrap();
    assert_eq!(ledger.total_readings(), 54_000);

    // A device (or broker) resends its very first message after the restart:
    // its first copy was shipped and released before the kill, so only the
    // released history replayed into the redelivery filter can recognise it.
    let device = devices::sim::device_id(&sim.prefix, 0);
    let first_ts = ledger.entries[&device]["temp"].first_ts_ms;
    let (body, _) = devices::sim::payload(sim.seed, 0, 0, first_ts);
    // Everything else is in: the only drops from now on are the resend's.
    stores.wait_exact(&ledger, Duration::from_secs(120)).await;
    let dropped = sample(
        &gw.metrics().await,
        "thermocline_cold_redeliveries_dropped_total",
    );
    let mut o = rumqttc::MqttOptions::new(format!("resend-{prefix}"), "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut ev) = rumqttc::AsyncClient::new(o, 10);
    client
        .publish(sim.topic(0), rumqttc::QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), ev.poll()).await
        {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(
        &gw.metrics().await,
        "thermocline_cold_redeliveries_dropped_total",
    ) < dropped + 3.0
    {
        assert!(
            Instant::now() < deadline,
            "the resent message was not recognised"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let report = stores.wait_exact(&ledger, Duration::from_secs(120)).await;
    let after = gw.metrics().await;
    eprintln!(
        "after restart: received {}, redeliveries dropped {}, torn tails {}\n{}",
        sample(&after, "thermocline_ingest_messages_received_total"),
        sample(&after, "thermocline_cold_redeliveries_dropped_total"),
        sample(&after, "thermocline_cold_spool_torn_tail_total"),
        report.render()
    );
    assert_eq!(report.s3_duplicates, 0, "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 54_000);
    assert_eq!(report.s3.found_readings, 54_000);
    drop(gw);
    stores.clean().await;
}

/// A broker that keeps no in-flight window (`max_inflight_messages 0`, as a
/// misconfigured broker does, and Mosquitto 2.0.11 was seen to under a burst)
/// and a spool that commits only every second: more QoS 1 publishes reach the
/// gateway than it may hold unacked (`mqtt.max_unacked`, 2,000 here). Ingest
/// must stop taking at the limit, keep writing acks as records become
/// durable, and finish exact. (When acks went through a bounded queue and
/// rumqttc's request channel, a full queue stopped the very loop that writes
/// the acks, and ingestion stalled for good: the benchmark's cold runs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_an_inflight_window_cannot_stall_the_acks() {
    let broker = Mosquitto::start_with("max_inflight_messages 0\n")
        .await
        .unwrap();
    let stores = ColdStores::new("window");
    let mut env = stores.env_refs();
    env.extend([
        ("THERMOCLINE__COLD__SPOOL__FSYNC_INTERVAL", "1s"),
        ("THERMOCLINE__COLD__SPOOL__FLUSH_SIZE", "256MiB"),
        ("THERMOCLINE__MQTT__MAX_UNACKED", "2000"),
    ]);
    let gw = TestGateway::start("coldwindow", &broker, &redis_url(), &env).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let fleet = tokio::spawn(devices::sim::run(sim_config(
        &broker,
        &unique("cw"),
        200,
        250,
        0,
    )));
    let mut peak = 0.0f64;
    while !fleet.is_finished() {
        peak = peak.max(gw.metric("thermocline_ingest_acks_pending", None));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ledger = fleet.await.unwrap().unwrap();
    assert_eq!(ledger.total_readings(), 150_000);
    gw.wait_hot_done(150_000, Duration::from_secs(180)).await;
    let report = stores.wait_exact(&ledger, Duration::from_secs(180)).await;
    eprintln!("peak unacked publishes: {peak}\n{}", report.render());
    // The limit was reached (the broker kept no window)...
    assert_eq!(peak, 2_000.0, "peak unacked publishes");
    // ...ingest never lost its connection, and acked everything in the end.
    assert_eq!(
        gw.metric("thermocline_ingest_mqtt_disconnects_total", None),
        0.0
    );
    assert_eq!(gw.metric("thermocline_ingest_acks_pending", None), 0.0);
    assert_eq!(report.clickhouse.found_readings, 150_000);
    assert_eq!(report.s3.found_readings, 150_000);
    gw.stop_and_clean().await;
    stores.clean().await;
}
