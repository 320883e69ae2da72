//! Publish → visible-in-Redis (or in ClickHouse) latency under a steady
//! background load.
//!
//! While the simulator publishes at a fixed rate, a probe device publishes one
//! message every `probe_every` on a fixed schedule (never waiting for the
//! previous probe, so a slow gateway cannot hide its stalls by delaying the
//! next measurement: no coordinated omission on the sending side). Each probe
//! carries a strictly increasing `ts`. A poller reads the probe device's
//! `latest` hash (`t:temp`) from Redis about every millisecond; a probe is
//! visible once that field holds its ts or a later one. Latency = first poll
//! that sees it − the instant just before it was handed to the MQTT client.
//! The poll interval adds up to ~1-2 ms.
//!
//! [`Store::ClickHouse`] runs the gateway with the cold path on and polls
//! `SELECT max(ts_ms)` of the probe's `temp` rows in its database every 25 ms
//! over HTTP instead (the poll adds up to ~25 ms plus the query's time).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use devices::{sim, DeviceId};
use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::runs::{Env, Workload};

#[derive(Debug, Clone)]
pub struct LatencyResult {
    /// Sorted, milliseconds.
    pub samples_ms: Vec<f64>,
    pub probes_sent: usize,
    pub unseen: usize,
    pub target_rate: u32,
    pub achieved_rate: f64,
    pub duration: Duration,
}

impl LatencyResult {
    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.samples_ms.len() as f64).ceil() as usize;
        Some(self.samples_ms[rank.clamp(1, self.samples_ms.len()) - 1])
    }

    pub fn max(&self) -> Option<f64> {
        self.samples_ms.last().copied()
    }
}

type Pending = Arc<Mutex<VecDeque<(i64, Instant)>>>;

/// Where a probe must become visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The hot path alone (cold off): the probe's `latest` hash in Redis.
    Redis,
    /// Hot and cold on: the probe's rows in ClickHouse.
    ClickHouse,
}

impl Store {
    /// Between two polls.
    fn poll_every(self) -> Duration {
        match self {
            Store::Redis => Duration::from_millis(1),
            Store::ClickHouse => Duration::from_millis(25),
        }
    }

    /// How long after the load the last probes may take (a batch age, for ClickHouse).
    fn drain(self) -> Duration {
        match self {
            Store::Redis => Duration::from_secs(5),
            Store::ClickHouse => Duration::from_secs(20),
        }
    }
}

/// The latest probe ts visible, polled one way or the other.
enum Poller {
    Redis {
        conn: redis::aio::MultiplexedConnection,
        key: String,
    },
    ClickHouse {
        addr: String,
        query: String,
    },
}

impl Poller {
    async fn latest(&mut self) -> Option<i64> {
        match self {
            Poller::Redis { conn, key } => redis::cmd("HGET")
                .arg(&*key)
                .arg("t:temp")
                .query_async(conn)
                .await
                .unwrap_or(None),
            // max() of no rows is 0 here, older than every probe.
            Poller::ClickHouse { addr, query } => crate::gateway::clickhouse(addr, query)
                .await
                .ok()
                .and_then(|b| b.trim().parse().ok()),
        }
    }
}

pub async fn measure(
    env: &Env,
    store: Store,
    devices: u32,
    rate: u32,
    duration: Duration,
    probe_every: Duration,
) -> anyhow::Result<LatencyResult> {
    let (tag, cold) = match store {
        Store::Redis => ("lat", false),
        Store::ClickHouse => ("latc", true),
    };
    let gw = env.start_gateway(tag, cold).await?;
    let result = run(
        env,
        store,
        &gw.key_prefix,
        devices,
        rate,
        duration,
        probe_every,
    )
    .await;
    env.stop_gateway(gw, result.is_err()).await?;
    result
}

async fn run(
    env: &Env,
    store: Store,
    key_prefix: &str,
    devices: u32,
    rate: u32,
    duration: Duration,
    probe_every: Duration,
) -> anyhow::Result<LatencyResult> {
    let probe_id = sim::device_id(&format!("{key_prefix}-probe"), 0);
    let topic = format!("devices/{probe_id}/telemetry");
    let mut poll = match store {
        Store::Redis => Poller::Redis {
            key: hot::keys::Keys::new(key_prefix).latest(&DeviceId::parse(&probe_id)?),
            conn: redis::Client::open(env.redis_url.as_str())?
                .get_multiplexed_async_connection()
                .await
                .context("connecting to Redis for the latency poller")?,
        },
        Store::ClickHouse => Poller::ClickHouse {
            addr: env
                .cold
                .as_ref()
                .context("a ClickHouse latency run without the cold stores")?
                .clickhouse
                .clone(),
            query: format!(
                "SELECT max(ts_ms) FROM {}.readings WHERE device_id = '{probe_id}' AND metric = 'temp'",
                crate::runs::ColdStores::database(key_prefix)
            ),
        },
    };

    let mut opts = MqttOptions::new(format!("{key_prefix}-probe"), "127.0.0.1", env.broker_port);
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30));
    let (probe, mut el) = AsyncClient::new(opts, 64);
    let mqtt_task = tokio::spawn(async move { while el.poll().await.is_ok() {} });

    let pending: Pending = Arc::default();
    let seen: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let (pending, seen, stop) = (pending.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(t) = poll.latest().await {
                    let now = Instant::now();
                    let mut p = pending.lock().expect("not poisoned");
                    while p.front().is_some_and(|(ts, _)| *ts <= t) {
                        let (_, sent) = p.pop_front().expect("front exists");
                        seen.lock()
                            .expect("not poisoned")
                            .push((now - sent).as_secs_f64() * 1e3);
                    }
                }
                tokio::time::sleep(store.poll_every()).await;
            }
        })
    };

    let load = Workload {
        devices,
        messages_per_device: (u64::from(rate) * duration.as_secs()).div_ceil(u64::from(devices)),
        connections: 1,
    };
    let sim_cfg = load.sim(env.broker_port, &format!("{}-lat", env.run_id), rate);
    let t0 = Instant::now();
    let load_task = tokio::spawn(sim::run(sim_cfg));

    let mut tick = tokio::time::interval(probe_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut seq, mut last_ts, mut sent) = (0u64, 0i64, 0usize);
    while !load_task.is_finished() {
        tick.tick().await;
        let ts = sim::now_ms().max(last_ts + 1);
        last_ts = ts;
        let (body, _) = sim::payload(7, 0, seq, ts);
        seq += 1;
        pending
            .lock()
            .expect("not poisoned")
            .push_back((ts, Instant::now()));
        probe.publish(&topic, QoS::AtLeastOnce, false, body).await?;
        sent += 1;
    }
    let load_elapsed = t0.elapsed();
    load_task.await?.context("the background load failed")?;

    let deadline = Instant::now() + store.drain();
    while !pending.lock().expect("not poisoned").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    let _ = poller.await;
    let _ = probe.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), mqtt_task).await;

    let mut samples_ms = std::mem::take(&mut *seen.lock().expect("not poisoned"));
    samples_ms.sort_by(f64::total_cmp);
    Ok(LatencyResult {
        unseen: sent - samples_ms.len(),
        samples_ms,
        probes_sent: sent,
        target_rate: rate,
        achieved_rate: load.messages() as f64 / load_elapsed.as_secs_f64(),
        duration: load_elapsed,
    })
}
