//! `thermocline reconcile`: one reconciler run from the command line.
//!
//! Prints what it found (and, with `--repair`, what it rewrote). Exit status:
//! 0 when Redis agrees with ClickHouse afterwards (nothing differed, or
//! everything that did was repaired), 1 otherwise or on an error.
//! `--seal-delay 0s --repair` rebuilds every bucket up to now: the way to
//! restore Redis after losing it, with ingestion paused.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Args;

use crate::config;

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start of the range: RFC 3339 (2026-11-25T14:00:00Z) or relative (-2h).
    /// Default: --to minus sync.lookback.
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// End of the range (exclusive), same forms. Default: now.
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Only this device (repeatable).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Compare buckets whose end is at least this old (default sync.seal_delay).
    /// 0s takes every bucket up to now (rebuild, with ingestion paused).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub seal_delay: Option<Duration>,
    /// Rewrite differing buckets from ClickHouse and load batches missing from it.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load(args.config.as_deref())?.validate()?;
    let now = sync::timearg::now_ms();
    let (from_ms, to_ms) = sync::timearg::parse_range(
        args.from.as_deref(),
        args.to.as_deref(),
        cfg.sync.lookback,
        now,
    )?;
    let devices = args
        .devices
        .iter()
        .map(|d| {
            devices::DeviceId::parse(d).map_err(|r| anyhow::anyhow!("--device {d:?}: {}", r.detail))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let crate::cli::ColdStores { s3, ch } = crate::cli::cold_stores(&cfg).await?;
    let keys = hot::keys::Keys::new(&cfg.hot.key_prefix);
    let conn = hot::connect::connect(&cfg.hot.redis)?;
    let reader = hot::reader::Reader::new(conn.clone(), keys.clone(), &cfg.hot.resolutions);
    let repairer = hot::repair::Repairer::new(conn, keys, &cfg.hot.resolutions);
    let reconciler = sync::reconcile::Reconciler::new(reader, repairer, ch, Some(s3), None);
    reconciler.check_reachable().await?;
    let opts = sync::reconcile::Options {
        from_ms,
        to_ms,
        devices,
        seal_delay: args.seal_delay.unwrap_or(cfg.sync.seal_delay),
        repair: args.repair,
        check_batches: true,
    };
    let report = reconciler.run(&opts, now).await.context("reconcile")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": report.consistent(),
                "report": report,
            }))?
        );
    } else {
        print!("{}", report.render());
    }
    Ok(if report.consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
