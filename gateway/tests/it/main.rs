//! Gateway end to end against real servers: a private tuned Mosquitto per test
//! (testkit), Redis (THERMOCLINE_TEST_REDIS_URL, or a private redis-server where
//! a test stops it), ClickHouse and S3 where the cold path is on; each test
//! under its own key prefix, client id, database and S3 prefix.

mod alerts;
mod backfill;
mod backfill_hot;
mod cold;
mod cold_outage;
mod dashboards;
mod field;
mod first_run;
mod fixtures;
mod hot_cluster;
mod hot_concurrency;
mod hot_path;
mod import_parquet;
mod multi;
mod observability;
mod openapi;
mod operator;
mod quiet;
mod reconcile;
mod reconcile_fleet;
mod resume;
mod sparkplug;
mod support;
mod sync_metrics;
mod tls;
mod tls_redis;
