//! Counting a user's API requests in the API server's audit log (JSON lines, Metadata level,
//! stage RequestReceived omitted: every request has a ResponseComplete event, watches also a
//! ResponseStarted one when they begin).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

/// A position in the audit log, kept across the log's rotation (renamed, by inode).
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
    inode: u64,
    offset: u64,
}

impl Cursor {
    /// The current end of the log at `path`.
    pub fn at_end(path: &Path) -> std::io::Result<Cursor> {
        let meta = std::fs::metadata(path)?;
        Ok(Cursor {
            path: path.to_path_buf(),
            inode: meta.ino(),
            offset: meta.len(),
        })
    }

    /// Everything appended since the cursor: the rest of the file it pointed into (found by inode
    /// among the rotated files next to it if the log rotated) and then the current log.
    pub fn read_since(&self) -> std::io::Result<String> {
        let mut text = String::new();
        let current = std::fs::metadata(&self.path)?;
        if current.ino() == self.inode {
            read_from(&self.path, self.offset, &mut text)?;
            return Ok(text);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.metadata().map(|m| m.ino()).ok() == Some(self.inode) {
                read_from(&entry.path(), self.offset, &mut text)?;
            }
        }
        read_from(&self.path, 0, &mut text)?;
        Ok(text)
    }
}

fn read_from(path: &Path, offset: u64, out: &mut String) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_to_string(out)?;
    Ok(())
}

/// The requests `username` made that the API server received in `[from, to)`, by
/// `verb resource[/subresource]`. Each request counts once (by auditID), whatever its stages.
pub fn requests(
    log: &str,
    username: &str,
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<String, usize> {
    requests_where(log, username, |u| u == username, from, to)
}

/// As [`requests`], for every user whose name starts with `prefix` (`system:node:hollow-`), all
/// counted together.
pub fn requests_of_users(
    log: &str,
    prefix: &str,
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<String, usize> {
    requests_where(log, prefix, |u| u.starts_with(prefix), from, to)
}

/// The requests of the users `user` accepts; `hint` is a substring of every line that may count.
fn requests_where(
    log: &str,
    hint: &str,
    user: impl Fn(&str) -> bool,
    from: Timestamp,
    to: Timestamp,
) -> BTreeMap<String, usize> {
    let mut seen = HashSet::new();
    let mut by_kind = BTreeMap::new();
    for line in log.lines() {
        // Cheap filter before parsing: most lines are other users'.
        if !line.contains(hint) {
            continue;
        }
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if !ev["user"]["username"].as_str().is_some_and(&user) {
            continue;
        }
        let Some(received) = ev["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        if received < from || received >= to {
            continue;
        }
        let Some(id) = ev["auditID"].as_str() else {
            continue;
        };
        if !seen.insert(id.to_string()) {
            continue;
        }
        let obj = &ev["objectRef"];
        let mut kind = format!(
            "{} {}",
            ev["verb"].as_str().unwrap_or("?"),
            obj["resource"].as_str().unwrap_or("-")
        );
        if let Some(sub) = obj["subresource"].as_str() {
            kind.push('/');
            kind.push_str(sub);
        }
        *by_kind.entry(kind).or_insert(0) += 1;
    }
    by_kind
}

/// The sum of a breakdown from [`requests`].
pub fn total(by_kind: &BTreeMap<String, usize>) -> usize {
    by_kind.values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        id: &str,
        stage: &str,
        user: &str,
        verb: &str,
        res: &str,
        sub: Option<&str>,
        at: &str,
    ) -> String {
        let mut obj = serde_json::json!({"resource": res, "name": "x"});
        if let Some(s) = sub {
            obj["subresource"] = s.into();
        }
        serde_json::json!({
            "kind": "Event", "auditID": id, "stage": stage, "verb": verb,
            "user": {"username": user}, "objectRef": obj,
            "requestReceivedTimestamp": at, "stageTimestamp": at,
        })
        .to_string()
    }

    #[test]
    fn counts_each_request_of_the_user_once_within_the_window() {
        let u = "system:node:n1";
        let log = [
            ev(
                "a",
                "ResponseComplete",
                u,
                "get",
                "nodes",
                None,
                "2026-01-01T00:00:10.000001Z",
            ),
            // A watch: started and completed events, one request.
            ev(
                "b",
                "ResponseStarted",
                u,
                "watch",
                "pods",
                None,
                "2026-01-01T00:00:11Z",
            ),
            ev(
                "b",
                "ResponseComplete",
                u,
                "watch",
                "pods",
                None,
                "2026-01-01T00:00:11Z",
            ),
            ev(
                "c",
                "ResponseComplete",
                u,
                "patch",
                "pods",
                Some("status"),
                "2026-01-01T00:00:12Z",
            ),
            // Another node, and outside the window.
            ev(
                "d",
                "ResponseComplete",
                "system:node:n10",
                "get",
                "nodes",
                None,
                "2026-01-01T00:00:12Z",
            ),
            ev(
                "e",
                "ResponseComplete",
                u,
                "get",
                "nodes",
                None,
                "2026-01-01T00:00:09.999Z",
            ),
            ev(
                "f",
                "ResponseComplete",
                u,
                "get",
                "nodes",
                None,
                "2026-01-01T00:00:20Z",
            ),
            "not json".to_string(),
        ]
        .join("\n");
        let from: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let to: Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let by = requests(&log, u, from, to);
        assert_eq!(by.get("get nodes"), Some(&1));
        assert_eq!(by.get("watch pods"), Some(&1));
        assert_eq!(by.get("patch pods/status"), Some(&1));
        assert_eq!(total(&by), 3);
        // By prefix: both nodes, together.
        let by = requests_of_users(&log, "system:node:n1", from, to);
        assert_eq!(by.get("get nodes"), Some(&2));
        assert_eq!(total(&by), 4);
    }

    #[test]
    fn cursor_reads_what_was_appended_and_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        std::fs::write(&log, "old\n").unwrap();
        let c = Cursor::at_end(&log).unwrap();
        std::fs::write(&log, "old\nnew1\n").unwrap();
        assert_eq!(c.read_since().unwrap(), "new1\n");
        // Rotation: the file is renamed and a new one started.
        std::fs::rename(&log, dir.path().join("audit-2026.log")).unwrap();
        std::fs::write(&log, "new2\n").unwrap();
        assert_eq!(c.read_since().unwrap(), "new1\nnew2\n");
    }
}
