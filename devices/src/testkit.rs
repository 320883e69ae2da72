//! Test support (feature `testkit`): a private, tuned Mosquitto per test.
//!
//! Tests must not rely on a machine's default-config broker on 1883: Debian's
//! defaults drop QoS 1 messages for lagging subscribers and cap the in-flight
//! window at 20. [`Mosquitto::start`] runs `mosquitto -c CONF` in the foreground
//! as a child process with [`TUNED_CONF`] on a free loopback port, and kills it
//! on drop. [`Mosquitto::start_persistent`] keeps its state in a directory the
//! caller owns, so [`Mosquitto::restart`] (same port) can test reconnects and
//! persistent sessions. [`Mosquitto::start_with`] appends conf lines of the
//! caller's (a TLS listener, `allow_anonymous false`, a password file).
//!
//! The broker binary is `$MOSQUITTO_BIN`, else `mosquitto` on `PATH`, else
//! `/usr/sbin/mosquitto`.

use std::{
    io,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::process::{Child, Command};

/// The tuned broker settings: the one source for tests, benchmarks and the
/// `config/mosquitto` files. Instance-specific lines (listener, persistence,
/// log destination) are appended by [`render_conf`].
pub const TUNED_CONF: &str = "\
# Thermocline's tuned Mosquitto 2.x settings.
#
# Instance-specific lines follow this block; for a standalone broker add e.g.:
#   listener 1883 127.0.0.1
#   persistence false                   # or: persistence true
#   persistence_location /var/lib/thermocline/mosquitto/   (trailing slash)
#   log_dest file /var/log/thermocline/mosquitto.log

# Loopback listener for tests and the local demo: no authentication.
allow_anonymous true

# Per-client queue of QoS 1/2 messages waiting to be delivered. 0 = unlimited.
# Debian's default of 1000 silently drops QoS 1 messages for a subscriber that
# lags or is offline with a persistent session (the log says
# `Outgoing messages are being dropped for client ...`).
max_queued_messages 0
# Same queue, bounded in bytes. 0 = unlimited.
max_queued_bytes 0

# Outgoing QoS 1/2 messages in flight (sent, not yet acked) per client. The
# gateway acks a message only once it is durable, so its throughput is at most
# this window / ack latency: the default 20 with a 20 ms group commit caps it
# at ~1,000 msg/s.
max_inflight_messages 1000

# Started as root, mosquitto drops to user `mosquitto` and then cannot write a
# root-owned log, pid or persistence directory (with -d it exits 0 and does
# not run). Staying root only logs a warning.
user root
";

/// [`TUNED_CONF`] plus the instance-specific lines.
///
/// `persistence_dir`: `None` for an in-memory broker, or the directory of its
/// persistence database.
pub fn render_conf(port: u16, persistence_dir: Option<&Path>, log_file: &Path) -> String {
    let mut conf = String::from(TUNED_CONF);
    conf.push_str(&format!("\nlistener {port} 127.0.0.1\n"));
    match persistence_dir {
        None => conf.push_str("persistence false\n"),
        Some(dir) => {
            // Mosquitto concatenates location and file name: keep the slash.
            let mut location = dir.display().to_string();
            if !location.ends_with('/') {
                location.push('/');
            }
            conf.push_str(&format!(
                "persistence true\npersistence_location {location}\n"
            ));
        }
    }
    conf.push_str(&format!("log_dest file {}\n", log_file.display()));
    conf
}

/// How long a broker may take to accept MQTT connections.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A private Mosquitto child process on `127.0.0.1:port`.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    conf_path: PathBuf,
    log_path: PathBuf,
    // Readiness: an anonymous plain MQTT ConnAck, or (start_with) TCP accept.
    plain_probe: bool,
    // Holds conf and logs; removed on drop (after the child is killed).
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mosquitto")
            .field("port", &self.port)
            .field("pid", &self.child.as_ref().and_then(Child::id))
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Mosquitto {
    /// Starts an in-memory (persistence off) tuned broker on a free port.
    pub async fn start() -> io::Result<Self> {
        Self::launch(None, "").await
    }

    /// Starts an in-memory tuned broker with `extra_conf` appended after the
    /// listener line, so listener options apply to it, e.g.
    /// `cafile`/`certfile`/`keyfile` for TLS, `allow_anonymous false` and
    /// `password_file` (later lines override [`TUNED_CONF`]'s).
    ///
    /// Such a broker may refuse a plain anonymous client, so it counts as
    /// ready once it accepts TCP connections and is still running; the
    /// caller's first real client proves the rest.
    pub async fn start_with(extra_conf: &str) -> io::Result<Self> {
        Self::launch(None, extra_conf).await
    }

    /// Starts a tuned broker that persists its state in `dir` (which must
    /// exist), so that it survives [`Mosquitto::restart`].
    pub async fn start_persistent(dir: &Path) -> io::Result<Self> {
        Self::launch(Some(dir), "").await
    }

    async fn launch(persistence_dir: Option<&Path>, extra_conf: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("thermocline-mosquitto-")
            .tempdir()?;
        let mut broker = Self {
            port: 0,
            child: None,
            conf_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            plain_probe: extra_conf.is_empty(),
            dir,
        };
        // The port is free when probed but could be taken before mosquitto
        // binds it; the broker then exits at once, so try another.
        let mut last_err = None;
        for _ in 0..3 {
            broker.port = free_port()?;
            let mut conf = render_conf(broker.port, persistence_dir, &broker.log_path);
            if !extra_conf.is_empty() {
                conf.push_str("\n# Test-specific lines (Mosquitto::start_with)\n");
                conf.push_str(extra_conf);
                conf.push('\n');
            }
            std::fs::write(&broker.conf_path, conf)?;
            match broker.spawn_and_wait().await {
                Ok(()) => return Ok(broker),
                Err(e) => {
                    broker.kill().await;
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The broker's log file (`log_dest file`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The broker's log so far (empty if unreadable).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the child process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the broker gracefully (SIGTERM, so a persistent broker saves its
    /// state), killing it if it has not exited within 5 s. Idempotent.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            // No signal API without unsafe code or another dependency: use kill(1).
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = child.kill().await;
    }

    /// Kills the broker abruptly (SIGKILL), as in a crash: a persistent broker
    /// loses what it has not saved yet. Idempotent.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Stops the broker (gracefully) and starts it again on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await;
        self.spawn_and_wait().await
    }

    /// Starts the child with the current conf and waits until it takes MQTT
    /// connections.
    async fn spawn_and_wait(&mut self) -> io::Result<()> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))?;
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run mosquitto ({e}); install it (apt-get install mosquitto) \
                         or set MOSQUITTO_BIN"
                    ),
                )
            })?;
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().transpose()) {
                self.child = None;
                return Err(io::Error::other(format!(
                    "mosquitto on port {} exited with {}: {}",
                    self.port,
                    status?,
                    self.log_tail()
                )));
            }
            let up = if self.plain_probe {
                mqtt_connack(self.port).await
            } else {
                tcp_accepts(self.port).await
            };
            if up {
                // A ConnAck could come from another broker that took the
                // port first; ours would have exited by now.
                if self.is_running() {
                    return Ok(());
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "mosquitto on port {} not ready after {READY_TIMEOUT:?}: {}",
                        self.port,
                        self.log_tail()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self) -> String {
        let mut text = self.log();
        text.push_str(
            &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
        );
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" | ")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether an MQTT CONNECT on `port` is answered with a ConnAck within 1 s.
async fn mqtt_connack(port: u16) -> bool {
    let id = format!("testkit-ready-{port}-{}", std::process::id());
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(true);
    let (_client, mut eventloop) = AsyncClient::new(opts, 1);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await,
        Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
    )
}

/// Whether a TCP connection to `port` is accepted within 1 s.
async fn tcp_accepts(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)),
        )
        .await,
        Ok(Ok(_))
    )
}

fn mosquitto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOSQUITTO_BIN") {
        return bin.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| "/usr/sbin/mosquitto".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_rendering() {
        let log = Path::new("/tmp/x/mosquitto.log");
        let mem = render_conf(1234, None, log);
        assert!(mem.starts_with(TUNED_CONF));
        for line in [
            "listener 1234 127.0.0.1",
            "persistence false",
            "log_dest file /tmp/x/mosquitto.log",
            "max_queued_messages 0",
            "max_inflight_messages 1000",
            "user root",
        ] {
            assert!(mem.lines().any(|l| l == line), "{line:?} in\n{mem}");
        }
        let disk = render_conf(1, Some(Path::new("/data/mq")), log);
        assert!(disk.lines().any(|l| l == "persistence true"));
        assert!(disk.lines().any(|l| l == "persistence_location /data/mq/"));
        // The template's own instance lines are only comments.
        assert!(!TUNED_CONF
            .lines()
            .any(|l| l.starts_with("listener") || l.starts_with("persistence")));
    }
}
