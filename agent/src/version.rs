//! The version bosun reports: the Kubernetes version whose kubelet behaviour it implements.

/// The Kubernetes release whose kubelet behaviour bosun implements.
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// `Kubernetes v1.37.2-bosun.<crate version>`: what `--version` prints and nodeInfo.kubeletVersion says.
pub fn version_string() -> String {
    format!(
        "Kubernetes {KUBERNETES_VERSION}-bosun.{}",
        env!("CARGO_PKG_VERSION")
    )
}
