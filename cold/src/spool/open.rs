//! [`Spool::open`]: lock the directory, scan and check every segment, cut a
//! torn tail, and start the writer.

use std::{
    collections::VecDeque,
    fs::{self, File},
    io,
    sync::{Arc, Condvar, Mutex},
};

use tokio::sync::{watch, Notify};

use super::{
    segment::{self, io_err},
    writer, AgeIndex, Durable, Opened, Record, ReplayReport, SegMeta, Shared, Spool, SpoolConfig,
    SpoolHandle, SpoolMetrics, SpoolReader, State, Stop,
};
use crate::{row::SpoolPos, Error, Result};

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`: takes the directory lock,
    /// scans and checks every segment, cuts a torn tail, and starts the writer.
    /// Blocking: call it before the runtime gets busy or in `spawn_blocking`.
    pub fn open(cfg: SpoolConfig, metrics: SpoolMetrics) -> Result<Opened> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.try_lock().map_err(|e| Error::Io {
            path: lock_path.clone(),
            source: match e {
                fs::TryLockError::Error(e) => e,
                fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the spool directory is in use by another process",
                ),
            },
        })?;

        let released_file = segment::read_released(&dir)?;
        let released = released_file.unwrap_or_default();
        let mut ids = segment::list_segments(&dir)?;
        // Wholly released segments whose deletion a crash interrupted.
        for id in ids.iter().filter(|id| **id < released.segment) {
            let path = segment::segment_path(&dir, *id);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        ids.retain(|id| *id >= released.segment);

        let mut report = ReplayReport {
            released,
            ..ReplayReport::default()
        };
        let mut age = AgeIndex::default();
        let mut last_message_end = SpoolPos::default();
        let mut segments = VecDeque::new();
        for (i, id) in ids.iter().enumerate() {
            let is_last = i + 1 == ids.len();
            let buf = segment::read_segment(&dir, *id)?;
            let path = segment::segment_path(&dir, *id);
            let scan = segment::parse_segment(&path, *id, &buf, is_last, |s| {
                let end = SpoolPos {
                    segment: s.pos.segment,
                    offset: s.pos.offset + s.frame_len,
                };
                match s.record {
                    Record::Message(m) if s.pos >= released => {
                        report.messages += 1;
                        age.note(s.pos, m.received_at_ms);
                        last_message_end = end;
                    }
                    Record::Cut(c) if c.range.end > released => report.markers += 1,
                    _ => {}
                }
                Ok(())
            })?;
            if scan.torn_bytes > 0 {
                segment::truncate_segment(&dir, *id, scan.valid_len)?;
                report.torn_tail_bytes = scan.torn_bytes;
                metrics.torn_tails.inc();
                tracing::warn!(
                    segment = id,
                    valid_len = scan.valid_len,
                    torn_bytes = scan.torn_bytes,
                    "spool: cut a torn tail (crash mid-write)"
                );
            }
            let end = SpoolPos {
                segment: *id,
                offset: scan.valid_len,
            };
            if released_file.is_some() && end <= released {
                // Wholly released; its deletion was cut short by a crash.
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            segments.push_back(SegMeta {
                id: *id,
                len: scan.valid_len,
            });
        }
        let next_id = ids
            .last()
            .map_or(0, |l| l + 1)
            .max(released_file.map_or(0, |r| r.segment + 1));
        let end = SpoolPos {
            segment: next_id,
            offset: 0,
        };
        report.segments = segments.len();
        report.end = end;
        report.bytes = segments.iter().map(|s| s.len).sum();
        let replay = SpoolReader::new(
            dir.clone(),
            segments.iter().map(|s| (s.id, s.len)).collect(),
            released,
        );
        segments.push_back(SegMeta {
            id: next_id,
            len: 0,
        });
        age.release(released);
        let state = State {
            used: report.bytes,
            segments,
            appended_end: end,
            last_message_end,
            chunks: Vec::new(),
            buffered: 0,
            released,
            age,
            stop: Stop::Run,
            failed: None,
        };
        metrics.bytes.set(report.bytes as i64);
        metrics
            .max_bytes
            .set(i64::try_from(cfg.max_size_bytes).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            cfg,
            metrics,
            state: Mutex::new(state),
            wake_writer: Condvar::new(),
            space: Notify::new(),
            durable: watch::Sender::new(Durable { end, failed: None }),
            release_lock: tokio::sync::Mutex::new(()),
        });
        shared.update_age_gauge(&shared.lock());
        let writer = writer::spawn(Arc::clone(&shared)).map_err(io_err(&dir))?;
        Ok(Opened {
            spool: Spool {
                handle: SpoolHandle { shared },
                writer: Some(writer),
                _lock: lock,
            },
            replay,
            report,
        })
    }
}
