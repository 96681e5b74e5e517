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

/// The Container Storage Interface v1 (`csi.v1`): the Identity and Node services Bosun calls on
/// a CSI driver's socket (and the Controller service, unused).
pub mod csi_v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("csi.v1");
}

/// The kubelet plugin registration API v1 (`pluginregistration.Registration`): what a plugin
/// serves on its socket in `<root>/plugins_registry/` for the plugin watcher.
pub mod pluginregistration_v1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("pluginregistration");
}

/// The kubelet device plugin API v1beta1 (`v1beta1.Registration`, `v1beta1.DevicePlugin`): the
/// registration service Bosun serves on `<root>/device-plugins/kubelet.sock` and the service a
/// device plugin serves on its own socket there.
pub mod deviceplugin_v1beta1 {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("v1beta1");
}
