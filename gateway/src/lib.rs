//! The `thermocline` gateway: MQTT ingest, wiring, HTTP and the CLI.
//!
//! # Layout
//!
//! - [`config`]: layered config (defaults → file → env), validated into [`config::Config`];
//!   [`mqtt`] owns the `[mqtt]` section and builds the rumqttc options (TLS, credentials).
//! - [`ingest`]: the MQTT event loop; spools each publish (cold path), acks it
//!   once durable, decodes it and hands it to the hot path.
//! - [`app`]: [`app::Gateway`] starts ingest, the hot path and HTTP, and stops them in order.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the read API.
//! - [`dashboards`]: lint and run the Grafana dashboards' queries (`dashboards-check`).
//! - [`fleet`]: devices that go quiet (`[fleet]`, the `thermocline_fleet_*` gauges).
//! - [`cli`]: the subcommands (`run`, `check-config`, `simulate`, `verify`);
//!   [`cli_reconcile`]: `reconcile`.
//!   [`cli_backfill`]: `backfill` and `import` (progress bar, summary, Ctrl-C).
//! - [`shutdown`]: SIGTERM / Ctrl-C → one cancellation token.
//! - [`metrics`], [`error`].
//!
//! ```text
//! broker ─▶ ingest (decode) ─bounded─▶ hot path ─▶ Redis ◀─ http read API
//!   ▲ ack      │  └─ rejections counted by reason
//!   └─durable──┴─▶ spool ─▶ cold::pipeline ─▶ S3 + ClickHouse
//! ```

pub mod app;
pub mod cli;
pub mod cli_backfill;
pub mod cli_reconcile;
pub mod config;
pub mod dashboards;
pub mod error;
pub mod fleet;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod mqtt;
pub mod shutdown;

pub use error::{Error, Result};
