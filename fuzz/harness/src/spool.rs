//! Spool recovery from arbitrary bytes.
//!
//! Input layout (see [`split`]): an optional `released:` prefix followed by 16
//! bytes, the released watermark (segment, offset, u64 LE; written with a valid
//! CRC, so recovery trusts it as it would its own), then up to
//! [`MAX_SEGMENTS`] segment files separated by [`SEGMENT_SEPARATOR`], as
//! segments 0, 1, …. Segment bytes are arbitrary: valid frames, torn and
//! corrupted tails, garbage.

use std::{fs, path::Path};

use cold::{
    batcher::{decode_record, Item},
    row::SpoolPos,
    spool::{Record, Spool, SpoolConfig, SpoolMetrics},
};
use devices::config::DevicesConfig;
use prometheus::Registry;

/// Prefix of an input that carries a released watermark.
pub const RELEASED_PREFIX: &[u8] = b"released:";
/// Separates the segment files of an input.
pub const SEGMENT_SEPARATOR: &[u8] = b"\n--segment--\n";
/// At most this many segment files per input.
pub const MAX_SEGMENTS: usize = 4;

/// An input's released watermark and segment files.
pub fn split(data: &[u8]) -> (Option<SpoolPos>, Vec<&[u8]>) {
    let mut rest = data;
    let mut released = None;
    if let Some(r) = data.strip_prefix(RELEASED_PREFIX) {
        if r.len() >= 16 {
            let u = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
            released = Some(SpoolPos {
                segment: u(0),
                offset: u(8),
            });
            rest = &r[16..];
        }
    }
    let mut segments = Vec::new();
    while segments.len() + 1 < MAX_SEGMENTS {
        match find(rest, SEGMENT_SEPARATOR) {
            Some(i) => {
                segments.push(&rest[..i]);
                rest = &rest[i + SEGMENT_SEPARATOR.len()..];
            }
            None => break,
        }
    }
    segments.push(rest);
    (released, segments)
}

/// The inverse of [`split`], for seeds.
pub fn join(released: Option<SpoolPos>, segments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(r) = released {
        out.extend_from_slice(RELEASED_PREFIX);
        out.extend_from_slice(&r.segment.to_le_bytes());
        out.extend_from_slice(&r.offset.to_le_bytes());
    }
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEGMENT_SEPARATOR);
        }
        out.extend_from_slice(s);
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What one open found, compared across two opens.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    messages: u64,
    markers: u64,
    released: SpoolPos,
    replayed: Vec<(SpoolPos, Record)>,
}

/// Writes the input as a spool directory, opens it, replays everything and
/// decodes every message as the cold pipeline does; then opens it again.
///
/// Open either fails with an error (corruption before the last segment's
/// tail) or succeeds; when it succeeds, replay yields exactly the records the
/// report counted, every one readable, and a second open (after the torn tail
/// was cut) finds no torn tail and the same records.
pub fn run(data: &[u8]) {
    let dir = scratch_dir();
    write_dir(dir.path(), data);
    let Some(first) = open_and_replay(dir.path()) else {
        return;
    };
    let second = open_and_replay(dir.path()).expect("a spool that opened once opens again");
    assert_eq!(second.1, 0, "a torn tail was left after the first open");
    assert_eq!(first.0, second.0, "the second open found other records");
}

/// Lays an input out as a spool directory: segment files `0…`, and the
/// `released` file when the input has a watermark.
pub fn write_dir(dir: &Path, data: &[u8]) {
    let (released, segments) = split(data);
    for (i, seg) in segments.iter().enumerate() {
        fs::write(dir.join(format!("{i:016x}.seg")), seg).expect("write a segment");
    }
    if let Some(r) = released {
        write_released(dir, r);
    }
}

/// `(what it found, torn tail bytes)`, or `None` when open refused the spool.
fn open_and_replay(dir: &Path) -> Option<(Found, u64)> {
    let metrics = SpoolMetrics::new(&Registry::new()).expect("spool metrics");
    let opened = match Spool::open(SpoolConfig::in_dir(dir), metrics) {
        Ok(o) => o,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return None;
        }
    };
    let report = opened.report.clone();
    let devices = DevicesConfig::default();
    let gateway = devices::DeviceId::parse("gw-fuzz").expect("a valid id");
    let mut found = Found {
        messages: 0,
        markers: 0,
        released: report.released,
        replayed: Vec::new(),
    };
    for r in opened.replay {
        let r = r.unwrap_or_else(|e| panic!("replay of a spool that opened failed: {e}"));
        assert!(
            r.pos < r.end && r.end <= report.end,
            "{r:?} outside {report:?}"
        );
        match &r.record {
            Record::Message(m) => {
                found.messages += 1;
                if let Item::Rows(rows) = decode_record(&devices, &gateway, r.pos, m) {
                    assert!(rows.iter().all(|row| row.value.is_finite()));
                }
            }
            Record::Cut(_) => found.markers += 1,
        }
        found.replayed.push((r.pos, r.record));
    }
    assert_eq!(
        (found.messages, found.markers),
        (report.messages, report.markers),
        "replay yielded other records than open counted"
    );
    drop(opened.spool);
    Some((found, report.torn_tail_bytes))
}

/// A fresh directory, on tmpfs when there is one (fsync is free there).
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("a temp dir")
}

/// The `released` file as the spool writes it: segment, offset (u64 LE), crc32.
fn write_released(dir: &Path, pos: SpoolPos) {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    fs::write(dir.join("released"), bytes).expect("write the watermark");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_inverts_join() {
        let segs = vec![b"a".to_vec(), Vec::new(), b"ccc".to_vec()];
        let pos = SpoolPos {
            segment: 1,
            offset: 9,
        };
        let joined = join(Some(pos), &segs);
        let (r, s) = split(&joined);
        assert_eq!(r, Some(pos));
        assert_eq!(s, segs.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_eq!(split(b"x").1, vec![&b"x"[..]]);
    }
}
