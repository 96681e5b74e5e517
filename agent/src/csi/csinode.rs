//! The node's CSI driver facts, as the kubelet's nodeinfomanager keeps them: the CSINode object
//! (storage.k8s.io/v1, named after the node, owned by its Node) with one entry per registered
//! driver (node ID, topology keys, volume limit), and on the Node itself the driver's node ID in
//! the `csi.volume.kubernetes.io/nodeid` annotation and its topology segments as labels.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

use super::NodeInfo;

/// Writes this node's CSINode.
#[derive(Clone)]
pub struct CsiNodeWriter {
    client: kube::Client,
    node_name: String,
}

/// The CSINode entry of driver `name` as NodeGetInfo described it (allocatable only when the
/// driver reports a limit, as InstallCSIDriver).
pub fn driver_entry(name: &str, info: &NodeInfo) -> CSINodeDriver {
    CSINodeDriver {
        name: name.to_string(),
        node_id: info.node_id.clone(),
        topology_keys: Some(info.topology_keys.clone()),
        allocatable: (info.max_volumes > 0).then(|| VolumeNodeResources {
            count: Some(info.max_volumes.min(i32::MAX as i64) as i32),
        }),
    }
}

/// `drivers` with `entry` put in place of any entry of the same name (or `name` dropped when
/// `entry` is None); None when nothing changes.
pub fn with_driver(
    drivers: &[CSINodeDriver],
    name: &str,
    entry: Option<CSINodeDriver>,
) -> Option<Vec<CSINodeDriver>> {
    let mut out: Vec<CSINodeDriver> = drivers.iter().filter(|d| d.name != name).cloned().collect();
    out.extend(entry);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let mut before = drivers.to_vec();
    before.sort_by(|a, b| a.name.cmp(&b.name));
    (out != before).then_some(out)
}

/// The Node annotation mapping each registered driver to its node ID (JSON object).
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// The merge patch that records driver `name` on `node` (`Some((node_id, topology))`: its node
/// ID in the annotation, its topology segments as labels) or forgets it (None: its annotation
/// entry dropped; labels stay, as the kubelet leaves them); Ok(None) when nothing changes. A
/// segment whose label already has another value is the kubelet's topology collision error.
pub fn node_patch(
    node: &Node,
    name: &str,
    install: Option<(&str, &std::collections::HashMap<String, String>)>,
) -> Result<Option<serde_json::Value>, String> {
    let annotations = node.metadata.annotations.as_ref();
    let mut ids: std::collections::BTreeMap<String, String> =
        match annotations.and_then(|a| a.get(NODE_ID_ANNOTATION)) {
            Some(v) if !v.is_empty() => serde_json::from_str(v).map_err(|e| {
                format!(
                    "failed to parse node's {NODE_ID_ANNOTATION:?} annotation value ({v:?}) err={e}"
                )
            })?,
            _ => Default::default(),
        };
    let mut labels = serde_json::Map::new();
    let changed_ids = match install {
        Some((id, topology)) => {
            let node_labels = node.metadata.labels.as_ref();
            let mut keys: Vec<&String> = topology.keys().collect();
            keys.sort();
            for k in keys {
                let v = &topology[k];
                match node_labels.and_then(|l| l.get(k)) {
                    Some(cur) if cur != v => {
                        return Err(format!(
                            "detected topology value collision: driver reported {k:?}:{v:?} but existing label is {k:?}:{cur:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        labels.insert(k.clone(), v.clone().into());
                    }
                }
            }
            ids.insert(name.to_string(), id.to_string()).as_deref() != Some(id)
        }
        None => ids.remove(name).is_some(),
    };
    if !changed_ids && labels.is_empty() {
        return Ok(None);
    }
    let mut metadata = serde_json::Map::new();
    if changed_ids {
        let value = if ids.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_string(&ids)
                .map_err(|e| e.to_string())?
                .into()
        };
        metadata.insert(
            "annotations".into(),
            serde_json::json!({ NODE_ID_ANNOTATION: value }),
        );
    }
    if !labels.is_empty() {
        metadata.insert("labels".into(), labels.into());
    }
    if let Some(rv) = &node.metadata.resource_version {
        metadata.insert("resourceVersion".into(), rv.clone().into());
    }
    Ok(Some(serde_json::json!({ "metadata": metadata })))
}

impl CsiNodeWriter {
    /// Records driver `name` on the Node (`install`: its node ID and topology) or forgets it,
    /// as the kubelet's InstallCSIDriver / UninstallCSIDriver update the Node; retried on a
    /// write conflict.
    pub async fn set_node_info(
        &self,
        name: &str,
        install: Option<(&str, &std::collections::HashMap<String, String>)>,
    ) -> Result<(), String> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let node = api.get(&self.node_name).await.map_err(|e| e.to_string())?;
            let Some(patch) = node_patch(&node, name, install)? else {
                return Ok(());
            };
            let pp = PatchParams::default();
            match api.patch(&self.node_name, &pp, &Patch::Merge(&patch)).await {
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
                other => return other.map(|_| ()).map_err(|e| e.to_string()),
            }
        }
    }

    /// The writer of node `node_name`'s CSINode.
    pub fn new(client: kube::Client, node_name: &str) -> CsiNodeWriter {
        CsiNodeWriter {
            client,
            node_name: node_name.to_string(),
        }
    }

    /// Puts driver `name`'s entry (None: removes it), creating the CSINode when absent;
    /// retried on a write conflict.
    pub async fn set_driver(
        &self,
        name: &str,
        entry: Option<CSINodeDriver>,
    ) -> Result<(), kube::Error> {
        let api: Api<CSINode> = Api::all(self.client.clone());
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match api.get_opt(&self.node_name).await? {
                None => {
                    let Some(drivers) = with_driver(&[], name, entry.clone()) else {
                        return Ok(());
                    };
                    let obj = CSINode {
                        metadata: self.metadata().await?,
                        spec: CSINodeSpec { drivers },
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &obj).await.map(|_| ())
                }
                Some(mut obj) => {
                    let Some(drivers) = with_driver(&obj.spec.drivers, name, entry.clone()) else {
                        return Ok(());
                    };
                    obj.spec.drivers = drivers;
                    api.replace(&self.node_name, &PostParams::default(), &obj)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Err(kube::Error::Api(s)) if (s.code == 409) && attempt < 5 => continue,
                other => return other,
            }
        }
    }

    /// A new CSINode's metadata: the node's name, owned by the Node (so it goes with it).
    async fn metadata(&self) -> Result<ObjectMeta, kube::Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes.get(&self.node_name).await?;
        Ok(ObjectMeta {
            name: Some(self.node_name.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.node_name.clone(),
                uid: node.metadata.uid.unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, id: &str) -> CSINodeDriver {
        let info = NodeInfo {
            node_id: id.into(),
            max_volumes: 3,
            topology_keys: vec!["k".into()],
            ..Default::default()
        };
        driver_entry(name, &info)
    }

    /// (what, before, name, new entry, the names after or None for no write)
    type Case<'a> = (
        &'a str,
        Vec<CSINodeDriver>,
        &'a str,
        Option<CSINodeDriver>,
        Option<Vec<&'a str>>,
    );

    #[test]
    fn drivers_are_put_replaced_and_removed_by_name() {
        let a = entry("a", "n1");
        let b = entry("b", "n1");
        let cases: Vec<Case> = vec![
            (
                "added",
                vec![a.clone()],
                "b",
                Some(b.clone()),
                Some(vec!["a", "b"]),
            ),
            (
                "same again: no write",
                vec![a.clone(), b.clone()],
                "b",
                Some(b.clone()),
                None,
            ),
            (
                "new node id replaces",
                vec![a.clone()],
                "a",
                Some(entry("a", "n2")),
                Some(vec!["a"]),
            ),
            (
                "removed",
                vec![a.clone(), b.clone()],
                "a",
                None,
                Some(vec!["b"]),
            ),
            (
                "removing an absent one: no write",
                vec![b.clone()],
                "a",
                None,
                None,
            ),
        ];
        for (what, before, name, new, want) in cases {
            let got = with_driver(&before, name, new);
            let got: Option<Vec<String>> = got.map(|d| d.into_iter().map(|d| d.name).collect());
            let want: Option<Vec<String>> = want.map(|w| w.iter().map(|s| s.to_string()).collect());
            assert_eq!(got, want, "{what}");
        }
        assert_eq!(a.allocatable.and_then(|r| r.count), Some(3));
        let unlimited = driver_entry("c", &NodeInfo::default());
        assert!(unlimited.allocatable.is_none());
    }

    fn node(labels: &[(&str, &str)], ids: Option<&str>) -> Node {
        let mut n = Node::default();
        n.metadata.resource_version = Some("7".into());
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        if let Some(ids) = ids {
            n.metadata.annotations =
                Some([(NODE_ID_ANNOTATION.to_string(), ids.to_string())].into());
        }
        n
    }

    #[test]
    fn the_node_gets_the_drivers_node_id_and_topology_labels() {
        let topo: std::collections::HashMap<String, String> =
            [("topology.x/zone".to_string(), "z1".to_string())].into();
        let n = node(&[], Some(r#"{"a":"n1"}"#));
        let got = node_patch(&n, "b", Some(("id-b", &topo))).unwrap().unwrap();
        assert_eq!(
            got,
            serde_json::json!({"metadata": {
                "annotations": {NODE_ID_ANNOTATION: r#"{"a":"n1","b":"id-b"}"#},
                "labels": {"topology.x/zone": "z1"},
                "resourceVersion": "7",
            }})
        );
        // Already recorded: no write.
        let n = node(&[("topology.x/zone", "z1")], Some(r#"{"b":"id-b"}"#));
        assert_eq!(node_patch(&n, "b", Some(("id-b", &topo))), Ok(None));
        // A label with another value: the kubelet's collision error, nothing written.
        let n = node(&[("topology.x/zone", "z2")], None);
        let err = node_patch(&n, "b", Some(("id-b", &topo))).unwrap_err();
        assert_eq!(
            err,
            r#"detected topology value collision: driver reported "topology.x/zone":"z1" but existing label is "topology.x/zone":"z2""#
        );
        // Removal drops the entry, and the annotation with the last one; labels stay.
        let n = node(
            &[("topology.x/zone", "z1")],
            Some(r#"{"a":"n1","b":"id-b"}"#),
        );
        let got = node_patch(&n, "b", None).unwrap().unwrap();
        assert_eq!(
            got["metadata"]["annotations"][NODE_ID_ANNOTATION],
            r#"{"a":"n1"}"#
        );
        assert!(got["metadata"].get("labels").is_none());
        let n = node(&[], Some(r#"{"b":"id-b"}"#));
        let got = node_patch(&n, "b", None).unwrap().unwrap();
        assert_eq!(
            got["metadata"]["annotations"][NODE_ID_ANNOTATION],
            serde_json::Value::Null
        );
        assert_eq!(node_patch(&node(&[], None), "b", None), Ok(None));
        assert!(node_patch(&node(&[], Some("{")), "b", None).is_err());
    }
}
