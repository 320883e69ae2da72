//! Reads on their own connection: the read API and the health ping never wait
//! behind the writer's flush pipelines.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use super::{dev, metric, msg};
use hot::service::now_ms;

/// A private `redis-server` (a test that pauses writes must not pause the
/// shared server other sessions use).
pub struct PrivateRedis {
    pub port: u16,
    _child: Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/services up installs it)");
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            port,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// While Redis holds every write (`CLIENT PAUSE … WRITE`, so the writer's
/// flush script is stuck on its connection) the reader's `latest`, bucket read
/// and ping all answer, and the stuck flush completes only afterwards. On one
/// shared multiplexed connection the reads would queue behind the script and
/// return only after the pause, when the flush has already landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_behind_a_blocked_flush() {
    let redis = PrivateRedis::start().await;
    let mut raw = hot::RawHotConfig::default();
    raw.redis.url = redis.url();
    raw.key_prefix = "it-reads".into();
    raw.flush_interval = Duration::from_millis(10);
    let cfg = raw.validate().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = hot::HotMetrics::new(&registry).unwrap();
    let (path, tx) = hot::HotPath::start(&cfg, metrics.clone()).unwrap();
    let now = now_ms();
    tx.send(msg("d1", 0, now, &[("m", 1.0)])).await.unwrap();
    while metrics.readings_written.get() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut admin = hot::connect::connect(&cfg.redis).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg(&["PAUSE", "4000", "WRITE"])
        .query_async(&mut admin)
        .await
        .unwrap();
    tx.send(msg("d1", 1, now, &[("m", 2.0)])).await.unwrap();
    // The second reading is taken into a flush (its script is then sent and
    // held by the pause).
    while metrics.pending_buckets.get() > 0 || metrics.channel_depth.get() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let latest = path.reader.latest(&dev("d1")).await.unwrap().unwrap();
    let buckets = path
        .reader
        .buckets(&dev("d1"), &metric("m"), &cfg.resolutions[0], now, now)
        .await
        .unwrap();
    path.reader.ping().await.unwrap();
    // All three answered while the flush was still held.
    assert_eq!(metrics.readings_written.get(), 1, "the flush was not held");
    assert_eq!(latest.metrics["m"].value, 1.0);
    assert_eq!(buckets[0].agg.count, 1);

    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
    drop(tx);
    path.join().await;
    assert_eq!(metrics.readings_written.get(), 2);
    assert_eq!(metrics.readings_failed.get(), 0);
}
