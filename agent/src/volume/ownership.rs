//! fsGroup ownership of a pod's volumes, as the kubelet's SetVolumeOwnership: every file and
//! directory of the volume gets group fsGroup, group read and write (read only for read-only
//! volumes: configMap, secret, downwardAPI, projected), directories also the setgid bit and
//! group search; symlinks only their group. With fsGroupChangePolicy OnRootMismatch, a volume
//! whose root already has that group and those bits is left alone.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

const RW: u32 = 0o660;
const RO: u32 = 0o440;
const EXEC: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The pod's fsGroup and whether its policy is OnRootMismatch; None without an fsGroup.
pub fn fs_group(pod: &Pod) -> Option<(u32, bool)> {
    let sc = pod.spec.as_ref()?.security_context.as_ref()?;
    let gid = u32::try_from(sc.fs_group?).ok()?;
    let on_root_mismatch = sc.fs_group_change_policy.as_deref() == Some("OnRootMismatch");
    Some((gid, on_root_mismatch))
}

/// The kubelet's FsUserFrom: the effective runAsUser (the container's, else the pod's) of every
/// container, init and ephemeral ones included, when they all have one and it is the same; None
/// otherwise.
pub fn fs_user(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let own = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| c.security_context.as_ref().and_then(|s| s.run_as_user))
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.security_context.as_ref().and_then(|s| s.run_as_user)),
        );
    let mut user = None;
    for u in own {
        let u = u.or(pod_user)?;
        if user.is_some_and(|seen| seen != u) {
            return None;
        }
        user = Some(u);
    }
    user.and_then(|u| u32::try_from(u).ok())
}

/// The mode of a projected service account token (projected.go): 0600 when the pod has an
/// fsUser or an fsGroup (SetVolumeOwnership then makes it 0640 under the fsGroup), else the
/// volume's `default_mode`.
pub fn token_mode(pod: &Pod, default_mode: u32) -> u32 {
    if fs_user(pod).is_some() || fs_group(pod).is_some() {
        0o600
    } else {
        default_mode
    }
}

/// Makes `uid` the owner of the file `rel` of the volume at `dir`, the visible symlink and the
/// file it points to, as the kubelet's AtomicWriter does with a projection's FsUser.
pub fn set_file_owner(dir: &Path, rel: &str, uid: u32) -> std::io::Result<()> {
    let path = dir.join(rel);
    std::os::unix::fs::lchown(&path, Some(uid), None)?;
    std::os::unix::fs::chown(&path, Some(uid), None)
}

fn wanted(mode: u32, is_dir: bool, readonly: bool) -> u32 {
    let mut mask = if readonly { RO } else { RW };
    if is_dir {
        mask |= SETGID | EXEC;
    }
    mode | mask
}

/// True when the volume root already has `gid` and the bits fsGroup asks for.
fn root_matches(dir: &Path, gid: u32, readonly: bool) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| {
        let mode = m.permissions().mode() & 0o7777;
        m.gid() == gid && wanted(mode, true, readonly) == mode
    })
}

/// Applies `gid` to everything under `dir` (not following symlinks out of it).
pub fn set_volume_ownership(
    dir: &Path,
    gid: u32,
    readonly: bool,
    on_root_mismatch: bool,
) -> std::io::Result<()> {
    if on_root_mismatch && root_matches(dir, gid, readonly) {
        return Ok(());
    }
    walk(dir, gid, readonly)
}

fn walk(path: &Path, gid: u32, readonly: bool) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o7777;
    let want = wanted(mode, meta.is_dir(), readonly);
    if want != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(want))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), gid, readonly)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bits_as_the_kubelet() {
        assert_eq!(wanted(0o777, true, false), 0o2777);
        assert_eq!(wanted(0o644, false, false), 0o664);
        assert_eq!(wanted(0o644, false, true), 0o644);
        assert_eq!(wanted(0o600, false, true), 0o640);
        assert_eq!(wanted(0o755, true, true), 0o2755);
        assert_eq!(wanted(0o700, true, false), 0o2770);
    }

    #[test]
    fn a_tree_gets_the_group_and_bits_and_a_matching_root_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("v");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("link")).unwrap();
        // The process's own group: a chown any user may make.
        let gid = std::fs::metadata(d.path()).unwrap().gid();
        set_volume_ownership(&root, gid, false, false).unwrap();
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("sub/f"), 0o660);
        assert_eq!(mode("sub") & SETGID, SETGID);
        assert_eq!(std::fs::metadata(root.join("sub/f")).unwrap().gid(), gid);
        // OnRootMismatch with a matching root: nothing below is touched.
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        set_volume_ownership(&root, gid, false, true).unwrap();
        assert_eq!(mode("sub/f"), 0o600);
        set_volume_ownership(&root, gid, false, false).unwrap();
        assert_eq!(mode("sub/f"), 0o660);
    }

    /// The kubelet's FsUserFrom, and the projected token's mode (projected.go: 0600 when the pod
    /// has an fsUser or an fsGroup, SetVolumeOwnership's read-only mask then making it 0640
    /// under an fsGroup; else the volume's defaultMode).
    #[test]
    fn fs_user_and_token_mode_as_the_kubelet() {
        let of = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let cases = [
            (
                "no user anywhere",
                json!({"containers": [{"name": "a"}]}),
                None,
                0o644,
            ),
            (
                "the pod's user for every container",
                json!({"securityContext": {"runAsUser": 1000},
                       "initContainers": [{"name": "i"}], "containers": [{"name": "a"}]}),
                Some(1000),
                0o600,
            ),
            (
                "containers agree",
                json!({"containers": [{"name": "a", "securityContext": {"runAsUser": 7}},
                                      {"name": "b", "securityContext": {"runAsUser": 7}}]}),
                Some(7),
                0o600,
            ),
            (
                "containers differ",
                json!({"securityContext": {"runAsUser": 1000},
                       "containers": [{"name": "a", "securityContext": {"runAsUser": 7}},
                                      {"name": "b"}]}),
                None,
                0o644,
            ),
            (
                "one container without a user",
                json!({"containers": [{"name": "a", "securityContext": {"runAsUser": 7}},
                                      {"name": "b"}]}),
                None,
                0o644,
            ),
            (
                "an ephemeral container counts",
                json!({"securityContext": {"runAsUser": 1000}, "containers": [{"name": "a"}],
                       "ephemeralContainers": [{"name": "d", "securityContext": {"runAsUser": 0}}]}),
                None,
                0o644,
            ),
            (
                "fsGroup alone",
                json!({"securityContext": {"fsGroup": 2000}, "containers": [{"name": "a"}]}),
                None,
                0o600,
            ),
        ];
        for (what, spec, user, mode) in cases {
            let pod = of(json!({ "spec": spec }));
            assert_eq!(fs_user(&pod), user, "{what}");
            assert_eq!(token_mode(&pod, 0o644), mode, "{what}");
        }
        // Under an fsGroup the read-only mask gives 0640.
        assert_eq!(wanted(0o600, false, true), 0o640);
    }
}
