//! The S3 sink against the real S3-compatible server (s3s-fs locally).
//!
//! Every test writes under its own prefix (or its own bucket) and deletes what
//! it wrote; objects are checked with the raw SDK client, not only through the
//! sink's own read methods.

use std::time::Duration;

use aws_sdk_s3::{
    types::{Delete, ObjectIdentifier},
    Client,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use bytes::Bytes;
use cold::{
    row::{Batch, BatchId, ColdRow, SpoolPos, HOUR_MS},
    s3::{DeadLetter, RawS3Config, S3Metrics, S3Sink},
    Error,
};
use devices::{DeviceId, MetricName, RejectReason};
use prometheus::Registry;
use secrecy::SecretString;

use crate::support::{env_or, unique};

const BUCKET: &str = "thermocline-it";
const SECRET: &str = "thermocline-secret";
/// 2024-11-25T10:00Z.
const H10: i64 = 1_732_528_800_000;

fn raw(prefix: &str) -> RawS3Config {
    RawS3Config {
        endpoint: Some(env_or(
            "THERMOCLINE_TEST_S3_ENDPOINT",
            "http://127.0.0.1:9000",
        )),
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        access_key_id: Some(env_or("THERMOCLINE_TEST_S3_ACCESS_KEY", "thermocline")),
        secret_access_key: Some(SecretString::from(env_or(
            "THERMOCLINE_TEST_S3_SECRET_KEY",
            SECRET,
        ))),
        retry_min_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(50),
        max_attempts: 3,
        ..RawS3Config::default()
    }
}

async fn sink_with(raw: RawS3Config) -> S3Sink {
    let metrics = S3Metrics::new(&Registry::new()).unwrap();
    S3Sink::connect(raw.validate().unwrap(), metrics)
        .await
        .unwrap()
}

/// A sink on the shared test bucket under a fresh prefix.
async fn sink(test: &str) -> S3Sink {
    let s = sink_with(raw(&format!("{}/", unique(test)))).await;
    s.ensure_bucket().await.unwrap();
    s
}

fn gw() -> DeviceId {
    DeviceId::parse("gw-1").unwrap()
}

fn batch(segment: u64, hour_start_ms: i64, rows: usize) -> Batch {
    let devices: Vec<DeviceId> = (0..7)
        .map(|i| DeviceId::parse(&format!("dev-{i}")).unwrap())
        .collect();
    let metrics = [
        MetricName::parse("temp").unwrap(),
        MetricName::parse("urn:dev:hum/rel").unwrap(),
    ];
    let rows = (0..rows)
        .map(|i| {
            let ts_ms = hour_start_ms + (i as i64 * 997) % HOUR_MS;
            ColdRow {
                device_id: devices[i % devices.len()].clone(),
                metric: metrics[i % 2].clone(),
                ts_ms,
                value: i as f64 * 0.25 - 40.0,
                seq: i as u64,
                gateway_id: gw(),
                received_at_ms: ts_ms + 3,
            }
        })
        .collect();
    Batch {
        id: BatchId::new(&gw(), SpoolPos { segment, offset: 0 }, hour_start_ms),
        hour_start_ms,
        rows,
    }
}

/// Keys under `prefix`, via the raw client.
async fn raw_keys(client: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            keys.push(o.key().unwrap().to_string());
        }
    }
    keys
}

/// Deletes everything under the sink's prefix; returns how many objects.
async fn cleanup(s: &S3Sink) -> usize {
    let (client, bucket) = (s.client(), &s.config().bucket);
    assert!(
        !s.config().prefix.is_empty(),
        "never empty the whole bucket"
    );
    let keys = raw_keys(client, bucket, &s.config().prefix).await;
    for chunk in keys.chunks(1000) {
        let objects = chunk
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
            .collect();
        client
            .delete_objects()
            .bucket(bucket)
            .delete(
                Delete::builder()
                    .set_objects(Some(objects))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    assert!(raw_keys(client, bucket, &s.config().prefix)
        .await
        .is_empty());
    keys.len()
}

#[tokio::test]
async fn bucket_creation_is_idempotent() {
    let mut r = raw("");
    r.bucket = unique("tc-it-bucket");
    let s = sink_with(r).await;
    let bucket = s.config().bucket.clone();
    assert!(s
        .client()
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .is_err());
    s.ensure_bucket().await.unwrap();
    s.ensure_bucket().await.unwrap();
    s.client()
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    // A second sink (another gateway) on the same bucket.
    let mut r2 = raw("");
    r2.bucket = bucket.clone();
    sink_with(r2).await.ensure_bucket().await.unwrap();
    assert_eq!(
        s.metrics()
            .errors
            .with_label_values(&["CreateBucket"])
            .get(),
        0
    );
    s.client()
        .delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();

    // Two gateways racing on a fresh bucket: both see it missing, both create
    // it, the loser's BucketAlreadyExists/OwnedByYou still counts as success.
    let mut r = raw("");
    r.bucket = unique("tc-it-race");
    let (a, b) = (sink_with(r.clone()).await, sink_with(r).await);
    let (ra, rb) = tokio::join!(a.ensure_bucket(), b.ensure_bucket());
    ra.unwrap();
    rb.unwrap();
    a.client()
        .delete_bucket()
        .bucket(&a.config().bucket)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn batch_round_trips_at_its_key() {
    let s = sink("batch").await;
    let b = batch(1, H10, 500);
    let key = s.put_batch(&b).await.unwrap();
    assert_eq!(
        key,
        format!(
            "{}readings/date=2024-11-25/hour=10/gw-1-00000001-0000000000-481258.parquet",
            s.config().prefix
        )
    );
    assert_eq!(
        raw_keys(s.client(), BUCKET, &s.config().prefix).await,
        vec![key.clone()]
    );
    let head = s
        .client()
        .head_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    let len = head.content_length().unwrap() as u64;
    assert_eq!(head.content_type(), Some("application/vnd.apache.parquet"));
    assert!(s.has_object(&key).await.unwrap());
    assert!(!s.has_object(&format!("{key}.nope")).await.unwrap());
    assert_eq!(s.get_batch(&key).await.unwrap(), b.rows);

    let m = s.metrics();
    assert_eq!(m.objects_written.with_label_values(&["batch"]).get(), 1);
    assert_eq!(m.bytes_written.get(), len);
    assert_eq!(m.multipart_uploads.get(), 0);
    assert_eq!(m.put_duration.get_sample_count(), 1);
    assert_eq!(m.up.get(), 1);
    assert_eq!(cleanup(&s).await, 1);
}

#[tokio::test]
async fn reputting_a_batch_leaves_one_object() {
    let s = sink("reput").await;
    let b = batch(2, H10, 100);
    let k1 = s.put_batch(&b).await.unwrap();
    let k2 = s.put_batch(&b).await.unwrap();
    assert_eq!(k1, k2);
    assert_eq!(
        raw_keys(s.client(), BUCKET, &s.config().prefix).await,
        vec![k1.clone()]
    );
    assert_eq!(s.get_batch(&k1).await.unwrap(), b.rows);
    assert_eq!(
        s.metrics()
            .objects_written
            .with_label_values(&["batch"])
            .get(),
        2
    );
    assert_eq!(cleanup(&s).await, 1);
}

#[tokio::test]
async fn large_batch_goes_up_in_parts() {
    let mut r = raw(&format!("{}/", unique("multipart")));
    r.multipart_threshold = bytesize::ByteSize::mib(5);
    r.multipart_part_size = bytesize::ByteSize::mib(5);
    let s = sink_with(r).await;
    s.ensure_bucket().await.unwrap();
    // Random values, seqs and arrival times: zstd cannot shrink them much.
    let mut b = batch(3, H10, 300_000);
    for row in &mut b.rows {
        row.value = rand::random::<f64>() * 1e6;
        row.seq = rand::random();
        row.received_at_ms = rand::random();
    }
    let encoded = cold::parquet::encode(&b).unwrap().len() as u64;
    assert!(
        encoded > 6 * 1024 * 1024 && encoded < 10 * 1024 * 1024,
        "{encoded} bytes: tune the row count"
    );
    let key = s.put_batch(&b).await.unwrap();
    let m = s.metrics();
    assert_eq!(m.multipart_uploads.get(), 1);
    assert_eq!(m.bytes_written.get(), encoded);
    assert_eq!(m.errors.with_label_values(&["UploadPart"]).get(), 0);
    let head = s
        .client()
        .head_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(encoded as i64));
    assert_eq!(s.get_batch(&key).await.unwrap(), b.rows);
    // No upload left open.
    let open = s
        .client()
        .list_multipart_uploads()
        .bucket(BUCKET)
        .prefix(&s.config().prefix)
        .send()
        .await
        .map(|o| o.uploads().len())
        .unwrap_or(0);
    assert_eq!(open, 0);
    assert_eq!(cleanup(&s).await, 1);
}

#[tokio::test]
async fn list_batches_finds_hours_in_range() {
    let s = sink("list").await;
    let h23 = H10 + 13 * HOUR_MS;
    let next_day = H10 + 14 * HOUR_MS;
    let batches = [
        batch(11, H10, 3),
        batch(12, H10, 3),
        batch(13, H10 + 2 * HOUR_MS, 3),
        batch(14, h23, 3),
        batch(15, next_day, 3),
    ];
    let mut keys = Vec::new();
    for b in &batches {
        keys.push(s.put_batch(b).await.unwrap());
    }
    assert!(keys[4].contains("/date=2024-11-26/hour=00/"), "{}", keys[4]);
    let dl = s
        .put_dead_letters(&gw(), H10, "seg-1", &[dead_letter(b"x")])
        .await
        .unwrap();

    let all = s.list_batches(i64::MIN..i64::MAX).await.unwrap();
    assert_eq!(all, keys, "all batches, in time order, no dead letters");
    let k = |i: &[usize]| i.iter().map(|&i| keys[i].clone()).collect::<Vec<_>>();
    assert_eq!(s.list_batches(H10..H10 + 1).await.unwrap(), k(&[0, 1]));
    // Hours overlapping the range, partial hours included.
    assert_eq!(
        s.list_batches(H10 + HOUR_MS / 2..H10 + 2 * HOUR_MS + 1)
            .await
            .unwrap(),
        k(&[0, 1, 2])
    );
    assert!(s
        .list_batches(H10 + HOUR_MS..H10 + 2 * HOUR_MS)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list_batches(h23..next_day + HOUR_MS).await.unwrap(),
        k(&[3, 4])
    );
    assert!(s.list_batches(H10..H10).await.unwrap().is_empty());
    assert_eq!(
        s.list_dead_letters(i64::MIN..i64::MAX).await.unwrap(),
        vec![dl]
    );

    // Same answers when every page holds two keys.
    let mut small = s.config().clone();
    small.list_page_size = 2;
    let paged = S3Sink::connect(small, S3Metrics::new(&Registry::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(paged.list_batches(i64::MIN..i64::MAX).await.unwrap(), keys);
    assert_eq!(
        paged.list_batches(H10 + 1..h23 + 1).await.unwrap(),
        k(&[0, 1, 2, 3])
    );
    assert_eq!(cleanup(&s).await, 6);
}

fn dead_letter(payload: &[u8]) -> DeadLetter {
    DeadLetter {
        topic: "devices/d1/telemetry".into(),
        payload: Bytes::copy_from_slice(payload),
        reason: RejectReason::Malformed,
        detail: "expected value at line 1 column 1".into(),
        received_at_ms: H10 + 42,
    }
}

#[tokio::test]
async fn dead_letters_round_trip_as_ndjson() {
    let s = sink("dead").await;
    let items = vec![
        dead_letter(b"not json"),
        DeadLetter {
            topic: "devices/bad id/telemetry".into(),
            payload: Bytes::from_static(&[0xff, 0x00, b'\n', 0x80]),
            reason: RejectReason::InvalidDeviceId,
            detail: "device id contains ' '".into(),
            received_at_ms: H10 + 43,
        },
    ];
    let key = s
        .put_dead_letters(&gw(), H10 + 5, "00000007-0000000100", &items)
        .await
        .unwrap();
    assert_eq!(
        key,
        format!(
            "{}dead-letter/date=2024-11-25/hour=10/gw-1-00000007-0000000100.ndjson",
            s.config().prefix
        )
    );
    // Parse the object as any NDJSON consumer would.
    let body = s
        .client()
        .get_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let text = std::str::from_utf8(&body).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, item) in lines.iter().zip(&items) {
        assert_eq!(line["topic"], item.topic.as_str());
        assert_eq!(line["reason"], item.reason.as_str());
        assert_eq!(line["detail"], item.detail.as_str());
        assert_eq!(line["received_at_ms"], item.received_at_ms);
        let payload = STANDARD.decode(line["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload, item.payload);
    }
    assert_eq!(s.get_dead_letters(&key).await.unwrap(), items);
    assert_eq!(
        s.metrics()
            .objects_written
            .with_label_values(&["dead_letter"])
            .get(),
        1
    );
    assert!(s
        .put_dead_letters(&gw(), H10, "../escape", &items)
        .await
        .is_err());
    assert_eq!(cleanup(&s).await, 1);
}

#[tokio::test]
async fn wrong_secret_is_a_clear_permanent_error() {
    let good = sink("badsecret").await;
    let wrong = "definitely-not-the-secret";
    let mut r = raw(&good.config().prefix);
    r.secret_access_key = Some(SecretString::from(wrong));
    let s = sink_with(r).await;

    let err = s.put_batch(&batch(1, H10, 3)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::S3 {
                op: "PutObject",
                retriable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.contains("SignatureDoesNotMatch (HTTP 403): check cold.s3.secret_access_key"),
        "{msg}"
    );
    for secret in [wrong, SECRET] {
        assert!(!msg.contains(secret) && !format!("{err:?}").contains(secret));
    }
    // HEAD answers carry no error body: still a clear, permanent error.
    let err = s.ensure_bucket().await.unwrap_err();
    assert!(!err.is_retriable());
    assert!(
        err.to_string().contains("access denied (HTTP 403)"),
        "{err}"
    );
    let m = s.metrics();
    assert_eq!(m.retries.get(), 0);
    assert_eq!(m.errors.with_label_values(&["PutObject"]).get(), 1);
    assert_eq!(m.up.get(), 1, "the server answered");
    assert_eq!(cleanup(&good).await, 0, "nothing was written");
}

#[tokio::test]
async fn missing_bucket_and_key_are_permanent_errors() {
    let mut r = raw("x/");
    r.bucket = unique("tc-it-missing");
    let s = sink_with(r).await;
    // (s3s-fs creates a missing bucket on PutObject, so probe with a read.)
    let err = s.list_batches(0..HOUR_MS).await.unwrap_err();
    assert!(
        matches!(&err, Error::S3 { op: "ListObjectsV2", retriable: false, message, .. } if message.contains("NoSuchBucket")),
        "{err:?}"
    );
    assert_eq!(s.metrics().retries.get(), 0);

    let s = sink("nokey").await;
    let err = s.get_batch("nope/none.parquet").await.unwrap_err();
    assert!(
        matches!(&err, Error::S3 { op: "GetObject", retriable: false, message, .. } if message.contains("NoSuchKey")),
        "{err:?}"
    );
    assert_eq!(s.metrics().retries.get(), 0);
}

#[tokio::test]
async fn unreachable_endpoint_is_retried_then_retriable() {
    // A port with nothing listening: bind, note it, let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut r = raw("x/");
    r.endpoint = Some(format!("http://127.0.0.1:{port}"));
    r.retry_min_delay = Duration::from_millis(1);
    r.retry_max_delay = Duration::from_millis(5);
    r.max_attempts = 3;
    let s = sink_with(r).await;
    let started = std::time::Instant::now();
    let err = s.put_batch(&batch(1, H10, 3)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&err, Error::S3 { op: "PutObject", retriable: true, message, .. }
            if message.contains("Connection refused") && message.contains("gave up after 3 attempts")),
        "{err:?}"
    );
    assert!(err.is_retriable());
    let m = s.metrics();
    assert_eq!(m.retries.get(), 2);
    assert_eq!(m.errors.with_label_values(&["PutObject"]).get(), 3);
    assert_eq!(m.up.get(), 0);
    assert_eq!(m.objects_written.with_label_values(&["batch"]).get(), 0);
}
