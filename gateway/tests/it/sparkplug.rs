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
