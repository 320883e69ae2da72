//! Shared test support: a private Redis, an in-process gateway, metric reads.

use std::{
    net::TcpListener,
    process::Stdio,
    time::{Duration, Instant},
};

use devices::testkit::Mosquitto;
use gateway::app::Gateway;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("THERMOCLINE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A unique name for prefixes, client ids and devices of one test.
pub fn unique(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        hot::service::now_ms() % 1_000_000
    )
}

/// A private `redis-server` child on a free port (for tests that stop Redis).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        s.launch().await;
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/services up installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "private redis-server did not start on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (its data is gone: it keeps nothing on disk).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }
}

/// A gateway running in this process against `broker` and `redis_url`.
pub struct TestGateway {
    pub gw: Option<Gateway>,
    pub http: String,
    pub prefix: String,
    pub redis_url: String,
}

impl TestGateway {
    pub async fn start(
        name: &str,
        broker: &Mosquitto,
        redis_url: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        Self::start_with_config(name, broker, redis_url, None, extra).await
    }

    /// [`Self::start`] with a config file layered over the defaults (as
    /// `thermocline run --config FILE`), the test's env over both.
    pub async fn start_with_config(
        name: &str,
        broker: &Mosquitto,
        redis_url: &str,
        config: Option<&std::path::Path>,
        extra: &[(&str, &str)],
    ) -> Self {
        let prefix = unique(name);
        let mut env: Vec<(String, String)> = vec![
            ("THERMOCLINE__MQTT__PORT".into(), broker.port.to_string()),
            (
                "THERMOCLINE__MQTT__CLIENT_ID".into(),
                format!("gw-{prefix}"),
            ),
            ("THERMOCLINE__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
            ("THERMOCLINE__HOT__KEY_PREFIX".into(), prefix.clone()),
            ("THERMOCLINE__HOT__REDIS__URL".into(), redis_url.into()),
            // Hot-path tests run without the cold path; cold.rs turns it on.
            ("THERMOCLINE__COLD__ENABLED".into(), "false".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg = gateway::config::load_with_env(config, env)
            .unwrap()
            .validate()
            .unwrap();
        let gw = Gateway::start(cfg, CancellationToken::new()).await.unwrap();
        let http = format!("http://{}", gw.http_addr);
        let t = Self {
            gw: Some(gw),
            http,
            prefix,
            redis_url: redis_url.into(),
        };
        t.wait_ready(Duration::from_secs(10)).await;
        t
    }

    pub fn registry(&self) -> &prometheus::Registry {
        &self.gw.as_ref().unwrap().registry
    }

    /// A counter or gauge value; `label` selects one series of a vector.
    pub fn metric(&self, name: &str, label: Option<(&str, &str)>) -> f64 {
        metric(self.registry(), name, label)
    }

    pub async fn ready(&self) -> (u16, serde_json::Value) {
        let r = reqwest::get(format!("{}/readyz", self.http)).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (code, body) = self.ready().await;
            if code == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "gateway not ready: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the hot path has written (or failed) `readings` readings.
    pub async fn wait_hot_done(&self, readings: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let done = self.metric("thermocline_hot_readings_written_total", None)
                + self.metric("thermocline_hot_readings_failed_total", None);
            if done as u64 >= readings {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "hot path handled {done} of {readings} readings (received {} messages)",
                self.metric("thermocline_ingest_messages_received_total", None)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn hot_config(&self) -> hot::HotConfig {
        let mut raw = hot::RawHotConfig::default();
        raw.redis.url = self.redis_url.clone();
        raw.key_prefix = self.prefix.clone();
        raw.validate().unwrap()
    }

    pub fn reader(&self) -> hot::reader::Reader {
        let cfg = self.hot_config();
        hot::reader::Reader::new(
            hot::connect::connect(&cfg.redis).unwrap(),
            hot::keys::Keys::new(&cfg.key_prefix),
            &cfg.resolutions,
        )
    }

    /// Stops the gateway (ordered shutdown) and deletes its Redis keys.
    pub async fn stop_and_clean(mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop().await;
        }
        let cfg = self.hot_config();
        let mut conn = hot::connect::connect(&cfg.redis).unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
    }
}

pub fn metric(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = match label {
                None => true,
                Some((k, v)) => m
                    .get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v),
            };
            if matches {
                return match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    _ => m.get_gauge().get_value(),
                };
            }
        }
    }
    panic!("metric {name} {label:?} not found");
}

pub fn sim_config(
    broker: &Mosquitto,
    prefix: &str,
    devices: u32,
    messages: u64,
    rate: u32,
) -> devices::sim::SimConfig {
    devices::sim::SimConfig {
        host: "127.0.0.1".into(),
        port: broker.port,
        prefix: prefix.into(),
        devices,
        messages_per_device: messages,
        rate_per_s: rate,
        seed: 7,
        ack_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}
