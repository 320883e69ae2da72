//! The figures of one harness run, as a console table and as `BENCHMARKS.md`.

use std::fmt::Write as _;

use crate::{latency::LatencyResult, procs::Machine, runs::RunResult, runs::Workload};

mod cold;

/// Hand-written notes below this marker survive a rewrite of `BENCHMARKS.md`.
pub const NOTES_MARKER: &str =
    "<!-- Notes below this line are kept when scripts/bench rewrites the file. -->";

pub const TARGET_RATIO: f64 = 0.9;
pub const TARGET_P99_MS: f64 = 100.0;
pub const TARGET_RSS_MIB: f64 = 256.0;

/// The processes whose CPU is reported, in table order.
pub const PROCS: [&str; 4] = ["mosquitto", "harness", "gateway", "redis"];

/// (a), (b) and (c) runs on one fleet size, interleaved a, b, c, a, b, c, ...
/// (`c` is empty when the cold path was not measured on this fleet).
#[derive(Debug, Clone)]
pub struct Fleet {
    pub workload: Workload,
    pub a: Vec<RunResult>,
    pub b: Vec<RunResult>,
    pub c: Vec<RunResult>,
    /// (c) runs that failed (stalled, …): what went wrong, per repetition.
    pub c_failures: Vec<String>,
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Fleet {
    pub fn a_rate(&self) -> Option<f64> {
        median(self.a.iter().map(RunResult::rate).collect())
    }
    pub fn b_rate(&self) -> Option<f64> {
        median(self.b.iter().map(RunResult::rate).collect())
    }
    /// Median (b) over median (a).
    pub fn ratio(&self) -> Option<f64> {
        Some(self.b_rate()? / self.a_rate()?)
    }
    /// Each repetition's b/a, for the spread.
    pub fn pair_ratios(&self) -> Vec<f64> {
        self.a
            .iter()
            .zip(&self.b)
            .map(|(a, b)| b.rate() / a.rate())
            .collect()
    }
    /// Median (c) rate: publish → every reading in Redis, ClickHouse and S3.
    pub fn c_rate(&self) -> Option<f64> {
        median(self.c.iter().map(RunResult::rate).collect())
    }
    /// Median (c) rate to every reading in Redis.
    pub fn c_hot_rate(&self) -> Option<f64> {
        median(self.c.iter().filter_map(RunResult::hot_rate).collect())
    }
    /// Median (c) over median (a).
    pub fn c_ratio(&self) -> Option<f64> {
        Some(self.c_rate()? / self.a_rate()?)
    }
    pub fn c_hot_ratio(&self) -> Option<f64> {
        Some(self.c_hot_rate()? / self.a_rate()?)
    }
    /// Each repetition's c/a (both stores), for the spread.
    pub fn c_pair_ratios(&self) -> Vec<f64> {
        self.c
            .iter()
            .map(|c| c.rate() / self.a[c.rep - 1].rate())
            .collect()
    }
    /// Each repetition's c/a to Redis.
    pub fn c_hot_pair_ratios(&self) -> Vec<f64> {
        self.c
            .iter()
            .filter_map(|c| Some(c.hot_rate()? / self.a[c.rep - 1].rate()))
            .collect()
    }
    /// Gateway CPU seconds per million messages over all (b) runs.
    pub fn cpu_per_million(&self) -> Option<f64> {
        Self::cpu_per_million_of(&self.b)
    }
    /// The same over all (c) runs.
    pub fn c_cpu_per_million(&self) -> Option<f64> {
        Self::cpu_per_million_of(&self.c)
    }
    fn cpu_per_million_of(runs: &[RunResult]) -> Option<f64> {
        let cpu: f64 = runs.iter().map(|r| r.gateway_cpu_s).sum::<Option<f64>>()?;
        let msgs: u64 = runs.iter().map(|r| r.messages).sum();
        (msgs > 0).then(|| cpu / msgs as f64 * 1e6)
    }
    pub fn peak_rss_mib(&self) -> Option<f64> {
        Self::peak_rss_mib_of(&self.b)
    }
    pub fn c_peak_rss_mib(&self) -> Option<f64> {
        Self::peak_rss_mib_of(&self.c)
    }
    fn peak_rss_mib_of(runs: &[RunResult]) -> Option<f64> {
        runs.iter()
            .filter_map(|r| r.gateway_hwm)
            .max()
            .map(|b| b as f64 / 1024.0 / 1024.0)
    }
    /// The largest spool seen in any (c) run, MiB.
    pub fn spool_peak_mib(&self) -> Option<f64> {
        self.c
            .iter()
            .filter_map(|r| r.spool_peak)
            .max()
            .map(|b| b as f64 / 1024.0 / 1024.0)
    }
    pub fn flush_mean_ms(&self) -> Option<f64> {
        median(self.b.iter().filter_map(|r| r.flush_mean_ms).collect())
    }
    /// Median cores used by `proc` during the (a) or (b) runs.
    pub fn cores(runs: &[RunResult], proc: &str) -> Option<f64> {
        median(runs.iter().filter_map(|r| r.cpu.cores(proc)).collect())
    }
    pub fn machine_busy(runs: &[RunResult]) -> Option<f64> {
        median(runs.iter().filter_map(|r| r.cpu.machine_busy).collect())
    }
    pub fn others(runs: &[RunResult]) -> Option<f64> {
        median(runs.iter().filter_map(|r| r.cpu.others).collect())
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub quick: bool,
    pub date: String,
    pub commit: String,
    pub machine: Machine,
    pub mosquitto: String,
    pub redis: String,
    pub small: Fleet,
    pub large: Fleet,
    pub latency: LatencyResult,
    /// Publish → visible in ClickHouse at half the (c) rate (cold path
    /// measured), or why it could not be measured.
    pub cold_latency: Option<Result<LatencyResult, String>>,
    /// ClickHouse's version (cold path measured).
    pub clickhouse: Option<String>,
    /// The S3 bucket of the (c) runs.
    pub s3_bucket: Option<String>,
    /// false when `--latency-rate` set the load instead.
    pub latency_rate_is_half_b: bool,
    /// `--set` gateway config overrides (none for the reference figures).
    pub overrides: Vec<String>,
    pub total_secs: f64,
}

fn num(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

fn rate(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |v| group(v.round() as u64))
}

/// 55800 → "55,800".
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".into(), |v| format!("{:.0} %", v * 100.0))
}

impl Report {
    fn fleet_label(f: &Fleet) -> String {
        format!("{} devices", group(u64::from(f.workload.devices)))
    }

    /// The figures table (markdown; also printed on the console).
    pub fn table(&self) -> String {
        let (s, l, lat) = (&self.small, &self.large, &self.latency);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| figure | {} | {} | target | result |",
            Self::fleet_label(s),
            Self::fleet_label(l)
        );
        let _ = writeln!(t, "|---|---:|---:|---|---|");
        let _ = writeln!(
            t,
            "| messages per run (3 metrics each, QoS 1) | {} | {} | | |",
            group(s.workload.messages()),
            group(l.workload.messages())
        );
        let _ = writeln!(
            t,
            "| (a) broker → bare subscriber, msg/s (median) | {} | {} | baseline | |",
            rate(s.a_rate()),
            rate(l.a_rate())
        );
        let _ = writeln!(
            t,
            "| (b) gateway, publish → all readings in Redis, msg/s (median) | {} | {} | | |",
            rate(s.b_rate()),
            rate(l.b_rate())
        );
        let ratio_ok = s.ratio().map(|r| r >= TARGET_RATIO);
        let large_ok = l.ratio().map(|r| r >= TARGET_RATIO);
        let _ = writeln!(
            t,
            "| **(b) / (a)** | **{}** | **{}** | ≥ {TARGET_RATIO:.2} | {} (1k), {} (100k) |",
            num(s.ratio(), 2),
            num(l.ratio(), 2),
            verdict(ratio_ok),
            verdict(large_ok)
        );
        let spread = |f: &Fleet| {
            f.pair_ratios()
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            t,
            "| (b) / (a) per repetition | {} | {} | | |",
            spread(s),
            spread(l)
        );
        let p99 = lat.percentile(99.0);
        let _ = writeln!(
            t,
            "| publish → visible in Redis at {} msg/s: p50 / p99 / max, ms | {} / **{}** / {} | | p99 ≤ {TARGET_P99_MS:.0} ms | {} |",
            group(u64::from(lat.target_rate)),
            num(lat.percentile(50.0), 1),
            num(p99, 1),
            num(lat.max(), 1),
            verdict(p99.map(|p| p <= TARGET_P99_MS && lat.unseen == 0))
        );
        let _ = writeln!(
            t,
            "| gateway CPU seconds per million messages | {} | {} | | |",
            num(s.cpu_per_million(), 1),
            num(l.cpu_per_million(), 1)
        );
        let rss = l.peak_rss_mib();
        let _ = writeln!(
            t,
            "| gateway peak RSS (VmHWM), MiB | {} | **{}** | ≤ {TARGET_RSS_MIB:.0} MiB at 100k | {} |",
            num(s.peak_rss_mib(), 0),
            num(rss, 0),
            verdict(
                rss.map(|r| r <= TARGET_RSS_MIB && l.workload.devices >= 100_000)
                    .filter(|_| l.workload.devices >= 100_000)
            )
        );
        let _ = writeln!(
            t,
            "| mean hot flush (Redis write) time, ms | {} | {} | | |",
            num(s.flush_mean_ms(), 1),
            num(l.flush_mean_ms(), 1)
        );
        t
    }

    /// Cores used by each process during the runs (median over repetitions).
    pub fn cpu_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| run | wall s (median) | {} | other processes | machine busy |",
            PROCS.join(" | ")
        );
        let _ = writeln!(t, "|---|---:|{}---:|---:|", "---:|".repeat(PROCS.len()));
        for (label, f) in [("1k", &self.small), ("100k", &self.large)] {
            for (kind, runs) in [("(a)", &f.a), ("(b)", &f.b), ("(c)", &f.c)] {
                if runs.is_empty() {
                    continue;
                }
                let wall = median(runs.iter().map(|r| r.cpu.wall_s).collect());
                let cells: Vec<String> = PROCS
                    .iter()
                    .map(|p| num(Fleet::cores(runs, p), 2))
                    .collect();
                let _ = writeln!(
                    t,
                    "| {kind} {label} | {} | {} | {} | {} |",
                    num(wall, 1),
                    cells.join(" | "),
                    num(Fleet::others(runs), 2),
                    pct(Fleet::machine_busy(runs))
                );
            }
        }
        t
    }

    /// Every run, for the record.
    pub fn runs_table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| fleet | rep | (a) msg/s | (a) publisher acked msg/s | (b) msg/s | (b) publisher acked msg/s | (b)/(a) | gateway CPU s | gateway VmHWM MiB |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for f in [&self.small, &self.large] {
            for (i, (a, b)) in f.a.iter().zip(&f.b).enumerate() {
                let pub_rate = |r: &RunResult| {
                    group((r.messages as f64 / r.publish_elapsed.as_secs_f64()).round() as u64)
                };
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} |",
                    Self::fleet_label(f),
                    i + 1,
                    group(a.rate().round() as u64),
                    pub_rate(a),
                    group(b.rate().round() as u64),
                    pub_rate(b),
                    b.rate() / a.rate(),
                    num(b.gateway_cpu_s, 2),
                    num(b.gateway_hwm.map(|h| h as f64 / 1048576.0), 0),
                );
            }
        }
        t
    }

    /// The whole `BENCHMARKS.md`; `notes` is what followed [`NOTES_MARKER`] before.
    pub fn markdown(&self, notes: &str) -> String {
        let m = &self.machine;
        let lat = &self.latency;
        let s = &self.small;
        let mut md = String::new();
        let _ = write!(
            md,
            "# Benchmarks

Measured by `scripts/bench`{quick} (the harness `gateway/src/bin/thermocline-bench/`), which
rewrites this file; only the notes at the end are written by hand. The machine is
shared and noisy: read the **ratios** to the baseline measured in the same run, not the
absolute rates alone.

- **Date:** {date} · **commit:** `{commit}` · total harness time {total:.0} s
- **Machine:** {cpus} CPUs ({model}), {mem:.1} GiB RAM, Linux {kernel}
- **Services:** {mosq} (private instance started by the harness with the tuned
  settings of `devices::testkit::TUNED_CONF`: `max_queued_messages 0`,
  `max_inflight_messages 1000`, persistence off); Redis {redis} (the local instance, keys
  under a per-run prefix, deleted after each run)
- **Gateway:** the release `thermocline run` as a child process with the built-in defaults
  (`config/default.toml`: QoS 1, persistent session, `hot.flush_interval = 100ms`, …);
  the harness sets only the broker port, the HTTP port, `gateway.id` and `hot.key_prefix`.
  Overrides of the defaults in this run: {overrides}.

## Method

- **Workload:** the deterministic simulator (`devices::sim`): each message is
  `{{\"ts\":…,\"seq\":…,\"metrics\":{{\"temp\":…,\"hum\":…,\"pressure\":…}}}}` (~100-120 bytes,
  3 metrics) on `devices/{{id}}/telemetry`, QoS 1, devices interleaved round robin,
  published as fast as the broker acknowledges ({conns} connection(s), 100 in flight each).
  {small_n} messages for {small_d} devices, and {large_n} for {large_d} devices.
- **(a) baseline:** a bare rumqttc subscriber (clean session, `devices/#` at QoS 1) that
  only counts. Rate = messages ÷ (publish start → last message delivered).
- **(b) gateway:** a fresh gateway per repetition; rate = messages ÷ (publish start →
  `thermocline_hot_readings_written_total` on `/metrics` covers every reading, polled every
  25 ms). The gateway's warm-up (one message through to Redis) is before the clock starts.
- (a) and (b) alternate, {reps} repetition(s) each per fleet size; the tables give medians.
- **Latency:** a gateway under a steady load of {lat_load} ({lat_devices} devices,
  {lat_secs:.0} s). A probe device publishes every 20 ms on a fixed
  schedule (not waiting for earlier probes, so stalls are not hidden by coordinated
  omission) with a strictly increasing `ts`; a poller reads its `latest` hash
  (`HGET … t:temp`) about every 1 ms. Latency = first poll showing that ts (or a later
  one) − the instant before the probe was handed to the MQTT client; the 1 ms poll adds up
  to ~1-2 ms. {probes} probes, {unseen} never seen within 5 s of the end.
- **CPU per million messages:** the gateway's utime+stime (`/proc/PID/stat`) over the
  (b) runs ÷ messages. **Peak RSS:** `VmHWM` of the gateway at the end of each (b) run, max.

## Figures

{table}
Targets (from the issue): (b) ≥ 0.9 × (a); hot p99 ≤ 100 ms; RSS ≤ 256 MiB at 100,000 devices.

## Where the CPU goes

Cores used during the runs (1.00 = one core busy for the whole run; median of the
repetitions; `harness` is the publisher, plus the counting subscriber in (a);
`other processes` is everything else on the box, e.g. other users' builds: when it is
high, the absolute rates are depressed and only the ratios compare). This box has
{cpus} CPUs.

{cpu}
## Every run

{runs}
Latency run: load target {lat_rate} msg/s, achieved {lat_ach} msg/s.
{cold}
{marker}
",
            quick = if self.quick {
                " --quick (a smaller check run)"
            } else {
                ""
            },
            date = self.date,
            commit = self.commit,
            total = self.total_secs,
            cpus = m.cpus,
            model = m.cpu_model,
            mem = m.mem_total_gib,
            kernel = m.kernel,
            mosq = self.mosquitto,
            redis = self.redis,
            conns = s.workload.connections,
            small_n = group(s.workload.messages()),
            small_d = group(u64::from(s.workload.devices)),
            large_n = group(self.large.workload.messages()),
            large_d = group(u64::from(self.large.workload.devices)),
            reps = s.a.len(),
            overrides = if self.overrides.is_empty() {
                "none".to_string()
            } else {
                self.overrides
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            lat_load = if self.latency_rate_is_half_b {
                "half the median (b) rate for 1,000 devices"
            } else {
                "a rate set with `--latency-rate`"
            },
            lat_devices = group(u64::from(s.workload.devices)),
            lat_secs = lat.duration.as_secs_f64(),
            probes = lat.probes_sent,
            unseen = lat.unseen,
            table = self.table(),
            cpu = self.cpu_table(),
            runs = self.runs_table(),
            lat_rate = group(u64::from(lat.target_rate)),
            lat_ach = group(lat.achieved_rate.round() as u64),
            cold = self.cold_markdown(),
            marker = NOTES_MARKER,
        );
        md.push_str(notes.trim_start_matches('\n'));
        if !md.ends_with('\n') {
            md.push('\n');
        }
        md
    }
}

impl Report {
    /// The cold path's section of `BENCHMARKS.md` (empty when not measured).
    fn cold_markdown(&self) -> String {
        let (Some(table), Some(runs)) = (self.cold_table(), self.cold_runs_table()) else {
            return String::new();
        };
        let s = &self.small;
        let lat = self.cold_latency.as_ref();
        let lat_line = lat.map_or_else(
            || "not measured".to_string(),
            |l| match l {
                Err(e) => format!("Not measured: {e}"),
                Ok(l) => {
                    format!(
                    "load target {} msg/s, achieved {} msg/s, {:.0} s; {} probes, {} never seen \
                     within 20 s of the end",
                    group(u64::from(l.target_rate)),
                    group(l.achieved_rate.round() as u64),
                    l.duration.as_secs_f64(),
                    l.probes_sent,
                    l.unseen
                )
                }
            },
        );
        format!(
            "
## Cold path: hot and cold on (issue 3)

- **Services:** ClickHouse {ch} (the local instance over HTTP; a database
  `thermocline_bench_…` per run, dropped after it) and the local S3-compatible server
  (bucket `{bucket}`, a key prefix per run; the objects stay with its data).
- **(c) gateway with the cold path:** the same release gateway, `cold.enabled = true`
  with the built-in defaults otherwise (`spool.fsync_interval = 20ms`, QoS 1 acks only
  after the spool fsync; `batch.max_rows = 100000`, `batch.max_age = 5s` ± 500 ms;
  4 batches in flight), a fresh gateway, spool directory and database per repetition.
  The warm-up message goes through Redis *and* both cold stores before the clock starts.
  Rate = messages ÷ (publish start → `/metrics` shows every reading in ClickHouse
  (`thermocline_cold_clickhouse_rows_inserted_total`) with no batch open or unshipped
  (`thermocline_cold_pending_bytes` = 0, `thermocline_cold_batches_pending` = 0: a batch
  leaves pending only once S3 **and** ClickHouse hold it)), polled every 25 ms; also
  to every reading in Redis. Run right after (a) and (b) of each repetition, {reps}
  repetition(s); {msgs} messages each, like the 1,000-device (b).
- **Spool bytes at peak:** `thermocline_cold_spool_bytes` polled every 25 ms during
  each (c) run, the largest value.
- **Latency to ClickHouse:** a cold gateway under a steady load of half the median (c)
  rate; the 20 ms probe as above, polled with `SELECT max(ts_ms) … WHERE device_id =
  probe` over HTTP every 25 ms (the poll adds up to ~25-30 ms). Batches are cut by age
  under this load, so this is mostly `batch.max_age`. {lat_line}.

{table}
Target (from the issue): (c) ≥ 0.9 × (a) with hot and cold both on. The verdict is given
both for the strict reading (every reading in both cold stores, which includes the
last partial batch's age) and for the sustained ingest rate (every reading in Redis,
with each QoS 1 ack waiting for the spool fsync).

{runs}",
            ch = self.clickhouse.as_deref().unwrap_or("(unknown version)"),
            bucket = self.s3_bucket.as_deref().unwrap_or("?"),
            reps = s.c.len(),
            msgs = group(s.workload.messages()),
        )
    }
}

/// What follows [`NOTES_MARKER`] in an existing file (empty if none).
pub fn kept_notes(existing: &str) -> String {
    existing
        .split_once(NOTES_MARKER)
        .map(|(_, notes)| notes.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(group(55_800), "55,800");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000_000), "1,000,000");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let md = format!("# x\n{NOTES_MARKER}\n## Findings\nkeep me\n");
        assert_eq!(kept_notes(&md), "\n## Findings\nkeep me\n");
        assert_eq!(kept_notes("# no marker"), "");
    }
}
