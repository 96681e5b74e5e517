//! What the runtime holds for one pod, read for the plan: its newest sandbox, every sandbox's
//! readiness, and its containers with their state and termination message.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bosun_cri::types::{ContainerFilter, PodSandboxFilter};

use super::runtime::PodObserver;
use crate::runtime::{
    ContainerView, ObservedContainer, ObservedPod, ObservedSandbox, RunState, SandboxView, labels,
};

/// What the runtime holds for this pod, ready for the plan.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The newest sandbox.
    pub sandbox: Option<SandboxView>,
    /// Every sandbox of the pod with its readiness.
    pub sandbox_ids: Vec<(String, bool)>,
    /// Every container of the pod, newest first.
    pub containers: Vec<ContainerView>,
    /// The pod cache's fingerprint of what was listed (see [`super::cache::fingerprint`]).
    pub fingerprint: String,
}

impl Observed {
    /// True when a sandbox is ready or a container running: there is something to stop.
    pub fn anything_running(&self) -> bool {
        self.sandbox_ids.iter().any(|(_, ready)| *ready)
            || self.containers.iter().any(|c| c.state == RunState::Running)
    }
}

/// The file a container's terminationMessagePath is mounted from:
/// `<pod dir>/containers/<name>/<restart count>`.
pub fn termination_log(pod_dir: &Path, name: &str, restart_count: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(name)
        .join(restart_count.to_string())
}

/// Lists the sandboxes and containers labelled with `uid`; containers in `exited` are taken as
/// remembered (an exited container no longer changes) instead of asking their status again.
pub async fn observe(
    cri: &impl PodObserver,
    uid: &str,
    pod_dir: &Path,
    exited: &HashMap<String, ContainerView>,
) -> bosun_cri::Result<Observed> {
    let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
    let (mut sandboxes, containers) = tokio::try_join!(
        cri.list_pod_sandbox(Some(PodSandboxFilter {
            label_selector: selector.clone(),
            ..Default::default()
        })),
        cri.list_containers(Some(ContainerFilter {
            label_selector: selector,
            ..Default::default()
        })),
    )?;
    sandboxes.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let sandboxes: Vec<ObservedSandbox> = sandboxes.iter().map(ObservedSandbox::of).collect();
    let fingerprint = super::cache::fingerprint(&ObservedPod {
        sandboxes: sandboxes.clone(),
        containers: containers.iter().map(ObservedContainer::of).collect(),
        ..Default::default()
    });
    let sandbox = sandboxes.first().map(|s| SandboxView {
        id: s.id.clone(),
        ready: s.ready,
        attempt: s.attempt,
    });
    let mut views = Vec::new();
    for c in containers {
        if let Some(v) = exited.get(&c.id) {
            views.push(v.clone());
            continue;
        }
        match container_view(cri, &c, pod_dir).await {
            Ok(v) => views.push(v),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    views.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    Ok(Observed {
        sandbox,
        sandbox_ids: sandboxes.iter().map(|s| (s.id.clone(), s.ready)).collect(),
        containers: views,
        fingerprint,
    })
}

/// One container as the plan sees it, from its labels and ContainerStatus.
async fn container_view(
    cri: &impl PodObserver,
    c: &bosun_cri::types::Container,
    pod_dir: &Path,
) -> bosun_cri::Result<ContainerView> {
    let ObservedContainer {
        name,
        restart_count,
        ..
    } = ObservedContainer::of(c);
    let st = cri.container_status(&c.id).await?;
    let state = RunState::of(st.state);
    let mut message = st.message.clone();
    if state == RunState::Exited {
        // As the kubelet's convertToKubeContainerStatus: the termination log (or, with
        // FallbackToLogsOnError after a failure, the log's tail) after the runtime's message.
        let fallback = c
            .annotations
            .get(labels::TERMINATION_MESSAGE_POLICY)
            .is_some_and(|p| p == "FallbackToLogsOnError")
            && st.exit_code != 0
            && st.reason != "ContainerCannotRun";
        let mut text = read_termination_message(&termination_log(pod_dir, &name, restart_count));
        if fallback && text.is_empty() {
            text = last_log_lines(Path::new(&st.log_path)).await;
        }
        if !text.is_empty() {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    let spec_hash = crate::runtime::hash::hash_of_instance(&name, &c.annotations);
    Ok(ContainerView {
        id: c.id.clone(),
        name,
        sandbox_id: c.pod_sandbox_id.clone(),
        state,
        restart_count,
        exit_code: st.exit_code,
        started_at: st.started_at,
        finished_at: st.finished_at,
        reason: st.reason.clone(),
        message,
        image_ref: st.image_ref.clone(),
        image: st
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        created_at: c.created_at,
        spec_hash,
    })
}

/// Keeps the exited containers of `obs` in `exited` and forgets those the runtime no longer has.
pub fn remember_exited(exited: &mut HashMap<String, ContainerView>, obs: &Observed) {
    for c in obs
        .containers
        .iter()
        .filter(|c| c.state == RunState::Exited)
    {
        exited.entry(c.id.clone()).or_insert_with(|| c.clone());
    }
    let live: HashSet<&str> = obs.containers.iter().map(|c| c.id.as_str()).collect();
    exited.retain(|id, _| live.contains(id.as_str()));
}

/// Lines and bytes of a failed container's log that stand in for an empty termination message
/// (the kubelet's MaxContainerTerminationMessageLogLines and ...LogLength).
const FALLBACK_LINES: u64 = 80;
const FALLBACK_BYTES: usize = 2048;

/// The last [`FALLBACK_LINES`] lines of a stopped container's CRI log, at most the last
/// [`FALLBACK_BYTES`] bytes of them; the kubelet's text when the log cannot be read.
async fn last_log_lines(path: &Path) -> String {
    use crate::logs::{LogOptions, read_logs};
    struct Stopped;
    impl crate::logs::Liveness for Stopped {
        fn running(&self) -> futures::future::BoxFuture<'_, bool> {
            Box::pin(async { false })
        }
    }
    let opts = LogOptions {
        tail_lines: Some(FALLBACK_LINES),
        ..LogOptions::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let read = read_logs(path, &opts, &Stopped, tx);
    let collect = async {
        let mut out: Vec<u8> = Vec::new();
        while let Some(chunk) = rx.recv().await {
            out.extend_from_slice(&chunk);
            if out.len() > FALLBACK_BYTES {
                out.drain(..out.len() - FALLBACK_BYTES);
            }
        }
        out
    };
    let (r, out) = tokio::join!(read, collect);
    match r {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("Error on reading termination message from logs: {e}"),
    }
}

/// The first 4096 bytes of a termination log, empty when there is none.
fn read_termination_message(path: &Path) -> String {
    let mut text = std::fs::read(path).unwrap_or_default();
    text.truncate(4096);
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bosun_cri::types::{
        Container, ContainerState, ContainerStatus, PodSandbox, PodSandboxMetadata, PodSandboxState,
    };
    use bosun_cri::{Code, CriError};

    use super::*;

    /// A runtime answering from a script: its sandboxes and containers, each container's status
    /// (none: NotFound, as a container removed between the list and the status), a failing
    /// status; it records the statuses asked.
    #[derive(Default)]
    struct Scripted {
        sandboxes: Vec<PodSandbox>,
        containers: Vec<Container>,
        statuses: HashMap<String, ContainerStatus>,
        failing: Option<String>,
        asked: Mutex<Vec<String>>,
    }

    fn status_error(code: Code) -> CriError {
        CriError::Status {
            op: "ContainerStatus",
            code,
            message: "scripted".into(),
        }
    }

    impl PodObserver for Scripted {
        async fn list_pod_sandbox(
            &self,
            f: Option<PodSandboxFilter>,
        ) -> bosun_cri::Result<Vec<PodSandbox>> {
            assert_eq!(f.unwrap().label_selector[labels::POD_UID], "uid-1");
            Ok(self.sandboxes.clone())
        }

        async fn list_containers(
            &self,
            f: Option<ContainerFilter>,
        ) -> bosun_cri::Result<Vec<Container>> {
            assert_eq!(f.unwrap().label_selector[labels::POD_UID], "uid-1");
            Ok(self.containers.clone())
        }

        async fn container_status(&self, id: &str) -> bosun_cri::Result<ContainerStatus> {
            self.asked.lock().unwrap().push(id.to_string());
            if self.failing.as_deref() == Some(id) {
                return Err(status_error(Code::Unavailable));
            }
            self.statuses
                .get(id)
                .cloned()
                .ok_or_else(|| status_error(Code::NotFound))
        }
    }

    fn sandbox(id: &str, created_at: i64, ready: bool, attempt: u32) -> PodSandbox {
        PodSandbox {
            id: id.into(),
            created_at,
            state: if ready {
                PodSandboxState::SandboxReady
            } else {
                PodSandboxState::SandboxNotready
            } as i32,
            metadata: Some(PodSandboxMetadata {
                attempt,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(id: &str, name: &str, restarts: u32, created_at: i64) -> Container {
        Container {
            id: id.into(),
            pod_sandbox_id: "sb-2".into(),
            created_at,
            labels: HashMap::from([(labels::CONTAINER_NAME.to_string(), name.to_string())]),
            annotations: HashMap::from([(labels::RESTART_COUNT.to_string(), restarts.to_string())]),
            ..Default::default()
        }
    }

    fn status(state: ContainerState, exit_code: i32, message: &str) -> ContainerStatus {
        ContainerStatus {
            state: state as i32,
            exit_code,
            message: message.into(),
            ..Default::default()
        }
    }

    fn script() -> Scripted {
        Scripted {
            sandboxes: vec![sandbox("sb-1", 10, false, 0), sandbox("sb-2", 20, true, 1)],
            containers: vec![
                container("c-old", "app", 0, 100),
                container("c-new", "app", 1, 200),
                container("c-gone", "side", 0, 150),
                container("c-made", "init", 0, 50),
            ],
            statuses: HashMap::from([
                (
                    "c-old".into(),
                    status(ContainerState::ContainerExited, 1, ""),
                ),
                (
                    "c-new".into(),
                    status(ContainerState::ContainerRunning, 0, ""),
                ),
                (
                    "c-made".into(),
                    status(ContainerState::ContainerCreated, 0, ""),
                ),
            ]),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_newest_sandbox_and_every_container_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = termination_log(dir.path(), "app", 0);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "x".repeat(5000)).unwrap();
        let rt = script();
        let obs = observe(&rt, "uid-1", dir.path(), &HashMap::new())
            .await
            .unwrap();

        let sb = obs.sandbox.as_ref().unwrap();
        assert_eq!((sb.id.as_str(), sb.ready, sb.attempt), ("sb-2", true, 1));
        assert_eq!(
            obs.sandbox_ids,
            vec![("sb-2".into(), true), ("sb-1".into(), false)]
        );
        let got: Vec<(&str, RunState, u32)> = obs
            .containers
            .iter()
            .map(|c| (c.id.as_str(), c.state, c.restart_count))
            .collect();
        // c-gone was removed between the list and its status: left out, not an error.
        let want = [
            ("c-new", RunState::Running, 1),
            ("c-old", RunState::Exited, 0),
            ("c-made", RunState::Created, 0),
        ];
        assert_eq!(got, want);
        // An exited container without a runtime message: its termination log, 4096 bytes at most.
        assert_eq!(obs.containers[1].message.len(), 4096);
        assert_eq!(obs.containers[0].message, "");
        assert!(obs.anything_running());
    }

    #[tokio::test]
    async fn an_exited_container_is_remembered_not_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let rt = script();
        let mut exited = HashMap::new();
        let first = observe(&rt, "uid-1", dir.path(), &exited).await.unwrap();
        remember_exited(&mut exited, &first);
        assert_eq!(exited.keys().collect::<Vec<_>>(), ["c-old"]);
        rt.asked.lock().unwrap().clear();
        let second = observe(&rt, "uid-1", dir.path(), &exited).await.unwrap();
        assert_eq!(*rt.asked.lock().unwrap(), ["c-new", "c-gone", "c-made"]);
        assert_eq!(second.containers.len(), 3);
        // Once the runtime no longer lists it, it is forgotten.
        let none = Observed::default();
        remember_exited(&mut exited, &none);
        assert!(exited.is_empty());
    }

    #[tokio::test]
    async fn a_status_error_other_than_not_found_fails_the_observation() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Scripted {
            failing: Some("c-new".into()),
            ..script()
        };
        let e = observe(&rt, "uid-1", dir.path(), &HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn nothing_in_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Scripted::default();
        let obs = observe(&rt, "uid-1", dir.path(), &HashMap::new())
            .await
            .unwrap();
        assert!(obs.sandbox.is_none() && obs.containers.is_empty() && !obs.anything_running());
    }
}
