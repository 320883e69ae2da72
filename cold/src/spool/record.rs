//! Spool records and their framing.
//!
//! Frame: `[u32 LE body length][u32 LE crc32 of body][body]`. Body:
//!
//! - message (kind 1): `[1][i64 LE received_at_ms][u32 LE topic length][topic][payload]`,
//!   the raw MQTT publish as the broker handed it;
//! - cut marker (kind 2): `[2][i64 LE at_ms][u64 LE first.segment][u64 LE first.offset]
//!   [u64 LE end.segment][u64 LE end.offset]`: the batcher cut the message
//!   records in `[first, end)` into one spool range.

use bytes::Bytes;

use crate::row::SpoolPos;

/// Bytes of frame header before each body.
pub const HEADER_LEN: u64 = 8;
/// Largest body length a frame header may claim (a sanity bound for scans).
pub const MAX_BODY_LEN: u64 = 1 << 30;

const KIND_MESSAGE: u8 = 1;
const KIND_CUT: u8 = 2;
const CUT_BODY_LEN: usize = 1 + 8 + 4 * 8;

/// One spool record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Message(MessageRecord),
    Cut(CutMarker),
}

/// A raw MQTT publish, spooled before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// When the gateway received it (ms since the epoch); decoding uses it as
    /// `now_ms`, so decoding the record again gives the same result.
    pub received_at_ms: i64,
    /// The topic bytes (MQTT topics are UTF-8; a record keeps what arrived).
    pub topic: Bytes,
    pub payload: Bytes,
}

/// A contiguous range of message records, `[first, end)` in spool order: the
/// unit the batcher cuts and the stores acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CutRange {
    /// Position of the range's first message record.
    pub first: SpoolPos,
    /// Position just past the range's last message record.
    pub end: SpoolPos,
}

/// Written by the batcher when it cuts a range; replay cuts at the same places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutMarker {
    /// When the cut was made (ms since the epoch); informational.
    pub at_ms: i64,
    pub range: CutRange,
}

impl Record {
    pub fn message(
        received_at_ms: i64,
        topic: impl Into<Bytes>,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self::Message(MessageRecord {
            received_at_ms,
            topic: topic.into(),
            payload: payload.into(),
        })
    }

    fn body_len(&self) -> usize {
        match self {
            Self::Message(m) => 1 + 8 + 4 + m.topic.len() + m.payload.len(),
            Self::Cut(_) => CUT_BODY_LEN,
        }
    }

    /// Length of the whole frame (header + body).
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN + self.body_len() as u64
    }

    /// Appends the framed record to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let body_len = self.body_len();
        out.reserve(HEADER_LEN as usize + body_len);
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let body_start = out.len();
        match self {
            Self::Message(m) => {
                out.push(KIND_MESSAGE);
                out.extend_from_slice(&m.received_at_ms.to_le_bytes());
                out.extend_from_slice(&(m.topic.len() as u32).to_le_bytes());
                out.extend_from_slice(&m.topic);
                out.extend_from_slice(&m.payload);
            }
            Self::Cut(c) => {
                out.push(KIND_CUT);
                out.extend_from_slice(&c.at_ms.to_le_bytes());
                for v in [
                    c.range.first.segment,
                    c.range.first.offset,
                    c.range.end.segment,
                    c.range.end.offset,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let crc = crc32fast::hash(&out[body_start..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Parses a body whose CRC already matched. Payload and topic are slices of
    /// `body` (no copy).
    pub fn decode_body(body: Bytes) -> Result<Self, String> {
        let kind = *body.first().ok_or("empty body")?;
        let i64_at = |at: usize| -> Result<i64, String> {
            body.get(at..at + 8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| format!("body of {} bytes is too short", body.len()))
        };
        match kind {
            KIND_MESSAGE => {
                let received_at_ms = i64_at(1)?;
                let topic_len = body
                    .get(9..13)
                    .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
                    .ok_or("message body too short for its topic length")?;
                let topic_end = 13usize
                    .checked_add(topic_len)
                    .filter(|e| *e <= body.len())
                    .ok_or_else(|| format!("topic length {topic_len} overruns the body"))?;
                Ok(Self::Message(MessageRecord {
                    received_at_ms,
                    topic: body.slice(13..topic_end),
                    payload: body.slice(topic_end..),
                }))
            }
            KIND_CUT => {
                if body.len() != CUT_BODY_LEN {
                    return Err(format!("cut marker body is {} bytes", body.len()));
                }
                let at_ms = i64_at(1)?;
                let u = |i: usize| i64_at(9 + 8 * i).map(|v| v as u64);
                let range = CutRange {
                    first: SpoolPos {
                        segment: u(0)?,
                        offset: u(1)?,
                    },
                    end: SpoolPos {
                        segment: u(2)?,
                        offset: u(3)?,
                    },
                };
                if range.first >= range.end {
                    return Err(format!("cut marker range {range:?} is empty"));
                }
                Ok(Self::Cut(CutMarker { at_ms, range }))
            }
            other => Err(format!("unknown record kind {other}")),
        }
    }
}

/// Why a frame could not be read at some offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes remain than the header, or the body runs past the end.
    Incomplete(String),
    /// A complete frame whose length is impossible or whose CRC does not match.
    Invalid(String),
}

/// Checks the frame at `off` in `buf`: `Ok(body range)` when its length and CRC
/// are good.
pub(crate) fn check_frame(buf: &[u8], off: usize) -> Result<std::ops::Range<usize>, FrameError> {
    let rest = buf.len() - off;
    if rest < HEADER_LEN as usize {
        return Err(FrameError::Incomplete(format!(
            "{rest} bytes left, fewer than a frame header"
        )));
    }
    let len = u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[off + 4..off + 8].try_into().expect("4 bytes"));
    if len == 0 || len as u64 > MAX_BODY_LEN {
        return Err(FrameError::Invalid(format!("impossible body length {len}")));
    }
    let body = off + HEADER_LEN as usize..off + HEADER_LEN as usize + len;
    if body.end > buf.len() {
        return Err(FrameError::Incomplete(format!(
            "body of {len} bytes runs {} bytes past the end",
            body.end - buf.len()
        )));
    }
    if crc32fast::hash(&buf[body.clone()]) != crc {
        return Err(FrameError::Invalid("crc mismatch".into()));
    }
    Ok(body)
}

/// Whether some complete, CRC-valid frame starts anywhere in `buf[from..]`: used
/// to tell a torn tail (nothing valid after it) from corruption in the middle.
pub(crate) fn any_valid_frame_after(buf: &[u8], from: usize) -> bool {
    (from..buf.len()).any(|off| check_frame(buf, off).is_ok())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn round_trip(r: &Record) -> Record {
        let mut buf = Vec::new();
        r.encode_frame(&mut buf);
        assert_eq!(buf.len() as u64, r.frame_len());
        let body = check_frame(&buf, 0).unwrap();
        assert_eq!(body.end, buf.len());
        Record::decode_body(Bytes::from(buf).slice(body)).unwrap()
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            at in any::<i64>(),
            topic in proptest::collection::vec(any::<u8>(), 0..300),
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let r = Record::message(at, topic, payload);
            prop_assert_eq!(round_trip(&r), r);
        }

        #[test]
        fn markers_round_trip(at in any::<i64>(), a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let (x, y) = (SpoolPos { segment: a.0, offset: a.1 }, SpoolPos { segment: b.0, offset: b.1 });
            prop_assume!(x != y);
            let range = CutRange { first: x.min(y), end: x.max(y) };
            let r = Record::Cut(CutMarker { at_ms: at, range });
            prop_assert_eq!(round_trip(&r), r);
        }

        #[test]
        fn any_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            Record::message(7, &b"devices/d/telemetry"[..], payload).encode_frame(&mut buf);
            let i = bit.index(buf.len() * 8);
            buf[i / 8] ^= 1 << (i % 8);
            prop_assert!(check_frame(&buf, 0).is_err());
        }
    }

    #[test]
    fn truncated_frames_are_incomplete() {
        let mut buf = Vec::new();
        Record::message(1, &b"t"[..], &b"{}"[..]).encode_frame(&mut buf);
        for cut in 0..buf.len() {
            assert!(
                matches!(check_frame(&buf[..cut], 0), Err(FrameError::Incomplete(_))),
                "cut at {cut}"
            );
        }
        assert!(!any_valid_frame_after(&buf, 1));
        assert!(any_valid_frame_after(&buf, 0));
    }

    #[test]
    fn bad_bodies_are_rejected() {
        assert!(Record::decode_body(Bytes::from_static(&[9, 0])).is_err());
        assert!(Record::decode_body(Bytes::from_static(&[1, 0, 0])).is_err());
        let mut topic_overrun = vec![1u8; 9];
        topic_overrun.extend_from_slice(&100u32.to_le_bytes());
        assert!(Record::decode_body(Bytes::from(topic_overrun)).is_err());
        // A zeroed header (len 0, crc 0) is not a valid frame.
        assert!(matches!(
            check_frame(&[0; 16], 0),
            Err(FrameError::Invalid(_))
        ));
    }
}
