//! Filesystem figures: capacity of a filesystem (statvfs) and the usage of a directory tree
//! (a `du`-like walk counting allocated blocks and inodes, never following symlinks).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Capacity and free space of the filesystem holding a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsCapacity {
    /// Total bytes.
    pub capacity: u64,
    /// Bytes available to unprivileged users.
    pub available: u64,
    /// Bytes in use (total minus free).
    pub used: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// statvfs of `path`; `None` when it cannot be read.
pub fn capacity(path: &Path) -> Option<FsCapacity> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let unit = if s.fragment_size() > 0 {
        s.fragment_size()
    } else {
        s.block_size()
    };
    Some(FsCapacity {
        capacity: s.blocks().saturating_mul(unit),
        available: s.blocks_available().saturating_mul(unit),
        used: s
            .blocks()
            .saturating_sub(s.blocks_free())
            .saturating_mul(unit),
        inodes: s.files(),
        inodes_free: s.files_free(),
    })
}

/// Bytes allocated and inodes used by a directory tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes (512-byte blocks, as `du`).
    pub bytes: u64,
    /// Inodes (files, directories, links) counted once each.
    pub inodes: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.bytes += o.bytes;
        self.inodes += o.inodes;
    }
}

/// Walks `root` on its own filesystem (no symlinks followed, no other mounts entered);
/// `None` when `root` does not exist. Unreadable entries are skipped.
pub fn usage(root: &Path) -> Option<Usage> {
    let meta = std::fs::symlink_metadata(root).ok()?;
    let dev = meta.dev();
    let mut total = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(root.to_path_buf(), meta)];
    while let Some((path, m)) = stack.pop() {
        if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
            continue;
        }
        total += Usage {
            bytes: m.blocks() * 512,
            inodes: 1,
        };
        if !m.is_dir() || m.dev() != dev {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(m) = e.metadata()
                && m.dev() == dev
            {
                stack.push((e.path(), m));
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files_dirs_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::hard_link(d.path().join("sub/a"), d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        let u = usage(d.path()).unwrap();
        // root, sub, a (b is the same inode), link.
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 64 * 1024, "{u:?}");
        assert!(u.bytes < 1024 * 1024, "symlink followed? {u:?}");
        assert_eq!(usage(&d.path().join("nope")), None);
    }

    #[test]
    fn capacity_of_tmp_is_consistent() {
        let c = capacity(Path::new("/tmp")).unwrap();
        assert!(c.capacity > 0 && c.available <= c.capacity && c.used <= c.capacity);
        assert!(c.inodes_free <= c.inodes);
    }
}
