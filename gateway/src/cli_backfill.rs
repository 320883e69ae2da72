//! `thermocline backfill` and `thermocline import`: argument parsing, store
//! connections, progress rendering and the summary. The work is in
//! [`sync::backfill`] and [`sync::import`].

use std::{
    io::IsTerminal,
    path::PathBuf,
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config;

/// Exit status of a run stopped by Ctrl-C (128 + SIGINT).
const INTERRUPTED: u8 = 130;

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Start of the range (inclusive): RFC 3339 (2025-11-25T10:00:00Z) or relative (-2h).
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End of the range (exclusive): RFC 3339, relative (-30m) or `now`.
    #[arg(long, allow_hyphen_values = true, default_value = "now")]
    pub to: String,
    /// Only this device's readings (recorded in `batches` as `{batch}+{device}`).
    #[arg(long)]
    pub device: Option<String>,
    /// List what is missing from ClickHouse; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also merge the restored readings into the Redis windows still within
    /// retention. Merging ADDS: use it only when Redis lost those windows too.
    /// `thermocline reconcile --repair` rebuilds windows from ClickHouse
    /// idempotently and is the safer way after a backfill.
    #[arg(long)]
    pub hot: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// NDJSON (gateway JSON payload + "device_id", "ts" required), CSV (header
    /// device_id,metric,ts_ms,value,seq) or Parquet (the gateway's batch schema).
    pub file: PathBuf,
    /// ndjson, csv or parquet; by default from the file's extension.
    #[arg(long)]
    pub format: Option<String>,
    /// Where progress is recorded for a rerun to resume; default FILE.checkpoint.json.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Do not merge the readings into the Redis windows.
    #[arg(long)]
    pub no_hot: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    crate::shutdown::on_signal(stop.clone());
    stop
}

pub async fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load(args.config.as_deref())?.validate()?;
    let (from_ms, to_ms) = sync::timearg::parse_range(
        Some(&args.from),
        Some(&args.to),
        std::time::Duration::ZERO,
        hot::service::now_ms(),
    )?;
    let device = args
        .device
        .as_deref()
        .map(devices::DeviceId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--device: {e}"))?;
    let stores = crate::cli::cold_stores(&cfg).await?;
    let hot = if args.hot && !args.dry_run {
        Some(sync::hotload::HotLoader::new(&cfg.hot)?)
    } else {
        None
    };
    let opts = sync::backfill::BackfillOptions {
        from_ms,
        to_ms,
        device,
        dry_run: args.dry_run,
    };
    let progress = Reporter::new("backfill", "objects");
    let stop = stop_on_signal();
    let summary = sync::backfill::backfill(
        &stores.s3,
        &stores.ch,
        hot.as_ref(),
        &opts,
        &progress,
        &stop,
    )
    .await
    .context("backfill")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.render());
    }
    Ok(if summary.interrupted {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load(args.config.as_deref())?.validate()?;
    let format = args
        .format
        .as_deref()
        .map(|f| {
            sync::import::Format::parse(f)
                .ok_or_else(|| anyhow::anyhow!("--format {f:?}: expected ndjson, csv or parquet"))
        })
        .transpose()?;
    let stores = crate::cli::cold_stores(&cfg).await?;
    let hot = if args.no_hot {
        None
    } else {
        Some(sync::hotload::HotLoader::new(&cfg.hot)?)
    };
    let opts = sync::import::ImportOptions {
        path: args.file.clone(),
        format,
        checkpoint: args.checkpoint.clone(),
        devices: cfg.devices.clone(),
    };
    let progress = Reporter::new("import", "lines");
    let stop = stop_on_signal();
    let summary = sync::import::import(
        &stores.s3,
        &stores.ch,
        hot.as_ref(),
        &opts,
        &progress,
        &stop,
    )
    .await
    .context("import")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.render());
    }
    Ok(if summary.interrupted {
        ExitCode::from(INTERRUPTED)
    } else if summary.bad_lines > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A bar on a terminal; plain lines every [`PLAIN_EVERY`] otherwise (logs, CI).
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    unit: &'static str,
    plain: Mutex<Plain>,
}

const PLAIN_EVERY: Duration = Duration::from_secs(5);

struct Plain {
    started: Instant,
    last: Instant,
    total: u64,
    done: u64,
    rows: u64,
}

impl Reporter {
    fn new(what: &'static str, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ETA {{eta}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let now = Instant::now();
        Self {
            bar,
            what,
            unit,
            plain: Mutex::new(Plain {
                started: now,
                last: now,
                total: 0,
                done: 0,
                rows: 0,
            }),
        }
    }

    fn line(&self, p: &Plain) -> String {
        let secs = p.started.elapsed().as_secs_f64().max(1e-3);
        let eta = if p.done > 0 && p.total > p.done {
            let left = (p.total - p.done) as f64 * secs / p.done as f64;
            format!(
                ", ETA {}",
                humantime::format_duration(Duration::from_secs(left as u64))
            )
        } else {
            String::new()
        };
        format!(
            "{}: {}/{} {}, {} rows, {:.0} rows/s{eta}",
            self.what,
            p.done,
            p.total,
            self.unit,
            p.rows,
            p.rows as f64 / secs
        )
    }
}

impl sync::progress::Progress for Reporter {
    fn set_total(&self, total: u64) {
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.total = total;
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    fn advance(&self, done: u64, rows: u64) {
        let mut p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        p.done += done;
        p.rows += rows;
        match &self.bar {
            Some(b) => {
                b.inc(done);
                let secs = p.started.elapsed().as_secs_f64().max(1e-3);
                b.set_message(format!(
                    "{} rows, {:.0} rows/s",
                    p.rows,
                    p.rows as f64 / secs
                ));
            }
            None if p.last.elapsed() >= PLAIN_EVERY => {
                p.last = Instant::now();
                eprintln!("{}", self.line(&p));
            }
            None => {}
        }
    }

    fn finish(&self) {
        let p = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None => eprintln!("{}", self.line(&p)),
        }
    }
}
