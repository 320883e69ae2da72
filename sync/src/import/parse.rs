//! Input files → validated rows, one input line at a time.
//!
//! Formats (by extension, or `--format`):
//!
//! - NDJSON (`.ndjson`, `.jsonl`, `.json`): one gateway JSON payload per line
//!   plus a `device_id` field:
//!   `{"device_id":"sensor-7","ts":1732530000123,"seq":17,"metrics":{"temp":21.5}}`.
//!   Validated by the gateway's own decoder ([`devices::decode::decode_payload`]
//!   in the JSON object format), so the rules are exactly the live ones; `ts` is
//!   required (an offline buffer must carry event times; "now" would make a
//!   rerun land elsewhere).
//! - CSV (`.csv`): header `device_id,metric,ts_ms,value,seq`, then one reading
//!   per line; `seq` may be empty. The same rules: a valid device id and
//!   metric name, an integer `ts_ms` ≥ 0 and not past the future skew, a
//!   finite value.
//! - Parquet (`.parquet`): the gateway's own batch schema
//!   ([`cold::parquet`]); "line" is the row number, from 1.
//!
//! A bad line is reported with its number and reason and skipped; the file is
//! refused as a whole only when it cannot be read at all (bad CSV header,
//! unreadable Parquet).

use std::{ops::Range, path::Path};

use bytes::Bytes;
use cold::row::ColdRow;
use devices::{config::DevicesConfig, source, DeviceId, MetricName, RejectReason, Rejection};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const CSV_HEADER: &str = "device_id,metric,ts_ms,value,seq";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ndjson,
    Csv,
    Parquet,
}

impl Format {
    /// `ndjson`/`jsonl`/`json`, `csv`, `parquet`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    pub fn from_path(path: &Path) -> Option<Self> {
        Self::parse(path.extension()?.to_str()?)
    }
}

/// A whole input file: its bytes, and its units (lines, or Parquet rows).
pub struct Input {
    pub format: Format,
    data: Bytes,
    /// Byte ranges of the lines (text formats).
    lines: Vec<Range<usize>>,
    /// Decoded rows (Parquet).
    rows: Vec<ColdRow>,
}

impl Input {
    pub fn read(path: &Path, format: Format) -> Result<Self> {
        let data = Bytes::from(std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?);
        Self::from_bytes(path, format, data)
    }

    pub fn from_bytes(path: &Path, format: Format, data: Bytes) -> Result<Self> {
        let bad = |line: Option<u64>, reason: String| Error::Input {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut input = Self {
            format,
            data: data.clone(),
            lines: Vec::new(),
            rows: Vec::new(),
        };
        match format {
            Format::Parquet => {
                input.rows = cold::parquet::decode(data)
                    .map_err(|e| bad(None, format!("not a gateway Parquet file: {e}")))?;
            }
            Format::Ndjson | Format::Csv => {
                let mut start = 0;
                for (i, b) in data.iter().enumerate() {
                    if *b == b'\n' {
                        input.lines.push(start..i);
                        start = i + 1;
                    }
                }
                if start < data.len() {
                    input.lines.push(start..data.len());
                }
                if format == Format::Csv {
                    let header = input
                        .line(0)
                        .map(|l| String::from_utf8_lossy(l).into_owned());
                    let header = header.as_deref().map(str::trim).unwrap_or("");
                    if header.replace(' ', "") != CSV_HEADER {
                        return Err(bad(
                            Some(1),
                            format!("the header must be `{CSV_HEADER}`, found `{header}`"),
                        ));
                    }
                }
            }
        }
        Ok(input)
    }

    /// Lines (or rows) in the file, header included.
    pub fn units(&self) -> usize {
        match self.format {
            Format::Parquet => self.rows.len(),
            _ => self.lines.len(),
        }
    }

    /// FNV-1a over the bytes: names the import's batches, ties a checkpoint to its file.
    pub fn content_hash(&self) -> u64 {
        self.data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn line(&self, i: usize) -> Option<&[u8]> {
        let r = self.lines.get(i)?.clone();
        let l = &self.data[r];
        Some(l.strip_suffix(b"\r").unwrap_or(l))
    }

    /// The rows of unit `i` (0-based; the line number is `i + 1`): `Ok(empty)`
    /// for a blank line or the CSV header, `Err(reason)` for a bad one.
    pub fn unit(&self, i: usize, v: &Validator) -> Result<Vec<ColdRow>, String> {
        match self.format {
            Format::Parquet => {
                let r = &self.rows[i];
                v.check(&r.device_id, &r.metric, r.ts_ms, r.value)?;
                Ok(vec![ColdRow {
                    gateway_id: v.gateway.clone(),
                    received_at_ms: v.received_at_ms,
                    ..r.clone()
                }])
            }
            Format::Csv if i == 0 => Ok(Vec::new()),
            _ => {
                let line = self.line(i).unwrap_or_default();
                if line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Vec::new());
                }
                match self.format {
                    Format::Csv => v.csv(line).map(|r| vec![r]),
                    _ => v.ndjson(line),
                }
            }
        }
    }
}

/// The gateway's validation rules, applied at one instant.
pub struct Validator {
    devices: DevicesConfig,
    /// The gateway's own JSON format, which NDJSON lines are in.
    json: source::Format,
    now_ms: i64,
    /// Stamped on every row as its `gateway_id`: names the import.
    pub gateway: DeviceId,
    pub received_at_ms: i64,
}

fn rejected(r: Rejection) -> String {
    r.to_string()
}

impl Validator {
    pub fn new(devices: &DevicesConfig, now_ms: i64, gateway: DeviceId) -> Self {
        Self {
            devices: devices.clone(),
            json: source::Format::thermocline_json(),
            now_ms,
            gateway,
            received_at_ms: now_ms,
        }
    }

    fn check(
        &self,
        _device: &DeviceId,
        metric: &MetricName,
        ts_ms: i64,
        value: f64,
    ) -> Result<(), String> {
        if !value.is_finite() {
            return Err(format!("{}: {metric} is {value}", RejectReason::NonFinite));
        }
        if ts_ms < 0 {
            return Err(format!(
                "{}: ts {ts_ms} is negative",
                RejectReason::Malformed
            ));
        }
        let latest = self.now_ms.saturating_add(self.devices.max_future_skew_ms);
        if ts_ms > latest {
            return Err(format!(
                "{}: {metric} at {ts_ms} ms is {} ms ahead of now; at most {} ms allowed",
                RejectReason::FutureTimestamp,
                ts_ms - self.now_ms,
                self.devices.max_future_skew_ms
            ));
        }
        Ok(())
    }

    /// One NDJSON line: the gateway's JSON payload plus `device_id`.
    pub fn ndjson(&self, line: &[u8]) -> Result<Vec<ColdRow>, String> {
        #[derive(Deserialize)]
        struct Head {
            device_id: Option<String>,
            #[serde(default)]
            ts: Option<serde::de::IgnoredAny>,
        }
        let head: Head = serde_json::from_slice(line)
            .map_err(|e| format!("{}: {e}", RejectReason::Malformed))?;
        let device = head
            .device_id
            .ok_or_else(|| format!("{}: no `device_id`", RejectReason::Malformed))?;
        let device = DeviceId::parse(&device).map_err(rejected)?;
        if head.ts.is_none() {
            return Err(format!(
                "{}: no `ts` (an imported reading needs its event time)",
                RejectReason::Malformed
            ));
        }
        let msg = devices::decode::decode_payload(
            &self.devices,
            &self.json,
            &device,
            None,
            line,
            self.now_ms,
        )
        .map_err(rejected)?;
        Ok(msg
            .readings
            .iter()
            .map(|r| ColdRow::new(r, &self.gateway, self.received_at_ms))
            .collect())
    }

    /// One CSV line: `device_id,metric,ts_ms,value,seq`.
    pub fn csv(&self, line: &[u8]) -> Result<ColdRow, String> {
        let line = std::str::from_utf8(line)
            .map_err(|_| format!("{}: not UTF-8", RejectReason::Malformed))?;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [device, metric, ts, value, seq] = fields[..] else {
            return Err(format!(
                "{}: {} fields, expected 5 ({CSV_HEADER})",
                RejectReason::Malformed,
                fields.len()
            ));
        };
        let device_id = DeviceId::parse(device).map_err(rejected)?;
        let metric = MetricName::parse(metric).map_err(rejected)?;
        let ts_ms: i64 = ts.parse().map_err(|_| {
            format!(
                "{}: ts_ms {ts:?} is not an integer",
                RejectReason::Malformed
            )
        })?;
        let value: f64 = value.parse().map_err(|_| {
            format!(
                "{}: value {value:?} is not a number",
                RejectReason::NonNumeric
            )
        })?;
        let seq: u64 = if seq.is_empty() {
            0
        } else {
            seq.parse().map_err(|_| {
                format!(
                    "{}: seq {seq:?} is not an unsigned integer",
                    RejectReason::Malformed
                )
            })?
        };
        self.check(&device_id, &metric, ts_ms, value)?;
        Ok(ColdRow {
            device_id,
            metric,
            ts_ms,
            value,
            seq,
            gateway_id: self.gateway.clone(),
            received_at_ms: self.received_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_064_800_000;

    fn v() -> Validator {
        Validator::new(
            &DevicesConfig::default(),
            NOW,
            DeviceId::parse("import-1").unwrap(),
        )
    }

    fn input(format: Format, text: &str) -> Result<Input> {
        Input::from_bytes(Path::new("in"), format, Bytes::from(text.to_string()))
    }

    #[test]
    fn formats_by_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.NDJSON")),
            Some(Format::Ndjson)
        );
        assert_eq!(
            Format::from_path(Path::new("b.jsonl")),
            Some(Format::Ndjson)
        );
        assert_eq!(Format::from_path(Path::new("b.csv")), Some(Format::Csv));
        assert_eq!(
            Format::from_path(Path::new("b.parquet")),
            Some(Format::Parquet)
        );
        assert_eq!(Format::from_path(Path::new("b.txt")), None);
        assert_eq!(Format::from_path(Path::new("b")), None);
    }

    #[test]
    fn ndjson_lines_use_the_gateway_rules() {
        let v = v();
        let rows = v
            .ndjson(br#"{"device_id":"d-1","ts":1000,"seq":7,"metrics":{"temp":21.5,"hum":40}}"#)
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].ts_ms, rows[0].seq, rows[0].value), (1000, 7, 21.5));
        assert_eq!(rows[0].gateway_id.as_str(), "import-1");
        for (line, want) in [
            (r#"{"ts":1,"metrics":{"t":1}}"#, "no `device_id`"),
            (
                r#"{"device_id":"a:b","ts":1,"metrics":{"t":1}}"#,
                "invalid_device_id",
            ),
            (r#"{"device_id":"d","metrics":{"t":1}}"#, "no `ts`"),
            (
                r#"{"device_id":"d","ts":1,"metrics":{"t":"x"}}"#,
                "non_numeric",
            ),
            (
                r#"{"device_id":"d","ts":1,"metrics":{"t":1e999}}"#,
                "non_finite",
            ),
            (
                r#"{"device_id":"d","ts":1,"metrics":{"bad metric":1}}"#,
                "invalid_metric",
            ),
            (r#"{"device_id":"d","ts":1,"metrics":{}}"#, "malformed"),
            (r#"{"device_id":"d","ts":1,"metrics":{"t":1"#, "malformed"),
            ("not json", "malformed"),
        ] {
            let e = v.ndjson(line.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        let future = format!(
            r#"{{"device_id":"d","ts":{},"metrics":{{"t":1}}}}"#,
            NOW + 3_600_000
        );
        assert!(v
            .ndjson(future.as_bytes())
            .unwrap_err()
            .contains("future_timestamp"));
    }

    #[test]
    fn csv_lines() {
        let v = v();
        let r = v.csv(b"d-1,temp,1000,21.5,7").unwrap();
        assert_eq!(
            (
                r.device_id.as_str(),
                r.metric.as_str(),
                r.ts_ms,
                r.value,
                r.seq
            ),
            ("d-1", "temp", 1000, 21.5, 7)
        );
        assert_eq!(v.csv(b"d-1,temp,1000,21.5,").unwrap().seq, 0);
        for (line, want) in [
            ("d-1,temp,1000,21.5", "4 fields"),
            ("d-1,temp,1000,21.5,1,2", "6 fields"),
            ("a:b,temp,1000,1,1", "invalid_device_id"),
            ("d,bad metric,1000,1,1", "invalid_metric"),
            ("d,t,soon,1,1", "not an integer"),
            ("d,t,1000,warm,1", "non_numeric"),
            ("d,t,1000,NaN,1", "non_finite"),
            ("d,t,1000,inf,1", "non_finite"),
            ("d,t,-5,1,1", "negative"),
            ("d,t,1000,1,-1", "seq"),
        ] {
            let e = v.csv(line.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
        let future = format!("d,t,{},1,1", NOW + 3_600_000);
        assert!(v
            .csv(future.as_bytes())
            .unwrap_err()
            .contains("future_timestamp"));
    }

    #[test]
    fn csv_files_need_the_header() {
        let e = input(Format::Csv, "device,metric\nd,t,1,1,1\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("in:1") && e.contains(CSV_HEADER), "{e}");
        let i = input(
            Format::Csv,
            "device_id,metric,ts_ms,value,seq\r\nd,t,1,1,1\r\n\r\nd,t,oops,1,1",
        )
        .unwrap();
        assert_eq!(i.units(), 4);
        let v = v();
        assert!(i.unit(0, &v).unwrap().is_empty(), "header");
        assert_eq!(i.unit(1, &v).unwrap().len(), 1);
        assert!(i.unit(2, &v).unwrap().is_empty(), "blank line");
        assert!(i.unit(3, &v).is_err());
    }

    #[test]
    fn content_hash_tells_files_apart() {
        let a = input(Format::Ndjson, "x\n").unwrap();
        let b = input(Format::Ndjson, "y\n").unwrap();
        assert_ne!(a.content_hash(), b.content_hash());
        assert_eq!(
            a.content_hash(),
            input(Format::Ndjson, "x\n").unwrap().content_hash()
        );
    }
}
