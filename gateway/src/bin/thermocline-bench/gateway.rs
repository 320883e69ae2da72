//! The gateway under test: the release `thermocline run` as a child process
//! with a generated config, and what the harness reads from it (`/metrics`,
//! `/readyz`, `/proc`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

/// The counters the harness follows, from one `/metrics` scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub received: u64,
    pub rejected: u64,
    pub written: u64,
    pub failed: u64,
    pub skipped: u64,
    pub flushes: u64,
    pub flush_seconds: f64,
    /// Cold path (zero when it is off): rows in ClickHouse, S3 objects.
    pub ch_rows: u64,
    pub s3_objects: u64,
    /// Batches held by both stores, and cut but not yet held by both.
    pub batches_shipped: u64,
    pub batches_pending: i64,
    /// Decoded bytes in memory awaiting a cut or a store (the open batch too).
    pub pending_bytes: i64,
    pub spool_bytes: u64,
}

impl Counters {
    /// Parses the Prometheus text format; labelled series are summed.
    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            let base = name.split('{').next().unwrap_or(name);
            match base {
                "thermocline_ingest_messages_received_total" => c.received += v as u64,
                "thermocline_ingest_messages_rejected_total" => c.rejected += v as u64,
                "thermocline_hot_readings_written_total" => c.written += v as u64,
                "thermocline_hot_readings_failed_total" => c.failed += v as u64,
                "thermocline_hot_readings_skipped_total" => c.skipped += v as u64,
                "thermocline_hot_flush_duration_seconds_count" => c.flushes += v as u64,
                "thermocline_hot_flush_duration_seconds_sum" => c.flush_seconds += v,
                "thermocline_cold_clickhouse_rows_inserted_total" => c.ch_rows += v as u64,
                "thermocline_cold_s3_objects_written_total" => c.s3_objects += v as u64,
                "thermocline_cold_batches_shipped_total" => c.batches_shipped += v as u64,
                "thermocline_cold_batches_pending" => c.batches_pending += v as i64,
                "thermocline_cold_pending_bytes" => c.pending_bytes += v as i64,
                "thermocline_cold_spool_bytes" => c.spool_bytes += v as u64,
                _ => {}
            }
        }
        c
    }

    /// Readings that reached a final outcome (written, failed or skipped).
    pub fn settled(&self) -> u64 {
        self.written + self.failed + self.skipped
    }

    /// Both cold stores hold at least `rows` rows: ClickHouse has inserted
    /// them, and no batch is open or cut without being held by S3 and
    /// ClickHouse both (`batches_shipped` counts a batch only once both hold it).
    pub fn cold_done(&self, rows: u64) -> bool {
        self.ch_rows >= rows && self.batches_pending == 0 && self.pending_bytes == 0
    }
}

/// What the gateway child is started with.
pub struct GatewaySpec<'a> {
    pub bin: &'a Path,
    pub broker_port: u16,
    pub redis_url: &'a str,
    pub key_prefix: &'a str,
    /// Gateway id: also its MQTT client id (`thermocline-{id}`), unique per run.
    pub id: String,
    /// Config overrides as `THERMOCLINE__SECTION__KEY` environment variables.
    pub env: &'a [(String, String)],
    /// The cold path's settings (`THERMOCLINE__COLD__…`), or `None` for the
    /// hot path alone. The spool directory is added here (a fresh tempdir).
    pub cold: Option<&'a [(String, String)]>,
}

pub struct GatewayProc {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    pub client_id: String,
    /// Its `hot.key_prefix`: every Redis key of this run starts with it.
    pub key_prefix: String,
    pub cold: bool,
    broker_port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProc {
    /// Starts `thermocline run` and waits until `/readyz` answers 200 (broker
    /// connected, Redis answering).
    pub async fn start(spec: &GatewaySpec<'_>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("thermocline-bench-gw-")
            .tempdir()?;
        let http_port = devices::testkit::free_port()?;
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        // Only what the benchmark must change; everything else is the built-in default.
        // The hot-path figures (b) are measured without the cold path (acks on
        // receipt), as they were first published; (c) turns it on with the
        // stores' settings as environment variables (`spec.cold`).
        let conf = format!(
            "[gateway]\nid = \"{id}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
             [http]\nlisten = \"{http}\"\n\n[hot]\nkey_prefix = \"{prefix}\"\n\n\
             [hot.redis]\nurl = \"{redis}\"\n\n[cold]\nenabled = {cold}\n",
            id = spec.id,
            port = spec.broker_port,
            prefix = spec.key_prefix,
            redis = spec.redis_url,
            cold = spec.cold.is_some(),
        );
        let conf_path = dir.path().join("gateway.toml");
        std::fs::write(&conf_path, conf)?;
        // Outside the tempdir, so a failed run's log can be kept (see `stop`).
        let log_path = std::env::temp_dir().join(format!("thermocline-bench-{}.log", spec.id));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(spec.bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // The figures are for the defaults: no inherited overrides, only `--set`.
        for (k, _) in std::env::vars() {
            if k.starts_with("THERMOCLINE__") {
                cmd.env_remove(k);
            }
        }
        if let Some(cold) = spec.cold {
            cmd.envs(cold.iter().cloned());
            cmd.env(
                "THERMOCLINE__COLD__SPOOL__DIR",
                dir.path().join("spool").as_os_str(),
            );
        }
        cmd.envs(spec.env.iter().cloned());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", spec.bin.display()))?;
        let pid = child.id().context("gateway exited at once")?;
        let mut gw = Self {
            child,
            pid,
            http,
            client_id: format!("thermocline-{}", spec.id),
            key_prefix: spec.key_prefix.to_string(),
            cold: spec.cold.is_some(),
            broker_port: spec.broker_port,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = gw.child.try_wait()? {
                bail!("gateway exited with {status}: {}", gw.log_tail());
            }
            if matches!(http_get(http, "/readyz").await, Ok((200, _))) {
                return Ok(gw);
            }
            if Instant::now() > deadline {
                bail!("gateway not ready after 15 s: {}", gw.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let (status, body) = http_get(self.http, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(Counters::parse(&body))
    }

    /// Polls `/metrics` every `every` until `written` reaches `target`; returns
    /// the instant it was first seen there and the counters then. Fails when
    /// readings settle as failed or skipped (the target can then never be
    /// reached), or when nothing moves for `stall`.
    pub async fn wait_written(
        &mut self,
        target: u64,
        every: Duration,
        stall: Duration,
    ) -> anyhow::Result<(Instant, Counters)> {
        let mut last = self.counters().await?;
        let mut last_move = Instant::now();
        loop {
            let c = self.counters().await?;
            let now = Instant::now();
            if c.written >= target {
                return Ok((now, c));
            }
            if c.settled() >= target {
                bail!("readings settled without all being written: {c:?} (target {target})");
            }
            if c.written != last.written || c.received != last.received {
                last_move = now;
            } else if now - last_move > stall {
                bail!(
                    "no progress for {stall:?}: {c:?}, target {target} written; {}",
                    self.log_tail()
                );
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("gateway exited with {status}: {}", self.log_tail());
            }
            last = c;
            tokio::time::sleep(every).await;
        }
    }

    /// Cold runs: polls `/metrics` every `every` until `written` reaches
    /// `hot_target` and both cold stores hold `cold_rows` rows (see
    /// [`Counters::cold_done`]). Returns when each was first seen, the
    /// counters then, and the largest `thermocline_cold_spool_bytes` seen on
    /// the way. Fails like [`Self::wait_written`].
    pub async fn wait_cold(
        &mut self,
        hot_target: u64,
        cold_rows: u64,
        every: Duration,
        stall: Duration,
    ) -> anyhow::Result<ColdDone> {
        let mut last = self.counters().await?;
        let mut last_move = Instant::now();
        let mut hot_at = None;
        let mut spool_peak = last.spool_bytes;
        loop {
            let c = self.counters().await?;
            let now = Instant::now();
            spool_peak = spool_peak.max(c.spool_bytes);
            if hot_at.is_none() && c.written >= hot_target {
                hot_at = Some(now);
            }
            if let Some(hot_at) = hot_at.filter(|_| c.cold_done(cold_rows)) {
                return Ok(ColdDone {
                    hot_at,
                    cold_at: now,
                    end: c,
                    spool_peak,
                });
            }
            if c.settled() >= hot_target && c.written < hot_target {
                bail!("readings settled without all being written: {c:?} (target {hot_target})");
            }
            if c.written != last.written
                || c.received != last.received
                || c.ch_rows != last.ch_rows
                || c.batches_shipped != last.batches_shipped
                || c.pending_bytes != last.pending_bytes
            {
                last_move = now;
            } else if now - last_move > stall {
                bail!(
                    "no progress for {stall:?}: {c:?}, target {hot_target} written, \
                     {cold_rows} rows in the cold stores; {}",
                    self.log_tail()
                );
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("gateway exited with {status}: {}", self.log_tail());
            }
            last = c;
            tokio::time::sleep(every).await;
        }
    }

    /// Stops the gateway (SIGTERM, its ordered shutdown; SIGKILL after 15 s),
    /// then removes its persistent session from the broker so the broker does
    /// not keep queueing messages for a subscriber that is gone.
    /// The whole log is kept (and its path printed) when `keep_log`, e.g.
    /// after a failed run; otherwise it is deleted.
    pub async fn stop(mut self, keep_log: bool) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        if keep_log {
            eprintln!("gateway log kept: {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
        forget_session(self.broker_port, &self.client_id).await
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
}

/// What [`GatewayProc::wait_cold`] saw.
#[derive(Debug, Clone, Copy)]
pub struct ColdDone {
    /// Every reading written to Redis.
    pub hot_at: Instant,
    /// Every reading held by ClickHouse and S3 (and the hot path done).
    pub cold_at: Instant,
    pub end: Counters,
    pub spool_peak: u64,
}

/// Connects with `client_id` and a clean session, which discards the broker's
/// stored session of that id, then disconnects.
pub async fn forget_session(port: u16, client_id: &str) -> anyhow::Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet};
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(true);
    let (client, mut el) = AsyncClient::new(opts, 4);
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client.try_disconnect()?;
                }
                Event::Outgoing(Outgoing::Disconnect) => return anyhow::Ok(()),
                _ => {}
            }
        }
    })
    .await
    .context("forgetting the gateway's session timed out")?
}

/// A minimal HTTP/1.1 GET (`Connection: close`): the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .context("HTTP read timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_string()))
}

/// Runs one statement on ClickHouse's HTTP interface (`host:port`, no
/// credentials) and returns the body; fails on a status other than 200.
/// HTTP/1.0, so the answer is never chunked.
pub async fn clickhouse(addr: &str, sql: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("ClickHouse at {addr}"))?;
    s.write_all(
        format!(
            "POST / HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("ClickHouse read timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    if status != 200 {
        bail!("ClickHouse answered {status} to {sql:?}: {}", body.trim());
    }
    Ok(body.to_string())
}
