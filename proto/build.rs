//! Generates the pod-resources v1 client and server from proto/podresources_v1.proto (needs protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/podresources_v1.proto");
    tonic_prost_build::configure().compile_protos(&["proto/podresources_v1.proto"], &["proto"])?;
    Ok(())
}
