//! The Sparkplug B payload types, generated at build time by prost from the
//! vendored Eclipse Tahu `sparkplug_b.proto` (see `devices/build.rs`).

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/org.eclipse.tahu.protobuf.rs"));
