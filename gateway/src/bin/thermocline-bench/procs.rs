//! What the harness reads from `/proc` (Linux only): per-process CPU time and
//! peak RSS, the machine's CPU busy time, and the machine description.

use std::{path::Path, process::Command};

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, else 100).
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The fields of `/proc/{pid}/stat` after the `(comm)` field, which may contain spaces.
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest = text[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((comm, rest))
}

/// User + system CPU seconds `pid` has used so far (all its threads).
pub fn cpu_seconds(pid: u32, tck: f64) -> Option<f64> {
    let (_, f) = stat_fields(pid)?;
    // After the comm: [0] state, [1] ppid, ... [11] utime, [12] stime (fields 14, 15).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / tck)
}

/// A `/proc/{pid}/status` size field (`VmHWM`, `VmRSS`) in bytes.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Children of `parent` whose command name is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            stat_fields(*pid).is_some_and(|(c, f)| {
                c == comm && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
            })
        })
        .collect()
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// The machine the figures were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_gib: f64,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_total_gib: mem_kib / 1024.0 / 1024.0,
        kernel,
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when tracked files other than
/// `BENCHMARKS.md` differ from it.
pub fn commit(repo: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":!BENCHMARKS.md",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head}-dirty")
    } else {
        head
    }
}

/// The first line of a command's output that contains `needle` (stdout or stderr).
pub fn version_line(cmd: &str, args: &[&str], needle: &str) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.contains(needle))
        .map(|l| l.trim().to_string())
}

/// CPU seconds of a set of named processes, sampled at two instants.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: std::time::Instant,
    procs: Vec<(&'static str, u32, f64)>,
    machine: Option<(u64, u64)>,
}

/// CPU used between two snapshots: per process in cores (1.0 = one core busy
/// the whole time), and the machine's busy share of all its cores.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub wall_s: f64,
    pub per_proc: Vec<(&'static str, f64)>,
    pub machine_busy: Option<f64>,
    /// Cores used by every process not watched (other users of a shared box).
    pub others: Option<f64>,
}

impl CpuUse {
    pub fn cores(&self, name: &str) -> Option<f64> {
        self.per_proc
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    }
}

impl CpuSnapshot {
    pub fn take(procs: &[(&'static str, u32)], tck: f64) -> Self {
        Self {
            at: std::time::Instant::now(),
            procs: procs
                .iter()
                .filter_map(|(n, pid)| Some((*n, *pid, cpu_seconds(*pid, tck)?)))
                .collect(),
            machine: machine_jiffies(),
        }
    }

    /// CPU seconds of `name` between `self` and `later`.
    pub fn seconds(&self, later: &CpuSnapshot, name: &str) -> Option<f64> {
        let a = self.procs.iter().find(|p| p.0 == name)?;
        let b = later.procs.iter().find(|p| p.0 == name && p.1 == a.1)?;
        Some(b.2 - a.2)
    }

    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        let wall_s = (later.at - self.at).as_secs_f64().max(1e-9);
        let per_proc: Vec<(&'static str, f64)> = self
            .procs
            .iter()
            .filter_map(|(n, _, _)| Some((*n, self.seconds(later, n)? / wall_s)))
            .collect();
        let machine_busy = match (self.machine, later.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64)
            }
            _ => None,
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let ours: f64 = per_proc.iter().map(|(_, c)| c).sum();
        CpuUse {
            wall_s,
            others: machine_busy.map(|b| (b * cpus - ours).max(0.0)),
            per_proc,
            machine_busy,
        }
    }
}
