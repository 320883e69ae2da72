//! The reconciler inside `thermocline run`: a run every `sync.interval`, by
//! one gateway at a time.
//!
//! Only the holder of the Redis lease `{prefix}:reconcile:lease` runs. Each
//! tick, a gateway takes the lease if nobody holds it (`SET NX PX`) or renews
//! it if it does, for twice the interval; another gateway's lease is left to
//! expire, so when the holder stops, another takes over within two intervals.
//! Two runs overlapping (a run longer than the lease) would be harmless: each
//! repair is a compare-and-set of one bucket to the same ClickHouse answer,
//! and reloading a batch is idempotent.
//!
//! A run is skipped (outcome `skipped`) while `ready` says the local cold
//! path is failing to reach its stores: its readings are then not in
//! ClickHouse, and sealed buckets would look wrong in Redis.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Options, Reconciler};
use crate::{config::SyncConfig, metrics::ReconcileMetrics, timearg::now_ms};

/// Starts the loop; it ends when `shutdown` is cancelled (a run in progress
/// is dropped: every repair is atomic on its own, so stopping between two is safe).
pub fn spawn(
    reconciler: Reconciler,
    cfg: SyncConfig,
    holder: String,
    metrics: ReconcileMetrics,
    ready: Box<dyn Fn() -> bool + Send + Sync>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tracing::info!(
            interval = %humantime::format_duration(cfg.interval),
            lookback = %humantime::format_duration(cfg.lookback),
            seal_delay = %humantime::format_duration(cfg.seal_delay),
            "reconciler started"
        );
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(cfg.interval) => {}
            }
            if !ready() {
                metrics.runs.with_label_values(&["skipped"]).inc();
                tracing::info!("reconcile: skipped, the cold path is not reaching its stores");
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tick(&reconciler, &cfg, &holder, &metrics) => {}
            }
        }
    })
}

async fn tick(reconciler: &Reconciler, cfg: &SyncConfig, holder: &str, metrics: &ReconcileMetrics) {
    let lease = reconciler
        .repairer()
        .acquire_lease(holder, lease_ttl(cfg.interval))
        .await;
    match lease {
        Ok(true) => {}
        Ok(false) => {
            metrics.runs.with_label_values(&["not_leader"]).inc();
            tracing::debug!("reconcile: another gateway holds the lease");
            return;
        }
        Err(e) => {
            metrics.runs.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, "reconcile: cannot take the lease");
            return;
        }
    }
    let started = Instant::now();
    let now = now_ms();
    let opts = Options {
        from_ms: now - cfg.lookback.as_millis() as i64,
        to_ms: now,
        devices: Vec::new(),
        seal_delay: cfg.seal_delay,
        repair: true,
        check_batches: cfg.reload_batches,
    };
    let outcome = reconciler.run(&opts, now).await;
    metrics
        .last_run_duration
        .set(started.elapsed().as_secs_f64());
    metrics.last_run_timestamp.set(now_ms() as f64 / 1000.0);
    match outcome {
        Ok(r) => {
            metrics.runs.with_label_values(&["ok"]).inc();
            let reloaded = r.batches.as_ref().map_or(0, |b| b.reloaded);
            if r.total_differences() > 0 || reloaded > 0 {
                tracing::info!(
                    buckets_checked = r.buckets_checked,
                    differences = r.total_differences(),
                    repaired = r.total_repaired(),
                    conflicts = r.conflicts,
                    batches_reloaded = reloaded,
                    "reconcile: repaired the hot store from ClickHouse"
                );
            } else {
                tracing::debug!(
                    buckets_checked = r.buckets_checked,
                    "reconcile: hot store agrees"
                );
            }
        }
        Err(e) => {
            metrics.runs.with_label_values(&["error"]).inc();
            tracing::warn!(error = %e, "reconcile run failed");
        }
    }
}

/// The lease lasts this long past each run's start.
pub fn lease_ttl(interval: Duration) -> Duration {
    interval * 2
}
