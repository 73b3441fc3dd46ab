//! Compiles the .proto files with protox (pure Rust, no system `protoc`) and generates the
//! tonic services and prost messages.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "stadforstad/v1/federation.proto",
        "stadforstad/v1/lessons.proto",
        "stadforstad/v1/register.proto",
        "stadforstad/v1/node.proto",
        "stadforstad/v1/signals.proto",
        "stadforstad/v1/method.proto",
        "stadforstad/v1/progress.proto",
        "stadforstad/v1/directory.proto",
        "stadforstad/v1/stats.proto",
    ];
    println!("cargo:rerun-if-changed=stadforstad");
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("stadforstad_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .type_attribute(".stadforstad.v1", "#[derive(serde::Serialize)]")
        // Prost's codec, plus a count of a federation summary's entries before decoding.
        .codec_path("crate::codec::BoundedCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
