//! The gateway's own metrics (ingest and HTTP); each library crate registers
//! its own into the same registry. No device id is ever a label.

use devices::RejectReason;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct IngestMetrics {
    pub messages_received: IntCounter,
    pub payload_bytes: IntCounter,
    pub readings_decoded: IntCounter,
    /// Rejected messages by reason (the fixed set of [`RejectReason`]).
    pub messages_rejected: IntCounterVec,
    pub mqtt_connected: IntGauge,
    pub mqtt_disconnects: IntCounter,
    /// QoS 1 publishes received and not yet acked (cold path on).
    pub acks_pending: IntGauge,
    /// Publishes the broker marked as redelivered (MQTT DUP flag).
    pub messages_redelivered: IntCounter,
    /// `thermocline_gateway_info{gateway_id}` = 1: the gateway id as an info
    /// series (join on `instance`), not a label on every series.
    pub gateway_info: IntGaugeVec,
}

impl IngestMetrics {
    pub fn new(registry: &Registry, gateway_id: &str) -> prometheus::Result<Self> {
        let m = Self {
            messages_received: IntCounter::new(
                "thermocline_ingest_messages_received_total",
                "MQTT publishes received from the broker.",
            )?,
            payload_bytes: IntCounter::new(
                "thermocline_ingest_payload_bytes_total",
                "Payload bytes of MQTT publishes received.",
            )?,
            readings_decoded: IntCounter::new(
                "thermocline_ingest_readings_decoded_total",
                "Readings decoded from accepted messages.",
            )?,
            messages_rejected: IntCounterVec::new(
                Opts::new(
                    "thermocline_ingest_messages_rejected_total",
                    "Messages rejected, by reason.",
                ),
                &["reason"],
            )?,
            mqtt_connected: IntGauge::new(
                "thermocline_ingest_mqtt_connected",
                "1 while connected to the broker.",
            )?,
            mqtt_disconnects: IntCounter::new(
                "thermocline_ingest_mqtt_disconnects_total",
                "Broker connections lost (each is retried with capped backoff).",
            )?,
            acks_pending: IntGauge::new(
                "thermocline_ingest_acks_pending",
                "QoS 1 publishes received and not yet acked to the broker \
                 (waiting for their spool record to be durable, or to be written).",
            )?,
            messages_redelivered: IntCounter::new(
                "thermocline_ingest_messages_redelivered_total",
                "Publishes the broker marked as redelivered (DUP flag): sent before \
                 on an earlier connection of this session and not acked then.",
            )?,
            gateway_info: IntGaugeVec::new(
                Opts::new(
                    "thermocline_gateway_info",
                    "Always 1; the label is this gateway's id (gateway.id).",
                ),
                &["gateway_id"],
            )?,
        };
        m.gateway_info.with_label_values(&[gateway_id]).set(1);
        registry.register(Box::new(m.messages_redelivered.clone()))?;
        registry.register(Box::new(m.gateway_info.clone()))?;
        registry.register(Box::new(m.messages_received.clone()))?;
        registry.register(Box::new(m.payload_bytes.clone()))?;
        registry.register(Box::new(m.readings_decoded.clone()))?;
        registry.register(Box::new(m.messages_rejected.clone()))?;
        registry.register(Box::new(m.mqtt_connected.clone()))?;
        registry.register(Box::new(m.mqtt_disconnects.clone()))?;
        registry.register(Box::new(m.acks_pending.clone()))?;
        for r in RejectReason::ALL {
            m.messages_rejected.with_label_values(&[r.as_str()]);
        }
        Ok(m)
    }
}
