//! The root dir on a shared mount, as the kubelet's setupDataDirs makes it (hostutil's
//! MakeRShared): when the mount holding `<root>` does not propagate (no `shared:` peer group in
//! its mountinfo line), `<root>` is bind-mounted on itself and made rshared, so mounts a CSI
//! driver makes under it from a container with Bidirectional propagation (stage and publish
//! paths) reach the host, and mounts made on the host reach containers with HostToContainer.
//! On a systemd host `/` is already shared and nothing is done.

use std::path::Path;

use nix::mount::{MsFlags, mount};

/// The mount point and optional fields of each mountinfo line, in file order.
fn mounts(mountinfo: &str) -> Vec<(&str, Vec<&str>)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let point = *fields.get(4)?;
            let end = fields.iter().position(|f| *f == "-")?;
            Some((point, fields.get(6..end).unwrap_or_default().to_vec()))
        })
        .collect()
}

/// Whether the mount `path` resides on (the last mountinfo line whose mount point is `path` or
/// one of its ancestors, as the kubelet's findMountInfo) is in a shared peer group; None when
/// no mount holds it.
pub fn is_shared(mountinfo: &str, path: &Path) -> Option<bool> {
    mounts(mountinfo)
        .into_iter()
        .rev()
        .find(|(point, _)| path.starts_with(point))
        .map(|(_, optional)| optional.iter().any(|o| o.starts_with("shared:")))
}

/// Makes `root` an rshared mount unless it is on a shared mount already; whether it mounted.
pub fn make_rshared(root: &Path) -> Result<bool, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    match is_shared(&info, root) {
        Some(true) => return Ok(false),
        Some(false) => {}
        None => return Err(format!("cannot find mount point for {:?}", root)),
    }
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("failed to bind-mount {}: {e}", root.display()))?;
    mount(
        None::<&str>,
        root,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("failed to make {} rshared: {e}", root.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /var rw,relatime - tmpfs tmpfs rw
31 30 0:26 / /var/lib/kubelet rw,relatime shared:7 master:2 - tmpfs tmpfs rw
40 22 0:30 / /srv rw,relatime master:3 - tmpfs tmpfs rw
41 40 0:30 / /srv rw,relatime shared:9 - tmpfs tmpfs rw
";

    #[test]
    fn the_mount_holding_the_path_decides() {
        let cases = [
            // On / (shared:1).
            ("/etc/kubelet", Some(true)),
            // On /var (private), not on /var/lib/kubelet: a name prefix is no path prefix.
            ("/var/lib/kubelet2", Some(false)),
            ("/var/lib", Some(false)),
            // The mount point itself, shared (master: alone would not be).
            ("/var/lib/kubelet", Some(true)),
            ("/var/lib/kubelet/pods/x", Some(true)),
            // The later of two mounts on the same point (the kubelet's own bind) wins.
            ("/srv/root", Some(true)),
        ];
        for (path, want) in cases {
            assert_eq!(is_shared(INFO, Path::new(path)), want, "{path}");
        }
        let private = "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n";
        assert_eq!(is_shared(private, Path::new("/x")), Some(false));
        assert_eq!(is_shared("", Path::new("/x")), None);
        assert_eq!(is_shared("garbage\n", Path::new("/x")), None);
    }
}
