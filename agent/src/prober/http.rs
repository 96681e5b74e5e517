//! HTTP probes: a GET from the node to the pod IP (or the probe's host), HTTP or HTTPS without
//! verifying the server, the kubelet's User-Agent and Accept headers under the spec's own,
//! redirects followed to the same host only (a redirect elsewhere passes with a warning), the
//! body read up to 10 KiB, 200-399 passing. One client for every probe, keeping connections.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ProbeResult;
use super::tcp::join_host_port;

/// The most of a response body a probe reads (the kubelet's maxRespBodyLength).
pub const MAX_BODY: usize = 10 * 1024;

/// Redirects followed at most (Go's http client).
const MAX_REDIRECTS: usize = 10;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The port a probe names: a number, or the name of one of the container's ports (the kubelet's
/// probe.ResolveContainerPort).
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("port {name:?} not found"))?,
    };
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// `kube-probe/1.37`.
pub fn user_agent() -> String {
    let v = crate::version::KUBERNETES_VERSION.trim_start_matches('v');
    let mm: Vec<&str> = v.split('.').take(2).collect();
    format!("kube-probe/{}", mm.join("."))
}

/// The shared HTTP(S) client of HTTP probes; cheap to clone.
#[derive(Clone)]
pub struct HttpProber {
    client: Option<HttpsClient>,
}

impl Default for HttpProber {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProber {
    /// A client that keeps idle connections for reuse by the next probe of the same target.
    pub fn new() -> Self {
        let client = super::tls::insecure_client_config().ok().map(|tls| {
            let mut conn = HttpConnector::new();
            conn.enforce_http(false);
            conn.set_nodelay(true);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(conn);
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                // Host-network pods probe the node's own address: one host, many targets.
                .pool_max_idle_per_host(8)
                .build(https)
        });
        HttpProber { client }
    }

    /// Runs `get` against `container` of a pod at `pod_ip`, all within `timeout`.
    pub async fn probe(
        &self,
        get: &HTTPGetAction,
        container: &Container,
        pod_ip: &str,
        timeout: Duration,
    ) -> ProbeResult {
        let Some(client) = &self.client else {
            return ProbeResult::Error("no TLS client configuration".into());
        };
        let port = match resolve_port(&get.port, container) {
            Ok(p) => p,
            Err(e) => return ProbeResult::Error(e),
        };
        let host = match get.host.as_deref() {
            Some(h) if !h.is_empty() => h,
            _ => pod_ip,
        };
        let scheme = get.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let mut path = get.path.clone().unwrap_or_default();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        let url = format!("{scheme}://{}{path}", join_host_port(host, port));
        let headers = match headers(get) {
            Ok(h) => h,
            Err(e) => return ProbeResult::Error(e),
        };
        match tokio::time::timeout(timeout, do_probe(client, &url, &headers)).await {
            Ok(r) => r,
            Err(_) => ProbeResult::Failure(format!(
                "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
        }
    }
}

/// The request headers: the spec's, then User-Agent and Accept unless the spec set them (an
/// empty Accept from the spec removes it).
pub fn headers(get: &HTTPGetAction) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    for hd in get.http_headers.iter().flatten() {
        let name = HeaderName::from_bytes(hd.name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(&hd.value).map_err(|e| e.to_string())?;
        h.append(name, value);
    }
    if !h.contains_key(header::USER_AGENT) {
        static UA: std::sync::OnceLock<Option<HeaderValue>> = std::sync::OnceLock::new();
        let ua = UA.get_or_init(|| HeaderValue::from_str(&user_agent()).ok());
        if let Some(ua) = ua {
            h.insert(header::USER_AGENT, ua.clone());
        }
    }
    match h.get(header::ACCEPT).map(|v| v.is_empty()) {
        None => {
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        }
        Some(true) => {
            h.remove(header::ACCEPT);
        }
        Some(false) => {}
    }
    Ok(h)
}

/// Where a redirect from `from` to `location` goes.
fn resolve(from: &Uri, location: &str) -> Option<Uri> {
    if location.contains("://") {
        return location.parse().ok();
    }
    let scheme = from.scheme_str()?;
    let authority = from.authority()?.as_str();
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}").parse().ok();
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let base = from.path();
        let dir = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// The cause of a failed request as Go's client words it after `Get "URL": `.
fn go_error(e: &hyper_util::client::legacy::Error, uri: &Uri) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.raw_os_error().is_some() {
                let addr = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                return format!("dial tcp {addr}: {}", super::tcp::go_dial_error(io));
            }
            return io.to_string();
        }
        source = s.source();
    }
    e.to_string()
}

async fn do_probe(client: &HttpsClient, url: &str, headers: &HeaderMap) -> ProbeResult {
    let mut uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return ProbeResult::Error(format!("parse {url:?}: {e}")),
    };
    let first_host = uri.host().unwrap_or_default().to_string();
    let mut redirects = 0;
    loop {
        let mut req = Request::get(uri.clone());
        if let Some(h) = req.headers_mut() {
            h.extend(headers.clone());
        }
        let req = match req.body(Empty::<Bytes>::new()) {
            Ok(r) => r,
            Err(e) => return ProbeResult::Error(e.to_string()),
        };
        let res = match client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                return ProbeResult::Failure(format!(
                    "Get {:?}: {}",
                    uri.to_string(),
                    go_error(&e, &uri)
                ));
            }
        };
        let code = res.status().as_u16();
        let location = res
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if (300..400).contains(&code)
            && let Some(next) = location.as_deref().and_then(|l| resolve(&uri, l))
            && next.host().unwrap_or_default() == first_host
        {
            redirects += 1;
            if redirects >= MAX_REDIRECTS {
                return ProbeResult::Failure(format!(
                    "Get {:?}: stopped after 10 redirects",
                    next.to_string()
                ));
            }
            uri = next;
            continue;
        }
        // At most MAX_BODY bytes; a longer body is truncated, no failure.
        let mut body = res.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while buf.len() < MAX_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return ProbeResult::Error(e.to_string()),
                None => break,
            }
        }
        buf.truncate(MAX_BODY);
        let body = String::from_utf8_lossy(&buf).into_owned();
        return match code {
            200..=299 => ProbeResult::Success(body),
            300..=399 => {
                ProbeResult::Warning(format!("Probe terminated redirects, Response body: {body}"))
            }
            _ => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}")),
        };
    }
}

#[cfg(test)]
mod tests;
