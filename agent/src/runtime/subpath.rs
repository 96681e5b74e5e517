//! A volumeMount's subPath bound without a race, as the kubelet's subpath_linux.go: the path is
//! resolved and checked to stay inside the volume, then opened one component at a time beneath
//! the volume (O_PATH, O_NOFOLLOW: a symlink planted after the check is refused, never
//! followed), and that open file is bind mounted at
//! `<pod>/volume-subpaths/<volume>/<container>/<index>`, the path the runtime mounts. A container
//! swapping a directory of the subPath for a symlink between the check and the mount cannot
//! make the runtime mount a host path.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Opens `rel` (relative, no `..`) beneath the directory `root`, one component at a time,
/// refusing a symlink anywhere on the way; the open file (O_PATH).
pub fn open_beneath(root: &Path, rel: &Path) -> Result<OwnedFd, String> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = open(root, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| format!("open {}: {e}", root.display()))?;
    let mut at = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(format!("{} is not a plain relative path", rel.display()));
        };
        at.push(name);
        let next = openat(&fd, name, flags, Mode::empty())
            .map_err(|e| format!("open {}: {e}", at.display()))?;
        let st = fstat(&next).map_err(|e| format!("stat {}: {e}", at.display()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            return Err(format!("{} is a symlink", at.display()));
        }
        fd = next;
    }
    Ok(fd)
}

/// Where the kubelet binds subPath `index` of `container`'s mounts of `volume`.
pub fn bind_target(subpaths_dir: &Path, volume: &str, container: &str, index: usize) -> PathBuf {
    subpaths_dir
        .join(volume)
        .join(container)
        .join(index.to_string())
}

/// Whether `path` is a mount point (listed in this process's mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    let want = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| p == want)
}

/// Binds `real` (the subPath resolved, inside the canonical volume `root`) at `target` through
/// a descriptor opened beneath `root`; the target, which the runtime mounts. A mount left at
/// `target` by an earlier start of the container is replaced.
pub fn bind(root: &Path, real: &Path, target: &Path) -> Result<String, String> {
    let rel = real
        .strip_prefix(root)
        .map_err(|_| format!("{} is not within {}", real.display(), root.display()))?;
    let fd = open_beneath(root, rel)?;
    let st = fstat(&fd).map_err(|e| e.to_string())?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    if is_mount_point(target) {
        let status = std::process::Command::new("umount")
            .arg(target)
            .status()
            .map_err(|e| format!("umount {}: {e}", target.display()))?;
        if !status.success() {
            return Err(format!("umount {} failed: {status}", target.display()));
        }
    }
    let made = if is_dir {
        std::fs::create_dir_all(target)
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(|_| ())
    };
    made.map_err(|e| format!("create {}: {e}", target.display()))?;
    let source = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
    let status = std::process::Command::new("mount")
        .args(["--no-canonicalize", "--bind", &source])
        .arg(target)
        .status()
        .map_err(|e| format!("mount --bind {source}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "bind mount of {} at {} failed: {status}",
            real.display(),
            target.display()
        ));
    }
    // What got mounted is what was opened beneath the volume.
    let meta = std::fs::metadata(target).map_err(|e| e.to_string())?;
    if meta.dev() != st.st_dev || meta.ino() != st.st_ino {
        let _ = std::process::Command::new("umount").arg(target).status();
        return Err(format!(
            "the bind mount at {} is not {}",
            target.display(),
            real.display()
        ));
    }
    Ok(target.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_on_the_way_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/link")).unwrap();
        assert!(open_beneath(&root, Path::new("a/b/f")).is_ok());
        assert!(open_beneath(&root, Path::new("a/b")).is_ok());
        let err = open_beneath(&root, Path::new("a/link")).unwrap_err();
        assert!(err.ends_with("a/link is a symlink"), "{err}");
        let err = open_beneath(&root, Path::new("a/link/passwd")).unwrap_err();
        assert!(err.contains("a/link"), "{err}");
        assert!(open_beneath(&root, Path::new("a/../a")).is_err());
        assert_eq!(
            bind_target(Path::new("/p/volume-subpaths"), "data", "app", 2),
            Path::new("/p/volume-subpaths/data/app/2")
        );
    }
}
