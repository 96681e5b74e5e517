//! Generates the pod-resources v1 and gRPC health v1 clients and servers from proto/ (needs protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/podresources_v1.proto");
    println!("cargo:rerun-if-changed=proto/health.proto");
    tonic_prost_build::configure().compile_protos(
        &["proto/podresources_v1.proto", "proto/health.proto"],
        &["proto"],
    )?;
    Ok(())
}
