//! Issue 9, Sparkplug B: an edge node (rumqttc + the vendored Tahu schema)
//! publishes DATA before any BIRTH, answers the gateway's rebirth request,
//! then NBIRTH, DBIRTH, aliased DATA with a seq gap, an unknown alias,
//! DDEATH and NDEATH; the hot windows and ClickHouse + S3 hold exactly the
//! readings of the accepted messages.

use std::time::{Duration, Instant};

use devices::{
    ledger::Ledger,
    sparkplug::proto::{
        payload::{metric::Value, Metric},
        DataType, Payload,
    },
    testkit::Mosquitto,
};
use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::{
    cold::ColdStores,
    support::{redis_url, unique, TestGateway},
};

fn payload(seq: Option<u64>, ts: i64, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(ts as u64),
        seq,
        metrics,
        ..Default::default()
    }
    .encode_to_vec()
}

fn declare(name: &str, alias: u64, dt: DataType, value: Value) -> Metric {
    Metric {
        name: Some(name.into()),
        alias: Some(alias),
        datatype: Some(dt as u32),
        value: Some(value),
        ..Default::default()
    }
}

fn aliased(alias: u64, value: Value) -> Metric {
    Metric {
        alias: Some(alias),
        value: Some(value),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_node_session_lands_exactly_in_hot_and_cold_with_rebirth() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("spb");
    let mut env = stores.env_refs();
    env.push(("THERMOCLINE__DEVICES__SPARKPLUG__ENABLED", "true"));
    let gw = TestGateway::start("spb", &broker, &redis_url(), &env).await;

    let group = unique("spb");
    let (edge, dev) = ("edge1", "pump");
    let node_id = format!("{group}.{edge}");
    let dev_id = format!("{node_id}.{dev}");
    let topic = |kind: &str| format!("spBv1.0/{group}/{kind}/{edge}");
    let dtopic = |kind: &str| format!("spBv1.0/{group}/{kind}/{edge}/{dev}");

    let mut opts = MqttOptions::new(format!("edge-{group}"), "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (ncmd_tx, mut ncmd_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let _ = ncmd_tx.send(p);
            }
        }
    });
    client
        .subscribe(topic("NCMD"), QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publish = |t: String, p: Vec<u8>| {
        let client = client.clone();
        async move { client.publish(t, QoS::AtLeastOnce, false, p).await.unwrap() }
    };

    let t0 = hot::service::now_ms() - 60_000;
    // A DATA before any BIRTH: rejected, and the gateway asks for a rebirth.
    publish(
        topic("NDATA"),
        payload(Some(7), t0, vec![aliased(1, Value::DoubleValue(1.0))]),
    )
    .await;
    let cmd = tokio::time::timeout(Duration::from_secs(20), ncmd_rx.recv())
        .await
        .expect("a rebirth request")
        .unwrap();
    let cmd = Payload::decode(cmd.payload).unwrap();
    assert_eq!(cmd.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(cmd.metrics[0].value, Some(Value::BooleanValue(true)));

    // The node answers: NBIRTH (bdSeq 3), DBIRTH, then DATA by alias.
    let bd = |v| declare("bdSeq", 0, DataType::Int64, Value::LongValue(v));
    let mut ledger = Ledger::default();
    publish(
        topic("NBIRTH"),
        payload(
            Some(0),
            t0,
            vec![
                bd(3),
                declare(
                    "Supply Temp (C)",
                    1,
                    DataType::Float,
                    Value::FloatValue(20.5),
                ),
            ],
        ),
    )
    .await;
    ledger.record(&node_id, "Supply_Temp__C_", t0, 20.5);
    publish(
        dtopic("DBIRTH"),
        payload(
            Some(1),
            t0 + 1,
            vec![
                declare("rpm", 10, DataType::Int32, Value::IntValue(1500)),
                declare("running", 11, DataType::Boolean, Value::BooleanValue(true)),
                declare(
                    "label",
                    12,
                    DataType::String,
                    Value::StringValue("p".into()),
                ),
            ],
        ),
    )
    .await;
    ledger.record(&dev_id, "rpm", t0 + 1, 1500.0);
    ledger.record(&dev_id, "running", t0 + 1, 1.0);
    publish(
        topic("NDATA"),
        payload(Some(2), t0 + 2, vec![aliased(1, Value::FloatValue(21.5))]),
    )
    .await;
    ledger.record(&node_id, "Supply_Temp__C_", t0 + 2, 21.5);
    publish(
        dtopic("DDATA"),
        payload(
            Some(3),
            t0 + 3,
            vec![
                aliased(10, Value::IntValue(-7i32 as u32)),
                aliased(11, Value::BooleanValue(false)),
            ],
        ),
    )
    .await;
    ledger.record(&dev_id, "rpm", t0 + 3, -7.0);
    ledger.record(&dev_id, "running", t0 + 3, 0.0);
    // seq 4 is lost on the way: one gap.
    publish(
        dtopic("DDATA"),
        payload(Some(5), t0 + 5, vec![aliased(10, Value::IntValue(1490))]),
    )
    .await;
    ledger.record(&dev_id, "rpm", t0 + 5, 1490.0);
    // An undeclared alias: rejected whole (its rebirth is rate-limited away).
    publish(
        dtopic("DDATA"),
        payload(
            Some(6),
            t0 + 6,
            vec![
                aliased(10, Value::IntValue(1)),
                aliased(99, Value::IntValue(2)),
            ],
        ),
    )
    .await;
    publish(dtopic("DDEATH"), payload(Some(7), t0 + 7, vec![])).await;
    // The old session's will (bdSeq 2) is ignored; the matching one ends it.
    publish(topic("NDEATH"), payload(None, t0 + 8, vec![bd(2)])).await;
    publish(topic("NDEATH"), payload(None, t0 + 8, vec![bd(3)])).await;
    publish(
        topic("NDATA"),
        payload(Some(8), t0 + 9, vec![aliased(1, Value::FloatValue(9.0))]),
    )
    .await;

    gw.wait_hot_done(ledger.total_readings(), Duration::from_secs(30))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.metric("thermocline_ingest_messages_received_total", None) < 12.0 {
        assert!(Instant::now() < deadline, "not all messages arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejected = |r| {
        gw.metric(
            "thermocline_ingest_messages_rejected_total",
            Some(("reason", r)),
        )
    };
    assert_eq!(
        rejected("no_birth"),
        2.0,
        "DATA before the BIRTH and after the NDEATH"
    );
    assert_eq!(rejected("unknown_alias"), 1.0);
    assert_eq!(
        gw.metric("thermocline_ingest_sparkplug_seq_gaps_total", None),
        1.0
    );
    assert_eq!(
        gw.metric(
            "thermocline_ingest_sparkplug_rebirths_requested_total",
            None
        ),
        1.0
    );
    // DDEATH: the device; matching NDEATH: the node (its device was dead already).
    assert_eq!(
        gw.metric("thermocline_ingest_sparkplug_deaths_total", None),
        2.0
    );
    assert_eq!(
        gw.metric("thermocline_ingest_readings_decoded_total", None),
        7.0
    );

    let hot = sync::verify::verify_hot(&gw.reader(), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(hot.ok(), "{}", hot.render());
    let cold = stores.wait_exact(&ledger, Duration::from_secs(60)).await;
    assert_eq!(cold.clickhouse.found_readings, 7);
    gw.stop_and_clean().await;
    stores.clean().await;
}

/// An edge node's MQTT client, subscribed to its NCMD topic.
async fn edge_client(
    port: u16,
    ncmd: String,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
) {
    let mut opts = MqttOptions::new(unique("edge"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = ev {
                let _ = tx.send(p);
            }
        }
    });
    client.subscribe(ncmd, QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    (client, rx)
}

/// A gateway restart between a node's BIRTH and its next DATA: the new
/// gateway has no alias state, rejects that DATA (in the hot path and, from
/// the spooled decision, in the cold path alike) and asks for a rebirth; what
/// follows lands. Windows and ClickHouse + S3 hold exactly the same readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_session_keeps_hot_and_cold_equal() {
    let broker = Mosquitto::start().await.unwrap();
    let stores = ColdStores::new("spbrs");
    let mut env = stores.env_refs();
    env.push(("THERMOCLINE__DEVICES__SPARKPLUG__ENABLED", "true"));
    let mut gw1 = TestGateway::start("spbrs", &broker, &redis_url(), &env).await;

    let group = unique("spbrs");
    let node_id = format!("{group}.e");
    let topic = |kind: &str| format!("spBv1.0/{group}/{kind}/e");
    let (client, mut ncmd) = edge_client(broker.port, topic("NCMD")).await;
    let publish = |t: String, p: Vec<u8>| {
        let client = client.clone();
        async move { client.publish(t, QoS::AtLeastOnce, false, p).await.unwrap() }
    };
    let bd = |v| declare("bdSeq", 0, DataType::Int64, Value::LongValue(v));
    let birth = |bdseq, ts, v| {
        payload(
            Some(0),
            ts,
            vec![
                bd(bdseq),
                declare("temp", 1, DataType::Double, Value::DoubleValue(v)),
            ],
        )
    };
    let data = |seq, ts, v| payload(Some(seq), ts, vec![aliased(1, Value::DoubleValue(v))]);

    let t0 = hot::service::now_ms() - 60_000;
    let mut ledger = Ledger::default();
    publish(topic("NBIRTH"), birth(1, t0, 10.0)).await;
    publish(topic("NDATA"), data(1, t0 + 1, 11.0)).await;
    ledger.record(&node_id, "temp", t0, 10.0);
    ledger.record(&node_id, "temp", t0 + 1, 11.0);
    gw1.wait_hot_done(2, Duration::from_secs(30)).await;
    gw1.gw.take().unwrap().stop().await;

    let client_id = format!("gw-{}", gw1.prefix);
    let mut env2 = env.clone();
    env2.push(("THERMOCLINE__HOT__KEY_PREFIX", gw1.prefix.as_str()));
    env2.push(("THERMOCLINE__MQTT__CLIENT_ID", client_id.as_str()));
    let gw2 = TestGateway::start("spbrs", &broker, &redis_url(), &env2).await;
    publish(topic("NDATA"), data(2, t0 + 2, 12.0)).await;
    tokio::time::timeout(Duration::from_secs(20), ncmd.recv())
        .await
        .expect("the restarted gateway asks for a rebirth")
        .unwrap();
    publish(topic("NBIRTH"), birth(2, t0 + 3, 13.0)).await;
    publish(topic("NDATA"), data(1, t0 + 4, 14.0)).await;
    ledger.record(&node_id, "temp", t0 + 3, 13.0);
    ledger.record(&node_id, "temp", t0 + 4, 14.0);
    gw2.wait_hot_done(2, Duration::from_secs(30)).await;
    assert_eq!(
        gw2.metric(
            "thermocline_ingest_messages_rejected_total",
            Some(("reason", "no_birth"))
        ),
        1.0
    );

    // gw2 writes under gw1's prefix: read and clean that one.
    let hot = sync::verify::verify_hot(&gw1.reader(), &ledger, hot::service::now_ms())
        .await
        .unwrap();
    assert!(hot.ok(), "{}", hot.render());
    let cold = stores.wait_exact(&ledger, Duration::from_secs(60)).await;
    assert_eq!(cold.clickhouse.found_readings, 4);
    gw2.stop_and_clean().await;
    gw1.stop_and_clean().await;
    stores.clean().await;
}
