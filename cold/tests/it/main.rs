//! Integration tests against the real servers (`scripts/test` starts them and
//! sets `THERMOCLINE_TEST_*`). Each test works in its own bucket, prefix or
//! database, so tests run in parallel, and cleans up after itself.

mod clickhouse;
mod pipeline;
mod s3;
mod support;
