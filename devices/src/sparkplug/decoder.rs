//! The stateful Sparkplug B decoder: per-edge-node session state (BIRTH
//! declarations and aliases, `seq`, `bdSeq`) and topic + payload → [`Decoded`].
//!
//! Per edge node (`{group}/{edge}`):
//!
//! - **NBIRTH** starts a session: it replaces everything known about the node
//!   and its devices, records its `bdSeq` metric and `seq`, and declares the
//!   node's metrics (name, alias, datatype). **DBIRTH** (only in a session)
//!   declares one device's metrics. Aliases and names are unique within one
//!   BIRTH; two names that sanitise to the same [`MetricName`] or an alias
//!   given twice are `metric_collision`. A BIRTH's values are readings too.
//! - **NDATA / DDATA** resolve each metric by alias (else by name) against
//!   the BIRTH of their node or device. No session, an unborn or dead device
//!   is `no_birth`; an alias or name the BIRTH did not declare is
//!   `unknown_alias`. Both come with a [`RebirthRequest`] when `rebirth` is on,
//!   at most one per node per `rebirth_min_interval`.
//! - **seq**: every message of a session but NDEATH carries the node's
//!   `seq`, 0–255, one more than the last (wrapping). [`Decoded::seq_gap`]
//!   says how many messages were missed before this one (Sparkplug DATA is
//!   QoS 0: a gap is the only sign of loss); it is counted, never rejected.
//! - **NDEATH** whose `bdSeq` matches the session's (or carries none) ends
//!   it: the node and its devices become [`Outcome::Stale`]. An NDEATH with
//!   another `bdSeq` is the broker delivering an older session's will after a
//!   reconnect and is [`Outcome::Ignored`]. **DDEATH** makes one device stale.
//! - `is_historical` metrics come out in [`SparkplugMessage::historical`]:
//!   they go to the windows and the cold path but must not raise `latest`.
//! - Readings carry no `seq`: Sparkplug's is per node and wraps every 256
//!   messages, so it cannot be a per-device redelivery key.
//!
//! A message is accepted or rejected as a whole, and a rejected BIRTH
//! declares nothing: after a rejected NBIRTH the node has no session, after a
//! rejected DBIRTH the device is unborn. NCMD, DCMD and `STATE` are ignored.
//!
//! Bounds: at most `max_nodes` nodes (a new node evicts one without a
//! session, else its NBIRTH is `over_limit`), `max_devices_per_node` devices
//! and `max_metrics_per_node` metrics declared by a node and its devices;
//! payloads are capped before they get here (`devices.max_payload_size`).

use std::collections::{hash_map::Entry, HashMap, HashSet};

use prost::Message as _;

use super::{
    config::SparkplugConfig,
    proto::{payload::Metric, Payload},
    rebirth::RebirthRequest,
    topic::{self, MessageType, Topic},
    value,
};
use crate::{
    config::NonNumericPolicy,
    id::{DeviceId, MetricName},
    reading::{Message, Reading},
    reject::{RejectReason, Rejection},
};

/// What one Sparkplug message did.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub result: Result<Outcome, Rejection>,
    /// An NCMD to publish, asking the node to rebirth.
    pub rebirth: Option<RebirthRequest>,
    /// Messages of this node missed before this one, from its `seq`.
    pub seq_gap: u64,
}

/// An accepted Sparkplug message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A BIRTH or DATA: its readings (maybe none: a BIRTH may declare only
    /// non-numeric metrics).
    Readings(SparkplugMessage),
    /// An NDEATH or DDEATH: these device ids' latest values are stale now.
    Stale(Vec<DeviceId>),
    /// Not telemetry (a command, a host's STATE, an old session's NDEATH).
    Ignored(&'static str),
}

/// The readings of one BIRTH or DATA.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugMessage {
    pub kind: MessageType,
    /// Current values (`seq` is always `None`).
    pub live: Message,
    /// `is_historical` readings of the same device: windows and cold path
    /// only, never `latest`.
    pub historical: Vec<Reading>,
}

/// One declared metric.
#[derive(Debug)]
struct Declared {
    /// `None` for the protocol's control metrics, which are never readings.
    name: Option<MetricName>,
    datatype: Option<u32>,
}

/// The metrics one BIRTH declared.
#[derive(Debug, Default)]
struct Scope {
    metrics: Vec<Declared>,
    by_alias: HashMap<u64, usize>,
    by_name: HashMap<Box<str>, usize>,
}

#[derive(Debug)]
struct Device {
    born: bool,
    scope: Scope,
}

#[derive(Debug, Default)]
struct Node {
    /// In a session: an NBIRTH was accepted and no matching NDEATH since.
    online: bool,
    bd_seq: Option<u64>,
    last_seq: u8,
    scope: Scope,
    devices: HashMap<Box<str>, Device>,
    last_rebirth_ms: Option<i64>,
}

impl Node {
    fn metrics_declared(&self) -> usize {
        self.scope.metrics.len()
            + self
                .devices
                .values()
                .map(|d| d.scope.metrics.len())
                .sum::<usize>()
    }
}

/// Decoder state for every edge node seen; see the module docs.
#[derive(Debug)]
pub struct Decoder {
    cfg: SparkplugConfig,
    max_future_skew_ms: i64,
    nodes: HashMap<String, Node>,
}

impl Decoder {
    pub fn new(cfg: SparkplugConfig, max_future_skew_ms: i64) -> Self {
        Self {
            cfg,
            max_future_skew_ms,
            nodes: HashMap::new(),
        }
    }

    /// Edge nodes with state (sessions, and nodes remembered for rate limiting).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Decodes one message received at `now_ms`.
    pub fn decode(&mut self, topic: &str, payload: &[u8], now_ms: i64) -> Decoded {
        let mut out = Decoded {
            result: Ok(Outcome::Ignored("")),
            rebirth: None,
            seq_gap: 0,
        };
        out.result = self.decode_inner(topic, payload, now_ms, &mut out);
        out
    }

    fn decode_inner(
        &mut self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        out: &mut Decoded,
    ) -> Result<Outcome, Rejection> {
        let (group, kind, edge, device) = match topic::parse(topic)? {
            Topic::State { .. } => return Ok(Outcome::Ignored("host application STATE")),
            Topic::Edge {
                kind: MessageType::NCmd | MessageType::DCmd,
                ..
            } => return Ok(Outcome::Ignored("command")),
            Topic::Edge {
                group,
                kind,
                edge,
                device,
            } => (group, kind, edge, device),
        };
        let sep = self.cfg.separator;
        let node_id = DeviceId::parse(&format!("{group}{sep}{edge}"))?;
        let device_id = match device {
            Some(d) => DeviceId::parse(&format!("{group}{sep}{edge}{sep}{d}"))?,
            None => node_id.clone(),
        };
        let payload = Payload::decode(payload).map_err(|e| {
            Rejection::new(
                RejectReason::Malformed,
                format!("not a Sparkplug B payload: {e}"),
            )
        })?;
        let seq = payload
            .seq
            .map(|s| {
                u8::try_from(s).map_err(|_| {
                    Rejection::new(RejectReason::Malformed, format!("seq {s} is above 255"))
                })
            })
            .transpose()?;
        let key = format!("{group}/{edge}");
        let ctx = Ctx {
            non_numeric: self.cfg.non_numeric,
            max_metrics_per_node: self.cfg.max_metrics_per_node,
            now_ms,
            max_future_skew_ms: self.max_future_skew_ms,
            payload_ts: payload.timestamp,
        };

        match kind {
            MessageType::NBirth => {
                if !self.make_room(&key) {
                    return Err(Rejection::new(
                        RejectReason::OverLimit,
                        format!(
                            "{} edge nodes have sessions, the most devices.sparkplug.max_nodes allows",
                            self.cfg.max_nodes
                        ),
                    ));
                }
                let node = self.nodes.entry(key).or_default();
                // A new session: whatever it declares, the old one is over.
                node.online = false;
                node.devices.clear();
                node.scope = Scope::default();
                let (scope, msg) = birth(
                    &ctx,
                    kind,
                    &device_id,
                    &payload.metrics,
                    self.cfg.max_metrics_per_node,
                )?;
                node.bd_seq = bd_seq(&payload.metrics);
                node.last_seq = seq.unwrap_or(0);
                node.scope = scope;
                node.online = true;
                Ok(Outcome::Readings(msg))
            }
            MessageType::NDeath => {
                let Some(node) = self.nodes.get_mut(&key).filter(|n| n.online) else {
                    return Ok(Outcome::Ignored("NDEATH of a node without a session"));
                };
                let death = bd_seq(&payload.metrics);
                if death.is_some() && node.bd_seq.is_some() && death != node.bd_seq {
                    return Ok(Outcome::Ignored(
                        "NDEATH of an earlier session (its bdSeq is not the NBIRTH's)",
                    ));
                }
                node.online = false;
                let mut stale = vec![node_id];
                for (name, d) in &mut node.devices {
                    if std::mem::take(&mut d.born) {
                        stale.push(DeviceId::parse(&format!("{group}{sep}{edge}{sep}{name}"))?);
                    }
                }
                Ok(Outcome::Stale(stale))
            }
            MessageType::DBirth | MessageType::NData | MessageType::DData | MessageType::DDeath => {
                let rebirth = self
                    .cfg
                    .rebirth
                    .then(|| RebirthRequest::new(group, edge, now_ms));
                let Some(node) = self.nodes.get_mut(&key).filter(|n| n.online) else {
                    let detail = format!(
                        "{} from an edge node without a session (no NBIRTH)",
                        kind.as_str()
                    );
                    if kind != MessageType::DDeath {
                        out.rebirth = self.rate_limited(&key, now_ms, rebirth);
                    }
                    return Err(Rejection::new(RejectReason::NoBirth, detail));
                };
                if let Some(seq) = seq {
                    let expected = node.last_seq.wrapping_add(1);
                    out.seq_gap = u64::from(seq.wrapping_sub(expected));
                    node.last_seq = seq;
                }
                let result = match (kind, device) {
                    (MessageType::DBirth, Some(d)) => {
                        let others = node.metrics_declared()
                            - node.devices.get(d).map_or(0, |dev| dev.scope.metrics.len());
                        if !node.devices.contains_key(d)
                            && node.devices.len() >= self.cfg.max_devices_per_node
                        {
                            return Err(Rejection::new(
                                RejectReason::OverLimit,
                                format!(
                                    "the edge node has {} devices, the most devices.sparkplug.max_devices_per_node allows",
                                    self.cfg.max_devices_per_node
                                ),
                            ));
                        }
                        let device = node.devices.entry(d.into()).or_insert(Device {
                            born: false,
                            scope: Scope::default(),
                        });
                        device.born = false;
                        device.scope = Scope::default();
                        let budget = self.cfg.max_metrics_per_node.saturating_sub(others);
                        let (scope, msg) = birth(&ctx, kind, &device_id, &payload.metrics, budget)?;
                        device.scope = scope;
                        device.born = true;
                        Ok(Outcome::Readings(msg))
                    }
                    (MessageType::DDeath, Some(d)) => match node.devices.get_mut(d) {
                        Some(dev) if dev.born => {
                            dev.born = false;
                            Ok(Outcome::Stale(vec![device_id]))
                        }
                        _ => Ok(Outcome::Ignored("DDEATH of a device without a DBIRTH")),
                    },
                    (MessageType::NData, None) => {
                        data(&ctx, kind, &device_id, &node.scope, &payload.metrics)
                    }
                    (MessageType::DData, Some(d)) => match node.devices.get(d) {
                        Some(dev) if dev.born => {
                            data(&ctx, kind, &device_id, &dev.scope, &payload.metrics)
                        }
                        _ => Err(Rejection::new(
                            RejectReason::NoBirth,
                            "DDATA from a device without a DBIRTH in this session",
                        )),
                    },
                    _ => unreachable!("topic::parse gives device messages a device"),
                };
                if matches!(&result, Err(r) if matches!(r.reason, RejectReason::NoBirth | RejectReason::UnknownAlias))
                {
                    out.rebirth = self.rate_limited(&key, now_ms, rebirth);
                }
                result
            }
            MessageType::NCmd | MessageType::DCmd => unreachable!("handled above"),
        }
    }

    /// Whether `key` has, or can get, a place among `max_nodes`: a new node
    /// evicts one without a session.
    fn make_room(&mut self, key: &str) -> bool {
        if self.nodes.contains_key(key) || self.nodes.len() < self.cfg.max_nodes {
            return true;
        }
        let Some(victim) = self
            .nodes
            .iter()
            .find(|(_, n)| !n.online)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        self.nodes.remove(&victim);
        true
    }

    /// `request`, unless this node had one within `rebirth_min_interval`.
    /// Nodes never born are remembered for this while there is room.
    fn rate_limited(
        &mut self,
        key: &str,
        now_ms: i64,
        request: Option<RebirthRequest>,
    ) -> Option<RebirthRequest> {
        let request = request?;
        let room = self.nodes.len() < self.cfg.max_nodes;
        let node = match self.nodes.entry(key.to_owned()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) if room => e.insert(Node::default()),
            Entry::Vacant(_) => return None,
        };
        if let Some(last) = node.last_rebirth_ms {
            if now_ms.saturating_sub(last) < self.cfg.rebirth_min_interval_ms && now_ms >= last {
                return None;
            }
        }
        node.last_rebirth_ms = Some(now_ms);
        Some(request)
    }
}

struct Ctx {
    non_numeric: NonNumericPolicy,
    max_metrics_per_node: usize,
    now_ms: i64,
    max_future_skew_ms: i64,
    payload_ts: Option<u64>,
}

impl Ctx {
    /// A metric's reading, if it has a numeric value: `(historical, reading)`.
    fn reading(
        &self,
        device_id: &DeviceId,
        name: &MetricName,
        datatype: Option<u32>,
        m: &Metric,
    ) -> Result<Option<(bool, Reading)>, Rejection> {
        if m.is_null == Some(true) {
            return Ok(None);
        }
        let Some(v) = &m.value else {
            return Ok(None);
        };
        let Some(value) =
            value::numeric(m.datatype.or(datatype), v).map_err(|e| in_metric(name, e))?
        else {
            return match self.non_numeric {
                NonNumericPolicy::Ignore => Ok(None),
                NonNumericPolicy::Reject => Err(Rejection::new(
                    RejectReason::NonNumeric,
                    format!("metric {name} has a non-numeric datatype"),
                )),
            };
        };
        let ts_ms = match m.timestamp.or(self.payload_ts) {
            None => self.now_ms,
            Some(ts) => i64::try_from(ts).map_err(|_| future(name, ts, self))?,
        };
        if ts_ms > self.now_ms.saturating_add(self.max_future_skew_ms) {
            return Err(future(name, ts_ms as u64, self));
        }
        Ok(Some((
            m.is_historical == Some(true),
            Reading {
                device_id: device_id.clone(),
                metric: name.clone(),
                ts_ms,
                value,
                seq: None,
            },
        )))
    }
}

fn future(name: &MetricName, ts: u64, ctx: &Ctx) -> Rejection {
    Rejection::new(
        RejectReason::FutureTimestamp,
        format!(
            "metric {name} at {ts} ms is ahead of the gateway clock ({} ms) by more than {} ms",
            ctx.now_ms, ctx.max_future_skew_ms
        ),
    )
}

fn in_metric(name: &MetricName, e: Rejection) -> Rejection {
    Rejection::new(e.reason, format!("metric {name}: {}", e.detail))
}

/// The `bdSeq` metric's value, if any.
fn bd_seq(metrics: &[Metric]) -> Option<u64> {
    use super::proto::payload::metric::Value;
    metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| match m.value {
            Some(Value::LongValue(v)) => Some(v),
            Some(Value::IntValue(v)) => Some(u64::from(v)),
            _ => None,
        })
}

fn empty_message(kind: MessageType, device_id: &DeviceId, n: usize) -> SparkplugMessage {
    SparkplugMessage {
        kind,
        live: Message {
            device_id: device_id.clone(),
            seq: None,
            readings: Vec::with_capacity(n),
        },
        historical: Vec::new(),
    }
}

fn push(msg: &mut SparkplugMessage, reading: Option<(bool, Reading)>) {
    match reading {
        Some((true, r)) => msg.historical.push(r),
        Some((false, r)) => msg.live.readings.push(r),
        None => {}
    }
}

/// Declares a BIRTH's metrics (at most `budget`) and takes its readings.
fn birth(
    ctx: &Ctx,
    kind: MessageType,
    device_id: &DeviceId,
    metrics: &[Metric],
    budget: usize,
) -> Result<(Scope, SparkplugMessage), Rejection> {
    if metrics.len() > budget {
        return Err(Rejection::new(
            RejectReason::OverLimit,
            format!(
                "{} declares {} metrics; the edge node may declare {budget} more (devices.sparkplug.max_metrics_per_node = {})",
                kind.as_str(),
                metrics.len(),
                ctx.max_metrics_per_node
            ),
        ));
    }
    let mut scope = Scope::default();
    let mut names = HashSet::with_capacity(metrics.len());
    let mut msg = empty_message(kind, device_id, metrics.len());
    for m in metrics {
        let Some(raw) = m.name.as_deref() else {
            return Err(Rejection::new(
                RejectReason::Malformed,
                format!("{} metric without a name", kind.as_str()),
            ));
        };
        let index = scope.metrics.len();
        if scope.by_name.insert(raw.into(), index).is_some() {
            return Err(Rejection::new(
                RejectReason::MetricCollision,
                format!(
                    "metric name {:?} declared twice",
                    crate::topic::truncate(raw, 96)
                ),
            ));
        }
        if let Some(alias) = m.alias {
            if scope.by_alias.insert(alias, index).is_some() {
                return Err(Rejection::new(
                    RejectReason::MetricCollision,
                    format!("alias {alias} declared twice"),
                ));
            }
        }
        let name = if value::is_control(raw) {
            None
        } else {
            let name = value::sanitise(raw)?;
            if !names.insert(name.clone()) {
                return Err(Rejection::new(
                    RejectReason::MetricCollision,
                    format!(
                        "metric {:?} is {name} once sanitised, as another metric of this {}",
                        crate::topic::truncate(raw, 96),
                        kind.as_str()
                    ),
                ));
            }
            Some(name)
        };
        if let Some(name) = &name {
            push(&mut msg, ctx.reading(device_id, name, m.datatype, m)?);
        }
        scope.metrics.push(Declared {
            name,
            datatype: m.datatype,
        });
    }
    Ok((scope, msg))
}

/// Resolves a DATA's metrics against its BIRTH's `scope`.
fn data(
    ctx: &Ctx,
    kind: MessageType,
    device_id: &DeviceId,
    scope: &Scope,
    metrics: &[Metric],
) -> Result<Outcome, Rejection> {
    let mut msg = empty_message(kind, device_id, metrics.len());
    for m in metrics {
        let index = match (m.alias, m.name.as_deref()) {
            (Some(alias), _) => scope.by_alias.get(&alias).copied().ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownAlias,
                    format!("alias {alias} was not declared by the BIRTH"),
                )
            })?,
            (None, Some(name)) => scope.by_name.get(name).copied().ok_or_else(|| {
                Rejection::new(
                    RejectReason::UnknownAlias,
                    format!(
                        "metric {:?} was not declared by the BIRTH",
                        crate::topic::truncate(name, 96)
                    ),
                )
            })?,
            (None, None) => {
                return Err(Rejection::new(
                    RejectReason::Malformed,
                    format!("{} metric with neither alias nor name", kind.as_str()),
                ))
            }
        };
        let declared = &scope.metrics[index];
        if let Some(name) = &declared.name {
            push(
                &mut msg,
                ctx.reading(device_id, name, declared.datatype, m)?,
            );
        }
    }
    Ok(Outcome::Readings(msg))
}
