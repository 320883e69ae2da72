//! Shipping one job (a batch, or a range's dead letters) to the stores, with
//! retries that never give up, and the health `/readyz` reports.
//!
//! A batch goes to S3 first, then to ClickHouse (whose `batches` row names the
//! S3 key). Each store call already retries a few times inside its sink; on
//! top of that a failed call is retried after a capped exponential backoff
//! until it succeeds or shutdown aborts the job (the range then stays in the
//! spool and is replayed on the next start). Both writes are idempotent: the
//! same batch lands on the same S3 key, and ClickHouse collapses the rows.
//!
//! Two exceptions keep one bad batch from stalling the spool's release
//! watermark (and so, once the spool fills, ingest):
//! - a store that refuses the batch's data for good ([`Error::is_permanent`]:
//!   a poison row, a table whose columns conflict) gets no more tries: the
//!   batch is set aside in S3 under `rejected/` with the reason, counted in
//!   `thermocline_cold_batches_rejected_total{store}`, and its range counts as
//!   shipped. A store that refuses the *gateway* (down, read-only,
//!   credentials) is waited for as before;
//! - a panic in an attempt is caught and the job retried (counted in
//!   `thermocline_cold_ship_panics_total`), never dropped with its range.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use devices::DeviceId;
use futures_util::FutureExt;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::OnceCell;

use super::metrics::PipelineMetrics;
use crate::{
    clickhouse::{Backoff, ClickHouseSink},
    row::{Batch, SpoolPos},
    s3::{DeadLetter, RejectedBatch, S3Sink},
    spool::{Part, SpoolHandle, Store},
    Error, Result,
};

/// One unit of shipping work.
pub(crate) enum Job {
    Batch {
        first: SpoolPos,
        batch: Batch,
        bytes: u64,
    },
    DeadLetters {
        first: SpoolPos,
        hour_start_ms: i64,
        items: Vec<DeadLetter>,
        bytes: u64,
    },
}

/// A finished job: what each store now holds.
pub(crate) struct Shipped {
    pub first: SpoolPos,
    pub part: Part,
    pub stores: &'static [Store],
    pub bytes: u64,
}

/// One store's last outcome.
#[derive(Debug, Clone, Default)]
struct StoreState {
    last_error: Option<String>,
}

/// What the cold path tells `/readyz`.
pub struct ColdHealth {
    spool_failed: AtomicBool,
    appends_waiting: IntGauge,
    spool: SpoolHandle,
    s3: Mutex<StoreState>,
    clickhouse: Mutex<StoreState>,
    s3_endpoint: String,
}

/// A snapshot of [`ColdHealth`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct HealthReport {
    /// The spool accepts appends (no I/O failure).
    pub spool: bool,
    /// The spool is at its bound: ingest waits and the broker holds messages.
    pub spool_full: bool,
    pub spool_bytes: u64,
    /// The S3 endpoint the pipeline talks to (`aws` when none is configured).
    pub s3_endpoint: String,
    /// The last S3 request of the pipeline (or the start probe) succeeded.
    pub s3: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_error: Option<String>,
    pub clickhouse: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clickhouse_error: Option<String>,
}

impl ColdHealth {
    pub(crate) fn new(spool: SpoolHandle, appends_waiting: IntGauge, s3_endpoint: String) -> Self {
        Self {
            spool_failed: AtomicBool::new(false),
            appends_waiting,
            spool,
            s3: Mutex::default(),
            clickhouse: Mutex::default(),
            s3_endpoint,
        }
    }

    fn store(&self, store: Store) -> std::sync::MutexGuard<'_, StoreState> {
        let m = match store {
            Store::S3 => &self.s3,
            Store::ClickHouse => &self.clickhouse,
        };
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, store: Store, error: Option<String>) {
        self.store(store).last_error = error;
    }

    pub(crate) fn spool_failed(&self) {
        self.spool_failed.store(true, Ordering::Relaxed);
    }

    pub fn report(&self) -> HealthReport {
        let s3_error = self.store(Store::S3).last_error.clone();
        let clickhouse_error = self.store(Store::ClickHouse).last_error.clone();
        HealthReport {
            spool: !self.spool_failed.load(Ordering::Relaxed),
            spool_full: self.appends_waiting.get() > 0,
            spool_bytes: self.spool.used_bytes(),
            s3_endpoint: self.s3_endpoint.clone(),
            s3: s3_error.is_none(),
            s3_error,
            clickhouse: clickhouse_error.is_none(),
            clickhouse_error,
        }
    }
}

/// Everything a shipping task needs; shared by all of them.
pub(crate) struct Shipper {
    pub s3: S3Sink,
    pub clickhouse: ClickHouseSink,
    pub gateway: DeviceId,
    pub health: Arc<ColdHealth>,
    pub metrics: PipelineMetrics,
    pub backoff: Backoff,
    bucket_ready: OnceCell<()>,
    schema_ready: OnceCell<()>,
}

impl Shipper {
    pub fn new(
        s3: S3Sink,
        clickhouse: ClickHouseSink,
        gateway: DeviceId,
        health: Arc<ColdHealth>,
        metrics: PipelineMetrics,
        backoff: Backoff,
    ) -> Self {
        Self {
            s3,
            clickhouse,
            gateway,
            health,
            metrics,
            backoff,
            bucket_ready: OnceCell::new(),
            schema_ready: OnceCell::new(),
        }
    }

    /// Checks once, at start, that S3 answers and the bucket is usable (and
    /// creates it, as the first batch would). Failure is one error line naming
    /// the endpoint and the `s3_error` of `/readyz`; shipping retries as ever.
    pub async fn probe_s3(&self) {
        let cfg = self.s3.config();
        let endpoint = self.health.s3_endpoint.clone();
        match self
            .bucket_ready
            .get_or_try_init(|| self.s3.ensure_bucket())
            .await
        {
            Ok(()) => {
                tracing::info!(%endpoint, bucket = %cfg.bucket, "cold path: S3 reachable");
            }
            Err(e) => {
                let msg = format!("cannot reach S3 at {endpoint} (bucket {}): {e}", cfg.bucket);
                tracing::error!(
                    "cold path: {msg}; batches stay in the spool and are retried (set cold.s3.endpoint, e.g. --config config/local.toml)"
                );
                self.health.set(Store::S3, Some(msg));
            }
        }
    }

    /// Ships `job` to every store it needs; returns only once they hold it
    /// (or hold the batch set aside as rejected). A panic inside an attempt is
    /// caught, counted and the job tried again after a backoff, so its spool
    /// range is never leaked (dropped unshipped and never released).
    pub async fn ship(self: Arc<Self>, job: Job) -> Shipped {
        until_no_panic(&self.metrics.ship_panics, &self.backoff, || {
            self.ship_once(&job)
        })
        .await
    }

    async fn ship_once(&self, job: &Job) -> Shipped {
        match job {
            Job::Batch {
                first,
                batch,
                bytes,
            } => {
                let shipped = Shipped {
                    first: *first,
                    part: Part::Batch(batch.id.clone()),
                    stores: &[Store::S3, Store::ClickHouse],
                    bytes: *bytes,
                };
                let key = match self
                    .until_done(Store::S3, || async {
                        self.bucket_ready
                            .get_or_try_init(|| self.s3.ensure_bucket())
                            .await?;
                        self.s3.put_batch(batch).await
                    })
                    .await
                {
                    Ok(key) => key,
                    Err(e) => {
                        // S3 holds nothing of it: the rows go into the rejected object.
                        self.reject(batch, Store::S3, &e, None).await;
                        return shipped;
                    }
                };
                let inserted = self
                    .until_done(Store::ClickHouse, || async {
                        self.schema_ready
                            .get_or_try_init(|| self.clickhouse.ensure_schema())
                            .await?;
                        self.clickhouse.insert_batch(batch, &key).await
                    })
                    .await;
                if let Err(e) = inserted {
                    self.reject(batch, Store::ClickHouse, &e, Some(key)).await;
                }
                shipped
            }
            Job::DeadLetters {
                first,
                hour_start_ms,
                items,
                bytes,
            } => {
                let id = format!("{:016x}-{:016x}", first.segment, first.offset);
                let stored = self
                    .until_done(Store::S3, || async {
                        self.bucket_ready
                            .get_or_try_init(|| self.s3.ensure_bucket())
                            .await?;
                        self.s3
                            .put_dead_letters(&self.gateway, *hour_start_ms, &id, items)
                            .await
                    })
                    .await;
                match stored {
                    Ok(key) => tracing::debug!(key, count = items.len(), "dead letters stored"),
                    // Cannot happen (the id is well-formed, NDJSON always
                    // encodes); were it to, holding the range would stall the
                    // spool for messages that are already rejected.
                    Err(e) => tracing::error!(
                        error = %e,
                        count = items.len(),
                        "dead letters could not be stored; they are dropped"
                    ),
                }
                Shipped {
                    first: *first,
                    part: Part::DeadLetters,
                    stores: &[Store::S3],
                    bytes: *bytes,
                }
            }
        }
    }

    /// Sets a batch `store` refused for good aside in S3 (`rejected/`), with
    /// the reason, and counts it; the caller then releases its range.
    async fn reject(&self, batch: &Batch, store: Store, e: &Error, s3_key: Option<String>) {
        self.metrics
            .batches_rejected
            .with_label_values(&[store.as_str()])
            .inc();
        let rejected = RejectedBatch::new(batch, store.as_str(), e.to_string(), s3_key, now_ms());
        tracing::error!(
            batch = %batch.id,
            store = store.as_str(),
            rows = batch.rows.len(),
            error = %e,
            "a store refused a batch for good; it is set aside under rejected/ in S3"
        );
        let stored = self
            .until_done(Store::S3, || async {
                self.bucket_ready
                    .get_or_try_init(|| self.s3.ensure_bucket())
                    .await?;
                self.s3.put_rejected_batch(&rejected).await
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(batch = %batch.id, error = %e, "the rejected batch could not be stored; its rows are dropped");
        }
    }

    /// Runs `op` until it succeeds or fails with a [permanent](Error::is_permanent)
    /// error, sleeping a capped, jittered backoff between other failures and
    /// keeping the store's health current.
    async fn until_done<T, F, Fut>(&self, store: Store, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Ok(v) => {
                    if attempt > 0 {
                        tracing::info!(store = store.as_str(), attempt, "cold store back");
                    }
                    self.health.set(store, None);
                    return Ok(v);
                }
                Err(e) if e.is_permanent() => {
                    // The store answered: it is up, it refuses this data.
                    self.health.set(store, None);
                    return Err(e);
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    self.health.set(store, Some(e.to_string()));
                    self.metrics
                        .ship_retries
                        .with_label_values(&[store.as_str()])
                        .inc();
                    let delay = self.backoff.delay(attempt, &mut rand::rng());
                    if e.is_retriable() {
                        tracing::warn!(store = store.as_str(), attempt, retry_in = ?delay, error = %e, "cold shipping failed; will retry");
                    } else {
                        // Credentials, permissions, a read-only or overloaded
                        // server: waits for the store or its config to be fixed.
                        tracing::error!(store = store.as_str(), attempt, retry_in = ?delay, error = %e, "cold store refuses the gateway; will retry until it is fixed");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// Runs `attempt` until one completes without panicking, counting each panic
/// in `panics` and sleeping `backoff` between them.
async fn until_no_panic<T, F, Fut>(panics: &IntCounter, backoff: &Backoff, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut n = 0u32;
    loop {
        match AssertUnwindSafe(attempt()).catch_unwind().await {
            Ok(v) => return v,
            Err(panic) => {
                n = n.saturating_add(1);
                panics.inc();
                let delay = backoff.delay(n, &mut rand::rng());
                tracing::error!(
                    panic = panic_message(&*panic),
                    attempt = n,
                    retry_in = ?delay,
                    "cold shipping panicked; the job is kept and retried"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The text of a panic payload (`panic!` with a literal or a formatted string).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicU32, time::Duration};

    use super::*;

    /// Issue 12: a shipping attempt that panics is retried with the same job
    /// (and counted) instead of ending the task and leaking its range.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_attempt_is_counted_and_retried_until_it_completes() {
        let panics = IntCounter::new("p", "p").unwrap();
        let backoff = Backoff {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: u32::MAX,
        };
        let job = [1u8, 2, 3];
        let calls = AtomicU32::new(0);
        let out = until_no_panic(&panics, &backoff, || async {
            if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                panic!("store client bug");
            }
            job.len()
        })
        .await;
        assert_eq!(out, 3);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(panics.get(), 2);
    }
}
