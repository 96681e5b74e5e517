//! The graceful shutdown's record, as the kubelet's nodeshutdown storage: when the last shutdown
//! started and ended, kept in `<root-dir>/graceful_node_shutdown_state` (JSON, Go's time.Time
//! format, written atomically) so the gauges `kubelet_graceful_shutdown_start_time_seconds`
//! and `kubelet_graceful_shutdown_end_time_seconds` survive the reboot that follows.

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The file's name under the root directory (localStorageStateFile).
pub const FILE: &str = "graceful_node_shutdown_state";

/// Go's zero time.Time as encoding/json writes it: a field not set yet.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// When the last graceful shutdown started and ended (None: not yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownTimes {
    /// When the shutdown manager began stopping pods.
    pub start: Option<Timestamp>,
    /// When it was done and released the inhibitor lock.
    pub end: Option<Timestamp>,
}

/// The file's JSON, field names and time format as the kubelet's `state`.
#[derive(Serialize, Deserialize)]
struct Json {
    #[serde(rename = "startTime")]
    start_time: String,
    #[serde(rename = "endTime")]
    end_time: String,
}

fn go_time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string())
        .unwrap_or_else(|| GO_ZERO_TIME.to_string())
}

fn parse_go_time(s: &str) -> Result<Option<Timestamp>, String> {
    let t: Timestamp = s.parse().map_err(|e| format!("time {s:?}: {e}"))?;
    // Go's zero time is year 1; nothing real is recorded before 1970.
    Ok((t.as_second() > 0).then_some(t))
}

impl ShutdownTimes {
    /// The gauges' values: Unix seconds, 0 for a time not set (the kubelet's timestamp()).
    pub fn gauges(&self) -> (f64, f64) {
        let secs = |t: Option<Timestamp>| t.map(|t| t.as_second() as f64).unwrap_or(0.0);
        (secs(self.start), secs(self.end))
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Json {
            start_time: go_time(self.start),
            end_time: go_time(self.end),
        })
        .unwrap_or_default()
    }

    /// Parses the file's text.
    pub fn from_json(text: &str) -> Result<ShutdownTimes, String> {
        let j: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Ok(ShutdownTimes {
            start: parse_go_time(&j.start_time)?,
            end: parse_go_time(&j.end_time)?,
        })
    }
}

/// The state file of the node whose root directory is `root_dir`.
pub fn path(root_dir: &Path) -> PathBuf {
    root_dir.join(FILE)
}

/// Reads the state file; a missing file is no shutdown yet (the kubelet's Load).
pub fn load(file: &Path) -> Result<ShutdownTimes, String> {
    match std::fs::read_to_string(file) {
        Ok(text) => ShutdownTimes::from_json(&text).map_err(|e| format!("{}: {e}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ShutdownTimes::default()),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

/// Writes the state file atomically, mode 0644 (the kubelet's atomicWrite).
pub fn store(file: &Path, times: &ShutdownTimes) -> std::io::Result<()> {
    crate::atomic_file::write(file, times.to_json().as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_the_kubelets_format() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert_eq!(load(&file), Ok(ShutdownTimes::default()), "no file yet");
        let start: Timestamp = "2026-12-03T19:50:01.5Z".parse().unwrap();
        let started = ShutdownTimes {
            start: Some(start),
            end: None,
        };
        store(&file, &started).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            text,
            r#"{"startTime":"2026-12-03T19:50:01.5Z","endTime":"0001-01-01T00:00:00Z"}"#
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(load(&file), Ok(started));
        assert_eq!(started.gauges(), (1796327401.0, 0.0));
        // What the kubelet wrote (Go's RFC 3339 with nanoseconds and a zone offset) reads too.
        let kubelet = r#"{"startTime":"2026-12-03T20:50:01.123456789+01:00","endTime":"2026-12-03T19:50:31Z"}"#;
        let t = ShutdownTimes::from_json(kubelet).unwrap();
        assert_eq!(t.gauges(), (1796327401.0, 1796327431.0));
        assert!(ShutdownTimes::from_json("{").is_err());
        // Only the file is left in the directory: no temporary file behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
