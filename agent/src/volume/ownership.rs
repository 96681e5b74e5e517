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
}
