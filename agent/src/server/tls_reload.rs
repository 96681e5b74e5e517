//! The kubelet port's certificate and client CA reloaded from disk when they change, as the
//! kubelet's ReloadKubeletServerCertificateFile and ReloadKubeletClientCAFile (both on by
//! default in v1.37): a new serving pair or CA bundle is used for the next connections without
//! a restart; one that does not load is logged and the last good configuration stays.
//!
//! The kubelet watches the files with inotify; Bosun compares their (inode, size, mtime) every
//! [`CHECK_PERIOD`], a few stat calls, which also sees files replaced by rename.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::tls::{ServerTls, TlsSource};

/// How often the files are looked at.
pub const CHECK_PERIOD: Duration = Duration::from_secs(5);

/// What identifies a file's content without reading it: inode, size, mtime (ns); None when it
/// cannot be read.
type Fingerprint = Vec<Option<(u64, u64, i64, i64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// Rebuilds the configuration into `current` whenever one of `source`'s files changes from what
/// they are when this is called, until cancelled.
pub fn run(
    source: TlsSource,
    current: watch::Sender<Arc<ServerTls>>,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let files = source.files();
    let seen = fingerprint(&files);
    watch_files(source, files, seen, current, cancel)
}

async fn watch_files(
    source: TlsSource,
    files: Vec<PathBuf>,
    mut seen: Fingerprint,
    current: watch::Sender<Arc<ServerTls>>,
    cancel: CancellationToken,
) {
    if files.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
        }
        let now = fingerprint(&files);
        if now == seen {
            continue;
        }
        seen = now;
        match source.build() {
            Ok(cfg) => {
                current.send_replace(cfg);
                info!(files = ?files, "reloaded the kubelet port's certificate and client CA files");
            }
            Err(e) => {
                error!(error = %e, files = ?files, "invalid certificate, key or client CA file: the last good ones stay in use")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::tls::{ServingCert, ServingSource, self_signed};

    #[tokio::test(start_paused = true)]
    async fn a_changed_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServingCert {
            cert_file: dir.path().join("kubelet.crt"),
            key_file: dir.path().join("kubelet.key"),
        };
        let write = |(cert, key): (String, String)| {
            std::fs::write(&files.key_file, key).unwrap();
            std::fs::write(&files.cert_file, cert).unwrap();
        };
        write(self_signed("one", &[]).unwrap());
        let source = TlsSource {
            serving: ServingSource::Files(files.clone()),
            client_ca: None,
        };
        let (tx, rx) = watch::channel(source.build().unwrap());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(source, tx, cancel.clone()));
        let first = rx.borrow().clone();
        // A longer name: a different size, whatever the file system's mtime granularity.
        write(self_signed("a-much-longer-host-name", &[]).unwrap());
        tokio::time::sleep(CHECK_PERIOD * 2).await;
        let second = rx.borrow().clone();
        assert!(!Arc::ptr_eq(&first, &second), "the new pair was loaded");
        std::fs::write(&files.cert_file, "not a certificate").unwrap();
        tokio::time::sleep(CHECK_PERIOD * 2).await;
        assert!(
            Arc::ptr_eq(&second, &rx.borrow()),
            "a broken file keeps the last good configuration"
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
