//! Topic templates and topic → device id (and metric).

use devices::topic::TopicTemplate;

use crate::MAX_DETAIL_BYTES;

/// The gateway's default source template (`devices.topic_pattern`).
pub const DEFAULT_TEMPLATE: &str = "devices/{device_id}/telemetry";

/// Input `TEMPLATE\nTOPIC` (no newline: all topic, under the default template).
///
/// A template that parses parses again to itself and gives a subscription
/// filter ending in `#` whose literal prefix every topic it fits starts with;
/// a fitting topic's id and metric either validate or are a rejection with a
/// bounded detail; for a simple template (literals and one `{device_id}`) a
/// device's topic maps back to that same topic (mapping is a bijection on
/// what it accepts).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (template, topic) = match text.split_once('\n') {
        Some((p, t)) => (p, t),
        None => (DEFAULT_TEMPLATE, &*text),
    };
    let template = match TopicTemplate::parse(template) {
        Ok(t) => t,
        Err(e) => {
            assert!(!e.is_empty());
            TopicTemplate::parse(DEFAULT_TEMPLATE).expect("the default")
        }
    };
    assert_eq!(
        TopicTemplate::parse(template.as_str()).as_ref(),
        Ok(&template)
    );
    let filter = template.subscription_filter();
    assert!(filter.ends_with('#'), "filter {filter:?}");
    // The detail quotes the (configured) template whole, the topic truncated.
    let bound = MAX_DETAIL_BYTES + template.as_str().len();
    let check_rejection = |e: devices::Rejection| {
        assert!(!e.detail.is_empty());
        assert!(
            e.detail.len() <= bound,
            "detail of {} bytes",
            e.detail.len()
        );
    };
    match template.device_id(topic) {
        Ok(id) => {
            let m = template.matches(topic).expect("fits: it gave an id");
            let prefix = filter.trim_end_matches('#');
            assert!(topic.starts_with(prefix), "{topic:?} outside {filter:?}");
            match m.metric() {
                Ok(metric) => {
                    assert_eq!(metric.is_some(), template.has_metric());
                    if template.is_simple() {
                        assert_eq!(
                            template.topic_for(&id, metric.as_ref()).as_deref(),
                            Some(topic),
                            "topic does not round-trip"
                        );
                    }
                }
                Err(e) => check_rejection(e),
            }
        }
        Err(e) => check_rejection(e),
    }
}
