//! `thermocline backfill`: put back into ClickHouse what S3 holds.
//!
//! S3 is the most complete store (a batch reaches it first), so after a
//! ClickHouse loss or truncation the Parquet objects are the source:
//!
//! 1. list the batch objects whose event hour overlaps `[from, to)`
//!    ([`S3Sink::list_batches`]); the unit of work is an object (a batch of
//!    one event hour), so the edge hours are restored whole;
//! 2. ask ClickHouse which of those batch ids `batches` already holds (one
//!    query over the range's whole hours);
//! 3. for every other object: read it back, `insert_batch` it under its own
//!    id and key (readings first, then the `batches` row, as the gateway
//!    does). A rerun finds them in `batches` and inserts nothing; a rerun
//!    after an interruption resumes where it stopped: the `batches` table is
//!    the checkpoint, and a batch cut off half way is sent again, its rows
//!    collapsing in `readings` (ReplacingMergeTree).
//!
//! `--device ID` restores only that device's rows of the missing batches,
//! recorded in `batches` under `{batch id}+{device}`, so a later full
//! backfill still sees the batch as missing and restores the rest.
//!
//! Hot windows: only with `--hot` are the restored rows merged into the
//! Redis buckets still within retention. Merging adds: use it only when
//! Redis lost those windows too (the common case, a ClickHouse-only loss,
//! leaves Redis right). `thermocline reconcile --repair` over the same range
//! rebuilds buckets from ClickHouse idempotently.

use std::{collections::HashSet, sync::Arc};

use cold::{
    clickhouse::ClickHouseSink,
    row::{Batch, BatchId, HOUR_MS},
    s3::S3Sink,
};
use devices::DeviceId;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{hotload::HotLoader, progress::Progress, Error, Result};

/// Objects read and inserted at the same time.
const CONCURRENCY: usize = 4;

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub from_ms: i64,
    pub to_ms: i64,
    pub device: Option<DeviceId>,
    pub dry_run: bool,
}

/// What a backfill did (or, dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillSummary {
    pub from_ms: i64,
    pub to_ms: i64,
    pub dry_run: bool,
    /// Batch objects in S3 overlapping the range.
    pub objects: u64,
    /// Of those, already in ClickHouse `batches`.
    pub already_present: u64,
    /// Batches inserted (dry run: that would be).
    pub batches_inserted: u64,
    /// Rows inserted into `readings` (dry run: 0, objects are not read).
    pub rows_inserted: u64,
    /// Objects whose key is not a batch object name (skipped).
    pub foreign_objects: u64,
    /// Rows merged into hot windows (`--hot`), and rows too old for them.
    pub hot_readings: u64,
    pub hot_expired: u64,
    /// Stopped by Ctrl-C before the end; a rerun resumes.
    pub interrupted: bool,
}

impl BackfillSummary {
    pub fn render(&self) -> String {
        let verb = if self.dry_run {
            "would insert"
        } else {
            "inserted"
        };
        let mut s = format!(
            "backfill {} .. {}: {} batch objects in S3, {} already in ClickHouse, {verb} {} batches ({} rows)",
            crate::timearg::fmt_ms(self.from_ms),
            crate::timearg::fmt_ms(self.to_ms),
            self.objects,
            self.already_present,
            self.batches_inserted,
            self.rows_inserted,
        );
        if self.foreign_objects > 0 {
            s += &format!(
                ", {} objects not named like batches skipped",
                self.foreign_objects
            );
        }
        if self.hot_readings + self.hot_expired > 0 {
            s += &format!(
                "; hot windows: {} readings merged, {} past retention",
                self.hot_readings, self.hot_expired
            );
        }
        if self.interrupted {
            s += "; INTERRUPTED: rerun the same command to resume";
        }
        s
    }
}

/// Checks that both stores answer (a clear error before any work).
pub async fn check_stores(s3: &S3Sink, ch: &ClickHouseSink) -> Result<()> {
    ch.ping().await.map_err(|e| Error::Unreachable {
        store: "clickhouse",
        source: Box::new(e.into()),
    })?;
    s3.list_batches(0..1)
        .await
        .map_err(|e| Error::Unreachable {
            store: "s3",
            source: Box::new(e.into()),
        })?;
    Ok(())
}

/// Runs a backfill; stops between objects once `stop` is cancelled.
pub async fn backfill(
    s3: &S3Sink,
    ch: &ClickHouseSink,
    hot: Option<&HotLoader>,
    opts: &BackfillOptions,
    progress: &dyn Progress,
    stop: &CancellationToken,
) -> Result<BackfillSummary> {
    if opts.from_ms >= opts.to_ms {
        return Err(Error::Range(format!(
            "[{}, {}) is empty or reversed",
            opts.from_ms, opts.to_ms
        )));
    }
    let mut summary = BackfillSummary {
        from_ms: opts.from_ms,
        to_ms: opts.to_ms,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    check_stores(s3, ch).await?;
    if !opts.dry_run {
        ch.ensure_schema().await?;
    }
    let keys = s3.list_batches(opts.from_ms..opts.to_ms).await?;
    summary.objects = keys.len() as u64;
    // Every batch lies in one event hour: the whole hours around the range
    // find every batch record of a listed object.
    let first_hour = opts.from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let last_hour_end = (opts.to_ms - 1).div_euclid(HOUR_MS) * HOUR_MS + HOUR_MS;
    let present: HashSet<String> = ch
        .batch_ids(first_hour, last_hour_end - 1)
        .await?
        .into_iter()
        .collect();

    let mut todo = Vec::new();
    for key in keys {
        let Some(id) = BatchId::from_key(&key) else {
            summary.foreign_objects += 1;
            continue;
        };
        let stored_id = match &opts.device {
            None => id.as_str().to_string(),
            Some(d) => format!("{id}+{d}"),
        };
        if present.contains(id.as_str()) || present.contains(&stored_id) {
            summary.already_present += 1;
            continue;
        }
        todo.push((key, id, stored_id));
    }
    progress.set_total(todo.len() as u64);
    tracing::info!(
        objects = summary.objects,
        present = summary.already_present,
        missing = todo.len(),
        "backfill: listed"
    );
    if opts.dry_run {
        summary.batches_inserted = todo.len() as u64;
        progress.finish();
        return Ok(summary);
    }

    let now_ms = hot::service::now_ms();
    let device = Arc::new(opts.device.clone());
    let mut tasks = JoinSet::new();
    let mut pending = todo.into_iter();
    let result: Result<()> = loop {
        while tasks.len() < CONCURRENCY && !stop.is_cancelled() {
            let Some((key, id, stored_id)) = pending.next() else {
                break;
            };
            let (s3, ch, hot, device) = (s3.clone(), ch.clone(), hot.cloned(), device.clone());
            tasks.spawn(async move {
                restore(&s3, &ch, hot.as_ref(), &key, id, stored_id, &device, now_ms).await
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break Ok(());
        };
        match joined {
            Ok(Ok(done)) => {
                summary.batches_inserted += u64::from(done.inserted);
                summary.rows_inserted += done.rows;
                summary.hot_readings += done.hot.readings;
                summary.hot_expired += done.hot.expired;
                progress.advance(1, done.rows);
            }
            Ok(Err(e)) => break Err(e),
            Err(e) => break Err(Error::Ledger(format!("backfill task failed: {e}"))),
        }
    };
    // On an error, let the objects in flight finish (each is idempotent anyway).
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Ok(done)) = joined {
            summary.batches_inserted += u64::from(done.inserted);
            summary.rows_inserted += done.rows;
            summary.hot_readings += done.hot.readings;
            summary.hot_expired += done.hot.expired;
            progress.advance(1, done.rows);
        }
    }
    progress.finish();
    result?;
    summary.interrupted = stop.is_cancelled() && pending.next().is_some();
    Ok(summary)
}

struct Restored {
    /// False when `--device` found none of its rows in the object.
    inserted: bool,
    rows: u64,
    hot: crate::hotload::Loaded,
}

#[allow(clippy::too_many_arguments)]
async fn restore(
    s3: &S3Sink,
    ch: &ClickHouseSink,
    hot: Option<&HotLoader>,
    key: &str,
    id: BatchId,
    stored_id: String,
    device: &Option<DeviceId>,
    now_ms: i64,
) -> Result<Restored> {
    let mut rows = s3.get_batch(key).await?;
    if let Some(d) = device {
        rows.retain(|r| &r.device_id == d);
    }
    if rows.is_empty() && device.is_some() {
        // Nothing of this device here; record nothing either.
        return Ok(Restored {
            inserted: false,
            rows: 0,
            hot: Default::default(),
        });
    }
    // The id ends with the event hour's index (see `BatchId::new`); an empty
    // batch has no row to take it from.
    let hour_start_ms = match (rows.first(), id.as_str().rsplit('-').next()) {
        (Some(r), _) => r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS,
        (None, Some(h)) => {
            h.parse::<i64>().map_err(|_| Error::Input {
                path: key.into(),
                line: None,
                reason: "empty batch object whose id names no hour".into(),
            })? * HOUR_MS
        }
        (None, None) => 0,
    };
    let batch = Batch {
        id: BatchId::parse(&stored_id).unwrap_or(id),
        hour_start_ms,
        rows,
    };
    ch.insert_batch(&batch, key).await?;
    let hot = match hot {
        Some(h) => h.load(&batch.rows, now_ms).await?,
        None => Default::default(),
    };
    tracing::debug!(key, rows = batch.rows.len(), "backfill: batch restored");
    Ok(Restored {
        inserted: true,
        rows: batch.rows.len() as u64,
        hot,
    })
}
