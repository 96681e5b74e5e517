//! The node's client certificate, kept in the cert dir as the kubelet keeps it
//! (`kubelet-client-<timestamp>.pem` holding certificate and key, `kubelet-client-current.pem`
//! a symlink to the newest) and handed to every new TLS connection through a resolver that
//! rotation swaps without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// The symlink naming the current certificate+key file, under the cert dir.
pub const CURRENT: &str = "kubelet-client-current.pem";

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// No certificate, no key, or unparseable PEM.
    #[error("{0}")]
    Pem(String),
    /// The key type is not supported for TLS signing.
    #[error("unsupported private key: {0}")]
    Key(rustls::Error),
    /// Reading or writing the cert dir failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A client certificate ready for TLS, with its validity (unix seconds).
#[derive(Clone)]
pub struct Loaded {
    /// Chain and signing key for rustls.
    pub key: Arc<CertifiedKey>,
    /// Start of validity.
    pub not_before: i64,
    /// End of validity.
    pub not_after: i64,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Parses a certificate chain and its private key from PEM (one bundle or two files' contents).
pub fn load(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(format!("certificate PEM: {e}")))?;
    let first = certs
        .first()
        .ok_or_else(|| CertError::Pem("no certificate in PEM".into()))?;
    let (not_before, not_after) = validity(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| CertError::Pem(format!("private key PEM: {e}")))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertError::Key)?;
    Ok(Loaded {
        key: Arc::new(CertifiedKey::new(certs, signer)),
        not_before,
        not_after,
    })
}

/// The validity window of a DER certificate, in unix seconds.
pub fn validity(der: &CertificateDer<'_>) -> Result<(i64, i64), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertError::Pem(format!("certificate: {e}")))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// When to rotate, as the kubelet's certificate manager: at a jittered 70-90% of the lifetime
/// (`jitter` in [0, 1)).
pub fn rotation_deadline(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
}

/// How often a wait for a rotation deadline reads the wall clock again.
pub const WALL_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until the wall clock (`now`, seconds) reaches `deadline`, reading it again at least
/// every [`WALL_CHECK`]: certificates expire by the wall clock, so a clock stepped forward
/// (NTP setting a VM's clock right) brings the rotation forward with it, within a minute,
/// where a single monotonic sleep computed at the start (the kubelet's timer) would wake only
/// after the whole interval, possibly past expiry; a clock stepped back delays it likewise.
/// False when cancelled.
pub async fn sleep_until_wall(
    deadline: i64,
    now: impl Fn() -> i64,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    loop {
        let left = deadline - now();
        if left <= 0 {
            return true;
        }
        let nap = std::time::Duration::from_secs(left as u64).min(WALL_CHECK);
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// Waits for the rotation `deadline` by the wall clock ([`sleep_until_wall`]), but never
/// rotates again within [`WALL_CHECK`] of the last rotation (`last`): a node clock ahead of the
/// signer's past a fresh certificate's deadline would otherwise request certificates back to
/// back (the kubelet's loop does it once a second). False when cancelled.
pub async fn wait_for_rotation(
    deadline: i64,
    now: impl Fn() -> i64,
    last: Option<tokio::time::Instant>,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    if let Some(t) = last
        && deadline <= now()
        && t.elapsed() < WALL_CHECK
    {
        tracing::warn!(
            "the wall clock is already past the new certificate's rotation deadline (is this node's clock ahead of the signer's?): next rotation in {:?}",
            WALL_CHECK - t.elapsed()
        );
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep_until(t + WALL_CHECK) => {}
        }
        return true;
    }
    sleep_until_wall(deadline, now, cancel).await
}

/// Writes `bundle` (certificate then key, PEM) as `kubelet-client-<timestamp>.pem` (mode 0600)
/// and points `kubelet-client-current.pem` at it atomically. Returns the current path.
pub fn store(cert_dir: &Path, bundle: &str) -> Result<PathBuf, CertError> {
    store_as(cert_dir, "kubelet-client", bundle)
}

/// Writes `bundle` as `<prefix>-<timestamp>.pem` (mode 0600) and points `<prefix>-current.pem`
/// at it atomically (the kubelet's certificate file store). Returns the current path.
pub fn store_as(cert_dir: &Path, prefix: &str, bundle: &str) -> Result<PathBuf, CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertError::Io { path, source }
    };
    std::fs::create_dir_all(cert_dir).map_err(io(cert_dir))?;
    let stamp = jiff_stamp();
    let file = cert_dir.join(format!("{prefix}-{stamp}.pem"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .map_err(io(&file))?;
    f.write_all(bundle.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&file))?;
    let current_name = format!("{prefix}-current.pem");
    let current = cert_dir.join(&current_name);
    let tmp = cert_dir.join(format!(".{current_name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&file, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &current).map_err(io(&current))?;
    Ok(current)
}

/// `YYYY-MM-DD-HH-MM-SS` in UTC, the kubelet's file name stamp.
fn jiff_stamp() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%d-%H-%M-%S")
        .to_string()
}

/// Hands the current client certificate to each new TLS handshake.
#[derive(Debug)]
pub struct Resolver(RwLock<Arc<CertifiedKey>>);

impl Resolver {
    /// A resolver starting with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Resolver {
        Resolver(RwLock::new(key))
    }

    /// Uses `key` for every connection opened from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut k) = self.0.write() {
            *k = key;
        }
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|k| k.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate with rcgen's default validity (1975-01-01 to 4096-01-01).
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["n".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn deadline_is_between_70_and_90_percent() {
        assert_eq!(rotation_deadline(1000, 2000, 0.0), 1700);
        assert_eq!(rotation_deadline(1000, 2000, 0.5), 1800);
        assert_eq!(rotation_deadline(1000, 2000, 0.99), 1898);
        assert_eq!(rotation_deadline(1000, 2000, 7.0), 1900);
        assert_eq!(rotation_deadline(2000, 1000, 0.5), 2000);
    }

    #[test]
    fn loads_a_bundle_with_its_validity_and_rejects_garbage() {
        let (cert, key) = self_signed();
        let bundle = format!("{cert}{key}");
        let l = load(bundle.as_bytes(), bundle.as_bytes()).unwrap();
        assert_eq!(l.not_before, 157_766_400); // 1975-01-01T00:00:00Z
        assert!(l.not_after > 4_000_000_000);
        assert!(load(cert.as_bytes(), b"not a key").is_err());
        assert!(load(b"", key.as_bytes()).is_err());
    }

    #[test]
    fn store_writes_a_private_file_and_swaps_the_current_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let first = format!("{cert}{key}");
        let current = store(dir.path(), &first).unwrap();
        assert_eq!(std::fs::read_to_string(&current).unwrap(), first);
        let target = std::fs::read_link(&current).unwrap();
        assert!(
            target
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("kubelet-client-2")
        );
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (cert2, key2) = self_signed();
        let second = format!("{cert2}{key2}");
        store(dir.path(), &second).unwrap();
        assert_eq!(std::fs::read_to_string(&current).unwrap(), second);
    }

    /// A wall clock stepped forward past the deadline ends the wait within a check interval;
    /// one stepped back makes it wait for the wall clock again; cancellation ends it.
    #[tokio::test(start_paused = true)]
    async fn a_rotation_wait_follows_the_wall_clock_through_steps() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicI64, Ordering};
        let clock = Arc::new(AtomicI64::new(0));
        let cancel = tokio_util::sync::CancellationToken::new();
        let start = tokio::time::Instant::now();
        let c = clock.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cancel2 = cancel.clone();
        tokio::spawn(async move {
            let done = sleep_until_wall(100_000, || c.load(Ordering::SeqCst), &cancel2).await;
            let _ = tx.send((done, start.elapsed()));
        });
        // 10 minutes pass on both clocks; then NTP steps the wall clock to 10 s before the
        // deadline.
        for _ in 0..10 {
            tokio::time::advance(WALL_CHECK).await;
            clock.fetch_add(60, Ordering::SeqCst);
        }
        clock.store(99_990, Ordering::SeqCst);
        tokio::time::advance(WALL_CHECK).await;
        clock.fetch_add(60, Ordering::SeqCst);
        let (done, took) = rx.await.unwrap();
        assert!(done);
        // Woken at most a check interval (plus the 10 s left) after the step, not 100,000 s on.
        assert!(took <= WALL_CHECK * 12, "{took:?}");

        // Stepped back: the wait goes on until the wall clock reaches the deadline.
        let c = clock.clone();
        clock.store(1_000, Ordering::SeqCst);
        let cancel3 = cancel.clone();
        let waiting = tokio::spawn(async move {
            sleep_until_wall(2_000, || c.load(Ordering::SeqCst), &cancel3).await
        });
        clock.store(-5_000, Ordering::SeqCst);
        tokio::time::advance(WALL_CHECK * 20).await;
        assert!(!waiting.is_finished());
        cancel.cancel();
        assert!(!waiting.await.unwrap());
    }

    /// A certificate whose deadline the node's clock is already past is not requested again
    /// within a check interval of the last rotation; with no rotation before, at once.
    #[tokio::test(start_paused = true)]
    async fn rotations_are_spaced_when_the_clock_is_past_a_fresh_deadline() {
        let cancel = tokio_util::sync::CancellationToken::new();
        let start = tokio::time::Instant::now();
        assert!(wait_for_rotation(10, || 20, None, &cancel).await);
        assert_eq!(start.elapsed(), std::time::Duration::ZERO);
        assert!(wait_for_rotation(10, || 20, Some(start), &cancel).await);
        assert_eq!(start.elapsed(), WALL_CHECK);
        // A deadline still ahead: the wall clock decides, however recent the last rotation.
        let now = tokio::time::Instant::now();
        let c = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let c2 = c.clone();
        let waiting = tokio::spawn(async move {
            wait_for_rotation(
                30,
                move || c2.load(std::sync::atomic::Ordering::SeqCst),
                Some(now),
                &tokio_util::sync::CancellationToken::new(),
            )
            .await
        });
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        c.store(30, std::sync::atomic::Ordering::SeqCst);
        assert!(waiting.await.unwrap());
    }
}
