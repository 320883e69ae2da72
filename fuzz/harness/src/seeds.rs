//! The seed corpus: the decoders' test vectors, the RFC 8428 examples, and
//! spool and Parquet files made by the real encoders. `cargo run -p
//! fuzz-harness --example write-seeds` writes them to `fuzz/seeds/{target}/`;
//! the corpus test checks the committed files are these.

use cold::{
    row::{Batch, BatchId, ColdRow, SpoolPos},
    spool::{CutMarker, CutRange, Record},
};
use devices::{DeviceId, MetricName};

use crate::spool::join;

/// One seed file: its target, its file name, its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: &'static str,
    pub data: Vec<u8>,
}

/// RFC 8428 §5.1 examples (§5.1.2's SensML stream with its "..." cut off).
pub const RFC8428: &[(&str, &str)] = &[
    (
        "rfc8428-5.1.1",
        r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}]"#,
    ),
    (
        "rfc8428-5.1.2a",
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
{"n":"current","u":"A","v":1.2}]"#,
    ),
    (
        "rfc8428-5.1.2b",
        r#"[{"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
{"n":"current","t":-5,"v":1.2},{"n":"current","t":-4,"v":1.3},{"n":"current","t":-3,"v":1.4},
{"n":"current","t":-2,"v":1.5},{"n":"current","t":-1,"v":1.6},{"n":"current","v":1.7}]"#,
    ),
    (
        "rfc8428-5.1.2c",
        r#"[{"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":21.2},
{"t":10,"v":21.3},{"t":20,"v":21.4}]"#,
    ),
    (
        "rfc8428-5.1.3",
        r#"[{"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
{"u":"lon","v":24.30621},{"u":"lat","v":60.07965},{"t":60,"v":20.3},
{"u":"lon","t":60,"v":24.30622},{"u":"lat","t":60,"v":60.07965},{"t":120,"v":20.7},
{"u":"lon","t":120,"v":24.30623},{"u":"lat","t":120,"v":60.07966},{"u":"%EL","t":150,"v":98},
{"t":180,"v":21.2},{"u":"lon","t":180,"v":24.30628},{"u":"lat","t":180,"v":60.07967}]"#,
    ),
    (
        "rfc8428-5.1.4",
        r#"[{"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
{"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
{"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
{"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98}]"#,
    ),
    (
        "rfc8428-5.1.5",
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
{"n":"label","vs":"Machine Room"},{"n":"open","vb":false},{"n":"nfv-reader","vd":"aGkgCg"}]"#,
    ),
    (
        "rfc8428-5.1.6",
        r#"[{"bn":"2001:db8::2/","bt":1.320078429e+09,"n":"temperature","u":"Cel","v":25.2},
{"n":"humidity","u":"%RH","v":30},{"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
{"n":"humidity","u":"%RH","v":67}]"#,
    ),
    (
        "rfc8428-5.1.7a",
        r#"[{"bn":"urn:dev:ow:10e2073a01080063:"},{"n":"temp","u":"Cel","v":23.1},
{"n":"heat","u":"/","v":1},{"n":"fan","u":"/","v":0}]"#,
    ),
    (
        "rfc8428-5.1.7b",
        r#"[{"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":1},{"n":"2001:db8::4","v":1}]"#,
    ),
    (
        "rfc8428-5.1.7c",
        r#"[{"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},{"n":"2001:db8::4","v":0.5},
{"n":"2001:db8::3","t":0.1,"v":0},{"n":"2001:db8::4","t":0.1,"v":0}]"#,
    ),
];

/// SenML edge cases from the decoder's tests.
const SENML_EDGES: &[(&str, &str)] = &[
    (
        "non-numeric-vb",
        r#"[{"n":"t","v":1},{"n":"door","vb":true}]"#,
    ),
    ("overflow", r#"[{"n":"t","v":-1e999}]"#),
    ("future-absolute", r#"[{"n":"t","t":4e9,"v":1}]"#),
    (
        "future-relative",
        r#"[{"n":"t","v":1},{"n":"u","t":3600,"v":2}]"#,
    ),
    ("bver-unknown", r#"[{"bver":11,"n":"t","v":1}]"#),
    ("must-understand", r#"[{"n":"t","v":1,"x_":2}]"#),
    ("sum-only", r#"[{"n":"t","s":3}]"#),
    (
        "base-value-sum",
        r#"[{"bn":"b","bv":10,"bs":1,"bu":"V","n":"t","v":1.5}]"#,
    ),
    ("field-twice", r#"[{"n":"t","v":1,"v":2}]"#),
];

/// The gateway JSON format's test vectors.
const JSON_VECTORS: &[(&str, &str)] = &[
    (
        "readme",
        r#"{"ts":1732530000123,"seq":17,"metrics":{"temp":21.5,"hum":40.2}}"#,
    ),
    ("no-ts", r#"{"seq":3,"metrics":{"temp":21.5}}"#),
    ("ts-null", r#"{"ts":null,"metrics":{"a":1}}"#),
    ("ts-negative", r#"{"ts":-1,"metrics":{"a":1}}"#),
    ("ts-fraction", r#"{"ts":1.5,"metrics":{"a":1}}"#),
    ("ts-future", r#"{"ts":99999999999999,"metrics":{"t":1}}"#),
    (
        "seq-max",
        r#"{"seq":18446744073709551615,"metrics":{"t":1}}"#,
    ),
    ("bad-metric", r#"{"metrics":{"t emp":1}}"#),
    ("nan", r#"{"metrics":{"t":NaN}}"#),
    ("string", r#"{"metrics":{"t":"hot"}}"#),
    ("overflow", r#"{"metrics":{"t":1e999}}"#),
    ("empty", r#"{"metrics":{}}"#),
    ("duplicate", r#"{"metrics":{"a":1,"a":2}}"#),
    (
        "extra-keys",
        r#"{"fw":"1.2","metrics":{"a":-0.0,"b.c/d:e_f-g":1e-300}}"#,
    ),
];

/// Bare values as Shelly Gen1 and Tasmota devices publish them.
const VALUES: &[(&str, &str)] = &[
    ("number", "21.5"),
    ("exponent", "-3e2"),
    ("on", "ON"),
    ("false", "false"),
    ("word-unknown", "toggle"),
    ("huge", "1e999"),
];

/// Field-device JSON shapes (Zigbee2MQTT flat, Tasmota nested).
const FIELD_JSON: &[(&str, &str)] = &[
    (
        "zigbee2mqtt",
        r#"{"battery":97,"humidity":41.2,"linkquality":120,"temperature":21.5,"voltage":2995}"#,
    ),
    (
        "tasmota",
        r#"{"Time":"2026-11-30T12:00:00","AM2301":{"Temperature":21.5,"Humidity":40.1},"TempUnit":"C"}"#,
    ),
];

const TOPICS: &[(&str, &str)] = &[
    ("default", "devices/sensor-7/telemetry"),
    ("custom", "{device_id}/up\nsensor.9/up"),
    ("three-levels", "site/{device_id}/a/b\nsite/dev_1/a/b"),
    ("hostile-id", "devices/a:b/telemetry"),
    ("dot-dot", "devices/../x/telemetry"),
    ("empty-id", "devices//telemetry"),
    ("extra-level", "devices/a/b/telemetry"),
    ("wildcard", "devices/+/telemetry"),
    ("reserved", "$SYS/{device_id}\n$SYS/x"),
    ("two-ids", "a/{device_id}/{device_id}\na/b/c"),
    ("unicode", "devices/d\u{e9}vice/telemetry"),
];

const CONFIG_FILES: &[(&str, &str)] = &[
    (
        "override",
        "[gateway]\nid = \"gw-2\"\n[hot]\nflush_interval = \"250ms\"\n[mqtt]\nport = 1999\n\
         THERMOCLINE__HOT__KEY_PREFIX=env\nTHERMOCLINE__MQTT__SHARED_GROUP=g\n",
    ),
    ("unknown-key", "[hot]\nflush_intervall = \"250ms\"\n"),
    ("bad-type", "[mqtt]\nport = \"many\"\n"),
    (
        "bad-env",
        "THERMOCLINE__MQTT__QOS=2\nTHERMOCLINE__MQTT__MAX_UNACKED=0\n",
    ),
    (
        "secrets",
        "[mqtt]\nusername = \"gw\"\nTHERMOCLINE__MQTT__PASSWORD=p1\n\
         THERMOCLINE__HOT__REDIS__PASSWORD=p2\nTHERMOCLINE__COLD__S3__SECRET_ACCESS_KEY=p3\n",
    ),
    (
        "cold",
        "[cold]\nenabled = false\n[cold.spool]\nmax_size = \"2MiB\"\nsegment_size = \"1MiB\"\n\
         [cold.batch]\nmax_age = \"1s\"\n[sync]\nseal_delay = \"0s\"\n",
    ),
];

const NDJSON: &str = concat!(
    r#"{"device_id":"sensor-7","ts":1732530000123,"seq":17,"metrics":{"temp":21.5,"hum":40.2}}"#,
    "\n\n",
    r#"{"ts":1,"metrics":{"t":1}}"#,
    "\n",
    r#"{"device_id":"a:b","ts":1,"metrics":{"t":1}}"#,
    "\n",
    r#"{"device_id":"d","metrics":{"t":1}}"#,
    "\r\n",
    r#"{"device_id":"d","ts":1,"metrics":{"t":1e999}}"#,
    "\n",
    r#"{"device_id":"d","ts":1,"metrics":{"t":1"#,
);

const CSV: &str = "device_id,metric,ts_ms,value,seq\n\
    sensor-7,temp,1732530000123,21.5,17\n\
    sensor-7,hum,1732530000123,40.2,\r\n\
    \n\
    a:b,temp,1,1,1\n\
    d,temp,-1,1,\n\
    d,temp,1,NaN,\n\
    d,temp,1,inf,\n\
    d,temp,x,1,\n\
    d,temp,1,1,-3\n\
    d,temp,1\n";

fn frames(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        r.encode_frame(&mut out);
    }
    out
}

fn message(i: i64, payload: &str) -> Record {
    Record::message(
        crate::NOW_MS + i,
        format!("devices/dev-{i}/telemetry").into_bytes(),
        payload.as_bytes().to_vec(),
    )
}

fn spool_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let msgs: Vec<Record> = (0..3)
        .map(|i| message(i, &format!(r#"{{"seq":{i},"metrics":{{"t":{i}}}}}"#)))
        .collect();
    let first = frames(&msgs);
    let end = first.len() as u64;
    let cut = Record::Cut(CutMarker {
        at_ms: crate::NOW_MS,
        range: CutRange {
            first: SpoolPos::default(),
            end: SpoolPos {
                segment: 0,
                offset: end,
            },
        },
    });
    let mut clean = first.clone();
    cut.encode_frame(&mut clean);
    let senml = frames(&[
        message(7, RFC8428[1].1),
        Record::message(0, b"not/utf8/\xff".to_vec(), b"{}".to_vec()),
    ]);

    let mut torn = clean.clone();
    torn.extend_from_slice(&frames(&[message(3, r#"{"metrics":{"t":3}}"#)])[..20]);
    let mut zeroed = clean.clone();
    zeroed.extend_from_slice(&[0; 64]);
    let mut corrupt_middle = first.clone();
    let mid = corrupt_middle.len() / 2;
    corrupt_middle[mid] ^= 0x40;
    let second = frames(&[message(4, r#"{"metrics":{"t":4}}"#)]);
    vec![
        ("clean", join(None, &[clean.clone()])),
        ("mixed", join(None, &[senml])),
        ("torn-tail", join(None, &[torn.clone()])),
        ("zeroed-tail", join(None, &[zeroed])),
        ("corrupt-middle", join(None, &[corrupt_middle.clone()])),
        ("two-segments", join(None, &[clean.clone(), second.clone()])),
        (
            "corrupt-earlier-segment",
            join(None, &[corrupt_middle, second.clone()]),
        ),
        (
            "released-mid-segment",
            join(
                Some(SpoolPos {
                    segment: 0,
                    offset: msgs[0].frame_len(),
                }),
                &[clean.clone(), torn],
            ),
        ),
        (
            "released-past-segments",
            join(
                Some(SpoolPos {
                    segment: 1,
                    offset: 0,
                }),
                &[clean, second],
            ),
        ),
    ]
}

fn parquet_seed() -> Vec<u8> {
    let gateway = DeviceId::parse("gw-1").expect("id");
    let rows = (0..4)
        .map(|i| ColdRow {
            device_id: DeviceId::parse(&format!("sensor-{i}")).expect("id"),
            metric: MetricName::parse(if i % 2 == 0 { "temp" } else { "hum" }).expect("metric"),
            ts_ms: crate::NOW_MS + i,
            value: 20.0 + i as f64 / 4.0,
            seq: i as u64,
            gateway_id: gateway.clone(),
            received_at_ms: crate::NOW_MS + 10 + i,
        })
        .collect();
    let hour = crate::NOW_MS - crate::NOW_MS % 3_600_000;
    let batch = Batch {
        id: BatchId::new(&gateway, SpoolPos::default(), hour),
        hour_start_ms: hour,
        rows,
    };
    cold::parquet::encode(&batch)
        .expect("encode a batch")
        .to_vec()
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: &'static str, data: Vec<u8>| {
        out.push(Seed { target, name, data })
    };
    for (name, t) in TOPICS {
        add("topic", name, t.as_bytes().to_vec());
    }
    for (name, p) in JSON_VECTORS {
        add("decode_json", name, p.as_bytes().to_vec());
        add("decode", name, p.as_bytes().to_vec());
    }
    for (name, p) in FIELD_JSON {
        add("decode_json", name, p.as_bytes().to_vec());
    }
    for (name, v) in VALUES {
        add("decode_value", name, v.as_bytes().to_vec());
    }
    for (name, p) in RFC8428.iter().chain(SENML_EDGES) {
        add("decode_senml", name, p.as_bytes().to_vec());
    }
    for (name, p) in &RFC8428[..3] {
        add(
            "decode",
            name,
            format!("devices/urn-dev-1/telemetry\n{p}").into_bytes(),
        );
    }
    add("decode", "bad-topic", b"devices/a:b/telemetry\n{}".to_vec());
    add(
        "decode",
        "neither",
        b"devices/d/telemetry\n  hello".to_vec(),
    );
    add(
        "config",
        "default",
        gateway::config::DEFAULT_TOML.as_bytes().to_vec(),
    );
    for (name, c) in CONFIG_FILES {
        add("config", name, c.as_bytes().to_vec());
    }
    for (name, s) in spool_seeds() {
        add("spool_recover", name, s);
    }
    add("import_ndjson", "lines", NDJSON.as_bytes().to_vec());
    add("import_csv", "lines", CSV.as_bytes().to_vec());
    add("import_csv", "bad-header", b"device,metric\nd,t\n".to_vec());
    add("import_parquet", "batch", parquet_seed());
    add(
        "import_parquet",
        "not-parquet",
        b"PAR1\0\0\0\0PAR1".to_vec(),
    );
    out
}
