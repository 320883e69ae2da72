//! Integration tests against a real Mosquitto, one private broker per test
//! (started by `devices::testkit`, so tests run in parallel).

use std::time::{Duration, Instant};

use devices::{
    ledger::Ledger,
    sim::{self, SimConfig},
    testkit::Mosquitto,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

/// A bare rumqttc subscriber forwarding every publish it receives.
struct Subscriber {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects, subscribes to `filter` at QoS 1 and waits for the SubAck.
    async fn start(port: u16, id: &str, clean_session: bool, filter: &str) -> Self {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(clean_session)
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subacked_tx, subacked_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut subacked = Some(subacked_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subacked.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), subacked_rx)
            .await
            .expect("SubAck within 5 s")
            .expect("subscriber connected");
        Self { client, rx, task }
    }

    /// Receives until `n` messages arrived (panics after `timeout`), then
    /// makes sure no more follow for a moment.
    async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<(String, Vec<u8>)> {
        let mut got = Vec::with_capacity(n);
        let deadline = tokio::time::Instant::now() + timeout;
        while got.len() < n {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => panic!("subscriber ended after {} of {n}", got.len()),
                Err(_) => panic!("timed out after {} of {n} messages", got.len()),
            }
        }
        if let Ok(Some((topic, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await
        {
            panic!("more than {n} messages: extra one on {topic}");
        }
        got
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

fn sim_config(broker: &Mosquitto, devices: u32, messages_per_device: u64) -> SimConfig {
    SimConfig {
        host: broker.host().to_owned(),
        port: broker.port,
        devices,
        messages_per_device,
        seed: 0xC0FFEE,
        prefix: sim::random_prefix(),
        ack_timeout: Duration::from_secs(10),
        ..SimConfig::default()
    }
}

/// Rebuilds a ledger from received publishes, checking every payload against
/// the deterministic generator on the way.
fn ledger_from_received(cfg: &SimConfig, received: &[(String, Vec<u8>)]) -> Ledger {
    let mut ledger = Ledger::default();
    for (topic, payload) in received {
        let device = topic
            .strip_prefix("devices/")
            .and_then(|t| t.strip_suffix("/telemetry"))
            .unwrap_or_else(|| panic!("unexpected topic {topic}"));
        let index: u32 = device
            .strip_prefix(&format!("{}-", cfg.prefix))
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("unexpected device {device}"));
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let ts = v["ts"].as_i64().unwrap();
        let seq = v["seq"].as_u64().unwrap();
        let metrics = v["metrics"].as_object().unwrap();
        assert_eq!(metrics.len(), 3);
        for (name, expected) in sim::values(cfg.seed, index, seq) {
            let value = metrics[name].as_f64().unwrap();
            assert_eq!(value, expected, "{device} seq {seq} {name}");
            ledger.record(device, name, ts, value);
        }
    }
    ledger
}

fn assert_ledgers_match(published: &Ledger, received: &Ledger) {
    assert_eq!(
        published.entries.keys().collect::<Vec<_>>(),
        received.entries.keys().collect::<Vec<_>>()
    );
    for (device, metrics) in &published.entries {
        for (metric, p) in metrics {
            let r = received.get(device, metric).unwrap();
            let what = format!("{device}/{metric}");
            assert_eq!(p.count, r.count, "{what} count");
            assert_eq!((p.min, p.max), (r.min, r.max), "{what} min/max");
            assert_eq!(
                (p.first_ts_ms, p.last_ts_ms),
                (r.first_ts_ms, r.last_ts_ms),
                "{what} ts"
            );
            let rel = (p.sum - r.sum).abs() / p.sum.abs().max(f64::MIN_POSITIVE);
            assert!(rel <= 1e-9, "{what} sum {} vs {}", p.sum, r.sum);
        }
    }
}

async fn fleet_round_trip(cfg: SimConfig, broker: &Mosquitto) {
    let total = cfg.devices as usize * cfg.messages_per_device as usize;
    let mut sub = Subscriber::start(broker.port, "it-sub", true, "devices/#").await;
    let published = sim::run(cfg.clone()).await.expect("simulator run");
    let received = sub.collect(total, Duration::from_secs(20)).await;
    sub.stop().await;

    assert_eq!(published.prefix, cfg.prefix);
    assert_eq!(published.devices, cfg.devices);
    assert_eq!(published.messages_per_device, cfg.messages_per_device);
    assert_eq!(published.total_readings(), total as u64 * 3);
    assert_eq!(published.entries.len(), cfg.devices as usize);
    assert!(published.started_at_ms <= published.min_ts_ms().unwrap());
    assert!(published.max_ts_ms().unwrap() <= published.finished_at_ms);

    assert_ledgers_match(&published, &ledger_from_received(&cfg, &received));
    assert!(
        !broker.log().contains("dropped"),
        "broker dropped messages:\n{}",
        broker.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_is_delivered_exactly_and_matches_its_ledger() {
    let broker = Mosquitto::start().await.unwrap();
    fleet_round_trip(sim_config(&broker, 20, 50), &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_over_several_connections_with_a_small_window() {
    let broker = Mosquitto::start().await.unwrap();
    let cfg = SimConfig {
        connections: 3,
        inflight: 5,
        ..sim_config(&broker, 7, 30)
    };
    fleet_round_trip(cfg, &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_run_is_paced() {
    let broker = Mosquitto::start().await.unwrap();
    let cfg = SimConfig {
        rate_per_s: 200,
        ..sim_config(&broker, 10, 10)
    };
    let start = Instant::now();
    let ledger = sim::run(cfg).await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(ledger.total_readings(), 300);
    // 100 messages at 200/s: the last one may go at 0.495 s. Lower bound only.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_publishes_are_an_error_not_a_ledger() {
    let mut broker = Mosquitto::start().await.unwrap();
    let cfg = SimConfig {
        rate_per_s: 50,
        ack_timeout: Duration::from_secs(2),
        ..sim_config(&broker, 5, 40)
    };
    let run = tokio::spawn(sim::run(cfg));
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.kill().await;
    let err = run.await.unwrap().expect_err("broker died mid-run");
    assert!(
        matches!(
            err,
            devices::Error::MqttConnection(_) | devices::Error::Simulator(_)
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_port() {
    let mut broker = Mosquitto::start().await.unwrap();
    let port = broker.port;
    broker.restart().await.unwrap();
    assert_eq!(broker.port, port);
    assert!(broker.is_running());
    let ledger = sim::run(sim_config(&broker, 1, 3)).await.unwrap();
    assert_eq!(ledger.total_readings(), 9);

    broker.stop().await;
    assert!(!broker.is_running());
    broker.stop().await; // idempotent
    broker.restart().await.unwrap();
    assert_eq!(broker.port, port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_broker_keeps_queued_messages_across_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start_persistent(data.path()).await.unwrap();

    // A persistent session subscribes, then goes offline.
    Subscriber::start(broker.port, "it-durable", false, "devices/#")
        .await
        .stop()
        .await;
    let cfg = sim_config(&broker, 2, 5);
    sim::run(cfg.clone()).await.unwrap();

    broker.restart().await.unwrap();
    assert!(data.path().join("mosquitto.db").exists());

    // Resuming the session (no new subscribe needed) delivers the queue.
    let mut opts = MqttOptions::new("it-durable", "127.0.0.1", broker.port);
    opts.set_clean_session(false);
    let (_client, mut eventloop) = AsyncClient::new(opts, 10);
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while received.len() < 10 {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                received.push((p.topic, p.payload.to_vec()))
            }
            Ok(Ok(_)) => {}
            other => panic!("after {} of 10: {other:?}", received.len()),
        }
    }
    let published = {
        let mut l = Ledger::default();
        for device in 0..cfg.devices {
            for seq in 0..cfg.messages_per_device {
                for (m, v) in sim::values(cfg.seed, device, seq) {
                    l.record(&sim::device_id(&cfg.prefix, device), m, 0, v);
                }
            }
        }
        l
    };
    let got = ledger_from_received(&cfg, &received);
    for (device, metrics) in &published.entries {
        for (metric, e) in metrics {
            assert_eq!(got.get(device, metric).unwrap().count, e.count);
        }
    }
}
