//! Topic patterns and topic → device id.

use devices::topic::TopicPattern;

use crate::MAX_DETAIL_BYTES;

/// The gateway's default `devices.topic_pattern`.
pub const DEFAULT_PATTERN: &str = "devices/{device_id}/telemetry";

/// Input `PATTERN\nTOPIC` (no newline: all topic, under the default pattern).
///
/// A pattern that parses gives a subscription filter ending in `#` that
/// matches the pattern's literal prefix; a topic it accepts maps to a device
/// id whose own topic is that topic again (mapping is a bijection on what it
/// accepts); a rejection has a detail bounded but for the pattern itself.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, topic) = match text.split_once('\n') {
        Some((p, t)) => (p, t),
        None => (DEFAULT_PATTERN, &*text),
    };
    let pattern = match TopicPattern::parse(pattern) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.is_empty());
            TopicPattern::parse(DEFAULT_PATTERN).expect("the default")
        }
    };
    assert_eq!(TopicPattern::parse(pattern.as_str()).as_ref(), Ok(&pattern));
    let filter = pattern.subscription_filter();
    assert!(filter.ends_with('#'), "filter {filter:?}");
    match pattern.device_id(topic) {
        Ok(id) => {
            assert_eq!(pattern.topic_for(&id), topic, "topic does not round-trip");
            let prefix = filter.trim_end_matches('#');
            assert!(topic.starts_with(prefix), "{topic:?} outside {filter:?}");
        }
        Err(e) => {
            assert!(!e.detail.is_empty());
            // The detail quotes the (configured) pattern whole, the topic truncated.
            let bound = MAX_DETAIL_BYTES + pattern.as_str().len();
            assert!(
                e.detail.len() <= bound,
                "detail of {} bytes",
                e.detail.len()
            );
        }
    }
}
