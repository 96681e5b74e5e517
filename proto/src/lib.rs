//! bosun-proto: generated code of the gRPC APIs bosun serves besides CRI.

/// Kubelet pod-resources API v1 (`v1.PodResourcesLister`), served on `<root>/pod-resources/kubelet.sock`.
pub mod podresources_v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("v1");
}
