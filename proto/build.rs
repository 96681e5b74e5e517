//! Generates the pod-resources v1, gRPC health v1, CSI v1, plugin registration v1 and device plugin
//! v1beta1 clients and servers from proto/ (needs protoc and its well-known types).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/podresources_v1.proto",
        "proto/health.proto",
        "proto/csi.proto",
        "proto/pluginregistration_v1.proto",
        "proto/deviceplugin_v1beta1.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    Ok(())
}
