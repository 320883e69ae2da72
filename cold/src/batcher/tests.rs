//! Tests of the batch-cutting policy and the per-hour split.

use devices::MetricName;
use proptest::prelude::*;

use super::*;

const T0: i64 = 1_732_528_800_000; // 2024-11-25T10:00:00Z, an hour start

fn gw() -> DeviceId {
    DeviceId::parse("gw-1").unwrap()
}

fn pos(i: u64) -> SpoolPos {
    SpoolPos {
        segment: 2,
        offset: i * 100,
    }
}

fn row(ts_ms: i64, value: f64) -> ColdRow {
    ColdRow {
        device_id: DeviceId::parse("dev-1").unwrap(),
        metric: MetricName::parse("temp").unwrap(),
        ts_ms,
        value,
        seq: 0,
        gateway_id: gw(),
        received_at_ms: ts_ms,
    }
}

fn rows(n: usize, ts_ms: i64) -> Item {
    Item::Rows((0..n).map(|i| row(ts_ms, i as f64)).collect())
}

fn cfg(max_rows: usize, max_bytes: u64, max_age_ms: u64, jitter_ms: u64) -> BatchConfig {
    BatchConfig {
        max_rows,
        max_bytes,
        max_age: Duration::from_millis(max_age_ms),
        age_jitter: Duration::from_millis(jitter_ms),
    }
}

/// Pushes record `i` (positions i*100 .. i*100+100).
fn push(b: &mut Batcher, i: u64, item: Item, now: Instant) -> Option<CutReason> {
    b.push(pos(i), pos(i + 1), item, now)
}

#[test]
fn cuts_by_rows_at_the_record_that_reaches_the_limit() {
    let now = Instant::now();
    let mut b = Batcher::new(cfg(10, u64::MAX, 60_000, 0), gw(), 1);
    for i in 0..3 {
        assert_eq!(push(&mut b, i, rows(3, T0), now), None, "9 rows");
    }
    assert_eq!(push(&mut b, 3, rows(3, T0), now), Some(CutReason::Rows));
    // The caller was slow: three more records arrived before the cut.
    for i in 4..7 {
        push(&mut b, i, rows(3, T0), now);
    }
    assert_eq!(
        b.cut(),
        Some(CutRange {
            first: pos(0),
            end: pos(4)
        })
    );
    assert_eq!(b.open_size().0, 9, "the rest stays open");
    assert_eq!(b.due(now), None);
    let out = b
        .take(CutRange {
            first: pos(0),
            end: pos(4),
        })
        .unwrap();
    assert_eq!(out.messages, 4);
    assert_eq!(out.batches.len(), 1);
    assert_eq!(out.batches[0].rows.len(), 12, "a message is never split");
    assert_eq!(b.pending_records(), 3);
}

#[test]
fn cuts_by_bytes() {
    let now = Instant::now();
    let one = row_bytes(&row(T0, 0.0));
    let mut b = Batcher::new(cfg(1_000_000, 5 * one, 60_000, 0), gw(), 1);
    assert_eq!(push(&mut b, 0, rows(2, T0), now), None);
    assert_eq!(push(&mut b, 1, rows(2, T0), now), None);
    assert_eq!(b.open_size(), (4, 4 * one));
    assert_eq!(push(&mut b, 2, rows(1, T0), now), Some(CutReason::Bytes));
    assert_eq!(
        b.cut(),
        Some(CutRange {
            first: pos(0),
            end: pos(3)
        })
    );
    assert_eq!(b.open_size(), (0, 0));
    assert_eq!(b.cut(), None, "nothing open");
}

#[test]
fn cuts_by_age_with_seeded_jitter() {
    let t = Instant::now();
    let (age, jitter) = (Duration::from_secs(5), Duration::from_secs(1));
    let deadline_for = |seed| {
        let mut b = Batcher::new(cfg(1000, u64::MAX, 5000, 1000), gw(), seed);
        push(&mut b, 0, rows(1, T0), t);
        b.deadline().unwrap()
    };
    let mut seen = std::collections::HashSet::new();
    for seed in 0..20 {
        let d = deadline_for(seed);
        assert_eq!(d, deadline_for(seed), "same seed, same jitter");
        assert!(
            d >= t + age - jitter && d <= t + age + jitter,
            "seed {seed}"
        );
        seen.insert(d);
    }
    assert!(
        seen.len() > 10,
        "jitter varies between seeds: {}",
        seen.len()
    );

    let mut b = Batcher::new(cfg(1000, u64::MAX, 5000, 1000), gw(), 7);
    push(&mut b, 0, rows(1, T0), t);
    // A later record does not move the deadline: age is the oldest record's.
    push(&mut b, 1, rows(1, T0), t + Duration::from_secs(3));
    let d = b.deadline().unwrap();
    assert_eq!(b.due(d - Duration::from_millis(1)), None);
    assert_eq!(b.due(d), Some(CutReason::Age));
    assert_eq!(
        b.cut(),
        Some(CutRange {
            first: pos(0),
            end: pos(2)
        })
    );
    assert_eq!(b.deadline(), None);
    assert_eq!(b.due(d + age * 10), None);
    // The next batch's clock starts at its own first record.
    let t2 = d + Duration::from_secs(1);
    push(&mut b, 2, rows(1, T0), t2);
    let d2 = b.deadline().unwrap();
    assert!(d2 >= t2 + age - jitter && d2 <= t2 + age + jitter);
}

#[test]
fn a_partial_cut_restarts_the_age_clock_at_the_remainder() {
    let t = Instant::now();
    let mut b = Batcher::new(cfg(2, u64::MAX, 5000, 0), gw(), 1);
    push(&mut b, 0, rows(2, T0), t);
    push(&mut b, 1, rows(1, T0), t + Duration::from_secs(2));
    b.cut().unwrap();
    assert_eq!(b.deadline(), Some(t + Duration::from_secs(7)));
}

#[test]
fn splits_a_range_per_event_hour() {
    let now = Instant::now();
    let mut b = Batcher::new(BatchConfig::default(), gw(), 1);
    let items = [
        vec![row(T0 + 5, 1.0), row(T0 - 1, 2.0)], // hours 0 and -1
        vec![row(T0 + HOUR_MS, 3.0)],             // hour +1
        vec![row(T0 + 10, 4.0), row(T0 - HOUR_MS, 5.0)], // hour 0 and -1
        vec![row(-1, 6.0)],                       // before the epoch
    ];
    for (i, r) in items.into_iter().enumerate() {
        push(&mut b, i as u64, Item::Rows(r), now);
    }
    let range = b.cut().unwrap();
    let out = b.take(range).unwrap();
    let hours: Vec<_> = out.batches.iter().map(|b| b.hour_start_ms).collect();
    assert_eq!(hours, vec![-HOUR_MS, T0 - HOUR_MS, T0, T0 + HOUR_MS]);
    let values: Vec<Vec<f64>> = out
        .batches
        .iter()
        .map(|b| b.rows.iter().map(|r| r.value).collect())
        .collect();
    assert_eq!(
        values,
        vec![vec![6.0], vec![2.0, 5.0], vec![1.0, 4.0], vec![3.0]]
    );
    for batch in &out.batches {
        assert_eq!(batch.id, BatchId::new(&gw(), pos(0), batch.hour_start_ms));
        assert!(batch
            .rows
            .iter()
            .all(|r| r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS == batch.hour_start_ms));
    }
    assert_eq!(
        out.deliveries().len(),
        8,
        "4 batches x 2 stores, no dead letters"
    );
}

#[test]
fn collects_dead_letters_with_their_reason() {
    let devices = DevicesConfig::default();
    let now = Instant::now();
    let mut b = Batcher::new(BatchConfig::default(), gw(), 1);
    let recs = [
        (
            &b"devices/dev-1/telemetry"[..],
            &br#"{"ts":1732528800500,"metrics":{"t":1.5}}"#[..],
        ),
        (&b"devices/dev-1/telemetry"[..], &b"not json"[..]),
        (
            &b"devices/\xff/telemetry"[..],
            &br#"{"metrics":{"t":1}}"#[..],
        ),
        (
            &b"devices/dev-2/telemetry"[..],
            &br#"{"metrics":{"t":"hot"}}"#[..],
        ),
    ];
    for (i, (topic, payload)) in recs.into_iter().enumerate() {
        let rec = MessageRecord {
            received_at_ms: T0 + 1000,
            topic: Bytes::copy_from_slice(topic),
            payload: Bytes::copy_from_slice(payload),
        };
        let item = decode_record(&devices, &gw(), pos(i as u64), &rec);
        assert_eq!(
            item,
            decode_record(&devices, &gw(), pos(i as u64), &rec),
            "deterministic"
        );
        push(&mut b, i as u64, item, now);
    }
    assert_eq!(b.open_size().0, 4, "1 row + 3 rejected messages");
    let out = b
        .take(CutRange {
            first: pos(0),
            end: pos(4),
        })
        .unwrap();
    assert_eq!(out.batches.len(), 1);
    let r = &out.batches[0].rows[0];
    assert_eq!(
        (r.device_id.as_str(), r.value, r.received_at_ms),
        ("dev-1", 1.5, T0 + 1000)
    );
    assert_eq!(r.gateway_id, gw());
    let dl: Vec<_> = out
        .dead_letters
        .iter()
        .map(|d| (d.pos, d.reason, d.payload.clone()))
        .collect();
    assert_eq!(
        dl,
        vec![
            (
                pos(1),
                RejectReason::Malformed,
                Bytes::from_static(b"not json")
            ),
            (
                pos(2),
                RejectReason::InvalidTopic,
                Bytes::from_static(br#"{"metrics":{"t":1}}"#)
            ),
            (
                pos(3),
                RejectReason::NonNumeric,
                Bytes::from_static(br#"{"metrics":{"t":"hot"}}"#)
            ),
        ]
    );
    assert_eq!(out.dead_letters[1].detail, "topic is not UTF-8");
    assert_eq!(out.dead_letters[1].topic, "devices/\u{fffd}/telemetry");
    assert!(out.deliveries().contains(&Delivery {
        part: Part::DeadLetters,
        store: Store::S3
    }));
}

#[test]
fn take_checks_the_range_against_the_pending_records() {
    let now = Instant::now();
    let mut b = Batcher::new(BatchConfig::default(), gw(), 1);
    assert!(
        b.take(CutRange {
            first: pos(0),
            end: pos(1)
        })
        .is_err(),
        "empty"
    );
    push(&mut b, 0, rows(1, T0), now);
    push(&mut b, 1, rows(1, T0), now);
    assert!(
        b.take(CutRange {
            first: pos(1),
            end: pos(2)
        })
        .is_err(),
        "not the oldest"
    );
    let mid = SpoolPos {
        segment: 2,
        offset: 150,
    };
    assert!(
        b.take(CutRange {
            first: pos(0),
            end: mid
        })
        .is_err(),
        "not a boundary"
    );
    assert!(b
        .take(CutRange {
            first: pos(0),
            end: SpoolPos {
                segment: 2,
                offset: 50
            }
        })
        .is_err());
    assert_eq!(b.pending_records(), 2, "failed takes change nothing");
    // A replayed marker may take records that were never cut in this run.
    let out = b
        .take(CutRange {
            first: pos(0),
            end: pos(2),
        })
        .unwrap();
    assert_eq!(out.messages, 2);
    assert_eq!(
        (b.open_size(), b.deadline(), b.pending_records()),
        ((0, 0), None, 0)
    );
}

#[test]
fn config_parses_units_and_errors_name_the_key() {
    let raw: RawBatchConfig = serde_json::from_str(
        r#"{"max_rows":500,"max_bytes":"1MiB","max_age":"2s","age_jitter":"100ms"}"#,
    )
    .unwrap();
    assert_eq!(raw.validate().unwrap(), cfg(500, 1 << 20, 2000, 100));
    assert_eq!(BatchConfig::default(), cfg(100_000, 64 << 20, 5000, 500));
    let key = |f: fn(&mut RawBatchConfig)| {
        let mut raw = RawBatchConfig::default();
        f(&mut raw);
        match raw.validate().unwrap_err() {
            Error::Config { key, .. } => key,
            other => panic!("{other}"),
        }
    };
    assert_eq!(key(|r| r.max_rows = 0), "cold.batch.max_rows");
    assert_eq!(
        key(|r| r.max_bytes = ByteSize::b(0)),
        "cold.batch.max_bytes"
    );
    assert_eq!(key(|r| r.max_age = Duration::ZERO), "cold.batch.max_age");
    assert_eq!(
        key(|r| r.age_jitter = Duration::from_secs(5)),
        "cold.batch.age_jitter"
    );
    assert!(serde_json::from_str::<RawBatchConfig>(r#"{"rows":1}"#).is_err());
}

proptest! {
    /// Whatever the limits and cut points, every row comes out exactly once, in
    /// a batch of its own hour, ranges tile the records, and each range obeys
    /// the limits except by its last message.
    #[test]
    fn cuts_partition_the_rows(
        msgs in proptest::collection::vec(proptest::collection::vec(-3i64..3, 0..5), 1..40),
        max_rows in 1usize..12,
        cut_every in 1usize..8,
    ) {
        let now = Instant::now();
        let mut b = Batcher::new(cfg(max_rows, u64::MAX, 60_000, 0), gw(), 3);
        let mut outs = Vec::new();
        let mut n = 0;
        for (i, hours) in msgs.iter().enumerate() {
            let item = if hours.is_empty() {
                Item::Rejected(DeadLetter { pos: pos(i as u64), received_at_ms: 0, topic: String::new(),
                    payload: Bytes::new(), reason: RejectReason::Malformed, detail: "no readings".into() })
            } else {
                Item::Rows(hours.iter().map(|h| { n += 1; row(T0 + h * HOUR_MS + 7, n as f64) }).collect())
            };
            push(&mut b, i as u64, item, now);
            if i % cut_every == 0 {
                while let Some(range) = b.cut() {
                    outs.push(b.take(range).unwrap());
                }
            }
        }
        while let Some(range) = b.cut() {
            outs.push(b.take(range).unwrap());
        }
        prop_assert_eq!(b.pending_records(), 0);
        let mut expect_first = pos(0);
        let mut values = Vec::new();
        let mut dead = 0;
        for out in &outs {
            prop_assert_eq!(out.range.first, expect_first);
            expect_first = out.range.end;
            dead += out.dead_letters.len();
            let total: usize = out.batches.iter().map(|b| b.rows.len()).sum::<usize>() + out.dead_letters.len();
            let last_msg = msgs[(out.range.end.offset / 100 - 1) as usize].len().max(1);
            prop_assert!(total < max_rows + last_msg, "{} rows, limit {}", total, max_rows);
            for batch in &out.batches {
                prop_assert_eq!(&batch.id, &BatchId::new(&gw(), out.range.first, batch.hour_start_ms));
                for r in &batch.rows {
                    prop_assert_eq!(r.ts_ms.div_euclid(HOUR_MS) * HOUR_MS, batch.hour_start_ms);
                    values.push(r.value as usize);
                }
            }
        }
        prop_assert_eq!(expect_first, pos(msgs.len() as u64));
        values.sort_unstable();
        prop_assert_eq!(values, (1..=n).collect::<Vec<_>>());
        prop_assert_eq!(dead, msgs.iter().filter(|m| m.is_empty()).count());
    }
}
