//! The reconciler: cold storage is the truth once a bucket is sealed, and the
//! hot windows are made to agree with it.
//!
//! A run over `[from, to)`:
//!
//! 1. **Batches** (when an S3 sink is given): the `batches` table against the
//!    S3 listing for the range's hours; a batch in S3 but not in ClickHouse is
//!    loaded from its Parquet object ([`batches`]), so ClickHouse is complete
//!    before the buckets are compared.
//! 2. **Plan** ([`plan`]): per resolution, the buckets that overlap the range,
//!    are still retained and are *sealed* (their end is `seal_delay` old; with
//!    a zero delay, every bucket begun by now).
//! 3. **Devices**: those given, else every device with readings in ClickHouse
//!    in the planned range plus every device of the Redis fleet index seen
//!    since its start (the only way to find a device that is *only* in Redis).
//! 4. **Compare**, 64 devices at a time: one ClickHouse query per resolution
//!    aggregates `readings FINAL` per device, metric and bucket; one Redis
//!    pipeline per device and resolution reads the bucket hashes whole. Each
//!    (bucket, metric) present on either side is classified ([`diff`]).
//! 5. **Repair** (when asked): one atomic script call per differing bucket
//!    hash replaces the differing metrics' fields with ClickHouse's aggregate
//!    or deletes them ([`hot::repair`]); each is a compare-and-set against
//!    what was read, so a flush that landed meanwhile is not undone (it is
//!    counted as a conflict and looked at again next run). Unsealed buckets
//!    are never touched. A repair that writes a bucket also raises the
//!    device's latest view (value, ts and `seen`, to the bucket's last event
//!    time) and its score in the fleet index, never lowering either: after a
//!    rebuild the active-devices API lists the devices again.
//!
//! The seal delay is the assumption everything rests on: by the time a bucket
//! is sealed, every reading of it has reached ClickHouse. A cold path that
//! lags further (a ClickHouse outage with the spool filling) makes sealed
//! buckets look "extra in Redis"; the default (twice the batch age) suits a
//! healthy pipeline, and `sync.seal_delay` should be raised where outages are
//! expected to last.

pub mod batches;
pub mod diff;
pub mod plan;
pub mod service;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use cold::{
    clickhouse::{ClickHouseSink, DeviceFilter},
    s3::S3Sink,
};
use devices::{DeviceId, MetricName};
use hot::{
    reader::Reader,
    repair::{Expect, MetricRepair, Repairer, Stored},
    window::{Agg, Resolution},
};
use serde::Serialize;

use crate::{
    metrics::{observe, ReconcileMetrics, StoreMetrics, STORE_CLICKHOUSE, STORE_S3},
    timearg::fmt_ms,
    Error, Result,
};
pub use batches::BatchReport;
pub use diff::{classify, Class};
pub use plan::{plan, Span};

/// Devices compared together (one ClickHouse query per resolution).
const DEVICES_PER_CHUNK: usize = 64;
/// Differences kept as examples in a report.
const MAX_EXAMPLES: usize = 50;
/// Devices read from the Redis fleet index at most.
const MAX_FLEET_DEVICES: usize = 10_000_000;

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only these devices; empty: every device found.
    pub devices: Vec<DeviceId>,
    pub seal_delay: Duration,
    /// Rewrite differing buckets and reload missing batches; otherwise only report.
    pub repair: bool,
    /// Compare `batches` with S3 (needs an S3 sink).
    pub check_batches: bool,
}

/// A bucket's aggregate as reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub last_ts_ms: i64,
}

impl From<&Agg> for Figures {
    fn from(a: &Agg) -> Self {
        Self {
            count: a.count,
            sum: a.sum,
            min: a.min,
            max: a.max,
            last: a.last,
            last_ts_ms: a.last_ts_ms,
        }
    }
}

/// One difference found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub device_id: String,
    pub metric: String,
    pub resolution: String,
    pub bucket_start: String,
    pub bucket_start_ms: i64,
    pub class: Class,
    /// ClickHouse's aggregate (none: no reading in the bucket).
    pub clickhouse: Option<Figures>,
    /// Redis's (none: absent; also none with `class` values_differ when corrupt).
    pub redis: Option<Figures>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub seal_delay: String,
    pub repair: bool,
    pub spans: Vec<Span>,
    /// Resolutions with no sealed, retained bucket in the range.
    pub skipped_resolutions: Vec<String>,
    pub devices: u64,
    /// (bucket, metric) pairs present in ClickHouse or Redis.
    pub buckets_checked: u64,
    /// By class.
    pub differences: BTreeMap<Class, u64>,
    pub repaired: BTreeMap<Class, u64>,
    /// Repairs skipped because the hot path wrote the bucket meanwhile.
    pub conflicts: u64,
    /// Metrics found in Redis whose name does not parse (not repairable).
    pub unrepairable: u64,
    pub batches: Option<BatchReport>,
    /// Up to 50 differences.
    pub examples: Vec<Difference>,
    pub duration_ms: u64,
}

impl Report {
    pub fn total_differences(&self) -> u64 {
        self.differences.values().sum()
    }

    pub fn total_repaired(&self) -> u64 {
        self.repaired.values().sum()
    }

    /// Whether the hot store agrees with ClickHouse after this run: nothing
    /// differed, or everything that did was repaired, and no batch is missing
    /// from ClickHouse.
    pub fn consistent(&self) -> bool {
        let batches_ok = self
            .batches
            .as_ref()
            .is_none_or(|b| b.missing_in_clickhouse.len() as u64 == b.reloaded);
        batches_ok && self.total_differences() == self.total_repaired()
    }

    /// Plain text for `thermocline reconcile`.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "reconcile {} .. {} (seal delay {}){}",
            self.from,
            self.to,
            self.seal_delay,
            if self.repair { ", repair" } else { "" }
        );
        for sp in &self.spans {
            let _ = writeln!(
                s,
                "  {:>5}: {} buckets from {} to {}",
                sp.resolution,
                sp.buckets(),
                fmt_ms(sp.start_ms),
                fmt_ms(sp.end_ms)
            );
        }
        if !self.skipped_resolutions.is_empty() {
            let _ = writeln!(
                s,
                "  skipped (nothing sealed and retained in range): {}",
                self.skipped_resolutions.join(", ")
            );
        }
        if let Some(b) = &self.batches {
            let _ = writeln!(
                s,
                "batches: {} in S3, {} missing in ClickHouse, {} reloaded",
                b.s3_batches,
                b.missing_in_clickhouse.len(),
                b.reloaded
            );
            for k in b.missing_in_clickhouse.iter().take(20) {
                let _ = writeln!(s, "  MISSING IN CLICKHOUSE {k}");
            }
        }
        let _ = writeln!(
            s,
            "devices {}, buckets checked {}",
            self.devices, self.buckets_checked
        );
        for c in Class::ALL {
            let _ = writeln!(
                s,
                "  {:<17} {:>8} found {:>8} repaired",
                c.as_str(),
                self.differences.get(&c).unwrap_or(&0),
                self.repaired.get(&c).unwrap_or(&0)
            );
        }
        if self.conflicts > 0 {
            let _ = writeln!(
                s,
                "  {} repairs skipped: the hot path wrote the bucket meanwhile (next run)",
                self.conflicts
            );
        }
        for d in self.examples.iter().take(20) {
            let fig = |f: &Option<Figures>| {
                f.map_or("-".to_string(), |f| {
                    format!(
                        "count {} sum {} min {} max {} last {}@{}",
                        f.count, f.sum, f.min, f.max, f.last, f.last_ts_ms
                    )
                })
            };
            let _ = writeln!(
                s,
                "  {} {} {} {} {}: clickhouse [{}] redis [{}]",
                d.class.as_str().to_uppercase(),
                d.device_id,
                d.metric,
                d.resolution,
                d.bucket_start,
                fig(&d.clickhouse),
                fig(&d.redis)
            );
        }
        let _ = writeln!(
            s,
            "{} ({} ms)",
            if self.total_differences() == 0 && self.consistent() {
                "OK: Redis agrees with ClickHouse"
            } else if self.consistent() {
                "REPAIRED: Redis now agrees with ClickHouse"
            } else if self.repair {
                "DIFFERENCES REMAIN"
            } else {
                "DIFFERENCES FOUND (run with --repair to fix)"
            },
            self.duration_ms
        );
        s
    }
}

/// The stores a run works on.
#[derive(Clone)]
pub struct Reconciler {
    reader: Reader,
    repairer: Repairer,
    ch: ClickHouseSink,
    s3: Option<S3Sink>,
    resolutions: Vec<Resolution>,
    metrics: Option<ReconcileMetrics>,
}

impl Reconciler {
    pub fn new(
        reader: Reader,
        repairer: Repairer,
        ch: ClickHouseSink,
        s3: Option<S3Sink>,
        metrics: Option<ReconcileMetrics>,
    ) -> Self {
        let resolutions = reader.resolutions().to_vec();
        Self {
            reader,
            repairer,
            ch,
            s3,
            resolutions,
            metrics,
        }
    }

    pub fn repairer(&self) -> &Repairer {
        &self.repairer
    }

    /// Where the run's store requests are counted, if anywhere.
    fn store(&self) -> Option<&StoreMetrics> {
        self.metrics.as_ref().map(|m| &m.store)
    }

    /// One round trip to each store, each failure naming the store.
    pub async fn check_reachable(&self) -> Result<()> {
        self.repairer.ping().await.map_err(|e| Error::Unreachable {
            store: "redis",
            source: Box::new(e.into()),
        })?;
        observe(self.store(), STORE_CLICKHOUSE, "ping", self.ch.ping())
            .await
            .map_err(|e| Error::Unreachable {
                store: "clickhouse",
                source: Box::new(e.into()),
            })?;
        if let Some(s3) = &self.s3 {
            // One ListObjectsV2 of an empty hour: reaches the bucket, reads nothing.
            observe(self.store(), STORE_S3, "list", s3.list_batches(0..1))
                .await
                .map_err(|e| Error::Unreachable {
                    store: "s3",
                    source: Box::new(e.into()),
                })?;
        }
        Ok(())
    }

    /// One run; see the module docs.
    pub async fn run(&self, opts: &Options, now_ms: i64) -> Result<Report> {
        let started = Instant::now();
        if opts.from_ms >= opts.to_ms {
            return Err(Error::Arg(format!(
                "empty or reversed range: {} is not before {}",
                fmt_ms(opts.from_ms),
                fmt_ms(opts.to_ms)
            )));
        }
        let seal_ms = opts.seal_delay.as_millis() as i64;
        let (spans, skipped) = plan(&self.resolutions, opts.from_ms, opts.to_ms, seal_ms, now_ms)?;
        let mut report = Report {
            from: fmt_ms(opts.from_ms),
            to: fmt_ms(opts.to_ms),
            seal_delay: humantime::format_duration(opts.seal_delay).to_string(),
            repair: opts.repair,
            skipped_resolutions: skipped,
            ..Default::default()
        };

        // 1. Batches first, so ClickHouse is complete before comparing.
        let sealed_to = if seal_ms == 0 {
            opts.to_ms.min(now_ms + 1)
        } else {
            opts.to_ms.min(now_ms - seal_ms)
        };
        if let (true, Some(s3)) = (opts.check_batches, &self.s3) {
            if opts.from_ms < sealed_to {
                let b = batches::check_batches(
                    &self.ch,
                    s3,
                    self.store(),
                    opts.from_ms,
                    sealed_to,
                    opts.repair,
                )
                .await?;
                if let Some(m) = &self.metrics {
                    m.batches_reloaded.inc_by(b.reloaded);
                }
                report.batches = Some(b);
            }
        }

        if !spans.is_empty() {
            let lo = spans.iter().map(|s| s.start_ms).min().unwrap_or(0);
            let hi = spans.iter().map(|s| s.end_ms).max().unwrap_or(0);
            let devices = self.devices(opts, lo, hi).await?;
            report.devices = devices.len() as u64;
            for chunk in devices.chunks(DEVICES_PER_CHUNK) {
                for span in &spans {
                    self.compare_chunk(chunk, span, opts.repair, now_ms, &mut report)
                        .await?;
                }
            }
        }
        report.spans = spans;
        report.duration_ms = started.elapsed().as_millis() as u64;
        if let Some(m) = &self.metrics {
            m.buckets_checked.inc_by(report.buckets_checked);
            for (c, n) in &report.repaired {
                m.buckets_repaired
                    .with_label_values(&[c.as_str()])
                    .inc_by(*n);
            }
            m.repair_conflicts.inc_by(report.conflicts);
        }
        Ok(report)
    }

    /// The devices to compare over bucket starts `[lo, hi)`.
    async fn devices(&self, opts: &Options, lo: i64, hi: i64) -> Result<Vec<DeviceId>> {
        if !opts.devices.is_empty() {
            let set: BTreeSet<DeviceId> = opts.devices.iter().cloned().collect();
            return Ok(set.into_iter().collect());
        }
        let mut set = BTreeSet::new();
        let in_range = observe(
            self.store(),
            STORE_CLICKHOUSE,
            "devices_in_range",
            self.ch.devices_in_range(lo, hi),
        )
        .await?;
        for d in in_range {
            match DeviceId::parse(&d) {
                Ok(id) => {
                    set.insert(id);
                }
                Err(r) => {
                    tracing::warn!(device = d, reason = %r, "reconcile: ClickHouse device id does not parse; skipped")
                }
            }
        }
        for (d, _) in self.reader.active_devices(lo, MAX_FLEET_DEVICES).await? {
            if let Ok(id) = DeviceId::parse(&d) {
                set.insert(id);
            }
        }
        Ok(set.into_iter().collect())
    }

    async fn compare_chunk(
        &self,
        chunk: &[DeviceId],
        span: &Span,
        repair: bool,
        now_ms: i64,
        report: &mut Report,
    ) -> Result<()> {
        let ids: Vec<&str> = chunk.iter().map(DeviceId::as_str).collect();
        let rows = observe(
            self.store(),
            STORE_CLICKHOUSE,
            "bucket_aggregates",
            self.ch.fleet_bucket_aggregates(
                DeviceFilter::Devices(&ids),
                span.res.width_ms,
                span.start_ms,
                span.end_ms,
            ),
        )
        .await?;
        // device → (start, metric) → agg
        let mut cold: HashMap<String, BTreeMap<(i64, String), Agg>> = HashMap::new();
        for r in rows {
            cold.entry(r.device_id).or_default().insert(
                (r.bucket_start_ms, r.metric),
                Agg {
                    count: r.count,
                    sum: r.sum,
                    min: r.min,
                    max: r.max,
                    last: r.last,
                    last_ts_ms: r.last_ts_ms,
                },
            );
        }
        let starts = span.starts();
        let mut reads = tokio::task::JoinSet::new();
        for dev in chunk {
            let (repairer, dev, res, starts) = (
                self.repairer.clone(),
                dev.clone(),
                span.res.clone(),
                starts.clone(),
            );
            reads.spawn(async move {
                let hot = repairer.read_buckets(&dev, &res, &starts).await;
                (dev, hot)
            });
        }
        let mut hot_by_dev = HashMap::new();
        while let Some(j) = reads.join_next().await {
            let (dev, hot) = j.map_err(|e| Error::Arg(format!("reconcile task failed: {e}")))?;
            hot_by_dev.insert(dev, hot?);
        }
        let mut restored_seen = Vec::new();
        for dev in chunk {
            let cold = cold.remove(dev.as_str()).unwrap_or_default();
            let mut hot: BTreeMap<(i64, String), Stored> = BTreeMap::new();
            for b in hot_by_dev.remove(dev).unwrap_or_default() {
                for (m, s) in b.metrics {
                    hot.insert((b.start_ms, m), s);
                }
            }
            let keys: BTreeSet<&(i64, String)> = cold.keys().chain(hot.keys()).collect();
            let mut fixes: BTreeMap<i64, Vec<(Class, MetricRepair)>> = BTreeMap::new();
            for key in keys {
                report.buckets_checked += 1;
                let (c, h) = (cold.get(key), hot.get(key));
                let Some(class) = classify(c, h) else {
                    continue;
                };
                *report.differences.entry(class).or_default() += 1;
                if report.examples.len() < MAX_EXAMPLES {
                    report.examples.push(Difference {
                        device_id: dev.to_string(),
                        metric: key.1.clone(),
                        resolution: span.resolution.clone(),
                        bucket_start: fmt_ms(key.0),
                        bucket_start_ms: key.0,
                        class,
                        clickhouse: c.map(Figures::from),
                        redis: match h {
                            Some(Stored::Agg(a)) => Some(Figures::from(a)),
                            _ => None,
                        },
                    });
                }
                if !repair {
                    continue;
                }
                let Ok(metric) = MetricName::parse(&key.1) else {
                    report.unrepairable += 1;
                    continue;
                };
                let expect = match h {
                    None => Expect::Absent,
                    Some(Stored::Agg(a)) => Expect::Agg(*a),
                    Some(Stored::Corrupt) => Expect::Any,
                };
                fixes.entry(key.0).or_default().push((
                    class,
                    MetricRepair {
                        metric,
                        expect,
                        value: c.copied(),
                    },
                ));
            }
            let mut newest_restored: Option<i64> = None;
            for (start, entries) in fixes {
                let (classes, repairs): (Vec<Class>, Vec<MetricRepair>) =
                    entries.into_iter().unzip();
                let applied = self
                    .repairer
                    .repair_bucket(dev, &span.res, start, &repairs, now_ms)
                    .await?;
                for ((class, ok), r) in classes.into_iter().zip(applied).zip(&repairs) {
                    if ok {
                        *report.repaired.entry(class).or_default() += 1;
                        if let Some(v) = r.value {
                            newest_restored = newest_restored.max(Some(v.last_ts_ms));
                        }
                    } else {
                        report.conflicts += 1;
                    }
                }
            }
            if let Some(ts) = newest_restored {
                restored_seen.push((dev.clone(), ts));
            }
        }
        // The bucket script raised each device's latest view and `seen`; the
        // fleet index is another slot's key, raised here (ZADD GT: a device
        // that published meanwhile keeps its newer score).
        self.repairer.index_devices(&restored_seen).await?;
        Ok(())
    }
}
