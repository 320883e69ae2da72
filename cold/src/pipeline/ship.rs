//! Shipping one job (a batch, or a range's dead letters) to the stores, with
//! retries that never give up, and the health `/readyz` reports.
//!
//! A batch goes to S3 first, then to ClickHouse (whose `batches` row names the
//! S3 key). Each store call already retries a few times inside its sink; on
//! top of that a failed call is retried after a capped exponential backoff
//! until it succeeds or shutdown aborts the job (the range then stays in the
//! spool and is replayed on the next start). Both writes are idempotent: the
//! same batch lands on the same S3 key, and ClickHouse collapses the rows.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use devices::DeviceId;
use prometheus::IntGauge;
use tokio::sync::OnceCell;

use super::metrics::PipelineMetrics;
use crate::{
    clickhouse::{Backoff, ClickHouseSink},
    row::{Batch, SpoolPos},
    s3::{DeadLetter, S3Sink},
    spool::{Part, SpoolHandle, Store},
    Result,
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

    /// Ships `job` to every store it needs; returns only once they hold it.
    pub async fn ship(self: Arc<Self>, job: Job) -> Shipped {
        match job {
            Job::Batch {
                first,
                batch,
                bytes,
            } => {
                let key = self
                    .forever(Store::S3, || async {
                        self.bucket_ready
                            .get_or_try_init(|| self.s3.ensure_bucket())
                            .await?;
                        self.s3.put_batch(&batch).await
                    })
                    .await;
                self.forever(Store::ClickHouse, || async {
                    self.schema_ready
                        .get_or_try_init(|| self.clickhouse.ensure_schema())
                        .await?;
                    self.clickhouse.insert_batch(&batch, &key).await
                })
                .await;
                Shipped {
                    first,
                    part: Part::Batch(batch.id),
                    stores: &[Store::S3, Store::ClickHouse],
                    bytes,
                }
            }
            Job::DeadLetters {
                first,
                hour_start_ms,
                items,
                bytes,
            } => {
                let id = format!("{:016x}-{:016x}", first.segment, first.offset);
                let key = self
                    .forever(Store::S3, || async {
                        self.bucket_ready
                            .get_or_try_init(|| self.s3.ensure_bucket())
                            .await?;
                        self.s3
                            .put_dead_letters(&self.gateway, hour_start_ms, &id, &items)
                            .await
                    })
                    .await;
                tracing::debug!(key, count = items.len(), "dead letters stored");
                Shipped {
                    first,
                    part: Part::DeadLetters,
                    stores: &[Store::S3],
                    bytes,
                }
            }
        }
    }

    /// Runs `op` until it succeeds, sleeping a capped, jittered backoff
    /// between failures and keeping the store's health current.
    async fn forever<T, F, Fut>(&self, store: Store, mut op: F) -> T
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
                    return v;
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    self.health.set(store, Some(e.to_string()));
                    self.metrics
                        .ship_retries
                        .with_label_values(&[store.as_str()])
                        .inc();
                    let delay = self.backoff.delay(attempt, &mut rand::rng());
                    tracing::warn!(store = store.as_str(), attempt, retry_in = ?delay, error = %e, "cold shipping failed; will retry");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
