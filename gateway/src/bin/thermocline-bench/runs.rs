//! One measured run each: (a) the broker's delivery rate to a bare counting
//! subscriber, (b) the gateway's end-to-end rate into Redis (hot path only),
//! (c) the gateway with the cold path on too (spool fsync before the ack, S3,
//! ClickHouse). All publish the same workload with the simulator, as fast as
//! the broker takes it, and time from the start of publishing to the last
//! message delivered (a), the last reading written to Redis (b), or every
//! reading held by Redis, ClickHouse and S3 (c).

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use devices::sim::{self, SimConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;

use crate::{
    gateway::{GatewayProc, GatewaySpec},
    procs::{self, CpuSnapshot, CpuUse},
};

/// How often `/metrics` is polled while waiting for the last reading.
const POLL: Duration = Duration::from_millis(25);
/// A run fails when nothing moves for this long.
const STALL: Duration = Duration::from_secs(30);

/// The published workload: `devices` × `messages_per_device` messages of the
/// simulator's JSON (3 metrics, ~100-120 bytes), QoS 1.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub devices: u32,
    pub messages_per_device: u64,
    /// Publisher MQTT connections (devices are spread over them).
    pub connections: usize,
}

impl Workload {
    pub fn messages(&self) -> u64 {
        u64::from(self.devices) * self.messages_per_device
    }

    pub fn sim(&self, port: u16, prefix: &str, rate_per_s: u32) -> SimConfig {
        SimConfig {
            host: "127.0.0.1".into(),
            port,
            devices: self.devices,
            messages_per_device: self.messages_per_device,
            rate_per_s,
            seed: 7,
            prefix: prefix.into(),
            connections: self.connections,
            inflight: 100,
            ack_timeout: Duration::from_secs(300),
            ..SimConfig::default()
        }
    }
}

/// Everything the runs share.
pub struct Env {
    pub broker_port: u16,
    pub redis_url: String,
    pub thermocline: PathBuf,
    pub tck: f64,
    /// Named processes whose CPU is sampled around each run.
    pub watched: Vec<(&'static str, u32)>,
    /// Unique per harness run; device prefixes and client ids derive from it.
    pub run_id: String,
    /// Gateway config overrides (`--set`), as environment variables.
    pub gateway_env: Vec<(String, String)>,
    /// The cold stores for (c) runs; `None` skips them.
    pub cold: Option<ColdStores>,
}

/// Where the (c) runs ship: each run gets its own ClickHouse database
/// (dropped after the run) and S3 key prefix in one bucket.
#[derive(Debug, Clone)]
pub struct ColdStores {
    /// ClickHouse's HTTP interface as `host:port`.
    pub clickhouse: String,
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_bucket: String,
}

impl ColdStores {
    /// The ClickHouse database of the gateway whose key prefix is `key_prefix`.
    pub fn database(key_prefix: &str) -> String {
        format!("thermocline_{}", key_prefix.replace('-', "_"))
    }

    /// The gateway's cold settings (everything else is the default).
    pub fn env(&self, key_prefix: &str) -> Vec<(String, String)> {
        [
            ("ENABLED", "true".to_string()),
            ("S3__ENDPOINT", self.s3_endpoint.clone()),
            ("S3__ACCESS_KEY_ID", self.s3_access_key.clone()),
            ("S3__SECRET_ACCESS_KEY", self.s3_secret_key.clone()),
            ("S3__BUCKET", self.s3_bucket.clone()),
            ("S3__PREFIX", format!("{key_prefix}/")),
            ("CLICKHOUSE__URL", format!("http://{}", self.clickhouse)),
            ("CLICKHOUSE__DATABASE", Self::database(key_prefix)),
        ]
        .into_iter()
        .map(|(k, v)| (format!("THERMOCLINE__COLD__{k}"), v))
        .collect()
    }
}

/// `hot.flush_interval=20ms` → (`THERMOCLINE__HOT__FLUSH_INTERVAL`, `20ms`).
pub fn override_env(set: &str) -> anyhow::Result<(String, String)> {
    let (key, value) = set
        .split_once('=')
        .with_context(|| format!("--set {set:?}: expected section.key=value"))?;
    anyhow::ensure!(
        key.contains('.') && !key.starts_with('.') && !key.ends_with('.'),
        "--set {set:?}: expected section.key=value"
    );
    Ok((
        format!("THERMOCLINE__{}", key.to_uppercase().replace('.', "__")),
        value.to_string(),
    ))
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub messages: u64,
    /// Publish start → last delivered (a) / last reading in Redis (b).
    pub elapsed: Duration,
    /// Publish start → every publish acknowledged by the broker.
    pub publish_elapsed: Duration,
    /// CPU of the watched processes over the run.
    pub cpu: CpuUse,
    /// (b) only: the gateway's CPU seconds over the run and its peak RSS after it.
    pub gateway_cpu_s: Option<f64>,
    pub gateway_hwm: Option<u64>,
    pub flush_mean_ms: Option<f64>,
    /// (c) only: publish start → every reading in Redis (`elapsed` is then
    /// publish start → every reading in Redis, ClickHouse and S3).
    pub hot_elapsed: Option<Duration>,
    /// (c) only: the largest `thermocline_cold_spool_bytes` polled during the run.
    pub spool_peak: Option<u64>,
    /// The repetition (1-based); set by the caller.
    pub rep: usize,
}

impl RunResult {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// (c): the rate to every reading in Redis (the cold path's cost on the hot path).
    pub fn hot_rate(&self) -> Option<f64> {
        self.hot_elapsed
            .map(|e| self.messages as f64 / e.as_secs_f64().max(1e-9))
    }
}

impl Env {
    /// Publishes the workload as fast as possible and reports its completion
    /// time (publish start to every PubAck).
    async fn publish(&self, w: &Workload, prefix: &str) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        sim::run(w.sim(self.broker_port, prefix, 0))
            .await
            .context("publishing the workload")?;
        Ok(t0.elapsed())
    }

    /// (a): a bare rumqttc subscriber on `devices/#` that only counts.
    pub async fn baseline(&self, w: &Workload, tag: &str) -> anyhow::Result<RunResult> {
        let n = w.messages();
        let sub =
            Counter::subscribe(self.broker_port, &format!("{}-{tag}-sub", self.run_id), n).await?;
        let before = CpuSnapshot::take(&self.watched, self.tck);
        let t0 = Instant::now();
        let publish_elapsed = self.publish(w, &format!("{}-{tag}", self.run_id)).await?;
        let done = sub.wait(STALL).await?;
        let after = CpuSnapshot::take(&self.watched, self.tck);
        Ok(RunResult {
            messages: n,
            elapsed: done - t0,
            publish_elapsed,
            cpu: before.until(&after),
            gateway_cpu_s: None,
            gateway_hwm: None,
            flush_mean_ms: None,
            hot_elapsed: None,
            spool_peak: None,
            rep: 0,
        })
    }

    /// Starts a gateway child (Redis keys under `{run_id}-{tag}`, with the
    /// cold path when `cold`) and checks the whole path with one message.
    pub async fn start_gateway(&self, tag: &str, cold: bool) -> anyhow::Result<GatewayProc> {
        let key_prefix = format!("{}-{tag}", self.run_id);
        let cold_env = match (cold, &self.cold) {
            (false, _) => None,
            (true, Some(stores)) => Some(stores.env(&key_prefix)),
            (true, None) => bail!("a cold run without the cold stores"),
        };
        let mut gw = GatewayProc::start(&GatewaySpec {
            bin: &self.thermocline,
            broker_port: self.broker_port,
            redis_url: &self.redis_url,
            key_prefix: &key_prefix,
            id: format!("{}-{tag}", self.run_id),
            env: &self.gateway_env,
            cold: cold_env.as_deref(),
        })
        .await?;
        // The subscription is made after ConnAck: wait until a message really
        // goes through to Redis before measuring.
        let warm = Workload {
            devices: 1,
            messages_per_device: 1,
            connections: 1,
        };
        self.publish(&warm, &format!("{}-{tag}-warm", self.run_id))
            .await?;
        let warm = if gw.cold {
            // …and to both cold stores (a batch age later), so the schema,
            // the bucket and the first batch are not on the clock.
            gw.wait_cold(3, 3, POLL, STALL).await.map(|_| ())
        } else {
            gw.wait_written(3, POLL, STALL).await.map(|_| ())
        };
        if let Err(e) = warm {
            let _ = self.stop_gateway(gw, true).await;
            return Err(e.context("warm-up message did not go through"));
        }
        Ok(gw)
    }

    /// (b): the gateway (a fresh child per run), publish → all readings written.
    pub async fn gateway(&self, w: &Workload, tag: &str) -> anyhow::Result<RunResult> {
        let n = w.messages();
        let mut gw = self.start_gateway(tag, false).await?;
        let result = async {
            let start = gw.counters().await?;
            let mut watched = self.watched.clone();
            watched.push(("gateway", gw.pid));
            let before = CpuSnapshot::take(&watched, self.tck);
            let t0 = Instant::now();
            let publish_elapsed = self.publish(w, &format!("{}-{tag}", self.run_id)).await?;
            let (done, end) = gw.wait_written(start.written + 3 * n, POLL, STALL).await?;
            let after = CpuSnapshot::take(&watched, self.tck);
            if end.rejected > start.rejected {
                bail!(
                    "the gateway rejected {} messages",
                    end.rejected - start.rejected
                );
            }
            let flushes = end.flushes - start.flushes;
            Ok(RunResult {
                messages: n,
                elapsed: done - t0,
                publish_elapsed,
                cpu: before.until(&after),
                gateway_cpu_s: before.seconds(&after, "gateway"),
                gateway_hwm: procs::status_bytes(gw.pid, "VmHWM"),
                flush_mean_ms: (flushes > 0)
                    .then(|| (end.flush_seconds - start.flush_seconds) / flushes as f64 * 1e3),
                hot_elapsed: None,
                spool_peak: None,
                rep: 0,
            })
        }
        .await;
        self.stop_gateway(gw, result.is_err()).await?;
        result
    }

    /// (c): the gateway with the cold path on (a fresh child, database and
    /// spool per run): publish → every reading in Redis, ClickHouse and S3.
    pub async fn cold(&self, w: &Workload, tag: &str) -> anyhow::Result<RunResult> {
        let n = w.messages();
        let mut gw = self.start_gateway(tag, true).await?;
        let result = async {
            let start = gw.counters().await?;
            let mut watched = self.watched.clone();
            watched.push(("gateway", gw.pid));
            let before = CpuSnapshot::take(&watched, self.tck);
            let t0 = Instant::now();
            let publish_elapsed = self.publish(w, &format!("{}-{tag}", self.run_id)).await?;
            let done = gw
                .wait_cold(start.written + 3 * n, start.ch_rows + 3 * n, POLL, STALL)
                .await?;
            let after = CpuSnapshot::take(&watched, self.tck);
            let end = done.end;
            if end.rejected > start.rejected {
                bail!(
                    "the gateway rejected {} messages",
                    end.rejected - start.rejected
                );
            }
            let flushes = end.flushes - start.flushes;
            Ok(RunResult {
                messages: n,
                elapsed: done.cold_at - t0,
                publish_elapsed,
                cpu: before.until(&after),
                gateway_cpu_s: before.seconds(&after, "gateway"),
                gateway_hwm: procs::status_bytes(gw.pid, "VmHWM"),
                flush_mean_ms: (flushes > 0)
                    .then(|| (end.flush_seconds - start.flush_seconds) / flushes as f64 * 1e3),
                hot_elapsed: Some(done.hot_at - t0),
                spool_peak: Some(done.spool_peak),
                rep: 0,
            })
        }
        .await;
        self.stop_gateway(gw, result.is_err()).await?;
        result
    }

    /// Stops the gateway and deletes its Redis keys (so Redis does not grow
    /// from run to run, and the shared instance is left as it was), and its
    /// ClickHouse database when it had the cold path on. Its S3 objects stay
    /// (under its own prefix) with the S3 server's data.
    pub async fn stop_gateway(&self, gw: GatewayProc, keep_log: bool) -> anyhow::Result<()> {
        let prefix = gw.key_prefix.clone();
        let cold = gw.cold;
        gw.stop(keep_log).await?;
        if let (true, Some(stores)) = (cold, &self.cold) {
            let db = ColdStores::database(&prefix);
            crate::gateway::clickhouse(
                &stores.clickhouse,
                &format!("DROP DATABASE IF EXISTS {db}"),
            )
            .await
            .with_context(|| format!("dropping {db}"))?;
        }
        delete_prefix(&self.redis_url, &prefix).await
    }
}

/// Deletes every key `{prefix}:*` (SCAN + UNLINK, never KEYS or FLUSHDB: the
/// Redis instance is shared).
pub async fn delete_prefix(redis_url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut conn = redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?;
    let pattern = format!("{prefix}:*");
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .exec_async(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// A bare QoS 1 subscriber that counts publishes and notes when the `target`th arrives.
pub struct Counter {
    done: oneshot::Receiver<Instant>,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counter {
    /// Connects (clean session), subscribes to `devices/#` at QoS 1 and
    /// returns once the SubAck is in.
    pub async fn subscribe(port: u16, client_id: &str, target: u64) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(opts, 16);
        client.subscribe("devices/#", QoS::AtLeastOnce).await?;
        let count = Arc::new(AtomicU64::new(0));
        let (sub_tx, sub_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        let c = count.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            let mut sub_tx = Some(sub_tx);
            let mut done_tx = Some(done_tx);
            let mut n = 0u64;
            while let Ok(ev) = el.poll().await {
                match ev {
                    Event::Incoming(Packet::Publish(_)) => {
                        n += 1;
                        if n == target {
                            if let Some(tx) = done_tx.take() {
                                let _ = tx.send(Instant::now());
                            }
                        }
                        c.store(n, Ordering::Relaxed);
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(tx) = sub_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), sub_rx)
            .await
            .context("no SubAck from the broker")?
            .context("subscriber connection failed")?;
        Ok(Self { done, count, task })
    }

    /// Waits for the `target`th message; fails when none arrives for `stall`.
    pub async fn wait(mut self, stall: Duration) -> anyhow::Result<Instant> {
        let mut last = self.count.load(Ordering::Relaxed);
        loop {
            match tokio::time::timeout(stall, &mut self.done).await {
                Ok(Ok(at)) => return Ok(at),
                Ok(Err(_)) => bail!("subscriber connection ended early"),
                Err(_) => {
                    let now = self.count.load(Ordering::Relaxed);
                    if now == last {
                        bail!("subscriber stalled at {now} messages");
                    }
                    last = now;
                }
            }
        }
    }
}
