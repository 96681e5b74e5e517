//! Scraping an agent's kubelet API (`/stats/summary`, `/metrics/resource`) as metrics-server does:
//! HTTPS with a client certificate of the cluster CA, one kept-alive connection.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::stats;
use crate::Env;

/// A client of one node's kubelet API with the API server's kubelet client certificate
/// (O=system:masters: accepted by the x509 authenticator, allowed by any authorizer).
pub async fn client(ip: &str, port: u16) -> anyhow::Result<kube::Client> {
    let env = Env::cluster();
    let pki = format!("{}/pki", env.var("CLUSTER_DIR"));
    // Agents serve self-signed certificates (the kubelet's default): not verified, as the API
    // server does not verify them here either.
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: https://{ip}:{port}
    insecure-skip-tls-verify: true
users:
- name: scraper
  user:
    client-certificate: {pki}/apiserver-kubelet-client.crt
    client-key: {pki}/apiserver-kubelet-client.key
contexts:
- name: scrape
  context:
    cluster: node
    user: scraper
current-context: scrape
"
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).context("scrape kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .context("scrape config")?;
    kube::Client::try_from(cfg).context("scrape client")
}

/// GETs `path` once: the body.
pub async fn get(client: &kube::Client, path: &str) -> anyhow::Result<String> {
    let req = http::Request::get(path).body(Vec::new())?;
    let body = tokio::time::timeout(Duration::from_secs(30), client.request_text(req))
        .await
        .with_context(|| format!("GET {path}: no answer in 30 s"))?
        .with_context(|| format!("GET {path}"))?;
    anyhow::ensure!(!body.trim().is_empty(), "GET {path}: empty body");
    Ok(body)
}

/// Median latency in ms of `n` GETs of `path`, after one untimed GET that opens the connection
/// (and fails the whole measurement when the agent does not serve `path`).
pub async fn median_ms(client: &kube::Client, path: &str, n: usize) -> anyhow::Result<f64> {
    get(client, path).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        get(client, path).await?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    stats::median(&samples).context("no scrapes")
}
