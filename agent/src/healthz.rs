//! The plain-HTTP `/healthz` endpoint on healthzBindAddress:healthzPort (127.0.0.1:10248) that
//! kubeadm's kubelet-check polls.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Serves `/healthz` (200 "ok" while `healthy`, 500 otherwise) until cancelled.
pub async fn serve(listener: TcpListener, healthy: Arc<AtomicBool>, cancel: CancellationToken) {
    loop {
        let (mut conn, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "healthz accept failed");
                    continue;
                }
            },
        };
        let healthy = healthy.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("");
            let (code, body) = match path.split('?').next().unwrap_or("") {
                "/healthz" if healthy.load(Ordering::Relaxed) => ("200 OK", "ok"),
                "/healthz" => ("500 Internal Server Error", "unhealthy"),
                _ => ("404 Not Found", "404 page not found"),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}
