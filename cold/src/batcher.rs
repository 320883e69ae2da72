//! When to cut a batch, and what a cut range becomes. Pure logic: no I/O, the
//! clock is passed in.
//!
//! Records come in spool order ([`Batcher::push`]), decoded with
//! [`decode_record`] into rows or a dead letter. The *open* part (records not
//! yet in a cut range) is due for a cut when it holds `max_rows` rows (a
//! rejected message counts as one), `max_bytes` estimated bytes, or when its
//! oldest record was pushed `max_age ± age_jitter` ago (jitter drawn per batch
//! from a seeded RNG, so gateways started together do not cut in lockstep, and
//! tests are deterministic). [`Batcher::cut`] freezes a prefix of the open part
//! as a [`CutRange`] (rows/bytes cuts stop at the record that reaches the
//! limit; one message is never split, so a range may pass the limit by one
//! message). The caller appends the range's cut marker to the spool and, once
//! it is durable, calls [`Batcher::take`], which splits the range into one
//! [`Batch`] per event hour plus its dead letters.
//!
//! # Stability across restarts
//!
//! On replay the caller feeds the replayed messages and calls `take` for each
//! replayed cut marker, and does not call `cut` until the replay has ended. So:
//!
//! - every range whose marker was durable is cut at exactly the same records
//!   again: same rows, same [`BatchId`]s (gateway, first position, hour), same
//!   S3 keys; only such ranges are ever shipped;
//! - the records after the last durable marker start the next range at the same
//!   first position as before the crash, but where that range ends (and so
//!   which hours it covers) depends on the new run's timing; nothing from it
//!   was shipped before, so no id is reused for other rows.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::Bytes;
use bytesize::ByteSize;
use devices::{config::DevicesConfig, DeviceId, RejectReason, Rejection};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{
    row::{Batch, BatchId, ColdRow, SpoolPos, HOUR_MS},
    spool::{CutRange, Delivery, MessageRecord, Part, Store},
    Error, Result,
};

/// The `[cold.batch]` section as written in the config file.
///
/// ```toml
/// [cold.batch]
/// max_rows = 100000
/// max_bytes = "64MiB"
/// max_age = "5s"
/// age_jitter = "500ms"   # each batch's age limit is max_age ± up to this
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBatchConfig {
    pub max_rows: usize,
    pub max_bytes: ByteSize,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub age_jitter: Duration,
}

impl Default for RawBatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: ByteSize::mib(64),
            max_age: Duration::from_secs(5),
            age_jitter: Duration::from_millis(500),
        }
    }
}

impl RawBatchConfig {
    /// Validates into a [`BatchConfig`]; errors name the full key (`cold.batch.…`).
    pub fn validate(self) -> Result<BatchConfig> {
        let err = |key: &str, reason: String| Error::Config {
            key: format!("cold.batch.{key}"),
            reason,
        };
        if !(1..=10_000_000).contains(&self.max_rows) {
            return Err(err(
                "max_rows",
                format!("{} is out of range 1..=10000000", self.max_rows),
            ));
        }
        if !(1..=(1 << 32)).contains(&self.max_bytes.as_u64()) {
            return Err(err(
                "max_bytes",
                format!("{} is out of range 1 B..=4 GiB", self.max_bytes),
            ));
        }
        if self.max_age.is_zero() || self.max_age > Duration::from_secs(3600) {
            return Err(err(
                "max_age",
                format!("{:?} is out of range: 1ms..=1h", self.max_age),
            ));
        }
        if self.age_jitter >= self.max_age {
            return Err(err(
                "age_jitter",
                format!("{:?} must be less than cold.batch.max_age", self.age_jitter),
            ));
        }
        Ok(BatchConfig {
            max_rows: self.max_rows,
            max_bytes: self.max_bytes.as_u64(),
            max_age: self.max_age,
            age_jitter: self.age_jitter,
        })
    }
}

/// The validated `[cold.batch]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    pub max_rows: usize,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub age_jitter: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        RawBatchConfig::default()
            .validate()
            .expect("the built-in [cold.batch] defaults are valid")
    }
}

/// A rejected message, kept raw for the dead-letter store.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub pos: SpoolPos,
    pub received_at_ms: i64,
    /// The topic, lossily UTF-8.
    pub topic: String,
    pub payload: Bytes,
    pub reason: RejectReason,
    pub detail: String,
}

/// A decoded message record.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Rows(Vec<ColdRow>),
    Rejected(DeadLetter),
}

/// Decodes a spooled message exactly as at ingest: `now_ms` is its
/// `received_at_ms`, so the result is the same on every replay. The payload of
/// a dead letter is copied (it must not pin a whole replayed segment).
pub fn decode_record(
    devices: &DevicesConfig,
    gateway: &DeviceId,
    pos: SpoolPos,
    rec: &MessageRecord,
) -> Item {
    let at = rec.received_at_ms;
    let result = match std::str::from_utf8(&rec.topic) {
        Ok(topic) => devices::decode::decode(devices, topic, &rec.payload, at),
        Err(_) => Err(Rejection::new(
            RejectReason::InvalidTopic,
            "topic is not UTF-8",
        )),
    };
    match result {
        Ok(m) => Item::Rows(
            m.readings
                .iter()
                .map(|r| ColdRow::new(r, gateway, at))
                .collect(),
        ),
        Err(rej) => Item::Rejected(DeadLetter {
            pos,
            received_at_ms: at,
            topic: String::from_utf8_lossy(&rec.topic).into_owned(),
            payload: Bytes::copy_from_slice(&rec.payload),
            reason: rej.reason,
            detail: rej.detail,
        }),
    }
}

/// Estimated in-memory bytes of a row (what `max_bytes` counts).
pub fn row_bytes(row: &ColdRow) -> u64 {
    (std::mem::size_of::<ColdRow>()
        + row.device_id.as_str().len()
        + row.metric.as_str().len()
        + row.gateway_id.as_str().len()) as u64
}

fn item_cost(item: &Item) -> (usize, u64) {
    match item {
        Item::Rows(rows) => (rows.len(), rows.iter().map(row_bytes).sum()),
        Item::Rejected(d) => (
            1,
            (std::mem::size_of::<DeadLetter>() + d.topic.len() + d.payload.len() + d.detail.len())
                as u64,
        ),
    }
}

/// Why a cut is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    Rows,
    Bytes,
    Age,
}

impl CutReason {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::Bytes => "bytes",
            Self::Age => "age",
        }
    }
}

/// What a cut range becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct CutOutput {
    pub range: CutRange,
    /// One batch per event hour, in hour order; rows in spool order.
    pub batches: Vec<Batch>,
    /// Rejected messages of the range, in spool order.
    pub dead_letters: Vec<DeadLetter>,
    /// Message records in the range.
    pub messages: usize,
}

impl CutOutput {
    /// What must be acknowledged before the range is released: every batch by
    /// S3 and ClickHouse, the dead letters (if any) by S3.
    pub fn deliveries(&self) -> Vec<Delivery> {
        let mut out: Vec<_> = self
            .batches
            .iter()
            .flat_map(|b| {
                [Store::S3, Store::ClickHouse].map(|store| Delivery {
                    part: Part::Batch(b.id.clone()),
                    store,
                })
            })
            .collect();
        if !self.dead_letters.is_empty() {
            out.push(Delivery {
                part: Part::DeadLetters,
                store: Store::S3,
            });
        }
        out
    }
}

#[derive(Debug)]
struct Entry {
    pos: SpoolPos,
    end: SpoolPos,
    pushed_at: Instant,
    item: Item,
    rows: usize,
    bytes: u64,
}

/// The batch-cutting policy and the records pending in memory.
#[derive(Debug)]
pub struct Batcher {
    cfg: BatchConfig,
    gateway: DeviceId,
    rng: StdRng,
    entries: VecDeque<Entry>,
    /// `entries[..cut_len]` are in ranges already cut, awaiting `take`.
    cut_len: usize,
    open_rows: usize,
    open_bytes: u64,
    /// When the open part is due by age.
    deadline: Option<Instant>,
}

impl Batcher {
    /// `seed` drives the age jitter (use e.g. a hash of the gateway id; fixed in tests).
    pub fn new(cfg: BatchConfig, gateway: DeviceId, seed: u64) -> Self {
        Self {
            cfg,
            gateway,
            rng: StdRng::seed_from_u64(seed),
            entries: VecDeque::new(),
            cut_len: 0,
            open_rows: 0,
            open_bytes: 0,
            deadline: None,
        }
    }

    /// Adds a message record (`end` is the position just past it); records
    /// must come in spool order. Returns why a cut is due, if it is.
    pub fn push(
        &mut self,
        pos: SpoolPos,
        end: SpoolPos,
        item: Item,
        now: Instant,
    ) -> Option<CutReason> {
        debug_assert!(
            self.entries.back().is_none_or(|e| e.end <= pos),
            "records out of order"
        );
        let (rows, bytes) = item_cost(&item);
        self.entries.push_back(Entry {
            pos,
            end,
            pushed_at: now,
            item,
            rows,
            bytes,
        });
        self.open_rows += rows;
        self.open_bytes += bytes;
        if self.entries.len() == self.cut_len + 1 {
            self.reset_deadline();
        }
        self.due(now)
    }

    /// Why the open part is due for a cut at `now`, if it is.
    pub fn due(&self, now: Instant) -> Option<CutReason> {
        if self.entries.len() == self.cut_len {
            None
        } else if self.open_rows >= self.cfg.max_rows {
            Some(CutReason::Rows)
        } else if self.open_bytes >= self.cfg.max_bytes {
            Some(CutReason::Bytes)
        } else if self.deadline.is_some_and(|d| d <= now) {
            Some(CutReason::Age)
        } else {
            None
        }
    }

    /// When the open part becomes due by age (sleep until then).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Rows and estimated bytes not yet in a cut range.
    pub fn open_size(&self) -> (usize, u64) {
        (self.open_rows, self.open_bytes)
    }

    /// Message records held (cut or not).
    pub fn pending_records(&self) -> usize {
        self.entries.len()
    }

    /// Cuts the open part's prefix up to the row/byte limits (at least one
    /// record). `None` when nothing is open.
    pub fn cut(&mut self) -> Option<CutRange> {
        let first = self.entries.get(self.cut_len)?.pos;
        let (mut rows, mut bytes) = (0usize, 0u64);
        let mut last = self.cut_len;
        for (i, e) in self.entries.iter().enumerate().skip(self.cut_len) {
            rows += e.rows;
            bytes += e.bytes;
            last = i;
            if rows >= self.cfg.max_rows || bytes >= self.cfg.max_bytes {
                break;
            }
        }
        let end = self.entries[last].end;
        self.cut_len = last + 1;
        self.open_rows -= rows;
        self.open_bytes -= bytes;
        self.reset_deadline();
        Some(CutRange { first, end })
    }

    /// Removes the records of `range` (the oldest pending ones) and splits
    /// them into batches per event hour plus dead letters. Used after a cut's
    /// marker is durable, and for each cut marker met during replay.
    pub fn take(&mut self, range: CutRange) -> Result<CutOutput> {
        let mismatch = |reason: String| Error::InvalidData {
            what: "spool cut range".into(),
            reason,
        };
        match self.entries.front() {
            Some(e) if e.pos == range.first => {}
            front => {
                return Err(mismatch(format!(
                    "range {range:?} does not start at the oldest pending record {:?}",
                    front.map(|e| e.pos)
                )))
            }
        }
        let n = self
            .entries
            .iter()
            .take_while(|e| e.end <= range.end)
            .count();
        let last_end = n.checked_sub(1).map(|i| self.entries[i].end);
        if last_end != Some(range.end) {
            return Err(mismatch(format!(
                "range {range:?} does not end at a record boundary (records end at {last_end:?})"
            )));
        }
        let mut hours: BTreeMap<i64, Vec<ColdRow>> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        let open_taken = n.saturating_sub(self.cut_len);
        for (i, e) in self.entries.drain(..n).enumerate() {
            if i >= self.cut_len {
                self.open_rows -= e.rows;
                self.open_bytes -= e.bytes;
            }
            match e.item {
                Item::Rows(rows) => {
                    for row in rows {
                        let hour = row.ts_ms.div_euclid(HOUR_MS) * HOUR_MS;
                        hours.entry(hour).or_default().push(row);
                    }
                }
                Item::Rejected(d) => dead_letters.push(d),
            }
        }
        self.cut_len = self.cut_len.saturating_sub(n);
        if open_taken > 0 {
            self.reset_deadline();
        }
        let batches = hours
            .into_iter()
            .map(|(hour_start_ms, rows)| Batch {
                id: BatchId::new(&self.gateway, range.first, hour_start_ms),
                hour_start_ms,
                rows,
            })
            .collect();
        Ok(CutOutput {
            range,
            batches,
            dead_letters,
            messages: n,
        })
    }

    /// New age deadline for the open part's first record, with fresh jitter.
    fn reset_deadline(&mut self) {
        self.deadline = self.entries.get(self.cut_len).map(|e| {
            let base = e.pushed_at + self.cfg.max_age;
            let j = self.cfg.age_jitter.as_micros() as i64;
            let delta = if j == 0 {
                0
            } else {
                self.rng.random_range(-j..=j)
            };
            let d = Duration::from_micros(delta.unsigned_abs());
            if delta >= 0 {
                base + d
            } else {
                base.checked_sub(d).unwrap_or(e.pushed_at)
            }
        });
    }
}

#[cfg(test)]
mod tests;
