//! How long runs (backfill, import) report progress, without knowing where to.
//!
//! The library calls a [`Progress`]; the CLI draws a bar on a terminal or
//! prints plain lines otherwise. [`NoProgress`] for tests and scripts.

/// Receives progress of one run. Units are the run's own (objects for
/// backfill, input lines for import); `rows` is what reached the stores.
pub trait Progress: Send + Sync {
    /// The run knows how much work there is.
    fn set_total(&self, total: u64);
    /// `done` more units finished, `rows` more rows written.
    fn advance(&self, done: u64, rows: u64);
    /// The run ended (finished, interrupted or failed).
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&self, _: u64) {}
    fn advance(&self, _: u64, _: u64) {}
    fn finish(&self) {}
}
