//! [`ClickHouseSink`]: schema, one RowBinary insert per batch, the `batches`
//! ledger, health.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    config::ClickHouseConfig,
    connect,
    metrics::ClickHouseMetrics,
    retry::retry,
    schema::{self, ColumnRow},
};
use crate::{
    row::{Batch, BatchId},
    Result,
};

/// Writes batches to ClickHouse and answers what landed.
///
/// Cheap to clone; clones share the connection pool, metrics and health.
#[derive(Clone)]
pub struct ClickHouseSink {
    pub(super) client: ::clickhouse::Client,
    pub(super) cfg: Arc<ClickHouseConfig>,
    pub(super) metrics: ClickHouseMetrics,
    last_error: Arc<Mutex<Option<String>>>,
}

/// What `/readyz` reports for ClickHouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickHouseHealth {
    /// Whether the last operation succeeded.
    pub ok: bool,
    /// The last failure's message (no credentials), until an operation succeeds.
    pub last_error: Option<String>,
}

/// One `readings` row as sent (RowBinary, borrowed from the batch).
#[derive(clickhouse::Row, Serialize)]
struct ReadingRow<'a> {
    device_id: &'a str,
    metric: &'a str,
    ts_ms: i64,
    value: f64,
    seq: u64,
    gateway_id: &'a str,
    received_at_ms: i64,
}

/// One `batches` row: what landed.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, Serialize, Deserialize)]
pub struct BatchRecord {
    pub batch_id: String,
    pub s3_key: String,
    pub hour_start_ms: i64,
    pub row_count: u64,
    pub min_ts_ms: i64,
    pub max_ts_ms: i64,
    pub inserted_at_ms: i64,
}

impl ClickHouseSink {
    /// Builds the client (no round trip yet: see [`Self::ping`] and
    /// [`Self::ensure_schema`]).
    pub fn connect(cfg: ClickHouseConfig, metrics: ClickHouseMetrics) -> Result<Self> {
        let client = connect::client(&cfg)?;
        Ok(Self {
            client,
            cfg: Arc::new(cfg),
            metrics,
            last_error: Arc::new(Mutex::new(None)),
        })
    }

    pub fn config(&self) -> &ClickHouseConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> &ClickHouseMetrics {
        &self.metrics
    }

    pub fn database(&self) -> &str {
        &self.cfg.database
    }

    pub fn health(&self) -> ClickHouseHealth {
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ClickHouseHealth {
            ok: last_error.is_none(),
            last_error,
        }
    }

    /// `SELECT 1`, with retries.
    pub async fn ping(&self) -> Result<()> {
        let one: u8 = self
            .run("ping", || async {
                self.timed(self.client.query("SELECT toUInt8(1)").fetch_one::<u8>())
                    .await
            })
            .await?;
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Creates the database and both tables when absent (idempotent), then
    /// checks that existing tables have the columns and types the sink
    /// writes. Statements: [`schema::statements`]; on a cluster
    /// [`schema::shard_statements`] on every shard, then a check that the
    /// entry server's cluster has as many shards as `shard_urls` and that
    /// `readings` / `batches` are `Distributed`.
    pub async fn ensure_schema(&self) -> Result<()> {
        let db = self.cfg.database.as_str();
        let mut tables = vec![
            ("readings", schema::READINGS_COLUMNS),
            ("batches", schema::BATCHES_COLUMNS),
        ];
        match &self.cfg.cluster {
            None => {
                for sql in schema::statements(db) {
                    self.run("ensure_schema", || async {
                        self.timed(self.client.query(&sql).execute()).await
                    })
                    .await?;
                }
            }
            Some(cluster) => {
                for url in &cluster.shard_urls {
                    let shard = connect::client_for(&self.cfg, url)?;
                    for sql in schema::shard_statements(db, &cluster.name) {
                        self.run("ensure_schema", || async {
                            self.timed(shard.query(&sql).execute()).await
                        })
                        .await?;
                    }
                }
                let shards: u64 = self
                    .run("ensure_schema", || async {
                        self.timed(
                            self.client
                                .query(schema::CLUSTER_SHARDS_QUERY)
                                .bind(cluster.name.as_str())
                                .fetch_one::<u64>(),
                        )
                        .await
                    })
                    .await?;
                if shards != cluster.shard_urls.len() as u64 {
                    let e = crate::Error::Config {
                        key: "cold.clickhouse.shard_urls".into(),
                        reason: format!(
                            "{} URLs, but the server at cold.clickhouse.url knows {shards} shards in cluster `{}` (remote_servers)",
                            cluster.shard_urls.len(),
                            cluster.name
                        ),
                    };
                    self.record(Some(&e));
                    return Err(e);
                }
                for table in ["readings", "batches"] {
                    let engines: Vec<schema::EngineRow> = self
                        .run("ensure_schema", || async {
                            self.timed(
                                self.client
                                    .query(schema::ENGINE_QUERY)
                                    .bind(db)
                                    .bind(table)
                                    .fetch_all::<schema::EngineRow>(),
                            )
                            .await
                        })
                        .await?;
                    if let Some(e) = engines.iter().find(|e| e.engine != "Distributed") {
                        let e = crate::Error::InvalidData {
                            what: format!("clickhouse table {db}.{table}"),
                            reason: format!(
                                "is {}, but a cluster needs a Distributed table; drop or migrate it",
                                e.engine
                            ),
                        };
                        self.record(Some(&e));
                        return Err(e);
                    }
                }
                tables.push(("readings_local", schema::READINGS_COLUMNS));
                tables.push(("batches_local", schema::BATCHES_COLUMNS));
            }
        }
        for (table, expected) in tables {
            let cols: Vec<ColumnRow> = self
                .run("ensure_schema", || async {
                    self.timed(
                        self.client
                            .query(schema::COLUMNS_QUERY)
                            .bind(db)
                            .bind(table)
                            .fetch_all::<ColumnRow>(),
                    )
                    .await
                })
                .await?;
            if let Err(e) = schema::check_columns(db, table, &cols, expected) {
                self.record(Some(&e));
                return Err(e);
            }
        }
        Ok(())
    }

    /// Inserts a batch: ONE RowBinary insert of all its rows into `readings`,
    /// then one row into `batches`, each retried on network errors.
    ///
    /// The order is what makes recovery safe. The `batches` row means "this
    /// batch is in ClickHouse"; the reconciler and the batch pipeline skip
    /// batches that have one. Were it written first, a crash or a failure of
    /// the readings insert would leave a batch marked as landed whose readings
    /// never arrived, and nothing would ever resend them. Written last, the
    /// worst case is readings without the marker: the batch is sent again,
    /// and its rows collapse with the first copy (`readings` is a
    /// ReplacingMergeTree on the reading's identity). For the same reason a
    /// retry after a lost response is harmless. Calling this again for a
    /// batch that landed is harmless too, merely wasted work.
    ///
    /// An empty batch writes only its `batches` row (min/max = the hour).
    pub async fn insert_batch(&self, batch: &Batch, s3_key: &str) -> Result<()> {
        let started = Instant::now();
        // `insert()` would quote `db.readings` as one identifier; the database
        // is a validated plain identifier, so the unescaped form is safe.
        let readings = format!("{}.readings", self.cfg.database);
        if !batch.rows.is_empty() {
            self.run("insert_readings", || async {
                let mut insert = self
                    .client
                    .insert_unescaped::<ReadingRow<'_>>(&readings)
                    .await?
                    .with_timeouts(Some(self.cfg.insert_timeout), Some(self.cfg.insert_timeout));
                for r in &batch.rows {
                    insert
                        .write(&ReadingRow {
                            device_id: r.device_id.as_str(),
                            metric: r.metric.as_str(),
                            ts_ms: r.ts_ms,
                            value: r.value,
                            seq: r.seq,
                            gateway_id: r.gateway_id.as_str(),
                            received_at_ms: r.received_at_ms,
                        })
                        .await?;
                }
                insert.end().await
            })
            .await?;
            self.metrics.rows_inserted.inc_by(batch.rows.len() as u64);
        }

        let record = BatchRecord {
            batch_id: batch.id.as_str().to_owned(),
            s3_key: s3_key.to_owned(),
            hour_start_ms: batch.hour_start_ms,
            row_count: batch.rows.len() as u64,
            min_ts_ms: batch.min_ts_ms().unwrap_or(batch.hour_start_ms),
            max_ts_ms: batch.max_ts_ms().unwrap_or(batch.hour_start_ms),
            inserted_at_ms: now_ms(),
        };
        let batches = format!("{}.batches", self.cfg.database);
        self.run("insert_batches", || async {
            let mut insert = self
                .client
                .insert_unescaped::<BatchRecord>(&batches)
                .await?
                .with_timeouts(Some(self.cfg.insert_timeout), Some(self.cfg.insert_timeout));
            insert.write(&record).await?;
            insert.end().await
        })
        .await?;
        self.metrics.batches_inserted.inc();
        self.metrics
            .insert_duration
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(batch = %batch.id, rows = batch.rows.len(), s3_key, "clickhouse: batch inserted");
        Ok(())
    }

    /// Whether `batches` has a row for `id`.
    pub async fn has_batch(&self, id: &BatchId) -> Result<bool> {
        let sql = format!(
            "SELECT toUInt64(count()) FROM {}.batches WHERE batch_id = ?",
            self.cfg.database
        );
        let n: u64 = self
            .run("query", || async {
                self.timed(self.client.query(&sql).bind(id.as_str()).fetch_one::<u64>())
                    .await
            })
            .await?;
        Ok(n > 0)
    }

    /// The batches (one record each, `FINAL`) holding readings in
    /// `[min_ts_ms, max_ts_ms]`, by batch id.
    pub async fn batches(&self, min_ts_ms: i64, max_ts_ms: i64) -> Result<Vec<BatchRecord>> {
        let sql = format!(
            "SELECT batch_id, s3_key, hour_start_ms, row_count, min_ts_ms, max_ts_ms, inserted_at_ms \
             FROM {}.batches FINAL WHERE max_ts_ms >= ? AND min_ts_ms <= ? ORDER BY batch_id",
            self.cfg.database
        );
        self.run("query", || async {
            self.timed(
                self.client
                    .query(&sql)
                    .bind(min_ts_ms)
                    .bind(max_ts_ms)
                    .fetch_all::<BatchRecord>(),
            )
            .await
        })
        .await
    }

    /// The ids of [`Self::batches`], as stored (`BatchId` has no public
    /// constructor from a string; compare with [`BatchId::as_str`]).
    pub async fn batch_ids(&self, min_ts_ms: i64, max_ts_ms: i64) -> Result<Vec<String>> {
        Ok(self
            .batches(min_ts_ms, max_ts_ms)
            .await?
            .into_iter()
            .map(|b| b.batch_id)
            .collect())
    }

    /// Runs `f` with retries (see [`super::retry`]) and records the outcome
    /// for [`Self::health`].
    pub(super) async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ::clickhouse::error::Error>>,
    {
        let r = retry(op, &self.cfg.backoff, &self.metrics, f).await;
        self.record(r.as_ref().err());
        r
    }

    /// Bounds one query attempt by `query_timeout` (inserts have their own).
    pub(super) async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, ::clickhouse::error::Error>>,
    ) -> Result<T, ::clickhouse::error::Error> {
        tokio::time::timeout(self.cfg.query_timeout, f)
            .await
            .unwrap_or(Err(::clickhouse::error::Error::TimedOut))
    }

    fn record(&self, e: Option<&crate::Error>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e.map(ToString::to_string);
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}
