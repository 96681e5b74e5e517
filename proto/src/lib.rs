//! bosun-proto: generated code of the gRPC APIs bosun serves besides CRI.

/// Kubelet pod-resources API v1 (`v1.PodResourcesLister`), served on `<root>/pod-resources/kubelet.sock`.
pub mod podresources_v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("v1");
}

/// The gRPC health checking protocol (`grpc.health.v1.Health`): what grpc probes call.
pub mod health_v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("grpc.health.v1");
}
