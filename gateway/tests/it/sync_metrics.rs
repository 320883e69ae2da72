//! Issue 4: the reconciler's own requests to ClickHouse and S3 as metrics
//! (`thermocline_sync_store_*{store,op}`): exact counts of one run against
//! the real stores, failures against an unreachable ClickHouse, and the
//! series on a running gateway's `/metrics`.

use std::time::{Duration, Instant};

use sync::{
    metrics::{ReconcileMetrics, STORE_CLICKHOUSE, STORE_S3},
    reconcile::{Options, Reconciler},
};

use crate::{
    backfill::{clickhouse, database},
    cold::ColdStores,
    reconcile::{setup, wait_sealed, SEAL},
    support::{sim_config, unique, TestGateway},
};

/// A reconciler on `stores` (with `extra` config env) whose metrics go to
/// `registry`, as `thermocline run` builds it.
async fn reconciler(
    stores: &ColdStores,
    gw: &TestGateway,
    extra: &[(&str, &str)],
    registry: &prometheus::Registry,
) -> (Reconciler, ReconcileMetrics) {
    let mut env = stores.env.clone();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cfg = gateway::config::load_with_env(None, env)
        .unwrap()
        .validate()
        .unwrap();
    let private = prometheus::Registry::new();
    let ch = cold::clickhouse::ClickHouseSink::connect(
        cfg.cold.clickhouse,
        cold::clickhouse::ClickHouseMetrics::new(&private).unwrap(),
    )
    .unwrap();
    let s3 = cold::s3::S3Sink::connect(cfg.cold.s3, cold::s3::S3Metrics::new(&private).unwrap())
        .await
        .unwrap();
    let hot_cfg = gw.hot_config();
    let conn = hot::connect::connect(&hot_cfg.redis).unwrap();
    let keys = hot::keys::Keys::new(&hot_cfg.key_prefix);
    let metrics = ReconcileMetrics::new(registry).unwrap();
    let r = Reconciler::new(
        hot::reader::Reader::new(conn.clone(), keys.clone(), &hot_cfg.resolutions),
        hot::repair::Repairer::new(conn, keys, &hot_cfg.resolutions),
        ch,
        Some(s3),
        Some(metrics.clone()),
    );
    (r, metrics)
}

/// Every `(store, op)` pair's requests and errors, and the duration samples.
fn snapshot(m: &ReconcileMetrics) -> Vec<(&'static str, &'static str, u64, u64, u64)> {
    let s = &m.store;
    sync::metrics::CLICKHOUSE_OPS
        .iter()
        .map(|op| (STORE_CLICKHOUSE, *op))
        .chain(sync::metrics::S3_OPS.iter().map(|op| (STORE_S3, *op)))
        .map(|(store, op)| {
            (
                store,
                op,
                s.requests_of(store, op),
                s.errors_of(store, op),
                s.duration
                    .with_label_values(&[store, op])
                    .get_sample_count(),
            )
        })
        .collect()
}

fn get(snap: &[(&str, &str, u64, u64, u64)], store: &str, op: &str) -> (u64, u64, u64) {
    let (_, _, r, e, d) = snap
        .iter()
        .find(|(s, o, ..)| *s == store && *o == op)
        .unwrap();
    (*r, *e, *d)
}

/// One reconcile run over a sealed range counts exactly its requests: a
/// ping and an S3 list to check reachability, one S3 list and one
/// `batch_ids` for the batches, one `devices_in_range`, one
/// `bucket_aggregates` per resolution span (7 devices: one chunk); with
/// `batches` truncated and repair on, one S3 get and one `insert_batch` per
/// reloaded object. Against a closed ClickHouse port the failed request is
/// counted as an error. A gateway running the reconciler shows the series
/// on its `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciler_store_requests_are_counted_exactly() {
    let (broker, stores, mut gw) = setup(
        "syncmet",
        &[
            ("THERMOCLINE__SYNC__ENABLED", "true"),
            ("THERMOCLINE__SYNC__INTERVAL", "1s"),
            ("THERMOCLINE__SYNC__SEAL_DELAY", SEAL),
            ("THERMOCLINE__GATEWAY__ID", "gw-syncmet"),
        ],
    )
    .await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("sm"), 7, 5, 0))
        .await
        .unwrap();
    gw.wait_hot_done(105, Duration::from_secs(30)).await;
    stores.wait_exact(&ledger, Duration::from_secs(60)).await;
    wait_sealed(ledger.max_ts_ms().unwrap()).await;

    // The running gateway's reconciler: its series on /metrics.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = reqwest::get(format!("{}/metrics", gw.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let sample = |needle: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(needle))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let runs = sample("thermocline_reconcile_runs_total{outcome=\"ok\"}");
        let aggs = sample(
            "thermocline_sync_store_requests_total{op=\"bucket_aggregates\",store=\"clickhouse\"}",
        );
        let lists = sample("thermocline_sync_store_requests_total{op=\"list\",store=\"s3\"}");
        if runs >= 1.0 && aggs >= 1.0 && lists >= 1.0 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no reconcile run counted on /metrics:\n{}",
            text.lines()
                .filter(|l| l.contains("sync_store") || l.contains("reconcile_runs"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for needle in [
        "# HELP thermocline_sync_store_requests_total ",
        "# HELP thermocline_sync_store_errors_total ",
        "# HELP thermocline_sync_store_request_duration_seconds ",
        "thermocline_sync_store_errors_total{op=\"bucket_aggregates\",store=\"clickhouse\"} 0",
        "thermocline_sync_store_request_duration_seconds_count{op=\"list\",store=\"s3\"} ",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics");
    }

    // Exact counts of one run, on a registry of its own; the gateway (and
    // its reconciler, which would reload batches too) stopped first.
    gw.gw.take().unwrap().stop().await;
    let registry = prometheus::Registry::new();
    let (r, m) = reconciler(&stores, &gw, &[], &registry).await;
    r.check_reachable().await.unwrap();
    let opts = Options {
        from_ms: ledger.min_ts_ms().unwrap() - 60_000,
        to_ms: ledger.max_ts_ms().unwrap() + 1,
        devices: Vec::new(),
        seal_delay: Duration::ZERO,
        repair: false,
        check_batches: true,
    };
    let report = r.run(&opts, hot::service::now_ms()).await.unwrap();
    assert_eq!(report.devices, 7);
    let spans = report.spans.len() as u64;
    assert_eq!(spans, 4, "{:?}", report.spans);
    let snap = snapshot(&m);
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "ping"), (1, 0, 1));
    assert_eq!(get(&snap, STORE_S3, "list"), (2, 0, 2));
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "batch_ids"), (1, 0, 1));
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "devices_in_range"), (1, 0, 1));
    assert_eq!(
        get(&snap, STORE_CLICKHOUSE, "bucket_aggregates"),
        (spans, 0, spans)
    );
    assert_eq!(get(&snap, STORE_S3, "get"), (0, 0, 0));
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "insert_batch"), (0, 0, 0));

    // ClickHouse lost its `batches` rows: the run reloads every object.
    clickhouse(&format!("TRUNCATE TABLE {}.batches", database(&stores))).await;
    let report = r
        .run(
            &Options {
                repair: true,
                ..opts.clone()
            },
            hot::service::now_ms(),
        )
        .await
        .unwrap();
    let reloaded = report.batches.as_ref().unwrap().reloaded;
    assert!(reloaded > 0, "{report:?}");
    let snap = snapshot(&m);
    assert_eq!(get(&snap, STORE_S3, "get"), (reloaded, 0, reloaded));
    assert_eq!(
        get(&snap, STORE_CLICKHOUSE, "insert_batch"),
        (reloaded, 0, reloaded)
    );
    assert_eq!(get(&snap, STORE_S3, "list"), (3, 0, 3));
    assert_eq!(
        get(&snap, STORE_CLICKHOUSE, "bucket_aggregates"),
        (2 * spans, 0, 2 * spans)
    );
    assert!(snap.iter().all(|(.., e, _)| *e == 0), "{snap:?}");

    // ClickHouse unreachable: the failed request is an error of its op.
    let registry = prometheus::Registry::new();
    let (down, m) = reconciler(
        &stores,
        &gw,
        &[
            ("THERMOCLINE__COLD__CLICKHOUSE__URL", "http://127.0.0.1:1"),
            ("THERMOCLINE__COLD__CLICKHOUSE__MAX_ATTEMPTS", "1"),
        ],
        &registry,
    )
    .await;
    assert!(down.check_reachable().await.is_err());
    assert!(down.run(&opts, hot::service::now_ms()).await.is_err());
    let snap = snapshot(&m);
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "ping"), (1, 1, 1));
    assert_eq!(get(&snap, STORE_S3, "list"), (1, 0, 1), "the run's list");
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "batch_ids"), (1, 1, 1));
    assert_eq!(get(&snap, STORE_CLICKHOUSE, "devices_in_range"), (0, 0, 0));

    gw.stop_and_clean().await;
    stores.clean().await;
}
