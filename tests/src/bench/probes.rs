//! Probes at scale: pods on the host network, each with an httpGet readiness probe and an exec
//! liveness probe every second. The readiness probes ask the bench's own HTTP server (on the
//! node's address: a host-network pod's IP), which timestamps every request, so how late each
//! probe came against its period is measured outside both agents; the agent's CPU and RSS and its
//! containerd's CPU (exec probes cost the runtime) are measured over a window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::pods::Tracker;
use super::procfs;
use super::stats;
use crate::pod::{Container, PodBuilder};

/// The probes' period, seconds.
const PERIOD_S: u64 = 1;

/// The header naming the probing pod.
const POD_HEADER: &str = "x-bench-pod";

/// What the probe phase measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Agent CPU over the window, seconds.
    pub cpu_seconds: f64,
    /// Agent RSS mean over the window, MiB.
    pub rss_mb: f64,
    /// The node's containerd CPU over the window, seconds.
    pub runtime_cpu_seconds: f64,
    /// 99th percentile of how late a readiness probe arrived against its period's grid, ms.
    pub lag_p99_ms: f64,
    /// Readiness probes received in the window.
    pub probes: usize,
}

/// Arrival times of the probes, by pod.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// Answers every HTTP request on `listener` with 200, recording its arrival under the pod its
/// `x-bench-pod` header names; keeps a connection open unless the client asked to close it.
async fn serve(listener: TcpListener, arrivals: Arrivals) {
    while let Ok((conn, _)) = listener.accept().await {
        tokio::spawn(answer(conn, arrivals.clone()));
    }
}

async fn answer(conn: TcpStream, arrivals: Arrivals) {
    let (read, mut write) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    // The request being read: the pod its header names, when it arrived, whether to close after.
    let mut request: Option<(String, Instant, bool)> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        let Some((name, at, close)) = request.as_mut() else {
            // The request line: the probe is here.
            request = Some((String::new(), Instant::now(), false));
            continue;
        };
        if line.is_empty() {
            let close = *close;
            if !name.is_empty() {
                let mut a = arrivals.lock().expect("arrivals");
                a.entry(std::mem::take(name)).or_default().push(*at);
            }
            request = None;
            let reply = if close {
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            };
            if write.write_all(reply.as_bytes()).await.is_err() || close {
                return;
            }
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        if key == POD_HEADER {
            *name = value.to_string();
        } else if key == "connection" && value.eq_ignore_ascii_case("close") {
            *close = true;
        }
    }
}

/// A host-network pod probed every second: readiness over HTTP to the bench's server on `port`,
/// liveness by exec.
fn pod(name: &str, node: &str, port: u16) -> Pod {
    PodBuilder::new(name)
        .without_namespace()
        .node(node)
        .grace(1)
        .spec("hostNetwork", json!(true))
        .container(
            Container::exec("main", &["sleep", "3600"])
                .with(
                    "readinessProbe",
                    json!({"httpGet": {"path": "/ready", "port": port,
                                       "httpHeaders": [{"name": POD_HEADER, "value": name}]},
                           "periodSeconds": PERIOD_S}),
                )
                .with(
                    "livenessProbe",
                    json!({"exec": {"command": ["true"]}, "periodSeconds": PERIOD_S}),
                ),
        )
        .build()
}

/// How late each arrival came against its pod's grid of periods: the grid is placed at the
/// pod's earliest-arriving phase, so the earliest probe has lag 0, ms.
pub fn lags_ms(arrivals: &[Instant], period: Duration) -> Vec<f64> {
    let Some(first) = arrivals.iter().min().copied() else {
        return Vec::new();
    };
    let p = period.as_secs_f64();
    let residuals: Vec<f64> = arrivals
        .iter()
        .map(|t| {
            let since = t.saturating_duration_since(first).as_secs_f64();
            since - (since / p).round() * p
        })
        .collect();
    let least = residuals.iter().copied().fold(f64::INFINITY, f64::min);
    residuals.iter().map(|r| (r - least) * 1000.0).collect()
}

/// Runs the probe phase on `node`: `count` probed pods, Ready, `settle`, then a `window`
/// measured on the agent `agent_pid` and containerd `runtime_pid`; the pods deleted afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn measure(
    pods: &Api<Pod>,
    tracker: &Tracker,
    node: &str,
    agent_pid: u32,
    runtime_pid: u32,
    count: usize,
    settle: Duration,
    window: Duration,
) -> anyhow::Result<Figures> {
    let listener = TcpListener::bind("0.0.0.0:0")
        .await
        .context("bind the probes' HTTP server")?;
    let port = listener.local_addr()?.port();
    let arrivals: Arrivals = Arc::default();
    let server = tokio::spawn(serve(listener, arrivals.clone()));
    let names: Vec<String> = (0..count).map(|i| format!("probed-{i}")).collect();
    for name in &names {
        pods.create(&PostParams::default(), &pod(name, node, port))
            .await
            .with_context(|| format!("create pod {name}"))?;
    }
    let result = async {
        tracker.ready(&names, Duration::from_secs(300)).await?;
        tokio::time::sleep(settle).await;
        arrivals.lock().expect("arrivals").clear();
        let runtime0 = procfs::cpu_seconds(runtime_pid).context("containerd went away")?;
        let usage = procfs::measure(agent_pid, window)
            .await
            .context("the agent process went away")?;
        let runtime1 = procfs::cpu_seconds(runtime_pid).context("containerd went away")?;
        let seen = std::mem::take(&mut *arrivals.lock().expect("arrivals"));
        let period = Duration::from_secs(PERIOD_S);
        let lags: Vec<f64> = seen.values().flat_map(|a| lags_ms(a, period)).collect();
        anyhow::ensure!(
            !lags.is_empty(),
            "no readiness probe reached the bench's server"
        );
        Ok(Figures {
            cpu_seconds: usage.cpu_seconds,
            rss_mb: usage.rss_mean_mb,
            runtime_cpu_seconds: runtime1 - runtime0,
            lag_p99_ms: stats::percentile(&lags, 99.0).unwrap_or(f64::NAN),
            probes: lags.len(),
        })
    }
    .await;
    server.abort();
    for name in &names {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    tracker.gone(&names, Duration::from_secs(300)).await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_delay_against_the_earliest_phase() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // On the grid, then 20 ms late, then 5 ms late, then 300 ms late.
        let lags = lags_ms(
            &[at(0), at(1020), at(2005), at(3300)],
            Duration::from_secs(1),
        );
        let want = [0.0, 20.0, 5.0, 300.0];
        for (l, w) in lags.iter().zip(want) {
            assert!((l - w).abs() < 0.01, "{lags:?}");
        }
        // The first arrival late: the grid starts at the earliest phase, not at the first probe.
        let lags = lags_ms(&[at(30), at(1010), at(2010)], Duration::from_secs(1));
        let want = [20.0, 0.0, 0.0];
        for (l, w) in lags.iter().zip(want) {
            assert!((l - w).abs() < 0.01, "{lags:?}");
        }
        assert!(lags_ms(&[], Duration::from_secs(1)).is_empty());
    }

    #[tokio::test]
    async fn the_server_records_each_request_by_its_pod_and_honours_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let arrivals: Arrivals = Arc::default();
        tokio::spawn(serve(listener, arrivals.clone()));
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        // Two requests on one kept-alive connection, the second asking to close; one unnamed.
        let requests = format!(
            "GET / HTTP/1.1\r\n{POD_HEADER}: a\r\n\r\n\
             GET / HTTP/1.1\r\nHost: x\r\n\r\n\
             GET / HTTP/1.1\r\n{POD_HEADER}: b\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(requests.as_bytes()).await.expect("write");
        let mut replies = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut replies)
            .await
            .expect("read until the server closes");
        assert_eq!(replies.matches("HTTP/1.1 200 OK").count(), 3, "{replies}");
        let a = arrivals.lock().expect("arrivals");
        let mut names: Vec<_> = a.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        names.sort();
        assert_eq!(names, [("a".to_string(), 1), ("b".to_string(), 1)]);
    }
}
