//! Topic + payload → [`Message`] or [`Rejection`].
//!
//! Checks run cheapest first, and the first failure decides the reason:
//!
//! 1. size: a payload longer than `max_payload_bytes` is `too_large`, unparsed;
//! 2. topic: the first source whose template the topic fits
//!    ([`TopicTemplate::matches`](crate::topic::TopicTemplate::matches)) decodes
//!    it; none is `invalid_topic`; then its device id (`invalid_device_id`);
//! 3. format: the source's [`Format`]. `auto` picks SenML for a payload whose
//!    first non-whitespace byte is `[` and the JSON object format for `{`;
//!    then [`json::decode`] (under the source's mapping), [`senml::decode`]
//!    or [`value::decode`] (the metric from the topic's `{metric}`, validated);
//! 4. a message with no readings is `malformed`, one with more than
//!    `max_metrics_per_message` is `too_large`; a reading later than
//!    `now_ms + max_future_skew_ms` is `future_timestamp`.
//!
//! A message is accepted or rejected as a whole: one bad metric rejects it all.
//!
//! With `devices.sparkplug` enabled, a topic under `spBv1.0/` is a spooled
//! Sparkplug record: ingest decoded it statefully and spooled the result in
//! the self-contained form of [`crate::sparkplug::spooled`], which is what is
//! decoded here (after the size check), as it was: a DEATH or a BIRTH of
//! non-numeric metrics is a message without readings, not a rejection.

use crate::{
    config::DevicesConfig,
    id::DeviceId,
    json,
    reading::Message,
    reject::{RejectReason, Rejection},
    senml,
    source::{Format, Source},
    sparkplug,
    topic::{truncate, TopicMatch},
    value, MetricName,
};

/// Decodes one MQTT publish received at `now_ms` (ms since the Unix epoch).
pub fn decode(
    cfg: &DevicesConfig,
    topic: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<Message, Rejection> {
    check_size(cfg, payload)?;
    if cfg.sparkplug.is_some() && is_sparkplug(topic) {
        return Ok(
            sparkplug::spooled::decode(payload)?.unwrap_or_else(|| Message {
                device_id: sparkplug_placeholder_id(),
                seq: None,
                readings: Vec::new(),
            }),
        );
    }
    let (source, matched) = route(cfg, topic)?;
    let device_id = matched.device_id()?;
    decode_payload(
        cfg,
        &source.format,
        &device_id,
        matched.metric_str(),
        payload,
        now_ms,
    )
}

/// The first source whose template `topic` fits, and what the topic carries.
pub fn route<'c, 't>(
    cfg: &'c DevicesConfig,
    topic: &'t str,
) -> Result<(&'c Source, TopicMatch<'t>), Rejection> {
    let mut first_why = "no source";
    for (i, source) in cfg.sources.iter().enumerate() {
        match source.template.matches(topic) {
            Ok(m) => return Ok((source, m)),
            Err(why) if i == 0 => first_why = why,
            Err(_) => {}
        }
    }
    Err(match cfg.sources.as_slice() {
        [only] => only.template.mismatch(topic, first_why),
        all => Rejection::new(
            RejectReason::InvalidTopic,
            format!(
                "topic {:?} fits none of the {} source templates",
                truncate(topic, 96),
                all.len()
            ),
        ),
    })
}

/// Decodes `payload` in `format` for a device whose id is already known (the
/// topic step done; `topic_metric` is its `{metric}` level, unvalidated),
/// with the size, metric count and future-time checks.
pub fn decode_payload(
    cfg: &DevicesConfig,
    format: &Format,
    device_id: &DeviceId,
    topic_metric: Option<&str>,
    payload: &[u8],
    now_ms: i64,
) -> Result<Message, Rejection> {
    check_size(cfg, payload)?;
    let max = cfg.max_metrics_per_message;
    let message = match format {
        Format::Auto { json, senml } => match sniff(payload)? {
            Sniffed::Senml => senml::decode(payload, device_id, now_ms, senml.non_numeric)?,
            Sniffed::Json => json::decode(payload, device_id, now_ms, json, max)?,
        },
        Format::Json(json) => json::decode(payload, device_id, now_ms, json, max)?,
        Format::Senml(senml) => senml::decode(payload, device_id, now_ms, senml.non_numeric)?,
        Format::Value(mapping) => {
            let metric = match (topic_metric, &mapping.metric) {
                (Some(m), _) => MetricName::parse(m)?,
                (None, Some(m)) => m.clone(),
                (None, None) => {
                    return Err(Rejection::new(
                        RejectReason::InvalidMetric,
                        "no metric: the topic has no {metric} level",
                    ))
                }
            };
            value::decode(payload, device_id, metric, now_ms, mapping)?
        }
    };
    if message.readings.is_empty() {
        return Err(Rejection::new(RejectReason::Malformed, "no readings"));
    }
    if message.readings.len() > max {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "{} readings in one message, more than devices.max_metrics_per_message ({max})",
                message.readings.len()
            ),
        ));
    }
    let latest_allowed = now_ms.saturating_add(cfg.max_future_skew_ms);
    if let Some(r) = message.readings.iter().find(|r| r.ts_ms > latest_allowed) {
        return Err(Rejection::new(
            RejectReason::FutureTimestamp,
            format!(
                "metric {} at {} ms is {} ms ahead of the gateway clock; at most {} ms allowed",
                r.metric,
                r.ts_ms,
                (r.ts_ms as i128) - (now_ms as i128),
                cfg.max_future_skew_ms
            ),
        ));
    }
    Ok(message)
}

fn check_size(cfg: &DevicesConfig, payload: &[u8]) -> Result<(), Rejection> {
    if payload.len() > cfg.max_payload_bytes {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!(
                "payload is {} bytes, more than the {} byte limit",
                payload.len(),
                cfg.max_payload_bytes
            ),
        ));
    }
    Ok(())
}

enum Sniffed {
    Json,
    Senml,
}

/// Whether `topic` is under the Sparkplug B namespace (`spBv1.0/`).
pub fn is_sparkplug(topic: &str) -> bool {
    topic
        .strip_prefix(sparkplug::topic::NAMESPACE)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The device of a spooled Sparkplug record without readings (a DEATH).
fn sparkplug_placeholder_id() -> crate::DeviceId {
    crate::DeviceId::parse("sparkplug").expect("a valid device id")
}

/// The format of an `auto` payload, from its first non-whitespace byte.
fn sniff(payload: &[u8]) -> Result<Sniffed, Rejection> {
    match payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        Some(b'[') => Ok(Sniffed::Senml),
        Some(b'{') => Ok(Sniffed::Json),
        Some(_) => Err(Rejection::new(
            RejectReason::Malformed,
            "payload is neither a JSON object nor a SenML array",
        )),
        None => Err(Rejection::new(RejectReason::Malformed, "empty payload")),
    }
}

#[cfg(test)]
mod tests;
