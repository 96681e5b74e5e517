//! Online expansion of a published claim's volume: the kubelet's node expander. Once the
//! resizer has grown the PV (its capacity above the claim's status capacity) and left the claim
//! NodeResizePending, the driver's NodeExpandVolume grows the filesystem on the node, the claim
//! status takes the new capacity (allocatedResourceStatuses and resize conditions cleared) and
//! the pod and the claim get FileSystemResizeSuccess; a failure is the pod's VolumeResizeFailed,
//! and a final one the claim's NodeResizeError condition (NodeResizeInfeasible when the driver
//! says the size cannot be had), as pkg/volume/util/operationexecutor/node_expander.go.

use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{Patch, PatchParams};
use tracing::{info, warn};

use super::csi::{Published, global_dir};
use crate::csi::Drivers;
use crate::csi::client::{CsiError, VolumeRequest};
use crate::resource::parse_quantity;

/// An event the expansion asks its caller to record (about the pod, or about the claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeEvent {
    /// Warning (else Normal).
    pub warning: bool,
    /// The kubelet's reason.
    pub reason: &'static str,
    /// The kubelet's message.
    pub message: String,
    /// The claim `(namespace, name, uid)` the event is about; None: the pod.
    pub claim: Option<(String, String, String)>,
}

/// What the claim and its PV call for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to grow, or not this node's turn (the resizer has not asked for it).
    Nothing,
    /// NodeExpandVolume to `size` (a quantity); `recovery`: the claim carries the resizer's
    /// allocatedResources and status (marked NodeResizeInProgress first), else the older
    /// resizer's protocol (the PV's capacity, no status to mark).
    Expand {
        /// The size asked for, as written in the API.
        size: String,
        /// Its bytes.
        bytes: i64,
        /// Whether the claim uses allocatedResourceStatuses.
        recovery: bool,
    },
}

fn storage_bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| parse_quantity(&q.0).ok())
        .map_or(0, |q| q.value())
}

/// What `pvc` bound to `pv` calls for, as the kubelet's nodeExpandVolume and its precheck.
pub fn plan(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> Plan {
    let status = pvc.status.clone().unwrap_or_default();
    let pv_cap = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"));
    let claim_bytes = storage_bytes(status.capacity.as_ref().and_then(|c| c.get("storage")));
    if storage_bytes(pv_cap) <= claim_bytes {
        return Plan::Nothing;
    }
    let resize_status = status
        .allocated_resource_statuses
        .as_ref()
        .and_then(|m| m.get("storage"))
        .cloned();
    let allocated = status.allocated_resources.as_ref();
    if resize_status.is_none() && allocated.is_none() {
        let Some(size) = pv_cap else {
            return Plan::Nothing;
        };
        return Plan::Expand {
            size: size.0.clone(),
            bytes: storage_bytes(Some(size)),
            recovery: false,
        };
    }
    let wanted = allocated.and_then(|a| a.get("storage"));
    match resize_status.as_deref() {
        Some("NodeResizePending" | "NodeResizeInProgress") => Plan::Expand {
            size: wanted.map_or_else(|| "0".into(), |q| q.0.clone()),
            bytes: storage_bytes(wanted),
            recovery: true,
        },
        // Already grown (by the controller alone), or the resizer has not asked the node yet.
        _ => Plan::Nothing,
    }
}

/// The claim status patch once the node has grown the volume to `size`: the new capacity, the
/// storage resize status dropped, the resize conditions dropped (the kubelet's
/// MarkNodeExpansionFinishedWithRecovery / MarkFSResizeFinished).
pub fn finished_patch(pvc: &PersistentVolumeClaim, size: &str) -> serde_json::Value {
    let status = pvc.status.clone().unwrap_or_default();
    let others = status
        .allocated_resource_statuses
        .iter()
        .flatten()
        .any(|(k, _)| k != "storage");
    let statuses = if others {
        serde_json::json!({"storage": null})
    } else {
        serde_json::Value::Null
    };
    let conditions: Vec<_> = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| !RESIZE_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    serde_json::json!({
        "metadata": {"resourceVersion": pvc.metadata.resource_version},
        "status": {
            "capacity": {"storage": size},
            "allocatedResourceStatuses": statuses,
            "conditions": conditions,
        }
    })
}

/// The claim conditions a resize owns (the kubelet's knownResizeConditions).
const RESIZE_CONDITIONS: [&str; 4] = [
    "FileSystemResizePending",
    "Resizing",
    "ControllerResizeError",
    "NodeResizeError",
];

/// The claim status patch after a final NodeExpandVolume failure: the NodeResizeError
/// condition, and NodeResizeInfeasible when the driver refused the size.
fn failed_patch(pvc: &PersistentVolumeClaim, infeasible: bool, err: &str) -> serde_json::Value {
    let mut conditions: Vec<serde_json::Value> = pvc
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .filter(|c| c.type_ != "NodeResizeError")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(serde_json::json!({
        "type": "NodeResizeError",
        "status": "True",
        "lastTransitionTime": now_rfc3339(),
        "message": format!("failed to expand pvc with {err}"),
    }));
    let mut status = serde_json::json!({ "conditions": conditions });
    if infeasible {
        status["allocatedResourceStatuses"] =
            serde_json::json!({"storage": "NodeResizeInfeasible"});
    }
    serde_json::json!({ "status": status })
}

/// Now, in whole seconds, as the API writes times.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .unwrap_or_default()
        .to_string()
}

/// Whether a driver error is final (the operation is over: not Canceled, DeadlineExceeded,
/// Unavailable, ResourceExhausted or Aborted, nor a call that got no answer), and whether it is
/// infeasible (InvalidArgument, OutOfRange, NotFound), as the kubelet's IsFinalError and
/// isInfeasibleError.
fn classify(e: &CsiError) -> (bool, bool) {
    use tonic::Code;
    let Some(code) = e.code else {
        return (false, false);
    };
    let transient = matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Unavailable
            | Code::ResourceExhausted
            | Code::Aborted
    );
    let infeasible = matches!(
        code,
        Code::InvalidArgument | Code::OutOfRange | Code::NotFound
    );
    (!transient, infeasible)
}

/// Checks one published claim volume of `pod` and grows it when the claim asks; returns the
/// events to record.
pub struct Expander<'a> {
    /// The API client.
    pub client: &'a kube::Client,
    /// The registered drivers.
    pub drivers: &'a Drivers,
    /// `<root>`.
    pub root_dir: &'a Path,
    /// This node's name.
    pub node_name: &'a str,
}

impl Expander<'_> {
    /// Grows `published` (a claim's volume of a pod) when its claim and PV call for it.
    pub async fn check(&self, published: &Published) -> Vec<ResizeEvent> {
        let Some(claim) = &published.claim else {
            return vec![];
        };
        let ns = published.namespace.as_str();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pvc = match claims.get(claim).await {
            Ok(c) => c,
            Err(e) => {
                warn!(claim = %claim, error = %e, "cannot read the claim to check its size");
                return vec![];
            }
        };
        let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            return vec![];
        };
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = match pvs.get(&pv_name).await {
            Ok(pv) => pv,
            Err(e) => {
                warn!(pv = %pv_name, error = %e, "cannot read the PV to check its size");
                return vec![];
            }
        };
        let Plan::Expand {
            size,
            bytes,
            recovery,
        } = plan(&pvc, &pv)
        else {
            return vec![];
        };
        let claim_ref = (
            ns.to_string(),
            claim.clone(),
            pvc.metadata.uid.clone().unwrap_or_default(),
        );
        let failed = |message: String| ResizeEvent {
            warning: true,
            reason: "VolumeResizeFailed",
            message: format!(
                "NodeExpandVolume.NodeExpandVolume failed for volume \"{pv_name}\" : {message}"
            ),
            claim: None,
        };
        let pvc = if recovery {
            match self.mark_in_progress(&claims, pvc).await {
                Ok(marked) => marked,
                Err(e) => {
                    return vec![failed(format!(
                        "MountVolume.NodeExpandVolume failed to mark node expansion in progress: {e}"
                    ))];
                }
            }
        } else {
            pvc
        };
        match self.expand(&pv, published, bytes).await {
            Ok(()) => {}
            Err(Failure::Unsupported(m)) => return vec![failed(m)],
            Err(Failure::Driver(e)) => {
                let (fin, infeasible) = classify(&e);
                if e.code == Some(tonic::Code::FailedPrecondition) {
                    // The driver cannot grow it while in use: not retried as an error event.
                    warn!(pv = %pv_name, error = %e, "MountVolume.NodeExpandVolume failed");
                    return vec![];
                }
                let err = if infeasible {
                    format!("Expander.NodeExpand failed to expand the volume {e}")
                } else {
                    format!("Expander.NodeExpand failed to expand the volume : {e}")
                };
                if fin {
                    let patch = failed_patch(&pvc, infeasible, &err);
                    let pp = PatchParams::default();
                    if let Err(pe) = claims.patch_status(claim, &pp, &Patch::Merge(&patch)).await {
                        warn!(claim = %claim, error = %pe, "cannot mark the node expansion failed");
                    }
                }
                return vec![failed(err)];
            }
        }
        let message = format!(
            "MountVolume.NodeExpandVolume succeeded for volume \"{pv_name}\" {}",
            self.node_name
        );
        info!(pv = %pv_name, size = %size, "{message}");
        let success = |claim: Option<(String, String, String)>| ResizeEvent {
            warning: false,
            reason: "FileSystemResizeSuccess",
            message: message.clone(),
            claim,
        };
        let mut events = vec![success(None), success(Some(claim_ref))];
        let patch = finished_patch(&pvc, &size);
        if let Err(e) = claims
            .patch_status(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            events.push(failed(format!(
                "mountVolume.NodeExpandVolume update pvc status failed: {e}"
            )));
        }
        events
    }

    /// The claim's storage resize status set to NodeResizeInProgress (unless it is); the claim
    /// as written.
    async fn mark_in_progress(
        &self,
        claims: &Api<PersistentVolumeClaim>,
        pvc: PersistentVolumeClaim,
    ) -> Result<PersistentVolumeClaim, kube::Error> {
        let now = pvc
            .status
            .as_ref()
            .and_then(|s| s.allocated_resource_statuses.as_ref())
            .and_then(|m| m.get("storage"));
        if now.map(String::as_str) == Some("NodeResizeInProgress") {
            return Ok(pvc);
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": pvc.metadata.resource_version},
            "status": {"allocatedResourceStatuses": {"storage": "NodeResizeInProgress"}},
        });
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        claims
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
    }

    /// NodeExpandVolume of the published volume to `bytes`, through its driver.
    async fn expand(
        &self,
        pv: &PersistentVolume,
        published: &Published,
        bytes: i64,
    ) -> Result<(), Failure> {
        let driver = &published.driver;
        let client = self.drivers.client(driver).ok_or_else(|| {
            Failure::Unsupported(format!(
                "driver name {driver} not found in the list of registered CSI drivers"
            ))
        })?;
        let caps = client.node_get_capabilities().await.map_err(|e| {
            Failure::Unsupported(format!(
                "Expander.NodeExpand failed to check if node supports expansion : {e}"
            ))
        })?;
        if !caps.expand_volume {
            return Err(Failure::Unsupported(format!(
                "NodeExpand is not supported by the CSI driver {driver}"
            )));
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let staging = if caps.stage_unstage {
            global_dir(self.root_dir, driver, &published.handle)
                .join("globalmount")
                .display()
                .to_string()
        } else {
            String::new()
        };
        let request = VolumeRequest {
            volume_id: published.handle.clone(),
            staging_path: staging,
            target_path: published.path.clone(),
            fs_type: spec
                .csi
                .as_ref()
                .and_then(|c| c.fs_type.clone())
                .unwrap_or_default(),
            mount_flags: spec.mount_options.clone().unwrap_or_default(),
            access_mode: spec
                .access_modes
                .and_then(|m| m.first().cloned())
                .unwrap_or_else(|| "ReadWriteOnce".into()),
            ..Default::default()
        };
        client
            .node_expand(&request, bytes)
            .await
            .map_err(Failure::Driver)
    }
}

/// Why NodeExpandVolume did not happen.
enum Failure {
    /// Not asked: no such driver, or it cannot expand (the message says which).
    Unsupported(String),
    /// The driver answered with an error.
    Driver(CsiError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn claim(
        capacity: &str,
        status: Option<&str>,
        allocated: Option<&str>,
    ) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        let s = c.status.get_or_insert_default();
        s.capacity = Some([("storage".to_string(), Quantity(capacity.into()))].into());
        s.allocated_resource_statuses =
            status.map(|st| [("storage".to_string(), st.to_string())].into());
        s.allocated_resources =
            allocated.map(|a| [("storage".to_string(), Quantity(a.into()))].into());
        c
    }

    fn pv(capacity: &str) -> PersistentVolume {
        let mut pv = PersistentVolume::default();
        pv.spec.get_or_insert_default().capacity =
            Some([("storage".to_string(), Quantity(capacity.into()))].into());
        pv
    }

    #[test]
    fn the_node_grows_a_volume_only_when_the_resizer_asks() {
        let expand = |size: &str, bytes: i64, recovery: bool| Plan::Expand {
            size: size.into(),
            bytes,
            recovery,
        };
        let cases = [
            (
                "same size",
                claim("1Gi", None, None),
                pv("1Gi"),
                Plan::Nothing,
            ),
            (
                "the PV grown, node asked",
                claim("1Gi", Some("NodeResizePending"), Some("2Gi")),
                pv("2Gi"),
                expand("2Gi", 2 << 30, true),
            ),
            (
                "a retry after the mark",
                claim("1Gi", Some("NodeResizeInProgress"), Some("2Gi")),
                pv("2Gi"),
                expand("2Gi", 2 << 30, true),
            ),
            (
                "the controller still at work",
                claim("1Gi", Some("ControllerResizeInProgress"), Some("2Gi")),
                pv("2Gi"),
                Plan::Nothing,
            ),
            (
                "marked infeasible: not retried",
                claim("1Gi", Some("NodeResizeInfeasible"), Some("2Gi")),
                pv("2Gi"),
                Plan::Nothing,
            ),
            (
                "an older resizer: the PV's size",
                claim("1Gi", None, None),
                pv("1500Mi"),
                expand("1500Mi", 1500 << 20, false),
            ),
            (
                "already grown by the controller alone",
                claim("2Gi", None, Some("2Gi")),
                pv("2Gi"),
                Plan::Nothing,
            ),
        ];
        for (what, c, v, want) in cases {
            assert_eq!(plan(&c, &v), want, "{what}");
        }
    }

    #[test]
    fn a_finished_expansion_clears_the_resize_state_and_keeps_other_conditions() {
        let mut c = claim("1Gi", Some("NodeResizeInProgress"), Some("2Gi"));
        c.metadata.resource_version = Some("42".into());
        let cond = |t: &str| k8s_openapi::api::core::v1::PersistentVolumeClaimCondition {
            type_: t.into(),
            status: "True".into(),
            ..Default::default()
        };
        c.status.as_mut().unwrap().conditions = Some(vec![
            cond("FileSystemResizePending"),
            cond("ModifyingVolume"),
        ]);
        let p = finished_patch(&c, "2Gi");
        assert_eq!(p["metadata"]["resourceVersion"], "42");
        assert_eq!(
            p["status"]["capacity"],
            serde_json::json!({"storage": "2Gi"})
        );
        assert_eq!(
            p["status"]["allocatedResourceStatuses"],
            serde_json::Value::Null
        );
        let types: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["ModifyingVolume"]);
        c.status
            .as_mut()
            .unwrap()
            .allocated_resource_statuses
            .as_mut()
            .unwrap()
            .insert("other".into(), "X".into());
        let p = finished_patch(&c, "2Gi");
        assert_eq!(
            p["status"]["allocatedResourceStatuses"],
            serde_json::json!({"storage": null})
        );
    }

    #[test]
    fn driver_errors_are_final_or_infeasible_as_the_kubelets() {
        let e = |code: Option<tonic::Code>| CsiError {
            endpoint: "s".into(),
            op: "NodeExpandVolume",
            message: "m".into(),
            code,
        };
        assert_eq!(classify(&e(Some(tonic::Code::OutOfRange))), (true, true));
        assert_eq!(classify(&e(Some(tonic::Code::Internal))), (true, false));
        assert_eq!(classify(&e(Some(tonic::Code::Unavailable))), (false, false));
        assert_eq!(classify(&e(None)), (false, false));
    }
}
