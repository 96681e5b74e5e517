//! The kubelet's container garbage collector (`kuberuntime_gc.go` `GarbageCollect`): removes the
//! dead containers the policy selects (with their log files and `/var/log/containers` symlinks),
//! the dead sandboxes, the log directories of pods that are gone and dangling log symlinks.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bosun_cri::types::{ContainerState, PodSandboxState};
use bosun_cri::{CriClient, CriError};
use tracing::{Instrument, debug, info, info_span, warn};

use super::container_policy::{
    ContainerInfo, PodState, Removal, SandboxInfo, containers_to_remove, pod_removable,
    sandboxes_to_remove,
};
use crate::config::ContainerGcPolicy;
use crate::pod::manager::KnownPods;
use crate::runtime::labels;
use crate::status::StatusStore;

/// How long an unknown-state container gets to stop before its removal.
const UNKNOWN_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// The container garbage collector of one node.
pub struct ContainerGc {
    /// The runtime.
    pub cri: CriClient,
    /// The policy (the kubelet's deprecated GC flags).
    pub policy: ContainerGcPolicy,
    /// Which pods still have a worker.
    pub known: KnownPods,
    /// The pods' last statuses: an evicted or terminated pod's content may go too.
    pub statuses: StatusStore,
    /// `podLogsDir` (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// The `/var/log/containers` symlink directory.
    pub container_logs_link_dir: PathBuf,
}

/// One collection's failures, as the kubelet aggregates them.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join(", "))]
pub struct GcError(pub Vec<String>);

impl ContainerGc {
    /// One collection: dead containers, then sandboxes, then pod log directories and dangling
    /// symlinks; every step runs even when an earlier one failed. With `evict_non_deleted` (the
    /// eviction manager's DeleteAllUnusedContainers) the containers and sandboxes of terminated
    /// pods go as well, the newest dead ones included.
    pub async fn collect(&self, evict_non_deleted: bool) -> Result<(), GcError> {
        let mut errors = Vec::new();
        let sources_ready = self.known.all_sources_ready();
        if let Err(e) = self
            .evict_containers(sources_ready, evict_non_deleted)
            .await
        {
            errors.push(e.to_string());
        }
        if let Err(e) = self.evict_sandboxes(evict_non_deleted).await {
            errors.push(e.to_string());
        }
        if let Err(e) = self.evict_pod_log_dirs(sources_ready).await {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(GcError(errors))
        }
    }

    async fn list(&self) -> bosun_cri::Result<(Vec<ContainerInfo>, Vec<SandboxInfo>)> {
        let (containers, sandboxes) = tokio::try_join!(
            self.cri.list_containers(None),
            self.cri.list_pod_sandbox(None)
        )?;
        let containers = containers
            .into_iter()
            .filter_map(|c| {
                let uid = c.labels.get(labels::POD_UID)?.clone();
                let state = ContainerState::try_from(c.state).ok();
                Some(ContainerInfo {
                    name: c
                        .labels
                        .get(labels::CONTAINER_NAME)
                        .cloned()
                        .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                        .unwrap_or_default(),
                    pod_uid: uid,
                    sandbox_id: c.pod_sandbox_id,
                    created_at: c.created_at,
                    running: state == Some(ContainerState::ContainerRunning),
                    unknown: state == Some(ContainerState::ContainerUnknown) || state.is_none(),
                    id: c.id,
                })
            })
            .collect();
        let sandboxes = sandboxes
            .into_iter()
            .filter_map(|s| {
                let uid = s
                    .metadata
                    .as_ref()
                    .map(|m| m.uid.clone())
                    .filter(|u| !u.is_empty())
                    .or_else(|| s.labels.get(labels::POD_UID).cloned())?;
                Some(SandboxInfo {
                    pod_uid: uid,
                    created_at: s.created_at,
                    ready: s.state == PodSandboxState::SandboxReady as i32,
                    id: s.id,
                })
            })
            .collect();
        Ok((containers, sandboxes))
    }

    /// Whether everything of pod `uid` may go ([`pod_removable`]).
    fn removable(&self, uid: &str, evict_non_deleted: bool) -> bool {
        let status = self.statuses.get(uid);
        let status = status.as_ref();
        let state = PodState {
            has_worker: self
                .known
                .all_sources_ready()
                .then(|| !self.known.content_removable(uid)),
            phase: status.and_then(|s| s.phase.as_deref()),
            reason: status.and_then(|s| s.reason.as_deref()),
        };
        pod_removable(&state, evict_non_deleted)
    }

    async fn evict_containers(
        &self,
        sources_ready: bool,
        evict_non_deleted: bool,
    ) -> bosun_cri::Result<()> {
        let (containers, _) = self.list().await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let removals = containers_to_remove(
            &containers,
            &self.policy,
            now,
            |uid| self.removable(uid, evict_non_deleted),
            sources_ready,
        );
        for r in removals {
            let span = info_span!("gc", pod.uid = %r.pod_uid, container.name = %r.name, container.id = %r.id);
            self.remove_container(&r).instrument(span).await;
        }
        Ok(())
    }

    /// Removes one dead container, its log files and its symlink (the kubelet's
    /// `removeContainer`); failures are logged and the next container is tried.
    async fn remove_container(&self, r: &Removal) {
        if r.unknown
            && let Err(e) = self.cri.stop_container(&r.id, UNKNOWN_STOP_TIMEOUT).await
            && !e.is_not_found()
        {
            warn!(error = %e, "Failed to stop container");
            return;
        }
        if let Err(e) = self.remove_container_logs(&r.id).await {
            warn!(error = %e, "Failed to remove container");
            return;
        }
        match self.cri.remove_container(&r.id).await {
            Ok(()) => info!("removed dead container"),
            Err(e) if e.is_not_found() => {}
            Err(e) => warn!(error = %e, "Failed to remove container"),
        }
    }

    /// The kubelet's `removeContainerLog`: every file whose name starts with the container's log
    /// path (the live file and its rotations), then its `/var/log/containers` symlink.
    async fn remove_container_logs(&self, id: &str) -> Result<(), String> {
        let st = match self.cri.container_status(id, false).await {
            Ok(r) => r.status,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(format!("failed to get container status {id:?}: {e}")),
        };
        let Some(st) = st else {
            return Err(format!("container status is nil for {id:?}"));
        };
        if !st.log_path.is_empty() {
            for f in with_prefix(Path::new(&st.log_path)) {
                if let Err(e) = std::fs::remove_file(&f)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(format!(
                        "failed to remove container {id:?} log {:?}: {e}",
                        f.display()
                    ));
                }
            }
        }
        let label = |k: &str| st.labels.get(k).map(String::as_str).unwrap_or_default();
        let link = self.container_logs_link_dir.join(log_symlink_name(
            label(labels::POD_NAME),
            label(labels::POD_NAMESPACE),
            label(labels::CONTAINER_NAME),
            id,
        ));
        match std::fs::remove_file(&link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!(
                "failed to remove container {id:?} log legacy symbolic link {:?}: {e}",
                link.display()
            )),
        }
    }

    async fn evict_sandboxes(&self, evict_non_deleted: bool) -> bosun_cri::Result<()> {
        let (containers, sandboxes) = self.list().await?;
        for id in sandboxes_to_remove(&sandboxes, &containers, |uid| {
            self.removable(uid, evict_non_deleted)
        }) {
            let uid = sandboxes
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.pod_uid.clone())
                .unwrap_or_default();
            let span = info_span!("gc", pod.uid = %uid, sandbox.id = %id);
            async {
                if let Err(e) = self.cri.stop_pod_sandbox(&id).await {
                    warn!(error = %e, "Failed to stop sandbox before removing");
                    return;
                }
                match self.cri.remove_pod_sandbox(&id).await {
                    Ok(()) => info!("removed dead sandbox"),
                    Err(e) => warn!(error = %e, "Failed to remove sandbox"),
                }
            }
            .instrument(span)
            .await;
        }
        Ok(())
    }

    /// The kubelet's `evictPodLogsDirectories`: the log directories of pods that are gone (once
    /// every source was seen), then symlinks whose container log is gone and whose container is
    /// not still running.
    async fn evict_pod_log_dirs(&self, sources_ready: bool) -> Result<(), String> {
        if sources_ready {
            let dirs = std::fs::read_dir(&self.pod_logs_dir).map_err(|e| {
                format!(
                    "failed to read podLogsDirectory {:?}: {e}",
                    self.pod_logs_dir.display()
                )
            })?;
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                let uid = pod_uid_of_log_dir(&name);
                if !self.removable(uid, false) {
                    continue;
                }
                debug!(pod.uid = %uid, "Removing pod logs");
                if let Err(e) = std::fs::remove_dir_all(d.path()) {
                    warn!(pod.uid = %uid, error = %e, path = %name, "Failed to remove pod logs directory");
                }
            }
        }
        let Ok(links) = std::fs::read_dir(&self.container_logs_link_dir) else {
            return Ok(());
        };
        for l in links.flatten() {
            let path = l.path();
            let name = l.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".log") || std::fs::metadata(&path).is_ok() {
                continue;
            }
            if let Some(id) = container_id_of_symlink(&name) {
                match self.cri.container_status(id, false).await {
                    Ok(r)
                        if r.status
                            .as_ref()
                            .is_some_and(|s| s.state != ContainerState::ContainerExited as i32) =>
                    {
                        continue;
                    }
                    Ok(_) => {}
                    Err(CriError::Status { .. }) | Err(_) => {}
                }
            }
            match std::fs::remove_file(&path) {
                Ok(()) => debug!(path = %path.display(), "Removed symlink"),
                Err(e) => {
                    warn!(error = %e, path = %path.display(), "Failed to remove container log dead symlink")
                }
            }
        }
        Ok(())
    }
}

/// `<pod>_<namespace>_<container>-<id>.log`, the kubelet's legacy log symlink name.
pub fn log_symlink_name(pod: &str, namespace: &str, container: &str, id: &str) -> String {
    format!("{pod}_{namespace}_{container}-{id}.log")
}

/// The container id in a legacy log symlink name: what follows the last `-`, before `.log`.
fn container_id_of_symlink(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".log")?;
    let id = stem.rsplit_once('-')?.1;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The pod UID in a pod log directory name `<namespace>_<name>_<uid>` (the whole name when it
/// has no `_`, as the kubelet's `parsePodUIDFromLogsDirectory`).
fn pod_uid_of_log_dir(name: &str) -> &str {
    name.rsplit('_').next().unwrap_or(name)
}

/// The existing files whose path starts with `prefix` (the kubelet's `Glob(logPath + "*")`).
fn with_prefix(prefix: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(base)) = (prefix.parent(), prefix.file_name()) else {
        return Vec::new();
    };
    let base = base.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&*base))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_the_kubelet_parses_them() {
        let id = "a".repeat(64);
        let link = log_symlink_name("web", "default", "app", &id);
        assert_eq!(link, format!("web_default_app-{id}.log"));
        assert_eq!(container_id_of_symlink(&link), Some(id.as_str()));
        assert_eq!(container_id_of_symlink("web_default_app-short.log"), None);
        assert_eq!(pod_uid_of_log_dir("default_web_1234-abcd"), "1234-abcd");
        assert_eq!(pod_uid_of_log_dir("odd"), "odd");
    }

    #[test]
    fn every_rotation_of_a_log_matches_its_prefix_and_no_other_log() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "1.log",
            "1.log.20260101-000000.gz",
            "1.log.20260101-000100",
            "11.log",
            "2.log",
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        let mut got: Vec<String> = with_prefix(&d.path().join("1.log"))
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        got.sort();
        assert_eq!(
            got,
            ["1.log", "1.log.20260101-000000.gz", "1.log.20260101-000100"]
        );
    }
}
