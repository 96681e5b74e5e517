//! Writes a volume's files atomically as the kubelet's AtomicWriter does: the files go into a
//! fresh timestamped directory, `..data` is swapped to it with one rename, and each visible name is
//! a symlink through `..data`, so readers never see a half-updated set.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

const DATA: &str = "..data";

/// Makes `dir` hold exactly `files` (relative path -> (content, mode)); does nothing when the
/// content is unchanged. Returns true when it wrote.
pub fn write(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> io::Result<bool> {
    for name in files.keys() {
        let p = Path::new(name);
        let ok = !name.is_empty()
            && !name.starts_with("..")
            && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid file name {name:?}"),
            ));
        }
    }
    std::fs::create_dir_all(dir)?;
    let current = dir.join(DATA);
    if same_content(&current, files) {
        return Ok(false);
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let new_dir = dir.join(&stamp);
    std::fs::create_dir_all(&new_dir)?;
    for (name, (content, mode)) in files {
        let path = new_dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(&current).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link)?;
    std::fs::rename(&tmp_link, &current)?;
    // Visible names: top-level entries as symlinks through ..data.
    let mut top: Vec<String> = files
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_string())
        .collect();
    top.dedup();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    // Names that are gone, and the old data directory.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let n = entry.file_name().to_string_lossy().to_string();
        if !n.starts_with("..") && !top.contains(&n) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

fn same_content(current: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>) -> bool {
    if !current.exists() {
        return false;
    }
    files
        .iter()
        .all(|(name, (content, _))| std::fs::read(current.join(name)).is_ok_and(|c| &c == content))
        && count_files(current) == files.len()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, (Vec<u8>, u32)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn swaps_data_and_removes_stale_names() {
        let d = tempfile::tempdir().unwrap();
        assert!(write(d.path(), &files(&[("a", "1"), ("b", "2")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert!(
            std::fs::symlink_metadata(d.path().join("a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            !write(d.path(), &files(&[("a", "1"), ("b", "2")])).unwrap(),
            "unchanged content is not rewritten"
        );
        let first = std::fs::read_link(d.path().join(DATA)).unwrap();
        assert!(write(d.path(), &files(&[("a", "3")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "3");
        assert!(!d.path().join("b").exists());
        assert!(!d.path().join(first).exists(), "old data dir removed");
    }

    #[test]
    fn rejects_escaping_names() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs", "..data", "a/../../b", ""] {
            assert!(write(d.path(), &files(&[(bad, "x")])).is_err(), "{bad}");
        }
    }
}
