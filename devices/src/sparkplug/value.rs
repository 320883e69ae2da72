//! Sparkplug metric names and values → [`MetricName`] and `f64`.
//!
//! Names: a Sparkplug name is kept as sent when it is a valid [`MetricName`];
//! otherwise every character outside `[-:./_A-Za-z0-9]` becomes `_`
//! (`Inputs/Temp (°C)` → `Inputs/Temp__C_`). A name that is still invalid
//! after that (empty, longer than 128, or starting with something other than a
//! letter or digit, e.g. ` temp` → `_temp`) is `invalid_metric`. The
//! protocol's own metrics (`bdSeq`, `Node Control/…`, `Device Control/…`)
//! never become readings.
//!
//! Values, by datatype (the metric's own, else its BIRTH's, else the value's
//! wire type): Int8/16/32 from `int_value` as a 32-bit two's complement and
//! Int64 from `long_value` as 64-bit (as Tahu encodes them); UInt8–UInt64 as
//! unsigned; Float and Double; Boolean as 0/1. String, Text, DateTime, UUID,
//! DataSet, Bytes, File, Template and the array types are non-numeric. A
//! numeric datatype with a value of another wire type (a `string_value` for a
//! Float) is `malformed`, a non-finite float `non_finite`.

use super::proto::{payload::metric::Value, DataType};
use crate::{
    id::MetricName,
    reject::{RejectReason, Rejection},
    topic::truncate,
};

/// Whether `name` is one of the protocol's control metrics, never a reading.
pub fn is_control(name: &str) -> bool {
    name == "bdSeq" || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

/// `name` as a [`MetricName`], sanitised as the module documents.
pub fn sanitise(name: &str) -> Result<MetricName, Rejection> {
    if let Ok(valid) = MetricName::parse(name) {
        return Ok(valid);
    }
    let replaced: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    MetricName::parse(&replaced).map_err(|e| {
        Rejection::new(
            RejectReason::InvalidMetric,
            format!(
                "Sparkplug metric {:?}: {} (after replacing disallowed characters with '_')",
                truncate(name, 96),
                e.detail
            ),
        )
    })
}

/// A metric's value as a reading: `Ok(Some(v))` for a numeric one,
/// `Ok(None)` for a non-numeric datatype.
pub fn numeric(datatype: Option<u32>, value: &Value) -> Result<Option<f64>, Rejection> {
    let Some(datatype) = datatype else {
        return Ok(match value {
            Value::IntValue(v) => Some(f64::from(*v)),
            Value::LongValue(v) => Some(*v as f64),
            Value::FloatValue(v) => Some(finite(f64::from(*v))?),
            Value::DoubleValue(v) => Some(finite(*v)?),
            Value::BooleanValue(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        });
    };
    let Some(dt) = i32::try_from(datatype)
        .ok()
        .and_then(|d| DataType::try_from(d).ok())
    else {
        return Err(malformed(format!("unknown datatype {datatype}")));
    };
    let mismatch = || {
        malformed(format!(
            "datatype {} with a value of another type",
            dt.as_str_name()
        ))
    };
    let v = match dt {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => match value {
            Value::IntValue(v) => f64::from(*v as i32),
            Value::LongValue(v) => *v as i64 as f64,
            _ => return Err(mismatch()),
        },
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => match value {
            Value::IntValue(v) => f64::from(*v),
            Value::LongValue(v) => *v as f64,
            _ => return Err(mismatch()),
        },
        DataType::Float | DataType::Double => match value {
            Value::FloatValue(v) => finite(f64::from(*v))?,
            Value::DoubleValue(v) => finite(*v)?,
            _ => return Err(mismatch()),
        },
        DataType::Boolean => match value {
            Value::BooleanValue(b) => f64::from(u8::from(*b)),
            _ => return Err(mismatch()),
        },
        DataType::Unknown => return Err(malformed("datatype Unknown (0)")),
        _ => return Ok(None),
    };
    Ok(Some(v))
}

fn finite(v: f64) -> Result<f64, Rejection> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Rejection::new(
            RejectReason::NonFinite,
            format!("value {v} is not finite"),
        ))
    }
}

fn malformed(detail: impl Into<String>) -> Rejection {
    Rejection::new(RejectReason::Malformed, detail)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_kept_or_sanitised() {
        assert_eq!(sanitise("temp").unwrap().as_str(), "temp");
        assert_eq!(sanitise("Inputs/A").unwrap().as_str(), "Inputs/A");
        assert_eq!(
            sanitise("Inputs/Temp (°C)").unwrap().as_str(),
            "Inputs/Temp___C_"
        );
        assert_eq!(sanitise("a b").unwrap().as_str(), "a_b");
        for bad in ["", " temp", "_x", &"m".repeat(129)] {
            assert_eq!(
                sanitise(bad).unwrap_err().reason,
                RejectReason::InvalidMetric,
                "{bad:?}"
            );
        }
        assert!(is_control("bdSeq") && is_control("Node Control/Rebirth"));
        assert!(is_control("Device Control/Reboot") && !is_control("Properties/x"));
    }

    #[test]
    fn values_by_datatype() {
        let dt = |d: DataType| Some(d as u32);
        assert_eq!(
            numeric(dt(DataType::Int8), &Value::IntValue(u32::MAX)).unwrap(),
            Some(-1.0)
        );
        assert_eq!(
            numeric(dt(DataType::Int32), &Value::IntValue(0x8000_0000)).unwrap(),
            Some(f64::from(i32::MIN))
        );
        assert_eq!(
            numeric(dt(DataType::Int64), &Value::LongValue(u64::MAX)).unwrap(),
            Some(-1.0)
        );
        assert_eq!(
            numeric(dt(DataType::UInt32), &Value::LongValue(4_000_000_000)).unwrap(),
            Some(4e9)
        );
        assert_eq!(
            numeric(dt(DataType::UInt16), &Value::IntValue(65535)).unwrap(),
            Some(65535.0)
        );
        assert_eq!(
            numeric(dt(DataType::Float), &Value::FloatValue(1.5)).unwrap(),
            Some(1.5)
        );
        assert_eq!(
            numeric(dt(DataType::Double), &Value::DoubleValue(-2.25)).unwrap(),
            Some(-2.25)
        );
        assert_eq!(
            numeric(dt(DataType::Boolean), &Value::BooleanValue(true)).unwrap(),
            Some(1.0)
        );
        assert_eq!(
            numeric(dt(DataType::Boolean), &Value::BooleanValue(false)).unwrap(),
            Some(0.0)
        );
        for non in [
            DataType::String,
            DataType::Text,
            DataType::DateTime,
            DataType::Bytes,
        ] {
            assert_eq!(
                numeric(dt(non), &Value::StringValue("x".into())).unwrap(),
                None
            );
        }
        assert_eq!(numeric(None, &Value::IntValue(7)).unwrap(), Some(7.0));
        assert_eq!(
            numeric(None, &Value::StringValue("x".into())).unwrap(),
            None
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let dt = |d: DataType| Some(d as u32);
        let reason = |d, v| numeric(d, &v).unwrap_err().reason;
        assert_eq!(
            reason(dt(DataType::Float), Value::StringValue("1".into())),
            RejectReason::Malformed
        );
        assert_eq!(
            reason(dt(DataType::Boolean), Value::IntValue(1)),
            RejectReason::Malformed
        );
        assert_eq!(
            reason(Some(999), Value::IntValue(1)),
            RejectReason::Malformed
        );
        assert_eq!(reason(Some(0), Value::IntValue(1)), RejectReason::Malformed);
        assert_eq!(
            reason(dt(DataType::Float), Value::FloatValue(f32::NAN)),
            RejectReason::NonFinite
        );
        assert_eq!(
            reason(dt(DataType::Double), Value::DoubleValue(f64::INFINITY)),
            RejectReason::NonFinite
        );
    }

    proptest! {
        #[test]
        fn sanitised_names_are_valid_and_stable(name in "\\PC{0,140}") {
            if let Ok(m) = sanitise(&name) {
                // Valid names pass unchanged; sanitising is idempotent.
                prop_assert_eq!(sanitise(m.as_str()).unwrap(), m.clone());
                prop_assert_eq!(m.as_str().chars().count(), name.chars().count());
            }
        }

        #[test]
        fn signed_ints_round_trip(v in any::<i32>(), w in any::<i64>()) {
            prop_assert_eq!(
                numeric(Some(DataType::Int32 as u32), &Value::IntValue(v as u32)).unwrap(),
                Some(f64::from(v))
            );
            prop_assert_eq!(
                numeric(Some(DataType::Int64 as u32), &Value::LongValue(w as u64)).unwrap(),
                Some(w as f64)
            );
        }
    }
}
