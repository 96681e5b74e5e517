//! Volumes through a CSI driver, as the kubelet's CSI volume plugin (pkg/volume/csi): a
//! persistentVolumeClaim or generic ephemeral volume resolves to its bound PV's `spec.csi`; an
//! inline `csi` volume is the pod's own. Set-up stages the volume once per node
//! (NodeStageVolume into `<root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>/globalmount`
//! when the driver has STAGE_UNSTAGE_VOLUME; the kubelet's vol_data.json beside it) and
//! publishes it for the pod (NodePublishVolume into
//! `<root>/pods/<uid>/volumes/kubernetes.io~csi/<pv or volume name>/mount`, vol_data.json beside
//! it), which is the path the containers mount. Tear-down reads those vol_data.json files from
//! disk (so it works after a restart): NodeUnpublishVolume, then NodeUnstageVolume once no other
//! pod on the node publishes the volume, the directories removed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod, Volume,
};
use k8s_openapi::api::storage::v1::{CSIDriver, VolumeAttachment};
use kube::Api;
use sha2::{Digest, Sha256};
use tracing::info;

use super::{VolumeError, VolumeOp, ownership};
use crate::csi::Drivers;
use crate::csi::client::{CsiClient, VolumeRequest};
use crate::runtime::subpath::is_mount_point as is_mounted;

/// The directory of CSI volumes in a pod's directory.
const POD_CSI_DIR: &str = "volumes/kubernetes.io~csi";
/// The kubelet's file of a CSI volume's facts, beside its mount and its global mount.
const VOL_DATA: &str = "vol_data.json";

/// Whether the kubelet mounts volume `v` through a CSI driver here.
pub fn is_csi_volume(v: &Volume) -> bool {
    v.persistent_volume_claim.is_some() || v.ephemeral.is_some() || v.csi.is_some()
}

/// The CSI side of the node: the registered drivers and the volumes published per pod UID
/// (by the pod's volume name), so a pod's later syncs need no API call, and the stats and the
/// node status read what is mounted (the kubelet's actual state of the world).
#[derive(Debug, Clone, Default)]
pub struct CsiVolumes {
    /// The registered drivers (filled by the plugin watcher).
    pub drivers: Drivers,
    published: Arc<Mutex<HashMap<String, HashMap<String, Published>>>>,
    /// Attachable volumes being set up, by pod UID (the kubelet's desired state of the world):
    /// reported in use before they are staged, so the attach/detach controller leaves them be.
    wanted: Arc<Mutex<HashMap<String, std::collections::BTreeSet<String>>>>,
    /// The volumesInUse the node status last wrote (MarkVolumesAsReportedInUse).
    reported: Arc<tokio::sync::watch::Sender<Vec<String>>>,
    /// Wakes the node status loop to report a newly wanted volume.
    nudge: Arc<tokio::sync::Notify>,
}

/// How long a volume's set-up waits for the node status to report it in use.
const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A CSI volume published for a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Where it is published (the containers' mount source).
    pub path: String,
    /// The driver's name.
    pub driver: String,
    /// The volume handle (its ID for the driver).
    pub handle: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The claim behind it (a persistentVolumeClaim or generic ephemeral volume).
    pub claim: Option<String>,
    /// Whether its driver is attachable (CSIDriver attachRequired, or no CSIDriver object).
    pub attachable: bool,
}

/// sha256 in lower hex.
fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kubelet's global mount directory of a volume (makeDeviceMountPath without
/// `globalmount`): `<root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>`.
pub fn global_dir(root_dir: &Path, driver: &str, handle: &str) -> PathBuf {
    root_dir
        .join("plugins/kubernetes.io/csi")
        .join(driver)
        .join(sha256_hex(handle))
}

/// The kubelet's unique name of a CSI volume (GetUniqueVolumeNameFromSpec):
/// `kubernetes.io/csi/<driver>^<handle>`.
pub fn unique_volume_name(driver: &str, handle: &str) -> String {
    format!("kubernetes.io/csi/{driver}^{handle}")
}

/// The VolumeAttachment name of a volume on a node (the kubelet's getAttachmentName).
pub fn attachment_name(handle: &str, driver: &str, node: &str) -> String {
    format!("csi-{}", sha256_hex(&format!("{handle}{driver}{node}")))
}

/// The handle of an inline ephemeral volume (the kubelet's makeVolumeHandle).
pub fn inline_handle(pod_uid: &str, volume: &str) -> String {
    format!("csi-{}", sha256_hex(&format!("{pod_uid}{volume}")))
}

fn write_vol_data(dir: &Path, data: &BTreeMap<&str, String>) -> Result<(), String> {
    let text = serde_json::to_string(data).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(VOL_DATA), text)
        .map_err(|e| format!("failed to save volume info data: {e}"))
}

fn read_vol_data(dir: &Path) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join(VOL_DATA)).ok()?;
    serde_json::from_str(&text).ok()
}

fn mkdir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| format!("failed to create dir {}: {e}", dir.display()))
}

/// What a CSI volume of a pod resolves to before the driver is called.
struct Resolved {
    /// The kubelet's spec name: the PV's name, or the inline volume's.
    spec_name: String,
    driver: String,
    request: VolumeRequest,
    /// Persistent (a PV) or Ephemeral (inline).
    persistent: bool,
    /// Whether the CSIDriver asks for a VolumeAttachment.
    attach_required: bool,
    /// The claim of a persistentVolumeClaim or generic ephemeral volume.
    claim: Option<String>,
    /// The CSIDriver's fsGroupPolicy (ReadWriteOnceWithFSType when unset).
    fs_group_policy: String,
}

/// Everything set-up needs: the API, the node and the drivers.
pub struct SetUp<'a> {
    /// The API client.
    pub client: &'a kube::Client,
    /// The node's CSI drivers and published volumes.
    pub volumes: &'a CsiVolumes,
    /// `<root>`.
    pub root_dir: &'a Path,
    /// This node's name.
    pub node_name: &'a str,
}

fn process_err(v: &str, reason: String) -> VolumeError {
    VolumeError {
        volume: v.into(),
        reason,
        op: VolumeOp::Process,
    }
}

impl SetUp<'_> {
    /// Stages and publishes every CSI volume of `pod` not yet published; returns each one's
    /// mount path by volume name.
    pub async fn set_up(
        &self,
        pod: &Pod,
        pod_dir: &Path,
    ) -> Result<HashMap<String, String>, VolumeError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if !is_csi_volume(v) {
                continue;
            }
            let known = self
                .volumes
                .published
                .lock()
                .ok()
                .and_then(|m| m.get(&uid).and_then(|p| p.get(&v.name).cloned()));
            if let Some(p) = known.filter(|p| is_mounted(Path::new(&p.path))) {
                out.insert(v.name.clone(), p.path);
                continue;
            }
            let resolved = self.resolve(pod, v).await?;
            let mut published = Published {
                path: String::new(),
                driver: resolved.driver.clone(),
                handle: resolved.request.volume_id.clone(),
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                claim: resolved.claim.clone(),
                attachable: resolved.persistent && resolved.attach_required,
            };
            published.path = self.mount(pod, pod_dir, resolved).await?;
            out.insert(v.name.clone(), published.path.clone());
            if let Ok(mut m) = self.volumes.published.lock() {
                m.entry(uid.clone())
                    .or_default()
                    .insert(v.name.clone(), published);
            }
        }
        // Every volume of the pod is published (and listed from there): what it wanted while
        // being set up, or what a restart reconstructed for it, is no longer needed.
        self.volumes.unwant(&uid);
        Ok(out)
    }

    /// The claim, PV and CSIDriver behind volume `v`, or the inline source.
    async fn resolve(&self, pod: &Pod, v: &Volume) -> Result<Resolved, VolumeError> {
        if let Some(inline) = &v.csi {
            return self.resolve_inline(pod, v, inline).await;
        }
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let (claim, claim_read_only, ephemeral) = match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => (c.claim_name.clone(), c.read_only.unwrap_or(false), false),
            // The ephemeral volume controller's claim: <pod>-<volume>, owned by the pod.
            (None, Some(_)) => (format!("{pod_name}-{}", v.name), false, true),
            (None, None) => {
                return Err(VolumeError {
                    volume: v.name.clone(),
                    reason: "volume type not supported by bosun yet".into(),
                    op: VolumeOp::SetUp,
                });
            }
        };
        let (pv_name, spec) = self.bound_pv(pod, &v.name, &claim, ephemeral).await?;
        let Some(source) = spec.csi else {
            return Err(VolumeError {
                volume: v.name.clone(),
                reason: format!(
                    "PersistentVolume {pv_name} is not a CSI volume: volume type not supported by bosun yet"
                ),
                op: VolumeOp::SetUp,
            });
        };
        let csidriver = self.csidriver(&pv_name, &source.driver).await?;
        let context = volume_context(
            source.volume_attributes.as_ref(),
            csidriver.as_ref(),
            pod,
            false,
        );
        Ok(Resolved {
            spec_name: pv_name,
            driver: source.driver.clone(),
            persistent: true,
            claim: Some(claim),
            // No CSIDriver object: attach is required (the kubelet's default).
            attach_required: csidriver
                .as_ref()
                .map(|d| d.spec.attach_required.unwrap_or(true))
                .unwrap_or(true),
            fs_group_policy: fs_group_policy(csidriver.as_ref()),
            request: VolumeRequest {
                volume_id: source.volume_handle.clone(),
                fs_type: source.fs_type.clone().unwrap_or_default(),
                mount_flags: spec.mount_options.clone().unwrap_or_default(),
                access_mode: spec
                    .access_modes
                    .and_then(|m| m.first().cloned())
                    .unwrap_or_else(|| "ReadWriteOnce".into()),
                read_only: claim_read_only || source.read_only.unwrap_or(false),
                context,
                ..Default::default()
            },
        })
    }

    /// An inline `csi` volume: the driver must allow the Ephemeral lifecycle mode.
    async fn resolve_inline(
        &self,
        pod: &Pod,
        v: &Volume,
        inline: &CSIVolumeSource,
    ) -> Result<Resolved, VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let csidriver = self.csidriver(&v.name, &inline.driver).await?;
        let modes = csidriver
            .as_ref()
            .and_then(|d| d.spec.volume_lifecycle_modes.clone())
            .unwrap_or_else(|| vec!["Persistent".into()]);
        if !modes.iter().any(|m| m == "Ephemeral") {
            return Err(VolumeError {
                volume: v.name.clone(),
                reason: format!(
                    "kubernetes.io/csi: mounter.SetupAt failed to check volume lifecycle mode: volume mode \"Ephemeral\" not supported by driver {} (only supports {modes:?})",
                    inline.driver
                ),
                op: VolumeOp::CsiSetUp,
            });
        }
        let context = volume_context(
            inline.volume_attributes.as_ref(),
            csidriver.as_ref(),
            pod,
            true,
        );
        Ok(Resolved {
            spec_name: v.name.clone(),
            driver: inline.driver.clone(),
            persistent: false,
            attach_required: false,
            claim: None,
            fs_group_policy: fs_group_policy(csidriver.as_ref()),
            request: VolumeRequest {
                volume_id: inline_handle(uid, &v.name),
                fs_type: inline.fs_type.clone().unwrap_or_default(),
                read_only: inline.read_only.unwrap_or(false),
                access_mode: "ReadWriteOnce".into(),
                context,
                ..Default::default()
            },
        })
    }

    /// The PV bound to `claim` (name and spec), checked as the kubelet's
    /// getPVCExtractPV/getPVSpec: a generic ephemeral claim owned by the pod, not being deleted,
    /// Bound, and the PV's claimRef pointing back at it.
    async fn bound_pv(
        &self,
        pod: &Pod,
        volume: &str,
        claim: &str,
        ephemeral: bool,
    ) -> Result<(String, PersistentVolumeSpec), VolumeError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let fail =
            |e: String| process_err(volume, format!("error processing PVC {ns}/{claim}: {e}"));
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let pvc = claims
            .get(claim)
            .await
            .map_err(|e| fail(format!("failed to fetch PVC from API server: {e}")))?;
        if ephemeral {
            let owned = pvc
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid);
            if !owned {
                return Err(process_err(
                    volume,
                    format!(
                        "PVC {ns}/{claim} was not created for pod {ns}/{pod_name} (pod is not owner)"
                    ),
                ));
            }
        }
        if pvc.metadata.deletion_timestamp.is_some()
            && !pvc
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "kubernetes.io/pvc-protection")
        {
            return Err(fail("PVC is being deleted".into()));
        }
        if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            return Err(fail("PVC is not bound".into()));
        }
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| fail("PVC has empty pvc.Spec.VolumeName".into()))?;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs
            .get(&pv_name)
            .await
            .map_err(|e| fail(format!("failed to fetch PV {pv_name} from API server: {e}")))?;
        let spec = pv.spec.clone().unwrap_or_default();
        let claim_uid = spec.claim_ref.as_ref().and_then(|r| r.uid.clone());
        if claim_uid.is_none() || claim_uid != pvc.metadata.uid {
            return Err(fail(format!(
                "found PV object {pv_name:?} but its ClaimRef does not point to this PVC"
            )));
        }
        Ok((pv_name, spec))
    }

    async fn csidriver(&self, volume: &str, name: &str) -> Result<Option<CSIDriver>, VolumeError> {
        let api: Api<CSIDriver> = Api::all(self.client.clone());
        api.get_opt(name).await.map_err(|e| VolumeError {
            volume: volume.into(),
            reason: format!("kubernetes.io/csi: failed to get CSIDriver {name}: {e}"),
            op: VolumeOp::CsiSetUp,
        })
    }

    /// The publish context of an attached volume (its VolumeAttachment's metadata).
    async fn attachment(&self, r: &Resolved) -> Result<HashMap<String, String>, VolumeError> {
        let name = attachment_name(&r.request.volume_id, &r.driver, self.node_name);
        let err = |reason: String| VolumeError {
            volume: r.spec_name.clone(),
            reason,
            op: VolumeOp::WaitForAttach,
        };
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        let va = api
            .get_opt(&name)
            .await
            .map_err(|e| err(format!("volume attachment {name}: {e}")))?
            .ok_or_else(|| err(format!("volume attachment {name} does not exist yet")))?;
        if va.metadata.deletion_timestamp.is_some() {
            return Err(err(format!("volume attachment {name} is being deleted")));
        }
        let status = va.status.unwrap_or_default();
        if !status.attached {
            let why = status
                .attach_error
                .and_then(|e| e.message)
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(err(format!(
                "volume {} is not attached yet (volume attachment {name}){why}",
                r.request.volume_id
            )));
        }
        // The kubelet's VerifyControllerAttachedVolume: the attach/detach controller lists it
        // in the node's volumesAttached.
        let unique = unique_volume_name(&r.driver, &r.request.volume_id);
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        let node = nodes.get(self.node_name).await.map_err(|e| {
            err(format!(
                "VerifyControllerAttachedVolume failed fetching node from API server: {e}"
            ))
        })?;
        let listed = node
            .status
            .iter()
            .flat_map(|s| s.volumes_attached.iter().flatten())
            .any(|a| a.name == unique);
        if !listed {
            return Err(err("Volume not attached according to node status".into()));
        }
        Ok(status
            .attachment_metadata
            .unwrap_or_default()
            .into_iter()
            .collect())
    }

    /// Stages (when the driver stages) and publishes one volume; returns its mount path.
    async fn mount(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        mut r: Resolved,
    ) -> Result<String, VolumeError> {
        let spec_name = r.spec_name.clone();
        let device_err = |reason: String| VolumeError {
            volume: spec_name.clone(),
            reason,
            op: VolumeOp::MountDevice,
        };
        let setup_err = |reason: String| VolumeError {
            volume: spec_name.clone(),
            reason,
            op: VolumeOp::CsiSetUp,
        };
        if r.persistent && r.attach_required {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let name = unique_volume_name(&r.driver, &r.request.volume_id);
            if !self.volumes.want_reported(uid, &name).await {
                return Err(VolumeError {
                    volume: spec_name.clone(),
                    reason: "Volume has not been added to the list of VolumesInUse in the node's volume status".into(),
                    op: VolumeOp::WaitForAttach,
                });
            }
            r.request.publish_context = self.attachment(&r).await?;
        }
        let client = self.volumes.drivers.client(&r.driver).ok_or_else(|| {
            device_err(format!(
                "kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name {} not found in the list of registered CSI drivers",
                r.driver
            ))
        })?;
        let caps = client
            .node_get_capabilities()
            .await
            .map_err(|e| device_err(e.to_string()))?;
        if r.persistent && caps.stage_unstage {
            let global = global_dir(self.root_dir, &r.driver, &r.request.volume_id);
            let staging = global.join("globalmount");
            mkdir(&staging).map_err(&device_err)?;
            let data = BTreeMap::from([
                ("volumeHandle", r.request.volume_id.clone()),
                ("driverName", r.driver.clone()),
            ]);
            write_vol_data(&global, &data).map_err(&device_err)?;
            r.request.staging_path = staging.display().to_string();
            client
                .node_stage(&r.request)
                .await
                .map_err(|e| device_err(e.to_string()))?;
        }
        let dir = pod_dir.join(POD_CSI_DIR).join(&r.spec_name);
        let target = dir.join("mount");
        mkdir(&dir).map_err(&setup_err)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let data = BTreeMap::from([
            ("specVolID", r.spec_name.clone()),
            ("volumeHandle", r.request.volume_id.clone()),
            ("driverName", r.driver.clone()),
            ("nodeName", self.node_name.to_string()),
            (
                "volumeLifecycleMode",
                if r.persistent {
                    "Persistent"
                } else {
                    "Ephemeral"
                }
                .into(),
            ),
            (
                "attachmentID",
                attachment_name(&r.request.volume_id, &r.driver, self.node_name),
            ),
        ]);
        write_vol_data(&dir, &data).map_err(&setup_err)?;
        r.request.target_path = target.display().to_string();
        client
            .node_publish(&r.request)
            .await
            .map_err(|e| setup_err(e.to_string()))?;
        if let Some((gid, on_root_mismatch)) = ownership::fs_group(pod)
            && !r.request.read_only
            && applies_fs_group(&r.fs_group_policy, &r.request)
        {
            ownership::set_volume_ownership(&target, gid, false, on_root_mismatch).map_err(
                |e| {
                    setup_err(format!(
                        "applyFSGroup failed for vol {}: {e}",
                        r.request.volume_id
                    ))
                },
            )?;
        }
        info!(
            volume = %r.spec_name,
            driver = %r.driver,
            pod.uid = %uid,
            "MountVolume.SetUp succeeded for volume \"{}\"",
            r.spec_name
        );
        Ok(target.display().to_string())
    }
}

/// The volume context of NodePublishVolume: the volume's attributes, plus the pod's information
/// when the driver asks for it (`ephemeral`: an inline volume).
fn volume_context(
    attributes: Option<&std::collections::BTreeMap<String, String>>,
    driver: Option<&CSIDriver>,
    pod: &Pod,
    ephemeral: bool,
) -> HashMap<String, String> {
    let mut context: HashMap<String, String> = attributes
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if pod_info_on_mount(driver) {
        context.extend(pod_info(pod, ephemeral));
    }
    context
}

fn pod_info_on_mount(d: Option<&CSIDriver>) -> bool {
    d.and_then(|d| d.spec.pod_info_on_mount).unwrap_or(false)
}

fn fs_group_policy(d: Option<&CSIDriver>) -> String {
    d.and_then(|d| d.spec.fs_group_policy.clone())
        .unwrap_or_else(|| "ReadWriteOnceWithFSType".into())
}

/// Whether the kubelet applies the pod's fsGroup to the volume (SupportsFSGroup): always for
/// File, never for None, and for ReadWriteOnceWithFSType only with an fsType on a
/// ReadWriteOnce volume.
fn applies_fs_group(policy: &str, r: &VolumeRequest) -> bool {
    match policy {
        "File" => true,
        "None" => false,
        _ => !r.fs_type.is_empty() && r.access_mode == "ReadWriteOnce",
    }
}

/// The pod's facts a driver with podInfoOnMount gets in its volume context.
fn pod_info(pod: &Pod, ephemeral: bool) -> HashMap<String, String> {
    let m = &pod.metadata;
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_default();
    HashMap::from([
        (
            "csi.storage.k8s.io/pod.name".into(),
            m.name.clone().unwrap_or_default(),
        ),
        (
            "csi.storage.k8s.io/pod.namespace".into(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (
            "csi.storage.k8s.io/pod.uid".into(),
            m.uid.clone().unwrap_or_default(),
        ),
        ("csi.storage.k8s.io/serviceAccount.name".into(), sa),
        ("csi.storage.k8s.io/ephemeral".into(), ephemeral.to_string()),
    ])
}

/// Whether some pod directory under `<root>/pods` still publishes `handle` of `driver`.
fn published_anywhere(root_dir: &Path, driver: &str, handle: &str) -> bool {
    let Ok(pods) = std::fs::read_dir(root_dir.join("pods")) else {
        return false;
    };
    pods.flatten().any(|p| {
        let Ok(vols) = std::fs::read_dir(p.path().join(POD_CSI_DIR)) else {
            return false;
        };
        vols.flatten().any(|v| {
            read_vol_data(&v.path()).is_some_and(|d| {
                d.get("driverName").map(String::as_str) == Some(driver)
                    && d.get("volumeHandle").map(String::as_str) == Some(handle)
            })
        })
    })
}

impl CsiVolumes {
    /// The CSI volumes published for each pod UID, by the pod's volume name.
    pub fn published(&self) -> HashMap<String, HashMap<String, Published>> {
        self.published.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The claim-backed volumes published for pod `uid` that the pod may write (the ones the
    /// node grows when their claim is resized), with the pod's volume name.
    pub fn writable_claims_of(&self, pod: &Pod) -> Vec<(String, Published)> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let Some(vols) = self.published().remove(uid) else {
            return vec![];
        };
        let read_only = |name: &str| {
            pod.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter(|v| v.name == name)
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.read_only == Some(true))
                })
        };
        let mut out: Vec<(String, Published)> = vols
            .into_iter()
            .filter(|(name, p)| p.claim.is_some() && !read_only(name))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The unique names (`kubernetes.io/csi/<driver>^<handle>`) of the attachable volumes
    /// published or being set up, sorted, once each: the kubelet's GetVolumesInUse, which the
    /// node status reports so the attach/detach controller detaches only unused volumes.
    pub fn volumes_in_use(&self) -> Vec<String> {
        let published = self.published();
        let mut names: Vec<String> = published
            .values()
            .flat_map(|vols| vols.values())
            .filter(|v| v.attachable)
            .map(|v| unique_volume_name(&v.driver, &v.handle))
            .collect();
        if let Ok(w) = self.wanted.lock() {
            names.extend(w.values().flatten().cloned());
        }
        names.sort();
        names.dedup();
        names
    }

    /// Records that the node status now reports `names` in use (after a write the API took).
    pub fn mark_reported(&self, names: &[String]) {
        self.reported.send_if_modified(|r| {
            let changed = r.as_slice() != names;
            if changed {
                *r = names.to_vec();
            }
            changed
        });
    }

    /// Resolves when a volume being set up waits for the node status to report it.
    pub async fn report_asked(&self) {
        self.nudge.notified().await
    }

    /// Marks `name` wanted by pod `uid` and waits (at most [`REPORT_WAIT`]) until the node
    /// status reports it in use, as the kubelet's VerifyControllerAttachedVolume; false when
    /// it was not reported in time.
    async fn want_reported(&self, uid: &str, name: &str) -> bool {
        if let Ok(mut w) = self.wanted.lock() {
            w.entry(uid.to_string())
                .or_default()
                .insert(name.to_string());
        }
        let mut rx = self.reported.subscribe();
        if rx.borrow().iter().any(|n| n == name) {
            return true;
        }
        self.nudge.notify_one();
        let reported = async {
            loop {
                if rx.changed().await.is_err() {
                    return false;
                }
                if rx.borrow().iter().any(|n| n == name) {
                    return true;
                }
            }
        };
        tokio::time::timeout(REPORT_WAIT, reported)
            .await
            .unwrap_or(false)
    }

    /// Rebuilds, from the pods' directories under `root_dir`, which attachable volumes are
    /// still published (left by an earlier run), so the first node status after a restart
    /// reports them in use, as the kubelet reconstructs its actual state from disk before it
    /// reports volumesInUse: otherwise the attach/detach controller could detach a volume still
    /// mounted for a pod deleted while Bosun was down. A driver's attachRequired is read from its
    /// CSIDriver; unreadable (no API), the volume counts as attachable. A pod's entries go
    /// once its volumes are set up again (published) or torn down.
    pub async fn reconstruct(&self, root_dir: &Path, client: Option<&kube::Client>) -> usize {
        let mut found: Vec<(String, String, String)> = Vec::new();
        for pod in std::fs::read_dir(root_dir.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let uid = pod.file_name().to_string_lossy().to_string();
            let Ok(vols) = std::fs::read_dir(pod.path().join(POD_CSI_DIR)) else {
                continue;
            };
            for v in vols.flatten() {
                let Some(data) = read_vol_data(&v.path()) else {
                    continue;
                };
                let field = |k: &str| data.get(k).cloned().unwrap_or_default();
                if field("volumeLifecycleMode") == "Ephemeral"
                    || !is_mounted(&v.path().join("mount"))
                {
                    continue;
                }
                found.push((uid.clone(), field("driverName"), field("volumeHandle")));
            }
        }
        let mut attach: HashMap<String, bool> = HashMap::new();
        let mut n = 0;
        for (uid, driver, handle) in found {
            if !attach.contains_key(&driver) {
                let required = match client {
                    Some(c) => Api::<CSIDriver>::all(c.clone())
                        .get_opt(&driver)
                        .await
                        .ok()
                        .flatten()
                        .is_none_or(|d| d.spec.attach_required.unwrap_or(true)),
                    None => true,
                };
                attach.insert(driver.clone(), required);
            }
            if attach[&driver]
                && let Ok(mut w) = self.wanted.lock()
            {
                w.entry(uid)
                    .or_default()
                    .insert(unique_volume_name(&driver, &handle));
                n += 1;
            }
        }
        n
    }

    /// Forgets what pod `uid` wanted (its volumes are torn down or it is gone).
    fn unwant(&self, uid: &str) {
        if let Ok(mut w) = self.wanted.lock() {
            w.remove(uid);
        }
    }

    /// Unpublishes every CSI volume under the pod's directory (read from its vol_data.json),
    /// then unstages each persistent one no other pod publishes; directories removed. A driver
    /// that is not registered or fails leaves its volume in place and the error is returned.
    pub async fn tear_down(
        &self,
        root_dir: &Path,
        pod_uid: &str,
        pod_dir: &Path,
    ) -> Result<(), String> {
        let mut first_err = None;
        if let Ok(vols) = std::fs::read_dir(pod_dir.join(POD_CSI_DIR)) {
            for v in vols.flatten() {
                if let Err(e) = self.unpublish(root_dir, &v.path()).await {
                    first_err.get_or_insert(e);
                }
            }
        }
        if first_err.is_none() {
            if let Ok(mut m) = self.published.lock() {
                m.remove(pod_uid);
            }
            self.unwant(pod_uid);
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn unpublish(&self, root_dir: &Path, dir: &Path) -> Result<(), String> {
        let target = dir.join("mount");
        let Some(data) = read_vol_data(dir) else {
            // Nothing the driver was told of (set-up failed before saving the data).
            if !is_mounted(&target) {
                let _ = std::fs::remove_dir(&target);
                let _ = std::fs::remove_dir(dir);
            }
            return Ok(());
        };
        let field = |k: &str| data.get(k).cloned().unwrap_or_default();
        let (driver, handle) = (field("driverName"), field("volumeHandle"));
        let client = self.client(&driver)?;
        client
            .node_unpublish(&handle, &target.display().to_string())
            .await
            .map_err(|e| format!("UnmountVolume.TearDown failed for volume {handle}: {e}"))?;
        if target.exists() {
            std::fs::remove_dir(&target)
                .map_err(|e| format!("remove {}: {e}", target.display()))?;
        }
        let _ = std::fs::remove_file(dir.join(VOL_DATA));
        let _ = std::fs::remove_dir(dir);
        info!(volume = %field("specVolID"), driver = %driver, "UnmountVolume.TearDown succeeded");
        if field("volumeLifecycleMode") != "Ephemeral" {
            self.unstage_if_unused(root_dir, &client, &driver, &handle)
                .await?;
        }
        Ok(())
    }

    fn client(&self, driver: &str) -> Result<CsiClient, String> {
        self.drivers.client(driver).ok_or_else(|| {
            format!("driver name {driver} not found in the list of registered CSI drivers")
        })
    }

    async fn unstage_if_unused(
        &self,
        root_dir: &Path,
        client: &CsiClient,
        driver: &str,
        handle: &str,
    ) -> Result<(), String> {
        let global = global_dir(root_dir, driver, handle);
        if !global.exists() || published_anywhere(root_dir, driver, handle) {
            return Ok(());
        }
        let staging = global.join("globalmount");
        let caps = client
            .node_get_capabilities()
            .await
            .map_err(|e| e.to_string())?;
        if caps.stage_unstage {
            client
                .node_unstage(handle, &staging.display().to_string())
                .await
                .map_err(|e| format!("UnmountDevice failed for volume {handle}: {e}"))?;
        }
        if staging.exists() && !is_mounted(&staging) {
            let _ = std::fs::remove_dir(&staging);
        }
        let _ = std::fs::remove_file(global.join(VOL_DATA));
        let _ = std::fs::remove_dir(&global);
        info!(driver = %driver, volume = %handle, "UnmountDevice succeeded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_are_the_kubelets() {
        let g = global_dir(Path::new("/var/lib/kubelet"), "csi.example.com", "vol-1");
        assert_eq!(
            g,
            Path::new(
                "/var/lib/kubelet/plugins/kubernetes.io/csi/csi.example.com/d2e8363faaac7ae76def3b14091d8eb5755f6b92e9531627aeec833a8731cc49"
            )
        );
        assert!(attachment_name("h", "d", "n").starts_with("csi-"));
        assert_eq!(
            attachment_name("h", "d", "n"),
            format!("csi-{}", sha256_hex("hdn"))
        );
        assert_eq!(
            inline_handle("uid", "vol"),
            format!("csi-{}", sha256_hex("uidvol"))
        );
    }

    #[test]
    fn fs_group_follows_the_drivers_policy() {
        let req = |fs: &str, mode: &str| VolumeRequest {
            fs_type: fs.into(),
            access_mode: mode.into(),
            ..Default::default()
        };
        let cases = [
            ("File", req("", "ReadWriteMany"), true),
            ("None", req("ext4", "ReadWriteOnce"), false),
            (
                "ReadWriteOnceWithFSType",
                req("ext4", "ReadWriteOnce"),
                true,
            ),
            ("ReadWriteOnceWithFSType", req("", "ReadWriteOnce"), false),
            (
                "ReadWriteOnceWithFSType",
                req("ext4", "ReadWriteMany"),
                false,
            ),
        ];
        for (policy, r, want) in cases {
            assert_eq!(applies_fs_group(policy, &r), want, "{policy} {r:?}");
        }
    }

    #[test]
    fn volumes_in_use_are_the_attachable_published_ones_sorted_once() {
        let vols = CsiVolumes::default();
        let v = |driver: &str, handle: &str, attachable: bool| Published {
            path: format!("/p/{handle}"),
            driver: driver.into(),
            handle: handle.into(),
            namespace: "default".into(),
            claim: None,
            attachable,
        };
        {
            let mut m = vols.published.lock().unwrap();
            m.insert(
                "pod-a".into(),
                HashMap::from([
                    ("x".into(), v("d2", "h1", true)),
                    ("y".into(), v("d1", "h9", true)),
                    ("z".into(), v("d1", "inline", false)),
                ]),
            );
            // The same volume published for a second pod is listed once.
            m.insert(
                "pod-b".into(),
                HashMap::from([("x".into(), v("d2", "h1", true))]),
            );
        }
        assert_eq!(
            vols.volumes_in_use(),
            ["kubernetes.io/csi/d1^h9", "kubernetes.io/csi/d2^h1"]
        );
        vols.published.lock().unwrap().clear();
        assert!(vols.volumes_in_use().is_empty());
    }

    #[test]
    fn a_volume_still_published_by_another_pod_is_in_use() {
        let root = tempfile::tempdir().unwrap();
        let vol = root.path().join("pods/u1").join(POD_CSI_DIR).join("pv1");
        std::fs::create_dir_all(&vol).unwrap();
        let data = BTreeMap::from([
            ("driverName", "d".to_string()),
            ("volumeHandle", "h".to_string()),
        ]);
        write_vol_data(&vol, &data).unwrap();
        assert!(published_anywhere(root.path(), "d", "h"));
        assert!(!published_anywhere(root.path(), "d", "other"));
        assert!(!published_anywhere(root.path(), "other", "h"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_volume_being_set_up_is_reported_in_use_before_it_is_staged() {
        let vols = CsiVolumes::default();
        let name = "kubernetes.io/csi/d^h";
        // The status loop: woken by the set-up, writes what volumes_in_use lists.
        let status = {
            let vols = vols.clone();
            tokio::spawn(async move {
                vols.report_asked().await;
                let listed = vols.volumes_in_use();
                vols.mark_reported(&listed);
                listed
            })
        };
        assert!(vols.want_reported("pod-a", name).await);
        assert_eq!(status.await.unwrap(), [name]);
        // Reported already: no wait.
        assert!(vols.want_reported("pod-b", name).await);
        // Not reported within the wait (no status loop answering): false.
        assert!(
            !vols
                .want_reported("pod-c", "kubernetes.io/csi/d^other")
                .await
        );
        vols.unwant("pod-a");
        vols.unwant("pod-b");
        vols.unwant("pod-c");
        assert!(vols.volumes_in_use().is_empty());
    }

    /// After a restart, attachable volumes still published under the pods' directories are
    /// reported in use at once (without an API every driver counts as attachable); unmounted
    /// leftovers and inline (ephemeral) volumes are not; a pod's set-up clears its entries.
    #[tokio::test]
    async fn volumes_still_published_after_a_restart_are_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let vol = |uid: &str, name: &str, handle: &str, mode: &str, mounted: bool| {
            let d = root.join("pods").join(uid).join(POD_CSI_DIR).join(name);
            std::fs::create_dir_all(d.join("mount")).unwrap();
            let data = BTreeMap::from([
                ("driverName", "d".to_string()),
                ("volumeHandle", handle.to_string()),
                ("volumeLifecycleMode", mode.to_string()),
            ]);
            write_vol_data(&d, &data).unwrap();
            if mounted {
                let ok = std::process::Command::new("mount")
                    .args(["-t", "tmpfs", "tmpfs"])
                    .arg(d.join("mount"))
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "mount a tmpfs");
            }
            d.join("mount")
        };
        let a = vol("uid-a", "pv1", "h1", "Persistent", true);
        vol("uid-a", "pv2", "h2", "Persistent", false);
        let e = vol("uid-b", "inline", "h3", "Ephemeral", true);
        let vols = CsiVolumes::default();
        let n = vols.reconstruct(root, None).await;
        for m in [&a, &e] {
            std::process::Command::new("umount")
                .arg(m)
                .status()
                .unwrap();
        }
        assert_eq!(n, 1);
        assert_eq!(vols.volumes_in_use(), ["kubernetes.io/csi/d^h1"]);
        vols.unwant("uid-a");
        assert!(vols.volumes_in_use().is_empty());
    }
}
