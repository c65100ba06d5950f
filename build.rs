//! Compiles `proto/redisgateway/v1/*.proto` without a system `protoc`: protox parses the
//! files into a descriptor set, tonic-prost-build generates the Rust code from it, and the same
//! set is written to `OUT_DIR/redisgateway_descriptor.bin` for server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/redisgateway/v1/common.proto",
    "proto/redisgateway/v1/keyvalue.proto",
    "proto/redisgateway/v1/hash.proto",
    "proto/redisgateway/v1/lock.proto",
    "proto/redisgateway/v1/session.proto",
    "proto/redisgateway/v1/monitor.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("redisgateway_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".redisgateway")
        // Malformed requests are INVALID_ARGUMENT (see src/codec.rs).
        .codec_path("crate::codec::GatewayCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
