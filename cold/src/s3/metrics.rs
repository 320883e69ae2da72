//! The S3 sink's Prometheus metrics. Labels come from small fixed sets: the
//! object kind and the S3 operation name; never a key, bucket or device.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Object kinds, the values of the `kind` label.
pub const KIND_BATCH: &str = "batch";
pub const KIND_DEAD_LETTER: &str = "dead_letter";
pub const KIND_REJECTED: &str = "rejected_batch";

#[derive(Clone)]
pub struct S3Metrics {
    /// Objects stored, by kind (`batch`, `dead_letter`, `rejected_batch`).
    pub objects_written: IntCounterVec,
    pub bytes_written: IntCounter,
    /// Failed requests (every failed attempt), by S3 operation.
    pub errors: IntCounterVec,
    /// Requests sent again after a retriable failure.
    pub retries: IntCounter,
    /// Objects uploaded in parts (at or above `multipart_threshold`).
    pub multipart_uploads: IntCounter,
    /// Time to store one object, retries included.
    pub put_duration: Histogram,
    /// 1 while the last request to S3 got an answer that was not a server or
    /// network failure, else 0.
    pub up: IntGauge,
}

impl S3Metrics {
    /// Creates the metrics and registers them into `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            objects_written: IntCounterVec::new(
                Opts::new(
                    "thermocline_cold_s3_objects_written_total",
                    "Objects stored in S3, by kind (batch, dead_letter, rejected_batch).",
                ),
                &["kind"],
            )?,
            bytes_written: IntCounter::new(
                "thermocline_cold_s3_bytes_written_total",
                "Bytes of objects stored in S3.",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "thermocline_cold_s3_errors_total",
                    "Failed S3 requests (each failed attempt), by operation.",
                ),
                &["op"],
            )?,
            retries: IntCounter::new(
                "thermocline_cold_s3_retries_total",
                "S3 requests sent again after a retriable failure.",
            )?,
            multipart_uploads: IntCounter::new(
                "thermocline_cold_s3_multipart_uploads_total",
                "Objects uploaded to S3 in parts (at or above the multipart threshold).",
            )?,
            put_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "thermocline_cold_s3_put_duration_seconds",
                    "Time to store one object in S3, retries included.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ]),
            )?,
            up: IntGauge::new(
                "thermocline_cold_s3_up",
                "1 while the last S3 request was answered (not a network or server failure).",
            )?,
        };
        registry.register(Box::new(m.objects_written.clone()))?;
        registry.register(Box::new(m.bytes_written.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.multipart_uploads.clone()))?;
        registry.register(Box::new(m.put_duration.clone()))?;
        registry.register(Box::new(m.up.clone()))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_metric_once() {
        let r = Registry::new();
        let m = S3Metrics::new(&r).unwrap();
        m.objects_written.with_label_values(&[KIND_BATCH]).inc();
        m.errors.with_label_values(&["PutObject"]).inc();
        let names: Vec<String> = r.gather().iter().map(|f| f.name().to_string()).collect();
        for n in [
            "thermocline_cold_s3_objects_written_total",
            "thermocline_cold_s3_bytes_written_total",
            "thermocline_cold_s3_errors_total",
            "thermocline_cold_s3_retries_total",
            "thermocline_cold_s3_multipart_uploads_total",
            "thermocline_cold_s3_put_duration_seconds",
            "thermocline_cold_s3_up",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert!(S3Metrics::new(&r).is_err(), "double registration must fail");
    }
}
