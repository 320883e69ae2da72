//! Replay: the records from the released watermark to the end found at open.

use std::{collections::VecDeque, path::PathBuf};

use bytes::Bytes;

use super::{
    record::{check_frame, Record},
    segment,
};
use crate::{error::Error, row::SpoolPos, Result};

/// One replayed record with its position and end (position just past it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayedRecord {
    pub pos: SpoolPos,
    pub end: SpoolPos,
    pub record: Record,
}

/// Yields, in spool order, the message records at or after the released
/// watermark and the cut markers of ranges not yet released. Reads one segment
/// into memory at a time (at most `segment_size` bytes); blocking I/O. Topics
/// and payloads are slices of that buffer: hold them briefly (the batcher's
/// [`crate::batcher::decode_record`] copies what it keeps).
///
/// Segments the reader has passed may be released (deleted) while it runs;
/// ranges are released only after their cut markers, which come after them.
pub struct SpoolReader {
    dir: PathBuf,
    /// Segments still to read, with their length at open.
    segments: VecDeque<(u64, u64)>,
    released: SpoolPos,
    current: Option<(u64, Bytes, usize)>,
    done: bool,
    /// Also yield message records before the watermark that are still on disk.
    history: bool,
}

impl SpoolReader {
    pub(crate) fn new(dir: PathBuf, segments: VecDeque<(u64, u64)>, released: SpoolPos) -> Self {
        Self {
            dir,
            segments,
            released,
            current: None,
            done: false,
            history: false,
        }
    }

    /// Also yields the message records before the released watermark that
    /// are still on disk (released segments are deleted, but the segment the
    /// watermark lies in keeps its released prefix). They are already in the
    /// stores; the cold pipeline feeds them only to its redelivery filter, so
    /// that a redelivery straddling the watermark is recognised after a
    /// restart. Tell them apart by `pos < released`.
    pub fn with_history(mut self) -> Self {
        self.history = true;
        self
    }

    fn next_record(&mut self) -> Result<Option<ReplayedRecord>> {
        loop {
            let Some((id, buf, off)) = &mut self.current else {
                let Some((id, len)) = self.segments.pop_front() else {
                    return Ok(None);
                };
                let buf = segment::read_segment(&self.dir, id)?;
                let len = usize::try_from(len).unwrap_or(usize::MAX).min(buf.len());
                self.current = Some((id, buf.slice(..len), 0));
                continue;
            };
            if *off >= buf.len() {
                self.current = None;
                continue;
            }
            let body = check_frame(buf, *off).map_err(|e| Error::SpoolCorrupt {
                path: segment::segment_path(&self.dir, *id),
                offset: *off as u64,
                reason: format!("{e:?} (changed since open)"),
            })?;
            let pos = SpoolPos {
                segment: *id,
                offset: *off as u64,
            };
            let end = SpoolPos {
                segment: *id,
                offset: body.end as u64,
            };
            *off = body.end;
            let record =
                Record::decode_body(buf.slice(body)).map_err(|reason| Error::SpoolCorrupt {
                    path: segment::segment_path(&self.dir, pos.segment),
                    offset: pos.offset,
                    reason,
                })?;
            let keep = match &record {
                Record::Message(_) => self.history || pos >= self.released,
                Record::Cut(c) => c.range.end > self.released,
            };
            if keep {
                return Ok(Some(ReplayedRecord { pos, end, record }));
            }
        }
    }
}

impl Iterator for SpoolReader {
    type Item = Result<ReplayedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_record().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}
