//! Issue 11, the API as a contract: the committed OpenAPI 3 description
//! (`gateway/src/openapi.json`) is what `/api/v1/openapi.json` serves, names
//! every field the dashboards' API (Infinity) panels read, and schemathesis
//! (pinned, installed into `data/tools/schemathesis` by `scripts/services
//! up`) finds no 5xx, no response outside the schema (status, content type,
//! body) and no hang against a running gateway with data in it.

use std::{path::PathBuf, process::Stdio, time::Duration};

use devices::testkit::Mosquitto;
use serde_json::Value;

use crate::support::{redis_url, sim_config, unique, TestGateway};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn spec() -> Value {
    serde_json::from_str(gateway::http::OPENAPI_JSON).unwrap()
}

/// Follows `$ref`, `allOf` (first) on a schema.
fn resolve<'a>(spec: &'a Value, mut s: &'a Value) -> &'a Value {
    loop {
        if let Some(r) = s["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            s = &spec["components"]["schemas"][name];
        } else if let Some(first) = s["allOf"].get(0) {
            s = first;
        } else {
            return s;
        }
    }
}

/// The schema at a dotted field path (through arrays' items and maps'
/// additionalProperties), or None if the schema does not name it.
fn field<'a>(spec: &'a Value, mut s: &'a Value, path: &str) -> Option<&'a Value> {
    for part in path.split('.').filter(|p| !p.is_empty()) {
        s = resolve(spec, s);
        if s["type"] == "array" {
            s = resolve(spec, &s["items"]);
        }
        s = match s["properties"].get(part) {
            Some(p) => p,
            None if s["additionalProperties"].is_object() => &s["additionalProperties"],
            None => return None,
        };
    }
    Some(resolve(spec, s))
}

/// Every Infinity panel's URL is an operation of the description, and its
/// 200 schema names the root selector and every column the panel reads.
#[test]
fn api_panels_read_fields_the_openapi_description_names() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let mut seen = 0;
    for d in crate::dashboards::dashboards() {
        for p in d.json["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let Some(url) = t["url"].as_str() else {
                    continue;
                };
                seen += 1;
                let path = url.split('?').next().unwrap();
                // Match `/api/v1/devices/${device}/latest` to `/api/v1/devices/{id}/latest`.
                let op = spec["paths"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| {
                        let a: Vec<_> = k.split('/').collect();
                        let b: Vec<_> = path.split('/').collect();
                        a.len() == b.len()
                            && a.iter()
                                .zip(&b)
                                .all(|(x, y)| x == y || (x.starts_with('{') && y.starts_with('$')))
                    })
                    .unwrap_or_else(|| panic!("{url}: no operation in openapi.json"))
                    .1;
                let ok = &op["get"]["responses"]["200"]["content"]["application/json"]["schema"];
                let root_path = t["root_selector"]
                    .as_str()
                    .unwrap()
                    .replace("${metric}", "temp");
                let root = field(&spec, ok, &root_path)
                    .unwrap_or_else(|| panic!("{url}: the schema has no {root_path:?}"));
                for c in t["columns"].as_array().unwrap() {
                    let sel = c["selector"].as_str().unwrap();
                    assert!(
                        field(&spec, root, sel).is_some(),
                        "{url}: the schema has no {root_path}.{sel}"
                    );
                }
            }
        }
    }
    assert!(seen >= 3, "the dashboards' API panels: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_and_no_response_outside_the_schema() {
    let bin = std::env::var("THERMOCLINE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("data/tools/schemathesis/bin/schemathesis"));
    assert!(
        bin.is_file(),
        "{} missing: `scripts/services up` installs schemathesis",
        bin.display()
    );
    let broker = Mosquitto::start().await.unwrap();
    let gw = TestGateway::start("openapi", &broker, &redis_url(), &[]).await;
    let ledger = devices::sim::run(sim_config(&broker, &unique("oa"), 3, 20, 0))
        .await
        .unwrap();
    gw.wait_hot_done(ledger.total_readings(), Duration::from_secs(30))
        .await;

    let served: Value = reqwest::get(format!("{}/api/v1/openapi.json", gw.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served,
        spec(),
        "the gateway serves the committed description"
    );

    // What schemathesis found first: times at i64's edges overflowed the
    // range arithmetic (a panic, the connection closed). Now 400s.
    let dev = ledger.entries.keys().next().unwrap();
    for q in [
        "to=-9223372036854775808",
        "to=9223372036854775807&last=1000000000d",
        "from=0&to=253402300799999",
        "from=-9223372036854775808",
    ] {
        let r = reqwest::get(format!(
            "{}/api/v1/devices/{dev}/metrics/temp/windows?{q}",
            gw.http
        ))
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{q}");
    }
    for q in [
        "active_within=1000000000years",
        "silent_for=1000000000years",
    ] {
        let r = reqwest::get(format!("{}/api/v1/devices?{q}", gw.http))
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500, "{q}: {}", r.status());
    }

    let report = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(&bin)
        .args(["run", &format!("{}/api/v1/openapi.json", gw.http)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--max-time",
            "60",
            "--workers",
            "1",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(report.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    // No hang: the run and each request are bounded (above); this bounds the process.
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis did not finish within 300 s")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    gw.stop_and_clean().await;
}
