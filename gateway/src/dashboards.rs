//! The Grafana dashboards (`config/grafana/dashboards/*.json`) checked without
//! Grafana: a lint of the JSON, and every panel's query run against the real
//! servers the way the datasource plugins would send it (`thermocline
//! dashboards-check`, `scripts/dashboards-check`, and the test suite).
//!
//! - Prometheus targets (`expr`): `GET /api/v1/query`; data = a non-empty result.
//! - ClickHouse targets (`rawSql`, grafana-clickhouse-datasource): the
//!   plugin's macros expanded for a range and interval ([`expand_clickhouse`]),
//!   then `POST` to the HTTP interface with `FORMAT JSON`; data = rows.
//! - Infinity targets (`url`, yesoreyeram-infinity-datasource): `GET` the
//!   gateway API at that path; data = the `root_selector` holds rows (or an
//!   object) with every column's `selector` present.
//!
//! Variables (`$name`, `${name}`) are replaced from a map first; Grafana's own
//! `$__…` names are left for the plugins' macros.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde_json::Value;

pub const PROMETHEUS_UID: &str = "thermocline-prometheus";
pub const CLICKHOUSE_UID: &str = "thermocline-clickhouse";
pub const API_UID: &str = "thermocline-api";

/// A dashboard file and its JSON.
pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

/// Reads every `*.json` of `dir`, sorted by name.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Dashboard>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p)?;
        let json =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        out.push(Dashboard {
            file: p.file_name().unwrap_or_default().to_string_lossy().into(),
            json,
        });
    }
    Ok(out)
}

/// The datasource uids a provisioning file declares (`uid: …` lines).
pub fn provisioned_uids(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("uid:"))
        .map(|u| u.trim().trim_matches('"').to_string())
        .collect()
}

/// The `$name` / `${name}` variables a string uses (not Grafana's `$__…`).
pub fn variables_used(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (start, braced) = if b.get(i + 1) == Some(&b'{') {
                (i + 2, true)
            } else {
                (i + 1, false)
            };
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let name = &s[start..j];
            if !name.is_empty() && !name.starts_with("__") && (!braced || b.get(j) == Some(&b'}')) {
                out.push(name.to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces `${name}` and `$name` from `vars`.
pub fn substitute(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    // Longest names first so `$device_id` is not cut by `$device`.
    let mut names: Vec<_> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        out = out.replace(&format!("${{{n}}}"), &vars[n]);
        out = out.replace(&format!("${n}"), &vars[n]);
    }
    out
}

/// grafana-clickhouse-datasource's macros, expanded as the plugin (v4)
/// expands them for the range `[from_ms, to_ms]` and an interval:
/// `$__timeFilter(c)` → `c >= toDateTime(FROM) AND c <= toDateTime(TO)`
/// (seconds), `$__fromTime` / `$__toTime` → `toDateTime(…)`,
/// `$__interval_s` → the interval in whole seconds (at least 1), and
/// `$__timeInterval(c)` → `toStartOfInterval(toDateTime(c), INTERVAL N second)`
/// (a function ClickHouse 18.16 lacks: the shipped panels bucket with
/// `$__interval_s` instead, which the plugin expands the same way).
pub fn expand_clickhouse(sql: &str, from_ms: i64, to_ms: i64, interval: Duration) -> String {
    let (from, to) = (from_ms.div_euclid(1000), to_ms.div_euclid(1000));
    let secs = interval.as_secs().max(1);
    let mut out = expand_fn(sql, "$__timeFilter", |c| {
        format!("{c} >= toDateTime({from}) AND {c} <= toDateTime({to})")
    });
    out = expand_fn(&out, "$__timeInterval", |c| {
        format!("toStartOfInterval(toDateTime({c}), INTERVAL {secs} second)")
    });
    out.replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", &secs.to_string())
}

fn expand_fn(s: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(&format!("{name}(")) {
        out.push_str(&rest[..i]);
        let after = &rest[i + name.len() + 1..];
        match after.find(')') {
            Some(j) => {
                out.push_str(&f(after[..j].trim()));
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Problems found in the dashboards' JSON: schemaVersion set, unique panel
/// ids, every datasource uid provisioned, every variable defined.
pub fn lint(dashboards: &[Dashboard], uids: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut dash_uids = Vec::new();
    for d in dashboards {
        let f = &d.file;
        let j = &d.json;
        if j["schemaVersion"].as_u64().unwrap_or(0) == 0 {
            problems.push(format!("{f}: schemaVersion not set"));
        }
        match j["uid"].as_str() {
            Some(u) if !dash_uids.contains(&u) => dash_uids.push(u),
            _ => problems.push(format!("{f}: dashboard uid missing or repeated")),
        }
        let vars: Vec<&Value> = j["templating"]["list"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        let defined: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
        let check_ds = |what: &str, ds: &Value| match ds["uid"].as_str() {
            Some(u) if uids.iter().any(|x| x == u) => None,
            other => Some(format!(
                "{f}: {what}: datasource uid {other:?} not provisioned"
            )),
        };
        for v in &vars {
            if v["type"] == "query" {
                problems.extend(check_ds(
                    &format!("variable {}", v["name"]),
                    &v["datasource"],
                ));
            }
        }
        let panels = j["panels"].as_array().cloned().unwrap_or_default();
        if panels.is_empty() {
            problems.push(format!("{f}: no panels"));
        }
        let mut ids = Vec::new();
        for p in &panels {
            let title = p["title"].as_str().unwrap_or("?");
            match p["id"].as_u64() {
                Some(id) if !ids.contains(&id) => ids.push(id),
                id => problems.push(format!(
                    "{f}: panel {title:?}: id {id:?} missing or repeated"
                )),
            }
            problems.extend(check_ds(&format!("panel {title:?}"), &p["datasource"]));
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{f}: panel {title:?}: no targets"));
            }
            // A target without its own datasource uses the panel's (as Grafana does).
            for t in targets.iter().filter(|t| !t["datasource"].is_null()) {
                problems.extend(check_ds(
                    &format!("panel {title:?} target"),
                    &t["datasource"],
                ));
            }
        }
        // Every $variable anywhere in the dashboard resolves.
        let text = j.to_string();
        for used in variables_used(&text) {
            if !defined.contains(&used.as_str()) {
                problems.push(format!("{f}: variable ${used} used but not defined"));
            }
        }
    }
    problems
}

/// Where the panels' queries go.
pub struct Servers {
    pub prometheus: String,
    pub clickhouse: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Option<String>,
    /// The gateway's HTTP API base, e.g. `http://127.0.0.1:9880`.
    pub api: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Ok,
    NoData,
    Error(String),
}

/// One target's outcome, with what it returned (rows for ClickHouse and the
/// API, the result vector for Prometheus).
#[derive(Debug, Clone)]
pub struct TargetCheck {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub datasource: String,
    pub query: String,
    pub status: Status,
    pub data: Value,
}

impl TargetCheck {
    /// `ok`, `no data` or `error: …`, then the dashboard, panel and target.
    pub fn line(&self) -> String {
        let status = match &self.status {
            Status::Ok => "ok".to_string(),
            Status::NoData => "no data".to_string(),
            Status::Error(e) => format!("error: {e}"),
        };
        format!(
            "{} / {} [{}]: {status}",
            self.dashboard, self.panel, self.ref_id
        )
    }
}

/// Runs a ClickHouse query (macros already expanded) and returns its rows.
pub async fn clickhouse_rows(
    http: &reqwest::Client,
    s: &Servers,
    sql: &str,
) -> Result<Vec<Value>, String> {
    let mut req = http
        .post(&s.clickhouse)
        .basic_auth(&s.clickhouse_user, s.clickhouse_password.as_ref())
        .body(format!("{sql} FORMAT JSON"));
    req = req.timeout(Duration::from_secs(30));
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect());
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(v["data"].as_array().cloned().unwrap_or_default())
}

fn select<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(v, |v, k| v.get(k))
}

/// Resolves query variables (`type: query`) that `vars` does not set, the way
/// Grafana picks a default: the first value the query returns.
pub async fn resolve_variables(
    http: &reqwest::Client,
    s: &Servers,
    d: &Dashboard,
    vars: &mut BTreeMap<String, String>,
    range: (i64, i64),
) {
    for v in d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = v["name"].as_str() else {
            continue;
        };
        if vars.contains_key(name) {
            continue;
        }
        match v["type"].as_str() {
            Some("constant") | Some("custom") => {
                if let Some(q) = v["query"].as_str() {
                    vars.insert(name.into(), q.split(',').next().unwrap_or("").trim().into());
                }
            }
            Some("query") if v["datasource"]["uid"] == CLICKHOUSE_UID => {
                let sql = substitute(v["query"].as_str().unwrap_or(""), vars);
                let sql = expand_clickhouse(&sql, range.0, range.1, Duration::from_secs(60));
                if let Ok(rows) = clickhouse_rows(http, s, &sql).await {
                    if let Some(first) = rows
                        .first()
                        .and_then(|r| r.as_object()?.values().next().cloned())
                    {
                        vars.insert(
                            name.into(),
                            first
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or(first.to_string()),
                        );
                    }
                }
            }
            Some("query")
                if v["datasource"]["uid"] == PROMETHEUS_UID && v["includeAll"] == true =>
            {
                vars.insert(name.into(), v["allValue"].as_str().unwrap_or(".*").into());
            }
            _ => {}
        }
    }
}

/// Every target of every panel, run once against `s` for the range and interval.
pub async fn check(
    dashboards: &[Dashboard],
    s: &Servers,
    vars: &BTreeMap<String, String>,
    range: (i64, i64),
    interval: Duration,
) -> Vec<TargetCheck> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let mut out = Vec::new();
    for d in dashboards {
        let mut vars = vars.clone();
        resolve_variables(&http, s, d, &mut vars, range).await;
        // Variable queries count as targets too.
        let mut targets: Vec<(String, Value)> = Vec::new();
        for v in d.json["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if v["type"] == "query" && v["datasource"]["uid"] == CLICKHOUSE_UID {
                targets.push((
                    format!("variable ${}", v["name"].as_str().unwrap_or("?")),
                    serde_json::json!({"refId": "var", "datasource": v["datasource"], "rawSql": v["query"]}),
                ));
            }
        }
        for p in d.json["panels"].as_array().into_iter().flatten() {
            let title = substitute(p["title"].as_str().unwrap_or("?"), &vars);
            for t in p["targets"].as_array().into_iter().flatten() {
                let mut t = t.clone();
                if t["datasource"].is_null() {
                    t["datasource"] = p["datasource"].clone();
                }
                targets.push((title.clone(), t));
            }
        }
        for (panel, t) in targets {
            let uid = t["datasource"]["uid"].as_str().unwrap_or("").to_string();
            let (query, result) = match uid.as_str() {
                PROMETHEUS_UID => {
                    let q = substitute(t["expr"].as_str().unwrap_or(""), &vars);
                    let r = prometheus(&http, s, &q).await;
                    (q, r)
                }
                CLICKHOUSE_UID => {
                    let q = substitute(t["rawSql"].as_str().unwrap_or(""), &vars);
                    let q = expand_clickhouse(&q, range.0, range.1, interval);
                    let r = clickhouse_rows(&http, s, &q).await.map(Value::Array);
                    (q, r)
                }
                API_UID => {
                    let q = substitute(t["url"].as_str().unwrap_or(""), &vars);
                    let r = api(&http, s, &q, &t, &vars).await;
                    (q, r)
                }
                other => (
                    String::new(),
                    Err(format!("unknown datasource uid {other:?}")),
                ),
            };
            let (status, data) = match result {
                Ok(v) if v.as_array().is_some_and(|a| a.is_empty()) => (Status::NoData, v),
                Ok(v) => (Status::Ok, v),
                Err(e) => (Status::Error(e), Value::Null),
            };
            out.push(TargetCheck {
                dashboard: d.json["title"].as_str().unwrap_or(&d.file).to_string(),
                panel,
                ref_id: t["refId"].as_str().unwrap_or("").to_string(),
                datasource: uid,
                query,
                status,
                data,
            });
        }
    }
    out
}

async fn prometheus(http: &reqwest::Client, s: &Servers, q: &str) -> Result<Value, String> {
    let r = http
        .get(format!(
            "{}/api/v1/query",
            s.prometheus.trim_end_matches('/')
        ))
        .query(&[("query", q)])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = r.json().await.map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(v["error"].as_str().unwrap_or("query failed").to_string());
    }
    Ok(v["data"]["result"].clone())
}

/// The Infinity panel's rows: the JSON at `root_selector`, each with every
/// column's selector present (an object root counts as one row).
async fn api(
    http: &reqwest::Client,
    s: &Servers,
    path: &str,
    t: &Value,
    vars: &BTreeMap<String, String>,
) -> Result<Value, String> {
    let url = format!("{}{}", s.api.trim_end_matches('/'), path);
    let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    let root = substitute(t["root_selector"].as_str().unwrap_or(""), vars);
    let at = select(&body, &root).ok_or_else(|| format!("no {root:?} in the answer"))?;
    let rows: Vec<Value> = match at {
        Value::Array(a) => a.clone(),
        v => vec![v.clone()],
    };
    for row in &rows {
        for c in t["columns"].as_array().into_iter().flatten() {
            let sel = c["selector"].as_str().unwrap_or("");
            if select(row, sel).is_none() {
                return Err(format!("a row has no field {sel:?}: {row}"));
            }
        }
    }
    Ok(Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_expand_like_the_plugin() {
        let sql = "SELECT $__timeInterval(ts) AS t, intDiv(toUInt32(ts), $__interval_s) FROM r \
                   WHERE $__timeFilter(ts) AND ts < $__toTime AND ts > $__fromTime";
        let e = expand_clickhouse(
            sql,
            1_700_000_000_999,
            1_700_003_600_000,
            Duration::from_millis(20_500),
        );
        assert_eq!(
            e,
            "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 20 second) AS t, intDiv(toUInt32(ts), 20) FROM r \
             WHERE ts >= toDateTime(1700000000) AND ts <= toDateTime(1700003600) AND ts < toDateTime(1700003600) AND ts > toDateTime(1700000000)"
        );
        assert!(
            expand_clickhouse("x $__interval_s", 0, 1, Duration::from_millis(10)).ends_with(" 1")
        );
    }

    #[test]
    fn variables_are_found_and_substituted() {
        let s = "a = '${device}' AND m = '$metric' AND $__timeFilter(ts) ${database}.readings";
        assert_eq!(variables_used(s), ["device", "metric", "database"]);
        let vars = BTreeMap::from([
            ("device".to_string(), "d-1".to_string()),
            ("metric".to_string(), "temp".to_string()),
            ("database".to_string(), "db".to_string()),
        ]);
        assert_eq!(
            substitute(s, &vars),
            "a = 'd-1' AND m = 'temp' AND $__timeFilter(ts) db.readings"
        );
    }

    #[test]
    fn lint_finds_repeated_ids_unknown_uids_and_undefined_variables() {
        let json = serde_json::json!({
            "uid": "x", "title": "X", "schemaVersion": 39,
            "templating": {"list": [{"name": "device", "type": "query", "datasource": {"uid": CLICKHOUSE_UID}, "query": "SELECT 1"}]},
            "panels": [
                {"id": 1, "title": "a", "datasource": {"uid": PROMETHEUS_UID}, "targets": [{"refId": "A", "datasource": {"uid": PROMETHEUS_UID}, "expr": "up{d=\"$device\"}"}]},
                {"id": 1, "title": "b", "datasource": {"uid": "nope"}, "targets": [{"refId": "A", "datasource": {"uid": "nope"}, "expr": "up{m=\"${metric}\"}"}]}
            ]
        });
        let uids = vec![PROMETHEUS_UID.to_string(), CLICKHOUSE_UID.to_string()];
        let d = vec![Dashboard {
            file: "x.json".into(),
            json,
        }];
        let p = lint(&d, &uids).join("\n");
        assert!(
            p.contains("panel \"b\": id Some(1) missing or repeated"),
            "{p}"
        );
        assert!(p.contains("Some(\"nope\") not provisioned"), "{p}");
        assert!(p.contains("$metric used but not defined"), "{p}");
        assert!(!p.contains("$device"), "{p}");
        let mut ok = d;
        ok[0].json["panels"] = serde_json::json!([ok[0].json["panels"][0].clone()]);
        assert!(lint(&ok, &uids).is_empty(), "{:?}", lint(&ok, &uids));
    }
}
