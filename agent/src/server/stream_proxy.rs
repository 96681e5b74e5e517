//! The kubelet's upgrade-aware proxy to the runtime's streaming server: the client's request
//! (SPDY/3.1 or WebSocket upgrade, as the API server sends it) is replayed to the URL CRI
//! Exec/Attach/PortForward returned; once the runtime answers `101 Switching Protocols` the two
//! upgraded connections are spliced byte for byte until both sides end or the stream has been
//! idle for the idle timeout. Any other answer is passed back to the client as it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{Instrument, debug};

/// The longest any streaming connection lives, as the kubelet's server (4 h read/write timeouts).
pub const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(4 * 3600);

/// How long connecting to the runtime's streaming server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Request headers not replayed to the runtime: hop-by-hop ones hyper manages, and credentials
/// meant for this server.
const DROPPED: &[header::HeaderName] = &[
    header::HOST,
    header::AUTHORIZATION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

fn error(code: StatusCode, msg: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Proxies the upgrade request `req` to `target` (an `http://host:port/path` URL from the
/// runtime). Returns the runtime's answer; on 101 the splice runs on in a task of its own, with
/// `idle` as its idle timeout (zero: none).
pub async fn proxy(mut req: Request<Body>, target: &str, idle: Duration) -> Response {
    let url: http::Uri = match target.parse() {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("invalid streaming URL {target:?} from the runtime: {e}"),
            );
        }
    };
    if url.scheme_str() != Some("http") {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("streaming URL {target:?}: only http:// streaming servers are supported"),
        );
    }
    let Some(host) = url.host().map(|h| h.trim_matches(['[', ']']).to_string()) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("streaming URL {target:?} has no host"),
        );
    };
    let port = url.port_u16().unwrap_or(80);
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error dialing backend: {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "error dialing backend: timed out".into(),
            );
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
        Ok(x) => x,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error dialing backend: {e}"),
            );
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "streaming backend connection ended with an error");
        }
    });

    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut upstream = Request::builder().method(req.method().clone()).uri(path);
    if let Some(h) = upstream.headers_mut() {
        copy_headers(req.headers(), h);
        if let Some(authority) = url.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            h.insert(header::HOST, v);
        }
    }
    let upstream = match upstream.body(Body::empty()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = match sender.send_request(upstream).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("error proxying to the runtime's streaming server: {e}"),
            );
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The runtime refused (bad token, bad options): its answer goes back unchanged.
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, Body::new(body));
    }
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    if let Some(h) = answer.headers_mut() {
        for (k, v) in resp.headers() {
            h.append(k, v.clone());
        }
    }
    tokio::spawn(
        async move {
            let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "stream upgrade failed");
                    return;
                }
            };
            let (up, down, ended) = splice(TokioIo::new(client), TokioIo::new(backend), idle).await;
            debug!(bytes_in = up, bytes_out = down, ?ended, "stream closed");
        }
        .in_current_span(),
    );
    answer
        .body(Body::empty())
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Copies the request headers to replay, without the dropped ones.
fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !DROPPED.contains(k) {
            to.append(k, v.clone());
        }
    }
}

/// Why a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both directions reached end of stream (or failed).
    Closed,
    /// Nothing moved in either direction for the idle timeout.
    Idle,
    /// The connection reached [`MAX_STREAM_LIFETIME`].
    Lifetime,
}

/// Copies bytes both ways between `a` and `b` until both directions end (an end of stream on
/// one side shuts the other side's write half down, so half-closes pass through), or nothing
/// moved for `idle` (zero: never), or [`MAX_STREAM_LIFETIME`] passed. Returns the bytes copied
/// a→b and b→a and why it ended.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> (u64, u64, Ended)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let a_to_b = AtomicU64::new(0);
    let b_to_a = AtomicU64::new(0);
    let copy = async {
        tokio::join!(
            pump(&mut ar, &mut bw, &last, start, &a_to_b),
            pump(&mut br, &mut aw, &last, start, &b_to_a),
        )
    };
    let watchdog = async {
        if idle.is_zero() {
            return std::future::pending::<()>().await;
        }
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let ended = tokio::select! {
        _ = copy => Ended::Closed,
        _ = watchdog => Ended::Idle,
        _ = tokio::time::sleep(MAX_STREAM_LIFETIME) => Ended::Lifetime,
    };
    (
        a_to_b.load(Ordering::Relaxed),
        b_to_a.load(Ordering::Relaxed),
        ended,
    )
}

/// One direction of [`splice`]: read, write, note the activity; at end of stream (or an
/// error) shut the writer down.
async fn pump<R, W>(r: &mut R, w: &mut W, last: &AtomicU64, start: Instant, total: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            break;
        }
        total.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn splice_copies_both_ways_and_passes_half_closes() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let task = tokio::spawn(splice(a, b, Duration::from_secs(60)));
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got, b"ping",
            "client's bytes and its end of stream reach the server"
        );
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"pong!");
        let (up, down, ended) = task.await.unwrap();
        assert_eq!((up, down, ended), (4, 5, Ended::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn splice_ends_an_idle_stream_after_the_idle_timeout_only() {
        let (mut client, a) = duplex(1024);
        let (b, mut server) = duplex(1024);
        let task = tokio::spawn(splice(a, b, Duration::from_secs(300)));
        // Activity every 200 s keeps it open past 300 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(200)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
        }
        assert!(!task.is_finished(), "an active stream stays open");
        tokio::time::sleep(Duration::from_secs(301)).await;
        let (up, _, ended) = task.await.unwrap();
        assert_eq!((up, ended), (3, Ended::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn splice_without_idle_timeout_lives_until_the_lifetime_cap() {
        let (_client, a) = duplex(1024);
        let (b, _server) = duplex(1024);
        let task = tokio::spawn(splice(a, b, Duration::ZERO));
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        assert!(!task.is_finished());
        tokio::time::sleep(Duration::from_secs(3601)).await;
        assert_eq!(task.await.unwrap().2, Ended::Lifetime);
    }
}
