//! The kubelet's container log manager (`containerLogManager`): every
//! containerLogMonitorInterval, each running container's log at or over containerLogMaxSize is
//! rotated by containerLogMaxWorkers workers, the runtime told to reopen it (CRI
//! ReopenContainerLog).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bosun_cri::{CriClient, CriError};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::rotation::{COMPRESS_SUFFIX, TMP_SUFFIX, plan};

/// Why a container's log could not be rotated.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A CRI call failed.
    #[error(transparent)]
    Runtime(#[from] CriError),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`remove`, `compress`, `rename`, `list`).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RotateError + 'a {
    move |source| RotateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The log rotation policy and its workers.
#[derive(Clone)]
pub struct LogManager {
    /// The runtime.
    pub cri: CriClient,
    /// containerLogMaxSize in bytes.
    pub max_size: u64,
    /// containerLogMaxFiles (at least 2).
    pub max_files: u32,
    /// containerLogMaxWorkers: containers rotated at once.
    pub workers: usize,
    /// containerLogMonitorInterval.
    pub interval: Duration,
    /// The log path of each running container, asked of the runtime (ContainerStatus) once:
    /// it is fixed when the container is created. The kubelet asks again every pass.
    pub log_paths: Arc<Mutex<HashMap<String, PathBuf>>>,
}

impl LogManager {
    /// Checks every running container's log each interval until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        info!(
            workers = self.workers,
            monitor_period = ?self.interval,
            "Initializing container log rotate workers"
        );
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.rotate_logs().await {
                error!(error = %e, "Failed to rotate container logs");
            }
        }
    }

    /// One pass: the running containers, `workers` at a time (the kubelet's `rotateLogs`).
    pub async fn rotate_logs(&self) -> Result<(), CriError> {
        let running: Vec<String> = self
            .cri
            .list_containers(None)
            .await?
            .into_iter()
            .filter(|c| c.state == bosun_cri::types::ContainerState::ContainerRunning as i32)
            .map(|c| c.id)
            .collect();
        if let Ok(mut paths) = self.log_paths.lock() {
            let live: HashSet<&String> = running.iter().collect();
            paths.retain(|id, _| live.contains(id));
        }
        futures::stream::iter(running)
            .for_each_concurrent(self.workers.max(1), |id| async move {
                if let Err(e) = self.process(&id).await {
                    error!(container.id = %id, error = %e, "Failed to rotate log for container");
                }
            })
            .await;
        Ok(())
    }

    /// Rotates one container's log when it reached the maximum size (`processContainer`).
    async fn process(&self, id: &str) -> Result<(), RotateError> {
        let known = self.log_paths.lock().ok().and_then(|p| p.get(id).cloned());
        let path = match known {
            Some(path) => path,
            None => {
                let status = self.cri.container_status(id, false).await?;
                let path = PathBuf::from(status.status.map(|s| s.log_path).unwrap_or_default());
                if let Ok(mut paths) = self.log_paths.lock() {
                    paths.insert(id.to_string(), path.clone());
                }
                path
            }
        };
        if path.as_os_str().is_empty() {
            // A container the runtime keeps no log of.
            return Ok(());
        }
        let size = match tokio::fs::metadata(&path).await {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Removed under the runtime: have it opened again.
                self.cri.reopen_container_log(id).await?;
                tokio::fs::metadata(&path)
                    .await
                    .map_err(io("stat", &path))?
                    .len()
            }
            Err(e) => return Err(io("stat", &path)(e)),
        };
        if size < self.max_size {
            return Ok(());
        }
        self.rotate(id, &path).await
    }

    /// The kubelet's `rotateLog`: clean up, remove the excess, compress, rename and reopen.
    async fn rotate(&self, id: &str, log: &Path) -> Result<(), RotateError> {
        let rotated = rotated_files(log).await?;
        let p = plan(
            &log.to_string_lossy(),
            &rotated,
            self.max_files,
            SystemTime::now(),
        );
        for f in p.remove_unused.iter().chain(&p.remove_excess) {
            let f = Path::new(f);
            match tokio::fs::remove_file(f).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", f)(e));
                }
                _ => {}
            }
        }
        for f in p.compress {
            let f = PathBuf::from(f);
            tokio::task::spawn_blocking(move || compress(&f))
                .await
                .expect("compression task panicked")?;
        }
        let to = Path::new(&p.rotate_to);
        tokio::fs::rename(log, to)
            .await
            .map_err(io("rename", log))?;
        if let Err(e) = self.cri.reopen_container_log(id).await {
            // Back, so that the next pass rotates it again.
            if let Err(back) = tokio::fs::rename(to, log).await {
                error!(error = %back, rotated = %to.display(), "Failed to rename rotated log");
            }
            return Err(e.into());
        }
        debug!(container.id = %id, rotated = %to.display(), "rotated container log");
        Ok(())
    }
}

/// The files named `<log>.*` beside `log`.
async fn rotated_files(log: &Path) -> Result<Vec<String>, RotateError> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let prefix = format!("{}.", log.file_name().unwrap_or_default().to_string_lossy());
    let mut out = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io("list", dir))?;
    while let Some(e) = entries.next_entry().await.map_err(io("list", dir))? {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            out.push(e.path().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// gzips `log` to `<log>.gz` through `<log>.tmp`, then removes `log` (the kubelet's
/// `compressLog`).
fn compress(log: &Path) -> Result<(), RotateError> {
    use std::os::unix::fs::PermissionsExt;
    let name = log.as_os_str().to_owned();
    let with = |suffix: &str| {
        let mut n = name.clone();
        n.push(suffix);
        PathBuf::from(n)
    };
    let (tmp, gz) = (with(TMP_SUFFIX), with(COMPRESS_SUFFIX));
    let mut r = std::fs::File::open(log).map_err(io("open", log))?;
    let mode = r.metadata().map_err(io("stat", log))?.permissions().mode();
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &tmp))?;
        let mut w = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        std::io::copy(&mut r, &mut w).map_err(io("compress", log))?;
        w.finish().map_err(io("compress", &tmp))?;
        std::fs::rename(&tmp, &gz).map_err(io("rename", &tmp))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    std::fs::remove_file(log).map_err(io("remove", log))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn compression_replaces_the_file_with_its_gzip_keeping_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log.20261202-101112");
        let text = "2026-12-02T10:11:12Z stdout F hello\n".repeat(1000);
        std::fs::write(&log, &text).unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
        compress(&log).unwrap();
        assert!(!log.exists());
        let gz = dir.path().join("0.log.20261202-101112.gz");
        assert_eq!(
            std::fs::metadata(&gz).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let mut back = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        assert!(!dir.path().join("0.log.20261202-101112.tmp").exists());
    }
}
