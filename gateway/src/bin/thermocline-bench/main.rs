//! `thermocline-bench`: the benchmark harness behind `scripts/bench`.
//!
//! Starts a private tuned Mosquitto, then for 1,000 and for 100,000 devices
//! alternates (a) the broker's delivery rate to a bare counting subscriber and
//! (b) the release gateway's end-to-end rate into Redis (hot path only), and
//! for 1,000 devices (c) the gateway with the cold path on too (spool fsync
//! before the ack, S3, ClickHouse: publish → every reading in all three);
//! measures publish → visible-in-Redis latency at half the (b) rate and
//! publish → visible-in-ClickHouse latency at half the (c) rate, and writes the
//! figures with the machine and the commit to `BENCHMARKS.md`. A harness, not
//! a test: nothing here asserts on timing.
//!
//! # Layout
//!
//! - [`runs`]: the workload and one (a), (b) or (c) run.
//! - [`latency`]: the probe under a steady load.
//! - [`gateway`]: the gateway child process, its config and `/metrics`.
//! - [`procs`]: CPU time, peak RSS and the machine from `/proc`.
//! - [`report`]: the console table and `BENCHMARKS.md`.

mod gateway;
mod latency;
mod procs;
mod report;
mod runs;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use devices::testkit::Mosquitto;

use crate::{
    report::{Fleet, Report},
    runs::{ColdStores, Env, Workload},
};

#[derive(Debug, Parser)]
#[command(
    name = "thermocline-bench",
    about = "Thermocline's benchmark harness (see BENCHMARKS.md)"
)]
struct Args {
    /// A small run to check that the harness works; BENCHMARKS.md is left alone unless --out is given.
    #[arg(long)]
    quick: bool,
    /// The gateway binary to measure (default: `thermocline` beside this binary).
    #[arg(long)]
    thermocline: Option<PathBuf>,
    #[arg(
        long,
        env = "THERMOCLINE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Where to write the report (default: BENCHMARKS.md in --repo, full runs only).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The repository (for the commit and the default --out).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Repetitions of each (a)/(b) pair (default 3, --quick 1).
    #[arg(long)]
    reps: Option<usize>,
    /// Messages per device for 1,000 devices (default 240, --quick 30).
    #[arg(long)]
    small_messages: Option<u64>,
    /// Devices of the large fleet (default 100,000, --quick 10,000).
    #[arg(long)]
    large_devices: Option<u32>,
    /// Messages per device of the large fleet.
    #[arg(long, default_value_t = 3)]
    large_messages: u64,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Length of the latency run in seconds (default 15, --quick 4).
    #[arg(long)]
    latency_secs: Option<u64>,
    /// Background load of the latency run, msg/s (default: half the median
    /// (b) rate for 1,000 devices, as the issue asks).
    #[arg(long)]
    latency_rate: Option<u32>,
    /// ClickHouse's HTTP interface for the (c) runs (no credentials).
    #[arg(
        long,
        env = "THERMOCLINE_BENCH_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,
    /// The S3-compatible endpoint for the (c) runs.
    #[arg(
        long,
        env = "THERMOCLINE_BENCH_S3_ENDPOINT",
        default_value = "http://127.0.0.1:9000"
    )]
    s3_endpoint: String,
    #[arg(
        long,
        env = "THERMOCLINE_BENCH_S3_ACCESS_KEY",
        default_value = "thermocline"
    )]
    s3_access_key: String,
    #[arg(
        long,
        env = "THERMOCLINE_BENCH_S3_SECRET_KEY",
        default_value = "thermocline-secret",
        hide_default_value = true
    )]
    s3_secret_key: String,
    /// The S3 bucket of the (c) runs (each run under its own key prefix).
    #[arg(long, default_value = "thermocline-bench")]
    s3_bucket: String,
    /// Skip the cold path: no (c) runs, no ClickHouse latency.
    #[arg(long)]
    no_cold: bool,
    /// Gateway config override, e.g. `--set hot.flush_interval=20ms` (repeatable;
    /// passed as THERMOCLINE__HOT__FLUSH_INTERVAL). The report names them.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let thermocline = match &args.thermocline {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the harness binary")?
            .join("thermocline"),
    };
    anyhow::ensure!(
        thermocline.is_file(),
        "no gateway binary at {} (build it, or pass --thermocline)",
        thermocline.display()
    );
    let q = args.quick;
    let reps = args.reps.unwrap_or(if q { 1 } else { 3 }).max(1);
    let small = Workload {
        devices: 1_000,
        messages_per_device: args.small_messages.unwrap_or(if q { 30 } else { 240 }),
        connections: args.connections,
    };
    let large = Workload {
        devices: args
            .large_devices
            .unwrap_or(if q { 10_000 } else { 100_000 }),
        messages_per_device: args.large_messages,
        connections: args.connections,
    };
    let latency_secs = args.latency_secs.unwrap_or(if q { 4 } else { 15 });

    let mut redis = redis::Client::open(args.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("Redis at {} (run scripts/services up)", args.redis_url))?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis)
        .await?;
    let info_field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(|v| v.trim().to_string())
    };
    let redis_version = info_field("redis_version").unwrap_or_else(|| "unknown".into());
    let redis_pid: Option<u32> = info_field("process_id").and_then(|p| p.parse().ok());

    let mut clickhouse_version = None;
    let broker = Mosquitto::start()
        .await
        .context("starting the tuned Mosquitto")?;
    let me = std::process::id();
    let mut watched = vec![("harness", me)];
    match procs::children_named(me, "mosquitto").first() {
        Some(pid) => watched.push(("mosquitto", *pid)),
        None => eprintln!("warning: cannot find the broker's pid; its CPU is not reported"),
    }
    // Redis runs elsewhere when its /proc entry is not ours to read.
    if let Some(pid) = redis_pid.filter(|p| procs::cpu_seconds(*p, 100.0).is_some()) {
        watched.push(("redis", pid));
    }
    // `sim-xxxxxxxx`: random, so runs never share device ids, client ids or keys.
    let suffix = devices::sim::random_prefix().replacen("sim-", "", 1);
    let env = Env {
        broker_port: broker.port,
        redis_url: args.redis_url.clone(),
        thermocline,
        tck: procs::clk_tck(),
        watched,
        run_id: format!("bench-{suffix}"),
        gateway_env: args
            .set
            .iter()
            .map(|s| runs::override_env(s))
            .collect::<anyhow::Result<_>>()?,
        cold: None,
    };
    let mut env = env;
    if !args.no_cold {
        let clickhouse = args
            .clickhouse_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let version = crate::gateway::clickhouse(&clickhouse, "SELECT version()")
            .await
            .context(
                "ClickHouse for the cold runs (scripts/services up clickhouse s3, or --no-cold)",
            )?;
        clickhouse_version = Some(version.trim().to_string());
        env.cold = Some(ColdStores {
            clickhouse,
            s3_endpoint: args.s3_endpoint.clone(),
            s3_access_key: args.s3_access_key.clone(),
            s3_secret_key: args.s3_secret_key.clone(),
            s3_bucket: args.s3_bucket.clone(),
        });
    }
    let env = env;
    eprintln!(
        "bench {}: broker on port {}, gateway {}, {reps} repetition(s)",
        env.run_id,
        broker.port,
        env.thermocline.display()
    );

    let small_fleet = fleet(&env, small, reps, "s", env.cold.is_some()).await?;
    let half = (small_fleet.b_rate().context("no (b) rate")? / 2.0).round() as u32;
    let latency_rate = args.latency_rate.unwrap_or(half).max(1);
    eprintln!("latency: {latency_secs} s at {latency_rate} msg/s ...");
    let latency = latency::measure(
        &env,
        latency::Store::Redis,
        small.devices,
        latency_rate,
        Duration::from_secs(latency_secs),
        Duration::from_millis(20),
    )
    .await?;
    let cold_latency = match small_fleet.c_rate() {
        Some(c) => {
            let rate = ((c / 2.0).round() as u32).max(1);
            eprintln!("cold latency: {latency_secs} s at {rate} msg/s ...");
            match latency::measure(
                &env,
                latency::Store::ClickHouse,
                small.devices,
                rate,
                Duration::from_secs(latency_secs),
                Duration::from_millis(20),
            )
            .await
            {
                Ok(l) => Ok(l),
                Err(e) => {
                    let msg = first_line(&format!("{e:#}"));
                    eprintln!("cold latency FAILED: {msg}");
                    Err(msg)
                }
            }
        }
        None => Err("no successful (c) run to take half the rate of".into()),
    };
    let cold_latency = env.cold.is_some().then_some(cold_latency);
    let large_fleet = fleet(&env, large, reps, "l", false).await?;

    let report = Report {
        quick: q,
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        commit: procs::commit(&args.repo),
        machine: procs::machine(),
        mosquitto: procs::version_line("mosquitto", &["-h"], "version")
            .unwrap_or_else(|| "mosquitto (unknown version)".into()),
        redis: redis_version,
        small: small_fleet,
        large: large_fleet,
        latency,
        cold_latency,
        clickhouse: clickhouse_version,
        s3_bucket: env.cold.as_ref().map(|c| c.s3_bucket.clone()),
        latency_rate_is_half_b: args.latency_rate.is_none(),
        overrides: args.set.clone(),
        total_secs: started.elapsed().as_secs_f64(),
    };
    println!(
        "\n{}\n{}\n{}\n{}\n{}",
        report.table(),
        report.cold_table().unwrap_or_default(),
        report.cpu_table(),
        report.runs_table(),
        report.cold_runs_table().unwrap_or_default()
    );
    let out = args
        .out
        .clone()
        .or_else(|| (!q).then(|| args.repo.join("BENCHMARKS.md")));
    if let Some(out) = out {
        let notes = report::kept_notes(&std::fs::read_to_string(&out).unwrap_or_default());
        std::fs::write(&out, report.markdown(&notes))
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    drop(broker);
    Ok(())
}

/// (a), (b) and, when `cold`, (c) alternated `reps` times on one fleet size.
async fn fleet(
    env: &Env,
    w: Workload,
    reps: usize,
    tag: &str,
    cold: bool,
) -> anyhow::Result<Fleet> {
    let mut f = Fleet {
        workload: w,
        a: Vec::new(),
        b: Vec::new(),
        c: Vec::new(),
        c_failures: Vec::new(),
    };
    for rep in 1..=reps {
        let a = env.baseline(&w, &format!("{tag}{rep}a")).await?;
        eprintln!("{} devices rep {rep}: (a) {:.0} msg/s", w.devices, a.rate());
        let b = env.gateway(&w, &format!("{tag}{rep}b")).await?;
        eprintln!(
            "{} devices rep {rep}: (b) {:.0} msg/s, ratio {:.2}, gateway {:.2} cores",
            w.devices,
            b.rate(),
            b.rate() / a.rate(),
            b.cpu.cores("gateway").unwrap_or(0.0)
        );
        if cold {
            // A failed (c) run is a finding, not the end of the benchmark:
            // it is recorded and reported, and the other figures still are.
            match env.cold(&w, &format!("{tag}{rep}c")).await {
                Ok(mut c) => {
                    c.rep = rep;
                    eprintln!(
                        "{} devices rep {rep}: (c) {:.0} msg/s to ClickHouse and S3 (ratio {:.2}), {:.0} msg/s to Redis (ratio {:.2}), spool peak {:.1} MiB",
                        w.devices,
                        c.rate(),
                        c.rate() / a.rate(),
                        c.hot_rate().unwrap_or(0.0),
                        c.hot_rate().unwrap_or(0.0) / a.rate(),
                        c.spool_peak.unwrap_or(0) as f64 / 1048576.0
                    );
                    f.c.push(c);
                }
                Err(e) => {
                    let msg = first_line(&format!("{e:#}"));
                    eprintln!("{} devices rep {rep}: (c) FAILED: {msg}", w.devices);
                    f.c_failures.push(format!("rep {rep}: {msg}"));
                }
            }
        }
        f.a.push(a);
        f.b.push(b);
    }
    Ok(f)
}

/// The start of an error chain, short enough for a table cell (the gateway's
/// log tail is left out: it is in the console output).
fn first_line(e: &str) -> String {
    let e = e.split(" | ").next().unwrap_or(e);
    let e = e.split("; \u{1b}").next().unwrap_or(e);
    let mut out: String = e.chars().take(400).collect();
    if out.len() < e.len() {
        out.push('…');
    }
    out.replace('|', "/").replace('\n', " ")
}
