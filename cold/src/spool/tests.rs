//! Tests of the spool against real files in temp dirs.

use std::{path::Path, time::Duration};

use devices::{config::DevicesConfig, DeviceId};
use prometheus::Registry;

use super::*;
use crate::batcher::{decode_record, BatchConfig, Batcher, CutOutput};

const SEC: Duration = Duration::from_secs(1);

fn cfg(dir: &Path, segment: u64, max: u64, interval_ms: u64, flush: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_size_bytes: max,
        segment_size_bytes: segment,
        fsync_interval: Duration::from_millis(interval_ms),
        flush_size_bytes: flush,
    }
}

fn small(dir: &Path) -> SpoolConfig {
    cfg(dir, 1024, 1 << 20, 5, 1 << 20)
}

fn open(cfg: SpoolConfig) -> (Opened, SpoolMetrics) {
    let metrics = SpoolMetrics::new(&Registry::new()).unwrap();
    (Spool::open(cfg, metrics.clone()).unwrap(), metrics)
}

fn replay_all(r: SpoolReader) -> Vec<ReplayedRecord> {
    r.collect::<Result<Vec<_>>>().unwrap()
}

fn msg(i: usize) -> Record {
    Record::message(
        1_732_530_000_000 + i as i64,
        format!("devices/dev-{i}/telemetry").into_bytes(),
        format!(r#"{{"seq":{i},"metrics":{{"t":{i}}}}}"#).into_bytes(),
    )
}

/// Appends and waits until durable; returns (pos, end).
async fn put(s: &SpoolHandle, r: &Record) -> (SpoolPos, SpoolPos) {
    let (pos, t) = s.append(r).await.unwrap();
    let end = t.end();
    tokio::time::timeout(5 * SEC, t.wait())
        .await
        .unwrap()
        .unwrap();
    (pos, end)
}

fn seg_files(dir: &Path) -> Vec<u64> {
    segment::list_segments(dir).unwrap()
}

#[tokio::test]
async fn records_round_trip_through_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = open(small(dir.path()));
    assert_eq!(o.report, ReplayReport::default());
    let mut written = Vec::new();
    for i in 0..5 {
        let r = msg(i);
        let (pos, end) = put(&o.spool, &r).await;
        written.push(ReplayedRecord {
            pos,
            end,
            record: r,
        });
    }
    let range = CutRange {
        first: written[0].pos,
        end: written[2].end,
    };
    let (pos, t) = o.spool.append_cut(range).await.unwrap();
    let end = t.end();
    t.wait().await.unwrap();
    let Record::Cut(marker) = replay_all_after_close(o, dir.path()).await[5]
        .record
        .clone()
    else {
        panic!("the sixth record is the marker");
    };
    assert_eq!(marker.range, range);
    let (o, _) = open(small(dir.path()));
    assert_eq!(
        (
            o.report.messages,
            o.report.markers,
            o.report.torn_tail_bytes
        ),
        (5, 1, 0)
    );
    let replayed = replay_all(o.replay);
    assert_eq!(&replayed[..5], &written[..]);
    assert_eq!((replayed[5].pos, replayed[5].end), (pos, end));
    assert!(
        o.report.end > end,
        "new records go after everything replayed"
    );
}

async fn replay_all_after_close(o: Opened, dir: &Path) -> Vec<ReplayedRecord> {
    o.spool.close().await.unwrap();
    let (o, _) = open(small(dir));
    replay_all(o.replay)
}

#[tokio::test]
async fn a_torn_tail_is_cut_at_every_offset_of_the_last_record() {
    let src = tempfile::tempdir().unwrap();
    let (o, _) = open(small(src.path()));
    let mut ends = Vec::new();
    for i in 0..3 {
        ends.push(put(&o.spool, &msg(i)).await);
    }
    o.spool.close().await.unwrap();
    let (last_pos, last_end) = ends[2];
    let seg = segment::segment_path(src.path(), last_pos.segment);
    let bytes = std::fs::read(&seg).unwrap();
    assert_eq!(bytes.len() as u64, last_end.offset);
    let mut cases: Vec<Vec<u8>> = (last_pos.offset..last_end.offset)
        .map(|cut| bytes[..cut as usize].to_vec())
        .collect();
    // Zeros after the last record (a crash that extended the file) and a
    // complete last frame whose body was half written.
    cases.push([&bytes[..], &[0u8; 100]].concat());
    let mut half = bytes.clone();
    half[last_pos.offset as usize + 20..].fill(0);
    cases.push(half);

    for (i, content) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let copy = segment::segment_path(dir.path(), last_pos.segment);
        std::fs::write(&copy, content).unwrap();
        let (o, metrics) = open(small(dir.path()));
        // Only the zero padding case keeps the last record.
        let zero_padded = i == cases.len() - 2;
        let intact = if zero_padded {
            last_end.offset
        } else {
            last_pos.offset
        };
        let torn = content.len() as u64 - intact;
        assert_eq!(o.report.torn_tail_bytes, torn, "case {i}");
        assert_eq!(metrics.torn_tails.get(), u64::from(torn > 0), "case {i}");
        assert_eq!(
            std::fs::metadata(&copy).unwrap().len(),
            intact,
            "case {i}: file cut"
        );
        let want = if intact == last_end.offset { 3 } else { 2 };
        let got = replay_all(o.replay);
        assert_eq!(got.len(), want, "case {i}");
        assert_eq!(got.last().unwrap().end, ends[want - 1].1);
        drop(o.spool);
        // Reopening finds a clean spool.
        let (o, metrics) = open(small(dir.path()));
        assert_eq!((o.report.torn_tail_bytes, metrics.torn_tails.get()), (0, 0));
        assert_eq!(replay_all(o.replay).len(), want);
    }
}

#[tokio::test]
async fn corruption_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = open(small(dir.path()));
    let mut ends = Vec::new();
    for i in 0..3 {
        ends.push(put(&o.spool, &msg(i)).await);
    }
    o.spool.close().await.unwrap();
    let seg = segment::segment_path(dir.path(), ends[0].0.segment);
    let good = std::fs::read(&seg).unwrap();
    // A flipped byte in the first record's body, and a broken length field in
    // the second: valid records follow, so neither is a torn tail.
    for at in [20, ends[1].0.offset as usize + 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&seg, &bad).unwrap();
        let err = Spool::open(
            small(dir.path()),
            SpoolMetrics::new(&Registry::new()).unwrap(),
        )
        .err()
        .expect("corrupt");
        let Error::SpoolCorrupt { offset, path, .. } = err else {
            panic!("{err}")
        };
        let record_start = if at == 20 { 0 } else { ends[1].0.offset };
        assert_eq!((offset, path), (record_start, seg.clone()));
        assert_eq!(std::fs::read(&seg).unwrap(), bad, "nothing was cut");
    }
    // A torn end in a segment that is not the last is corruption too.
    std::fs::write(&seg, &good[..good.len() - 3]).unwrap();
    std::fs::write(
        segment::segment_path(dir.path(), ends[0].0.segment + 5),
        b"",
    )
    .unwrap();
    let err = Spool::open(
        small(dir.path()),
        SpoolMetrics::new(&Registry::new()).unwrap(),
    )
    .err();
    assert!(matches!(err, Some(Error::SpoolCorrupt { .. })), "{err:?}");
}

#[tokio::test]
async fn segments_roll_and_only_wholly_released_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (o, metrics) = open(small(dir.path()));
    let mut recs = Vec::new();
    for i in 0..40 {
        recs.push(put(&o.spool, &msg(i)).await);
    }
    let segs: Vec<u64> = recs.iter().map(|(p, _)| p.segment).collect();
    assert!(segs.windows(2).all(|w| w[0] <= w[1]));
    let first_seg = segs[0];
    let n_segs = segs.last().unwrap() - first_seg + 1;
    assert!(n_segs >= 3, "{n_segs} segments");
    for s in first_seg..=*segs.last().unwrap() {
        assert!(
            std::fs::metadata(segment::segment_path(dir.path(), s))
                .unwrap()
                .len()
                <= 1024
        );
    }
    assert_eq!(
        o.spool.used_bytes(),
        recs.iter().map(|(p, e)| e.offset - p.offset).sum::<u64>()
    );
    assert_eq!(metrics.bytes.get() as u64, o.spool.used_bytes());

    // Release through the middle of the second segment: only the first goes.
    let k = segs.iter().position(|s| *s == first_seg + 1).unwrap() + 2;
    let before = o.spool.used_bytes();
    o.spool.release_through(recs[k].1).await.unwrap();
    assert_eq!(seg_files(dir.path())[0], first_seg + 1);
    let first_len: u64 = recs
        .iter()
        .filter(|(p, _)| p.segment == first_seg)
        .map(|(p, e)| e.offset - p.offset)
        .sum();
    assert_eq!(o.spool.used_bytes(), before - first_len);
    o.spool.release_through(recs[1].1).await.unwrap();
    assert_eq!(
        o.spool.released(),
        recs[k].1,
        "the watermark never goes back"
    );
    drop(o.spool);

    // After a crash, replay starts after the watermark.
    let (o, _) = open(small(dir.path()));
    assert_eq!(o.report.released, recs[k].1);
    let replayed = replay_all(o.replay);
    assert_eq!(replayed.len(), 40 - k - 1);
    assert_eq!(replayed[0].pos, recs[k + 1].0);
    assert_eq!(replayed[0].record, msg(k + 1));

    // Releasing everything deletes every old segment, and later the current one.
    o.spool.release_through(recs[39].1).await.unwrap();
    let (p, e) = put(&o.spool, &msg(99)).await;
    assert!(p.segment > recs[39].0.segment);
    o.spool.release_through(e).await.unwrap();
    assert!(
        seg_files(dir.path()).iter().all(|s| *s > p.segment),
        "{:?}",
        seg_files(dir.path())
    );
    assert_eq!(o.spool.used_bytes(), 0);
    assert!(
        o.spool
            .release_through(SpoolPos {
                segment: 999,
                offset: 0
            })
            .await
            .is_err(),
        "not durable"
    );
}

#[tokio::test]
async fn a_full_spool_blocks_appends_until_a_release_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let (o, metrics) = open(cfg(dir.path(), 1024, 2048, 5, 1 << 20));
    let big = |i: i64| Record::message(i, &b"t"[..], vec![b'x'; 300]);
    let mut ends = Vec::new();
    while o.spool.used_bytes() + big(0).frame_len() <= 2048 {
        ends.push(put(&o.spool, &big(0)).await);
    }
    // Fill exactly to the bound.
    let need = 2048 - o.spool.used_bytes();
    put(
        &o.spool,
        &Record::message(0, &b"t"[..], vec![b'y'; (need - HEADER_LEN - 14) as usize]),
    )
    .await;
    assert_eq!(o.spool.used_bytes(), 2048);
    let used = o.spool.used_bytes();
    let h = o.spool.handle();
    let blocked = tokio::spawn(async move { h.append(&big(1)).await.map(|(p, _)| p) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "the append waits");
    assert_eq!(metrics.appends_waiting.get(), 1);
    assert_eq!(o.spool.used_bytes(), used, "nothing was dropped or added");
    // A cut marker never waits, even on a full spool.
    let range = CutRange {
        first: ends[0].0,
        end: ends[0].1,
    };
    let (marker_pos, t) = tokio::time::timeout(SEC, o.spool.append_cut(range))
        .await
        .unwrap()
        .unwrap();
    t.wait().await.unwrap();
    assert!(o.spool.used_bytes() > 2048);

    // Releasing the first segment lets it through.
    let first_seg_end = ends
        .iter()
        .rfind(|(p, _)| p.segment == ends[0].0.segment)
        .unwrap()
        .1;
    o.spool.release_through(first_seg_end).await.unwrap();
    let pos = tokio::time::timeout(5 * SEC, blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(pos > marker_pos);
    assert_eq!(metrics.appends_waiting.get(), 0);
    assert!(
        o.spool.used_bytes() <= 2048 + HEADER_LEN + 41,
        "only the marker is over the bound"
    );
}

#[tokio::test]
async fn tickets_resolve_only_after_fsync_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (o, metrics) = open(cfg(dir.path(), 1 << 20, 4 << 20, 1000, 1 << 20));
    let (pos, t) = o.spool.append(&msg(0)).await.unwrap();
    let end = t.end();
    assert_eq!(
        o.spool.used_bytes(),
        end.offset - pos.offset,
        "buffered bytes count"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!t.is_durable());
    assert!(o.spool.durable_end() < end);
    assert_eq!(metrics.fsync_duration.get_sample_count(), 0);
    let seg = segment::segment_path(dir.path(), pos.segment);
    assert!(
        std::fs::metadata(&seg).map_or(0, |m| m.len()) < end.offset,
        "not written yet"
    );
    t.wait().await.unwrap();
    assert!(metrics.fsync_duration.get_sample_count() >= 1);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), end.offset);
    drop(o);

    // Many appends from concurrent tasks: the durable end only grows, and each
    // ticket sees at least its own end.
    let (o, _) = open(cfg(dir.path(), 2048, 1 << 20, 2, 1 << 20));
    let mut rx = o.spool.shared.durable.subscribe();
    let watcher = tokio::spawn(async move {
        let mut seen = vec![rx.borrow().end];
        while rx.changed().await.is_ok() {
            seen.push(rx.borrow().end);
        }
        seen
    });
    let mut tasks = Vec::new();
    for i in 0..8 {
        let h = o.spool.handle();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for j in 0..25 {
                let (pos, t) = h.append(&msg(i * 100 + j)).await.unwrap();
                let end = t.end();
                let durable = t.wait().await.unwrap();
                assert!(durable >= end && end > pos);
                got.push(pos);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        all.extend(got);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 200, "every append got its own position");
    o.spool.close().await.unwrap();
    let seen = watcher.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() > *all.last().unwrap());
}

#[tokio::test]
async fn flush_size_triggers_an_early_commit_and_drop_abandons_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = open(cfg(dir.path(), 1 << 20, 4 << 20, 10_000, 1024));
    let (_, t) = o
        .spool
        .append(&Record::message(1, &b"t"[..], vec![0u8; 2000]))
        .await
        .unwrap();
    tokio::time::timeout(2 * SEC, t.wait())
        .await
        .expect("flushed by size")
        .unwrap();
    let (_, lost) = o.spool.append(&msg(1)).await.unwrap();
    drop(o);
    assert!(
        lost.wait().await.is_err(),
        "a record never made durable fails its ticket"
    );
    let (o, _) = open(cfg(dir.path(), 1 << 20, 4 << 20, 10, 1024));
    assert_eq!(replay_all(o.replay).len(), 1);
    // One process per directory.
    let second = Spool::open(
        small(dir.path()),
        SpoolMetrics::new(&Registry::new()).unwrap(),
    );
    assert!(matches!(second.err(), Some(Error::Io { .. })));
}

#[tokio::test]
async fn the_oldest_unshipped_age_follows_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (o, m) = open(small(dir.path()));
    let now = now_ms();
    let a = put(
        &o.spool,
        &Record::message(now - 60_000, &b"t"[..], &b"{}"[..]),
    )
    .await;
    let b = put(
        &o.spool,
        &Record::message(now - 10_000, &b"t"[..], &b"{}"[..]),
    )
    .await;
    drop(o);
    let (o, m2) = open(small(dir.path()));
    drop(m);
    let age = m2.oldest_unshipped_age.get();
    assert!((59.0..70.0).contains(&age), "{age}");
    o.spool.release_through(a.1).await.unwrap();
    let age = m2.oldest_unshipped_age.get();
    assert!((9.0..20.0).contains(&age), "{age}");
    // A trailing cut marker is not unshipped data.
    put(
        &o.spool,
        &Record::Cut(CutMarker {
            at_ms: now,
            range: CutRange {
                first: a.0,
                end: b.1,
            },
        }),
    )
    .await;
    o.spool.release_through(b.1).await.unwrap();
    assert_eq!(m2.oldest_unshipped_age.get(), 0.0);
}

/// Feeds replayed records to a batcher: messages are pushed, markers taken.
fn replay_into(
    b: &mut Batcher,
    records: Vec<ReplayedRecord>,
    devices: &DevicesConfig,
) -> Vec<CutOutput> {
    let gw = DeviceId::parse("gw-1").unwrap();
    let now = std::time::Instant::now();
    let mut outs = Vec::new();
    for r in records {
        match r.record {
            Record::Message(m) => {
                b.push(r.pos, r.end, decode_record(devices, &gw, r.pos, &m), now);
            }
            Record::Cut(c) => outs.push(b.take(c.range).unwrap()),
        }
    }
    outs
}

#[tokio::test]
async fn replay_after_a_crash_cuts_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let devices = DevicesConfig::default();
    let gw = DeviceId::parse("gw-1").unwrap();
    let hour = 3_600_000;
    let message = |i: i64| {
        // Readings alternate between two event hours; every fifth is rejected.
        let ts = 1_732_528_800_000 + (i % 2) * hour + i;
        let payload = if i % 5 == 4 {
            "oops".to_owned()
        } else {
            format!(r#"{{"ts":{ts},"metrics":{{"t":{i}}}}}"#)
        };
        Record::message(
            1_732_536_000_000 + i,
            &b"devices/d-1/telemetry"[..],
            payload.into_bytes(),
        )
    };
    let mut live = Batcher::new(BatchConfig::default(), gw.clone(), 1);
    let mut shipped = Vec::new();
    let (o, _) = open(small(dir.path()));
    let t = std::time::Instant::now();
    for i in 0..23 {
        let r = message(i);
        let (pos, end) = put(&o.spool, &r).await;
        let Record::Message(m) = &r else {
            unreachable!()
        };
        live.push(pos, end, decode_record(&devices, &gw, pos, m), t);
        if i == 7 || i == 15 {
            let range = live.cut().unwrap();
            put(&o.spool, &Record::Cut(CutMarker { at_ms: 0, range })).await;
            shipped.push(live.take(range).unwrap());
        }
    }
    assert_eq!(
        shipped.iter().map(|o| o.batches.len()).collect::<Vec<_>>(),
        vec![2, 2]
    );
    assert_eq!(shipped[1].dead_letters.len(), 2);
    drop(o.spool); // crash
                   // A cut that never became durable: the marker is lost in the next crash.
    let (o, _) = open(cfg(dir.path(), 1024, 1 << 20, 10_000, 1 << 20));
    let unmarked = live.cut().unwrap();
    let (_, t) = o.spool.append_cut(unmarked).await.unwrap();
    drop(o.spool);
    assert!(t.wait().await.is_err());

    let (o, _) = open(small(dir.path()));
    assert_eq!(o.report.markers, 2);
    let mut again = Batcher::new(BatchConfig::default(), gw.clone(), 99);
    let outs = replay_into(&mut again, replay_all(o.replay), &devices);
    assert_eq!(
        outs, shipped,
        "same ranges, rows, dead letters and batch ids"
    );
    // The unmarked tail starts where it started before: same first position,
    // so the same id for the batch of its first hour.
    assert_eq!(again.pending_records(), 7);
    let cut = again.cut().unwrap();
    let tail = again.take(cut).unwrap();
    assert_eq!(tail.range, unmarked);
    assert_eq!(
        tail.batches[0].id,
        live.take(unmarked).unwrap().batches[0].id
    );

    // Once both ranges are released, a restart replays only the tail.
    o.spool.release_through(shipped[1].range.end).await.unwrap();
    drop(o.spool);
    let (o, _) = open(small(dir.path()));
    assert_eq!((o.report.messages, o.report.markers), (7, 0));
    let mut third = Batcher::new(BatchConfig::default(), gw, 5);
    assert!(replay_into(&mut third, replay_all(o.replay), &devices).is_empty());
    assert_eq!(third.cut(), Some(unmarked));
}

#[tokio::test]
async fn open_finishes_a_release_cut_short_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = open(small(dir.path()));
    let mut last = (SpoolPos::default(), SpoolPos::default());
    for i in 0..20 {
        last = put(&o.spool, &msg(i)).await;
    }
    drop(o);
    assert!(seg_files(dir.path()).len() >= 2);
    // The watermark was persisted, then the process died before deleting.
    segment::write_released(dir.path(), last.1).unwrap();
    let (o, m) = open(small(dir.path()));
    assert_eq!(seg_files(dir.path()), Vec::<u64>::new());
    assert_eq!(
        (o.report.segments, o.report.messages, o.report.bytes),
        (0, 0, 0)
    );
    assert_eq!((o.spool.used_bytes(), m.bytes.get()), (0, 0));
    assert!(replay_all(o.replay).is_empty());
    let (pos, _) = put(&o.spool, &msg(0)).await;
    assert!(pos > last.1, "positions keep growing: {pos:?}");
}
