//! The pipeline task's loop: replay, then live records, cuts, shipping and
//! releases (see the module above for the flow).

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use devices::{config::DevicesConfig, DeviceId};
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    config::ColdConfig,
    dedup::Dedup,
    metrics::PipelineMetrics,
    ship::{Job, Shipped, Shipper},
    Spooled,
};
use crate::{
    batcher::{decode_record, row_bytes, Batcher, Item},
    row::{SpoolPos, HOUR_MS},
    s3::DeadLetter,
    spool::{
        CutRange, MessageRecord, Part, Record, ReleaseTracker, ReplayedRecord, Spool, SpoolHandle,
        Store,
    },
    Result,
};

/// How often a replay waiting for room checks whether ingest has gone.
const CLOSED_POLL: Duration = Duration::from_millis(100);

pub(crate) struct Pipeline {
    max_inflight: usize,
    max_pending_bytes: u64,
    batcher: Batcher,
    dedup: Dedup,
    tracker: ReleaseTracker,
    devices: DevicesConfig,
    gateway: DeviceId,
    spool: SpoolHandle,
    shipper: Arc<Shipper>,
    metrics: PipelineMetrics,
    queue: VecDeque<Job>,
    inflight: JoinSet<Shipped>,
    /// Bytes of jobs queued or being shipped.
    shipping_bytes: u64,
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &ColdConfig,
        batcher: Batcher,
        tracker: ReleaseTracker,
        devices: DevicesConfig,
        gateway: DeviceId,
        spool: SpoolHandle,
        shipper: Arc<Shipper>,
        metrics: PipelineMetrics,
    ) -> Self {
        Self {
            max_inflight: cfg.max_inflight_batches,
            max_pending_bytes: cfg.max_pending_bytes,
            batcher,
            dedup: Dedup::new(cfg.dedup_window_rows),
            tracker,
            devices,
            gateway,
            spool,
            shipper,
            metrics,
            queue: VecDeque::new(),
            inflight: JoinSet::new(),
            shipping_bytes: 0,
        }
    }

    pub async fn run(
        mut self,
        spool: Spool,
        replay: mpsc::Receiver<Result<ReplayedRecord>>,
        live: mpsc::Receiver<Spooled>,
        shutdown_timeout: Duration,
    ) {
        if let Err(e) = self.work(replay, live, shutdown_timeout).await {
            self.shipper.health.spool_failed();
            tracing::error!(error = %e, "cold pipeline stopped: the spool failed; ingest stops acking");
        }
        self.inflight.abort_all();
        let unreleased =
            self.tracker.pending_ranges() + usize::from(self.batcher.pending_records() > 0);
        if let Err(e) = spool.close().await {
            tracing::error!(error = %e, "closing the spool failed");
        }
        tracing::info!(
            unreleased_ranges = unreleased,
            "cold pipeline stopped; what was not shipped is replayed on the next start"
        );
    }

    async fn work(
        &mut self,
        mut replay: mpsc::Receiver<Result<ReplayedRecord>>,
        mut live: mpsc::Receiver<Spooled>,
        shutdown_timeout: Duration,
    ) -> Result<()> {
        let (mut messages, mut cuts, mut history) = (0u64, 0u64, 0u64);
        let released = self.tracker.released();
        let mut stop_by = None;
        while let Some(r) = replay.recv().await {
            // Replay keeps to the memory bound live traffic keeps to: while
            // the decoded bytes held reach `max_pending_bytes`, wait for
            // shipping to make room before reading on (a spool filled during
            // a long outage is never decoded into memory at once).
            if self
                .wait_for_room(&live, &mut stop_by, shutdown_timeout)
                .await?
            {
                return Ok(());
            }
            let r = r?;
            match r.record {
                Record::Message(m) if r.pos < released => {
                    // Already in both stores: only teach the redelivery filter.
                    history += 1;
                    if let Item::Rows(rows) = decode_record(&self.devices, &self.gateway, r.pos, &m)
                    {
                        self.dedup.filter(rows);
                    }
                }
                Record::Message(m) => {
                    messages += 1;
                    self.push(r.pos, r.end, &m);
                }
                Record::Cut(c) => {
                    cuts += 1;
                    self.take(c.range)?;
                }
            }
            while let Some(done) = self.inflight.try_join_next() {
                self.shipped(done).await?;
            }
            self.pump();
        }
        if messages + cuts > 0 {
            tracing::info!(messages, cuts, history, "spool replayed");
        }

        let mut closed = stop_by.is_some();
        loop {
            if closed {
                // Ingest is gone: cut everything open, ship it, then stop.
                while self.batcher.pending_records() > 0 {
                    self.cut().await?;
                }
                self.pump();
                if self.inflight.is_empty() && self.queue.is_empty() {
                    tracing::info!("cold pipeline: everything shipped");
                    return Ok(());
                }
            }
            let deadline = self.batcher.deadline();
            let take = !closed && self.pending_bytes() < self.max_pending_bytes;
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next(), if !self.inflight.is_empty() => {
                    self.shipped(done).await?;
                }
                _ = sleep_until(stop_by), if stop_by.is_some() => {
                    tracing::warn!(
                        ?shutdown_timeout,
                        batches = self.inflight.len() + self.queue.len(),
                        "cold shipping did not finish within the shutdown deadline"
                    );
                    return Ok(());
                }
                msg = live.recv(), if take => match msg {
                    Some(s) => {
                        if self.push(s.pos, s.end, &s.record).is_some() {
                            self.cut().await?;
                        }
                    }
                    None => {
                        closed = true;
                        stop_by = Some(Instant::now() + shutdown_timeout);
                    }
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    if self.batcher.due(Instant::now()).is_some() {
                        self.cut().await?;
                    }
                }
            }
            self.pump();
        }
    }

    /// Waits while the bytes held are at `max_pending_bytes` and shipping can
    /// free some. Watches for ingest going away meanwhile (shutdown during
    /// replay): from then on `stop_by` bounds the wait; returns true once it
    /// has passed.
    async fn wait_for_room(
        &mut self,
        live: &mpsc::Receiver<Spooled>,
        stop_by: &mut Option<Instant>,
        shutdown_timeout: Duration,
    ) -> Result<bool> {
        while self.pending_bytes() >= self.max_pending_bytes && !self.inflight.is_empty() {
            tokio::select! {
                biased;
                Some(done) = self.inflight.join_next() => self.shipped(done).await?,
                _ = sleep_until(*stop_by), if stop_by.is_some() => {
                    tracing::warn!(
                        ?shutdown_timeout,
                        "cold shipping did not finish within the shutdown deadline (during replay)"
                    );
                    return Ok(true);
                }
                _ = tokio::time::sleep(CLOSED_POLL), if stop_by.is_none() => {
                    if live.is_closed() {
                        *stop_by = Some(Instant::now() + shutdown_timeout);
                    }
                }
            }
            self.pump();
        }
        Ok(false)
    }

    fn pending_bytes(&self) -> u64 {
        let b = self.batcher.open_size().1 + self.shipping_bytes;
        self.metrics.pending_bytes.set(b as i64);
        b
    }

    /// Decodes a message record (as ingest did, with its receive time as now)
    /// and adds it to the batcher; returns whether a cut is due.
    fn push(&mut self, pos: SpoolPos, end: SpoolPos, m: &MessageRecord) -> Option<()> {
        let item = match decode_record(&self.devices, &self.gateway, pos, m) {
            Item::Rows(rows) => {
                let before = self.dedup.dropped();
                let rows = self.dedup.filter(rows);
                self.metrics
                    .redeliveries_dropped
                    .inc_by(self.dedup.dropped() - before);
                Item::Rows(rows)
            }
            rejected => rejected,
        };
        self.batcher
            .push(pos, end, item, Instant::now())
            .map(|_| ())
    }

    /// Cuts the open part, makes its marker durable, then takes and queues it.
    async fn cut(&mut self) -> Result<()> {
        let Some(range) = self.batcher.cut() else {
            return Ok(());
        };
        let (_, ticket) = self.spool.append_cut(range).await?;
        ticket.wait().await?;
        self.take(range)
    }

    /// Splits a cut range into jobs and registers what must be delivered.
    fn take(&mut self, range: CutRange) -> Result<()> {
        let out = self.batcher.take(range)?;
        let deliveries = out.deliveries();
        let nothing_to_deliver = deliveries.is_empty();
        if !self.tracker.track(range, deliveries) {
            // Already released (a replayed marker of a shipped range).
            return Ok(());
        }
        for batch in out.batches {
            let bytes = batch.rows.iter().map(row_bytes).sum();
            self.shipping_bytes += bytes;
            self.metrics.batches_pending.inc();
            tracing::debug!(batch = %batch.id, rows = batch.rows.len(), "batch cut");
            self.queue.push_back(Job::Batch {
                first: range.first,
                batch,
                bytes,
            });
        }
        if let Some(first) = out.dead_letters.first() {
            let hour_start_ms = first.received_at_ms.div_euclid(HOUR_MS) * HOUR_MS;
            let items: Vec<DeadLetter> = out
                .dead_letters
                .into_iter()
                .map(|d| DeadLetter {
                    topic: d.topic,
                    payload: d.payload,
                    reason: d.reason,
                    detail: d.detail,
                    received_at_ms: d.received_at_ms,
                })
                .collect();
            let bytes = items
                .iter()
                .map(|d| (d.topic.len() + d.payload.len() + d.detail.len() + 64) as u64)
                .sum();
            self.shipping_bytes += bytes;
            self.queue.push_back(Job::DeadLetters {
                first: range.first,
                hour_start_ms,
                items,
                bytes,
            });
        }
        // A range with nothing to deliver (every reading a redelivery) is done
        // at once; a no-op delivery moves the watermark past it.
        if nothing_to_deliver {
            if let Some(w) = self
                .tracker
                .delivered(range.first, Part::DeadLetters, Store::S3)
            {
                self.release_later(w);
            }
        }
        Ok(())
    }

    /// Starts queued jobs up to the in-flight bound.
    fn pump(&mut self) {
        while self.inflight.len() < self.max_inflight {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            self.inflight.spawn(self.shipper.clone().ship(job));
        }
    }

    async fn shipped(
        &mut self,
        done: std::result::Result<Shipped, tokio::task::JoinError>,
    ) -> Result<()> {
        let s = match done {
            Ok(s) => s,
            Err(e) => {
                // Shipping catches panics (see `ship`): this is a cancelled task.
                tracing::error!(error = %e, "a shipping task ended early; its range stays in the spool");
                return Ok(());
            }
        };
        self.shipping_bytes = self.shipping_bytes.saturating_sub(s.bytes);
        if matches!(s.part, Part::Batch(_)) {
            self.metrics.batches_shipped.inc();
            self.metrics.batches_pending.dec();
        }
        let mut watermark = None;
        for store in s.stores {
            if let Some(w) = self.tracker.delivered(s.first, s.part.clone(), *store) {
                watermark = Some(w);
            }
        }
        if let Some(w) = watermark {
            self.spool.release_through(w).await?;
        }
        Ok(())
    }

    /// Releases from a synchronous context (the watermark only grows, so a
    /// late or repeated release is harmless).
    fn release_later(&self, w: SpoolPos) {
        let spool = self.spool.clone();
        tokio::spawn(async move {
            if let Err(e) = spool.release_through(w).await {
                tracing::error!(error = %e, "spool release failed");
            }
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
