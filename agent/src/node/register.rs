//! Registration: create the Node, or adopt the one that exists, as the kubelet's
//! registerWithAPIServer: taints only on creation; on an existing Node only the default labels and
//! the attach/detach annotation are reconciled (through nodes/status, as the kubelet patches).

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tracing::info;

use super::machine;
use crate::config::{Taint as ConfigTaint, TaintEffect};

/// The annotation telling the attach/detach controller it owns attaching volumes to this node.
pub const CONTROLLER_MANAGED_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// The labels the kubelet owns and reconciles on an existing Node.
pub const DEFAULT_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "node.kubernetes.io/windows-build",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The labels bosun registers the Node with: hostname, os and arch (also under their beta
/// names), then `--node-labels`.
pub fn initial_labels(
    name: &str,
    node_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let (os, arch) = (machine::go_os(), machine::go_arch());
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", os),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", os),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(node_labels.clone());
    labels
}

/// The Node bosun registers: default labels plus `--node-labels`, the attach/detach annotation,
/// the registration taints, and the status computed by the setters.
pub fn initial_node(
    name: &str,
    node_labels: &BTreeMap<String, String>,
    taints: &[ConfigTaint],
    status: NodeStatus,
) -> Node {
    let labels = initial_labels(name, node_labels);
    let taints = api_taints(taints);
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(
                [(
                    CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            ..Default::default()
        }),
        status: Some(status),
    }
}

/// The merge patch that brings an existing Node's kubelet-owned metadata in line with the
/// initial node, or None when nothing differs.
pub fn reconcile(initial: &Node, existing: &Node) -> Option<Value> {
    let empty = BTreeMap::new();
    let want = initial.metadata.labels.as_ref().unwrap_or(&empty);
    let have = existing.metadata.labels.as_ref().unwrap_or(&empty);
    let mut labels = Map::new();
    for key in DEFAULT_LABELS {
        match (want.get(*key), have.get(*key)) {
            (Some(w), h) if h != Some(w) => {
                labels.insert(key.to_string(), json!(w));
            }
            (None, Some(_)) => {
                labels.insert(key.to_string(), Value::Null);
            }
            _ => {}
        }
    }
    let mut annotations = Map::new();
    let annotated = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONTROLLER_MANAGED_ATTACH_DETACH));
    if annotated.map(String::as_str) != Some("true") {
        annotations.insert(CONTROLLER_MANAGED_ATTACH_DETACH.into(), json!("true"));
    }
    if labels.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut meta = Map::new();
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Some(json!({ "metadata": meta }))
}

/// How registration ended.
#[derive(Debug)]
pub struct Registered {
    /// The Node as the API server returned it.
    pub node: Node,
    /// True when bosun created it (its status was just written); false when adopted.
    pub created: bool,
}

/// One attempt: create, or on AlreadyExists get and reconcile.
pub async fn try_register(api: &Api<Node>, initial: &Node) -> Result<Registered, kube::Error> {
    match api.create(&PostParams::default(), initial).await {
        Ok(node) => {
            info!(node = ?node.metadata.name, "node registered");
            return Ok(Registered {
                node,
                created: true,
            });
        }
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => return Err(e),
    }
    let name = initial.metadata.name.as_deref().unwrap_or_default();
    let existing = api.get(name).await?;
    let node = match reconcile(initial, &existing) {
        Some(patch) => {
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?
        }
        None => existing,
    };
    info!(node = %name, "node already registered: adopted");
    Ok(Registered {
        node,
        created: false,
    })
}

/// The registration taints (registerWithTaints) as Node taints.
pub fn api_taints(taints: &[ConfigTaint]) -> Vec<Taint> {
    taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: (!t.value.is_empty()).then(|| t.value.clone()),
            effect: match t.effect {
                TaintEffect::NoSchedule => "NoSchedule",
                TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                TaintEffect::NoExecute => "NoExecute",
            }
            .into(),
            time_added: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn initial_node_has_labels_annotation_and_taints() {
        let taints = [ConfigTaint {
            key: "dedicated".into(),
            value: "gpu".into(),
            effect: TaintEffect::NoSchedule,
        }];
        let n = initial_node(
            "n1",
            &labels(&[("node-role.kubernetes.io/worker", ""), ("team", "a")]),
            &taints,
            NodeStatus::default(),
        );
        let l = n.metadata.labels.unwrap();
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["beta.kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/arch"], machine::go_arch());
        assert_eq!(l["team"], "a");
        assert_eq!(
            n.metadata.annotations.unwrap()[CONTROLLER_MANAGED_ATTACH_DETACH],
            "true"
        );
        let t = &n.spec.unwrap().taints.unwrap()[0];
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
    }

    #[test]
    fn reconcile_cases() {
        let initial = initial_node("n1", &labels(&[("team", "a")]), &[], NodeStatus::default());
        let node = |l: &[(&str, &str)], annotated: bool| Node {
            metadata: ObjectMeta {
                labels: Some(labels(l)),
                annotations: annotated.then(|| {
                    [(
                        CONTROLLER_MANAGED_ATTACH_DETACH.to_string(),
                        "true".to_string(),
                    )]
                    .into()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let own = [
            ("kubernetes.io/hostname", "n1"),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", machine::go_arch()),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", machine::go_arch()),
        ];
        // Up to date, and extra labels (even --node-labels that changed) are left alone.
        let mut l = own.to_vec();
        l.push(("team", "b"));
        assert_eq!(reconcile(&initial, &node(&l, true)), None);
        // A wrong hostname, a stale zone and a missing annotation are fixed.
        let mut l = own.to_vec();
        l[0] = ("kubernetes.io/hostname", "old");
        l.push(("topology.kubernetes.io/zone", "z"));
        assert_eq!(
            reconcile(&initial, &node(&l, false)),
            Some(json!({"metadata": {
                "labels": {"kubernetes.io/hostname": "n1", "topology.kubernetes.io/zone": null},
                "annotations": {CONTROLLER_MANAGED_ATTACH_DETACH: "true"},
            }}))
        );
    }
}
