//! The deterministic simulated fleet.
//!
//! `devices` devices each publish `messages_per_device` messages (seq `0..M`) at
//! QoS 1 in the gateway's JSON format:
//!
//! ```text
//! {"ts":1700000000000,"seq":7,"metrics":{"temp":21.53,"hum":40.2,"pressure":1013.2}}
//! ```
//!
//! Values depend only on `(seed, device index, seq)` ([`values`]), so a test or a
//! benchmark can regenerate any message without running the fleet; `ts` is the
//! wall clock at send. Messages are interleaved round robin (seq 0 of every
//! device, then seq 1, …) so every device is active for the whole run, and device
//! `i` always publishes over connection `i % connections`, so each device's
//! messages reach the broker in order.
//!
//! # Delivery accounting
//!
//! Each connection's event loop runs in its own task and counts PubAcks. A
//! message enters the [`Ledger`] when it is handed to the client; at the end the
//! run waits (up to `ack_timeout`) until every connection has as many PubAcks as
//! publishes. Sessions are clean and a dropped connection ends the run with an
//! error (no reconnect: with a clean session the broker would have forgotten the
//! in-flight messages), so a returned ledger never claims an unacknowledged
//! message.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use serde::Serialize;
use tokio::{sync::oneshot, task::JoinHandle};
use tracing::{debug, info};

use crate::{ledger::Ledger, DeviceId, Error, Result};

/// The placeholder in [`SimConfig::topic_template`] replaced by the device id.
pub const DEVICE_ID_PLACEHOLDER: &str = "{device_id}";
/// The default topic template, matching the gateway's default topic pattern.
pub const DEFAULT_TOPIC_TEMPLATE: &str = "devices/{device_id}/telemetry";
/// The metrics every simulated message carries, in payload order.
pub const METRICS: [&str; 3] = ["temp", "hum", "pressure"];

/// How often the rate limiter wakes up.
const PACING_TICK: Duration = Duration::from_millis(10);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Simulator parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Topic of each message; `{device_id}` is replaced by the device id.
    pub topic_template: String,
    pub devices: u32,
    pub messages_per_device: u64,
    /// Overall messages per second; 0 = as fast as the broker takes them
    /// (bounded by the in-flight windows).
    pub rate_per_s: u32,
    pub seed: u64,
    /// Device ids are `{prefix}-{index:06}`; the result must be a valid [`DeviceId`].
    pub prefix: String,
    /// MQTT connections to spread the devices over (device `i` → connection `i % n`).
    pub connections: usize,
    /// MQTT in-flight window (unacknowledged QoS 1 publishes) per connection.
    pub inflight: u16,
    /// How long to wait for outstanding PubAcks once everything is published.
    pub ack_timeout: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            topic_template: DEFAULT_TOPIC_TEMPLATE.into(),
            devices: 10,
            messages_per_device: 100,
            rate_per_s: 0,
            seed: 0,
            prefix: "sim".into(),
            connections: 1,
            inflight: 100,
            ack_timeout: Duration::from_secs(30),
        }
    }
}

impl SimConfig {
    /// Checks everything that can be checked without a broker.
    pub fn validate(&self) -> Result<()> {
        let invalid = |key: &str, reason: String| Error::Config {
            key: format!("sim.{key}"),
            reason,
        };
        if self.devices == 0 {
            return Err(invalid("devices", "must be at least 1".into()));
        }
        if self.connections == 0 {
            return Err(invalid("connections", "must be at least 1".into()));
        }
        if self.inflight == 0 {
            return Err(invalid("inflight", "must be at least 1".into()));
        }
        if !self.topic_template.contains(DEVICE_ID_PLACEHOLDER) {
            return Err(invalid(
                "topic_template",
                format!(
                    "{:?} does not contain {DEVICE_ID_PLACEHOLDER}",
                    self.topic_template
                ),
            ));
        }
        if self.topic_template.contains(['+', '#']) {
            return Err(invalid(
                "topic_template",
                "a topic to publish to must not contain MQTT wildcards".into(),
            ));
        }
        // Validity depends only on the prefix's characters and the id's length,
        // so the first and the (longest) last id stand for all of them.
        for index in [0, self.devices - 1] {
            DeviceId::parse(&device_id(&self.prefix, index)).map_err(|e| {
                invalid(
                    "prefix",
                    format!("{:?} does not make valid device ids: {e}", self.prefix),
                )
            })?;
        }
        Ok(())
    }

    /// The topic device `index` publishes to.
    pub fn topic(&self, index: u32) -> String {
        self.topic_template
            .replace(DEVICE_ID_PLACEHOLDER, &device_id(&self.prefix, index))
    }
}

/// The id of device `index`: `{prefix}-{index:06}`.
pub fn device_id(prefix: &str, index: u32) -> String {
    format!("{prefix}-{index:06}")
}

/// A fresh prefix such as `sim-k3x9a0qz`, so runs never share device ids.
pub fn random_prefix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect();
    format!("sim-{suffix}")
}

/// Seed of the generator for `(seed, device index, seq)`; `domain` keeps
/// per-device and per-message streams apart.
fn rng_for(seed: u64, device_index: u32, seq: u64, domain: u8) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..12].copy_from_slice(&device_index.to_le_bytes());
    key[12..20].copy_from_slice(&seq.to_le_bytes());
    key[20] = domain;
    ChaCha8Rng::from_seed(key)
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// The metric values of message `seq` of device `device_index`, in [`METRICS`] order.
///
/// Plausible and smooth: each device has its own baseline, a slow daily-like
/// cycle over seq, and per-message noise. Always finite.
pub fn values(seed: u64, device_index: u32, seq: u64) -> [(&'static str, f64); 3] {
    let mut device = rng_for(seed, device_index, 0, 1);
    let base_temp = device.random_range(15.0..28.0);
    let base_hum = device.random_range(30.0..60.0);
    let base_pressure = device.random_range(1000.0..1025.0);
    let phase = device.random_range(0.0..std::f64::consts::TAU);

    let mut msg = rng_for(seed, device_index, seq, 0);
    let cycle = (phase + std::f64::consts::TAU * (seq % 288) as f64 / 288.0).sin();
    let temp = round_to(base_temp + 4.0 * cycle + msg.random_range(-0.5..0.5), 2);
    let hum = round_to(
        (base_hum - 8.0 * cycle + msg.random_range(-1.0..1.0)).clamp(0.0, 100.0),
        1,
    );
    let pressure = round_to(base_pressure + msg.random_range(-0.5..0.5), 1);
    [
        (METRICS[0], temp),
        (METRICS[1], hum),
        (METRICS[2], pressure),
    ]
}

#[derive(Serialize)]
struct Payload {
    ts: i64,
    seq: u64,
    metrics: Metrics,
}

#[derive(Serialize)]
struct Metrics {
    temp: f64,
    hum: f64,
    pressure: f64,
}

/// The JSON payload of message `seq` of device `device_index` sent at `ts_ms`,
/// and the values in it.
pub fn payload(
    seed: u64,
    device_index: u32,
    seq: u64,
    ts_ms: i64,
) -> (String, [(&'static str, f64); 3]) {
    let values = values(seed, device_index, seq);
    let body = Payload {
        ts: ts_ms,
        seq,
        metrics: Metrics {
            temp: values[0].1,
            hum: values[1].1,
            pressure: values[2].1,
        },
    };
    let json = serde_json::to_string(&body).expect("a struct of finite numbers serializes");
    (json, values)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How many messages may have been sent `elapsed` into a run at `rate_per_s`
/// (the first one goes immediately).
fn allowed(elapsed: Duration, rate_per_s: u32) -> u64 {
    let n = elapsed.as_nanos() * u128::from(rate_per_s) / 1_000_000_000 + 1;
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One MQTT connection: the client handle and its event loop task.
struct Connection {
    client: AsyncClient,
    acks: Arc<AtomicU64>,
    published: u64,
    task: JoinHandle<Result<(), ConnectionError>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // On the success path the task has already ended; on an error path this
        // closes the connection instead of leaving it running.
        self.task.abort();
    }
}

impl Connection {
    /// Connects and waits for the ConnAck.
    async fn open(cfg: &SimConfig, k: usize) -> Result<Self> {
        let mut opts = MqttOptions::new(format!("{}-pub-{k}", cfg.prefix), &cfg.host, cfg.port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(cfg.inflight);
        // Room for a few windows of requests, so the producer never waits on
        // the channel while the window has space.
        let cap = (usize::from(cfg.inflight) * 4).max(1024);
        opts.set_request_channel_capacity(cap);
        if let Some(user) = &cfg.username {
            opts.set_credentials(user, cfg.password.clone().unwrap_or_default());
        }
        let (client, eventloop) = AsyncClient::new(opts, cap);
        let acks = Arc::new(AtomicU64::new(0));
        let (connected_tx, connected_rx) = oneshot::channel();
        let task = tokio::spawn(drive(eventloop, acks.clone(), connected_tx));
        let mut conn = Self {
            client,
            acks,
            published: 0,
            task,
        };
        if connected_rx.await.is_err() {
            // The task ended before a ConnAck: it holds the reason.
            return Err(conn.failure().await);
        }
        Ok(conn)
    }

    fn unacked(&self) -> u64 {
        self.published
            .saturating_sub(self.acks.load(Ordering::Relaxed))
    }

    /// The error that ended the event loop task (waits for it to end).
    async fn failure(&mut self) -> Error {
        match (&mut self.task).await {
            Ok(Err(e)) => Error::from(e),
            Ok(Ok(())) => Error::Simulator("MQTT connection closed unexpectedly".into()),
            Err(e) => Error::Simulator(format!("MQTT event loop task failed: {e}")),
        }
    }
}

/// Polls one connection's event loop: counts PubAcks, reports the ConnAck, and
/// ends on the first error (no reconnect, see the module docs) or once our
/// Disconnect has gone out.
async fn drive(
    mut eventloop: EventLoop,
    acks: Arc<AtomicU64>,
    connected: oneshot::Sender<()>,
) -> Result<(), ConnectionError> {
    let mut connected = Some(connected);
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Packet::PubAck(_)) => {
                acks.fetch_add(1, Ordering::Relaxed);
            }
            Event::Incoming(Packet::ConnAck(_)) => {
                if let Some(tx) = connected.take() {
                    let _ = tx.send(());
                } else {
                    // rumqttc reconnected after a silent drop: with a clean
                    // session, in-flight messages are gone.
                    return Err(ConnectionError::Io(std::io::Error::other(
                        "connection was re-established; in-flight publishes are lost",
                    )));
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// Runs the fleet to completion and returns its ledger once the broker has
/// acknowledged every message.
pub async fn run(cfg: SimConfig) -> Result<Ledger> {
    cfg.validate()?;
    let mut conns = Vec::with_capacity(cfg.connections);
    for k in 0..cfg.connections {
        conns.push(Connection::open(&cfg, k).await?);
    }
    let topics: Vec<String> = (0..cfg.devices).map(|i| cfg.topic(i)).collect();
    let ids: Vec<String> = (0..cfg.devices)
        .map(|i| device_id(&cfg.prefix, i))
        .collect();
    let total = u64::from(cfg.devices) * cfg.messages_per_device;
    info!(
        devices = cfg.devices,
        messages_per_device = cfg.messages_per_device,
        total,
        rate_per_s = cfg.rate_per_s,
        connections = cfg.connections,
        prefix = %cfg.prefix,
        "simulator starting"
    );

    let mut ledger = Ledger {
        prefix: cfg.prefix.clone(),
        seed: cfg.seed,
        devices: cfg.devices,
        messages_per_device: cfg.messages_per_device,
        started_at_ms: now_ms(),
        ..Ledger::default()
    };
    let mut pacing = (cfg.rate_per_s > 0).then(|| {
        let mut tick = tokio::time::interval(PACING_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let start = Instant::now();
    let mut next_progress = start + PROGRESS_EVERY;
    let mut sent = 0u64;

    for seq in 0..cfg.messages_per_device {
        for index in 0..cfg.devices {
            if let Some(tick) = pacing.as_mut() {
                while sent >= allowed(start.elapsed(), cfg.rate_per_s) {
                    tick.tick().await;
                }
            }
            let ts_ms = now_ms();
            let (body, values) = payload(cfg.seed, index, seq, ts_ms);
            let conn = &mut conns[index as usize % cfg.connections];
            if conn
                .client
                .publish(
                    topics[index as usize].as_str(),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await
                .is_err()
            {
                // The request channel is closed: the event loop ended.
                return Err(conn.failure().await);
            }
            conn.published += 1;
            sent += 1;
            let id = &ids[index as usize];
            for (metric, value) in values {
                ledger.record(id, metric, ts_ms, value);
            }
            if sent.is_multiple_of(1024) && Instant::now() >= next_progress {
                next_progress += PROGRESS_EVERY;
                let acked: u64 = conns.iter().map(|c| c.acks.load(Ordering::Relaxed)).sum();
                info!(
                    sent,
                    acked,
                    total,
                    msg_per_s = (sent as f64 / start.elapsed().as_secs_f64()) as u64,
                    "simulator progress"
                );
            }
        }
    }

    wait_for_acks(&mut conns, cfg.ack_timeout).await?;
    ledger.finished_at_ms = now_ms();
    let elapsed = start.elapsed();
    info!(
        sent,
        secs = elapsed.as_secs_f64(),
        msg_per_s = (sent as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
        "simulator finished: every message acknowledged"
    );

    for conn in &mut conns {
        // Best effort: all data is acknowledged; Drop aborts what is left.
        if conn.client.disconnect().await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut conn.task).await;
        }
    }
    Ok(ledger)
}

/// Waits until every connection's PubAcks match its publishes.
async fn wait_for_acks(conns: &mut [Connection], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let unacked: u64 = conns.iter().map(Connection::unacked).sum();
        if unacked == 0 {
            return Ok(());
        }
        if let Some(conn) = conns.iter_mut().find(|c| c.task.is_finished()) {
            return Err(conn.failure().await);
        }
        if Instant::now() >= deadline {
            let published: u64 = conns.iter().map(|c| c.published).sum();
            return Err(Error::Simulator(format!(
                "{unacked} of {published} publishes still unacknowledged after {timeout:?}; \
                 no ledger written"
            )));
        }
        debug!(unacked, "waiting for PubAcks");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests;
