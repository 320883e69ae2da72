//! The gateway's own metrics (ingest and HTTP); each library crate registers
//! its own into the same registry. No device id is ever a label.

use devices::RejectReason;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::fleet::Threshold;

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
    /// Sparkplug messages missed, from gaps in the edge nodes' `seq`.
    pub sparkplug_seq_gaps: IntCounter,
    /// NCMD `Node Control/Rebirth` requests published.
    pub sparkplug_rebirths: IntCounter,
    /// Edge nodes and devices made stale by an NDEATH or DDEATH.
    pub sparkplug_deaths: IntCounter,
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
            sparkplug_seq_gaps: IntCounter::new(
                "thermocline_ingest_sparkplug_seq_gaps_total",
                "Sparkplug messages missed, from gaps in the edge nodes' seq \
                 (DATA is QoS 0: a gap is the only sign of loss).",
            )?,
            sparkplug_rebirths: IntCounter::new(
                "thermocline_ingest_sparkplug_rebirths_requested_total",
                "NCMD Node Control/Rebirth requests published to edge nodes \
                 (after DATA before BIRTH or an unknown alias; rate-limited per node).",
            )?,
            sparkplug_deaths: IntCounter::new(
                "thermocline_ingest_sparkplug_deaths_total",
                "Sparkplug edge nodes and devices made stale by an NDEATH or DDEATH.",
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
        registry.register(Box::new(m.sparkplug_seq_gaps.clone()))?;
        registry.register(Box::new(m.sparkplug_rebirths.clone()))?;
        registry.register(Box::new(m.sparkplug_deaths.clone()))?;
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

/// The fleet index's gauges (see [`crate::fleet`]): refreshed on a timer by
/// `ZCARD`/`ZCOUNT`, never by scanning the index on a scrape.
#[derive(Clone)]
pub struct FleetMetrics {
    /// Devices in the fleet index (seen within its retention).
    pub devices_indexed: IntGauge,
    /// Devices silent for longer than each configured threshold (`for`, a
    /// small fixed set from `fleet.quiet_thresholds`).
    pub devices_quiet: IntGaugeVec,
}

impl FleetMetrics {
    pub fn new(registry: &Registry, thresholds: &[Threshold]) -> prometheus::Result<Self> {
        let m = Self {
            devices_indexed: IntGauge::new(
                "thermocline_fleet_devices_indexed",
                "Devices in the fleet index: seen within the longest hot retention.",
            )?,
            devices_quiet: IntGaugeVec::new(
                Opts::new(
                    "thermocline_fleet_devices_quiet",
                    "Devices of the fleet index whose last message is older than `for` \
                     (fleet.quiet_thresholds), refreshed every fleet.quiet_refresh_interval.",
                ),
                &["for"],
            )?,
        };
        registry.register(Box::new(m.devices_indexed.clone()))?;
        registry.register(Box::new(m.devices_quiet.clone()))?;
        for t in thresholds {
            m.devices_quiet.with_label_values(&[&t.label]);
        }
        Ok(m)
    }
}
