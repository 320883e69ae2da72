//! The spool: a local write-ahead log of raw MQTT messages and batch-cut markers.
//!
//! # How it works
//!
//! - **Records** (`record.rs`): `[u32 LE length][u32 LE crc32][body]`, appended to
//!   segment files `{dir}/{segment:016x}.seg`; a segment is rolled when the next
//!   record would take it past `segment_size`. A [`SpoolPos`] (segment, offset)
//!   names a record; positions only grow, also across restarts (each open starts
//!   a fresh segment).
//! - **Group commit** (`writer.rs`): [`SpoolHandle::append`] copies the frame into
//!   an in-memory buffer and returns its position and a [`DurableTicket`]. A
//!   writer thread writes the buffer and `fsync`s (`sync_data`) every
//!   `fsync_interval`, or sooner once `flush_size` bytes are buffered, then
//!   publishes the new durable end. Durable ends only grow, so tickets resolve in
//!   append order; ack the broker after the ticket.
//! - **Bound**: segment bytes + buffered bytes ≤ `max_size`. When full, `append`
//!   waits (backpressure: stop reading the broker) until a release frees a
//!   segment; it never drops and never fails except on I/O errors. Cut markers
//!   are exempt (tiny, one per cut) so a full spool can always be cut, shipped
//!   and released.
//! - **Release**: [`SpoolHandle::release_through`] persists the watermark (all
//!   message records before it are in every store) in `{dir}/released` (temp file,
//!   fsync, rename, fsync dir), then deletes the segments lying wholly before it.
//!   [`ReleaseTracker`] turns out-of-order store acknowledgements into that
//!   contiguous watermark.
//! - **Open and replay** ([`Spool::open`]): every segment is scanned and every CRC
//!   checked. A bad frame at the end of the last segment with nothing valid after
//!   it is a torn tail (crash mid-write): the file is cut there and it is counted.
//!   A bad frame anywhere else is [`Error::SpoolCorrupt`]. The returned
//!   [`SpoolReader`] yields the records from the watermark on: messages, and the
//!   cut markers of ranges not yet released, so the batcher cuts the same ranges
//!   again and the same [`crate::row::BatchId`]s come out.
//!
//! One process per directory: `{dir}/LOCK` is held while the spool is open.

mod config;
mod metrics;
mod open;
mod reader;
mod record;
mod release;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::{
    collections::VecDeque,
    fs::{self, File},
    io,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::{watch, Notify};

pub use config::{RawSpoolConfig, SpoolConfig};
pub use metrics::SpoolMetrics;
pub use reader::{ReplayedRecord, SpoolReader};
pub use record::{CutMarker, CutRange, MessageRecord, Record, HEADER_LEN};
pub use release::{Delivery, Part, ReleaseTracker, Store};

use crate::{row::SpoolPos, Error, Result};
use segment::io_err;

/// At most this many (position, time) samples for the oldest-record age; one
/// per second of received time, so ~18 h of unreleased data is tracked exactly
/// (to the second). Past that the age reads high, never low.
const AGE_INDEX_CAP: usize = 65_536;

/// What [`Spool::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segment files kept (after deleting wholly released ones).
    pub segments: usize,
    /// Message records at or after the released watermark (to be replayed).
    pub messages: u64,
    /// Cut markers of ranges not yet released (to be replayed).
    pub markers: u64,
    /// Bytes cut from a torn tail (0 when the last segment ended cleanly).
    pub torn_tail_bytes: u64,
    /// The released watermark read from disk.
    pub released: SpoolPos,
    /// Replay ends here; new records are appended after it.
    pub end: SpoolPos,
    /// Bytes on disk after open.
    pub bytes: u64,
}

/// An open spool: owns the writer thread and the directory lock.
///
/// [`Spool::close`] writes and fsyncs what is buffered, then stops. Dropping a
/// `Spool` without `close` stops the writer after its current group commit and
/// abandons the rest of the buffer, like a crash: those records were never
/// durable, so their tickets fail and their messages were never acked.
pub struct Spool {
    handle: SpoolHandle,
    writer: Option<JoinHandle<()>>,
    _lock: File,
}

/// A cheap, cloneable handle for appending and releasing (ingest, batcher and
/// shipper tasks each hold one).
#[derive(Clone)]
pub struct SpoolHandle {
    shared: Arc<Shared>,
}

/// What [`Spool::open`] returns.
///
/// New records may be appended (and acked) while `replay` is being read, but
/// the batcher must see records in spool order: feed it the whole replay
/// before the records appended after open.
pub struct Opened {
    pub spool: Spool,
    /// The records to replay, read lazily from disk; all lie before `report.end`.
    pub replay: SpoolReader,
    pub report: ReplayReport,
}

pub(crate) struct Shared {
    cfg: SpoolConfig,
    metrics: SpoolMetrics,
    state: Mutex<State>,
    /// Wakes the writer early (buffer past `flush_size`, or stop).
    wake_writer: Condvar,
    /// Wakes appends waiting for space (release) or for failure.
    space: Notify,
    durable: watch::Sender<Durable>,
    release_lock: tokio::sync::Mutex<()>,
}

/// The durable end: every record before it has been written and fsynced.
#[derive(Debug, Clone)]
pub(crate) struct Durable {
    end: SpoolPos,
    failed: Option<Failure>,
}

#[derive(Debug, Clone)]
pub(crate) struct Failure {
    kind: io::ErrorKind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Run,
    /// Write and fsync what is buffered, then stop.
    Flush,
    /// Stop without writing the buffer (drop without close).
    Abandon,
}

#[derive(Debug, Clone, Copy)]
struct SegMeta {
    id: u64,
    /// Bytes appended to it (written or still buffered).
    len: u64,
}

pub(crate) struct State {
    /// Live segments, oldest first; the last is the one being appended to.
    segments: VecDeque<SegMeta>,
    /// Sum of `segments[..].len`: disk plus buffer.
    used: u64,
    /// End of the last appended record.
    appended_end: SpoolPos,
    /// End of the last appended message record.
    last_message_end: SpoolPos,
    /// Frames awaiting the writer, per segment, in order.
    chunks: Vec<(u64, Vec<u8>)>,
    buffered: u64,
    released: SpoolPos,
    age: AgeIndex,
    stop: Stop,
    failed: Option<Failure>,
}

impl State {
    fn current(&mut self) -> &mut SegMeta {
        self.segments
            .back_mut()
            .expect("the current segment always exists")
    }

    fn roll(&mut self) {
        let next = self.current().id + 1;
        self.segments.push_back(SegMeta { id: next, len: 0 });
    }

    /// Appends a frame when it fits; `None` when the spool is full.
    fn try_append(&mut self, cfg: &SpoolConfig, frame: &[u8], record: &Record) -> Option<SpoolPos> {
        let len = frame.len() as u64;
        let cur = *self.current();
        if cur.len > 0 && cur.len + len > cfg.segment_size_bytes {
            self.roll();
        }
        let exempt = matches!(record, Record::Cut(_));
        if !exempt && self.used + len > cfg.max_size_bytes {
            return None;
        }
        let cur = self.current();
        let pos = SpoolPos {
            segment: cur.id,
            offset: cur.len,
        };
        cur.len += len;
        let end = SpoolPos {
            segment: cur.id,
            offset: cur.len,
        };
        self.used += len;
        self.buffered += len;
        match self.chunks.last_mut() {
            Some((seg, buf)) if *seg == pos.segment => buf.extend_from_slice(frame),
            _ => self.chunks.push((pos.segment, frame.to_vec())),
        }
        self.appended_end = end;
        if let Record::Message(m) = record {
            self.last_message_end = end;
            self.age.note(pos, m.received_at_ms);
        }
        Some(pos)
    }

    /// Oldest unreleased message's receive time, if any.
    fn oldest_unreleased_ms(&self) -> Option<i64> {
        if self.released >= self.last_message_end {
            return None;
        }
        self.age.oldest_at()
    }
}

/// Sparse (position, received_at) samples of message records, ≥ 1 s apart.
#[derive(Default)]
struct AgeIndex {
    entries: VecDeque<(SpoolPos, i64)>,
}

impl AgeIndex {
    fn note(&mut self, pos: SpoolPos, at_ms: i64) {
        let due = self
            .entries
            .back()
            .is_none_or(|(_, last)| at_ms >= last.saturating_add(1000));
        if due && self.entries.len() < AGE_INDEX_CAP {
            self.entries.push_back((pos, at_ms));
        }
    }

    /// Forgets samples before `released`, keeping the last one at or before it:
    /// the oldest unreleased record was received no earlier than that sample.
    fn release(&mut self, released: SpoolPos) {
        while self.entries.len() >= 2 && self.entries[1].0 <= released {
            self.entries.pop_front();
        }
    }

    fn oldest_at(&self) -> Option<i64> {
        self.entries.front().map(|(_, at)| *at)
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failure_error(&self, f: &Failure) -> Error {
        Error::Io {
            path: self.cfg.dir.clone(),
            source: io::Error::new(f.kind, f.message.clone()),
        }
    }

    /// Marks the spool failed (I/O error or closed): appends and pending tickets
    /// return errors from now on.
    pub(crate) fn fail(&self, kind: io::ErrorKind, message: String) {
        let failure = Failure { kind, message };
        self.lock().failed.get_or_insert(failure.clone());
        self.durable.send_modify(|d| {
            d.failed.get_or_insert(failure);
        });
        self.space.notify_waiters();
    }

    pub(crate) fn update_age_gauge(&self, st: &State) {
        let age_s = st.oldest_unreleased_ms().map_or(0.0, |at| {
            (now_ms().saturating_sub(at)).max(0) as f64 / 1000.0
        });
        self.metrics.oldest_unshipped_age.set(age_s);
    }
}

/// Watches the spool's durable end (everything before it is written and
/// fsynced). Cheap to clone; one per consumer.
#[derive(Clone)]
pub struct DurableWatch {
    rx: watch::Receiver<Durable>,
}

impl DurableWatch {
    /// Whether every record ending at or before `end` is durable.
    pub fn is_durable(&self, end: SpoolPos) -> bool {
        self.rx.borrow().end >= end
    }

    /// Waits until the records ending at or before `end` are durable; an
    /// error when the spool failed or was closed before that. Cancel-safe.
    pub async fn wait_for(&mut self, end: SpoolPos) -> Result<SpoolPos> {
        let closed = || Error::Io {
            path: "spool".into(),
            source: io::Error::new(io::ErrorKind::BrokenPipe, "spool closed"),
        };
        let d = self
            .rx
            .wait_for(|d| d.end >= end || d.failed.is_some())
            .await
            .map_err(|_| closed())?
            .clone();
        match d.failed {
            Some(f) if d.end < end => Err(Error::Io {
                path: "spool".into(),
                source: io::Error::new(f.kind, f.message),
            }),
            _ => Ok(d.end),
        }
    }
}

/// Resolves once a record is durable (written and fsynced).
pub struct DurableTicket {
    end: SpoolPos,
    watch: DurableWatch,
}

impl DurableTicket {
    /// The end of the record this ticket waits for.
    pub fn end(&self) -> SpoolPos {
        self.end
    }

    pub fn is_durable(&self) -> bool {
        self.watch.is_durable(self.end)
    }

    /// Waits until the record is durable; an error when the spool failed or was
    /// closed before that.
    pub async fn wait(mut self) -> Result<SpoolPos> {
        self.watch.wait_for(self.end).await
    }
}

/// Decrements the waiting gauge when a blocked append finishes or is dropped.
struct WaitingGuard<'a>(Option<&'a prometheus::IntGauge>);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.dec();
        }
    }
}

impl SpoolHandle {
    /// Appends a record; returns its position and a ticket for its durability.
    ///
    /// Waits while the spool is full (backpressure). Errors only on I/O failure,
    /// after the spool was closed, or for a frame larger than a segment.
    pub async fn append(&self, record: &Record) -> Result<(SpoolPos, DurableTicket)> {
        let shared = &self.shared;
        let mut frame = Vec::new();
        record.encode_frame(&mut frame);
        if frame.len() as u64 > shared.cfg.segment_size_bytes {
            return Err(Error::RecordTooLarge {
                len: frame.len() as u64,
                limit: shared.cfg.segment_size_bytes,
            });
        }
        let mut waiting = WaitingGuard(None);
        loop {
            let notified = shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = shared.lock();
                if let Some(f) = &st.failed {
                    return Err(shared.failure_error(f));
                }
                if let Some(pos) = st.try_append(&shared.cfg, &frame, record) {
                    let end = st.appended_end;
                    if st.buffered >= shared.cfg.flush_size_bytes {
                        shared.wake_writer.notify_one();
                    }
                    shared.metrics.bytes.set(st.used as i64);
                    let watch = DurableWatch {
                        rx: shared.durable.subscribe(),
                    };
                    return Ok((pos, DurableTicket { end, watch }));
                }
            }
            if waiting.0.is_none() {
                shared.metrics.appends_waiting.inc();
                waiting.0 = Some(&shared.metrics.appends_waiting);
            }
            notified.await;
        }
    }

    /// Appends a raw MQTT message received at `received_at_ms`.
    pub async fn append_message(
        &self,
        received_at_ms: i64,
        topic: &[u8],
        payload: &[u8],
    ) -> Result<(SpoolPos, DurableTicket)> {
        let record = Record::message(
            received_at_ms,
            bytes::Bytes::copy_from_slice(topic),
            bytes::Bytes::copy_from_slice(payload),
        );
        self.append(&record).await
    }

    /// Appends the cut marker of `range` (never waits for space).
    pub async fn append_cut(&self, range: CutRange) -> Result<(SpoolPos, DurableTicket)> {
        let at_ms = now_ms();
        self.append(&Record::Cut(CutMarker { at_ms, range })).await
    }

    /// A watch on the durable end.
    pub fn durable_watch(&self) -> DurableWatch {
        DurableWatch {
            rx: self.shared.durable.subscribe(),
        }
    }

    /// Every record before this is durable.
    pub fn durable_end(&self) -> SpoolPos {
        self.shared.durable.borrow().end
    }

    /// Segment bytes plus buffered bytes (what the bound applies to).
    pub fn used_bytes(&self) -> u64 {
        self.shared.lock().used
    }

    /// The released watermark.
    pub fn released(&self) -> SpoolPos {
        self.shared.lock().released
    }

    /// Declares every message record before `end` delivered to every store:
    /// persists the watermark, then deletes segments lying wholly before it and
    /// wakes appends waiting for space. `end` must be durable; going backwards
    /// is a no-op.
    pub async fn release_through(&self, end: SpoolPos) -> Result<()> {
        let _serial = self.shared.release_lock.lock().await;
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || release_blocking(&shared, end))
            .await
            .map_err(|e| Error::Io {
                path: "spool release".into(),
                source: io::Error::other(e.to_string()),
            })?
    }
}

fn release_blocking(shared: &Shared, end: SpoolPos) -> Result<()> {
    {
        let st = shared.lock();
        if end <= st.released {
            return Ok(());
        }
        let durable = shared.durable.borrow().end;
        if end > durable {
            return Err(Error::InvalidData {
                what: "spool release".into(),
                reason: format!("{end:?} is past the durable end {durable:?}"),
            });
        }
    }
    segment::write_released(&shared.cfg.dir, end)?;
    let removed = {
        let mut st = shared.lock();
        st.released = st.released.max(end);
        let released = st.released;
        st.age.release(released);
        // Everything appended is released: close the current segment so it can go.
        if released >= st.appended_end && st.current().len > 0 {
            st.roll();
        }
        let mut removed = Vec::new();
        while st.segments.len() > 1 {
            let s = st.segments[0];
            if (SpoolPos {
                segment: s.id,
                offset: s.len,
            }) > released
            {
                break;
            }
            st.segments.pop_front();
            st.used -= s.len;
            removed.push(s.id);
        }
        shared.metrics.bytes.set(st.used as i64);
        shared.update_age_gauge(&st);
        removed
    };
    for id in &removed {
        let path = segment::segment_path(&shared.cfg.dir, *id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    shared.space.notify_waiters();
    Ok(())
}

impl std::ops::Deref for Spool {
    type Target = SpoolHandle;

    fn deref(&self) -> &SpoolHandle {
        &self.handle
    }
}

impl Spool {
    /// A handle for other tasks.
    pub fn handle(&self) -> SpoolHandle {
        self.handle.clone()
    }

    /// Writes and fsyncs everything buffered, then stops the writer. Appends
    /// through remaining handles fail afterwards. An error if a write failed.
    pub async fn close(mut self) -> Result<()> {
        let shared = Arc::clone(&self.handle.shared);
        {
            let mut st = shared.lock();
            if st.stop == Stop::Run {
                st.stop = Stop::Flush;
            }
        }
        shared.wake_writer.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        let failed = shared.lock().failed.clone();
        shared.fail(io::ErrorKind::BrokenPipe, "spool closed".into());
        match failed {
            Some(f) => Err(shared.failure_error(&f)),
            None => Ok(()),
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let Some(w) = self.writer.take() else {
            return;
        };
        let shared = &self.handle.shared;
        {
            let mut st = shared.lock();
            if st.stop == Stop::Run {
                st.stop = Stop::Abandon;
            }
        }
        shared.wake_writer.notify_one();
        let _ = w.join();
        shared.fail(io::ErrorKind::BrokenPipe, "spool closed".into());
    }
}
