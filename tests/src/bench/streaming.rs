//! Streaming through the agent: `/run` round trips (a command through the node port, CRI
//! ExecSync behind it) and port-forward throughput (the real kubectl through the API server to
//! the agent, which proxies the stream to the runtime).

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::pods::Tracker;
use super::stats;
use crate::Env;
use crate::pod::{Container, PodBuilder};

/// The pod streamed to.
pub const POD: &str = "stream";

/// What the streaming phase measured (Err: why not).
#[derive(Debug)]
pub struct Figures {
    /// Median `/run?cmd=true` round trip through the node port, ms.
    pub exec_ms: Result<f64, String>,
    /// Median throughput of an HTTP download through `kubectl port-forward`, MiB/s.
    pub forward_mib_s: Result<f64, String>,
}

/// A pod on `node` serving a file of `mib` MiB over HTTP on 8080, Ready once the file is
/// written.
fn pod(node: &str, mib: usize) -> Pod {
    let script = format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1048576 count={mib} 2>/dev/null && \
         touch /www/done && exec httpd -f -p 8080 -h /www"
    );
    PodBuilder::new(POD)
        .without_namespace()
        .node(node)
        .grace(1)
        .container(Container::sh("main", &script).with(
            "readinessProbe",
            json!({"exec": {"command": ["test", "-f", "/www/done"]}, "periodSeconds": 1}),
        ))
        .build()
}

/// Runs the streaming phase in namespace `ns` on `node`: `runs` round trips, three downloads
/// of `mib` MiB; the pod is deleted afterwards.
pub async fn measure(
    scraper: Option<&kube::Client>,
    pods: &Api<Pod>,
    tracker: &Tracker,
    node: &str,
    ns: &str,
    runs: usize,
    mib: usize,
) -> anyhow::Result<Figures> {
    pods.create(&PostParams::default(), &pod(node, mib))
        .await
        .context("create the streaming pod")?;
    tracker
        .ready(&[POD.to_string()], Duration::from_secs(120))
        .await?;
    let exec_ms = match scraper {
        Some(c) => run_ms(c, ns, runs).await.map_err(|e| format!("{e:#}")),
        None => Err("no client of the node port".into()),
    };
    let forward_mib_s = forward_mib_s(ns, mib).await.map_err(|e| format!("{e:#}"));
    pods.delete(POD, &DeleteParams::default()).await?;
    tracker
        .gone(&[POD.to_string()], Duration::from_secs(120))
        .await?;
    Ok(Figures {
        exec_ms,
        forward_mib_s,
    })
}

/// Median of `runs` POSTs of `/run/<ns>/stream/main?cmd=true`, after one untimed.
async fn run_ms(client: &kube::Client, ns: &str, runs: usize) -> anyhow::Result<f64> {
    let path = format!("/run/{ns}/{POD}/main?cmd=true");
    let once = || async {
        let req = http::Request::post(&path).body(Vec::new())?;
        tokio::time::timeout(Duration::from_secs(30), client.request_text(req))
            .await
            .with_context(|| format!("POST {path}: no answer in 30 s"))?
            .with_context(|| format!("POST {path}"))?;
        anyhow::Ok(())
    };
    once().await?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        once().await?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    stats::median(&samples).context("no runs")
}

/// Median MiB/s of three downloads of /big through one `kubectl port-forward`.
async fn forward_mib_s(ns: &str, mib: usize) -> anyhow::Result<f64> {
    let env = Env::cluster();
    let mut child = tokio::process::Command::new(env.var("KUBECTL"))
        .args(["port-forward", "-n", ns, &format!("pod/{POD}"), ":8080"])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("kubectl port-forward")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let port: u16 = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = lines.next_line().await? {
            if let Some(rest) = l.strip_prefix("Forwarding from 127.0.0.1:") {
                let port = rest.split_whitespace().next().unwrap_or_default();
                return Ok(port.parse()?);
            }
        }
        bail!("kubectl port-forward ended before forwarding")
    })
    .await
    .context("kubectl port-forward did not start in 30 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let want = (mib * 1024 * 1024) as u64;
    let mut samples = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n").await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let read = async {
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return anyhow::Ok(());
                }
                total += n as u64;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .context("download through port-forward: not done in 120 s")??;
        let secs = t0.elapsed().as_secs_f64();
        if total < want {
            bail!("download through port-forward: {total} bytes, expected over {want}");
        }
        samples.push(want as f64 / (1024.0 * 1024.0) / secs);
    }
    let _ = child.kill().await;
    stats::median(&samples).context("no downloads")
}
