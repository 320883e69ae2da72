//! Segment files (`{dir}/{segment:016x}.seg`), the scan run at open, and the
//! `released` watermark file.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use bytes::Bytes;

use super::record::{any_valid_frame_after, check_frame, FrameError, Record};
use crate::{error::Error, row::SpoolPos, Result};

const SEGMENT_SUFFIX: &str = ".seg";
const RELEASED_FILE: &str = "released";
const RELEASED_TMP: &str = "released.tmp";

pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}{SEGMENT_SUFFIX}"))
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The segment numbers in `dir`, ascending. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if stem.len() == 16 {
            if let Ok(id) = u64::from_str_radix(stem, 16) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// fsyncs a directory, so file creations, renames and removals in it persist.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// One record found by a scan.
pub(crate) struct Scanned {
    pub pos: SpoolPos,
    pub frame_len: u64,
    pub record: Record,
}

/// What a segment scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// Bytes of valid records (the file is truncated to this on a torn tail).
    pub valid_len: u64,
    /// Bytes cut from the end (0 when the tail was clean).
    pub torn_bytes: u64,
}

/// Reads a whole segment file.
pub(crate) fn read_segment(dir: &Path, segment: u64) -> Result<Bytes> {
    let path = segment_path(dir, segment);
    fs::read(&path).map(Bytes::from).map_err(io_err(&path))
}

/// Parses every record of a segment's bytes, in order, into `visit`.
///
/// A bad frame is a torn tail only when `is_last` and no valid frame starts
/// anywhere after it (a crash mid-write leaves a prefix of the last write);
/// then parsing stops there and `torn_bytes` says how much is left over. Any
/// other bad frame is [`Error::SpoolCorrupt`].
pub(crate) fn parse_segment(
    path: &Path,
    segment: u64,
    buf: &Bytes,
    is_last: bool,
    mut visit: impl FnMut(Scanned) -> Result<()>,
) -> Result<SegmentScan> {
    let corrupt = |offset: usize, reason: String| Error::SpoolCorrupt {
        path: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let mut off = 0usize;
    while off < buf.len() {
        let body = match check_frame(buf, off) {
            Ok(body) => body,
            Err(e) => {
                let reason = match e {
                    FrameError::Incomplete(r) | FrameError::Invalid(r) => r,
                };
                if is_last && !any_valid_frame_after(buf, off + 1) {
                    return Ok(SegmentScan {
                        valid_len: off as u64,
                        torn_bytes: (buf.len() - off) as u64,
                    });
                }
                return Err(corrupt(off, reason));
            }
        };
        let end = body.end;
        let record = Record::decode_body(buf.slice(body)).map_err(|r| corrupt(off, r))?;
        visit(Scanned {
            pos: SpoolPos {
                segment,
                offset: off as u64,
            },
            frame_len: (end - off) as u64,
            record,
        })?;
        off = end;
    }
    Ok(SegmentScan {
        valid_len: buf.len() as u64,
        torn_bytes: 0,
    })
}

/// Cuts a segment file to `len` bytes and makes that durable.
pub(crate) fn truncate_segment(dir: &Path, segment: u64, len: u64) -> Result<()> {
    let path = segment_path(dir, segment);
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    f.set_len(len).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))
}

/// Reads the released watermark: every message record before it has been
/// delivered to every store. `None` when the file does not exist yet.
pub(crate) fn read_released(dir: &Path) -> Result<Option<SpoolPos>> {
    let path = dir.join(RELEASED_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let corrupt = |reason: &str| Error::SpoolCorrupt {
        path: path.clone(),
        offset: 0,
        reason: reason.into(),
    };
    if bytes.len() != 20 {
        return Err(corrupt("released watermark file is not 20 bytes"));
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..16]) != crc {
        return Err(corrupt("released watermark crc mismatch"));
    }
    let u = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let segment = u(0);
    // Open starts the next segment after the watermark's; the last id has none.
    if segment == u64::MAX {
        return Err(corrupt("released watermark names the last segment id"));
    }
    Ok(Some(SpoolPos {
        segment,
        offset: u(8),
    }))
}

/// Persists the released watermark atomically: write a temp file, fsync,
/// rename over the old one, fsync the directory.
pub(crate) fn write_released(dir: &Path, pos: SpoolPos) -> Result<()> {
    let tmp = dir.join(RELEASED_TMP);
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    let path = dir.join(RELEASED_FILE);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            segment_path(dir.path(), 0x1f).file_name().unwrap(),
            "000000000000001f.seg"
        );
        for id in [3u64, 1, 0x10] {
            fs::write(segment_path(dir.path(), id), b"").unwrap();
        }
        fs::write(dir.path().join("released"), b"").unwrap();
        fs::write(dir.path().join("zz.seg"), b"").unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 3, 0x10]);
    }

    #[test]
    fn released_watermark_round_trips_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_released(dir.path()).unwrap(), None);
        let pos = SpoolPos {
            segment: 7,
            offset: 12345,
        };
        write_released(dir.path(), pos).unwrap();
        assert_eq!(read_released(dir.path()).unwrap(), Some(pos));
        assert!(!dir.path().join(RELEASED_TMP).exists());
        let mut bytes = fs::read(dir.path().join(RELEASED_FILE)).unwrap();
        bytes[3] ^= 0xff;
        fs::write(dir.path().join(RELEASED_FILE), bytes).unwrap();
        assert!(matches!(
            read_released(dir.path()),
            Err(Error::SpoolCorrupt { .. })
        ));
    }
}
