//! Certificate signing requests for the node's client certificate, as the kubelet makes them:
//! a fresh ECDSA P-256 key, subject `CN=system:node:<name>, O=system:nodes`, signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, usages digital signature + client auth.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// The signer of kubelet client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long to wait for the signed certificate, as the kubelet's bootstrap.
const WAIT: Duration = Duration::from_secs(15 * 60);

/// Why no certificate came.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Generating the key or the request failed.
    #[error("creating the certificate request: {0}")]
    Generate(#[from] rcgen::Error),
    /// The API refused or failed.
    #[error("certificate signing request: {0}")]
    Api(#[from] kube::Error),
    /// The request was denied or failed.
    #[error("certificate signing request {name} {how}: {message}")]
    Refused {
        /// The CSR's name.
        name: String,
        /// `denied` or `failed`.
        how: &'static str,
        /// The condition's message.
        message: String,
    },
    /// No certificate within the wait, or stopped.
    #[error("no signed certificate for {0} (timed out or stopped)")]
    Timeout(String),
}

/// The signer of kubelet serving certificates (serverTLSBootstrap).
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The client certificate's usages (DefaultKubeletClientGetUsages for an ECDSA key).
pub const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];
/// The serving certificate's usages (DefaultKubeletServingGetUsages for an ECDSA key).
pub const SERVING_USAGES: &[&str] = &["digital signature", "server auth"];

/// A new key and the PEM certificate request for node `node`: (request, key).
pub fn new_request(node: &str) -> Result<(String, String), CsrError> {
    new_serving_request(node, &[], &[])
}

/// A new key and the PEM request of node `node` with the serving certificate's SANs (the
/// kubelet's serving template: its hostnames as DNS names, its IPs): (request, key).
pub fn new_serving_request(
    node: &str,
    hostnames: &[String],
    ips: &[std::net::IpAddr],
) -> Result<(String, String), CsrError> {
    let key = rcgen::KeyPair::generate()?;
    // rcgen makes an IP SAN of a name that parses as an IP, a DNS SAN of the others.
    let names: Vec<String> = hostnames
        .iter()
        .cloned()
        .chain(ips.iter().map(|ip| ip.to_string()))
        .collect();
    let mut params = rcgen::CertificateParams::new(names)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Submits `request` for the client certificate and waits for the signed certificate (PEM).
pub async fn request_certificate(
    client: &kube::Client,
    request: &str,
    cancel: &CancellationToken,
) -> Result<String, CsrError> {
    request_signed(client, request, (SIGNER, CLIENT_USAGES), cancel).await
}

/// Submits `request` to `signer` with `usages` and waits for the signed certificate (PEM).
pub async fn request_signed(
    client: &kube::Client,
    request: &str,
    (signer, usages): (&str, &[&str]),
    cancel: &CancellationToken,
) -> Result<String, CsrError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.as_bytes().to_vec()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let created = api.create(&PostParams::default(), &csr).await?;
    let name = created.metadata.name.unwrap_or_default();
    info!(csr = %name, signer, "certificate signing request submitted; waiting for the certificate");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut step = Duration::from_millis(200);
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(step) => {}
        }
        step = (step * 2).min(Duration::from_secs(2));
        let csr = match api.get(&name).await {
            Ok(c) => c,
            Err(e) => {
                debug!(csr = %name, error = %e, "waiting for the certificate");
                continue;
            }
        };
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            let how = match c.type_.as_str() {
                "Denied" if c.status == "True" => "denied",
                "Failed" if c.status == "True" => "failed",
                _ => continue,
            };
            return Err(CsrError::Refused {
                name,
                how,
                message: c.message.clone().unwrap_or_default(),
            });
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            info!(csr = %name, "certificate signed");
            return String::from_utf8(cert.0).map_err(|_| CsrError::Refused {
                name,
                how: "failed",
                message: "certificate is not PEM text".into(),
            });
        }
    }
    Err(CsrError::Timeout(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names_the_node_and_its_group() {
        use x509_parser::prelude::FromDer;
        let (req, key) = new_request("worker-1").unwrap();
        assert!(req.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key.contains("PRIVATE KEY"));
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(req.as_bytes())
            .map(|d: rustls::pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
            .unwrap();
        let (_, parsed) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        let subject = parsed.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:worker-1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }
}
