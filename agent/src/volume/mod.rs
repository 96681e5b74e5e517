//! Pod volumes on the node: emptyDir (disk or tmpfs) and hostPath (with its type checks) here;
//! configMap, secret, downwardAPI and projected in `api`; persistentVolumeClaim, generic ephemeral
//! and inline CSI volumes through a CSI driver in `csi`, grown on the node when their claim is
//! resized in `expand`; the root dir made an rshared mount in `rshared`.

pub mod api;
pub mod atomic;
pub mod csi;
pub mod expand;
pub mod ownership;
pub mod rshared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// A volume that could not be set up: the kubelet's FailedMount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct VolumeError {
    /// The volume's name (for a CSI persistent volume, the PV's, as the kubelet's spec name).
    pub volume: String,
    /// Why.
    pub reason: String,
    /// The step that failed, which words the message.
    pub op: VolumeOp,
}

/// The step of a volume's set-up that failed, as the kubelet words its FailedMount events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeOp {
    /// Setting up a volume of Bosun's own (emptyDir, hostPath, API volumes).
    #[default]
    SetUp,
    /// The CSI driver's NodePublishVolume ("MountVolume.SetUp failed for volume \"v\" : ...").
    CsiSetUp,
    /// Staging through the driver (NodeStageVolume) or finding it registered.
    MountDevice,
    /// Waiting for the VolumeAttachment to be attached.
    WaitForAttach,
    /// Resolving the volume: the claim is missing or unbound, the PV is absent (the kubelet's
    /// desired state populator error, reported as WaitForAttachAndMount does).
    Process,
}

impl VolumeError {
    /// The event message, in the kubelet's words for the failed step.
    pub fn message(&self) -> String {
        let (v, r) = (&self.volume, &self.reason);
        match self.op {
            VolumeOp::SetUp => format!("MountVolume.SetUp failed for volume \"{v}\": {r}"),
            VolumeOp::CsiSetUp => format!("MountVolume.SetUp failed for volume \"{v}\" : {r}"),
            VolumeOp::MountDevice => {
                format!("MountVolume.MountDevice failed for volume \"{v}\" : {r}")
            }
            VolumeOp::WaitForAttach => {
                format!("MountVolume.WaitForAttach failed for volume \"{v}\" : {r}")
            }
            VolumeOp::Process => format!(
                "Unable to attach or mount volumes: unmounted volumes=[{v}], unattached volumes=[], failed to process volumes=[{v}]: {r}"
            ),
        }
    }
}

/// Sets up every volume of `pod` under `pod_dir` and returns the host path of each by name.
pub fn set_up(pod: &Pod, pod_dir: &Path) -> Result<HashMap<String, String>, VolumeError> {
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let err = |reason: String| VolumeError {
            volume: v.name.clone(),
            reason,
            op: VolumeOp::SetUp,
        };
        let path: PathBuf = if let Some(ed) = &v.empty_dir {
            let dir = pod_dir
                .join("volumes/kubernetes.io~empty-dir")
                .join(&v.name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| err(format!("mkdir {}: {e}", dir.display())))?;
            set_perm(&dir, 0o777).map_err(|e| err(e.to_string()))?;
            if ed.medium.as_deref() == Some("Memory") {
                mount_tmpfs(&dir, ed.size_limit.as_ref().map(|q| q.0.as_str())).map_err(err)?;
            }
            if let Some((gid, on_root_mismatch)) = ownership::fs_group(pod) {
                ownership::set_volume_ownership(&dir, gid, false, on_root_mismatch)
                    .map_err(|e| err(format!("fsGroup {gid} on {}: {e}", dir.display())))?;
            }
            dir
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            check_host_path(&p, hp.type_.as_deref().unwrap_or("")).map_err(err)?;
            p
        } else if api::is_api_volume(v) || csi::is_csi_volume(v) || v.image.is_some() {
            // API volumes and CSI volumes are set up elsewhere; an image volume is mounted by
            // the runtime from the image itself.
            continue;
        } else {
            return Err(err("volume type not supported by bosun yet".into()));
        };
        out.insert(v.name.clone(), path.display().to_string());
    }
    Ok(out)
}

/// Unmounts every mount under the pod's directory (emptyDir medium Memory, secret, configMap and
/// projected tmpfs), deepest first, then removes the directory without crossing into another
/// filesystem: a mount that would not go is an error, its content untouched.
pub fn tear_down(pod_dir: &Path) -> std::io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts_under(&mountinfo, pod_dir) {
        // A mount that stays is caught below: removal never crosses into it.
        let _ = nix::mount::umount(m.as_str());
    }
    match remove_all_one_filesystem(pod_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes `dir` and everything under it that is on `dir`'s own filesystem, as the kubelet's
/// removeall.RemoveAllOneFilesystem: a directory on another device (a mount point left) stops the
/// removal with an error naming it, and nothing inside it is touched.
pub fn remove_all_one_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(dir)?.dev();
    remove_on_device(dir, dev)
}

fn remove_on_device(dir: &Path, dev: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_dir() {
            std::fs::remove_file(&path)?;
        } else if meta.dev() != dev {
            return Err(std::io::Error::other(format!(
                "{} is a mount point: not removed",
                path.display()
            )));
        } else {
            remove_on_device(&path, dev)?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Mount points strictly under `dir` in a mountinfo text, deepest first.
fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.to_string_lossy().trim_end_matches('/'));
    let mut found: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
    found.dedup();
    found
}

fn set_perm(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

/// hostPath type checks: DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice,
/// BlockDevice, or "" (no check).
fn check_host_path(p: &Path, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(p);
    let missing = || format!("hostPath type check failed: {} does not exist", p.display());
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if meta.is_err() {
                std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
                set_perm(p, 0o755).map_err(|e| e.to_string())?;
            } else if !p.is_dir() {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    p.display()
                ));
            }
            Ok(())
        }
        "FileOrCreate" => {
            if meta.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?;
            } else if !p.is_file() {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    p.display()
                ));
            }
            Ok(())
        }
        "Directory" | "File" | "Socket" | "CharDevice" | "BlockDevice" => {
            let t = meta.map_err(|_| missing())?.file_type();
            let ok = match kind {
                "Directory" => t.is_dir(),
                "File" => t.is_file(),
                "Socket" => t.is_socket(),
                "CharDevice" => t.is_char_device(),
                _ => t.is_block_device(),
            };
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "hostPath type check failed: {} is not a {kind}",
                    p.display()
                ))
            }
        }
        other => Err(format!("invalid hostPath type {other:?}")),
    }
}

/// True when `dir` is a mount point of another filesystem than its parent's, as every tmpfs
/// mount is (the kubelet's IsLikelyNotMountPoint). Two stats: /proc/self/mountinfo, which lists
/// every container's overlay with its long options, cost a node with 250 pods more than half of
/// its CPU when read on each volume refresh.
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(dir);
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts a tmpfs (of `size`, a quantity) on `dir` unless one is there already.
pub(crate) fn mount_tmpfs(dir: &Path, size: Option<&str>) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let mut opts = String::from("mode=0777");
    if let Some(s) = size.and_then(|s| crate::resource::parse_quantity(s).ok()) {
        opts.push_str(&format!(",size={}", s.value()));
    }
    // The syscall, not mount(8): a fork and exec would hold the agent's one thread for
    // milliseconds per pod.
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_on_another_device_than_their_parent() {
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).expect("mkdir");
        assert!(!is_mount_point(&sub));
        assert!(!is_mount_point(&dir.path().join("missing")));
    }

    /// A tmpfs left mounted inside the directory stops the removal and keeps its file; the rest
    /// goes once it is unmounted. (Needs root, as bosun does, to mount.)
    #[test]
    fn removal_never_crosses_into_a_mount_left_under_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path().join("pod");
        let vol = pod.join("volumes/kubernetes.io~empty-dir/cache");
        std::fs::create_dir_all(&vol).expect("mkdir");
        std::fs::write(pod.join("etc-hosts"), "x").expect("write");
        std::os::unix::fs::symlink("/etc/hostname", pod.join("link")).expect("symlink");
        mount_tmpfs(&vol, None).expect("mount a tmpfs (root needed)");
        std::fs::write(vol.join("data"), "kept").expect("write");
        let e = remove_all_one_filesystem(&pod).expect_err("a mount point inside");
        assert!(e.to_string().contains("is a mount point"), "{e}");
        assert_eq!(std::fs::read_to_string(vol.join("data")).unwrap(), "kept");
        assert!(
            Path::new("/etc/hostname").exists(),
            "a symlink is removed, not followed"
        );
        let status = std::process::Command::new("umount").arg(&vol).status();
        assert!(status.is_ok_and(|s| s.success()));
        remove_all_one_filesystem(&pod).expect("removed once unmounted");
        assert!(!pod.exists());
    }

    #[test]
    fn mounts_under_the_pod_dir_deepest_first() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
90 22 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x rw - tmpfs tmpfs rw
91 22 0:51 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw - tmpfs tmpfs rw
92 91 0:52 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache/inner rw - tmpfs tmpfs rw
93 22 0:53 / /var/lib/kubelet/pods/u10/volumes/kubernetes.io~secret/s rw - tmpfs tmpfs rw
94 22 0:54 / /var/lib/kubelet/pods/u1 rw - tmpfs tmpfs rw
";
        assert_eq!(
            mounts_under(info, Path::new("/var/lib/kubelet/pods/u1")),
            [
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache/inner",
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~projected/kube-api-access-x",
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache",
            ]
        );
    }
}
