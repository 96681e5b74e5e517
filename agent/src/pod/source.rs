//! Pod sources. The static source reads pod manifests (YAML or JSON) from `staticPodPath` as a
//! standalone kubelet does: names get the `-<node>` suffix, the UID is a hash of the manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::runtime::labels;

/// The full desired set of one source, sent whenever it changes.
#[derive(Debug, Clone)]
pub struct SourceUpdate {
    /// `file` or `api`.
    pub source: &'static str,
    /// Every pod this source wants, by UID.
    pub pods: BTreeMap<String, Arc<Pod>>,
}

/// Reads one manifest into a static pod for `node`, defaulted as the kubelet does.
pub fn read_manifest(path: &Path, node: &str) -> Result<Pod, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let json = path.extension().is_some_and(|e| e == "json");
    let mut pod: Pod = if json {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    if pod.spec.as_ref().is_none_or(|s| s.containers.is_empty()) {
        return Err(format!("{}: pod has no containers", path.display()));
    }
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("{}: metadata.name is required", path.display()))?;
    let mut h = Sha256::new();
    h.update(&bytes);
    h.update(node.as_bytes());
    h.update(path.to_string_lossy().as_bytes());
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    pod.metadata.name = Some(format!("{name}-{node}"));
    pod.metadata.namespace = Some(
        pod.metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    pod.metadata.uid = Some(uid.clone());
    let ann = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    ann.insert(labels::CONFIG_SOURCE.into(), "file".into());
    ann.insert(labels::CONFIG_HASH.into(), uid);
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_string());
        spec.restart_policy.get_or_insert_with(|| "Always".into());
        spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
        spec.termination_grace_period_seconds.get_or_insert(30);
    }
    Ok(pod)
}

/// Every manifest in `dir` (hidden files skipped), keyed by UID; unreadable ones are logged.
pub fn scan(dir: &Path, node: &str) -> BTreeMap<String, Arc<Pod>> {
    let mut out = BTreeMap::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "static pod path not readable");
            return out;
        }
    };
    files.sort();
    for f in files {
        let hidden = f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || !f.is_file() {
            continue;
        }
        match read_manifest(&f, node) {
            Ok(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                out.insert(uid, Arc::new(pod));
            }
            Err(e) => warn!("static pod manifest ignored: {e}"),
        }
    }
    out
}

/// Watches `dir` every `every` and sends the whole set when it changes (and once at start).
pub async fn run_static(
    dir: PathBuf,
    node: String,
    every: Duration,
    tx: mpsc::Sender<SourceUpdate>,
    cancel: CancellationToken,
) {
    let mut last: Option<Vec<String>> = None;
    loop {
        let pods = scan(&dir, &node);
        let keys: Vec<String> = pods.keys().cloned().collect();
        if last.as_ref() != Some(&keys) {
            last = Some(keys);
            if tx
                .send(SourceUpdate {
                    source: "file",
                    pods,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_pods_are_named_and_defaulted_like_the_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n").unwrap();
        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec: {containers: []}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
        let pods = scan(dir.path(), "node-a");
        assert_eq!(pods.len(), 1);
        let pod = pods.values().next().unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-a")
        );
        // Same manifest, same UID; another node, another UID.
        assert_eq!(scan(dir.path(), "node-a").keys().next(), Some(&uid));
        assert_ne!(scan(dir.path(), "node-b").keys().next(), Some(&uid));
    }
}
