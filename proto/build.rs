//! Compiles `eventssidecar/v1/*.proto` with protox (a pure-Rust protobuf compiler, so no `protoc`
//! binary is needed) and generates the Rust types with prost-build. The full descriptor set,
//! well-known types included, is written next to the code so reflection-based tools (JSON
//! rendering in the SDK) see exactly the schema the types were generated from.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = dir.join("eventssidecar/v1");
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let mut files: Vec<String> = fs::read_dir(&proto_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".proto"))
        .map(|n| format!("eventssidecar/v1/{n}"))
        .collect();
    files.sort();
    // Any is not imported by any event file, but the JSON renderer needs it in the pool.
    files.push("google/protobuf/any.proto".to_owned());

    let fds = protox::Compiler::new([&dir])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(&files)?
        .file_descriptor_set();

    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("eventssidecar_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    let mut config = prost_build::Config::new();
    config
        // Payloads become `Bytes`: decoding from a `Bytes` frame is then zero-copy.
        .bytes(["."])
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com");
    config.compile_fds(fds)?;
    Ok(())
}
