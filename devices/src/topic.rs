//! MQTT topic → device id (and metric): topic templates.
//!
//! A [`TopicTemplate`] is a list of topic levels, each one of:
//!
//! - a literal (`devices`, `SENSOR`, `0`), compared exactly;
//! - `{device_id}` (required, once): the device's id, or its last part;
//! - `{name}` for any other lower-case name (`{site}`, `{line}`): a further
//!   part of a composed device id;
//! - `{metric}` (at most once): the metric name, for payloads that carry only
//!   a value (`shellies/{device_id}/relay/0/{metric}`);
//! - `+`: any one level, ignored;
//! - `#`, as the last level only: any number (zero or more) of further levels, ignored.
//!
//! **Composed ids.** The id parts (`{device_id}` and every other `{name}`) are
//! joined with `.` in topic order: `factory/{site}/{line}/{device_id}/{metric}`
//! on `factory/berlin/l2/press-7/temp` gives device `berlin.l2.press-7`. Each
//! part must itself be a valid [`DeviceId`] without a `.` (so two topics never
//! compose to the same id), and the whole id obeys the device id rule (at most
//! 64 characters). A template with only `{device_id}` takes the level as it is.
//!
//! Matching splits the published topic on `/` and compares level by level
//! without allocating; the captured parts are borrowed slices of the topic, and
//! the only allocations are the [`DeviceId`] and [`MetricName`] built at the end.
//! It runs once per message (per source tried).
//!
//! The gateway subscribes with [`TopicTemplate::subscription_filter`], which is
//! deliberately wider than the template (the literal levels before the first
//! placeholder or wildcard, then `#`: `devices/#`): a topic with a hostile id or
//! an extra level still reaches the gateway, where it is rejected and counted
//! instead of being silently dropped by the broker.

use std::fmt;

use crate::{
    id::{DeviceId, MetricName},
    reject::{RejectReason, Rejection},
};

/// The placeholder that marks the device id level in a template.
pub const DEVICE_ID_PLACEHOLDER: &str = "{device_id}";
/// The placeholder that marks the metric name level in a template.
pub const METRIC_PLACEHOLDER: &str = "{metric}";
/// The character that joins the parts of a composed device id.
pub const ID_PART_SEPARATOR: char = '.';
/// At most this many levels make up one device id.
pub const MAX_ID_PARTS: usize = 4;

/// At most this many bytes of a hostile topic are quoted in a rejection detail.
const DETAIL_TOPIC_MAX: usize = 96;
/// Longest accepted placeholder name (`{site}`), without the braces.
const PLACEHOLDER_NAME_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(Box<str>),
    /// `{device_id}` or another `{name}`: one part of the device id.
    IdPart,
    Metric,
    /// `+`
    Any,
    /// A trailing `#`.
    Rest,
}

/// A validated topic template (see the module docs for the grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    template: Box<str>,
    levels: Box<[Level]>,
    id_parts: usize,
}

/// What a topic that fits a template carries: borrowed slices of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMatch<'t> {
    parts: [&'t str; MAX_ID_PARTS],
    n_parts: usize,
    metric: Option<&'t str>,
}

impl<'t> TopicMatch<'t> {
    /// The validated device id: the one part as it is, or the parts joined with `.`.
    pub fn device_id(&self) -> Result<DeviceId, Rejection> {
        let parts = &self.parts[..self.n_parts];
        if let [only] = parts {
            return DeviceId::parse(only);
        }
        let mut id = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
        for (i, part) in parts.iter().enumerate() {
            DeviceId::parse(part).map_err(|r| {
                Rejection::new(r.reason, format!("device id part {}: {}", i + 1, r.detail))
            })?;
            if part.contains(ID_PART_SEPARATOR) {
                return Err(Rejection::new(
                    RejectReason::InvalidDeviceId,
                    format!(
                        "device id part {} contains {ID_PART_SEPARATOR:?}, which joins the parts",
                        i + 1
                    ),
                ));
            }
            if i > 0 {
                id.push(ID_PART_SEPARATOR);
            }
            id.push_str(part);
        }
        DeviceId::parse(&id)
    }

    /// The `{metric}` level as written, if the template has one.
    pub fn metric_str(&self) -> Option<&'t str> {
        self.metric
    }

    /// The validated `{metric}` level, if the template has one.
    pub fn metric(&self) -> Result<Option<MetricName>, Rejection> {
        self.metric.map(MetricName::parse).transpose()
    }
}

impl TopicTemplate {
    /// Parses and validates a template such as `shellies/{device_id}/relay/0/{metric}`.
    ///
    /// Rules: exactly one `{device_id}`, at most [`MAX_ID_PARTS`] id parts in
    /// all, at most one `{metric}`; every placeholder and wildcard is a whole
    /// level; `#` only last; literals are non-empty, without `+`, `#`, braces
    /// or NUL; the first level must not start with `$` (broker-reserved
    /// topics such as `$SYS`, and `$share/...` subscription syntax).
    pub fn parse(template: &str) -> Result<Self, String> {
        if template.is_empty() {
            return Err("topic template is empty".into());
        }
        let n_levels = template.split('/').count();
        let mut levels = Vec::with_capacity(n_levels);
        let mut names: Vec<&str> = Vec::new();
        let mut has_device_id = false;
        let mut has_metric = false;
        for (i, level) in template.split('/').enumerate() {
            let parsed = match level {
                "+" => Level::Any,
                "#" if i + 1 == n_levels => Level::Rest,
                "#" => {
                    return Err(format!(
                        "topic template {template:?}: '#' may only be the last level"
                    ))
                }
                METRIC_PLACEHOLDER if has_metric => {
                    return Err(format!(
                        "topic template {template:?} has more than one {METRIC_PLACEHOLDER} level"
                    ))
                }
                METRIC_PLACEHOLDER => {
                    has_metric = true;
                    Level::Metric
                }
                _ if level.starts_with('{') && level.ends_with('}') && level.len() >= 2 => {
                    let name = &level[1..level.len() - 1];
                    let valid_name = !name.is_empty()
                        && name.len() <= PLACEHOLDER_NAME_MAX
                        && name.as_bytes()[0].is_ascii_lowercase()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !valid_name {
                        return Err(format!(
                            "topic template {template:?} level {level:?}: a placeholder name is [a-z][a-z0-9_]*, at most {PLACEHOLDER_NAME_MAX} characters"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!(
                            "topic template {template:?} has more than one {{{name}}} level"
                        ));
                    }
                    names.push(name);
                    has_device_id |= level == DEVICE_ID_PLACEHOLDER;
                    Level::IdPart
                }
                _ => {
                    if level.contains(['{', '}']) {
                        return Err(format!(
                            "topic template {template:?} level {level:?}: a placeholder must be a whole topic level"
                        ));
                    }
                    if level.contains(['+', '#']) {
                        return Err(format!(
                            "topic template {template:?} level {level:?}: an MQTT wildcard (+ or #) must be a whole topic level"
                        ));
                    }
                    if level.contains('\0') {
                        return Err(format!(
                            "topic template {template:?} contains a NUL character"
                        ));
                    }
                    if level.is_empty() {
                        return Err(format!(
                            "topic template {template:?} has an empty level (leading, trailing or doubled '/')"
                        ));
                    }
                    if i == 0 && level.starts_with('$') {
                        return Err(format!(
                            "topic template {template:?} starts with '$', which brokers reserve ($SYS, $share)"
                        ));
                    }
                    Level::Literal(level.into())
                }
            };
            levels.push(parsed);
        }
        if !has_device_id {
            return Err(format!(
                "topic template {template:?} has no {DEVICE_ID_PLACEHOLDER} level"
            ));
        }
        if names.len() > MAX_ID_PARTS {
            return Err(format!(
                "topic template {template:?} has {} device id parts ({}); at most {MAX_ID_PARTS}",
                names.len(),
                names
                    .iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Self {
            template: template.into(),
            levels: levels.into(),
            id_parts: names.len(),
        })
    }

    /// Whether `topic` fits the template's shape (levels and literals), and what
    /// it carries. The parts are not validated yet: a topic that fits a
    /// template but carries a bad id is `invalid_device_id`, not `invalid_topic`.
    pub fn matches<'t>(&self, topic: &'t str) -> Result<TopicMatch<'t>, &'static str> {
        let mut m = TopicMatch {
            parts: [""; MAX_ID_PARTS],
            n_parts: 0,
            metric: None,
        };
        let mut count = 0;
        for (i, part) in topic.split('/').enumerate() {
            match self.levels.get(i) {
                None => return Err("too many levels"),
                Some(Level::Rest) => return Ok(m),
                Some(Level::Literal(lit)) => {
                    if **lit != *part {
                        return Err("literal level differs");
                    }
                }
                Some(Level::IdPart) => {
                    m.parts[m.n_parts] = part;
                    m.n_parts += 1;
                }
                Some(Level::Metric) => m.metric = Some(part),
                Some(Level::Any) => {}
            }
            count = i + 1;
        }
        // `a/b/#` also matches `a/b`, as in MQTT.
        let expected = match self.levels.last() {
            Some(Level::Rest) => self.levels.len() - 1,
            _ => self.levels.len(),
        };
        if count == expected {
            Ok(m)
        } else {
            Err("too few levels")
        }
    }

    /// [`Self::matches`], then the validated device id: the single-template
    /// path (a mismatch is `invalid_topic`).
    pub fn device_id(&self, topic: &str) -> Result<DeviceId, Rejection> {
        self.matches(topic)
            .map_err(|why| self.mismatch(topic, why))?
            .device_id()
    }

    /// Whether the template is only literals and one `{device_id}`: a device
    /// publishes to it with `{device_id}` replaced (the simulator's templates).
    pub fn is_simple(&self) -> bool {
        self.id_parts == 1
            && self
                .levels
                .iter()
                .all(|l| matches!(l, Level::Literal(_) | Level::IdPart))
    }

    /// Whether the template has a `{metric}` level.
    pub fn has_metric(&self) -> bool {
        self.levels.contains(&Level::Metric)
    }

    /// The MQTT subscription filter: the literal levels before the first
    /// placeholder or wildcard followed by `#` (`devices/#`), or `#` when the
    /// template starts with one.
    pub fn subscription_filter(&self) -> String {
        let mut filter = String::new();
        for level in self.levels.iter() {
            match level {
                Level::Literal(lit) => {
                    filter.push_str(lit);
                    filter.push('/');
                }
                _ => break,
            }
        }
        filter.push('#');
        filter
    }

    /// The topic `device` publishes `metric` to, for templates without `+` or
    /// `#`: placeholders filled in, a composed id split on `.` into its parts.
    /// `None` when the template has wildcards, when the id does not split
    /// into the template's number of parts, or when a `{metric}` level has no metric.
    pub fn topic_for(&self, device: &DeviceId, metric: Option<&MetricName>) -> Option<String> {
        let mut parts = device.as_str().splitn(self.id_parts, ID_PART_SEPARATOR);
        let mut topic = String::with_capacity(self.template.len() + device.as_str().len());
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                topic.push('/');
            }
            match level {
                Level::Literal(lit) => topic.push_str(lit),
                Level::IdPart => topic.push_str(parts.next()?),
                Level::Metric => topic.push_str(metric?.as_str()),
                Level::Any | Level::Rest => return None,
            }
        }
        if self.id_parts > 1 && device.as_str().split(ID_PART_SEPARATOR).count() != self.id_parts {
            return None;
        }
        Some(topic)
    }

    /// The template as written in the config.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    pub(crate) fn mismatch(&self, topic: &str, why: &str) -> Rejection {
        Rejection::new(
            RejectReason::InvalidTopic,
            format!(
                "topic {:?} does not match {:?}: {why}",
                truncate(topic, DETAIL_TOPIC_MAX),
                self.template
            ),
        )
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

/// The filters to subscribe to for `templates`: each one's
/// [`TopicTemplate::subscription_filter`], without duplicates and without
/// filters another of them already covers (`#` covers everything, `a/#`
/// covers `a/b/#`), in a stable (sorted) order.
pub fn subscription_filters<'a>(
    templates: impl IntoIterator<Item = &'a TopicTemplate>,
) -> Vec<String> {
    let mut filters: Vec<String> = templates
        .into_iter()
        .map(TopicTemplate::subscription_filter)
        .collect();
    filters.sort();
    filters.dedup();
    let covered = |f: &str, by: &str| {
        f != by && {
            let prefix = &by[..by.len() - 1]; // "a/" of "a/#", "" of "#"
            f.starts_with(prefix)
        }
    };
    let all = filters.clone();
    filters.retain(|f| !all.iter().any(|by| covered(f, by)));
    filters
}

/// `s` cut to at most `max` bytes on a char boundary (hostile input in details).
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests;
