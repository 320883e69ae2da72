//! Operators' side: /metrics passes `promtool check metrics`, the alert rules
//! use only exported metrics, and every PromQL panel of the Grafana dashboards
//! (config/grafana/dashboards) answers with data from a
//! real Prometheus scraping a running gateway with the hot path, the cold path
//! and the reconciler on. Grafana itself is not installable here; its panels
//! are just these queries.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use devices::testkit::Mosquitto;
use tokio::io::AsyncWriteExt;

use crate::{
    cold::ColdStores,
    support::{free_port, redis_url, sim_config, unique, TestGateway},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_lint_and_dashboard_queries_answer() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("obs");
    let gw = TestGateway::start("obs", &broker, &redis_url(), &stores.env_refs()).await;
    let fleet = tokio::spawn(devices::sim::run(sim_config(
        &broker,
        &unique("obs"),
        20,
        200,
        400,
    )));

    // 1. promtool's linter over the exposition text.
    let text = reqwest::get(format!("{}/metrics", gw.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lint = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/services up (Debian package prometheus)");
    lint.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let out = lint.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 1b. The alert rules use only metrics this gateway exports.
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let used = crate::alerts::rule_metrics();
    assert!(used.len() >= 10, "the rules' metrics: {used:?}");
    let missing: Vec<String> = used
        .into_iter()
        .filter(|m| !exported.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "alert rules use metrics the gateway does not export: {missing:?}"
    );

    // 2. A private Prometheus scraping this gateway every second.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let target = gw.http.trim_start_matches("http://");
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: thermocline\n    static_configs:\n      - targets: [\"{target}\"]\n"),
    )
    .unwrap();
    let mut prom = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus is installed by scripts/services up");
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: String| {
        let api = api.clone();
        async move {
            let r = reqwest::Client::new()
                .get(format!("{api}/query"))
                .query(&[("query", q.as_str())])
                .send()
                .await?;
            r.json::<serde_json::Value>().await
        }
    };

    // Every dashboard's PromQL targets ($gateway as Grafana's "All").
    let vars = std::collections::BTreeMap::from([("gateway".to_string(), ".*".to_string())]);
    let exprs: Vec<(String, String)> = crate::dashboards::dashboards()
        .iter()
        .flat_map(|d| d.json["panels"].as_array().cloned().unwrap_or_default())
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            let vars = vars.clone();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(move |t| {
                    t["expr"]
                        .as_str()
                        .map(|e| (title.clone(), gateway::dashboards::substitute(e, &vars)))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        exprs.len() >= 25,
        "the dashboards have their panels: {exprs:?}"
    );

    // Every panel must return data once a few scrapes have landed (rates need two).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = exprs.clone();
    while !missing.is_empty() {
        let mut still = Vec::new();
        for (title, expr) in missing {
            match query(expr.clone()).await {
                Ok(v)
                    if v["status"] == "success"
                        && v["data"]["result"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty()) => {}
                Ok(v) if v["status"] == "error" => {
                    panic!("panel {title:?}: {expr} is invalid: {v}")
                }
                _ => still.push((title, expr)),
            }
        }
        missing = still;
        if !missing.is_empty() {
            assert!(
                Instant::now() < deadline,
                "panels without data after 60 s: {missing:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // And the figures are live: the received rate is above zero while the fleet runs.
    let v = query("sum(rate(thermocline_ingest_messages_received_total[1m]))".into())
        .await
        .unwrap();
    let rate: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rate > 0.0, "{v}");

    let _ = prom.kill().await;
    fleet.await.unwrap().unwrap();
    gw.stop_and_clean().await;
    stores.clean().await;
}
