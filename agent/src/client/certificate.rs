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
}
