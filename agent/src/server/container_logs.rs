//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log as the kubelet serves it
//! (server.go `getContainerLogs`, kubelet_pods.go `GetKubeletContainerLogs` and
//! `validateContainerLogStatus`): the query decoded as a v1 `PodLogOptions`, the pod and container
//! looked up by name among this node's pods, the instance chosen from the container's status
//! (`previous`: the last terminated one), its log file asked of the runtime, then streamed by
//! [`crate::logs`]. The path parameters are only ever compared with names: the file read is the one
//! the runtime reports, and only if it resolves inside the pod's own log directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use http::{StatusCode, header};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span};

use super::Server;
use super::runtime_view::{RuntimeError, RuntimeView};
use crate::logs::{Liveness, LogOptions, read_logs};

/// Chunks of output in flight between the file reader and the connection.
const CHANNEL: usize = 8;

fn plain(code: StatusCode, body: impl Into<String>) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// A `PodLogOptions` as the kubelet decodes it from the query (v1, with the `tail` alias).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodLogOptions {
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `tailLines` (or `tail`, where `all` means none).
    pub tail_lines: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<i64>,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime` (RFC 3339).
    pub since_time: Option<Timestamp>,
    /// `stream`: `All`, `Stdout` or `Stderr`.
    pub stream: Option<String>,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Percent-decodes a query component (`+` is a space); None when not UTF-8.
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A query value that does not decode (the kubelet's "Unable to decode query.").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unable to decode query")]
pub struct BadQuery;

impl PodLogOptions {
    /// Decodes the query; Err on a value that does not parse (the kubelet's 400).
    pub fn from_query(query: &str) -> Result<PodLogOptions, BadQuery> {
        let mut o = PodLogOptions::default();
        let mut seen = std::collections::HashSet::new();
        let mut tail_alias = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (unescape(k).ok_or(BadQuery)?, unescape(v).ok_or(BadQuery)?);
            // The first value of a repeated parameter is the one decoded.
            if !seen.insert(k.clone()) {
                continue;
            }
            let int = |v: &str| v.parse::<i64>().map_err(|_| BadQuery);
            let boolean = |v: &str| parse_bool(v).ok_or(BadQuery);
            match k.as_str() {
                "follow" => o.follow = boolean(&v)?,
                "previous" => o.previous = boolean(&v)?,
                "timestamps" => o.timestamps = boolean(&v)?,
                "tailLines" => o.tail_lines = Some(int(&v)?),
                "limitBytes" => o.limit_bytes = Some(int(&v)?),
                "sinceSeconds" => o.since_seconds = Some(int(&v)?),
                "sinceTime" => o.since_time = Some(v.parse().map_err(|_| BadQuery)?),
                "stream" => o.stream = Some(v),
                "tail" => tail_alias = Some(v),
                _ => {}
            }
        }
        match tail_alias.as_deref() {
            Some("all") => o.tail_lines = None,
            Some(t) if !t.is_empty() => o.tail_lines = Some(t.parse().map_err(|_| BadQuery)?),
            _ => {}
        }
        Ok(o)
    }

    /// The kubelet's `ValidatePodLogOptions`: true when valid.
    pub fn valid(&self) -> bool {
        let stream_ok = match self.stream.as_deref() {
            None => true,
            Some("All") => true,
            Some("Stdout" | "Stderr") => self.tail_lines.is_none(),
            Some(_) => false,
        };
        self.tail_lines.is_none_or(|n| n >= 0)
            && self.limit_bytes.is_none_or(|n| n >= 1)
            && !(self.since_seconds.is_some() && self.since_time.is_some())
            && self.since_seconds.is_none_or(|n| n >= 1)
            && stream_ok
    }

    /// The reader's options at `now` (`sinceSeconds` is relative to it).
    pub fn to_reader(&self, now: Timestamp) -> LogOptions {
        let since_seconds = self.since_seconds.and_then(|s| {
            now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .ok()
        });
        LogOptions {
            tail_lines: self.tail_lines.and_then(|n| u64::try_from(n).ok()),
            limit_bytes: self.limit_bytes.and_then(|n| u64::try_from(n).ok()),
            since: since_seconds.max(self.since_time),
            follow: self.follow,
            timestamps: self.timestamps,
            stdout: true,
            stderr: true,
        }
    }
}

/// The container status of `name` among the regular, init and ephemeral ones.
fn container_status<'a>(status: &'a PodStatus, name: &str) -> Option<&'a ContainerStatus> {
    [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .find(|c| c.name == name)
}

/// The ID (`<runtime>://<id>`) of the instance to read, or the kubelet's message why there is none
/// (`validateContainerLogStatus`).
pub fn instance_to_read(
    pod: &str,
    status: &PodStatus,
    container: &str,
    previous: bool,
) -> Result<String, String> {
    let Some(c) = container_status(status, container) else {
        return Err(format!(
            "container {container:?} in pod {pod:?} is not available"
        ));
    };
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref())
        .filter(|id| !id.is_empty());
    let state = c.state.as_ref();
    let terminated_msg = || format!("container {container:?} in pod {pod:?} is terminated");
    let id = if previous {
        last.ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        })?
    } else if state.is_some_and(|s| s.running.is_some()) {
        c.container_id.as_deref().unwrap_or_default()
    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        match t.container_id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => last.ok_or_else(terminated_msg)?,
        }
    } else if c
        .last_state
        .as_ref()
        .is_some_and(|s| s.terminated.is_some())
    {
        last.ok_or_else(terminated_msg)?
    } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.as_deref().unwrap_or_default();
        let why = match reason {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            other => other,
        };
        return Err(format!(
            "container {container:?} in pod {pod:?} is waiting to start: {why}"
        ));
    } else {
        return Err(format!(
            "container {container:?} in pod {pod:?} is waiting to start - no logs yet"
        ));
    };
    Ok(id.to_string())
}

/// `log_path` resolved (symlinks followed) if it lies inside `pod_dir`; the reason otherwise.
pub fn confine(log_path: &Path, pod_dir: &Path) -> Result<PathBuf, String> {
    let dir = std::fs::canonicalize(pod_dir)
        .map_err(|e| format!("failed to resolve the pod log directory {pod_dir:?}: {e}"))?;
    let file = std::fs::canonicalize(log_path)
        .map_err(|e| format!("failed to try resolving symlinks in path {log_path:?}: {e}"))?;
    if file.starts_with(&dir) && file != dir {
        Ok(file)
    } else {
        Err(format!(
            "log file {log_path:?} is outside the pod's log directory {pod_dir:?}"
        ))
    }
}

/// Asks the runtime whether the followed container still runs (an unreachable runtime counts as
/// running, as in the kubelet).
struct RuntimeLiveness {
    runtime: Arc<dyn RuntimeView>,
    id: String,
}

impl Liveness for RuntimeLiveness {
    fn running(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            match self.runtime.container(&self.id).await {
                Ok(c) => c.running,
                Err(RuntimeError::Unavailable(_)) => true,
                Err(_) => false,
            }
        })
    }
}

/// The pod `namespace/name` among this node's pods.
fn find_pod(s: &Server, namespace: &str, name: &str) -> Option<Arc<Pod>> {
    s.statuses.find(namespace, name)
}

/// True when the pod's spec has a container (regular, init or ephemeral) named `name`.
fn has_container(pod: &Pod, name: &str) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == name)
            || s.init_containers.iter().flatten().any(|c| c.name == name)
            || s.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == name)
    })
}

/// The handler.
pub async fn get(
    State(s): State<Arc<Server>>,
    UrlPath((namespace, pod_name, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(opts) = PodLogOptions::from_query(query.as_deref().unwrap_or_default()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            r#"{"message": "Unable to decode query."}"#,
        );
    };
    if !opts.valid() {
        return plain(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message": "Invalid request."}"#,
        );
    }
    let Some(pod) = find_pod(&s, &namespace, &pod_name) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist"),
        );
    };
    if !has_container(&pod, &container) {
        return plain(
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name:?}"),
        );
    }
    // PodLogsQuerySplitStreams is off by default in v1.37: one stream alone is refused.
    if let Some(stream) = opts.stream.as_deref().filter(|s| *s != "All") {
        return plain(
            StatusCode::BAD_REQUEST,
            format!(
                "unable to return the given log stream: {stream:?}. Please enable PodLogsQuerySplitStreams feature gate in kubelet"
            ),
        );
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let full_id = match instance_to_read(&pod_name, &status, &container, opts.previous) {
        Ok(id) => id,
        Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
    };
    // `containerd://<id>`: the runtime's ID is after the scheme.
    let id = full_id
        .split_once("://")
        .map_or(full_id.as_str(), |(_, id)| id)
        .to_string();
    let span = info_span!("container_logs", pod.namespace = %namespace, pod.name = %pod_name,
        pod.uid = %uid, container.name = %container, container.id = %id, follow = opts.follow);
    let pod_dir = s.pod_logs_dir.join(format!("{namespace}_{pod_name}_{uid}"));
    let reader_opts = opts.to_reader(Timestamp::now());
    let runtime = s.runtime.clone();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(CHANNEL);
    // From here on the answer is 200 and errors are written into the body, as the kubelet does
    // once it has flushed its headers.
    tokio::spawn(
        async move {
            let path = match runtime.container(&id).await {
                Ok(info) => confine(&info.log_path, &pod_dir),
                Err(e) => {
                    debug!(error = %e, "container status failed");
                    Err(format!("unable to retrieve container logs for {full_id}"))
                }
            };
            let path = match path {
                Ok(p) => p,
                Err(msg) => {
                    debug!("{msg}");
                    let _ = tx.send(msg.into_bytes()).await;
                    return;
                }
            };
            let live = RuntimeLiveness { runtime, id };
            if let Err(e) = read_logs(&path, &reader_opts, &live, tx.clone()).await {
                debug!(error = %e, "reading the log failed");
                let _ = tx.send(e.to_string().into_bytes()).await;
            }
        }
        .instrument(span),
    );
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let body = Body::from_stream(futures::StreamExt::map(
        stream,
        Ok::<_, std::convert::Infallible>,
    ));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::Authenticator;
    use crate::server::authz::Authorizer;
    use crate::server::runtime_view::{ContainerInfo, RunningPod};
    use crate::server::{Endpoints, Server};
    use std::collections::HashMap;
    use std::time::Duration;
    use tower::ServiceExt;

    #[test]
    fn query_decoded_as_the_kubelets() {
        let o = PodLogOptions::from_query(
            "follow=true&previous=1&timestamps=T&tailLines=10&limitBytes=5&sinceSeconds=3&stream=All&x=y",
        )
        .unwrap();
        assert!(o.follow && o.previous && o.timestamps);
        assert_eq!(
            (o.tail_lines, o.limit_bytes, o.since_seconds),
            (Some(10), Some(5), Some(3))
        );
        assert_eq!(o.stream.as_deref(), Some("All"));
        let t = PodLogOptions::from_query("sinceTime=2026-12-02T10%3A00%3A00Z&tail=7").unwrap();
        assert_eq!(t.since_time, "2026-12-02T10:00:00Z".parse().ok());
        assert_eq!(t.tail_lines, Some(7));
        assert_eq!(
            PodLogOptions::from_query("tailLines=3&tail=all")
                .unwrap()
                .tail_lines,
            None
        );
        assert_eq!(
            PodLogOptions::from_query("tailLines=3&tailLines=4")
                .unwrap()
                .tail_lines,
            Some(3)
        );
        for bad in [
            "follow=yes",
            "tailLines=x",
            "limitBytes=1.5",
            "sinceTime=yesterday",
            "tail=x",
            "a=%zz",
        ] {
            assert!(PodLogOptions::from_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validated_as_the_kubelets() {
        let q = |s: &str| PodLogOptions::from_query(s).unwrap().valid();
        assert!(q(""));
        assert!(q("tailLines=0&limitBytes=1&sinceSeconds=1"));
        assert!(!q("tailLines=-1"));
        assert!(!q("limitBytes=0"));
        assert!(!q("sinceSeconds=0"));
        assert!(!q("sinceSeconds=5&sinceTime=2026-12-02T10:00:00Z"));
        assert!(!q("stream=Both"));
        assert!(!q("stream=Stdout&tailLines=1"));
        assert!(q("stream=Stderr"));
    }

    fn status(c: serde_json::Value) -> PodStatus {
        serde_json::from_value(serde_json::json!({"containerStatuses": [c]})).unwrap()
    }

    #[test]
    fn the_instance_is_chosen_as_the_kubelet_does() {
        use serde_json::json;
        let running = status(
            json!({"name": "c", "image": "i", "imageID": "", "ready": true,
            "restartCount": 1, "containerID": "containerd://now",
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://before"}}}),
        );
        let waiting = |reason: &str| {
            status(json!({"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}))
        };
        type Case<'a> = (&'a str, PodStatus, &'a str, bool, Result<&'a str, &'a str>);
        let cases: Vec<Case> = vec![
            (
                "running",
                running.clone(),
                "c",
                false,
                Ok("containerd://now"),
            ),
            (
                "previous",
                running.clone(),
                "c",
                true,
                Ok("containerd://before"),
            ),
            (
                "unknown",
                running,
                "d",
                false,
                Err(r#"container "d" in pod "p" is not available"#),
            ),
            (
                "no previous",
                waiting("ContainerCreating"),
                "c",
                true,
                Err(r#"previous terminated container "c" in pod "p" not found"#),
            ),
            (
                "creating",
                waiting("ContainerCreating"),
                "c",
                false,
                Err(r#"container "c" in pod "p" is waiting to start: ContainerCreating"#),
            ),
            (
                "pull",
                waiting("ErrImagePull"),
                "c",
                false,
                Err(r#"container "c" in pod "p" is waiting to start: image can't be pulled"#),
            ),
            (
                "backoff",
                waiting("ImagePullBackOff"),
                "c",
                false,
                Err(
                    r#"container "c" in pod "p" is waiting to start: trying and failing to pull image"#,
                ),
            ),
            (
                "no state",
                status(
                    json!({"name": "c", "image": "i", "imageID": "", "ready": false,
              "restartCount": 0}),
                ),
                "c",
                false,
                Err(r#"container "c" in pod "p" is waiting to start - no logs yet"#),
            ),
            (
                "terminated",
                status(
                    json!({"name": "c", "image": "i", "imageID": "", "ready": false,
              "restartCount": 0, "state": {"terminated": {"exitCode": 0, "containerID": "containerd://t"}}}),
                ),
                "c",
                false,
                Ok("containerd://t"),
            ),
            (
                "terminated without id",
                status(json!({"name": "c", "image": "i", "imageID": "",
              "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}})),
                "c",
                false,
                Err(r#"container "c" in pod "p" is terminated"#),
            ),
        ];
        for (what, st, c, previous, want) in cases {
            let got = instance_to_read("p", &st, c, previous);
            assert_eq!(got.as_deref().map_err(String::as_str), want, "{what}");
        }
    }

    /// A runtime whose containers' log paths are given.
    struct FakeRuntime(HashMap<String, PathBuf>);

    impl RuntimeView for FakeRuntime {
        fn container(&self, id: &str) -> BoxFuture<'_, Result<ContainerInfo, RuntimeError>> {
            let r = self
                .0
                .get(id)
                .map(|p| ContainerInfo {
                    log_path: p.clone(),
                    running: false,
                })
                .ok_or_else(|| RuntimeError::Failed("not found".into()));
            Box::pin(async move { r })
        }
        fn running_pods(&self) -> BoxFuture<'_, Result<Vec<RunningPod>, RuntimeError>> {
            Box::pin(async { Ok(vec![]) })
        }
    }

    const LINE: &str = "2026-12-02T10:00:00Z stdout F ";

    /// A node with pod default/web (uid u1) whose container `main` runs as `id`, its log under
    /// `<dir>/pods`, and a secret next to the pod log directory.
    fn node(dir: &Path, log_of: impl Fn(&Path) -> PathBuf, endpoints: Endpoints) -> Arc<Server> {
        let pods = dir.join("pods");
        let pod_dir = pods.join("default_web_u1");
        std::fs::create_dir_all(pod_dir.join("main")).unwrap();
        std::fs::write(pod_dir.join("main/0.log"), format!("{LINE}mine\n")).unwrap();
        std::fs::create_dir_all(pods.join("default_other_u2/main")).unwrap();
        std::fs::write(
            pods.join("default_other_u2/main/0.log"),
            format!("{LINE}OTHERPOD\n"),
        )
        .unwrap();
        std::fs::write(dir.join("secret"), format!("{LINE}TOPSECRET\n")).unwrap();
        let statuses = crate::status::StatusStore::default();
        let pod: Arc<Pod> = serde_json::from_value::<Pod>(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }))
        .unwrap()
        .into();
        statuses.set(
            &pod,
            status(
                serde_json::json!({"name": "main", "image": "i", "imageID": "",
            "ready": true, "restartCount": 0, "containerID": "containerd://id",
            "state": {"running": {}}}),
            ),
        );
        Arc::new(Server {
            node_name: "n".into(),
            statuses,
            stats: crate::stats::StatsProvider::new(),
            health: crate::healthz::Health::started(),
            authn: Authenticator::new(None, Duration::ZERO, true),
            authz: Authorizer::new(
                crate::config::AuthorizationMode::AlwaysAllow,
                None,
                Duration::ZERO,
                Duration::ZERO,
            ),
            runtime: Arc::new(FakeRuntime(HashMap::from([(
                "id".to_string(),
                log_of(&pod_dir),
            )]))),
            streaming_runtime: None,
            stream_idle_timeout: Duration::ZERO,
            pod_logs_dir: pods,
            node_log_dir: dir.join("var-log"),
            endpoints,
            configz: serde_json::json!({}),
        })
    }

    async fn get(server: &Arc<Server>, uri: &str) -> (u16, String) {
        use http_body_util::BodyExt;
        let req = http::Request::get(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = crate::server::handlers::router(server.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_containers_log_and_kubelet_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = node(dir.path(), |d| d.join("main/0.log"), Endpoints::default());
        let cases: &[(&str, u16, &str)] = &[
            ("/containerLogs/default/web/main", 200, "mine\n"),
            (
                "/containerLogs/default/web/main?timestamps=true",
                200,
                "2026-12-02T10:00:00.000000000Z mine\n",
            ),
            (
                "/containerLogs/default/nope/main",
                404,
                r#"pod "nope" does not exist"#,
            ),
            (
                "/containerLogs/default/web/nope",
                404,
                r#"container "nope" not found in pod "web""#,
            ),
            (
                "/containerLogs/default/web/main?previous=true",
                400,
                r#"previous terminated container "main" in pod "web" not found"#,
            ),
            (
                "/containerLogs/default/web/main?tailLines=x",
                400,
                r#"{"message": "Unable to decode query."}"#,
            ),
            (
                "/containerLogs/default/web/main?limitBytes=0",
                422,
                r#"{"message": "Invalid request."}"#,
            ),
            (
                "/containerLogs/default/web/main?stream=Stdout",
                400,
                r#"unable to return the given log stream: "Stdout". Please enable PodLogsQuerySplitStreams feature gate in kubelet"#,
            ),
            ("/containerLogs/default/web", 404, "404 page not found\n"),
        ];
        for (uri, code, body) in cases {
            assert_eq!(get(&s, uri).await, (*code, body.to_string()), "{uri}");
        }
    }

    #[tokio::test]
    async fn path_parameters_are_names_never_paths() {
        let dir = tempfile::tempdir().unwrap();
        let s = node(dir.path(), |d| d.join("main/0.log"), Endpoints::default());
        let hostile = [
            "/containerLogs/default/web/..",
            "/containerLogs/default/web/%2e%2e",
            "/containerLogs/default/web/..%2f..%2fsecret",
            "/containerLogs/default/web/%2Fetc%2Fpasswd",
            "/containerLogs/default/web/main%2f..%2f..%2fdefault_other_u2%2fmain",
            "/containerLogs/default/..%2fsecret/main",
            "/containerLogs/default/%2e%2e/main",
            "/containerLogs/../../secret/main",
            "/containerLogs/%2e%2e/web/main",
            "/containerLogs/default/web%2f..%2fother/main",
            "/containerLogs/default/web/main%00",
            "/containerLogs/default/web/main/../../other/main",
        ];
        for uri in hostile {
            let (code, body) = get(&s, uri).await;
            assert!(
                code == 404 && !body.contains("TOPSECRET") && !body.contains("OTHERPOD"),
                "{uri}: {code} {body}"
            );
        }
    }

    #[tokio::test]
    async fn a_log_path_outside_the_pod_log_dir_is_never_read() {
        type LogOf = fn(&Path) -> PathBuf;
        let outside: &[(&str, LogOf)] = &[
            ("absolute path elsewhere", |d| d.join("../../secret")),
            ("another pod's log", |d| {
                d.join("../default_other_u2/main/0.log")
            }),
            ("symlink out", |d| {
                let link = d.join("main/1.log");
                std::os::unix::fs::symlink(d.join("../../secret"), &link).unwrap();
                link
            }),
            ("symlinked directory", |d| {
                std::os::unix::fs::symlink(d.join("../default_other_u2/main"), d.join("evil"))
                    .unwrap();
                d.join("evil/0.log")
            }),
            ("the directory itself", |d| d.to_path_buf()),
        ];
        for (what, log_of) in outside {
            let dir = tempfile::tempdir().unwrap();
            let s = node(dir.path(), log_of, Endpoints::default());
            let (code, body) = get(&s, "/containerLogs/default/web/main").await;
            assert_eq!(code, 200, "{what}");
            assert!(
                !body.contains("TOPSECRET")
                    && !body.contains("OTHERPOD")
                    && body.contains("outside"),
                "{what}: {body}"
            );
        }
        // A symlink that stays inside is followed.
        let dir = tempfile::tempdir().unwrap();
        let s = node(
            dir.path(),
            |d| {
                std::os::unix::fs::symlink(d.join("main/0.log"), d.join("main/link.log")).unwrap();
                d.join("main/link.log")
            },
            Endpoints::default(),
        );
        assert_eq!(
            get(&s, "/containerLogs/default/web/main").await,
            (200, "mine\n".into())
        );
    }

    #[tokio::test]
    async fn debugging_handlers_off_answer_as_the_kubelets() {
        let dir = tempfile::tempdir().unwrap();
        let off = Endpoints {
            debugging_handlers: false,
            system_log_handler: true,
        };
        let s = node(dir.path(), |d| d.join("main/0.log"), off);
        for uri in [
            "/containerLogs/default/web/main",
            "/exec/default/web/main",
            "/attach/default/web/main",
            "/portForward/default/web",
            "/run/default/web/main",
            "/runningpods/",
            "/debug/pprof/",
            "/debug/pprof/profile",
            "/logs/",
            "/logs/syslog",
        ] {
            assert_eq!(
                get(&s, uri).await,
                (405, "Debug endpoints are disabled.\n".into()),
                "{uri}"
            );
        }
        assert_eq!(get(&s, "/configz").await.0, 404);
        let on = node(dir.path(), |d| d.join("main/0.log"), Endpoints::default());
        assert_eq!(
            get(&on, "/debug/pprof/").await,
            (405, "profiling endpoint is disabled.\n".into())
        );
        assert_eq!(
            get(&on, "/configz").await,
            (200, r#"{"kubeletconfig":{}}"#.into())
        );
        assert_eq!(
            get(&on, "/runningpods/").await,
            (
                200,
                r#"{"apiVersion":"v1","items":null,"kind":"PodList","metadata":{}}"#.into()
            )
        );
        let no_logs = Endpoints {
            debugging_handlers: true,
            system_log_handler: false,
        };
        let s = node(dir.path(), |d| d.join("main/0.log"), no_logs);
        assert_eq!(
            get(&s, "/logs/").await,
            (405, "logs endpoint is disabled.\n".into())
        );
    }

    #[tokio::test]
    async fn node_logs_listed_and_served_inside_the_log_dir_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = node(dir.path(), |d| d.join("main/0.log"), Endpoints::default());
        let logs = dir.path().join("var-log");
        std::fs::create_dir_all(logs.join("apt")).unwrap();
        std::fs::write(logs.join("syslog"), "hello\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), logs.join("escape")).unwrap();
        let (code, body) = get(&s, "/logs/").await;
        assert_eq!(code, 200);
        assert!(body.contains("<a href=\"apt/\">apt/</a>\n<a href=\"escape\">escape</a>\n<a href=\"syslog\">syslog</a>"), "{body}");
        assert_eq!(get(&s, "/logs/syslog").await, (200, "hello\n".into()));
        assert_eq!(get(&s, "/logs/apt").await.0, 301);
        for uri in [
            "/logs/escape",
            "/logs/../secret",
            "/logs/%2e%2e/secret",
            "/logs/..%2fsecret",
            "/logs/nope",
        ] {
            let (code, body) = get(&s, uri).await;
            assert!(
                code == 404 && !body.contains("TOPSECRET"),
                "{uri}: {code} {body}"
            );
        }
    }
}
