//! The API client: a kube `Client` from `--kubeconfig` (client certs or tokens), or in-cluster
//! config. TLS bootstrap and certificate rotation come later (issue 4).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why the API client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or parsed.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// The client could not be built from the config.
    #[error("API client: {0}")]
    Build(#[from] kube::Error),
}

/// Builds a client from a kubeconfig file, with a user agent naming bosun and the node.
pub async fn from_kubeconfig(path: &Path, node: &str) -> Result<kube::Client, ClientError> {
    let err = |source| ClientError::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kc = Kubeconfig::read_from(path).map_err(err)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(err)?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!("bosun/{} ({node})", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|_| http::HeaderValue::from_static("bosun")),
    ));
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let layer = crate::metrics::rest::RestMetricsLayer::new(host);
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}
