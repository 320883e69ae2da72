//! Generates the Sparkplug B payload types (`sparkplug::proto`) from the
//! vendored Eclipse Tahu schema `proto/sparkplug_b.proto` (EPL-2.0, header
//! kept intact). protox parses the schema in Rust, so no `protoc` is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/sparkplug_b.proto");
    let descriptors = protox::compile(["sparkplug_b.proto"], ["proto"])
        .expect("proto/sparkplug_b.proto is a valid protobuf schema");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost-build generates the Sparkplug B types");
}
