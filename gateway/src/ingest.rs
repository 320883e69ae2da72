//! MQTT ingest: the rumqttc event loop, the spool, decoding, and the hand-off
//! to the hot path.
//!
//! One task polls the event loop. With the cold path on, each publish is first
//! appended to the spool (raw, with its receive time) and handed to the cold
//! pipeline; then it is decoded in place (a few microseconds) and sent to the
//! hot path's bounded channel. When the spool, the cold pipeline or the hot
//! path is full the task waits, the event loop is not polled, and TCP
//! backpressure holds the broker's deliveries (a QoS 1 session keeps them
//! queued). While it waits it still writes durable acks and a PINGREQ every
//! half keep-alive, so a long wait (a store outage filling the spool) does not
//! cost the connection.
//!
//! Acks: with the cold path on, rumqttc's manual acks are used. Each QoS 1
//! publish's packet id goes with its spool record's end into [`Acks`], in
//! arrival order. Before every poll of the event loop, and whenever the spool's
//! group commit makes the oldest of them durable, the PUBACKs of every publish
//! whose record is durable are written straight to the connection, in order,
//! with one flush. They do not go through rumqttc's request channel: its event
//! loop takes one request per poll and gives reading the socket an equal
//! chance, so under a steady stream acks fell behind reception, the unacked set
//! grew past what a bounded queue holds (the broker does not always keep to
//! its in-flight window), and a full queue stopped the very loop that writes
//! the acks: ingestion stalled for good. Here acks never wait on reading, and
//! at most `mqtt.max_unacked` publishes are taken before their acks are out.
//! With the cold path off, rumqttc acks on receipt as before.
//! Sparkplug B (`devices.sparkplug.enabled`): a second subscription,
//! `spBv1.0/#`, made on every ConnAck. Those messages go through this task's
//! one stateful `sparkplug::Decoder` before they are spooled, and the spool
//! gets the decoded result (`sparkplug::spooled`) instead of the raw payload;
//! a rebirth request it asks for is published with `try_publish` (QoS 0).
//! Rejected messages are counted by reason and logged at debug level; they
//! never stop the loop. Connection errors are retried with capped exponential
//! backoff; the subscription is (re)made on every ConnAck.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use cold::{pipeline::ColdIngest, row::SpoolPos, spool::DurableWatch};
use devices::{
    config::DevicesConfig,
    decode::decode,
    sparkplug::{
        spooled, topic::SUBSCRIPTION as SPARKPLUG_SUBSCRIPTION, Decoded, Decoder, Outcome,
    },
};
use hot::{service::now_ms, HotSender};
use rumqttc::{
    AsyncClient, Event, EventLoop, Packet, PubAck, QoS, StateError, SubscribeFilter,
    SubscribeReasonCode,
};
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

/// QoS 1 publishes spooled but not acked yet: (packet id, end of the spool
/// record), in arrival order, which is the order MQTT requires for the acks.
struct Acks {
    queue: VecDeque<(u16, SpoolPos)>,
    /// `mqtt.max_unacked`: reached only when the broker ignores its in-flight
    /// window and the spool's commits lag; ingest then stops polling until
    /// the oldest records are durable and acked.
    max: usize,
    durable: DurableWatch,
    gauge: prometheus::IntGauge,
}

impl Acks {
    fn push(&mut self, pkid: u16, end: SpoolPos) {
        self.queue.push_back((pkid, end));
        self.gauge.inc();
    }

    fn is_full(&self) -> bool {
        self.queue.len() >= self.max
    }

    /// The spool end the oldest unacked publish waits for, if it is not durable yet.
    fn waiting_for(&self) -> Option<SpoolPos> {
        self.queue
            .front()
            .map(|&(_, end)| end)
            .filter(|&end| !self.durable.is_durable(end))
    }

    /// The connection is gone: the broker redelivers what was not acked (the
    /// spool and the stores' dedup absorb the second copy).
    fn clear(&mut self) {
        self.gauge.sub(self.queue.len() as i64);
        self.queue.clear();
    }

    /// Writes the PUBACKs of the publishes whose records are durable, oldest
    /// first, and flushes once. On a write error the connection is broken:
    /// the queue is cleared and the next poll reports the error.
    async fn write_durable(&mut self, eventloop: &mut EventLoop) {
        let Some(network) = eventloop.network.as_mut() else {
            self.clear();
            return;
        };
        let mut written = 0i64;
        let mut result: Result<(), StateError> = Ok(());
        while let Some(&(pkid, end)) = self.queue.front() {
            if !self.durable.is_durable(end) {
                break;
            }
            result = network.write(Packet::PubAck(PubAck::new(pkid))).await;
            if result.is_err() {
                break;
            }
            self.queue.pop_front();
            written += 1;
        }
        if written > 0 && result.is_ok() {
            result = network.flush().await;
        }
        self.gauge.sub(written);
        if let Err(e) = result {
            tracing::debug!(error = %e, "writing acks failed; the broker redelivers");
            self.clear();
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
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut acks = self.cold.as_ref().map(|cold| Acks {
            queue: VecDeque::new(),
            max: self.mqtt.max_unacked,
            durable: cold.durable_watch(),
            gauge: self.metrics.acks_pending.clone(),
        });
        let mut sparkplug = self
            .devices
            .sparkplug
            .clone()
            .map(|cfg| Decoder::new(cfg, self.devices.max_future_skew_ms));
        let mut backoff = self.mqtt.reconnect_min_delay;
        tracing::info!(host = %self.mqtt.host, port = self.mqtt.port, client_id = %self.mqtt.client_id, filters = ?self.mqtt.subscriptions, "connecting to broker");
        loop {
            let mut waiting_for = None;
            let mut full = false;
            if let Some(acks) = &mut acks {
                acks.write_durable(&mut eventloop).await;
                waiting_for = acks.waiting_for();
                full = acks.is_full();
            }
            let event = tokio::select! {
                _ = shutdown.cancelled() => break,
                // The oldest unacked record became durable: write acks first.
                r = wait_durable(acks.as_mut(), waiting_for), if waiting_for.is_some() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "spool failed: no more acks (the broker redelivers); ingest stops");
                        shutdown.cancel();
                        break;
                    }
                    continue;
                }
                ev = eventloop.poll(), if !full => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // The broker is alive: it just sent this. Under backpressure
                    // the answer to rumqttc's last ping can sit unread behind
                    // held deliveries for longer than the keep-alive, and
                    // rumqttc would then drop a working connection.
                    eventloop.state.await_pingresp = false;
                    self.metrics.messages_received.inc();
                    if p.dup {
                        self.metrics.messages_redelivered.inc();
                    }
                    self.metrics.payload_bytes.inc_by(p.payload.len() as u64);
                    let received_at_ms = now_ms();
                    // Sparkplug is decoded once, here, before spooling: the spool
                    // keeps the decoded result (self-contained, see
                    // `devices::sparkplug::spooled`), so the cold path needs no
                    // alias state and lands what the hot path gets, also after
                    // a restart.
                    let sparkplug_record = match &mut sparkplug {
                        Some(dec)
                            if devices::decode::is_sparkplug(&p.topic)
                                && p.payload.len() <= self.devices.max_payload_bytes =>
                        {
                            let decoded = dec.decode(&p.topic, &p.payload, received_at_ms);
                            let record = spooled::encode(&decoded, &p.payload);
                            Some((decoded, tokio_util::bytes::Bytes::from(record)))
                        }
                        _ => None,
                    };
                    let record = sparkplug_record.as_ref().map_or(&p.payload, |(_, r)| r);
                    if let Some(cold) = &self.cold {
                        // Waits while the spool is full: backpressure, never a drop.
                        let spooled = keep_alive_while(
                            cold.spool(received_at_ms, &p.topic, record),
                            &mut eventloop,
                            acks.as_mut(),
                            self.mqtt.keep_alive / 2,
                        )
                        .await;
                        match spooled {
                            Ok(ticket) => {
                                if let (Some(acks), false) = (&mut acks, p.qos == QoS::AtMostOnce) {
                                    acks.push(p.pkid, ticket.end());
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
                    let result = match sparkplug_record {
                        Some((decoded, _)) => self.sparkplug_outcome(&client, decoded),
                        None => decode(&self.devices, topic, &p.payload, received_at_ms).map(Some),
                    };
                    match result {
                        Ok(None) => {}
                        Ok(Some(msg)) if msg.readings.is_empty() => {}
                        Ok(Some(msg)) => {
                            self.metrics
                                .readings_decoded
                                .inc_by(msg.readings.len() as u64);
                            // Waits while the hot path is full: backpressure. Not
                            // raced with shutdown, so a decoded message is never dropped
                            // here; the hot path keeps draining until its channel closes.
                            let sent = keep_alive_while(
                                self.hot.send(msg),
                                &mut eventloop,
                                acks.as_mut(),
                                self.mqtt.keep_alive / 2,
                            )
                            .await;
                            if sent.is_err() {
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
                    let filters = self
                        .mqtt
                        .subscriptions
                        .iter()
                        .map(|f| SubscribeFilter::new(f.clone(), self.mqtt.qos));
                    if let Err(e) = client.try_subscribe_many(filters) {
                        tracing::error!(error = %e, "cannot queue the subscription");
                    }
                    if sparkplug.is_some() {
                        if let Err(e) = client.try_subscribe(SPARKPLUG_SUBSCRIPTION, self.mqtt.qos)
                        {
                            tracing::error!(error = %e, "cannot queue the Sparkplug subscription");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    // One return code per filter, in the order subscribed.
                    for (filter, code) in self.mqtt.subscriptions.iter().zip(&ack.return_codes) {
                        if matches!(code, SubscribeReasonCode::Failure) {
                            tracing::error!(%filter, "broker refused the subscription (check its ACLs)");
                        } else {
                            tracing::info!(%filter, "subscribed");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(acks) = &mut acks {
                        acks.clear();
                    }
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
        // Ack what is already spooled, once durable (the spool commits within
        // its interval). Publishes arriving meanwhile are neither spooled nor
        // acked: the broker redelivers them to the next session.
        if let Some(acks) = &mut acks {
            if self.state.connected() {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(&(_, end)) = acks.queue.back() {
                        if acks.durable.wait_for(end).await.is_err() {
                            break;
                        }
                        acks.write_durable(&mut eventloop).await;
                    }
                })
                .await;
            }
            acks.clear();
        }
        self.disconnect(&client, &mut eventloop).await;
    }

    /// What a Sparkplug message gives the hot path: its live readings; the
    /// rebirth request is published (QoS 0, as Sparkplug commands are), the
    /// counters move.
    fn sparkplug_outcome(
        &self,
        client: &AsyncClient,
        decoded: Decoded,
    ) -> Result<Option<devices::Message>, devices::Rejection> {
        self.metrics.sparkplug_seq_gaps.inc_by(decoded.seq_gap);
        if let Some(req) = decoded.rebirth {
            match client.try_publish(&req.topic, QoS::AtMostOnce, false, req.payload) {
                Ok(()) => self.metrics.sparkplug_rebirths.inc(),
                Err(e) => {
                    tracing::warn!(error = %e, topic = %req.topic, "cannot queue a rebirth request")
                }
            }
        }
        match decoded.result? {
            Outcome::Readings(m) => {
                let mut msg = m.live;
                // Historical readings land in their buckets like late ones; the
                // latest view only takes a value newer than the one it holds.
                msg.readings.extend(m.historical);
                Ok(Some(msg))
            }
            Outcome::Stale(ids) => {
                self.metrics.sparkplug_deaths.inc_by(ids.len() as u64);
                tracing::debug!(devices = ids.len(), "Sparkplug death: devices stale");
                Ok(None)
            }
            Outcome::Ignored(why) => {
                tracing::trace!(why, "Sparkplug message ignored");
                Ok(None)
            }
        }
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

/// Waits until the record ending at `end` is durable (cancel-safe).
async fn wait_durable(acks: Option<&mut Acks>, end: Option<SpoolPos>) -> cold::Result<SpoolPos> {
    match (acks, end) {
        (Some(acks), Some(end)) => acks.durable.wait_for(end).await,
        _ => std::future::pending().await,
    }
}

/// Awaits `wait` (the spool or the hot path applying backpressure, during which
/// the event loop is not polled and the broker holds its deliveries), keeping
/// the connection alive meanwhile: every `period` the acks of durable records
/// and a PINGREQ are written straight to the connection. Without this a wait
/// longer than 1.5 × keep-alive (an S3 outage filling the spool) made the
/// broker drop the connection.
async fn keep_alive_while<F: std::future::Future>(
    wait: F,
    eventloop: &mut EventLoop,
    mut acks: Option<&mut Acks>,
    period: Duration,
) -> F::Output {
    tokio::pin!(wait);
    // The usual case: no wait at all, and no timer set up for it.
    tokio::select! {
        biased;
        out = &mut wait => return out,
        _ = std::future::ready(()) => {}
    }
    let start = tokio::time::Instant::now() + period;
    let mut tick = tokio::time::interval_at(start, period);
    loop {
        tokio::select! {
            out = &mut wait => return out,
            _ = tick.tick() => {
                if let Some(acks) = acks.as_deref_mut() {
                    acks.write_durable(eventloop).await;
                }
                if let Some(network) = eventloop.network.as_mut() {
                    let written = match network.write(Packet::PingReq).await {
                        Ok(()) => network.flush().await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        tracing::debug!(error = %e, "keep-alive while waiting failed");
                    }
                }
                // The PINGRESPs wait unread behind held deliveries; rumqttc
                // must not take its own last ping as unanswered because of it.
                eventloop.state.await_pingresp = false;
                tracing::debug!("ingest waiting on backpressure; keep-alive sent");
            }
        }
    }
}
