//! The S3 sink: one Parquet object per batch, NDJSON dead letters, retries.
//!
//! - [`config`]: `[cold.s3]`, raw and validated, and the [`RetryPolicy`].
//! - `retry`: which failures are retriable, and the retry loop; the SDK's own
//!   retries are off so every attempt is counted and paced here.
//! - [`dead_letter`]: the NDJSON format of rejected messages and their keys.
//! - [`rejected`]: batches a store refused for good, set aside as JSON.
//! - [`metrics`]: the sink's Prometheus metrics, [`S3Metrics`].
//!
//! Keys (see [`Batch::s3_key`] and [`dead_letter_key`]) are deterministic, so
//! retrying or replaying a batch overwrites its object instead of adding one.
//! Objects at or above `multipart_threshold` are uploaded in parts, a few at a
//! time; an upload that fails is aborted so no parts are left behind.

pub mod config;
pub mod dead_letter;
pub mod metrics;
pub mod rejected;
mod retry;

use std::{future::Future, ops::Range, sync::Arc, time::Instant};

use aws_sdk_s3::{
    config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Credentials, Region},
    error::ProvideErrorMetadata,
    primitives::ByteStream,
    types::{
        BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
        CreateBucketConfiguration,
    },
    Client,
};
use bytes::Bytes;
use devices::DeviceId;
use secrecy::ExposeSecret;
use tokio::task::JoinSet;

pub use self::{
    config::{RawS3Config, RetryPolicy, S3Config},
    dead_letter::{dead_letter_key, DeadLetter},
    metrics::S3Metrics,
    rejected::RejectedBatch,
};
use self::{
    metrics::{KIND_BATCH, KIND_DEAD_LETTER, KIND_REJECTED},
    retry::{classify, status, Failure},
};
use crate::{
    row::{utc_date_hour, Batch, ColdRow, HOUR_MS},
    Error, Result,
};

/// S3's limit on parts per upload.
const MAX_PARTS: usize = 10_000;
/// Parts of one multipart upload sent at the same time.
const PART_CONCURRENCY: usize = 4;

const PARQUET_TYPE: &str = "application/vnd.apache.parquet";
const NDJSON_TYPE: &str = "application/x-ndjson";
const JSON_TYPE: &str = "application/json";

/// Writes and reads cold objects in one bucket. Cheap to clone.
#[derive(Clone)]
pub struct S3Sink {
    client: Client,
    cfg: Arc<S3Config>,
    metrics: S3Metrics,
}

impl S3Sink {
    /// Builds the client (static credentials when configured, else the SDK's
    /// default chain; HTTPS endpoints use the SDK's TLS client). Sends nothing.
    pub async fn connect(cfg: S3Config, metrics: S3Metrics) -> Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .operation_attempt_timeout(cfg.attempt_timeout)
                    .build(),
            );
        if let Some(c) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                &c.access_key_id,
                c.secret_access_key.expose_secret(),
                None,
                None,
                "thermocline-config",
            ));
        }
        if let Some(ep) = &cfg.endpoint {
            loader = loader.endpoint_url(ep);
        }
        let sdk = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.force_path_style)
            .build();
        tracing::info!(
            endpoint = cfg.endpoint.as_deref().unwrap_or("aws"),
            region = %cfg.region,
            bucket = %cfg.bucket,
            prefix = %cfg.prefix,
            static_credentials = cfg.credentials.is_some(),
            "s3 sink configured"
        );
        Ok(Self {
            client: Client::from_conf(s3),
            cfg: Arc::new(cfg),
            metrics,
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    pub fn metrics(&self) -> &S3Metrics {
        &self.metrics
    }

    /// The underlying client, for tools and tests.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn retry<T, Fut: Future<Output = Result<T, Failure>>>(
        &self,
        op: &'static str,
        key: &str,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T> {
        retry::run(&self.cfg.retry, &self.metrics, op, key, attempt).await
    }

    /// Creates the bucket unless it exists and is ours.
    ///
    /// HeadBucket first (no write permission needed when it exists); on 404,
    /// CreateBucket, where `BucketAlreadyOwnedByYou` and `BucketAlreadyExists`
    /// (which s3s-fs answers for an own bucket) count as success once a second
    /// HeadBucket confirms we can use it.
    pub async fn ensure_bucket(&self) -> Result<()> {
        let bucket = &self.cfg.bucket;
        if self.head_bucket().await? {
            return Ok(());
        }
        let location = (self.cfg.region != "us-east-1").then(|| {
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(self.cfg.region.as_str()))
                .build()
        });
        self.retry("CreateBucket", bucket, || {
            let req = self
                .client
                .create_bucket()
                .bucket(bucket)
                .set_create_bucket_configuration(location.clone());
            async move {
                match req.send().await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error().is_some_and(|se| {
                            se.is_bucket_already_exists() || se.is_bucket_already_owned_by_you()
                        }) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(classify(e)),
                }
            }
        })
        .await?;
        if self.head_bucket().await? {
            tracing::info!(bucket, "s3 bucket ready");
            Ok(())
        } else {
            Err(Error::S3 {
                op: "HeadBucket",
                key: bucket.clone(),
                message: "bucket still missing after CreateBucket".into(),
                retriable: true,
            })
        }
    }

    /// Whether the bucket exists (and we may use it).
    async fn head_bucket(&self) -> Result<bool> {
        let bucket = &self.cfg.bucket;
        self.retry("HeadBucket", bucket, || {
            let req = self.client.head_bucket().bucket(bucket);
            async move {
                match req.send().await {
                    Ok(_) => Ok(true),
                    Err(e) if status(&e) == Some(404) => Ok(false),
                    Err(e) => Err(classify(e)),
                }
            }
        })
        .await
    }

    /// Stores a batch as Parquet under [`Batch::s3_key`] and returns the key.
    /// Idempotent: the same batch always lands on the same key.
    pub async fn put_batch(&self, batch: &Batch) -> Result<String> {
        let key = batch.s3_key(&self.cfg.prefix);
        let body = crate::parquet::encode(batch)?;
        self.put(&key, body, PARQUET_TYPE, KIND_BATCH).await?;
        tracing::debug!(key, rows = batch.rows.len(), "s3 batch stored");
        Ok(key)
    }

    /// Stores dead letters as one NDJSON object (see [`dead_letter_key`]) and
    /// returns its key.
    pub async fn put_dead_letters(
        &self,
        gateway_id: &DeviceId,
        hour_start_ms: i64,
        id: &str,
        items: &[DeadLetter],
    ) -> Result<String> {
        let key = dead_letter_key(&self.cfg.prefix, gateway_id, hour_start_ms, id)?;
        let body = dead_letter::encode(items);
        self.put(&key, body, NDJSON_TYPE, KIND_DEAD_LETTER).await?;
        Ok(key)
    }

    /// Stores a batch a store refused for good (see [`rejected`]) and returns
    /// its key.
    pub async fn put_rejected_batch(&self, rejected: &RejectedBatch) -> Result<String> {
        let key = rejected.key(&self.cfg.prefix);
        let body = Bytes::from(rejected.encode()?);
        self.put(&key, body, JSON_TYPE, KIND_REJECTED).await?;
        Ok(key)
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str, kind: &str) -> Result<()> {
        let started = Instant::now();
        let len = body.len() as u64;
        let result = if len >= self.cfg.multipart_threshold {
            self.put_multipart(key, body, content_type).await
        } else {
            self.put_single(key, body, content_type).await
        };
        self.metrics
            .put_duration
            .observe(started.elapsed().as_secs_f64());
        result?;
        self.metrics
            .objects_written
            .with_label_values(&[kind])
            .inc();
        self.metrics.bytes_written.inc_by(len);
        Ok(())
    }

    async fn put_single(&self, key: &str, body: Bytes, content_type: &str) -> Result<()> {
        self.retry("PutObject", key, || {
            let req = self
                .client
                .put_object()
                .bucket(&self.cfg.bucket)
                .key(key)
                .content_type(content_type)
                .body(ByteStream::from(body.clone()));
            async move { req.send().await.map(|_| ()).map_err(classify) }
        })
        .await
    }

    async fn put_multipart(&self, key: &str, body: Bytes, content_type: &str) -> Result<()> {
        let upload_id = self
            .retry("CreateMultipartUpload", key, || {
                let req = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .content_type(content_type)
                    .checksum_algorithm(ChecksumAlgorithm::Crc32);
                async move {
                    let out = req.send().await.map_err(classify)?;
                    out.upload_id.ok_or_else(|| Failure {
                        message: "CreateMultipartUpload answered without an upload id".into(),
                        retriable: true,
                        answered: true,
                    })
                }
            })
            .await?;
        match self.upload_parts(key, &upload_id, body).await {
            Ok(()) => {
                self.metrics.multipart_uploads.inc();
                Ok(())
            }
            Err(e) => {
                self.abort_multipart(key, &upload_id).await;
                Err(e)
            }
        }
    }

    async fn upload_parts(&self, key: &str, upload_id: &str, body: Bytes) -> Result<()> {
        // S3 allows at most 10,000 parts: grow the part size for huge bodies.
        let part_size = usize::try_from(self.cfg.multipart_part_size)
            .unwrap_or(usize::MAX)
            .max(body.len().div_ceil(MAX_PARTS));
        let chunks: Vec<Bytes> = (0..body.len())
            .step_by(part_size)
            .map(|start| body.slice(start..body.len().min(start + part_size)))
            .collect();
        let mut pending = chunks.into_iter().zip(1i32..);
        let mut tasks = JoinSet::new();
        let mut parts = Vec::new();
        loop {
            while tasks.len() < PART_CONCURRENCY {
                let Some((chunk, number)) = pending.next() else {
                    break;
                };
                let (sink, key, upload_id) = (self.clone(), key.to_string(), upload_id.to_string());
                tasks.spawn(async move { sink.upload_part(&key, &upload_id, number, chunk).await });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            // On error, dropping `tasks` aborts the parts still in flight.
            let part = joined.map_err(|e| Error::S3 {
                op: "UploadPart",
                key: key.to_string(),
                message: format!("upload task failed: {e}"),
                retriable: true,
            })??;
            parts.push(part);
        }
        parts.sort_by_key(|p: &CompletedPart| p.part_number);
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let mut attempts = 0;
        let done = self
            .retry("CompleteMultipartUpload", key, || {
                attempts += 1;
                let retried = attempts > 1;
                let req = self
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(completed.clone());
                async move {
                    match req.send().await {
                        Ok(_) => Ok(true),
                        // An earlier attempt completed it but its answer was lost.
                        Err(e) if retried && e.code() == Some("NoSuchUpload") => Ok(false),
                        Err(e) => Err(classify(e)),
                    }
                }
            })
            .await?;
        if done || self.has_object(key).await? {
            Ok(())
        } else {
            Err(Error::S3 {
                op: "CompleteMultipartUpload",
                key: key.to_string(),
                message: "upload vanished before completing (NoSuchUpload)".into(),
                retriable: true,
            })
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        chunk: Bytes,
    ) -> Result<CompletedPart> {
        self.retry("UploadPart", key, || {
            let req = self
                .client
                .upload_part()
                .bucket(&self.cfg.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(chunk.clone()));
            async move {
                let out = req.send().await.map_err(classify)?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag)
                    .set_checksum_crc32(out.checksum_crc32)
                    .build())
            }
        })
        .await
    }

    /// Best effort: a failure leaves parts that a bucket lifecycle rule
    /// (AbortIncompleteMultipartUpload) cleans up.
    async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let r = self
            .retry("AbortMultipartUpload", key, || {
                let req = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .upload_id(upload_id);
                async move { req.send().await.map(|_| ()).map_err(classify) }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(key, upload_id, error = %e, "could not abort multipart upload");
        }
    }

    /// Whether an object exists at `key`.
    pub async fn has_object(&self, key: &str) -> Result<bool> {
        self.retry("HeadObject", key, || {
            let req = self.client.head_object().bucket(&self.cfg.bucket).key(key);
            async move {
                match req.send().await {
                    Ok(_) => Ok(true),
                    Err(e) if status(&e) == Some(404) => Ok(false),
                    Err(e) => Err(classify(e)),
                }
            }
        })
        .await
    }

    /// Reads a batch object back.
    pub async fn get_batch(&self, key: &str) -> Result<Vec<ColdRow>> {
        crate::parquet::decode(self.get(key).await?)
    }

    /// Reads a dead-letter object back.
    pub async fn get_dead_letters(&self, key: &str) -> Result<Vec<DeadLetter>> {
        dead_letter::decode(&self.get(key).await?)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.retry("GetObject", key, || {
            let req = self.client.get_object().bucket(&self.cfg.bucket).key(key);
            async move {
                let out = req.send().await.map_err(classify)?;
                let body = out.body.collect().await.map_err(|e| Failure {
                    message: format!("reading the body: {e}"),
                    retriable: true,
                    answered: false,
                })?;
                Ok(body.into_bytes())
            }
        })
        .await
    }

    /// Keys of the batch objects whose event hour overlaps `range` (ms since
    /// the epoch), in key order (= time order, then batch id).
    pub async fn list_batches(&self, range: Range<i64>) -> Result<Vec<String>> {
        self.list("readings", ".parquet", range).await
    }

    /// Reads a rejected batch back.
    pub async fn get_rejected_batch(&self, key: &str) -> Result<RejectedBatch> {
        RejectedBatch::decode(&self.get(key).await?)
    }

    /// Keys of the rejected-batch objects whose event hour overlaps `range`.
    pub async fn list_rejected_batches(&self, range: Range<i64>) -> Result<Vec<String>> {
        self.list("rejected", ".json", range).await
    }

    /// Keys of the dead-letter objects whose hour overlaps `range`.
    pub async fn list_dead_letters(&self, range: Range<i64>) -> Result<Vec<String>> {
        self.list("dead-letter", ".ndjson", range).await
    }

    /// One paginated ListObjectsV2 from the first hour's folder up to the end
    /// hour's: `date=YYYY-MM-DD/hour=HH` sorts lexicographically in time order.
    async fn list(&self, dir: &str, suffix: &str, range: Range<i64>) -> Result<Vec<String>> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let root = format!("{}{dir}/", self.cfg.prefix);
        let hour_dir = |ms: i64| {
            let (date, hour) = utc_date_hour(ms);
            format!("{root}date={date}/hour={hour:02}/")
        };
        let start = range.start.max(MIN_LISTABLE_MS);
        let first = hour_dir(start.div_euclid(HOUR_MS) * HOUR_MS);
        // Keys at or past the hour after the last one in range are out.
        let last_hour = (range.end - 1).div_euclid(HOUR_MS) * HOUR_MS;
        let stop = (last_hour < MAX_LISTABLE_MS).then(|| hour_dir(last_hour + HOUR_MS));
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .retry("ListObjectsV2", &root, || {
                    let req = self
                        .client
                        .list_objects_v2()
                        .bucket(&self.cfg.bucket)
                        .prefix(&root)
                        .start_after(&first)
                        .max_keys(self.cfg.list_page_size)
                        .set_continuation_token(token.clone());
                    async move { req.send().await.map_err(classify) }
                })
                .await?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                if stop.as_deref().is_some_and(|s| key >= s) {
                    return Ok(keys);
                }
                if key.ends_with(suffix) {
                    keys.push(key.to_string());
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() || page.is_truncated() != Some(true) {
                return Ok(keys);
            }
        }
    }
}

/// 0001-01-01T00:00Z and the last hour of 9999: the years that format as four
/// digits, so folder names sort in time order.
const MIN_LISTABLE_MS: i64 = -62_135_596_800_000;
const MAX_LISTABLE_MS: i64 = 253_402_297_200_000;
