//! The cold path's tables: (c) against (a) and (b), and every (c) run.

use std::fmt::Write as _;

use super::{group, num, rate, verdict, Report, TARGET_RATIO};

impl Report {
    /// The cold path's figures (markdown), when it was measured.
    pub fn cold_table(&self) -> Option<String> {
        let s = &self.small;
        if s.c.is_empty() && s.c_failures.is_empty() {
            return None;
        }
        let mut t = String::new();
        let spread = |v: Vec<f64>| {
            v.iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            t,
            "| figure ({}, hot and cold on) | value | target | result |",
            Self::fleet_label(s)
        );
        let _ = writeln!(t, "|---|---:|---|---|");
        let _ = writeln!(
            t,
            "| (a) broker → bare subscriber, msg/s (median, same repetitions) | {} | baseline | |",
            rate(s.a_rate())
        );
        let _ = writeln!(
            t,
            "| (c) gateway, publish → all readings in ClickHouse **and** S3 (and Redis), msg/s (median) | {} | | |",
            rate(s.c_rate())
        );
        let _ = writeln!(
            t,
            "| **(c) / (a)**, all readings in both cold stores | **{}** | ≥ {TARGET_RATIO:.2} | {} |",
            num(s.c_ratio(), 2),
            verdict(s.c_ratio().map(|r| r >= TARGET_RATIO))
        );
        let _ = writeln!(
            t,
            "| (c) / (a) per repetition | {} | | |",
            spread(s.c_pair_ratios())
        );
        let _ = writeln!(
            t,
            "| (c) gateway, publish → all readings in Redis, msg/s (median) | {} | | |",
            rate(s.c_hot_rate())
        );
        let _ = writeln!(
            t,
            "| **(c) / (a)**, all readings in Redis (QoS 1 acks after the spool fsync) | **{}** | ≥ {TARGET_RATIO:.2} | {} |",
            num(s.c_hot_ratio(), 2),
            verdict(s.c_hot_ratio().map(|r| r >= TARGET_RATIO))
        );
        let _ = writeln!(
            t,
            "| (c) / (a) to Redis per repetition | {} | | |",
            spread(s.c_hot_pair_ratios())
        );
        let _ = writeln!(
            t,
            "| (c) / (b), both stores · to Redis (cost of the cold path, medians) | {} · {} | | |",
            num(s.c_rate().zip(s.b_rate()).map(|(c, b)| c / b), 2),
            num(s.c_hot_rate().zip(s.b_rate()).map(|(c, b)| c / b), 2)
        );
        let _ = writeln!(
            t,
            "| (c) runs completed / failed | {} / {} | | |",
            s.c.len(),
            s.c_failures.len()
        );
        if let Some(Err(e)) = &self.cold_latency {
            let _ = writeln!(
                t,
                "| publish → visible in ClickHouse | not measured: {e} | | |"
            );
        }
        if let Some(Ok(lat)) = &self.cold_latency {
            let _ = writeln!(
                t,
                "| publish → visible in ClickHouse at {} msg/s: p50 / p99 / max, ms | {} / **{}** / {} | | |",
                group(u64::from(lat.target_rate)),
                num(lat.percentile(50.0), 0),
                num(lat.percentile(99.0), 0),
                num(lat.max(), 0),
            );
        }
        let _ = writeln!(
            t,
            "| gateway CPU seconds per million messages, (c) · (b) | {} · {} | | |",
            num(s.c_cpu_per_million(), 1),
            num(s.cpu_per_million(), 1)
        );
        let _ = writeln!(
            t,
            "| gateway peak RSS (VmHWM), MiB, (c) · (b) | {} · {} | | |",
            num(s.c_peak_rss_mib(), 0),
            num(s.peak_rss_mib(), 0)
        );
        let _ = writeln!(
            t,
            "| spool bytes at peak (`thermocline_cold_spool_bytes`, max over runs), MiB | {} | | |",
            num(s.spool_peak_mib(), 1)
        );
        Some(t)
    }

    /// Every (c) run, for the record.
    pub fn cold_runs_table(&self) -> Option<String> {
        let s = &self.small;
        if s.c.is_empty() && s.c_failures.is_empty() {
            return None;
        }
        let mut t = String::new();
        let _ = writeln!(
            t,
            "| fleet | rep | (a) msg/s | (c) to both stores msg/s | (c) to Redis msg/s | (c) publisher acked msg/s | (c)/(a) both · Redis | gateway CPU s | gateway VmHWM MiB | spool peak MiB |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in &s.c {
            let i = c.rep - 1;
            let a = &s.a[i];
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {:.2} · {} | {} | {} | {} |",
                Self::fleet_label(s),
                i + 1,
                group(a.rate().round() as u64),
                group(c.rate().round() as u64),
                rate(c.hot_rate()),
                group((c.messages as f64 / c.publish_elapsed.as_secs_f64()).round() as u64),
                c.rate() / a.rate(),
                num(c.hot_rate().map(|h| h / a.rate()), 2),
                num(c.gateway_cpu_s, 2),
                num(c.gateway_hwm.map(|h| h as f64 / 1048576.0), 0),
                num(c.spool_peak.map(|b| b as f64 / 1048576.0), 1),
            );
        }
        for f in &s.c_failures {
            let _ = writeln!(
                t,
                "| {} | FAILED | {f} | | | | | | | |",
                Self::fleet_label(s)
            );
        }
        Some(t)
    }
}
