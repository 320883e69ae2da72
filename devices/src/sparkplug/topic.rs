//! Sparkplug B topics: `spBv1.0/{group}/{type}/{edge}[/{device}]`.
//!
//! Node messages (`NBIRTH`, `NDATA`, `NDEATH`, `NCMD`) have four levels,
//! device messages (`DBIRTH`, `DDATA`, `DDEATH`, `DCMD`) five. The host
//! application's `spBv1.0/STATE/{host_id}` is recognised as well. Anything
//! else under the namespace is `invalid_topic`.

use crate::{
    reject::{RejectReason, Rejection},
    topic::truncate,
};

/// The Sparkplug B 3.0 topic namespace.
pub const NAMESPACE: &str = "spBv1.0";

/// The subscription that takes every Sparkplug B message.
pub const SUBSCRIPTION: &str = "spBv1.0/#";

/// The message type, the topic's third level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NData,
    NDeath,
    NCmd,
    DBirth,
    DData,
    DDeath,
    DCmd,
}

impl MessageType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NBIRTH" => Self::NBirth,
            "NDATA" => Self::NData,
            "NDEATH" => Self::NDeath,
            "NCMD" => Self::NCmd,
            "DBIRTH" => Self::DBirth,
            "DDATA" => Self::DData,
            "DDEATH" => Self::DDeath,
            "DCMD" => Self::DCmd,
            _ => return None,
        })
    }

    /// Whether the topic names a device (five levels).
    pub fn is_device(self) -> bool {
        matches!(self, Self::DBirth | Self::DData | Self::DDeath | Self::DCmd)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NBirth => "NBIRTH",
            Self::NData => "NDATA",
            Self::NDeath => "NDEATH",
            Self::NCmd => "NCMD",
            Self::DBirth => "DBIRTH",
            Self::DData => "DDATA",
            Self::DDeath => "DDEATH",
            Self::DCmd => "DCMD",
        }
    }
}

/// A parsed Sparkplug topic, borrowing its levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// An edge node or device message.
    Edge {
        group: &'a str,
        kind: MessageType,
        edge: &'a str,
        device: Option<&'a str>,
    },
    /// `spBv1.0/STATE/{host_id}`: a host application's online state.
    State { host: &'a str },
}

/// Parses `topic`; `invalid_topic` for anything outside the Sparkplug grammar.
pub fn parse(topic: &str) -> Result<Topic<'_>, Rejection> {
    let invalid = |why: &str| {
        Rejection::new(
            RejectReason::InvalidTopic,
            format!("{why}: {:?}", truncate(topic, 96)),
        )
    };
    let mut levels = topic.split('/');
    if levels.next() != Some(NAMESPACE) {
        return Err(invalid("not under the spBv1.0 namespace"));
    }
    let rest: Vec<&str> = levels.take(5).collect();
    if rest.iter().any(|l| l.is_empty()) {
        return Err(invalid("empty topic level"));
    }
    match rest.as_slice() {
        ["STATE", host] => Ok(Topic::State { host }),
        [group, kind, edge, device @ ..] => {
            let kind = MessageType::parse(kind)
                .ok_or_else(|| invalid("unknown Sparkplug message type"))?;
            let device = match (kind.is_device(), device) {
                (false, []) => None,
                (true, [device]) => Some(*device),
                (false, _) => return Err(invalid("a node message has four levels")),
                (true, _) => return Err(invalid("a device message has five levels")),
            };
            Ok(Topic::Edge {
                group,
                kind,
                edge,
                device,
            })
        }
        _ => Err(invalid("too few levels")),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn node_device_and_state_topics() {
        assert_eq!(
            parse("spBv1.0/plant/NBIRTH/edge1").unwrap(),
            Topic::Edge {
                group: "plant",
                kind: MessageType::NBirth,
                edge: "edge1",
                device: None
            }
        );
        assert_eq!(
            parse("spBv1.0/plant/DDATA/edge1/pump-3").unwrap(),
            Topic::Edge {
                group: "plant",
                kind: MessageType::DData,
                edge: "edge1",
                device: Some("pump-3")
            }
        );
        assert_eq!(
            parse("spBv1.0/STATE/scada").unwrap(),
            Topic::State { host: "scada" }
        );
        for kind in ["NDATA", "NDEATH", "NCMD"] {
            assert!(parse(&format!("spBv1.0/g/{kind}/e")).is_ok(), "{kind}");
        }
        for kind in ["DBIRTH", "DDEATH", "DCMD"] {
            assert!(parse(&format!("spBv1.0/g/{kind}/e/d")).is_ok(), "{kind}");
        }
    }

    #[test]
    fn malformed_topics_are_invalid_topic() {
        for bad in [
            "",
            "spBv1.0",
            "spBv1.0/g",
            "spBv1.0/g/NDATA",
            "spBv1.0/g/NDATA/e/d",
            "spBv1.0/g/DDATA/e",
            "spBv1.0/g/DDATA/e/d/x",
            "spBv1.0/g/ndata/e",
            "spBv1.0/g/XDATA/e",
            "spBv1.0//NDATA/e",
            "spBv1.0/g/NDATA/",
            "spAv1.0/g/NDATA/e",
            "devices/x/telemetry",
            "spBv1.0/STATE",
            "spBv1.0/STATE/",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().reason,
                RejectReason::InvalidTopic,
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(
            group in "[a-zA-Z0-9 ._-]{1,8}",
            edge in "[a-zA-Z0-9 ._-]{1,8}",
            device in proptest::option::of("[a-zA-Z0-9 ._-]{1,8}"),
            junk in ".{0,40}",
        ) {
            let _ = parse(&junk);
            let kind = if device.is_some() { "DDATA" } else { "NDATA" };
            let topic = match &device {
                Some(d) => format!("spBv1.0/{group}/{kind}/{edge}/{d}"),
                None => format!("spBv1.0/{group}/{kind}/{edge}"),
            };
            let Topic::Edge { group: g, edge: e, device: d, .. } = parse(&topic).unwrap() else {
                panic!("not an edge topic");
            };
            prop_assert_eq!((g, e, d), (group.as_str(), edge.as_str(), device.as_deref()));
        }
    }
}
