//! The plain-HTTP `/healthz` endpoint on healthzBindAddress:healthzPort (127.0.0.1:10248) that
//! kubeadm's kubelet-check polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A named health check: Err with the reason when failing.
type Check = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The agent's health, as the kubelet's healthz: started (the runtime answered) and every
/// registered check passing (`syncloop`: the PLEG relist keeps succeeding). Shared by both
/// `/healthz` endpoints and the systemd watchdog.
#[derive(Clone, Default)]
pub struct Health {
    started: Arc<AtomicBool>,
    checks: Arc<Mutex<Vec<(&'static str, Check)>>>,
}

impl Health {
    /// Healthy from now on, checks permitting (for tests).
    pub fn started() -> Health {
        let h = Health::default();
        h.set_started();
        h
    }

    /// The agent is up.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Adds a named check.
    pub fn add_check(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        if let Ok(mut c) = self.checks.lock() {
            c.push((name, Box::new(check)));
        }
    }

    /// Ok when healthy; else the failing check's name and reason.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !self.started.load(Ordering::Relaxed) {
            return Err(("syncloop", "container runtime not ready".into()));
        }
        let checks = self
            .checks
            .lock()
            .map_err(|_| ("syncloop", "poisoned".into()))?;
        for (name, check) in checks.iter() {
            check().map_err(|e| (*name, e))?;
        }
        Ok(())
    }

    /// True when healthy.
    pub fn is_healthy(&self) -> bool {
        self.check().is_ok()
    }

    /// The kubelet's `/healthz` answer: 200 "ok", or 500 naming the failed check (its reason
    /// withheld, as the kubelet withholds it from unauthenticated callers).
    pub fn answer(&self) -> (u16, String) {
        match self.check() {
            Ok(()) => (200, "ok".into()),
            Err((name, reason)) => {
                warn!(check = name, %reason, "healthz check failed");
                (
                    500,
                    format!(
                        "[+]ping ok\n[+]log ok\n[-]{name} failed: reason withheld\nhealthz check failed\n"
                    ),
                )
            }
        }
    }
}

/// Serves `/healthz` (200 "ok" while `health` passes, 500 otherwise) until cancelled.
pub async fn serve(listener: TcpListener, health: Health, cancel: CancellationToken) {
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
        let health = health.clone();
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
                "/healthz" => match health.answer() {
                    (200, body) => ("200 OK", body),
                    (_, body) => ("500 Internal Server Error", body),
                },
                _ => ("404 Not Found", "404 page not found".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn answers_as_the_kubelet_and_follows_its_checks() {
        let h = Health::default();
        assert_eq!(
            h.answer(),
            (
                500,
                "[+]ping ok\n[+]log ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
                    .into()
            ),
            "not started"
        );
        h.set_started();
        assert_eq!(h.answer(), (200, "ok".into()));
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        h.add_check("syncloop", move || match f.load(Ordering::Relaxed) {
            true => Err("pleg was last seen active 3m1s ago; threshold is 3m0s".into()),
            false => Ok(()),
        });
        assert!(h.is_healthy());
        failing.store(true, Ordering::Relaxed);
        assert!(!h.is_healthy());
        assert_eq!(h.answer().0, 500);
        assert_eq!(
            h.check(),
            Err((
                "syncloop",
                "pleg was last seen active 3m1s ago; threshold is 3m0s".into()
            ))
        );
        failing.store(false, Ordering::Relaxed);
        assert_eq!(h.answer(), (200, "ok".into()));
    }
}
