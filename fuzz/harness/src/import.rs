//! The import parsers: a whole input file, every line (or Parquet row) through
//! the gateway's validation, exactly as `thermocline import` reads it.

use std::path::Path;

use bytes::Bytes;
use devices::{config::DevicesConfig, DeviceId};
use sync::import::{Format, Input, Validator};

use crate::{MAX_DETAIL_BYTES, NOW_MS};

/// `import` of an NDJSON file.
pub fn ndjson(data: &[u8]) {
    check(Format::Ndjson, data);
}

/// `import` of a CSV file.
pub fn csv(data: &[u8]) {
    check(Format::Csv, data);
}

/// `import` of a Parquet file (the gateway's batch schema).
pub fn parquet(data: &[u8]) {
    check(Format::Parquet, data);
}

/// A file is refused whole with an error, or every unit of it gives rows or
/// a bounded reason; rows are valid (finite, not past the future skew,
/// stamped with the import's gateway id and time).
fn check(format: Format, data: &[u8]) {
    let path = Path::new("fuzz-input");
    let input = match Input::from_bytes(path, format, Bytes::copy_from_slice(data)) {
        Ok(i) => i,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let devices = DevicesConfig::default();
    let gateway = DeviceId::parse("import-fuzz").expect("a valid id");
    let v = Validator::new(&devices, NOW_MS, gateway.clone());
    let latest = NOW_MS + devices.max_future_skew_ms;
    for i in 0..input.units() {
        match input.unit(i, &v) {
            Ok(rows) => {
                for r in rows {
                    assert!(r.value.is_finite(), "line {}: value {}", i + 1, r.value);
                    assert!(
                        r.ts_ms <= latest,
                        "line {}: ts {} in the future",
                        i + 1,
                        r.ts_ms
                    );
                    assert_eq!(r.gateway_id, gateway);
                    assert_eq!(r.received_at_ms, NOW_MS);
                }
            }
            Err(reason) => {
                assert!(!reason.is_empty(), "line {}: no reason", i + 1);
                assert!(
                    reason.len() <= MAX_DETAIL_BYTES,
                    "line {}: reason of {} bytes: {reason:.200}",
                    i + 1,
                    reason.len()
                );
            }
        }
    }
}
