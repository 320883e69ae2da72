use super::*;

#[test]
fn values_are_deterministic() {
    for (index, seq) in [(0, 0), (7, 123), (999_999, u64::MAX)] {
        assert_eq!(values(42, index, seq), values(42, index, seq));
        let (a, va) = payload(42, index, seq, 1_700_000_000_000);
        let (b, vb) = payload(42, index, seq, 1_700_000_000_000);
        assert_eq!((a, va), (b, vb));
    }
    // Different seeds, devices and seqs give different values.
    assert_ne!(values(1, 0, 0), values(2, 0, 0));
    assert_ne!(values(1, 0, 0), values(1, 1, 0));
    assert_ne!(values(1, 0, 0), values(1, 0, 1));
}

#[test]
fn values_are_plausible() {
    for index in 0..20 {
        for seq in 0..300 {
            let [(_, t), (_, h), (_, p)] = values(9, index, seq);
            assert!((10.0..=33.0).contains(&t), "temp {t}");
            assert!((0.0..=100.0).contains(&h), "hum {h}");
            assert!((999.0..=1026.0).contains(&p), "pressure {p}");
        }
    }
}

#[test]
fn payload_shape() {
    let (json, vals) = payload(5, 3, 17, 1_700_000_000_123);
    assert!(json.len() <= 120, "{} bytes: {json}", json.len());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 3, "{json}");
    assert_eq!(v["ts"], 1_700_000_000_123i64);
    assert_eq!(v["seq"], 17);
    let metrics = v["metrics"].as_object().unwrap();
    assert_eq!(
        metrics.keys().map(String::as_str).collect::<Vec<_>>().len(),
        3
    );
    for (name, value) in vals {
        assert_eq!(metrics[name].as_f64().unwrap(), value, "{name} in {json}");
    }
    // Key order is part of the format: ts, seq, metrics(temp, hum, pressure).
    let order: Vec<usize> = ["\"ts\"", "\"seq\"", "\"temp\"", "\"hum\"", "\"pressure\""]
        .iter()
        .map(|k| json.find(k).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
}

#[test]
fn prefixes_and_topics() {
    for _ in 0..100 {
        let p = random_prefix();
        assert_eq!(p.len(), 12);
        assert!(p.starts_with("sim-"));
        assert!(p[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        DeviceId::parse(&device_id(&p, u32::MAX)).unwrap();
    }
    let cfg = SimConfig {
        prefix: "p".into(),
        ..SimConfig::default()
    };
    assert_eq!(cfg.topic(42), "devices/p-000042/telemetry");
    assert_eq!(device_id("x", 1_234_567), "x-1234567");
    cfg.validate().unwrap();
}

#[test]
fn validation() {
    let bad = |cfg: SimConfig, key: &str| match cfg.validate() {
        Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
        other => panic!("{key}: {other:?}"),
    };
    let ok = SimConfig::default();
    for prefix in ["", "-a", "a/b", "a b", "ü", &"x".repeat(58)] {
        bad(
            SimConfig {
                prefix: prefix.into(),
                ..ok.clone()
            },
            "sim.prefix",
        );
    }
    // 57 + "-" + 6 digits = 64 bytes: the longest valid prefix below 1M devices.
    SimConfig {
        prefix: "x".repeat(57),
        ..ok.clone()
    }
    .validate()
    .unwrap();
    // ... but device 1_000_000 would have a 65-byte id.
    bad(
        SimConfig {
            prefix: "x".repeat(57),
            devices: 1_000_001,
            ..ok.clone()
        },
        "sim.prefix",
    );
    bad(
        SimConfig {
            devices: 0,
            ..ok.clone()
        },
        "sim.devices",
    );
    bad(
        SimConfig {
            connections: 0,
            ..ok.clone()
        },
        "sim.connections",
    );
    bad(
        SimConfig {
            inflight: 0,
            ..ok.clone()
        },
        "sim.inflight",
    );
    for t in ["devices/telemetry", "devices/+/{device_id}"] {
        bad(
            SimConfig {
                topic_template: t.into(),
                ..ok.clone()
            },
            "sim.topic_template",
        );
    }
}

#[test]
fn pacing_budget() {
    assert_eq!(allowed(Duration::ZERO, 200), 1);
    assert_eq!(allowed(Duration::from_millis(4), 200), 1);
    assert_eq!(allowed(Duration::from_millis(5), 200), 2);
    assert_eq!(allowed(Duration::from_millis(495), 200), 100);
    // Low rates: one message per second.
    assert_eq!(allowed(Duration::from_millis(999), 1), 1);
    assert_eq!(allowed(Duration::from_millis(1000), 1), 2);
    assert_eq!(
        allowed(Duration::from_secs(1), u32::MAX),
        u64::from(u32::MAX) + 1
    );
}

#[tokio::test]
async fn unreachable_broker_is_a_connection_error() {
    // Bind then drop: nothing listens on the port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = run(SimConfig {
        port,
        devices: 1,
        messages_per_device: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::MqttConnection(_)), "{err:?}");
}
