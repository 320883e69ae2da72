//! TLS and credentials against real servers: Mosquitto with a TLS listener and
//! a password file, redis-server with TLS and ACL users.
//!
//! Every test makes its own CA and server certificate (rcgen, `localhost` and
//! 127.0.0.1 as SANs) in a temp dir, and starts its own servers on free ports:
//! no key is committed and nothing depends on the machine's default servers.
//! Each gateway gets its own key prefix and client id. The Redis tests are in
//! `tls_redis.rs`; the fixtures they share are here.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use devices::testkit::Mosquitto;
use gateway::app::Gateway;
use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

pub(crate) const MQTT_USER: &str = "gw-tls";
pub(crate) const MQTT_PASS: &str = "mqtt-Pa55-0f-the-test";
/// The gateway's Redis ACL user (the `default` user has its own password).
pub(crate) const REDIS_USER: &str = "thermocline";
pub(crate) const REDIS_PASS: &str = "redis-Pa55-0f-the-test";
pub(crate) const REDIS_DEFAULT_PASS: &str = "redis-default-Pa55";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A test CA and a server certificate it signed, as PEM files.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    pub(crate) ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

pub(crate) fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let dir = tempfile::Builder::new()
        .prefix("thermocline-pki-")
        .tempdir()
        .unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Thermocline test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    // CertificateParams::new turns "127.0.0.1" into an IP address SAN.
    let mut srv =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    srv.distinguished_name.push(DnType::CommonName, "localhost");
    srv.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    srv.use_authority_key_identifier_extension = true;
    let srv_key = KeyPair::generate().unwrap();
    let srv_cert = srv.signed_by(&srv_key, &issuer).unwrap();

    let p = Pki {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server.key"),
        dir,
    };
    std::fs::write(&p.ca, ca_cert.pem()).unwrap();
    std::fs::write(&p.cert, srv_cert.pem()).unwrap();
    std::fs::write(&p.key, srv_key.serialize_pem()).unwrap();
    p
}

/// Mosquitto with only a TLS listener, no anonymous clients and one user.
async fn tls_broker(pki: &Pki) -> Mosquitto {
    let pw_file = pki.dir.path().join("mosquitto.passwd");
    let out = std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&pw_file)
        .args([MQTT_USER, MQTT_PASS])
        .output()
        .expect("mosquitto_passwd (apt-get install mosquitto)");
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
    let extra = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nallow_anonymous false\npassword_file {}\n",
        pki.ca.display(),
        pki.cert.display(),
        pki.key.display(),
        pw_file.display()
    );
    Mosquitto::start_with(&extra).await.unwrap()
}

/// A private redis-server: TLS only (`--port 0`), an ACL user for the gateway,
/// a password on `default`. Killed on drop.
pub(crate) struct TlsRedis {
    pub(crate) port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub(crate) async fn start(pki: &Pki) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("thermocline-redis-")
            .tempdir()
            .unwrap();
        for _ in 0..3 {
            let port = devices::testkit::free_port().unwrap();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", "0"])
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca)
                .args(["--tls-auth-clients", "no"])
                .args(["--requirepass", REDIS_DEFAULT_PASS])
                // One argument per ACL rule: redis-server quotes an argument
                // with spaces into a single (invalid) user name.
                .args(["--user", REDIS_USER, "on", &format!(">{REDIS_PASS}")])
                .args(["~*", "&*", "+@all"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server (apt-get install redis-server)");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break; // port taken, or a bad option: try again / fail below
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Self {
                        port,
                        _child: child,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = child.kill().await;
        }
        panic!(
            "redis-server with TLS did not start: {}",
            std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

pub(crate) fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub(crate) fn unique(name: &str) -> String {
    format!("tls-{name}-{}", std::process::id())
}

/// The gateway's environment for a TLS broker and a TLS Redis.
pub(crate) fn gateway_env(
    name: &str,
    broker: &Mosquitto,
    mqtt_pass: &str,
    redis: &TlsRedis,
    pki: &Pki,
) -> Vec<(String, String)> {
    env(&[
        ("THERMOCLINE__MQTT__PORT", broker.port.to_string()),
        ("THERMOCLINE__MQTT__USERNAME", MQTT_USER.into()),
        ("THERMOCLINE__MQTT__PASSWORD", mqtt_pass.into()),
        ("THERMOCLINE__MQTT__TLS__ENABLED", "true".into()),
        ("THERMOCLINE__MQTT__TLS__CA_FILE", path(&pki.ca)),
        ("THERMOCLINE__MQTT__CLIENT_ID", unique(name)),
        ("THERMOCLINE__MQTT__RECONNECT_MAX_DELAY", "500ms".into()),
        ("THERMOCLINE__HTTP__LISTEN", "127.0.0.1:0".into()),
        ("THERMOCLINE__HOT__KEY_PREFIX", unique(name)),
        ("THERMOCLINE__HOT__FLUSH_INTERVAL", "20ms".into()),
        ("THERMOCLINE__HOT__REDIS__URL", redis.url()),
        ("THERMOCLINE__HOT__REDIS__USERNAME", REDIS_USER.into()),
        ("THERMOCLINE__HOT__REDIS__PASSWORD", REDIS_PASS.into()),
        ("THERMOCLINE__HOT__REDIS__TLS_CA_FILE", path(&pki.ca)),
    ])
}

pub(crate) fn path(p: &Path) -> String {
    p.display().to_string()
}

pub(crate) async fn start_gateway(mut env: Vec<(String, String)>) -> Gateway {
    // These tests are about TLS and credentials: hot path only (cold.rs covers the spool).
    env.insert(0, ("THERMOCLINE__COLD__ENABLED".into(), "false".into()));
    let cfg = gateway::config::load_with_env(None, env)
        .unwrap()
        .validate()
        .unwrap();
    Gateway::start(cfg, CancellationToken::new()).await.unwrap()
}

/// A test client's options: TLS with the test CA unless `tls` is false.
fn client_opts(
    id: &str,
    port: u16,
    pki: &Pki,
    tls: bool,
    creds: Option<(&str, &str)>,
) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    if tls {
        hot::connect::ensure_crypto_provider();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: std::fs::read(&pki.ca).unwrap(),
            alpn: None,
            client_auth: None,
        }));
    }
    o
}

/// The first event of a fresh connection: the ConnAck, or why there was none.
async fn first_event(opts: MqttOptions) -> Result<Event, ConnectionError> {
    let (_client, mut el) = AsyncClient::new(opts, 10);
    tokio::time::timeout(Duration::from_secs(5), el.poll())
        .await
        .expect("broker answered within 5 s")
}

/// Publishes at QoS 1 and waits for every PubAck.
async fn publish(opts: MqttOptions, topic: &str, payloads: &[String]) {
    let (client, mut el) = AsyncClient::new(opts, 64);
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    let deadline = Instant::now() + WAIT;
    while acked < payloads.len() {
        let ev = tokio::time::timeout_at(deadline.into(), el.poll())
            .await
            .expect("PubAcks within the deadline")
            .expect("publisher connection");
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
}

pub(crate) async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of an unlabelled sample in the Prometheus text format.
pub(crate) fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Captures this thread's tracing output (the tests run on a current-thread
/// runtime, so the gateway's tasks log on this thread too).
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let me = self.clone();
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || me.clone())
            .finish()
    }
}

#[tokio::test]
async fn mqtt_over_tls_with_password_reaches_redis() {
    let pki = pki();
    let broker = tls_broker(&pki).await;
    let redis = TlsRedis::start(&pki).await;
    let logs = Captured::default();
    let _log = tracing::subscriber::set_default(logs.subscriber());

    // The broker really is TLS-only and password-protected.
    let plain = first_event(client_opts(
        &unique("plain"),
        broker.port,
        &pki,
        false,
        Some((MQTT_USER, MQTT_PASS)),
    ))
    .await;
    assert!(
        plain.is_err(),
        "plain TCP accepted by the TLS listener: {plain:?}"
    );
    let anon = first_event(client_opts(&unique("anon"), broker.port, &pki, true, None)).await;
    assert!(
        matches!(anon, Err(ConnectionError::ConnectionRefused(_))),
        "anonymous client: {anon:?}"
    );

    let gw = start_gateway(gateway_env("e2e", &broker, MQTT_PASS, &redis, &pki)).await;
    let base = format!("http://{}", gw.http_addr);
    // Publish only once the gateway's first session has subscribed: the
    // broker keeps nothing for a session that does not exist yet.
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(&format!("{base}/readyz")).await;
        if status == 200 && logs.text().contains("subscribed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway not ready: {status} {body}\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let device = unique("dev");
    let now = hot::service::now_ms();
    let payloads: Vec<String> = (0..3)
        .map(|i| {
            format!(
                r#"{{"ts":{},"seq":{i},"metrics":{{"temp":{}.5}}}}"#,
                now - 3000 + i * 1000,
                20 + i
            )
        })
        .collect();
    publish(
        client_opts(
            &unique("pub"),
            broker.port,
            &pki,
            true,
            Some((MQTT_USER, MQTT_PASS)),
        ),
        &format!("devices/{device}/telemetry"),
        &payloads,
    )
    .await;

    let url = format!("{base}/api/v1/devices/{device}/latest");
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = get(&url).await;
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "no data for {device} after {WAIT:?}: {status} {body}\nbroker log:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let latest: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(latest["metrics"]["temp"]["value"], 22.5, "{body}");
    assert_eq!(latest["metrics"]["temp"]["ts_ms"], now - 1000, "{body}");

    // The windows hold all three readings (count, not only the last value).
    let (status, body) = get(&format!(
        "{base}/api/v1/devices/{device}/metrics/temp/windows?resolution=1h&last=2h"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let w: serde_json::Value = serde_json::from_str(&body).unwrap();
    let count: u64 = w["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("buckets in {body}"))
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 3, "{body}");

    gw.stop().await;

    let text = logs.text();
    assert!(text.contains("connected to broker"), "{text}");
    for secret in [MQTT_PASS, REDIS_PASS] {
        assert!(!text.contains(secret), "a secret in the logs:\n{text}");
    }
}

#[tokio::test]
async fn mqtt_wrong_password_is_refused_and_not_ready() {
    let pki = pki();
    let broker = tls_broker(&pki).await;
    let redis = TlsRedis::start(&pki).await;
    let logs = Captured::default();
    let _log = tracing::subscriber::set_default(logs.subscriber());
    let wrong = "not-the-Pa55word-42";

    let gw = start_gateway(gateway_env("wrongpw", &broker, wrong, &redis, &pki)).await;
    let base = format!("http://{}", gw.http_addr);

    // Wait until the broker has refused the gateway (the only client here;
    // Mosquitto logs refused clients as `<unknown>`) a few times, so the
    // refusal is the password's doing, not a TLS failure or a slow start.
    let deadline = Instant::now() + WAIT;
    loop {
        let refusals = broker
            .log()
            .lines()
            .filter(|l| l.contains("disconnected, not authorised"))
            .count();
        if refusals >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker did not refuse the gateway twice:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Redis is fine (ready says so), only MQTT is not.
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(status, 503, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["mqtt"], false, "{body}");
        if v["redis"] == true {
            break body;
        }
        assert!(Instant::now() < deadline, "redis never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("\"ready\":false"), "{body}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert_eq!(
        sample(&metrics, "thermocline_ingest_mqtt_connected"),
        Some(0.0),
        "{metrics}"
    );
    gw.stop().await;

    let text = logs.text();
    assert!(text.contains("broker connection failed"), "{text}");
    assert!(!text.contains(wrong), "the password in the logs:\n{text}");
}

#[test]
fn check_config_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not checked by check-config").unwrap();
    let mqtt_secret = "mqtt-S3cret-in-env-1";
    let redis_secret = "redis-S3cret-in-env-2";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .arg("check-config")
        .env("THERMOCLINE__MQTT__USERNAME", "gw")
        .env("THERMOCLINE__MQTT__PASSWORD", mqtt_secret)
        .env("THERMOCLINE__HOT__REDIS__URL", "rediss://127.0.0.1:6380")
        .env("THERMOCLINE__HOT__REDIS__USERNAME", "thermocline")
        .env("THERMOCLINE__HOT__REDIS__PASSWORD", redis_secret)
        .env("THERMOCLINE__HOT__REDIS__TLS_CA_FILE", &ca)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("config OK"), "{text}");
    for secret in [mqtt_secret, redis_secret] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert_eq!(text.matches("<redacted>").count(), 2, "{text}");
    // The non-secret values are shown, so the redaction is not by omission.
    assert!(text.contains("rediss://127.0.0.1:6380"), "{text}");

    // A config that fails validation must not print them either.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .arg("check-config")
        .env("THERMOCLINE__MQTT__USERNAME", "gw")
        .env("THERMOCLINE__MQTT__PASSWORD", mqtt_secret)
        .env(
            "THERMOCLINE__HOT__REDIS__URL",
            format!("redis://:{redis_secret}@127.0.0.1"),
        )
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("hot.redis.url"), "{text}");
    for secret in [mqtt_secret, redis_secret] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
}
