//! One test per crash the fuzzer found and that was fixed: the input is in
//! `fuzz/regressions/{target}/` (replayed with the corpus too), and the test
//! says what the fixed code answers for it.

use cold::{
    row::SpoolPos,
    spool::{Spool, SpoolConfig, SpoolMetrics},
    Error,
};
use fuzz_harness::{replay::regressions_dir, spool};

/// spool_recover: a CRC-valid `released` watermark naming segment u64::MAX
/// made `Spool::open` compute the next segment id as `u64::MAX + 1`: a panic
/// with overflow checks, and in a release build a wrap to segment 0, so new
/// records would lie before the watermark and be skipped as released on the
/// next start. Now the watermark is refused as corrupt.
#[test]
fn a_released_watermark_at_the_last_segment_id_is_corrupt_not_an_overflow() {
    let input =
        std::fs::read(regressions_dir("spool_recover").join("released-last-segment-id")).unwrap();
    assert_eq!(
        spool::split(&input).0,
        Some(SpoolPos {
            segment: u64::MAX,
            offset: 0
        })
    );
    let dir = tempfile::tempdir().unwrap();
    spool::write_dir(dir.path(), &input);
    let metrics = SpoolMetrics::new(&prometheus::Registry::new()).unwrap();
    match Spool::open(SpoolConfig::in_dir(dir.path()), metrics) {
        Err(Error::SpoolCorrupt { path, reason, .. }) => {
            assert!(path.ends_with("released"), "{}", path.display());
            assert!(reason.contains("last segment id"), "{reason}");
        }
        Err(e) => panic!("expected SpoolCorrupt, got {e}"),
        Ok(_) => panic!("a watermark at segment u64::MAX was accepted"),
    }
    // The segment is still there: refusing the spool deletes nothing.
    assert!(dir.path().join("0000000000000000.seg").exists());
}
