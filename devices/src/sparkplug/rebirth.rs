//! The rebirth request: an NCMD with `Node Control/Rebirth = true`, which
//! makes an edge node publish its NBIRTH and every DBIRTH again.

use prost::Message as _;

use super::proto::{
    payload::{metric::Value, Metric},
    DataType, Payload,
};

/// The control metric an edge node answers with a new BIRTH sequence.
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";

/// An NCMD for the gateway's MQTT client to publish (QoS 0, not retained,
/// as Sparkplug requires of commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebirthRequest {
    /// `spBv1.0/{group}/NCMD/{edge}`.
    pub topic: String,
    /// The encoded Sparkplug B payload.
    pub payload: Vec<u8>,
}

impl RebirthRequest {
    pub fn new(group: &str, edge: &str, now_ms: i64) -> Self {
        let ts = u64::try_from(now_ms).unwrap_or(0);
        let payload = Payload {
            timestamp: Some(ts),
            metrics: vec![Metric {
                name: Some(REBIRTH_METRIC.into()),
                timestamp: Some(ts),
                datatype: Some(DataType::Boolean as u32),
                value: Some(Value::BooleanValue(true)),
                ..Default::default()
            }],
            ..Default::default()
        };
        Self {
            topic: format!("{}/{group}/NCMD/{edge}", super::topic::NAMESPACE),
            payload: payload.encode_to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_tahu_rebirth_command() {
        let r = RebirthRequest::new("plant", "edge1", 1_700_000_000_000);
        assert_eq!(r.topic, "spBv1.0/plant/NCMD/edge1");
        let p = Payload::decode(r.payload.as_slice()).unwrap();
        assert_eq!(p.timestamp, Some(1_700_000_000_000));
        assert_eq!(p.metrics.len(), 1);
        let m = &p.metrics[0];
        assert_eq!(m.name.as_deref(), Some("Node Control/Rebirth"));
        assert_eq!(m.datatype, Some(11));
        assert_eq!(m.value, Some(Value::BooleanValue(true)));
    }
}
