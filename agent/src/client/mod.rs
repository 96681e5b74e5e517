//! The API client: from `--kubeconfig` (client certificates or tokens) or in-cluster config;
//! TLS bootstrap through `--bootstrap-kubeconfig` when the kubeconfig is missing or its
//! certificate expired; and, with `rotateCertificates`, the client certificate renewed at 70-90%
//! of its lifetime without a restart, as the kubelet does.

pub mod certificate;
pub mod csr;
pub mod reachability;
pub mod serving;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::client::ConfigExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ApiConfig;
use certificate::{CertError, Loaded, Resolver};

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
    /// In-cluster configuration failed.
    #[error("in-cluster config: {0}")]
    InCluster(#[from] kube::config::InClusterError),
    /// The client certificate could not be loaded or stored.
    #[error("client certificate: {0}")]
    Cert(#[from] CertError),
    /// TLS bootstrap could not get a certificate.
    #[error("TLS bootstrap: {0}")]
    Bootstrap(#[from] csr::CsrError),
    /// The TLS configuration was refused.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The kubeconfig's `tls-server-name` is not a DNS name or IP address.
    #[error("kubeconfig tls-server-name {0}")]
    ServerName(String),
    /// Writing the kubeconfig failed.
    #[error("writing kubeconfig {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The API client for `cfg`, as node `node_name` with certificates in `cert_dir`: None in
/// standalone mode (no kubeconfig and not in a cluster). Bootstraps first when needed; starts
/// certificate rotation when configured.
pub async fn connect(
    cfg: &ApiConfig,
    node_name: &str,
    cert_dir: &Path,
    cancel: &CancellationToken,
) -> Result<Option<kube::Client>, ClientError> {
    let Some(path) = &cfg.kubeconfig else {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
        {
            info!("no kubeconfig: using the in-cluster service account");
            let config = with_user_agent(kube::Config::incluster()?, node_name);
            return Ok(Some(standard_client(config)?));
        }
        return Ok(None);
    };
    // The kubeconfig is read once: used as is when it is usable, read again only after a
    // bootstrap has written it anew.
    let loaded = load(path).await;
    let config = match &cfg.bootstrap_kubeconfig {
        Some(boot) if !usable(path, &loaded, now()) => {
            bootstrap(path, boot, cert_dir, node_name, cancel).await?;
            load(path).await?
        }
        _ => loaded?,
    };
    let config = with_user_agent(config, node_name);
    if cfg.rotate_certificates
        && let Some(initial) = identity(&config, cert_dir)?
    {
        let resolver = Arc::new(Resolver::new(initial.key.clone()));
        let (client, connections) = rotating_client(config, resolver.clone())?;
        tokio::spawn(rotate(
            client.clone(),
            node_name.to_string(),
            cert_dir.to_path_buf(),
            initial,
            (resolver, connections),
            cancel.child_token(),
        ));
        return Ok(Some(client));
    }
    Ok(Some(standard_client(config)?))
}

/// The rest client metrics layer (`rest_client_requests_total`) for the config's API server,
/// which also tells [`reachability`] of every outcome.
fn metrics_layer(config: &kube::Config) -> crate::metrics::rest::RestMetricsLayer {
    let host = config
        .cluster_url
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default();
    crate::metrics::rest::RestMetricsLayer::new(host, reachability::observe)
}

/// kube's own client stack, with the request metrics.
fn standard_client(config: kube::Config) -> Result<kube::Client, ClientError> {
    let layer = metrics_layer(&config);
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

/// Reads a kubeconfig into a client config.
pub(crate) async fn load(path: &Path) -> Result<kube::Config, ClientError> {
    config_of(read_kubeconfig(path)?, path).await
}

/// Parses the kubeconfig file at `path`.
fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, ClientError> {
    Kubeconfig::read_from(path).map_err(|source| ClientError::Kubeconfig {
        path: path.display().to_string(),
        source,
    })
}

/// The client config of a parsed kubeconfig (`path` names it in errors).
async fn config_of(kc: Kubeconfig, path: &Path) -> Result<kube::Config, ClientError> {
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClientError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
}

fn with_user_agent(mut config: kube::Config, node: &str) -> kube::Config {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&format!("bosun/{} ({node})", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|_| http::HeaderValue::from_static("bosun")),
    ));
    config
}

/// Whether the kubeconfig loaded from `path` can be used as is at `now` (s since the epoch): it
/// loaded and its client certificate, if any, has not expired (the kubelet's
/// isClientConfigStillValid).
fn usable(path: &Path, loaded: &Result<kube::Config, ClientError>, now: i64) -> bool {
    let Ok(config) = loaded else {
        return false;
    };
    match kubeconfig_identity(config) {
        Ok(Some(l)) => l.not_after > now,
        Ok(None) => true,
        Err(e) => {
            warn!(kubeconfig = %path.display(), error = %e, "kubeconfig client certificate unusable; bootstrapping");
            false
        }
    }
}

/// The client certificate to start from: the cert dir's current one if valid, else the
/// kubeconfig's. None for token (or no) authentication.
fn identity(config: &kube::Config, cert_dir: &Path) -> Result<Option<Loaded>, ClientError> {
    let Some(from_kubeconfig) = kubeconfig_identity(config)? else {
        return Ok(None);
    };
    let current = cert_dir.join(certificate::CURRENT);
    if let Ok(pem) = std::fs::read(&current)
        && let Ok(l) = certificate::load(&pem, &pem)
        && l.not_after > from_kubeconfig.not_after
    {
        return Ok(Some(l));
    }
    Ok(Some(from_kubeconfig))
}

/// The kubeconfig user's client certificate and key (files or inline data), if it has one.
fn kubeconfig_identity(config: &kube::Config) -> Result<Option<Loaded>, ClientError> {
    use base64::Engine;
    use secrecy::ExposeSecret;
    let a = &config.auth_info;
    let read = |path: &Option<String>, data: Option<&str>| -> Result<Option<Vec<u8>>, CertError> {
        if let Some(d) = data {
            return base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map(Some)
                .map_err(|e| CertError::Pem(format!("kubeconfig certificate data: {e}")));
        }
        match path {
            Some(p) => std::fs::read(p).map(Some).map_err(|source| CertError::Io {
                path: PathBuf::from(p),
                source,
            }),
            None => Ok(None),
        }
    };
    let cert = read(&a.client_certificate, a.client_certificate_data.as_deref())?;
    let key_data = a
        .client_key_data
        .as_ref()
        .map(|k| k.expose_secret().to_string());
    let key = read(&a.client_key, key_data.as_deref())?;
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(certificate::load(&c, &k)?)),
        _ => Ok(None),
    }
}

/// The HTTP client under the API client, replaced by a fresh one (a new connection pool) when
/// the client certificate rotates: the API server checks a certificate's validity on every
/// request, so connections opened with the old certificate must go, as the kubelet closes them.
#[derive(Clone)]
struct Connections {
    connector: HttpsConnector,
    current: Arc<std::sync::RwLock<HyperClient>>,
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;
type HyperClient = hyper_util::client::legacy::Client<HttpsConnector, kube::client::Body>;

impl Connections {
    fn new(connector: HttpsConnector) -> Connections {
        let client = Self::pool(&connector);
        Connections {
            connector,
            current: Arc::new(std::sync::RwLock::new(client)),
        }
    }

    fn pool(connector: &HttpsConnector) -> HyperClient {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector.clone())
    }

    /// New requests go over new connections; idle old ones close, running watches finish.
    fn renew(&self) {
        let fresh = Self::pool(&self.connector);
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
    }
}

impl tower::Service<http::Request<kube::client::Body>> for Connections {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let client = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        client.request(req)
    }
}

/// A client whose TLS handshakes take the client certificate from `resolver`, and the handle
/// that renews its connections.
fn rotating_client(
    config: kube::Config,
    resolver: Arc<Resolver>,
) -> Result<(kube::Client, Connections), ClientError> {
    use rustls::pki_types::CertificateDer;
    use tower::ServiceBuilder;
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots.add(CertificateDer::from(der.clone()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver);
    // A resumed TLS session keeps the certificate of the handshake it came from: after a
    // rotation the API server would still see the old one. Go's client (the kubelet's) does not
    // resume either.
    tls.resumption = rustls::client::Resumption::disabled();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    // The kubeconfig's tls-server-name, as client-go checks it: the name the API server's
    // certificate must carry when the address in `server` is not one of its names.
    let builder = match &config.tls_server_name {
        Some(name) => {
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| ClientError::ServerName(format!("{name:?}: {e}")))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    let connections = Connections::new(builder.enable_http1().wrap_connector(http));
    let service = ServiceBuilder::new()
        .layer(metrics_layer(&config))
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(connections.clone());
    Ok((
        kube::Client::new(service, config.default_namespace),
        connections,
    ))
}

/// Gets a client certificate with the bootstrap credentials (or reuses a valid one already in
/// the cert dir) and writes the kubeconfig pointing at `kubelet-client-current.pem`.
async fn bootstrap(
    kubeconfig: &Path,
    bootstrap: &Path,
    cert_dir: &Path,
    node: &str,
    cancel: &CancellationToken,
) -> Result<(), ClientError> {
    let current = cert_dir.join(certificate::CURRENT);
    let valid = std::fs::read(&current)
        .ok()
        .and_then(|pem| certificate::load(&pem, &pem).ok())
        .is_some_and(|l| l.not_after > now());
    // The bootstrap kubeconfig is read once: its credentials ask for the certificate, its
    // cluster goes into the kubeconfig written.
    let boot = read_kubeconfig(bootstrap)?;
    if valid {
        info!(cert = %current.display(), "TLS bootstrap: the cert dir holds a valid client certificate");
    } else {
        info!(bootstrap = %bootstrap.display(), "TLS bootstrap: requesting a client certificate");
        let config = with_user_agent(config_of(boot.clone(), bootstrap).await?, node);
        let client = standard_client(config)?;
        let (request, key) = csr::new_request(node)?;
        let cert = csr::request_certificate(&client, &request, cancel).await?;
        certificate::store(cert_dir, &format!("{cert}{key}"))?;
    }
    write_kubeconfig(kubeconfig, &boot, &current)?;
    info!(kubeconfig = %kubeconfig.display(), "TLS bootstrap: kubeconfig written");
    Ok(())
}

/// Writes a kubeconfig with the (parsed) bootstrap kubeconfig's cluster and the client
/// certificate file, named as the kubelet names them, mode 0600.
fn write_kubeconfig(path: &Path, boot: &Kubeconfig, cert_file: &Path) -> Result<(), ClientError> {
    let context = boot
        .current_context
        .as_deref()
        .and_then(|name| boot.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = boot
        .clusters
        .iter()
        .find(|c| context.as_deref().is_none_or(|n| c.name == n))
        .and_then(|c| c.cluster.clone())
        .unwrap_or_default();
    let cert = cert_file.display().to_string();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster", "namespace": "default", "user": "default-auth"}}],
        "current-context": "default-context",
        "users": [{"name": "default-auth", "user": {
            "client-certificate": cert, "client-key": cert}}],
    });
    let werr = |source| ClientError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    // Private, as the kubelet writes it (client-go's WriteToFile: 0600): it names the client key.
    let data = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    crate::atomic_file::write(path, &data, 0o600).map_err(werr)
}

/// Renews the client certificate at its rotation deadline, for as long as bosun runs; a failed
/// attempt is retried with back-off (1 s doubling to 5 min).
async fn rotate(
    client: kube::Client,
    node: String,
    cert_dir: PathBuf,
    mut current: Loaded,
    (resolver, connections): (Arc<Resolver>, Connections),
    cancel: CancellationToken,
) {
    let mut last = None;
    loop {
        let deadline = certificate::rotation_deadline(
            current.not_before,
            current.not_after,
            crate::backoff::jitter(),
        );
        let in_secs = (deadline - now()).max(0);
        info!(node = %node, in_secs, "client certificate rotation scheduled");
        if !certificate::wait_for_rotation(deadline, now, last, &cancel).await {
            return;
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            match renew(&client, &node, &cert_dir, &cancel).await {
                Ok(next) => {
                    resolver.set(next.key.clone());
                    connections.renew();
                    info!(node = %node, not_after = next.not_after, "client certificate rotated");
                    current = next;
                    last = Some(tokio::time::Instant::now());
                    break;
                }
                Err(e) => {
                    warn!(node = %node, error = %e, "client certificate rotation failed; retrying in {backoff:?}")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(300));
        }
    }
}

/// One renewal: a new key and CSR with the current credentials, stored when signed.
async fn renew(
    client: &kube::Client,
    node: &str,
    cert_dir: &Path,
    cancel: &CancellationToken,
) -> Result<Loaded, ClientError> {
    let (request, key) = csr::new_request(node)?;
    let cert = csr::request_certificate(client, &request, cancel).await?;
    let loaded = certificate::load(cert.as_bytes(), key.as_bytes())?;
    certificate::store(cert_dir, &format!("{cert}{key}"))?;
    Ok(loaded)
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig for `server`, authenticating with `user` (a kubeconfig `user` object).
    fn kubeconfig(server: &str, user: serde_json::Value) -> Kubeconfig {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
            "users": [{"name": "u", "user": user}],
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn usable_takes_the_loaded_config_and_checks_its_certificate_at_now() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["n".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let p = Path::new("/kubeconfig");
        let with_cert = config_of(
            kubeconfig(
                "https://127.0.0.1:6443",
                serde_json::json!({
                    "client-certificate-data": b64(&cert.pem()),
                    "client-key-data": b64(&key.serialize_pem()),
                }),
            ),
            p,
        )
        .await;
        let (_, not_after) = certificate::validity(cert.der()).unwrap();
        assert!(usable(p, &with_cert, not_after - 1));
        assert!(!usable(p, &with_cert, not_after));
        let token = config_of(
            kubeconfig("https://127.0.0.1:6443", serde_json::json!({"token": "t"})),
            p,
        )
        .await;
        assert!(
            usable(p, &token, i64::MAX),
            "no certificate: nothing expires"
        );
        let missing = load(Path::new("/nonexistent/kubeconfig")).await;
        assert!(
            matches!(&missing, Err(ClientError::Kubeconfig { path, .. }) if path == "/nonexistent/kubeconfig")
        );
        assert!(!usable(p, &missing, 0));
    }

    #[test]
    fn writes_the_current_contexts_cluster_of_the_parsed_bootstrap_kubeconfig() {
        let d = tempfile::tempdir().unwrap();
        let mut boot = kubeconfig(
            "https://127.0.0.1:1",
            serde_json::json!({"token": "bootstrap"}),
        );
        let mut other = boot.clusters[0].clone();
        other.name = "other".into();
        if let Some(c) = other.cluster.as_mut() {
            c.server = Some("https://127.0.0.1:2".into());
        }
        boot.clusters.insert(0, other);
        let out = d.path().join("sub/kubelet.conf");
        let cert = d.path().join("pki/kubelet-client-current.pem");
        write_kubeconfig(&out, &boot, &cert).unwrap();
        let written = read_kubeconfig(&out).unwrap();
        assert_eq!(written.current_context.as_deref(), Some("default-context"));
        assert_eq!(
            written.clusters[0]
                .cluster
                .as_ref()
                .and_then(|c| c.server.as_deref()),
            Some("https://127.0.0.1:1")
        );
        let user = written.auth_infos[0].auth_info.as_ref().unwrap();
        let cert = cert.display().to_string();
        assert_eq!(user.client_certificate.as_deref(), Some(cert.as_str()));
        assert_eq!(user.client_key.as_deref(), Some(cert.as_str()));
        assert!(
            user.token.is_none(),
            "the bootstrap token is not carried over"
        );
    }

    /// The client of a rotating certificate checks the API server's certificate against the
    /// kubeconfig's `tls-server-name`, not the address, as client-go does (a node reaching the
    /// API server at an address its certificate does not name; found by the CIS test on the VM
    /// node, where every request failed to connect after a TLS bootstrap).
    #[tokio::test]
    async fn the_rotating_client_verifies_the_tls_server_name() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server_key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["kubernetes".into()]).unwrap();
        let server_cert = params.self_signed(&server_key).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = "{}";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_cert = rcgen::CertificateParams::new(vec!["system:node:n".into()])
            .unwrap()
            .self_signed(&client_key)
            .unwrap();
        let identity = certificate::load(
            client_cert.pem().as_bytes(),
            client_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let mut config = kube::Config::new(format!("https://{addr}").parse().unwrap());
        config.root_cert = Some(vec![server_cert.der().to_vec()]);
        config.tls_server_name = Some("kubernetes".into());
        let (client, _) = rotating_client(config, Arc::new(Resolver::new(identity.key))).unwrap();
        let req = http::Request::get("/version").body(Vec::new()).unwrap();
        let answer = client.request_text(req).await;
        assert_eq!(answer.map_err(|e| e.to_string()).as_deref(), Ok("{}"));
    }

    /// CIS Kubernetes Benchmark 4.1.5: the `--kubeconfig` file is 600 or more restrictive, as the
    /// kubelet writes it after bootstrap (client-go's `WriteToFile`, mode 0600), whatever was
    /// there before.
    #[test]
    fn the_kubeconfig_written_after_bootstrap_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let boot = kubeconfig("https://127.0.0.1:1", serde_json::json!({"token": "t"}));
        let out = d.path().join("kubelet.conf");
        std::fs::write(&out, "old").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_kubeconfig(&out, &boot, &d.path().join("pki/current.pem")).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "kubeconfig mode {mode:o}");
    }
}
