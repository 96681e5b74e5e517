//! Lifecycle hooks, as the kubelet's handler runner runs them for postStart and preStop: exec in
//! the container through CRI, an HTTP GET (host defaulting to the pod IP; any response counts as
//! success, only a failed request is a failure), or a sleep.

use std::time::Duration;

use bosun_cri::CriClient;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    cri: &CriClient,
    id: &str,
    container: &Container,
    pod_ip: &str,
    handler: &LifecycleHandler,
    budget: Duration,
) -> Result<(), HookError> {
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
            Ok(())
        } else if let Some(get) = &handler.http_get {
            http_get(get, container, pod_ip).await.map_err(|e| {
                HookError::Failed(format!(
                    "HTTP lifecycle hook ({}) failed - error: {e}",
                    get.path.as_deref().unwrap_or_default()
                ))
            })
        } else if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64)).await;
            Ok(())
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

async fn http_get(get: &HTTPGetAction, container: &Container, pod_ip: &str) -> Result<(), String> {
    if get
        .scheme
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
    {
        return Err("only HTTP lifecycle hooks are supported by bosun".into());
    }
    let host = match get.host.as_deref() {
        Some(h) if !h.is_empty() => h,
        _ if pod_ip.is_empty() => return Err("failed to find networking container".into()),
        _ => pod_ip,
    };
    let port = resolve_port(&get.port, container)?;
    let mut conn = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"http://{host}:{port}\": {e}"))?;
    conn.write_all(request(get, host, port).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // Any HTTP response counts (the kubelet does not look at the status code).
    let mut head = [0u8; 12];
    conn.read_exact(&mut head)
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    if !head.starts_with(b"HTTP/") {
        return Err("malformed HTTP response".into());
    }
    // Drain a little so the server does not see a reset mid-write.
    let mut rest = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut rest)).await;
    Ok(())
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
