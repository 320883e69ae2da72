//! Issue 4: Ctrl-C and resume, end to end. `thermocline import` and
//! `thermocline backfill` run as child processes against the real stores; the
//! test waits until the run has visibly written something (the import's
//! checkpoint, the backfill's rows in `batches`), sends SIGINT, and checks
//! the run stopped cleanly (exit 130, summary says interrupted, no panic),
//! then reruns it and checks the result is exact with nothing written twice:
//! `readings FINAL` and raw `readings`, raw `batches`, the S3 objects, the
//! hot windows.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use devices::ledger::Ledger;
use sync::timearg::fmt_ms;

use crate::{
    backfill::{env_with_hot, hot_reader, run, show},
    cold::ColdStores,
    fixtures::{
        batches, ch_count, delete_prefix, fleet, put_batches, raw_counts, s3_objects, sinks,
    },
    support::unique,
};

fn spawn(args: &[&str], env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `progress` until it is true, then sends SIGINT; returns the output.
async fn interrupt_when(
    child: Child,
    what: &str,
    mut progress: impl AsyncFnMut() -> bool,
) -> (Output, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut child = child;
    loop {
        if progress().await {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} ended ({status}) before it showed progress");
        }
        assert!(Instant::now() < deadline, "{what}: no progress in 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

fn lines_done(checkpoint: &Path) -> u64 {
    std::fs::read_to_string(checkpoint)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c["summary"]["lines_done"].as_u64())
        .unwrap_or(0)
}

async fn hot_exact(prefix: &str, ledger: &Ledger) {
    let h = sync::verify::verify_hot(&hot_reader(prefix), ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(h.ok(), "{}", h.render());
    assert!(h.skipped_resolutions.is_empty());
}

/// A 300,000-line NDJSON import (30 chunks) is interrupted once its
/// checkpoint shows the first chunk done: it exits 130 after the chunk in
/// progress, its summary and checkpoint agree on the lines done, and the
/// stores hold exactly those rows. The rerun resumes there and ends exact:
/// 300,000 rows in `readings` raw and FINAL, one `batches` row and one S3
/// object per batch, hot windows exact (nothing merged twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_import_resumes_exactly() {
    let stores = ColdStores::new("resimp");
    let hot_prefix = unique("resimp-hot");
    let env = env_with_hot(&stores, &hot_prefix);
    let (s3, _ch) = sinks(&stores).await;
    let now = hot::service::now_ms();
    let (rows, ledger) = fleet(&unique("ri"), 150, 2_000, now - 30 * 60_000, 800);
    let mut text = String::with_capacity(rows.len() * 100);
    for r in &rows {
        text += &format!(
            "{{\"device_id\":\"{}\",\"ts\":{},\"seq\":{},\"metrics\":{{\"temp\":{}}}}}\n",
            r.device_id, r.ts_ms, r.seq, r.value
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.ndjson");
    std::fs::write(&file, text).unwrap();
    let checkpoint = sync::import::default_checkpoint(&file);
    let path = file.to_str().unwrap();

    let child = spawn(&["import", path, "--json"], &env);
    let (out, first) =
        interrupt_when(child, "import", async || lines_done(&checkpoint) >= 10_000).await;
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        show(&out)
    );
    assert_eq!(first["interrupted"], true, "{first}");
    let done = first["lines_done"].as_u64().unwrap();
    assert!((10_000..300_000).contains(&done), "{first}");
    assert_eq!(done % 10_000, 0, "stops between chunks: {first}");
    assert_eq!(lines_done(&checkpoint), done, "checkpoint and summary");
    assert_eq!(first["rows"], done, "{first}");
    let first_batches = first["batches_written"].as_u64().unwrap();
    assert_eq!(
        raw_counts(&stores).await,
        (done, done, first_batches),
        "after the interruption: raw readings, FINAL, batches"
    );

    let (out, s) = run(&["import", path, "--json"], &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["interrupted"], false, "{s}");
    assert_eq!(s["resumed_from_line"], done, "{s}");
    assert_eq!(s["lines_done"], 300_000, "{s}");
    assert_eq!(s["rows"], 300_000, "{s}");
    assert_eq!(s["rows_this_run"], 300_000 - done, "{s}");
    assert_eq!(s["batches_present"], 0, "{s}");
    let total_batches = s["batches_written"].as_u64().unwrap();
    assert_eq!(
        s["batches_written_this_run"].as_u64().unwrap(),
        total_batches - first_batches
    );

    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.s3.found_readings, 300_000);
    assert_eq!(report.s3_duplicates, 0);
    assert_eq!(
        raw_counts(&stores).await,
        (300_000, 300_000, total_batches),
        "raw readings, FINAL, batches"
    );
    let (from, to) = (ledger.min_ts_ms().unwrap(), ledger.max_ts_ms().unwrap() + 1);
    assert_eq!(s3_objects(&s3, from, to).await, total_batches);
    hot_exact(&hot_prefix, &ledger).await;

    delete_prefix(&hot_prefix).await;
    stores.clean().await;
}

/// A backfill of 300 objects (with `--hot`) is interrupted once `batches`
/// holds some of them: exit 130, the batches in flight finish (raw rows =
/// FINAL rows = the summary's rows), and the rerun inserts exactly the rest.
/// In the end: 15,000 rows raw and FINAL, 300 `batches` rows, 300 objects,
/// hot windows exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backfill_resumes_exactly() {
    let stores = ColdStores::new("resbf");
    let hot_prefix = unique("resbf-hot");
    let env = env_with_hot(&stores, &hot_prefix);
    let (s3, _ch) = sinks(&stores).await;
    let now = hot::service::now_ms();
    let (rows, ledger) = fleet(&unique("rb"), 30, 500, now - 50 * 60_000, 5_000);
    let objects = batches(&rows, 50, "gw-1");
    let n = objects.len() as u64;
    assert!(n >= 300, "{n}");
    put_batches(&s3, &objects).await;
    let (from, to) = (ledger.min_ts_ms().unwrap(), ledger.max_ts_ms().unwrap() + 1);
    assert_eq!(s3_objects(&s3, from, to).await, n);
    let (from, to) = (fmt_ms(from), fmt_ms(to));
    let args = ["backfill", "--from", &from, "--to", &to, "--hot", "--json"];

    let child = spawn(&args, &env);
    let (out, first) = interrupt_when(child, "backfill", async || {
        ch_count(&stores, "SELECT count() FROM {db}.batches").await >= 8
    })
    .await;
    assert_eq!(out.status.code(), Some(130), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", show(&out));
    assert!(
        stderr.contains("backfill: "),
        "a last progress line: {stderr}"
    );
    assert_eq!(first["interrupted"], true, "{first}");
    let inserted = first["batches_inserted"].as_u64().unwrap();
    let rows_in = first["rows_inserted"].as_u64().unwrap();
    assert!((8..n).contains(&inserted), "{first}");
    assert_eq!(rows_in, first["hot_readings"].as_u64().unwrap(), "{first}");
    assert_eq!(
        raw_counts(&stores).await,
        (rows_in, rows_in, inserted),
        "after the interruption: raw readings, FINAL, batches"
    );

    let (out, s) = run(&args, &env);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(s["interrupted"], false, "{s}");
    assert_eq!(s["already_present"], inserted, "{s}");
    assert_eq!(s["batches_inserted"], n - inserted, "{s}");
    assert_eq!(s["rows_inserted"], 15_000 - rows_in, "{s}");

    let report = stores.verify(&ledger).await;
    assert!(report.ok(), "{}", report.render());
    assert_eq!(report.clickhouse.found_readings, 15_000);
    assert_eq!(
        raw_counts(&stores).await,
        (15_000, 15_000, n),
        "raw readings, FINAL, batches"
    );
    let (from, to) = (ledger.min_ts_ms().unwrap(), ledger.max_ts_ms().unwrap() + 1);
    assert_eq!(s3_objects(&s3, from, to).await, n);
    hot_exact(&hot_prefix, &ledger).await;

    delete_prefix(&hot_prefix).await;
    stores.clean().await;
}
