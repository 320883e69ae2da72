//! Issue 9: device families as they are in the field. Each example config of
//! `config/examples/` runs over the defaults in a gateway with the cold path
//! on; payloads in the shapes Zigbee2MQTT, Tasmota and Shelly Gen1 devices
//! publish go through a private tuned Mosquitto, and the Redis windows and the
//! ClickHouse rows hold exactly the readings the payloads carry, while the
//! family's non-telemetry topics are counted as rejected.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use devices::testkit::Mosquitto;
use rumqttc::{AsyncClient, MqttOptions, QoS};

use crate::{
    backfill::{clickhouse, database},
    cold::ColdStores,
    support::{redis_url, unique, TestGateway},
};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/examples")
        .join(name)
}

/// One expected reading: device, metric, event time (`None`: arrival time), value.
type Row = (String, &'static str, Option<i64>, f64);

struct Case {
    name: &'static str,
    config: &'static str,
    /// (topic, payload), published at QoS 1 in order.
    publish: Vec<(String, Vec<u8>)>,
    rows: Vec<Row>,
    /// Rejections expected, by reason.
    rejected: Vec<(&'static str, f64)>,
}

async fn run(case: Case) {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new(case.name);
    let gw = TestGateway::start_with_config(
        case.name,
        &broker,
        &redis_url(),
        Some(&example(case.config)),
        &stores.env_refs(),
    )
    .await;
    let started = hot::service::now_ms();

    let mut o = MqttOptions::new(unique("pub"), "127.0.0.1", broker.port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut ev) = AsyncClient::new(o, 100);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    // One message at a time, each received in a later millisecond than the
    // one before: readings without a seq or a ts (Shelly, Zigbee2MQTT) are
    // identified in ClickHouse by (device, metric, arrival ms) until seq-less
    // readings get a stable identity (issue 12), so two in one millisecond
    // would collapse into one row there.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, (topic, payload)) in case.publish.iter().enumerate() {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        while gw.metric("thermocline_ingest_messages_received_total", None) < (i + 1) as f64 {
            assert!(Instant::now() < deadline, "message {i} did not arrive");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.wait_hot_done(case.rows.len() as u64, Duration::from_secs(30))
        .await;
    for (reason, n) in &case.rejected {
        assert_eq!(
            gw.metric(
                "thermocline_ingest_messages_rejected_total",
                Some(("reason", reason))
            ),
            *n,
            "{reason}"
        );
    }

    // Hot: each (device, metric)'s window aggregate is exactly its readings'.
    let mut want: BTreeMap<(String, &str), (u64, f64)> = BTreeMap::new();
    for (dev, metric, _, v) in &case.rows {
        let e = want.entry((dev.clone(), *metric)).or_default();
        e.0 += 1;
        e.1 += v;
    }
    for ((dev, metric), (count, sum)) in &want {
        let url = format!(
            "{}/api/v1/devices/{dev}/metrics/{metric}/windows?resolution=1m&last=1d",
            gw.http
        );
        let body: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let agg = &body["aggregate"];
        assert_eq!(
            agg["count"].as_u64(),
            Some(*count),
            "{dev} {metric}: {body}"
        );
        let got = agg["sum"].as_f64().unwrap();
        assert!(
            (got - sum).abs() <= 1e-9 * sum.abs().max(1.0),
            "{dev} {metric}: {body}"
        );
    }

    // Cold: ClickHouse holds exactly these rows.
    let db = database(&stores);
    let deadline = Instant::now() + Duration::from_secs(60);
    let sql = format!(
        "SELECT device_id, metric, ts_ms, value FROM {db}.readings FINAL \
         ORDER BY device_id, metric, ts_ms, value FORMAT TSV"
    );
    let text = loop {
        // The pipeline creates the database with its first batch.
        let exists = clickhouse(&format!(
            "SELECT count() FROM system.tables WHERE database = '{db}' AND name = 'readings'"
        ))
        .await;
        let text = if exists.trim() == "1" {
            clickhouse(&sql).await
        } else {
            String::new()
        };
        if text.lines().count() >= case.rows.len() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "ClickHouse has {} of {} rows",
            text.lines().count(),
            case.rows.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut got: Vec<(String, String, i64, f64)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)).then(a.3.total_cmp(&b.3)));
    assert_eq!(got.len(), case.rows.len(), "{text}");
    let now = hot::service::now_ms();
    let mut rows_sorted = case.rows.clone();
    rows_sorted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)).then(a.3.total_cmp(&b.3)));
    for (g, w) in got.iter().zip(&rows_sorted) {
        assert_eq!(
            (g.0.as_str(), g.1.as_str(), g.3),
            (w.0.as_str(), w.1, w.3),
            "{text}"
        );
        match w.2 {
            Some(ts) => assert_eq!(g.2, ts, "{g:?}"),
            None => assert!((started..=now).contains(&g.2), "{g:?} not at arrival"),
        }
    }

    client.disconnect().await.ok();
    gw.stop_and_clean().await;
    stores.clean().await;
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Zigbee2MQTT: `zigbee2mqtt/{friendly_name}`, flat JSON with booleans, ON/OFF
/// and a nested OTA block that the example excludes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zigbee2mqtt_example_reads_flat_json_into_windows_and_clickhouse() {
    let s = unique("z");
    let sensor = format!("0x00158d0001a2b3c4-{s}");
    let plug = format!("plug-{s}");
    let publish = vec![
        (
            format!("zigbee2mqtt/{sensor}"),
            bytes(
                r#"{"battery":100,"humidity":40.5,"temperature":21.5,"linkquality":120,"voltage":3005,"update":{"state":"idle","installed_version":1}}"#,
            ),
        ),
        (
            format!("zigbee2mqtt/{sensor}"),
            bytes(
                r#"{"battery":99,"humidity":41,"temperature":21.25,"linkquality":115,"voltage":3001,"update":{"state":"idle","installed_version":1}}"#,
            ),
        ),
        (
            format!("zigbee2mqtt/{plug}"),
            bytes(r#"{"state":"ON","power":12.5,"child_lock":"UNLOCK","contact":false}"#),
        ),
        // The bridge's own topics and device availability: not telemetry.
        (
            "zigbee2mqtt/bridge/state".to_string(),
            bytes(r#"{"state":"online"}"#),
        ),
        (
            format!("zigbee2mqtt/{plug}/availability"),
            bytes(r#"{"state":"online"}"#),
        ),
        // A friendly name with a space cannot be a device id.
        (
            "zigbee2mqtt/living room".to_string(),
            bytes(r#"{"temperature":20}"#),
        ),
    ];
    let row = |d: &str, m: &'static str, v: f64| -> Row { (d.to_string(), m, None, v) };
    let rows = vec![
        row(&sensor, "battery", 100.0),
        row(&sensor, "humidity", 40.5),
        row(&sensor, "temperature", 21.5),
        row(&sensor, "linkquality", 120.0),
        row(&sensor, "voltage", 3005.0),
        row(&sensor, "battery", 99.0),
        row(&sensor, "humidity", 41.0),
        row(&sensor, "temperature", 21.25),
        row(&sensor, "linkquality", 115.0),
        row(&sensor, "voltage", 3001.0),
        row(&plug, "state", 1.0),
        row(&plug, "power", 12.5),
        row(&plug, "contact", 0.0),
    ];
    run(Case {
        name: "fieldz2m",
        config: "zigbee2mqtt.toml",
        publish,
        rows,
        rejected: vec![("invalid_topic", 2.0), ("invalid_device_id", 1.0)],
    })
    .await;
}

/// Tasmota: `tele/{topic}/SENSOR`, nested JSON flattened to dotted names, the
/// zone-less local `Time` read in the example's Europe/Berlin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasmota_example_reads_nested_json_with_its_local_time() {
    let s = unique("t");
    let dev = format!("tasmota_8E4F21-{s}");
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    // Whole seconds (Tasmota's resolution), a minute and two minutes ago.
    let now_s = hot::service::now_ms() / 1000;
    let local = |ago_s: i64| {
        let ts = jiff::Timestamp::from_second(now_s - ago_s).unwrap();
        let text = ts
            .to_zoned(berlin.clone())
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string();
        (text, (now_s - ago_s) * 1000)
    };
    let (t1, ms1) = local(120);
    let (t2, ms2) = local(60);
    let publish = vec![
        (
            format!("tele/{dev}/SENSOR"),
            bytes(&format!(
                r#"{{"Time":"{t1}","AM2301":{{"Temperature":21.5,"Humidity":40.1,"DewPoint":7.6}},"TempUnit":"C"}}"#
            )),
        ),
        (
            format!("tele/{dev}/SENSOR"),
            bytes(&format!(
                r#"{{"Time":"{t2}","ENERGY":{{"TotalStartTime":"2026-01-01T00:00:00","Total":1.25,"Power":[12,0],"Voltage":231}}}}"#
            )),
        ),
        // STATE and LWT are not the SENSOR source; a bad Time is malformed.
        (
            format!("tele/{dev}/STATE"),
            bytes(r#"{"Time":"2026-12-01T11:05:00","Uptime":"0T01:00:00"}"#),
        ),
        (format!("tele/{dev}/LWT"), bytes("Online")),
        (
            format!("tele/{dev}/SENSOR"),
            bytes(r#"{"Time":"yesterday","AM2301":{"Temperature":1}}"#),
        ),
    ];
    let row = |m: &'static str, ts: i64, v: f64| -> Row { (dev.clone(), m, Some(ts), v) };
    let rows = vec![
        row("AM2301.Temperature", ms1, 21.5),
        row("AM2301.Humidity", ms1, 40.1),
        row("AM2301.DewPoint", ms1, 7.6),
        row("ENERGY.Total", ms2, 1.25),
        row("ENERGY.Voltage", ms2, 231.0),
    ];
    run(Case {
        name: "fieldtasmota",
        config: "tasmota.toml",
        publish,
        rows,
        rejected: vec![("invalid_topic", 2.0), ("malformed", 1.0)],
    })
    .await;
}

/// Shelly Gen1: bare values, the metric from the topic, on/off and true/false as 1/0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shelly_example_reads_bare_values_with_the_metric_from_the_topic() {
    let s = unique("s");
    let dev = format!("shelly1pm-A4CF12F45A1B-{s}");
    let t = |rest: &str| format!("shellies/{dev}/{rest}");
    let publish = vec![
        (t("relay/0/power"), bytes("12.34")),
        (t("relay/0/power"), bytes("0.00")),
        (t("relay/0/energy"), bytes("5678")),
        (t("relay/0"), bytes("on")),
        (t("relay/0"), bytes("off")),
        (t("temperature"), bytes("45.21")),
        (t("online"), bytes("true")),
        // Not bare values, or not a Shelly source.
        (t("announce"), bytes(r#"{"id":"x","mode":"relay"}"#)),
        (t("relay/0/power"), bytes("1e999")),
        ("shellies/announce".to_string(), bytes(r#"{"id":"x"}"#)),
    ];
    let row = |m: &'static str, v: f64| -> Row { (dev.clone(), m, None, v) };
    let rows = vec![
        row("power", 12.34),
        row("power", 0.0),
        row("energy", 5678.0),
        row("relay0", 1.0),
        row("relay0", 0.0),
        row("temperature", 45.21),
        row("online", 1.0),
    ];
    run(Case {
        name: "fieldshelly",
        config: "shelly.toml",
        publish,
        rows,
        rejected: vec![
            ("non_numeric", 1.0),
            ("non_finite", 1.0),
            ("invalid_topic", 1.0),
        ],
    })
    .await;
}
