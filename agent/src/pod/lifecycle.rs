//! Lifecycle hooks, as the kubelet's handler runner runs them for postStart and preStop: exec in
//! the container through CRI, an HTTP(S) GET (host defaulting to the pod IP; any response counts
//! as success, only a failed request is a failure; HTTPS without verifying the server and, when
//! it answers in plain HTTP, retried over HTTP), or a sleep.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::runtime::PodRuntime;

/// Why a hook failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The handler failed: the kubelet's message.
    #[error("{0}")]
    Failed(String),
    /// The handler did not finish within its budget.
    #[error("hook did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Runs `handler` for `container` (CRI id `id`) within `budget`.
pub async fn run(
    cri: &impl PodRuntime,
    id: &str,
    container: &Container,
    pod_ip: &str,
    handler: &LifecycleHandler,
    budget: Duration,
) -> Result<HookRun, HookError> {
    let work = async {
        if let Some(exec) = &handler.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            let out = cri.exec_sync(id, cmd.clone(), budget).await.map_err(|e| {
                HookError::Failed(format!("Exec lifecycle hook ({cmd:?}) failed - error: {e}"))
            })?;
            if out.exit_code != 0 {
                let mut output = out.stdout;
                output.extend(out.stderr);
                return Err(HookError::Failed(format!(
                    "Exec lifecycle hook ({cmd:?}) failed - error: command {cmd:?} exited with {}, message: {:?}",
                    out.exit_code,
                    String::from_utf8_lossy(&output)
                )));
            }
            Ok(HookRun::default())
        } else if let Some(get) = &handler.http_get {
            http_get(get, container, pod_ip).await.map_err(|e| {
                HookError::Failed(format!(
                    "HTTP lifecycle hook ({}) failed - error: {e}",
                    get.path.as_deref().unwrap_or_default()
                ))
            })
        } else if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            Ok(HookRun::default())
        } else {
            Err(HookError::Failed(
                "Cannot run handler: invalid handler".into(),
            ))
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .unwrap_or(Err(HookError::TimedOut(budget)))
}

/// The port an httpGet names: a number, a numeric string, or the name of a container port.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) if s.is_empty() => 80,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {s} in {}", container.name))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// The request line and headers of the kubelet's lifecycle GET (User-Agent kube-lifecycle,
/// Accept */*, the spec's headers on top, Host from them when set).
pub fn request(get: &HTTPGetAction, host: &str, port: u16) -> String {
    let mut path = get.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), authority),
        (
            "User-Agent".into(),
            format!("kube-lifecycle/{}", major_minor()),
        ),
        ("Accept".into(), "*/*".into()),
    ];
    for h in get.http_headers.iter().flatten() {
        match headers
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(&h.name))
        {
            Some(slot) => slot.1 = h.value.clone(),
            None => headers.push((h.name.clone(), h.value.clone())),
        }
    }
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// `1.37` of `v1.37.2`, as the kubelet's probe and hook User-Agent carries it.
fn major_minor() -> String {
    let v = crate::version::KUBERNETES_VERSION.trim_start_matches('v');
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Sends the GET over `conn` and waits for the start of a response (any status counts).
async fn exchange<S>(mut conn: S, req: &str) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    conn.write_all(req.as_bytes()).await?;
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await?;
    if !head.starts_with(b"HTTP/") {
        return Err(std::io::Error::other("malformed HTTP response"));
    }
    // Drain a little so the server does not see a reset mid-write.
    let mut rest = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut rest)).await;
    Ok(())
}

async fn connect(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
}

/// What an httpGet hook did beyond succeeding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookRun {
    /// `host:port` of an HTTPS hook that answered in plain HTTP and was retried over HTTP (the
    /// kubelet's LifecycleHTTPFallback).
    pub http_fallback: Option<String>,
}

async fn http_get(
    get: &HTTPGetAction,
    container: &Container,
    pod_ip: &str,
) -> Result<HookRun, String> {
    let host = match get.host.as_deref() {
        Some(h) if !h.is_empty() => h,
        _ if pod_ip.is_empty() => return Err("failed to find networking container".into()),
        _ => pod_ip,
    };
    let port = resolve_port(&get.port, container)?;
    let req = request(get, host, port);
    let https = get
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    if !https {
        let conn = connect(host, port).await?;
        exchange(conn, &req).await.map_err(|e| e.to_string())?;
        return Ok(HookRun::default());
    }
    // HTTPS without verifying the server, as the kubelet's hook client; a server that answers
    // in plain HTTP gets the request again over HTTP.
    match https_get(host, port, &req).await {
        Ok(()) => Ok(HookRun::default()),
        Err(e) if e.plain_http => {
            let conn = connect(host, port).await?;
            let plain = req
                .lines()
                .filter(|l| !l.to_ascii_lowercase().starts_with("authorization:"))
                .collect::<Vec<_>>()
                .join("\r\n");
            exchange(conn, &plain).await.map_err(|e| e.to_string())?;
            Ok(HookRun {
                http_fallback: Some(format!("{host}:{port}")),
            })
        }
        Err(e) => Err(e.message),
    }
}

struct TlsError {
    message: String,
    /// The server answered the handshake with something that is not TLS.
    plain_http: bool,
}

async fn https_get(host: &str, port: u16, req: &str) -> Result<(), TlsError> {
    let fail = |message: String| TlsError {
        message,
        plain_http: false,
    };
    let config = crate::prober::tls::insecure_client_config().map_err(|e| fail(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| fail(format!("server name {host:?}: {e}")))?;
    let tcp = connect(host, port).await.map_err(fail)?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let plain_http = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| {
                    matches!(
                        r,
                        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                    )
                });
            TlsError {
                message: format!("https://{host}:{port}: {e}"),
                plain_http,
            }
        })?;
    exchange(tls, req).await.map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "web", "containerPort": 8080}]
        }))
        .unwrap()
    }

    #[test]
    fn ports_resolve_as_the_kubelet() {
        let c = container();
        let s = |v: &str| IntOrString::String(v.into());
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(resolve_port(&s("82"), &c), Ok(82));
        assert_eq!(resolve_port(&s("web"), &c), Ok(8080));
        assert_eq!(resolve_port(&s(""), &c), Ok(80));
        assert!(resolve_port(&s("nope"), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }

    #[test]
    fn request_has_the_kubelet_headers_and_the_spec_overrides() {
        let get: HTTPGetAction = serde_json::from_value(serde_json::json!({
            "path": "hook?x=1", "port": 80,
            "httpHeaders": [{"name": "accept", "value": "text/plain"}, {"name": "X-A", "value": "b"}]
        }))
        .unwrap();
        let r = request(&get, "10.0.0.2", 80);
        let lines: Vec<&str> = r.split("\r\n").collect();
        assert_eq!(lines[0], "GET /hook?x=1 HTTP/1.1");
        assert!(lines.contains(&"Host: 10.0.0.2:80"), "{r}");
        assert!(lines.contains(&"Accept: text/plain"), "{r}");
        assert!(lines.contains(&"X-A: b"), "{r}");
        assert!(lines.contains(&"User-Agent: kube-lifecycle/1.37"), "{r}");
    }
}
