//! Issue 11, alert rules (`config/prometheus/thermocline-rules.yml`):
//! `promtool check rules`, `promtool test rules` with the committed unit tests,
//! the shipped `prometheus.yml` loads the file, and every alert has a severity,
//! a summary, a description naming its README runbook section (which exists),
//! and unit tests where it fires and where it does not. That the rules use
//! only exported metrics is checked against a running gateway in
//! `observability.rs` ([`rule_metrics`]).

use std::{collections::BTreeMap, path::PathBuf, process::Command};

fn prom_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/prometheus"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(prom_dir().join(name)).unwrap()
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prom_dir())
        .output()
        .expect("promtool is installed by scripts/services up (Debian package prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The `thermocline_*` metric names the rules' expressions use.
pub fn rule_metrics() -> Vec<String> {
    let rules = read("thermocline-rules.yml");
    let mut names: Vec<String> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.contains("description:"))
        .flat_map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("thermocline_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Each alert's lines, from `- alert: Name` to the next.
fn alerts() -> BTreeMap<String, String> {
    let rules = read("thermocline-rules.yml");
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, String)> = None;
    for l in rules.lines() {
        if let Some(name) = l.trim_start().strip_prefix("- alert: ") {
            if let Some((n, body)) = cur.take() {
                out.insert(n, body);
            }
            cur = Some((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = cur.as_mut() {
            body.push_str(l);
            body.push('\n');
        }
    }
    if let Some((n, body)) = cur {
        out.insert(n, body);
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_fire_and_stay_silent_in_unit_tests() {
    let check = promtool(&["check", "rules", "thermocline-rules.yml"]);
    let alerts = alerts();
    assert!(
        check.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{check}"
    );
    promtool(&["test", "rules", "thermocline-rules.test.yml"]);
    let config = promtool(&["check", "config", "prometheus.yml"]);
    assert!(
        config.contains("SUCCESS: 1 rule files found") && config.contains("thermocline-rules.yml"),
        "prometheus.yml loads the rules:\n{config}"
    );

    // The list, each present.
    for a in [
        "ThermoclineGatewayDown",
        "ThermoclineGatewayNotReady",
        "ThermoclineBrokerDisconnected",
        "ThermoclineRejectRatioHigh",
        "ThermoclineHotWritesFailing",
        "ThermoclineSpoolAbove80Percent",
        "ThermoclineSpoolOldestUnshipped",
        "ThermoclineS3Down",
        "ThermoclineClickHouseDown",
        "ThermoclineReconcilerRepairing",
        "ThermoclineFleetQuiet",
    ] {
        assert!(alerts.contains_key(a), "{a} missing");
    }

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    // Each alert_rule_test: its alertname and whether it expects alerts.
    let tests = read("thermocline-rules.test.yml");
    let mut cases: Vec<(String, bool)> = Vec::new();
    for l in tests.lines().map(str::trim) {
        if let Some(n) = l.strip_prefix("alertname: ") {
            cases.push((n.to_string(), true));
        } else if l == "exp_alerts: []" {
            cases.last_mut().expect("exp_alerts after alertname").1 = false;
        }
    }
    for (name, body) in &alerts {
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "{name}: severity label"
        );
        assert!(body.contains("summary: "), "{name}: summary");
        let runbook = format!("Runbook: README, section \\\"Runbook: {name}\\\"");
        assert!(
            body.contains(&runbook),
            "{name}: description names {runbook}"
        );
        assert!(
            readme.contains(&format!("### Runbook: {name}\n")),
            "README has no section \"### Runbook: {name}\""
        );
        assert!(
            cases.iter().any(|(n, fires)| n == name && *fires),
            "{name}: no unit test where it fires"
        );
        assert!(
            cases.iter().any(|(n, fires)| n == name && !*fires),
            "{name}: no unit test where it stays silent"
        );
    }
}
