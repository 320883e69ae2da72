//! [`ReleaseTracker`]: which cut ranges every store now holds, as a contiguous
//! watermark for [`super::SpoolHandle::release_through`]. Pure bookkeeping.
//!
//! Stores may finish batches out of order (S3 and ClickHouse run separately,
//! retries reorder). A range is done when each of its deliveries was
//! acknowledged; the watermark moves to the end of the longest prefix of done
//! ranges, so a segment is released only when both stores hold all its batches.

use std::collections::{BTreeMap, HashSet};

use super::record::CutRange;
use crate::row::{BatchId, SpoolPos};

/// A store the cold path writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Store {
    S3,
    ClickHouse,
}

impl Store {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::ClickHouse => "clickhouse",
        }
    }
}

/// One part of a cut range's output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Batch(BatchId),
    /// The range's dead letters (rejected messages), as one object.
    DeadLetters,
}

/// One part that one store must acknowledge before the range can be released.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Delivery {
    pub part: Part,
    pub store: Store,
}

#[derive(Debug)]
struct Tracked {
    end: SpoolPos,
    outstanding: HashSet<Delivery>,
}

/// Tracks cut ranges (keyed by their first position) until every delivery of
/// each is acknowledged.
#[derive(Debug, Default)]
pub struct ReleaseTracker {
    ranges: BTreeMap<SpoolPos, Tracked>,
    released: SpoolPos,
}

impl ReleaseTracker {
    /// Starts at the watermark already released (e.g. `ReplayReport::released`).
    pub fn new(released: SpoolPos) -> Self {
        Self {
            ranges: BTreeMap::new(),
            released,
        }
    }

    /// Registers a range and what must be delivered for it. Ranges are
    /// registered in spool order; a range already tracked or released is
    /// ignored (returns false). A range with no deliveries is done at once.
    pub fn track(
        &mut self,
        range: CutRange,
        deliveries: impl IntoIterator<Item = Delivery>,
    ) -> bool {
        if range.first < self.released || self.ranges.contains_key(&range.first) {
            return false;
        }
        self.ranges.insert(
            range.first,
            Tracked {
                end: range.end,
                outstanding: deliveries.into_iter().collect(),
            },
        );
        true
    }

    /// Records that `store` holds `part` of the range starting at `first`.
    /// Returns the new watermark when the prefix of done ranges grew.
    pub fn delivered(&mut self, first: SpoolPos, part: Part, store: Store) -> Option<SpoolPos> {
        if let Some(t) = self.ranges.get_mut(&first) {
            t.outstanding.remove(&Delivery { part, store });
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<SpoolPos> {
        let before = self.released;
        while let Some(entry) = self.ranges.first_entry() {
            if !entry.get().outstanding.is_empty() {
                break;
            }
            self.released = self.released.max(entry.remove().end);
        }
        (self.released > before).then_some(self.released)
    }

    /// Watermark to release through (end of the done prefix).
    pub fn released(&self) -> SpoolPos {
        self.released
    }

    /// Ranges tracked and not yet released.
    pub fn pending_ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use devices::DeviceId;

    use super::*;

    fn pos(offset: u64) -> SpoolPos {
        SpoolPos { segment: 1, offset }
    }

    fn both(id: &BatchId) -> [Delivery; 2] {
        [Store::S3, Store::ClickHouse].map(|store| Delivery {
            part: Part::Batch(id.clone()),
            store,
        })
    }

    #[test]
    fn releases_the_contiguous_prefix_once_both_stores_hold_it() {
        let gw = DeviceId::parse("gw").unwrap();
        let (a, b) = (BatchId::new(&gw, pos(0), 0), BatchId::new(&gw, pos(100), 0));
        let mut t = ReleaseTracker::new(pos(0));
        assert!(t.track(
            CutRange {
                first: pos(0),
                end: pos(100)
            },
            both(&a)
        ));
        let mut second: Vec<_> = both(&b).into();
        second.push(Delivery {
            part: Part::DeadLetters,
            store: Store::S3,
        });
        assert!(t.track(
            CutRange {
                first: pos(100),
                end: pos(250)
            },
            second
        ));
        assert!(
            !t.track(
                CutRange {
                    first: pos(0),
                    end: pos(100)
                },
                both(&a)
            ),
            "twice"
        );

        // The second range finishes first: nothing can be released yet.
        assert_eq!(
            t.delivered(pos(100), Part::Batch(b.clone()), Store::S3),
            None
        );
        assert_eq!(
            t.delivered(pos(100), Part::Batch(b.clone()), Store::ClickHouse),
            None
        );
        assert_eq!(t.delivered(pos(100), Part::DeadLetters, Store::S3), None);
        // One store is not enough for the first.
        assert_eq!(t.delivered(pos(0), Part::Batch(a.clone()), Store::S3), None);
        assert_eq!(t.released(), pos(0));
        // Both done: the watermark jumps past both ranges.
        assert_eq!(
            t.delivered(pos(0), Part::Batch(a.clone()), Store::ClickHouse),
            Some(pos(250))
        );
        assert_eq!(t.pending_ranges(), 0);
        // Late duplicates change nothing.
        assert_eq!(t.delivered(pos(0), Part::Batch(a), Store::ClickHouse), None);
        assert!(!t.track(
            CutRange {
                first: pos(100),
                end: pos(250)
            },
            []
        ));
    }

    #[test]
    fn a_range_without_deliveries_is_done_with_its_predecessors() {
        let gw = DeviceId::parse("gw").unwrap();
        let a = BatchId::new(&gw, pos(0), 0);
        let mut t = ReleaseTracker::default();
        t.track(
            CutRange {
                first: pos(0),
                end: pos(10),
            },
            both(&a),
        );
        t.track(
            CutRange {
                first: pos(10),
                end: pos(20),
            },
            [],
        );
        assert_eq!(t.delivered(pos(0), Part::Batch(a.clone()), Store::S3), None);
        assert_eq!(
            t.delivered(pos(0), Part::Batch(a), Store::ClickHouse),
            Some(pos(20))
        );
    }
}
