//! The cold pipeline: spooled messages → batches → S3 and ClickHouse →
//! spool release. One task, started by [`ColdPath::start`].
//!
//! # Flow
//!
//! 1. **Ingest** ([`ColdIngest::spool`]) appends each raw message to the spool
//!    and hands (position, record) to this task through a bounded channel. It
//!    gets a [`DurableTicket`] back and acks the broker once it resolves.
//! 2. **Replay first.** On start the records the spool kept (from the released
//!    watermark on) are fed to the batcher before anything from the channel;
//!    each replayed cut marker reproduces its range, so the same [`BatchId`]s
//!    and S3 keys come out and a re-shipped batch overwrites rather than adds.
//! 3. **Cut** on rows, bytes or age ([`Batcher`]): the cut marker is appended
//!    and must be durable before the range is taken and shipped (so a range
//!    that reached a store is always cut at the same place after a crash).
//! 4. **Ship** each batch (S3, then ClickHouse) and each range's dead letters
//!    (S3), at most `max_inflight_batches` at a time, retrying forever while
//!    a store is unavailable; a batch a store refuses for good is set aside
//!    under `rejected/` in S3 instead (see [`ship`]).
//! 5. **Release**: each store's acknowledgement goes to the [`ReleaseTracker`];
//!    when a contiguous prefix of ranges is held by both stores the spool is
//!    released through it and its segments deleted.
//!
//! # Bounds
//!
//! The channel (`channel_capacity`), the shipping concurrency, and the decoded
//! bytes held in memory (`max_pending_bytes`): past that the task stops
//! reading the channel and ingest waits. Replay keeps to the same bound: it
//! reads the next record only once shipping has freed room, and watches for
//! shutdown meanwhile. The messages between two cut markers (ingest spools
//! ahead of the pipeline by at most the channel's capacity, plus one batch)
//! replay into one open part that must be held whole, since the marker names
//! its batch: replay holds at most `max_pending_bytes` plus that. The spool's own bound
//! (`cold.spool.max_size`) stops ingest when a store outage lasts long enough;
//! the broker then holds the messages. While neither bound is reached, a store
//! outage does not slow ingest or the hot path.
//!
//! Redeliveries of readings already spooled are dropped ([`dedup`]) so that S3
//! never holds a reading twice.
//!
//! [`BatchId`]: crate::row::BatchId
//! [`DurableTicket`]: crate::spool::DurableTicket

pub mod config;
mod dedup;
pub mod metrics;
mod run;
mod ship;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use devices::{config::DevicesConfig, DeviceId};
use prometheus::Registry;
use tokio::sync::mpsc;

pub use self::{
    config::{ColdConfig, RawColdConfig},
    metrics::PipelineMetrics,
    ship::{ColdHealth, HealthReport},
};
use self::{run::Pipeline, ship::Shipper};
use crate::{
    batcher::Batcher,
    clickhouse::{Backoff, ClickHouseMetrics, ClickHouseSink},
    row::SpoolPos,
    s3::{S3Metrics, S3Sink},
    spool::{
        DurableTicket, DurableWatch, MessageRecord, Record, ReleaseTracker, Spool, SpoolHandle,
        SpoolMetrics,
    },
    Error, Result,
};

/// A spooled message on its way to the pipeline.
#[derive(Debug)]
pub(crate) struct Spooled {
    pos: SpoolPos,
    end: SpoolPos,
    record: MessageRecord,
}

/// Ingest's side of the cold path. Dropping it (every clone) tells the
/// pipeline that no more messages come: it cuts and ships what it holds.
#[derive(Clone)]
pub struct ColdIngest {
    spool: SpoolHandle,
    tx: mpsc::Sender<Spooled>,
}

impl ColdIngest {
    /// Appends a raw message to the spool (waiting while the spool is full)
    /// and hands it to the pipeline (waiting while the pipeline is behind).
    /// Ack the broker once the returned ticket resolves.
    pub async fn spool(
        &self,
        received_at_ms: i64,
        topic: &str,
        payload: &Bytes,
    ) -> Result<DurableTicket> {
        let record = MessageRecord {
            received_at_ms,
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: payload.clone(),
        };
        let (pos, ticket) = self.spool.append(&Record::Message(record.clone())).await?;
        let end = ticket.end();
        self.tx
            .send(Spooled { pos, end, record })
            .await
            .map_err(|_| Error::PipelineStopped)?;
        Ok(ticket)
    }

    /// A watch on the spool's durable end, for acking many records at once.
    pub fn durable_watch(&self) -> DurableWatch {
        self.spool.durable_watch()
    }
}

/// The running cold pipeline.
pub struct ColdPath {
    pub health: Arc<ColdHealth>,
    task: tokio::task::JoinHandle<()>,
}

impl ColdPath {
    /// Opens the spool (replaying what it holds), builds both sinks and starts
    /// the pipeline task. The start does not wait on a store: an unreachable
    /// store delays shipping, never the start. A background probe checks S3
    /// once and, if it cannot be reached, says so in one error line and in
    /// [`ColdHealth`] (naming the endpoint).
    ///
    /// `shutdown_timeout` bounds the final shipping once ingest is gone.
    pub async fn start(
        cfg: ColdConfig,
        gateway: DeviceId,
        devices: DevicesConfig,
        registry: &Registry,
        shutdown_timeout: Duration,
    ) -> Result<(Self, ColdIngest)> {
        let spool_metrics = SpoolMetrics::new(registry)?;
        let s3_metrics = S3Metrics::new(registry)?;
        let ch_metrics = ClickHouseMetrics::new(registry)?;
        let metrics = PipelineMetrics::new(registry)?;
        let appends_waiting = spool_metrics.appends_waiting.clone();
        let spool_cfg = cfg.spool.clone();
        let opened = tokio::task::spawn_blocking(move || Spool::open(spool_cfg, spool_metrics))
            .await
            .map_err(|e| Error::Io {
                path: cfg.spool.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let r = &opened.report;
        tracing::info!(
            dir = %cfg.spool.dir.display(),
            segments = r.segments,
            replay_messages = r.messages,
            replay_cuts = r.markers,
            torn_tail_bytes = r.torn_tail_bytes,
            bytes = r.bytes,
            "spool opened"
        );
        let s3 = S3Sink::connect(cfg.s3.clone(), s3_metrics).await?;
        let clickhouse = ClickHouseSink::connect(cfg.clickhouse.clone(), ch_metrics)?;
        let spool = opened.spool;
        let handle = spool.handle();
        let s3_endpoint = s3.config().endpoint.clone().unwrap_or_else(|| "aws".into());
        let health = Arc::new(ColdHealth::new(
            handle.clone(),
            appends_waiting,
            s3_endpoint,
        ));
        let shipper = Arc::new(Shipper::new(
            s3,
            clickhouse,
            gateway.clone(),
            health.clone(),
            metrics.clone(),
            Backoff {
                min_delay: cfg.retry_min_delay,
                max_delay: cfg.retry_max_delay,
                max_attempts: u32::MAX,
            },
        ));

        let probe = shipper.clone();

        // Replay reads segment files (blocking I/O) on its own thread.
        let (replay_tx, replay_rx) = mpsc::channel(1024);
        let replay = opened.replay.with_history();
        tokio::task::spawn_blocking(move || {
            for r in replay {
                if replay_tx.blocking_send(r).is_err() {
                    break;
                }
            }
        });

        let (tx, rx) = mpsc::channel(cfg.channel_capacity);
        let seed = gateway
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        let pipeline = Pipeline::new(
            &cfg,
            Batcher::new(cfg.batch, gateway.clone(), seed),
            ReleaseTracker::new(opened.report.released),
            devices,
            gateway,
            handle.clone(),
            shipper,
            metrics,
        );
        // Not awaited: an unreachable S3 must not delay the start, only say so.
        tokio::spawn(async move { probe.probe_s3().await });
        let task = tokio::spawn(pipeline.run(spool, replay_rx, rx, shutdown_timeout));
        Ok((Self { health, task }, ColdIngest { spool: handle, tx }))
    }

    /// Waits for the pipeline to finish (after every [`ColdIngest`] is dropped):
    /// it cuts and ships what it holds within its shutdown deadline, then
    /// closes the spool.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "cold pipeline task failed");
        }
    }
}
