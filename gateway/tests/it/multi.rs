//! Issue 10: several `thermocline run` processes on one shared subscription
//! (`$share/tc/devices/#`) of a private tuned Mosquitto, each with its own
//! gateway id, client id and spool directory; one Redis key prefix, one
//! ClickHouse database and one S3 bucket per test. Fleets are lean (300
//! devices × 30 messages, 27,000 readings) so CI time stays small.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use devices::{ledger::Ledger, testkit::Mosquitto};

use crate::{
    cold::{sample, ColdStores, GatewayChild},
    fixtures::delete_prefix,
    support::{redis_url, sim_config, unique},
};

const DEVICES: u32 = 300;
const MESSAGES: u64 = 30;
const READINGS: u64 = DEVICES as u64 * MESSAGES * 3;

/// N gateways sharing one fleet; gateway `i` is `gw{i}-{tag}` with its own spool.
struct Fleet {
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    tag: String,
    prefix: String,
    gateways: Vec<Option<GatewayChild>>,
}

impl Fleet {
    async fn start(
        broker: &Mosquitto,
        stores: &ColdStores,
        n: usize,
        extra: &[(&str, &str)],
    ) -> Self {
        let tag = unique("m").replace('_', "-");
        let prefix = format!("tc-{tag}");
        let mut env = stores.env.clone();
        env.extend(
            [
                ("THERMOCLINE__MQTT__PORT", broker.port.to_string()),
                ("THERMOCLINE__MQTT__SHARED_GROUP", "tc".to_string()),
                ("THERMOCLINE__HOT__KEY_PREFIX", prefix.clone()),
                ("THERMOCLINE__HOT__REDIS__URL", redis_url()),
                // The reconciler runs only when the test says so (CLI).
                ("THERMOCLINE__SYNC__ENABLED", "false".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut f = Self {
            env,
            dir: tempfile::tempdir().unwrap(),
            tag,
            prefix,
            gateways: Vec::new(),
        };
        for i in 0..n {
            let spool = f.spool(i);
            let g = f.launch(i, &spool).await;
            f.gateways.push(Some(g));
        }
        f
    }

    fn id(&self, i: usize) -> String {
        format!("gw{i}-{}", self.tag)
    }

    fn spool(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("spool-{i}"))
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("gateways.log")
    }

    /// Starts gateway `i` (its id, client id `thermocline-{id}`) on `spool`.
    async fn launch(&self, i: usize, spool: &Path) -> GatewayChild {
        let mut env = self.env.clone();
        env.push(("THERMOCLINE__GATEWAY__ID".into(), self.id(i)));
        env.push((
            "THERMOCLINE__COLD__SPOOL__DIR".into(),
            spool.display().to_string(),
        ));
        let g = GatewayChild::start(&env, &self.log()).await;
        let ready: serde_json::Value = reqwest::get(format!("{}/readyz", g.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["gateway_id"], self.id(i), "{ready}");
        g
    }

    async fn kill9(&mut self, i: usize) -> String {
        let mut g = self.gateways[i].take().unwrap();
        let m = g.metrics().await;
        g.kill9().await;
        m
    }

    /// SIGTERM and wait: the ordered shutdown.
    async fn stop(&mut self, i: usize) {
        let mut g = self.gateways[i].take().unwrap();
        let pid = g.child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(20), g.child.wait()).await;
    }

    async fn metric_sum(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for g in self.gateways.iter().flatten() {
            sum += sample(&g.metrics().await, name);
        }
        sum
    }

    /// `thermocline ARGS` with the fleet's env (gateway 0's id): success?
    fn cli(&self, args: &[&str], ledger: Option<&Ledger>) -> (bool, String) {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(l) = ledger {
            let path = self.dir.path().join("ledger.json");
            l.write(&path).unwrap();
            args.extend(["--ledger".into(), path.display().to_string()]);
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
            .args(&args)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Polls `verify --hot --cold` until it passes or `within` runs out.
    async fn wait_verified(&self, ledger: &Ledger, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (ok, text) = self.cli(&["verify", "--hot", "--cold"], Some(ledger));
            if ok {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "not exact after {within:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The cold stores exact, then the hot windows made exact from ClickHouse
    /// by the reconciler (a gateway killed with -9 may have flushed readings
    /// to Redis whose acks never reached the broker; their redelivery after
    /// the restart is outside the new process's dedup horizon), then both.
    async fn reconcile_and_verify(&self, stores: &ColdStores, ledger: &Ledger) -> String {
        stores.wait_exact(ledger, Duration::from_secs(120)).await;
        let (ok, text) = self.cli(
            &[
                "reconcile",
                "--from",
                "-2h",
                "--seal-delay",
                "0s",
                "--repair",
            ],
            None,
        );
        assert!(ok, "reconcile --repair: {text}");
        self.wait_verified(ledger, Duration::from_secs(30)).await
    }

    async fn stop_all(mut self) {
        for i in 0..self.gateways.len() {
            if self.gateways[i].is_some() {
                self.stop(i).await;
            }
        }
        delete_prefix(&self.prefix).await;
    }
}

/// Three gateways on one shared subscription, 300 devices × 30 messages:
/// every gateway got a share, and `verify --hot` and `verify --cold` are exact
/// (S3 holds no reading twice, since nothing failed over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_a_shared_subscription_are_exact() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("multi");
    let fleet = Fleet::start(&broker, &stores, 3, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("ms"), DEVICES, MESSAGES, 0))
        .await
        .unwrap();
    assert_eq!(ledger.total_readings(), READINGS);
    let text = fleet.wait_verified(&ledger, Duration::from_secs(120)).await;
    let mut shares = Vec::new();
    for g in fleet.gateways.iter().flatten() {
        shares.push(sample(
            &g.metrics().await,
            "thermocline_ingest_messages_received_total",
        ));
        assert!(
            g.metrics()
                .await
                .contains(&"thermocline_gateway_info{gateway_id=\"gw".to_string()),
            "no gateway_info series"
        );
    }
    eprintln!("messages per gateway {shares:?}\n{text}");
    assert!(
        shares.iter().all(|&s| s > 0.0),
        "a gateway got nothing: {shares:?}"
    );
    assert_eq!(
        shares.iter().sum::<f64>(),
        (DEVICES as u64 * MESSAGES) as f64
    );
    assert!(
        text.contains("redelivered to a second gateway (counted once): 0"),
        "{text}"
    );
    fleet.stop_all().await;
    stores.clean().await;
}

/// One of three gateways killed with -9 mid-run, restarted 5 s later with its
/// id and spool (a) or started with the same id from a copy of its spool in
/// another directory, as on another machine (b): ClickHouse and S3 exact, and
/// after one `reconcile --repair` the hot windows too. Prints what the broker
/// did with the dead member's share (README "Running more than one gateway").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_9_and_restarted_with_its_id_and_spool_is_exact() {
    for elsewhere in [false, true] {
        let broker = Mosquitto::start().await.unwrap();
        let stores = ColdStores::new("multikill");
        let mut fleet = Fleet::start(&broker, &stores, 3, &[]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // About 6 s of traffic at 1,500 msg/s.
        let sim = sim_config(&broker, &unique("mk"), DEVICES, MESSAGES, 1_500);
        let run = tokio::spawn(devices::sim::run(sim));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = fleet.kill9(1).await;
        let received_before = sample(&before, "thermocline_ingest_messages_received_total");
        assert!(received_before > 0.0, "gateway 1 had received nothing");
        let others_at_kill = fleet
            .metric_sum("thermocline_ingest_messages_received_total")
            .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let others_after_wait = fleet
            .metric_sum("thermocline_ingest_messages_received_total")
            .await;
        let spool = if elsewhere {
            let to = fleet.dir.path().join("spool-1-moved");
            copy_dir(&fleet.spool(1), &to);
            to
        } else {
            fleet.spool(1)
        };
        let g = fleet.launch(1, &spool).await;
        fleet.gateways[1] = Some(g);
        let ledger = run.await.unwrap().unwrap();
        assert_eq!(ledger.total_readings(), READINGS);
        let text = fleet.reconcile_and_verify(&stores, &ledger).await;
        let restarted = fleet.gateways[1].as_ref().unwrap().metrics().await;
        let others_end = fleet
            .metric_sum("thermocline_ingest_messages_received_total")
            .await
            - sample(&restarted, "thermocline_ingest_messages_received_total");
        eprintln!(
            "elsewhere={elsewhere}: gateway 1 received {received_before} before the kill; the \
             others {others_at_kill} at the kill, {others_after_wait} 5 s later, {others_end} at the end; \
             after the restart gateway 1 received {} ({} with DUP set)\n{text}",
            sample(&restarted, "thermocline_ingest_messages_received_total"),
            sample(&restarted, "thermocline_ingest_messages_redelivered_total"),
        );
        // Mosquitto kept the dead member's session and its share: the
        // restarted gateway got messages (its queue, and redeliveries).
        assert!(sample(&restarted, "thermocline_ingest_messages_received_total") > 0.0);
        fleet.stop_all().await;
        stores.clean().await;
    }
}

/// All three gateways stopped (SIGTERM) and restarted one after another while
/// the fleet publishes: ClickHouse and S3 exact without a repair; the hot
/// windows exact after one `reconcile --repair` (a restart was seen to leave
/// some readings counted twice in Redis: their redelivery reaches the new
/// process, whose dedup horizon starts empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_is_exact_in_cold_and_after_one_reconcile_in_hot() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("multiroll");
    let mut fleet = Fleet::start(&broker, &stores, 3, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sim = sim_config(&broker, &unique("mr"), DEVICES, MESSAGES, 1_000);
    let run = tokio::spawn(devices::sim::run(sim));
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        fleet.stop(i).await;
        let spool = fleet.spool(i);
        let g = fleet.launch(i, &spool).await;
        fleet.gateways[i] = Some(g);
    }
    let ledger = run.await.unwrap().unwrap();
    assert_eq!(ledger.total_readings(), READINGS);
    let (hot_ok, _) = fleet.cli(&["verify", "--hot"], Some(&ledger));
    let text = fleet.reconcile_and_verify(&stores, &ledger).await;
    eprintln!(
        "hot exact before the repair: {hot_ok}; DUP redeliveries {}\n{text}",
        fleet
            .metric_sum("thermocline_ingest_messages_redelivered_total")
            .await
    );
    fleet.stop_all().await;
    stores.clean().await;
}

/// The three-gateway fleet against the two-shard ClickHouse cluster
/// (`scripts/services up clickhouse-cluster`): exact; rows on both shards;
/// after deleting the test's Redis keys `reconcile --repair` restores the hot
/// windows, and after truncating both shards `backfill` restores ClickHouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_a_clickhouse_cluster_are_exact_and_repairable() {
    let shards: Vec<String> = std::env::var("THERMOCLINE_TEST_CLICKHOUSE_SHARD_URLS")
        .unwrap_or("http://127.0.0.1:8124,http://127.0.0.1:8125".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let cluster = std::env::var("THERMOCLINE_TEST_CLICKHOUSE_CLUSTER")
        .unwrap_or("thermocline_2shards".into());
    let broker = Mosquitto::start().await.unwrap();
    let s3 =
        std::env::var("THERMOCLINE_TEST_S3_ENDPOINT").unwrap_or("http://127.0.0.1:9000".into());
    let stores = ColdStores::on("multich", &shards[0], &s3);
    let db = stores
        .env
        .iter()
        .find(|(k, _)| k == "THERMOCLINE__COLD__CLICKHOUSE__DATABASE")
        .unwrap()
        .1
        .clone();
    let joined = shards.join(",");
    let fleet = Fleet::start(
        &broker,
        &stores,
        3,
        &[
            ("THERMOCLINE__COLD__CLICKHOUSE__CLUSTER", &cluster),
            ("THERMOCLINE__COLD__CLICKHOUSE__SHARD_URLS", &joined),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("mc"), DEVICES, MESSAGES, 0))
        .await
        .unwrap();
    fleet.wait_verified(&ledger, Duration::from_secs(120)).await;
    let mut per_shard = Vec::new();
    for s in &shards {
        per_shard.push(
            ch(s, &format!("SELECT count() FROM {db}.readings_local FINAL"))
                .await
                .parse::<u64>()
                .unwrap(),
        );
    }
    eprintln!("rows per shard {per_shard:?}");
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    assert_eq!(per_shard.iter().sum::<u64>(), READINGS);

    // Redis lost (the test's keys): the reconciler rebuilds the windows.
    assert!(delete_prefix(&fleet.prefix).await > 0);
    let (ok, text) = fleet.cli(
        &[
            "reconcile",
            "--from",
            "-2h",
            "--seal-delay",
            "0s",
            "--repair",
        ],
        None,
    );
    assert!(ok, "reconcile --repair: {text}");
    fleet.wait_verified(&ledger, Duration::from_secs(30)).await;

    // ClickHouse lost (both shards truncated): backfill from S3.
    for s in &shards {
        ch(s, &format!("TRUNCATE TABLE {db}.readings_local")).await;
        ch(s, &format!("TRUNCATE TABLE {db}.batches_local")).await;
    }
    let (ok, _) = fleet.cli(&["verify", "--cold"], Some(&ledger));
    assert!(!ok, "verify --cold passed on empty shards");
    let (ok, text) = fleet.cli(&["backfill", "--from", "-2h", "--to", "now"], None);
    assert!(ok, "backfill: {text}");
    let text = fleet.wait_verified(&ledger, Duration::from_secs(30)).await;
    eprintln!("{text}");
    fleet.stop_all().await;
    for s in &shards {
        ch(s, &format!("DROP DATABASE IF EXISTS {db}")).await;
    }
}

async fn ch(url: &str, sql: &str) -> String {
    let r = reqwest::Client::new()
        .post(url)
        .body(sql.to_owned())
        .send()
        .await
        .unwrap();
    let ok = r.status().is_success();
    let body = r.text().await.unwrap();
    assert!(ok, "{sql}: {body}");
    body.trim().to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The same readings in S3 objects of two gateways (a broker that redelivers
/// a dead member's messages to another) and in ClickHouse from both: `verify
/// --cold` counts each reading once and reports the second copies as
/// redeliveries; a second copy in the same gateway's objects fails it.
#[tokio::test]
async fn verify_cold_counts_a_reading_in_two_gateways_objects_once() {
    use cold::row::{Batch, BatchId, SpoolPos};

    use crate::fixtures::{batches, fleet, put_batches, sinks};

    let stores = ColdStores::new("redeliv");
    let (s3, ch) = sinks(&stores).await;
    let now = hot::service::now_ms();
    let (rows, ledger) = fleet(&unique("rd"), 5, 20, now - 60_000, 1_000);
    let as_gateway = |rows: &[cold::row::ColdRow], gw: &str| {
        let id = devices::DeviceId::parse(gw).unwrap();
        rows.iter()
            .map(|r| cold::row::ColdRow {
                gateway_id: id.clone(),
                received_at_ms: r.received_at_ms + 1,
                ..r.clone()
            })
            .collect::<Vec<_>>()
    };
    let first = batches(&as_gateway(&rows, "gw-a"), 50, "gw-a");
    let second = batches(&as_gateway(&rows[..30], "gw-b"), 50, "gw-b");
    put_batches(&s3, &first).await;
    put_batches(&s3, &second).await;
    for b in first.iter().chain(&second) {
        ch.insert_batch(b, "k").await.unwrap();
    }
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.s3_redeliveries, 30, "{}", report.render());
    assert_eq!(report.s3_duplicates, 0);
    assert_eq!(report.s3.found_readings, 100);
    assert_eq!(report.clickhouse.found_readings, 100);

    // A second copy written by gw-a itself (another batch of its own).
    let again = as_gateway(&rows[..10], "gw-a");
    let gw_a = devices::DeviceId::parse("gw-a").unwrap();
    let mut own = Vec::new();
    for (k, b) in batches(&again, 50, "gw-a").into_iter().enumerate() {
        own.push(Batch {
            id: BatchId::new(
                &gw_a,
                SpoolPos {
                    segment: 900 + k as u64,
                    offset: 0,
                },
                b.hour_start_ms,
            ),
            ..b
        });
    }
    put_batches(&s3, &own).await;
    let report = stores.verify(&ledger).await;
    assert!(!report.ok(), "{}", report.render());
    assert_eq!(report.s3_duplicates, 10, "{}", report.render());
    stores.clean().await;
}
