//! Batches ⇄ Parquet: one file per batch, one row group, zstd-compressed.
//!
//! The schema is fixed and every column is required (non-nullable):
//!
//! | column           | Arrow type | Parquet physical / logical |
//! |------------------|------------|----------------------------|
//! | `device_id`      | Utf8       | BYTE_ARRAY / STRING        |
//! | `metric`         | Utf8       | BYTE_ARRAY / STRING        |
//! | `ts_ms`          | Int64      | INT64                      |
//! | `value`          | Float64    | DOUBLE                     |
//! | `seq`            | UInt64     | INT64 / INT(64, unsigned)  |
//! | `gateway_id`     | Utf8       | BYTE_ARRAY / STRING        |
//! | `received_at_ms` | Int64      | INT64                      |
//!
//! [`decode`] checks the schema and re-validates every id, so a file written by
//! something else (or damaged) is an [`Error::InvalidData`], never a bad row.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use devices::{DeviceId, MetricName};
use parquet::{
    arrow::{arrow_reader::ParquetRecordBatchReaderBuilder, ArrowWriter},
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};

use crate::{
    row::{Batch, ColdRow},
    Error, Result,
};

/// Column names, in file order.
pub const COLUMNS: [&str; 7] = [
    "device_id",
    "metric",
    "ts_ms",
    "value",
    "seq",
    "gateway_id",
    "received_at_ms",
];

/// zstd level 3: the library default, a good size/CPU trade for telemetry.
const ZSTD_LEVEL: i32 = 3;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let types = [
        DataType::Utf8,
        DataType::Utf8,
        DataType::Int64,
        DataType::Float64,
        DataType::UInt64,
        DataType::Utf8,
        DataType::Int64,
    ];
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .zip(types)
            .map(|(name, ty)| Field::new(*name, ty, false))
            .collect::<Vec<_>>(),
    ))
});

/// The Arrow schema of a batch file.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Encodes a batch as one Parquet file (zstd).
pub fn encode(batch: &Batch) -> Result<Bytes> {
    let rows = &batch.rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.device_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.metric.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts_ms))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.seq))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.gateway_id.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.received_at_ms),
        )),
    ];
    let record = RecordBatch::try_new(schema(), columns)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
        // One row group per file: batches are bounded by the batcher.
        .set_max_row_group_row_count(None)
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(props))?;
    writer.write(&record)?;
    Ok(Bytes::from(writer.into_inner()?))
}

/// Decodes a batch file written by [`encode`].
pub fn decode(bytes: Bytes) -> Result<Vec<ColdRow>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    check_schema(reader.schema())?;
    let mut rows = Vec::with_capacity(
        usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0),
    );
    for record in reader.build()? {
        let record = record.map_err(|e| invalid(format!("unreadable row group: {e}")))?;
        decode_record(&record, &mut rows)?;
    }
    Ok(rows)
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidData {
        what: "parquet batch".into(),
        reason: reason.into(),
    }
}

fn check_schema(found: &Schema) -> Result<()> {
    let names: Vec<&str> = found.fields().iter().map(|f| f.name().as_str()).collect();
    if names != COLUMNS {
        return Err(invalid(format!(
            "columns are {names:?}, expected {COLUMNS:?}"
        )));
    }
    for (want, got) in SCHEMA.fields().iter().zip(found.fields()) {
        if want.data_type() != got.data_type() {
            return Err(invalid(format!(
                "column {} is {}, expected {}",
                got.name(),
                got.data_type(),
                want.data_type()
            )));
        }
    }
    Ok(())
}

fn column<T: 'static>(record: &RecordBatch, i: usize) -> Result<&T> {
    let col = record.column(i);
    if col.null_count() > 0 {
        return Err(invalid(format!("column {} has nulls", COLUMNS[i])));
    }
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| invalid(format!("column {} has an unexpected type", COLUMNS[i])))
}

fn decode_record(record: &RecordBatch, out: &mut Vec<ColdRow>) -> Result<()> {
    let device = column::<StringArray>(record, 0)?;
    let metric = column::<StringArray>(record, 1)?;
    let ts = column::<Int64Array>(record, 2)?;
    let value = column::<Float64Array>(record, 3)?;
    let seq = column::<UInt64Array>(record, 4)?;
    let gateway = column::<StringArray>(record, 5)?;
    let received = column::<Int64Array>(record, 6)?;
    // Ids repeat heavily within a batch: reuse the previous row's Arc when equal.
    let mut last: Option<ColdRow> = None;
    for i in 0..record.num_rows() {
        let (d, m, g) = (device.value(i), metric.value(i), gateway.value(i));
        let device_id = match &last {
            Some(p) if p.device_id.as_str() == d => p.device_id.clone(),
            _ => DeviceId::parse(d).map_err(|e| invalid(format!("row {i}: {e}")))?,
        };
        let metric = match &last {
            Some(p) if p.metric.as_str() == m => p.metric.clone(),
            _ => MetricName::parse(m).map_err(|e| invalid(format!("row {i}: {e}")))?,
        };
        let gateway_id = match &last {
            Some(p) if p.gateway_id.as_str() == g => p.gateway_id.clone(),
            _ => DeviceId::parse(g).map_err(|e| invalid(format!("row {i} gateway: {e}")))?,
        };
        let row = ColdRow {
            device_id,
            metric,
            ts_ms: ts.value(i),
            value: value.value(i),
            seq: seq.value(i),
            gateway_id,
            received_at_ms: received.value(i),
        };
        out.push(row.clone());
        last = Some(row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use proptest::prelude::*;

    use super::*;
    use crate::row::{BatchId, SpoolPos};

    fn batch(rows: Vec<ColdRow>) -> Batch {
        let gw = DeviceId::parse("gw-1").unwrap();
        Batch {
            id: BatchId::new(&gw, SpoolPos::default(), 0),
            hour_start_ms: 0,
            rows,
        }
    }

    fn row(device: &str, metric: &str, ts_ms: i64, value: f64, seq: u64) -> ColdRow {
        ColdRow {
            device_id: DeviceId::parse(device).unwrap(),
            metric: MetricName::parse(metric).unwrap(),
            ts_ms,
            value,
            seq,
            gateway_id: DeviceId::parse("gw-1").unwrap(),
            received_at_ms: ts_ms.wrapping_add(17),
        }
    }

    /// Equality that also tells -0.0 from 0.0 (bit-exact values).
    fn assert_same(a: &[ColdRow], b: &[ColdRow]) {
        assert_eq!(a, b);
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.value.to_bits(), y.value.to_bits(), "{x:?} vs {y:?}");
        }
    }

    #[test]
    fn extremes_round_trip() {
        let rows = vec![
            row("d1", "temp", i64::MIN, f64::MAX, u64::MAX),
            row("d1", "temp", i64::MAX, f64::MIN, 0),
            row("d2", "a:b/c.d_e-f", 0, f64::MIN_POSITIVE, 1),
            row("d2", "x", -1, -0.0, u64::MAX - 1),
            row(&"D".repeat(64), &"m".repeat(128), 1, 5e-324, 42),
            row("d3", "x", 1_732_530_000_123, 21.5, 7),
        ];
        let bytes = encode(&batch(rows.clone())).unwrap();
        assert_same(&decode(bytes).unwrap(), &rows);
    }

    #[test]
    fn empty_batch_round_trips() {
        let bytes = encode(&batch(vec![])).unwrap();
        assert!(decode(bytes).unwrap().is_empty());
    }

    #[test]
    fn file_has_the_documented_schema_and_zstd() {
        let bytes = encode(&batch(vec![row("d1", "temp", 1, 2.0, 3)])).unwrap();
        let reader = SerializedFileReader::new(bytes).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 1);
        assert_eq!(meta.file_metadata().num_rows(), 1);
        let descr = meta.file_metadata().schema_descr();
        let names: Vec<&str> = descr.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, COLUMNS);
        for c in descr.columns() {
            assert!(!c.self_type().is_optional(), "{} is nullable", c.name());
        }
        let seq = descr.column(4);
        assert_eq!(seq.physical_type(), parquet::basic::Type::INT64);
        assert!(matches!(
            seq.logical_type_ref(),
            Some(parquet::basic::LogicalType::Integer(t)) if t.bit_width == 64 && !t.is_signed
        ));
        for col in meta.row_group(0).columns() {
            assert!(matches!(col.compression(), Compression::ZSTD(_)));
        }
    }

    #[test]
    fn garbage_is_invalid_data() {
        for junk in [
            Bytes::new(),
            Bytes::from_static(b"PAR1 not really"),
            Bytes::from(vec![0u8; 4096]),
        ] {
            let err = decode(junk).unwrap_err();
            assert!(matches!(err, Error::InvalidData { .. }), "{err}");
        }
        // A valid file cut short.
        let bytes = encode(&batch(vec![row("d1", "temp", 1, 2.0, 3)])).unwrap();
        let err = decode(bytes.slice(..bytes.len() - 10)).unwrap_err();
        assert!(matches!(err, Error::InvalidData { .. }), "{err}");
    }

    fn write_foreign(schema: SchemaRef, columns: Vec<ArrayRef>) -> Bytes {
        let record = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        w.write(&record).unwrap();
        Bytes::from(w.into_inner().unwrap())
    }

    #[test]
    fn wrong_schema_is_invalid_data() {
        let s = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let bytes = write_foreign(s, vec![Arc::new(Int64Array::from(vec![1]))]);
        let err = decode(bytes).unwrap_err().to_string();
        assert!(err.contains("columns are [\"x\"]"), "{err}");

        // Right names, value as Int64.
        let mut fields: Vec<Field> = SCHEMA.fields().iter().map(|f| (**f).clone()).collect();
        fields[3] = Field::new("value", DataType::Int64, false);
        let s = Arc::new(Schema::new(fields));
        let mut cols = columns_of(&[("d1", "m")]);
        cols[3] = Arc::new(Int64Array::from(vec![1]));
        let err = decode(write_foreign(s, cols)).unwrap_err().to_string();
        assert!(err.contains("column value is Int64"), "{err}");
    }

    fn columns_of(ids: &[(&str, &str)]) -> Vec<ArrayRef> {
        let n = ids.len();
        vec![
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| i.0))),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|i| i.1))),
            Arc::new(Int64Array::from(vec![1; n])),
            Arc::new(Float64Array::from(vec![1.0; n])),
            Arc::new(UInt64Array::from(vec![1; n])),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "gw-1"))),
            Arc::new(Int64Array::from(vec![1; n])),
        ]
    }

    #[test]
    fn invalid_ids_are_invalid_data() {
        for (d, m) in [("../etc", "m"), ("d1", "bad metric"), ("", "m")] {
            let bytes = write_foreign(schema(), columns_of(&[("ok", "ok"), (d, m)]));
            let err = decode(bytes).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidData { reason, .. } if reason.starts_with("row 1")),
                "{err}"
            );
        }
    }

    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(-0.0),
            Just(5e-324),
            any::<f64>().prop_filter("finite", |v| v.is_finite()),
        ]
    }

    fn row_strategy() -> impl Strategy<Value = ColdRow> {
        (
            "[A-Za-z0-9][A-Za-z0-9._-]{0,63}",
            "[A-Za-z0-9][-:./_A-Za-z0-9]{0,20}",
            any::<i64>(),
            value_strategy(),
            any::<u64>(),
            "[a-z0-9][a-z0-9-]{0,10}",
            any::<i64>(),
        )
            .prop_map(|(d, m, ts_ms, value, seq, g, received_at_ms)| ColdRow {
                device_id: DeviceId::parse(&d).unwrap(),
                metric: MetricName::parse(&m).unwrap(),
                ts_ms,
                value,
                seq,
                gateway_id: DeviceId::parse(&g).unwrap(),
                received_at_ms,
            })
    }

    proptest! {
        #[test]
        fn round_trip(rows in proptest::collection::vec(row_strategy(), 0..200)) {
            let bytes = encode(&batch(rows.clone())).unwrap();
            assert_same(&decode(bytes).unwrap(), &rows);
        }
    }
}
