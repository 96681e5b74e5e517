//! The node's CSINode object (storage.k8s.io/v1, named after the node, owned by its Node): one
//! entry per registered driver with its node ID, topology keys and volume limit, as the
//! kubelet's nodeinfomanager keeps it.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec, VolumeNodeResources};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::PostParams;

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

impl CsiNodeWriter {
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
}
