//! The kubelet port's serving certificate by CSR (serverTLSBootstrap), as the kubelet's
//! pkg/kubelet/certificate/kubelet.go: a fresh ECDSA P-256 key, subject
//! `CN=system:node:<name>, O=system:nodes`, the node's hostnames as DNS names and its IPs as IP
//! SANs, signer `kubernetes.io/kubelet-serving`, usages digital signature + server auth; kept as
//! `kubelet-server-<timestamp>.pem` with `kubelet-server-current.pem` pointing at the newest,
//! served through a resolver each new TLS handshake reads (none until the first certificate is
//! signed: handshakes fail until then, as the kubelet's), and renewed at a jittered 70-90% of
//! its lifetime without a restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::ClientError;
use super::certificate::{self, Loaded};
use super::csr;

/// The file store's prefix: `kubelet-server-current.pem` and `kubelet-server-<stamp>.pem`.
pub const PREFIX: &str = "kubelet-server";

/// Hands the current serving certificate to each new TLS handshake; none before the first.
#[derive(Debug, Default)]
pub struct ServingResolver(RwLock<Option<Arc<CertifiedKey>>>);

impl ServingResolver {
    /// Serves `key` on every handshake from now on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut k) = self.0.write() {
            *k = Some(key);
        }
    }
}

impl ResolvesServerCert for ServingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok()?.clone()
    }
}

/// The SANs the serving certificate asks for (addressesToHostnamesAndIPs): the node's
/// hostnames, sorted and deduplicated, and its IPs, deduplicated in order.
pub fn sans(hostnames: &[String], ips: &[IpAddr]) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = hostnames.to_vec();
    names.sort();
    names.dedup();
    let mut seen = Vec::new();
    for ip in ips {
        if !seen.contains(ip) {
            seen.push(*ip);
        }
    }
    (names, seen)
}

/// The current certificate in `cert_dir`, if there is one still valid at `now`.
fn load_current(cert_dir: &Path, now: i64) -> Option<Loaded> {
    let path = cert_dir.join(format!("{PREFIX}-current.pem"));
    let pem = std::fs::read(&path).ok()?;
    match certificate::load(&pem, &pem) {
        Ok(l) if l.not_after > now => Some(l),
        Ok(_) => None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the stored serving certificate cannot be used");
            None
        }
    }
}

/// What the serving certificate manager needs.
pub struct Serving {
    /// The API client (the node's credentials).
    pub client: kube::Client,
    /// The node's name.
    pub node: String,
    /// Its hostnames (DNS SANs).
    pub hostnames: Vec<String>,
    /// Its IPs (IP SANs); the kubelet requests nothing without one.
    pub ips: Vec<IpAddr>,
    /// Where certificates are kept.
    pub cert_dir: PathBuf,
    /// What the kubelet port serves.
    pub resolver: Arc<ServingResolver>,
}

impl Serving {
    /// Keeps a signed serving certificate in the resolver until cancelled: the stored one if it
    /// is still valid, else a new one by CSR (waiting for its approval); renewed at its rotation
    /// deadline; a failed attempt retried with back-off (1 s doubling to 5 min).
    pub async fn run(self, cancel: CancellationToken) {
        if self.ips.is_empty() {
            warn!(node = %self.node, "no node IP: no serving certificate is requested");
            return;
        }
        let now = || k8s_openapi::jiff::Timestamp::now().as_second();
        let mut current = load_current(&self.cert_dir, now());
        let mut last = None;
        loop {
            if let Some(l) = &current {
                self.resolver.set(l.key.clone());
                let deadline = certificate::rotation_deadline(
                    l.not_before,
                    l.not_after,
                    crate::backoff::jitter(),
                );
                let in_secs = (deadline - now()).max(0);
                info!(node = %self.node, not_after = l.not_after, in_secs, "serving certificate rotation scheduled");
                if !certificate::wait_for_rotation(deadline, now, last, &cancel).await {
                    return;
                }
            }
            let mut backoff = Duration::from_secs(1);
            loop {
                match self.renew(&cancel).await {
                    Ok(next) => {
                        info!(node = %self.node, not_after = next.not_after, "serving certificate signed");
                        current = Some(next);
                        last = Some(tokio::time::Instant::now());
                        break;
                    }
                    Err(e) => {
                        warn!(node = %self.node, error = %e, "serving certificate request failed; retrying in {backoff:?}")
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }

    /// One request: a new key and CSR, stored once signed.
    async fn renew(&self, cancel: &CancellationToken) -> Result<Loaded, ClientError> {
        let (names, ips) = sans(&self.hostnames, &self.ips);
        let (request, key) = csr::new_serving_request(&self.node, &names, &ips)?;
        let cert = csr::request_signed(
            &self.client,
            &request,
            (csr::SERVING_SIGNER, csr::SERVING_USAGES),
            cancel,
        )
        .await?;
        let loaded = certificate::load(cert.as_bytes(), key.as_bytes())?;
        certificate::store_as(&self.cert_dir, PREFIX, &format!("{cert}{key}"))?;
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_are_deduplicated() {
        let (names, ips) = sans(
            &["b".into(), "a".into(), "b".into()],
            &[
                IpAddr::from([10, 0, 0, 2]),
                IpAddr::from([10, 0, 0, 1]),
                IpAddr::from([10, 0, 0, 2]),
            ],
        );
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            ips,
            [IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 1])]
        );
    }

    #[test]
    fn the_request_carries_the_nodes_names_and_ips() {
        use x509_parser::prelude::FromDer;
        let (req, _) = csr::new_serving_request(
            "worker-1",
            &["worker-1".into()],
            &[IpAddr::from([198, 18, 0, 7])],
        )
        .unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(req.as_bytes())
            .map(|d: rustls::pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
            .unwrap();
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let subject = parsed.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:worker-1"), "{subject}");
        let exts = format!(
            "{:?}",
            parsed.requested_extensions().map(|e| e.collect::<Vec<_>>())
        );
        assert!(exts.contains("worker-1"), "{exts}");
        assert!(exts.contains("IPAddress([198, 18, 0, 7])"), "{exts}");
        assert!(exts.contains("DNSName(\"worker-1\")"), "{exts}");
    }

    #[test]
    fn a_stored_certificate_is_reused_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["n".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        certificate::store_as(
            dir.path(),
            PREFIX,
            &format!("{}{}", cert.pem(), key.serialize_pem()),
        )
        .unwrap();
        assert!(load_current(dir.path(), 1_000_000_000).is_some());
        // Past rcgen's default not_after (4096-01-01).
        assert!(load_current(dir.path(), 70_000_000_000).is_none());
        assert!(load_current(&dir.path().join("none"), 0).is_none());
    }
}
