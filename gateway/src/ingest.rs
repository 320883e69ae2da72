//! MQTT ingest: the rumqttc event loop, the spool, decoding, and the hand-off
//! to the hot path.
//!
//! One task polls the event loop. With the cold path on, each publish is first
//! appended to the spool (raw, with its receive time) and handed to the cold
//! pipeline; then it is decoded in place (a few microseconds) and sent to the
//! hot path's bounded channel. When the spool, the cold pipeline or the hot
//! path is full the task waits, the event loop is not polled, and TCP
//! backpressure holds the broker's deliveries (a QoS 1 session keeps them
//! queued).
//!
//! Acks: with the cold path on, rumqttc's manual acks are used. Each QoS 1
//! publish goes with its spool ticket into the ack queue; the ack task waits
//! for the tickets in order (the spool resolves them in append order after
//! each group commit) and acks the publishes in the order they arrived, as
//! MQTT requires. The queue cannot fill: the broker never has more than
//! 65,535 unacked publishes (packet ids) in flight. With the cold path off,
//! rumqttc acks on receipt as before.
//! Rejected messages are counted by reason and logged at debug level; they
//! never stop the loop. Connection errors are retried with capped exponential
//! backoff; the subscription is (re)made on every ConnAck.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use cold::{pipeline::ColdIngest, spool::DurableTicket};
use devices::{config::DevicesConfig, decode::decode};
use hot::{service::now_ms, HotSender};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{metrics::IngestMetrics, mqtt::MqttConfig};

/// Broker connection state, read by `/readyz`.
#[derive(Debug, Default)]
pub struct MqttState {
    connected: AtomicBool,
}

impl MqttState {
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

pub struct Ingest {
    pub mqtt: MqttConfig,
    pub devices: DevicesConfig,
    pub hot: HotSender,
    pub metrics: IngestMetrics,
    pub state: Arc<MqttState>,
    /// The cold path's spool and pipeline; `None` when `cold.enabled = false`.
    pub cold: Option<ColdIngest>,
}

/// More than the broker can have in flight (16-bit packet ids), so ingest
/// never waits on the ack queue.
const ACK_QUEUE: usize = 65_536;

/// Acks each publish once its spool record is durable, in arrival order.
async fn ack_in_order(client: AsyncClient, mut queue: mpsc::Receiver<(Publish, DurableTicket)>) {
    while let Some((publish, ticket)) = queue.recv().await {
        if let Err(e) = ticket.wait().await {
            tracing::error!(error = %e, "spool failed: no more acks (the broker redelivers)");
            return;
        }
        if client.ack(&publish).await.is_err() {
            return;
        }
    }
}

impl Ingest {
    /// Runs until `shutdown` is cancelled, then disconnects cleanly. Dropping
    /// `self.hot` on return is what tells the hot path to flush and stop.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut options = self.mqtt.options();
        let manual_acks = self.cold.is_some();
        options.set_manual_acks(manual_acks);
        let (client, mut eventloop) =
            AsyncClient::new(options, if manual_acks { 1024 } else { 64 });
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let mut acker = tokio::spawn(ack_in_order(client.clone(), ack_rx));
        let mut backoff = self.mqtt.reconnect_min_delay;
        tracing::info!(host = %self.mqtt.host, port = self.mqtt.port, client_id = %self.mqtt.client_id, filter = %self.mqtt.subscription, "connecting to broker");
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = eventloop.poll() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    self.metrics.messages_received.inc();
                    self.metrics.payload_bytes.inc_by(p.payload.len() as u64);
                    let received_at_ms = now_ms();
                    if let Some(cold) = &self.cold {
                        // Waits while the spool is full: backpressure, never a drop.
                        match cold.spool(received_at_ms, &p.topic, &p.payload).await {
                            Ok(ticket) => {
                                if p.qos != QoS::AtMostOnce {
                                    let _ = ack_tx.send((p.clone(), ticket)).await;
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot spool; the gateway stops (unacked messages stay with the broker)");
                                shutdown.cancel();
                                break;
                            }
                        }
                    }
                    let topic = p.topic.as_str();
                    match decode(&self.devices, topic, &p.payload, received_at_ms) {
                        Ok(msg) => {
                            self.metrics
                                .readings_decoded
                                .inc_by(msg.readings.len() as u64);
                            // Waits while the hot path is full: backpressure. Not
                            // raced with shutdown, so a decoded message is never dropped
                            // here; the hot path keeps draining until its channel closes.
                            if self.hot.send(msg).await.is_err() {
                                tracing::error!("hot path stopped; ingest stops");
                                break;
                            }
                        }
                        Err(rej) => self.reject(rej.reason, &rej.detail, topic),
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    tracing::info!(session_present = ack.session_present, "connected to broker");
                    self.state.connected.store(true, Ordering::Relaxed);
                    self.metrics.mqtt_connected.set(1);
                    backoff = self.mqtt.reconnect_min_delay;
                    if let Err(e) = client.try_subscribe(&self.mqtt.subscription, self.mqtt.qos) {
                        tracing::error!(error = %e, "cannot queue the subscription");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        tracing::error!(filter = %self.mqtt.subscription, "broker refused the subscription (check its ACLs)");
                    } else {
                        tracing::info!(filter = %self.mqtt.subscription, "subscribed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if self.state.connected.swap(false, Ordering::Relaxed) {
                        self.metrics.mqtt_disconnects.inc();
                    }
                    self.metrics.mqtt_connected.set(0);
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.mqtt.reconnect_max_delay);
                }
            }
        }
        // Ack what is already spooled: the ack task drains its queue once the
        // sender is gone, and the event loop must be polled to write the acks.
        // Publishes arriving meanwhile are neither spooled nor acked: the
        // broker redelivers them to the next session.
        drop(ack_tx);
        if manual_acks && self.state.connected() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    tokio::select! {
                        _ = &mut acker => break,
                        ev = eventloop.poll() => if ev.is_err() { break },
                    }
                }
            })
            .await;
        }
        acker.abort();
        self.disconnect(&client, &mut eventloop).await;
    }

    fn reject(&self, reason: devices::RejectReason, detail: &str, topic: &str) {
        self.metrics
            .messages_rejected
            .with_label_values(&[reason.as_str()])
            .inc();
        // The topic is attacker-controlled: Debug-quote it and cap its length.
        let topic: String = topic.chars().take(128).collect();
        tracing::debug!(reason = reason.as_str(), detail, topic = ?topic, "message rejected");
    }

    async fn disconnect(&self, client: &AsyncClient, eventloop: &mut EventLoop) {
        if self.state.connected.swap(false, Ordering::Relaxed) {
            let _ = client.try_disconnect();
            // Poll until the DISCONNECT is written (the loop then errors) or a short deadline.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        self.metrics.mqtt_connected.set(0);
        tracing::info!("disconnected from broker");
    }
}
