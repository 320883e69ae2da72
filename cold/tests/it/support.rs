//! Helpers shared by the integration tests.

use std::sync::atomic::{AtomicU32, Ordering};

/// The env var's value, or `default` when unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A name unique to this test run and call: `{base}-{pid}-{n}`
/// (lowercase and dash-separated, so also a valid bucket name).
pub fn unique(base: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{base}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
