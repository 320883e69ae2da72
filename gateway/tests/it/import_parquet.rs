//! Issue 4: `thermocline import FILE.parquet`, a file in the gateway's own
//! batch schema (written here with `cold::parquet::encode`, the cold path's
//! writer), against the real ClickHouse, S3 and Redis.

use cold::row::{Batch, BatchId};

use crate::{
    backfill::{env_with_hot, hot_reader, run, show},
    cold::ColdStores,
    fixtures::{delete_prefix, fleet, raw_counts, s3_objects, sinks},
    support::unique,
};

/// 30,000 valid rows of 20 devices over the last 90 minutes (three chunks of
/// 10,000 rows, over two or three event hours) plus two bad rows (a NaN at
/// row 7, a timestamp an hour ahead at row 25,001): the valid rows land in
/// ClickHouse (`FINAL` and raw: none twice) and S3 (one object per batch,
/// no reading in two) exactly once and in the hot windows; the bad rows are
/// reported by number and reason with exit status 1. Reruns, with the
/// checkpoint and without, write nothing and leave every count as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_import_lands_exactly_once_and_reruns_change_nothing() {
    let stores = ColdStores::new("impq");
    let hot_prefix = unique("impq-hot");
    let env = env_with_hot(&stores, &hot_prefix);
    let (s3, _ch) = sinks(&stores).await;
    let now = hot::service::now_ms();
    let first_ts = now - 90 * 60_000;
    let (mut rows, ledger) = fleet(&unique("impq"), 20, 1_500, first_ts, 3_500);
    assert_eq!(ledger.total_readings(), 30_000);
    let mut nan = rows[0].clone();
    nan.value = f64::NAN;
    rows.insert(6, nan);
    let mut future = rows[0].clone();
    future.ts_ms = now + 3_600_000;
    rows.insert(25_000, future);
    let file = Batch {
        id: BatchId::parse("offline-export").unwrap(),
        hour_start_ms: 0,
        rows,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("offline.parquet");
    std::fs::write(&path, cold::parquet::encode(&file).unwrap()).unwrap();
    let path = path.to_str().unwrap();

    let (out, s) = run(&["import", path, "--json"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(s["lines"], 30_002, "{s}");
    assert_eq!(s["lines_done"], 30_002, "{s}");
    assert_eq!(s["rows"], 30_000, "{s}");
    assert_eq!(s["hot_readings"], 30_000, "{s}");
    assert_eq!(s["bad_lines"], 2, "{s}");
    let bad: Vec<(u64, String)> = s["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["line"].as_u64().unwrap(),
                b["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(bad.len(), 2, "{s}");
    assert_eq!(bad[0].0, 7, "{s}");
    assert!(bad[0].1.starts_with("non_finite"), "{s}");
    assert_eq!(bad[1].0, 25_001, "{s}");
    assert!(bad[1].1.starts_with("future_timestamp"), "{s}");
    let batches = s["batches_written"].as_u64().unwrap();
    // Three chunks × the event hours each spans: at least one batch each.
    assert!((3..=9).contains(&batches), "{s}");

    let (from, to) = (ledger.min_ts_ms().unwrap(), ledger.max_ts_ms().unwrap() + 1);
    let check = |what: &'static str| {
        let (stores, ledger, s3, hot_prefix) = (&stores, &ledger, &s3, &hot_prefix);
        async move {
            let report = stores.verify(ledger).await;
            assert!(report.ok(), "{what}: {}", report.render());
            assert_eq!(report.clickhouse.found_readings, 30_000, "{what}");
            assert_eq!(report.s3.found_readings, 30_000, "{what}");
            assert_eq!(report.s3_duplicates, 0, "{what}");
            assert_eq!(
                raw_counts(stores).await,
                (30_000, 30_000, batches),
                "{what}: raw readings, readings FINAL, batches rows"
            );
            assert_eq!(s3_objects(s3, from, to).await, batches, "{what}");
            let hot =
                sync::verify::verify_hot(&hot_reader(hot_prefix), ledger, hot::service::now_ms())
                    .await
                    .unwrap();
            assert!(hot.ok(), "{what}: {}", hot.render());
            // 10 s windows keep an hour: the first readings are past it.
            assert_eq!(hot.skipped_resolutions, ["10s"], "{what}");
        }
    };
    check("first import").await;

    // Rerun with the checkpoint: nothing to do.
    let (out, s) = run(&["import", path, "--json"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(s["rows_this_run"], 0, "{s}");
    assert_eq!(s["batches_written_this_run"], 0, "{s}");
    check("rerun with checkpoint").await;

    // Rerun without it: every batch is found in ClickHouse and skipped.
    std::fs::remove_file(sync::import::default_checkpoint(std::path::Path::new(path))).unwrap();
    let (out, s) = run(&["import", path, "--json"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(s["rows_this_run"], 0, "{s}");
    assert_eq!(s["batches_written"], 0, "{s}");
    assert_eq!(s["batches_present"], batches, "{s}");
    assert_eq!(s["hot_readings"], 0, "{s}");
    check("rerun without checkpoint").await;

    // A truncated Parquet file is refused as a whole, not half imported.
    let bytes = std::fs::read(path).unwrap();
    let broken = dir.path().join("broken.parquet");
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let (out, _) = run(&["import", broken.to_str().unwrap()], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a gateway Parquet file"),
        "{}",
        show(&out)
    );
    assert!(!err.contains("panicked"), "{}", show(&out));
    check("after a broken file").await;

    delete_prefix(&hot_prefix).await;
    stores.clean().await;
}
