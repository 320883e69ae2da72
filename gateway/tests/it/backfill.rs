//! Issue 4 (backfill and import) end to end against the real ClickHouse, S3
//! and Redis, through the `thermocline` binary: each test has its own
//! ClickHouse database, S3 bucket and Redis key prefix (see `cold.rs`).

use std::{path::Path, process::Output, time::Duration};

use devices::{ledger::Ledger, testkit::Mosquitto};
use sync::timearg::fmt_ms;

use crate::{
    cold::{env_or, ColdStores},
    support::{redis_url, sim_config, unique, TestGateway},
};

pub(crate) fn run(args: &[&str], env: &[(String, String)]) -> (Output, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

pub(crate) fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `sql` on the test ClickHouse (HTTP); its answer, or a panic naming it.
pub(crate) async fn clickhouse(sql: &str) -> String {
    let r = reqwest::Client::new()
        .post(env_or(
            "THERMOCLINE_TEST_CLICKHOUSE_URL",
            "http://127.0.0.1:8123",
        ))
        .body(sql.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{sql}: {text}");
    text
}

pub(crate) fn database(stores: &ColdStores) -> String {
    stores
        .env
        .iter()
        .find(|(k, _)| k == "THERMOCLINE__COLD__CLICKHOUSE__DATABASE")
        .unwrap()
        .1
        .clone()
}

/// The stores' env plus a private Redis key prefix.
pub(crate) fn env_with_hot(stores: &ColdStores, prefix: &str) -> Vec<(String, String)> {
    let mut env = stores.env.clone();
    env.push(("THERMOCLINE__HOT__KEY_PREFIX".into(), prefix.into()));
    env.push(("THERMOCLINE__HOT__REDIS__URL".into(), redis_url()));
    env
}

pub(crate) fn hot_reader(prefix: &str) -> hot::reader::Reader {
    let mut raw = hot::RawHotConfig::default();
    raw.redis.url = redis_url();
    raw.key_prefix = prefix.into();
    let cfg = raw.validate().unwrap();
    hot::reader::Reader::new(
        hot::connect::connect(&cfg.redis).unwrap(),
        hot::keys::Keys::new(&cfg.key_prefix),
        &cfg.resolutions,
    )
}

/// Issue 4, check 3: a fleet through the gateway with the cold path on; then
/// ClickHouse `readings` and `batches` are truncated; `backfill` over the
/// run's range brings `verify --cold` back to exact; the same backfill again
/// inserts nothing. Also: a reversed range and a dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_restores_truncated_clickhouse_exactly_once() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("bf");
    // Schema and bucket exist before the first batch ships, so verify can poll them.
    let cfg = gateway::config::load_with_env(None, stores.env.clone())
        .unwrap()
        .validate()
        .unwrap()
        .cold;
    cold::clickhouse::ClickHouseSink::connect(
        cfg.clickhouse,
        cold::clickhouse::ClickHouseMetrics::new(&prometheus::Registry::new()).unwrap(),
    )
    .unwrap()
    .ensure_schema()
    .await
    .unwrap();
    cold::s3::S3Sink::connect(
        cfg.s3,
        cold::s3::S3Metrics::new(&prometheus::Registry::new()).unwrap(),
    )
    .await
    .unwrap()
    .ensure_bucket()
    .await
    .unwrap();
    let gw = TestGateway::start("bf", &broker, &redis_url(), &stores.env_refs()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("bf"), 100, 50, 0))
        .await
        .unwrap();
    assert_eq!(ledger.total_readings(), 15_000);
    gw.wait_hot_done(15_000, Duration::from_secs(60)).await;
    stores.wait_exact(&ledger, Duration::from_secs(120)).await;
    gw.stop_and_clean().await;

    let db = database(&stores);
    clickhouse(&format!("TRUNCATE TABLE {db}.readings")).await;
    clickhouse(&format!("TRUNCATE TABLE {db}.batches")).await;
    let lost = stores.verify(&ledger).await;
    assert!(!lost.ok());
    assert_eq!(lost.clickhouse.found_readings, 0, "{}", lost.render());
    assert_eq!(lost.s3.found_readings, 15_000);

    let from = fmt_ms(ledger.min_ts_ms().unwrap());
    let to = fmt_ms(ledger.max_ts_ms().unwrap() + 1);
    let env = stores.env.clone();

    // A reversed range is a clear error; a dry run writes nothing.
    let (out, _) = run(&["backfill", "--from", &to, "--to", &from], &env);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reversed"),
        "{}",
        show(&out)
    );
    let (out, dry) = run(
        &[
            "backfill",
            "--from",
            &from,
            "--to",
            &to,
            "--dry-run",
            "--json",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(dry["batches_inserted"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(stores.verify(&ledger).await.clickhouse.found_readings, 0);

    let (out, first) = run(&["backfill", "--from", &from, "--to", &to, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    let objects = first["objects"].as_u64().unwrap();
    assert!(objects > 0, "{first}");
    assert_eq!(first["already_present"], 0, "{first}");
    assert_eq!(
        first["batches_inserted"].as_u64().unwrap(),
        objects,
        "{first}"
    );
    assert!(
        first["rows_inserted"].as_u64().unwrap() >= 15_000,
        "{first}"
    );
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 15_000);

    // Again: nothing to do, nothing changes.
    let (out, again) = run(&["backfill", "--from", &from, "--to", &to, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(again["batches_inserted"], 0, "{again}");
    assert_eq!(again["rows_inserted"], 0, "{again}");
    assert_eq!(
        again["already_present"].as_u64().unwrap(),
        objects,
        "{again}"
    );
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    stores.clean().await;
}

/// Writes `lines` to `path`.
fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Issue 4, check 5: a 100,000-row NDJSON file and a CSV with 3 malformed
/// lines are imported; the valid rows are in ClickHouse (FINAL) and S3
/// exactly once and in the hot windows; the bad lines are reported by
/// number; a rerun (with its checkpoint, and without) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_lands_valid_rows_exactly_once() {
    let stores = ColdStores::new("imp");
    let hot_prefix = unique("imp-hot");
    let env = env_with_hot(&stores, &hot_prefix);
    let dir = tempfile::tempdir().unwrap();
    let now = hot::service::now_ms();

    // NDJSON: 100 devices × 1000 lines of one reading, the last 20 minutes.
    let dev_prefix = unique("impn");
    let mut ledger = Ledger {
        prefix: dev_prefix.clone(),
        ..Default::default()
    };
    let mut lines = Vec::with_capacity(100_000);
    for i in 0..100_000u64 {
        let device = format!("{dev_prefix}-{:06}", i % 100);
        let seq = i / 100;
        let ts = now - 1_200_000 + (seq as i64) * 1_000 + (i % 100) as i64;
        let value = (i % 977) as f64 / 8.0 - 20.0;
        ledger.record(&device, "temp", ts, value);
        lines.push(format!(
            r#"{{"device_id":"{device}","ts":{ts},"seq":{seq},"metrics":{{"temp":{value}}}}}"#
        ));
    }
    let ndjson = dir.path().join("offline.ndjson");
    write_lines(&ndjson, &lines);
    let path = ndjson.to_str().unwrap();
    let (out, s) = run(&["import", path, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["rows"], 100_000, "{s}");
    assert_eq!(s["bad_lines"], 0, "{s}");
    assert_eq!(s["lines_done"], 100_000, "{s}");
    assert_eq!(s["hot_readings"], 100_000, "{s}");
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 100_000);
    assert_eq!(report.s3.found_readings, 100_000);
    let hot = sync::verify::verify_hot(&hot_reader(&hot_prefix), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(hot.ok(), "{}", hot.render());

    // Rerun with the checkpoint: done already.
    let (out, s) = run(&["import", path, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["rows_this_run"], 0, "{s}");
    // Rerun without it: every batch is found in ClickHouse and skipped.
    std::fs::remove_file(sync::import::default_checkpoint(&ndjson)).unwrap();
    let (out, s) = run(&["import", path, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["rows_this_run"], 0, "{s}");
    assert_eq!(s["batches_written"], 0, "{s}");
    assert!(s["batches_present"].as_u64().unwrap() > 0, "{s}");
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    let hot = sync::verify::verify_hot(&hot_reader(&hot_prefix), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(hot.ok(), "reruns must not double count:\n{}", hot.render());

    // CSV with 3 malformed lines (numbers 5, 102 and 250; line 1 is the header).
    let csv_prefix = unique("impc");
    let mut ledger = Ledger {
        prefix: csv_prefix.clone(),
        ..Default::default()
    };
    let mut lines = vec![sync::import::CSV_HEADER.to_string()];
    for i in 0..300u64 {
        let line_no = lines.len() + 1;
        let device = format!("{csv_prefix}-{:06}", i % 3);
        let ts = now - 600_000 + i as i64 * 10;
        let bad = match line_no {
            5 => Some(format!("{device},temp,{ts},warm,{i}")),
            102 => Some(format!("{device},temp,{ts}")),
            250 => Some(format!("{device},bad metric,{ts},1.0,{i}")),
            _ => None,
        };
        match bad {
            Some(l) => lines.push(l),
            None => {
                let v = i as f64 * 0.5;
                ledger.record(&device, "hum", ts, v);
                lines.push(format!("{device},hum,{ts},{v},{i}"));
            }
        }
    }
    let csv = dir.path().join("offline.csv");
    write_lines(&csv, &lines);
    let path = csv.to_str().unwrap();
    let (out, s) = run(&["import", path, "--json"], &env);
    assert!(
        !out.status.success(),
        "bad lines make a non-zero exit: {}",
        show(&out)
    );
    assert_eq!(s["bad_lines"], 3, "{s}");
    let numbers: Vec<u64> = s["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["line"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [5, 102, 250], "{s}");
    assert_eq!(s["rows"], 297, "{s}");
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 297);
    // The text summary names the lines too; a rerun adds nothing.
    let (out, _) = run(&["import", path], &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("line 5: non_numeric"), "{text}");
    assert!(text.contains("line 102: malformed"), "{text}");
    assert!(text.contains("line 250: invalid_metric"), "{text}");
    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 297);

    // A malformed file as a whole, and an unreachable store: clear errors.
    let broken = dir.path().join("broken.csv");
    std::fs::write(&broken, "device,metric\n").unwrap();
    let (out, _) = run(&["import", broken.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("broken.csv:1"),
        "{}",
        show(&out)
    );
    let mut down = env.clone();
    down.push((
        "THERMOCLINE__COLD__CLICKHOUSE__URL".into(),
        "http://127.0.0.1:1".into(),
    ));
    down.push((
        "THERMOCLINE__COLD__CLICKHOUSE__MAX_ATTEMPTS".into(),
        "1".into(),
    ));
    let (out, _) = run(
        &[
            "import",
            ndjson.to_str().unwrap(),
            "--checkpoint",
            dir.path().join("cp2").to_str().unwrap(),
        ],
        &down,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("clickhouse is unreachable"),
        "{}",
        show(&out)
    );

    crate::fixtures::delete_prefix(&hot_prefix).await;
    stores.clean().await;
}
