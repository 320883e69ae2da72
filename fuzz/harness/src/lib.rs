//! The checks behind every fuzz target, callable on stable Rust.
//!
//! # Layout
//!
//! - [`decoders`]: the payload decoders (`decode` as ingest calls it, the JSON
//!   object format, SenML), each through one shared check of the decoded
//!   [`devices::Message`] or [`devices::Rejection`].
//! - [`topic`]: topic patterns and topic → device id.
//! - [`config`]: the gateway's config layering (defaults → a TOML string →
//!   environment) and validation.
//! - [`spool`]: spool recovery ([`cold::spool::Spool::open`] and replay) from
//!   arbitrary segment bytes and an arbitrary released watermark.
//! - [`import`]: the import parsers (NDJSON, CSV, Parquet) line by line.
//! - [`replay`]: feeds every file of a corpus directory to a target and
//!   collects the inputs that panicked.
//! - [`seeds`]: the seed corpus (test vectors, RFC 8428 examples, spool and
//!   Parquet files made by the real encoders), written by
//!   `cargo run -p fuzz-harness --example write-seeds`.
//!
//! ```text
//! fuzz/fuzz_targets/NAME.rs ─┐  (cargo fuzz, libFuzzer, sanitizers)
//!                            ├─▶ fuzz_harness::TARGETS[NAME] ─▶ the crate under test
//! tests/it (cargo test) ─────┘  replays fuzz/seeds/NAME + fuzz/regressions/NAME
//! ```
//!
//! Every target takes `&[u8]` and panics only when the code under test broke
//! a rule: a panic inside it, or a check here (a decoded value that is not
//! finite, a rejection without a reason, recovery that is not idempotent…).
//! Adding a decoder is one function here, one line in [`TARGETS`], one
//! three-line file in `fuzz/fuzz_targets/` and a seed directory.

pub mod config;
pub mod decoders;
pub mod import;
pub mod replay;
pub mod seeds;
pub mod spool;
pub mod topic;

/// A fuzz target: the name of its `fuzz/fuzz_targets/{name}.rs` file and of its
/// corpus directories, and the function it feeds each input to.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target (`scripts/fuzz` runs them in `cargo fuzz list` order).
pub const TARGETS: &[Target] = &[
    Target {
        name: "topic",
        run: topic::run,
    },
    Target {
        name: "decode",
        run: decoders::decode,
    },
    Target {
        name: "decode_json",
        run: decoders::json,
    },
    Target {
        name: "decode_value",
        run: decoders::value,
    },
    Target {
        name: "decode_senml",
        run: decoders::senml,
    },
    Target {
        name: "config",
        run: config::run,
    },
    Target {
        name: "spool_recover",
        run: spool::run,
    },
    Target {
        name: "import_ndjson",
        run: import::ndjson,
    },
    Target {
        name: "import_csv",
        run: import::csv,
    },
    Target {
        name: "import_parquet",
        run: import::parquet,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

/// The ms-since-epoch "now" the targets decode at (2024-11-25), unless an
/// input chooses its own.
pub const NOW_MS: i64 = 1_732_530_000_000;

/// Longest rejection detail a check accepts: details quote hostile input
/// truncated, never whole (they go to logs and dead letters).
pub const MAX_DETAIL_BYTES: usize = 1024;

/// Runs the target called `name` on one input: what every
/// `fuzz/fuzz_targets/{name}.rs` calls.
///
/// # Panics
/// On an unknown name, and whenever the target's checks fail.
pub fn run(name: &str, data: &[u8]) {
    match target(name) {
        Some(t) => (t.run)(data),
        None => panic!("no fuzz target called {name:?} in fuzz_harness::TARGETS"),
    }
}
