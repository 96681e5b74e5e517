//! The kubelet's HTTPS server on `address:port` (0.0.0.0:10250): TLS with the serving certificate,
//! every request authenticated ([`auth`]) and authorized ([`authz`]) as the kubelet does, then
//! `/healthz`, `/pods`, `/stats/summary`, `/metrics/resource` and `/metrics` ([`handlers`]), and
//! with the debugging handlers `/containerLogs`, `/configz`, `/runningpods/`, `/logs/` and
//! `/exec`, `/attach`, `/portForward`, `/run` ([`streaming`]).

pub mod auth;
pub mod authz;
mod cache;
pub mod cadvisor;
pub mod configz;
pub mod container_logs;
pub mod handlers;
pub mod node_logs;
pub mod resource_metrics;
pub mod running_pods;
pub mod runtime_view;
pub mod stream_proxy;
pub mod streaming;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::stats::StatsProvider;
use crate::status::StatusStore;
use auth::{Authenticator, User};
use authz::Authorizer;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `address` is not an IP address.
    #[error("address {0:?} is not an IP address")]
    Address(String),
    /// The port could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What the handlers and the auth filter share.
pub struct Server {
    /// This node's name (the `nodes/<name>` authorized against).
    pub node_name: String,
    /// Pod statuses: what `/pods` serves.
    pub statuses: StatusStore,
    /// The latest stats sample: what `/stats/summary` and `/metrics/resource` serve.
    pub stats: StatsProvider,
    /// The agent's health: `/healthz`.
    pub health: crate::healthz::Health,
    /// Request authentication.
    pub authn: Authenticator,
    /// Request authorization.
    pub authz: Authorizer,
    /// The runtime that serves exec, attach and port-forward; none in tests of the server alone.
    pub streaming_runtime: Option<bosun_cri::CriClient>,
    /// How long a proxied stream may be idle before it is closed (zero: never).
    pub stream_idle_timeout: Duration,
    /// The runtime, asked for log paths and running pods.
    pub runtime: Arc<dyn runtime_view::RuntimeView>,
    /// Root of the pod log directories (`podLogsDir`).
    pub pod_logs_dir: PathBuf,
    /// The node's log directory served at `/logs/` (/var/log).
    pub node_log_dir: PathBuf,
    /// Which of the kubelet's optional endpoints are on.
    pub endpoints: Endpoints,
    /// The effective KubeletConfiguration, served by `/configz`.
    pub configz: serde_json::Value,
}

/// The kubelet's switches for optional endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// `enableDebuggingHandlers`: exec, attach, portForward, run, containerLogs, runningpods,
    /// configz, logs and pprof; off, they answer 405 (configz 404) as in the kubelet.
    pub debugging_handlers: bool,
    /// `enableSystemLogHandler`: `/logs/` (with the debugging handlers).
    pub system_log_handler: bool,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            debugging_handlers: true,
            system_log_handler: true,
        }
    }
}

/// The verified client certificate's user of the connection a request came on.
#[derive(Clone, Debug)]
pub struct PeerUser(pub Option<User>);

/// Binds `address:port`.
pub async fn bind(address: &str, port: u16) -> Result<TcpListener, ServerError> {
    let ip = address
        .parse()
        .map_err(|_| ServerError::Address(address.to_string()))?;
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })
}

/// Serves HTTPS on `listener` until cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    server: Arc<Server>,
    cancel: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let app = handlers::router(server);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    warn!(error = %e, "server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = PeerUser(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| User::from_certificate(c)),
            );
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                app.clone().oneshot(req)
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    debug!(%remote, error = %e, "connection ended with an error");
                },
                _ = cancel.cancelled() => {}
            }
        });
    }
}
