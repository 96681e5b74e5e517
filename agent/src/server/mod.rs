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
pub mod tls_reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
/// How long an HTTP/1 client may take to send a request's headers, counted from when the server
/// starts waiting for them (so also the longest an idle keep-alive connection stays open). The
/// kubelet's Go server sets no ReadHeaderTimeout and lets its 4 h ReadTimeout apply; a
/// goroutine per slow client is cheap there, a held TLS session here is not: hyper's 30 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection with no request in flight stays open once it has carried one (HTTP/2
/// has no header timeout): the kubelet's `IdleTimeout`. Before its first request a connection
/// gets [`HEADER_READ_TIMEOUT`] (hyper reads the first bytes to tell HTTP/1 from HTTP/2 before
/// its own timeout runs: a client silent after the handshake would otherwise stay for ever).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connections served at once; past it, new ones wait in the listen backlog until one closes,
/// so hostile clients cannot take every file descriptor the agent needs for the runtime.
pub const MAX_CONNECTIONS: usize = 4096;

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

/// Serves HTTPS on `listener` until cancelled, each connection with the TLS configuration `tls`
/// holds when it arrives.
pub async fn serve(
    listener: TcpListener,
    tls: tokio::sync::watch::Receiver<Arc<tls::ServerTls>>,
    server: Arc<Server>,
    cancel: CancellationToken,
) {
    let app = handlers::router(server);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
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
        // The configuration as it is now: tls_reload swaps in reloaded files.
        let tls = tls.borrow().clone();
        let acceptor = TlsAcceptor::from(tls.config.clone());
        let app = app.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
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
                    .and_then(|chain| tls.verified(chain))
                    .and_then(|c| User::from_certificate(c)),
            );
            let activity = Arc::new(Activity::default());
            let requests = activity.clone();
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                let guard = InFlight::start(&requests);
                let answer = app.clone().oneshot(req);
                async move {
                    let resp = answer.await?;
                    // In flight until the body is sent (or dropped): a long log stream counts.
                    Ok::<_, std::convert::Infallible>(resp.map(|body| {
                        axum::body::Body::new(body.map_frame(move |f| {
                            let _in_flight = &guard;
                            f
                        }))
                    }))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    debug!(%remote, error = %e, "connection ended with an error");
                },
                _ = activity.idle_for(HEADER_READ_TIMEOUT, IDLE_TIMEOUT) => {
                    debug!(%remote, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                },
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// The requests in flight on one connection, and since when it has had none.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    served: std::sync::atomic::AtomicBool,
    idle_since: std::sync::Mutex<tokio::time::Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: Default::default(),
            served: Default::default(),
            idle_since: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }
}

impl Activity {
    /// Resolves once the connection has had no request in flight for `first` (before any
    /// request came) or `later` (after one did).
    async fn idle_for(&self, first: Duration, later: Duration) {
        use std::sync::atomic::Ordering;
        loop {
            let limit = if self.served.load(Ordering::Acquire) {
                later
            } else {
                first
            };
            let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = since + limit;
            if self.in_flight.load(Ordering::Acquire) == 0
                && tokio::time::Instant::now() >= deadline
            {
                return;
            }
            // Re-checked at the deadline, or a little later while requests are in flight.
            let wake = deadline.max(tokio::time::Instant::now() + limit / 10);
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One request in flight on a connection, from its arrival until its response body is done.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity
            .served
            .store(true, std::sync::atomic::Ordering::Release);
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self
            .0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) =
                tokio::time::Instant::now();
        }
    }
}
