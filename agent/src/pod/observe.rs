//! What the runtime holds for one pod, read for the plan: its newest sandbox, every sandbox's
//! readiness, and its containers with their state and termination message.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use bosun_cri::CriClient;
use bosun_cri::types::{ContainerFilter, ContainerState, PodSandboxFilter, PodSandboxState};

use super::plan::{ContainerView, RunState, SandboxView};
use crate::runtime::labels;

/// What the runtime holds for this pod, ready for the plan.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The newest sandbox.
    pub sandbox: Option<SandboxView>,
    /// Every sandbox of the pod with its readiness.
    pub sandbox_ids: Vec<(String, bool)>,
    /// Every container of the pod, newest first.
    pub containers: Vec<ContainerView>,
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
    cri: &CriClient,
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
    let ready = |s: &bosun_cri::types::PodSandbox| s.state == PodSandboxState::SandboxReady as i32;
    let sandbox = sandboxes.first().map(|s| SandboxView {
        id: s.id.clone(),
        ready: ready(s),
        attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
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
        sandbox_ids: sandboxes.iter().map(|s| (s.id.clone(), ready(s))).collect(),
        containers: views,
    })
}

/// One container as the plan sees it, from its labels and ContainerStatus.
async fn container_view(
    cri: &CriClient,
    c: &bosun_cri::types::Container,
    pod_dir: &Path,
) -> bosun_cri::Result<ContainerView> {
    let name = c
        .labels
        .get(labels::CONTAINER_NAME)
        .cloned()
        .unwrap_or_default();
    let restart_count = c
        .annotations
        .get(labels::RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let st = cri
        .container_status(&c.id, false)
        .await?
        .status
        .unwrap_or_default();
    let state = match ContainerState::try_from(st.state) {
        Ok(ContainerState::ContainerCreated) => RunState::Created,
        Ok(ContainerState::ContainerRunning) => RunState::Running,
        Ok(ContainerState::ContainerExited) => RunState::Exited,
        _ => RunState::Unknown,
    };
    let mut message = st.message.clone();
    if state == RunState::Exited && message.is_empty() {
        message = read_termination_message(&termination_log(pod_dir, &name, restart_count));
    }
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
        created_at: c.created_at,
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

/// The first 4096 bytes of a termination log, empty when there is none.
fn read_termination_message(path: &Path) -> String {
    let mut text = std::fs::read(path).unwrap_or_default();
    text.truncate(4096);
    String::from_utf8_lossy(&text).into_owned()
}
