//! `/exec`, `/attach`, `/portForward` and `/run`, as the kubelet serves them: find the pod by
//! namespace and name (and UID when the path names one), its running container or ready sandbox
//! in the runtime, ask CRI for a streaming URL and proxy the upgraded connection to it
//! ([`super::stream_proxy`]); `/run` runs a command with CRI ExecSync and answers its output.
//! Error codes and texts are the kubelet's (`pod does not exist` 404, `container not found`
//! 500, CRI NotFound 404 and ResourceExhausted 429).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bosun_cri::types::{
    AttachRequest, ContainerFilter, ContainerState, ContainerStateValue, ExecRequest,
    PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
};
use bosun_cri::{Code, CriClient, CriError};
use http::{Request, StatusCode, header};
use k8s_openapi::api::core::v1::Pod;
use tracing::{Instrument, info_span};

use super::{Server, stream_proxy};
use crate::runtime::labels;

/// What an exec or attach asks for (the kubelet's remotecommand options).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamOptions {
    /// Attach the client's stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr (never with a TTY).
    pub stderr: bool,
    /// Allocate a TTY.
    pub tty: bool,
}

/// The query parameters of a request as (name, value) pairs, percent-decoded.
fn query_pairs(req: &Request<Body>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The first value of query parameter `name`.
fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Parses the stream options as the kubelet (`remotecommand.NewOptions`): `input`, `output`,
/// `error` and `tty` are on when "1"; a TTY drops stderr; at least one stream is required.
pub fn stream_options(pairs: &[(String, String)]) -> Result<StreamOptions, String> {
    let on = |name: &str| first(pairs, name) == Some("1");
    let tty = on("tty");
    let opts = StreamOptions {
        stdin: on("input"),
        stdout: on("output"),
        stderr: on("error") && !tty,
        tty,
    };
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok(opts)
}

/// The ports of a WebSocket port-forward request (`port` parameters, comma-separated lists
/// allowed), as the kubelet's `portforward.NewV4Options`.
pub fn forward_ports(pairs: &[(String, String)]) -> Result<Vec<i32>, String> {
    let given: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "port")
        .map(|(_, v)| v.as_str())
        .collect();
    if given.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for s in given {
        if s.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in s.split(',') {
            let port: u16 = p.parse().map_err(|e| {
                format!("unable to parse {s:?} as a port: strconv.ParseUint: parsing {p:?}: {e}")
            })?;
            if port < 1 {
                return Err(format!("port {s:?} must be > 0"));
            }
            ports.push(i32::from(port));
        }
    }
    Ok(ports)
}

/// True when the request asks for a WebSocket upgrade.
fn is_websocket(req: &Request<Body>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// A pod path: namespace, name, the UID if the path names one, and the container if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPath {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID, when the path carries it.
    pub uid: Option<String>,
    /// The container's name (empty for port-forward).
    pub container: String,
}

impl PodPath {
    /// `{ns}/{pod}/{container}` or `{ns}/{pod}/{uid}/{container}`.
    pub fn with_container(rest: &str) -> Option<PodPath> {
        let parts: Vec<&str> = rest.split('/').collect();
        let (ns, name, uid, container) = match parts.as_slice() {
            [ns, name, c] => (ns, name, None, c),
            [ns, name, uid, c] => (ns, name, Some(uid.to_string()), c),
            _ => return None,
        };
        Some(PodPath {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid,
            container: container.to_string(),
        })
        .filter(|p| !p.namespace.is_empty() && !p.name.is_empty() && !p.container.is_empty())
    }

    /// `{ns}/{pod}` or `{ns}/{pod}/{uid}`.
    pub fn pod_only(rest: &str) -> Option<PodPath> {
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let (ns, name, uid) = match parts.as_slice() {
            [ns, name] => (ns, name, None),
            [ns, name, uid] => (ns, name, Some(uid.to_string())),
            _ => return None,
        };
        Some(PodPath {
            namespace: ns.to_string(),
            name: name.to_string(),
            uid,
            container: String::new(),
        })
        .filter(|p| !p.namespace.is_empty() && !p.name.is_empty())
    }

    /// The kubelet's pod full name, `name_namespace`.
    fn full_name(&self) -> String {
        format!("{}_{}", self.name, self.namespace)
    }
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A refused request: its status code and text (429 answers carry Retry-After, as the
/// kubelet's).
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut r = text(self.0, self.1);
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("60"));
        }
        r
    }
}

/// A CRI error as the kubelet's `streaming.WriteError`: NotFound 404, ResourceExhausted 429,
/// anything else 500; the error's text as the body.
fn cri_error(e: &CriError) -> Refused {
    let code = match e.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Refused(code, e.to_string())
}

/// The pod this node runs with that namespace and name.
fn find_pod(s: &Server, ns: &str, name: &str) -> Option<Arc<Pod>> {
    s.statuses.find(ns, name)
}

/// The UID of a pod, empty when it has none.
fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The running container named `name` of the pod with UID `uid`, as the runtime lists it.
async fn running_container(
    cri: &CriClient,
    uid: &str,
    name: &str,
) -> Result<Option<String>, CriError> {
    let containers = cri
        .list_containers(Some(ContainerFilter {
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            label_selector: HashMap::from([
                (labels::POD_UID.to_string(), uid.to_string()),
                (labels::CONTAINER_NAME.to_string(), name.to_string()),
            ]),
            ..Default::default()
        }))
        .await?;
    Ok(containers
        .into_iter()
        .max_by_key(|c| c.created_at)
        .map(|c| c.id))
}

/// The ready sandbox of the pod with UID `uid`.
async fn ready_sandbox(cri: &CriClient, uid: &str) -> Result<Option<String>, CriError> {
    let sandboxes = cri
        .list_pod_sandbox(Some(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady as i32,
            }),
            label_selector: HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        }))
        .await?;
    Ok(sandboxes
        .into_iter()
        .max_by_key(|s| s.created_at)
        .map(|s| s.id))
}

/// The runtime, or the answer for a server without one.
fn runtime(s: &Server) -> Result<&CriClient, Refused> {
    s.streaming_runtime.as_ref().ok_or_else(|| {
        Refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            "streaming is not available: no container runtime".into(),
        )
    })
}

/// Resolves the pod and its running container for exec, attach and run; the error answers are
/// the kubelet's (`not_running` is the message for a container that is not running).
async fn pod_and_container(
    s: &Server,
    path: &PodPath,
    not_running: String,
) -> Result<(Arc<Pod>, String), Refused> {
    let cri = runtime(s)?;
    let Some(pod) = find_pod(s, &path.namespace, &path.name) else {
        return Err(Refused(StatusCode::NOT_FOUND, "pod does not exist".into()));
    };
    if path.uid.as_deref().is_some_and(|u| u != uid_of(&pod)) {
        return Err(Refused(StatusCode::INTERNAL_SERVER_ERROR, not_running));
    }
    match running_container(cri, uid_of(&pod), &path.container).await {
        Ok(Some(id)) => Ok((pod, id)),
        Ok(None) => Err(Refused(StatusCode::INTERNAL_SERVER_ERROR, not_running)),
        Err(e) => Err(cri_error(&e)),
    }
}

/// Whether the pod's spec gives container `name` a TTY (attach must match it).
fn spec_tty(pod: &Pod, name: &str) -> Option<bool> {
    let spec = pod.spec.as_ref()?;
    let plain = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
        .map(|c| c.tty.unwrap_or(false));
    plain.or_else(|| {
        spec.ephemeral_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
            .map(|c| c.tty.unwrap_or(false))
    })
}

fn span(path: &PodPath, pod: &Pod, what: &'static str) -> tracing::Span {
    info_span!("stream", what, pod.namespace = %path.namespace, pod.name = %path.name,
        pod.uid = %uid_of(pod), container = %path.container)
}

/// `/exec/{namespace}/{pod}[/{uid}]/{container}?command=...&input=1&output=1&error=1&tty=1`.
pub async fn exec(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
    req: Request<Body>,
) -> Response {
    let Some(path) = PodPath::with_container(&rest) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let pairs = query_pairs(&req);
    let opts = match stream_options(&pairs) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let cmd: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let not_found = format!("container not found ({:?})", path.container);
    let (pod, id) = match pod_and_container(&s, &path, not_found).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let Ok(cri) = runtime(&s) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "no container runtime");
    };
    let span = span(&path, &pod, "exec");
    let url = cri
        .exec(ExecRequest {
            container_id: id,
            cmd,
            tty: opts.tty,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .instrument(span.clone())
        .await;
    match url {
        Ok(url) => {
            stream_proxy::proxy(req, &url, s.stream_idle_timeout)
                .instrument(span)
                .await
        }
        Err(e) => cri_error(&e).into_response(),
    }
}

/// `/attach/{namespace}/{pod}[/{uid}]/{container}?input=1&output=1&error=1`; the TTY
/// follows the container's spec, as the kubelet's.
pub async fn attach(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
    req: Request<Body>,
) -> Response {
    let Some(path) = PodPath::with_container(&rest) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let opts = match stream_options(&query_pairs(&req)) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let not_found = format!(
        "container {} not found in pod {}",
        path.container,
        path.full_name()
    );
    let (pod, id) = match pod_and_container(&s, &path, not_found.clone()).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let Some(tty) = spec_tty(&pod, &path.container) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, not_found);
    };
    let Ok(cri) = runtime(&s) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "no container runtime");
    };
    let span = span(&path, &pod, "attach");
    let url = cri
        .attach(AttachRequest {
            container_id: id,
            stdin: opts.stdin,
            tty,
            stdout: opts.stdout,
            stderr: opts.stderr,
        })
        .instrument(span.clone())
        .await;
    match url {
        Ok(url) => {
            stream_proxy::proxy(req, &url, s.stream_idle_timeout)
                .instrument(span)
                .await
        }
        Err(e) => cri_error(&e).into_response(),
    }
}

/// `/portForward/{namespace}/{pod}[/{uid}]` (the ports travel in the SPDY streams' headers, or
/// as `port` parameters of a WebSocket request).
pub async fn port_forward(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
    req: Request<Body>,
) -> Response {
    let Some(path) = PodPath::pod_only(&rest) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let ports = if is_websocket(&req) {
        match forward_ports(&query_pairs(&req)) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        }
    } else {
        Vec::new()
    };
    let cri = match runtime(&s) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(pod) = find_pod(&s, &path.namespace, &path.name) else {
        return text(StatusCode::NOT_FOUND, "pod does not exist");
    };
    if path.uid.as_deref().is_some_and(|u| u != uid_of(&pod)) {
        return text(StatusCode::NOT_FOUND, "pod not found");
    }
    let span = span(&path, &pod, "portforward");
    let sandbox = match ready_sandbox(cri, uid_of(&pod)).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("pod not found ({:?})", path.full_name()),
            );
        }
        Err(e) => return cri_error(&e).into_response(),
    };
    match cri
        .port_forward(&sandbox, ports)
        .instrument(span.clone())
        .await
    {
        Ok(url) => {
            stream_proxy::proxy(req, &url, s.stream_idle_timeout)
                .instrument(span)
                .await
        }
        Err(e) => cri_error(&e).into_response(),
    }
}

/// `POST /run/{namespace}/{pod}[/{uid}]/{container}?cmd=...`: runs `cmd` (split on spaces, as
/// the kubelet) with CRI ExecSync; answers stdout then stderr, or 500 when it exits non-zero.
pub async fn run(
    State(s): State<Arc<Server>>,
    Path(rest): Path<String>,
    req: Request<Body>,
) -> Response {
    let Some(path) = PodPath::with_container(&rest) else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let pairs = query_pairs(&req);
    let cmd: Vec<String> = first(&pairs, "cmd")
        .unwrap_or_default()
        .split(' ')
        .map(str::to_string)
        .collect();
    let not_found = format!("container not found ({:?})", path.container);
    let (pod, id) = match pod_and_container(&s, &path, not_found).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let Ok(cri) = runtime(&s) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "no container runtime");
    };
    let out = cri
        .exec_sync(&id, cmd.clone(), std::time::Duration::ZERO)
        .instrument(span(&path, &pod, "run"))
        .await;
    match out {
        Ok(o) if o.exit_code == 0 => {
            let mut body = o.stdout;
            body.extend_from_slice(&o.stderr);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        Ok(o) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "command '{}' exited with {}: {}",
                cmd.join(" "),
                o.exit_code,
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn stream_options_as_the_kubelet_parses_them() {
        assert_eq!(
            stream_options(&pairs("output=1&error=1")),
            Ok(StreamOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            })
        );
        // A TTY drops stderr.
        assert_eq!(
            stream_options(&pairs("input=1&output=1&error=1&tty=1")),
            Ok(StreamOptions {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            })
        );
        // Only "1" is on.
        assert_eq!(
            stream_options(&pairs("output=true&stdout=1&tty=1")),
            Err("you must specify at least 1 of stdin, stdout, stderr".into())
        );
    }

    #[test]
    fn forward_ports_parse_lists_and_refuse_bad_ones() {
        assert_eq!(
            forward_ports(&pairs("port=80&port=8080,9090")),
            Ok(vec![80, 8080, 9090])
        );
        assert_eq!(
            forward_ports(&pairs("x=1")),
            Err("query parameter \"port\" is required".into())
        );
        assert_eq!(
            forward_ports(&pairs("port=")),
            Err("query parameter \"port\" cannot be empty".into())
        );
        assert_eq!(
            forward_ports(&pairs("port=0")),
            Err("port \"0\" must be > 0".into())
        );
        assert!(
            forward_ports(&pairs("port=70000"))
                .unwrap_err()
                .contains("unable to parse")
        );
    }

    #[test]
    fn pod_paths_with_and_without_uid() {
        assert_eq!(
            PodPath::with_container("ns/p/c"),
            Some(PodPath {
                namespace: "ns".into(),
                name: "p".into(),
                uid: None,
                container: "c".into()
            })
        );
        assert_eq!(
            PodPath::with_container("ns/p/u1/c").and_then(|p| p.uid),
            Some("u1".into())
        );
        assert_eq!(PodPath::with_container("ns/p"), None);
        assert_eq!(PodPath::with_container("ns//c"), None);
        assert_eq!(PodPath::with_container("a/b/c/d/e"), None);
        assert_eq!(
            PodPath::pod_only("ns/p").map(|p| p.full_name()),
            Some("p_ns".into())
        );
        assert_eq!(
            PodPath::pod_only("ns/p/u").and_then(|p| p.uid),
            Some("u".into())
        );
        assert_eq!(PodPath::pod_only("ns"), None);
    }
}
