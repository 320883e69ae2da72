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
                _ => {}
            }
        }
        c
    }

    /// Readings that reached a final outcome (written, failed or skipped).
    pub fn settled(&self) -> u64 {
        self.written + self.failed + self.skipped
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
}

pub struct GatewayProc {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    pub client_id: String,
    /// Its `hot.key_prefix`: every Redis key of this run starts with it.
    pub key_prefix: String,
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
        // The hot-path figures are measured without the cold path (acks on
        // receipt), as they were first published; `--set cold.enabled=true`
        // (with the stores' settings) measures the whole gateway.
        let conf = format!(
            "[gateway]\nid = \"{id}\"\n\n[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
             [http]\nlisten = \"{http}\"\n\n[hot]\nkey_prefix = \"{prefix}\"\n\n\
             [hot.redis]\nurl = \"{redis}\"\n\n[cold]\nenabled = false\n",
            id = spec.id,
            port = spec.broker_port,
            prefix = spec.key_prefix,
            redis = spec.redis_url,
        );
        let conf_path = dir.path().join("gateway.toml");
        std::fs::write(&conf_path, conf)?;
        let log_path = dir.path().join("gateway.log");
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

    /// Stops the gateway (SIGTERM, its ordered shutdown; SIGKILL after 15 s),
    /// then removes its persistent session from the broker so the broker does
    /// not keep queueing messages for a subscriber that is gone.
    pub async fn stop(mut self) -> anyhow::Result<()> {
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
        forget_session(self.broker_port, &self.client_id).await
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }
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
