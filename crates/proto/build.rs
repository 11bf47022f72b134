//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler), so that a fresh machine
//! needs nothing beyond cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["etcd.proto", "externalscaler.proto", "replication.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    let descriptors = protox::compile(files, [&dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
