//! Issue 11, the Grafana dashboards without Grafana: the JSON is linted, and
//! after a simulated run every ClickHouse query (the plugin's macros expanded
//! for the run's range and an interval) and every Infinity panel URL is run
//! against the real ClickHouse and a running gateway, through the same code as
//! `thermocline dashboards-check`; the values match the ledger. The PromQL
//! targets of all dashboards run in `observability.rs` against a real
//! Prometheus scraping a real gateway.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use devices::testkit::Mosquitto;
use gateway::dashboards::{self as d, Dashboard, Servers, Status};
use serde_json::Value;

use crate::{
    cold::{env_or, ColdStores},
    support::{redis_url, sim_config, unique, TestGateway},
};

fn grafana_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/grafana"))
}

pub fn dashboards() -> Vec<Dashboard> {
    d::load(&grafana_dir().join("dashboards")).unwrap()
}

/// Unique panel ids, schemaVersion, every datasource uid provisioned, every
/// variable defined; the three dashboards are there, Device detail has its
/// `$device` / `$metric` variables queried from ClickHouse, and its
/// ClickHouse panels filter the time range with `$__timeFilter`.
#[test]
fn dashboards_lint_clean_with_provisioned_datasources() {
    let uids = d::provisioned_uids(
        &std::fs::read_to_string(grafana_dir().join("provisioning/datasources/thermocline.yaml"))
            .unwrap(),
    );
    assert_eq!(uids, [d::PROMETHEUS_UID, d::CLICKHOUSE_UID, d::API_UID]);
    let all = dashboards();
    let problems = d::lint(&all, &uids);
    assert!(problems.is_empty(), "{problems:#?}");
    let files: Vec<&str> = all.iter().map(|d| d.file.as_str()).collect();
    assert_eq!(files, ["device.json", "fleet.json", "thermocline.json"]);
    let device = &all[0].json;
    for v in ["device", "metric"] {
        let var = device["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == v)
            .unwrap_or_else(|| panic!("${v} missing"));
        assert_eq!(var["datasource"]["uid"], d::CLICKHOUSE_UID);
    }
    for dash in &all {
        for p in dash.json["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                if let Some(sql) = t["rawSql"].as_str() {
                    assert!(
                        sql.contains("$__timeFilter(ts)") || sql.contains("$__toTime"),
                        "{sql}"
                    );
                }
            }
        }
    }
    // The gateway dashboard filters every query by $gateway.
    for p in all[2].json["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            assert!(e.contains("instance=~\"$gateway\""), "{e}");
        }
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        v => v.as_f64().unwrap(),
    }
}

fn rows<'a>(checks: &'a [d::TargetCheck], dashboard: &str, panel: &str) -> &'a [Value] {
    checks
        .iter()
        .find(|c| c.dashboard == dashboard && c.panel.starts_with(panel))
        .unwrap_or_else(|| panic!("{dashboard} / {panel} not checked"))
        .data
        .as_array()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_clickhouse_and_api_panels_answer_with_the_runs_rows() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("dash");
    let gw = TestGateway::start("dash", &broker, &redis_url(), &stores.env_refs()).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("dash"), 4, 30, 0))
        .await
        .unwrap();
    stores.wait_exact(&ledger, Duration::from_secs(60)).await;
    gw.wait_hot_done(ledger.total_readings(), Duration::from_secs(30))
        .await;
    // One device gone quiet, for the quiet-devices panel.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(format!("{}:devices", gw.prefix))
        .arg(hot::service::now_ms() - 3_600_000)
        .arg("quiet-1")
        .query_async(&mut conn)
        .await
        .unwrap();

    let (device, by_metric) = ledger.entries.iter().next().unwrap();
    let temp = &by_metric["temp"];
    let vars = BTreeMap::from([
        ("database".to_string(), stores.database().to_string()),
        ("device".to_string(), device.clone()),
        ("metric".to_string(), "temp".to_string()),
    ]);
    let servers = Servers {
        prometheus: env_or("THERMOCLINE_TEST_PROMETHEUS_URL", "http://127.0.0.1:9090"),
        clickhouse: env_or("THERMOCLINE_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123"),
        clickhouse_user: "default".into(),
        clickhouse_password: None,
        api: gw.http.clone(),
    };
    let now = hot::service::now_ms();
    let range = (ledger.min_ts_ms().unwrap() - 60_000, now + 1_000);
    let checks: Vec<d::TargetCheck> = d::check(
        &dashboards(),
        &servers,
        &vars,
        range,
        Duration::from_secs(30),
    )
    .await
    .into_iter()
    .filter(|c| c.datasource != d::PROMETHEUS_UID)
    .collect();
    assert!(checks.len() >= 10, "{checks:#?}");
    let bad: Vec<String> = checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| format!("{}\n  {}", c.line(), c.query))
        .collect();
    assert!(bad.is_empty(), "panels without data:\n{}", bad.join("\n"));

    // Device detail: the buckets of $device/$metric add up to the ledger.
    let over_time = rows(&checks, "Thermocline device detail", "temp over time");
    let count: f64 = over_time.iter().map(|r| num(&r["readings"])).sum();
    let min = over_time
        .iter()
        .map(|r| num(&r["min"]))
        .fold(f64::INFINITY, f64::min);
    let max = over_time
        .iter()
        .map(|r| num(&r["max"]))
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(count as u64, temp.count, "{over_time:?}");
    assert_eq!((min, max), (temp.min, temp.max));
    // Variables resolve to the run's devices and metrics.
    let var_rows = rows(&checks, "Thermocline device detail", "variable $device");
    assert_eq!(var_rows.len(), ledger.entries.len());
    let metrics = rows(&checks, "Thermocline device detail", "variable $metric");
    assert_eq!(metrics.len(), by_metric.len());
    // The live panels read the gateway: the last value is the ledger's last.
    let live = rows(&checks, "Thermocline device detail", "Live last value");
    assert_eq!(num(&live[0]["ts_ms"]) as i64, temp.last_ts_ms);
    let windows = rows(&checks, "Thermocline device detail", "Current 10 s windows");
    let wcount: f64 = windows.iter().map(|r| num(&r["count"])).sum();
    assert_eq!(wcount as u64, temp.count);
    // Arrival lag is arrival − event time: small and not negative here.
    for r in rows(&checks, "Thermocline device detail", "Arrival lag") {
        let lag = num(&r["lag_max_s"]);
        assert!((0.0..60.0).contains(&lag), "{r}");
    }

    // Fleet overview: the per-metric distribution is the fleet's, from the ledger.
    let dist = rows(
        &checks,
        "Thermocline fleet overview",
        "Per-metric fleet distribution",
    );
    let t = dist.iter().find(|r| r["metric"] == "temp").unwrap();
    let all_temp: Vec<_> = ledger.entries.values().map(|m| &m["temp"]).collect();
    assert_eq!(
        num(&t["readings"]) as u64,
        all_temp.iter().map(|e| e.count).sum::<u64>()
    );
    assert_eq!(
        num(&t["min"]),
        all_temp.iter().map(|e| e.min).fold(f64::INFINITY, f64::min)
    );
    assert_eq!(
        num(&t["max"]),
        all_temp
            .iter()
            .map(|e| e.max)
            .fold(f64::NEG_INFINITY, f64::max)
    );
    let reporting = rows(&checks, "Thermocline fleet overview", "Devices reporting");
    assert_eq!(
        num(&reporting[0]["reporting_now"]) as usize,
        ledger.entries.len()
    );
    let top = rows(&checks, "Thermocline fleet overview", "Top devices");
    assert_eq!(top.len(), ledger.entries.len());
    assert!(
        top.iter().all(|r| num(&r["readings"]) as u64 == 30 * 3),
        "{top:?}"
    );
    let quiet = rows(&checks, "Thermocline fleet overview", "Devices silent");
    assert_eq!(quiet.len(), 1);
    assert_eq!(quiet[0]["device_id"], "quiet-1");

    gw.stop_and_clean().await;
}
