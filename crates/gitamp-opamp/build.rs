//! Generates the OpAMP message types from `proto/*.proto` at the workspace root.
//!
//! protox (pure Rust) replaces `protoc`, so building needs no system tools.
//! `bytes(["."])` makes every `bytes` field a `bytes::Bytes`: one rendered config
//! body is then shared by every agent without a copy per message.
//! `btree_map(["."])` makes map fields `BTreeMap`, so encoding a message is
//! deterministic (same bytes for the same content, whatever the insertion order).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("../../proto");
    let files = ["opamp.proto", "anyvalue.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={}", proto_dir.join(f).display());
    }
    let fds = protox::compile(files, [&proto_dir])?;
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    config.btree_map(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
