//! Issue 11, first run by hand: `config/local.toml` points the gateway at the
//! local services `scripts/services` starts, and a cold path that cannot reach
//! S3 at start says so in one log line and in `/readyz`, naming the endpoint.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use devices::testkit::Mosquitto;

use crate::{
    hot_path::thermocline,
    support::{free_port, redis_url, unique},
};

const LOCAL_TOML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/local.toml");

/// The shipped local config validates with the dev secret from the
/// environment, targets the local S3 server with the dev key and spools under
/// `data/`; without the secret, the error names the key and the variable.
#[test]
fn local_config_targets_the_local_services_with_the_secret_from_env() {
    let env = [(
        "THERMOCLINE__COLD__S3__SECRET_ACCESS_KEY".to_string(),
        "thermocline-secret".to_string(),
    )];
    let cfg = gateway::config::load_with_env(Some(LOCAL_TOML.as_ref()), env)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(
        cfg.cold.s3.endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert!(cfg.cold.s3.force_path_style);
    let creds = cfg
        .cold
        .s3
        .credentials
        .as_ref()
        .expect("static credentials");
    assert_eq!(creds.access_key_id, "thermocline");
    assert!(cfg.cold.enabled);
    assert_eq!(cfg.cold.spool.dir, std::path::Path::new("data/local/spool"));
    assert_eq!(cfg.cold.clickhouse.url.as_str(), "http://127.0.0.1:8123/");

    let out = thermocline(&["check-config", "--config", LOCAL_TOML], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cold.s3.secret_access_key")
            && err.contains("THERMOCLINE__COLD__S3__SECRET_ACCESS_KEY"),
        "{err}"
    );
}

/// `thermocline run --config config/local.toml` with S3 pointed at a port
/// nobody listens on: the gateway still starts and is ready (the spool absorbs
/// an S3 outage), `/readyz` shows `cold.s3 = false` with the endpoint in
/// `s3_endpoint` and `s3_error`, and the log has exactly one error line naming
/// the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_path_without_s3_at_start_says_so_naming_the_endpoint() {
    let broker = Mosquitto::start().await.unwrap();
    let spool = tempfile::tempdir().unwrap();
    let prefix = unique("first_run");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_thermocline"))
        .args(["run", "--config", LOCAL_TOML])
        .env("RUST_LOG", "warn")
        .env(
            "THERMOCLINE__COLD__S3__SECRET_ACCESS_KEY",
            "thermocline-secret",
        )
        .env("THERMOCLINE__COLD__S3__ENDPOINT", &dead)
        .env("THERMOCLINE__COLD__S3__MAX_ATTEMPTS", "2")
        .env(
            "THERMOCLINE__COLD__SPOOL__DIR",
            spool.path().join("spool").display().to_string(),
        )
        .env(
            "THERMOCLINE__COLD__CLICKHOUSE__DATABASE",
            format!("tc_it_{}", prefix.replace('-', "_")),
        )
        .env("THERMOCLINE__SYNC__ENABLED", "false")
        .env("THERMOCLINE__MQTT__PORT", broker.port.to_string())
        .env("THERMOCLINE__MQTT__CLIENT_ID", format!("gw-{prefix}"))
        .env("THERMOCLINE__HOT__KEY_PREFIX", &prefix)
        .env("THERMOCLINE__HOT__REDIS__URL", redis_url())
        .env("THERMOCLINE__HTTP__LISTEN", &http)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let (code, body) = loop {
        let r = match reqwest::get(format!("http://{http}/readyz")).await {
            Ok(r) => Some((
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )),
            Err(_) => None,
        };
        if let Some((code, body)) = r {
            if body["cold"]["s3_error"].is_string() && body["mqtt"] == true {
                break (code, body);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("gateway exited ({status}) before /readyz showed the S3 failure");
        }
        assert!(
            Instant::now() < deadline,
            "no S3 failure in /readyz within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);

    assert_eq!(
        code, 200,
        "an S3 outage alone keeps the gateway ready: {body}"
    );
    assert_eq!(body["cold"]["s3"], false, "{body}");
    assert_eq!(body["cold"]["s3_endpoint"], dead.as_str(), "{body}");
    let err = body["cold"]["s3_error"].as_str().unwrap();
    assert!(err.contains(&format!("cannot reach S3 at {dead}")), "{err}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("cannot reach S3"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line about S3:\n{log}");
    assert!(lines[0].contains(&dead), "{}", lines[0]);
    assert!(out.status.success(), "clean exit on SIGTERM:\n{log}");
}
