//! `logs_follow_mb_s`: how fast an agent streams a container's log to a follower. A container
//! writes `mib` MiB of 100-byte lines and a last `done` line, then sleeps; once the whole log is
//! on disk, `GET /containerLogs/...?follow=true` on the node port (as the API server would for
//! `kubectl logs -f`) is timed from the request to the `done` line, with the agent's CPU seconds
//! over the same interval. The bench nodes' containerLogMaxSize is above the log's size: a
//! rotation while it is written would leave the current file, where a follow starts, short.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::AsyncBufReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

use super::pods::Tracker;
use super::procfs;
use super::scrape;
use crate::pod::{Container, PodBuilder};

/// The pod's name in the run's namespace.
pub const POD: &str = "logs-follow";

/// What one follow measured.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Log content streamed per second, MiB/s.
    pub mib_s: f64,
    /// The agent's CPU seconds while streaming it.
    pub cpu_seconds: f64,
}

/// The writer: `mib` MiB of `x` lines (the last one cut short unless the size is a whole number
/// of lines), a newline, then `done` on a line of its own, then nothing.
fn pod(node: &str, mib: u64) -> Pod {
    let line = "x".repeat(99);
    let script = format!(
        "yes {line} | head -c {} ; echo; echo done; exec sleep 3600",
        mib << 20
    );
    PodBuilder::new(POD)
        .without_namespace()
        .node(node)
        .grace(1)
        .container(Container::sh("main", &script))
        .build()
}

/// Runs the pod in `pods`' namespace on `node`, measures one follow through `scraper` (the
/// node's kubelet API), deletes the pod.
pub async fn measure(
    pods: &Api<Pod>,
    tracker: &Tracker,
    scraper: &kube::Client,
    ns: &str,
    node: &str,
    pid: u32,
    mib: u64,
) -> anyhow::Result<Follow> {
    pods.create(&PostParams::default(), &pod(node, mib))
        .await
        .context("create the log writer")?;
    let result = follow(tracker, scraper, ns, pid, mib).await;
    pods.delete(POD, &Default::default()).await?;
    tracker
        .gone(&[POD.to_string()], Duration::from_secs(120))
        .await?;
    result
}

async fn follow(
    tracker: &Tracker,
    scraper: &kube::Client,
    ns: &str,
    pid: u32,
    mib: u64,
) -> anyhow::Result<Follow> {
    tracker
        .ready(&[POD.to_string()], Duration::from_secs(120))
        .await?;
    let path = format!("/containerLogs/{ns}/{POD}/main");
    // The whole log on disk: its last line is `done`.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let tail = scrape::get(scraper, &format!("{path}?tailLines=1"))
            .await
            .unwrap_or_default();
        if tail == "done\n" {
            break;
        }
        if Instant::now() > deadline {
            bail!("{path}: no `done` line after 600 s (last: {tail:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = (mib << 20) + "\ndone\n".len() as u64;
    let cpu0 = procfs::cpu_seconds(pid).context("agent gone")?;
    let t0 = Instant::now();
    let req = http::Request::get(format!("{path}?follow=true")).body(Vec::new())?;
    let mut body = Box::pin(
        scraper
            .request_stream(req)
            .await
            .with_context(|| format!("GET {path}?follow=true"))?,
    );
    let mut got = 0u64;
    while got < want {
        let chunk = tokio::time::timeout(Duration::from_secs(60), body.fill_buf())
            .await
            .context("follow stalled for 60 s")??;
        if chunk.is_empty() {
            bail!("follow ended after {got} of {want} bytes");
        }
        let n = chunk.len();
        got += n as u64;
        futures::AsyncBufRead::consume(body.as_mut(), n);
    }
    let took = t0.elapsed().as_secs_f64();
    let cpu_seconds = procfs::cpu_seconds(pid).context("agent gone")? - cpu0;
    anyhow::ensure!(got == want, "followed {got} bytes, wanted {want}");
    Ok(Follow {
        mib_s: mib as f64 / took,
        cpu_seconds,
    })
}
