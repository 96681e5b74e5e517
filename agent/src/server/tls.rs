//! The serving certificate and the TLS configuration of the :10250 server.
//!
//! As the kubelet: `tlsCertFile`/`tlsPrivateKeyFile` when given, else a self-signed certificate
//! `<cert-dir>/kubelet.crt` + `kubelet.key`, generated once and reused. Client certificates are
//! requested (never required) as Go's `tls.RequestClientCert`: the handshake proves the client
//! holds the key, and the chain is verified against `authentication.x509.clientCAFile` after it
//! ([`ServerTls::verified`]): a verified certificate authenticates its subject; a request without
//! one, or with one the CA did not sign, goes on to token or anonymous authentication.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tracing::info;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or holds no PEM of the expected kind.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The self-signed certificate could not be generated.
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The self-signed certificate could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// rustls refused the certificates or the key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle could not be used to verify client certificates.
    #[error("client CA {path}: {message}")]
    ClientCa {
        /// The bundle.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub struct ServingCert {
    /// PEM certificate (chain) file.
    pub cert_file: PathBuf,
    /// PEM private key file.
    pub key_file: PathBuf,
}

impl ServingCert {
    /// The configured files, or the kubelet's self-signed pair under `cert_dir`, generated for
    /// `host` and `ips` when missing.
    pub fn resolve(
        tls_cert_file: Option<&Path>,
        tls_key_file: Option<&Path>,
        cert_dir: &Path,
        host: &str,
        ips: &[IpAddr],
    ) -> Result<ServingCert, TlsError> {
        if let (Some(cert), Some(key)) = (tls_cert_file, tls_key_file) {
            return Ok(ServingCert {
                cert_file: cert.to_path_buf(),
                key_file: key.to_path_buf(),
            });
        }
        let cert_file = cert_dir.join("kubelet.crt");
        let key_file = cert_dir.join("kubelet.key");
        if load_certs(&cert_file).is_ok() && load_key(&key_file).is_ok() {
            return Ok(ServingCert {
                cert_file,
                key_file,
            });
        }
        let (cert_pem, key_pem) = self_signed(host, ips)?;
        std::fs::create_dir_all(cert_dir).map_err(|source| TlsError::Write {
            path: cert_dir.to_path_buf(),
            source,
        })?;
        write_file(&cert_file, cert_pem.as_bytes(), 0o644)?;
        write_file(&key_file, key_pem.as_bytes(), 0o600)?;
        info!(cert = %cert_file.display(), "generated a self-signed serving certificate");
        Ok(ServingCert {
            cert_file,
            key_file,
        })
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::atomic_file::write(path, data, mode).map_err(|source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A self-signed certificate for `host` (CN and DNS SAN) and `ips` (IP SANs), valid for a year
/// from now as the kubelet's; returns (certificate PEM, key PEM).
pub fn self_signed(host: &str, ips: &[IpAddr]) -> Result<(String, String), TlsError> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
    let mut params = CertificateParams::new(vec![host.to_string()])?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    dn.push(DnType::CommonName, format!("{host}@{now}"));
    params.distinguished_name = dn;
    let (y, m, d) = civil_from_days((now / 86_400) as i64);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + 1, m, d.min(28));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Where the kubelet port's serving certificate comes from.
#[derive(Clone)]
pub enum ServingSource {
    /// PEM files (tlsCertFile/tlsPrivateKeyFile, or the self-signed pair), reloaded when they
    /// change.
    Files(ServingCert),
    /// The serverTLSBootstrap certificate, read from the resolver at each handshake.
    Resolver(Arc<dyn rustls::server::ResolvesServerCert>),
}

/// What the kubelet port's TLS configuration is built from, again whenever a file changes.
#[derive(Clone)]
pub struct TlsSource {
    /// The serving certificate.
    pub serving: ServingSource,
    /// clientCAFile: the bundle client certificates are verified against.
    pub client_ca: Option<PathBuf>,
}

/// The kubelet port's TLS as built from a [`TlsSource`]: the rustls configuration and, with a
/// client CA, the verifier of the client certificates presented in its handshakes.
pub struct ServerTls {
    /// What connections are accepted with.
    pub config: Arc<rustls::ServerConfig>,
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
}

impl ServerTls {
    /// The end-entity certificate of the client's `chain` when the client CA verifies it (for
    /// client authentication, now); None without a client CA or a chain it does not verify.
    pub fn verified<'c>(
        &self,
        chain: &'c [CertificateDer<'static>],
    ) -> Option<&'c CertificateDer<'static>> {
        let (end, intermediates) = chain.split_first()?;
        let verifier = self.client_ca.as_ref()?;
        verifier
            .verify_client_cert(end, intermediates, UnixTime::now())
            .ok()
            .map(|_| end)
    }
}

impl TlsSource {
    /// The TLS configuration from the files as they are now.
    pub fn build(&self) -> Result<Arc<ServerTls>, TlsError> {
        let (builder, client_ca) = client_auth(self.client_ca.as_deref())?;
        let mut config = match &self.serving {
            ServingSource::Files(files) => builder
                .with_single_cert(load_certs(&files.cert_file)?, load_key(&files.key_file)?)?,
            ServingSource::Resolver(r) => builder.with_cert_resolver(r.clone()),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(ServerTls {
            config: Arc::new(config),
            client_ca,
        }))
    }

    /// The files the configuration is read from.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let ServingSource::Files(f) = &self.serving {
            files.push(f.cert_file.clone());
            files.push(f.key_file.clone());
        }
        files.extend(self.client_ca.clone());
        files
    }
}

/// Go's `tls.RequestClientCert`, as the kubelet's port asks for client certificates: one is
/// requested, and the handshake's signature checked with its key (the client holds it), but the
/// chain is not judged in the handshake; [`ServerTls::verified`] judges it after, so a
/// certificate another CA signed is an unauthenticated request (401), not a failed handshake.
#[derive(Debug)]
struct RequestClientCert(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

type WantsCert = rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>;

/// The builder up to client authentication, and the verifier of client certificates: with
/// `client_ca`, certificates requested (never required) and judged after the handshake.
fn client_auth(
    client_ca: Option<&Path>,
) -> Result<(WantsCert, Option<Arc<dyn ClientCertVerifier>>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?;
    let Some(path) = client_ca else {
        return Ok((builder.with_no_client_auth(), None));
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let requested = Arc::new(RequestClientCert(verifier.clone()));
    Ok((builder.with_client_cert_verifier(requested), Some(verifier)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_722), (2023, 12, 31));
        assert_eq!(civil_from_days(20_517), (2026, 3, 5));
    }

    #[test]
    fn self_signed_pair_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ips = [IpAddr::from([198, 18, 0, 1])];
        let a = ServingCert::resolve(None, None, dir.path(), "node-a", &ips).unwrap();
        let pem = std::fs::read_to_string(&a.cert_file).unwrap();
        let b = ServingCert::resolve(None, None, dir.path(), "node-a", &ips).unwrap();
        assert_eq!(pem, std::fs::read_to_string(&b.cert_file).unwrap());
        TlsSource {
            serving: ServingSource::Files(b.clone()),
            client_ca: None,
        }
        .build()
        .unwrap();
        let der = load_certs(&b.cert_file).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let names = format!("{:?}", sans.value.general_names);
        assert!(names.contains("node-a"), "{names}");
        assert!(names.contains("198"), "{names}");
    }

    /// A CA (its PEM file in `dir`) and a client certificate chain it signed.
    fn ca_and_client(dir: &Path, name: &str) -> (PathBuf, Vec<CertificateDer<'static>>) {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name}-ca"));
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name}-user"));
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = client
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&file, issuer.pem()).unwrap();
        (file, vec![cert.der().clone()])
    }

    /// Client certificates are asked for, never required, and judged after the handshake: the
    /// client CA's own pass, another CA's do not (an unauthenticated request, as the kubelet's
    /// RequestClientCert), and without a client CA none is asked for or judged.
    #[test]
    fn client_certificates_are_judged_against_the_client_ca_after_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let serving = ServingCert::resolve(None, None, dir.path(), "node-a", &[]).unwrap();
        let (ca, ours) = ca_and_client(dir.path(), "ours");
        let (_, theirs) = ca_and_client(dir.path(), "theirs");
        let source = |client_ca: Option<PathBuf>| TlsSource {
            serving: ServingSource::Files(serving.clone()),
            client_ca,
        };
        let tls = source(Some(ca)).build().unwrap();
        let handshake = RequestClientCert(tls.client_ca.clone().unwrap());
        assert!(handshake.offer_client_auth() && !handshake.client_auth_mandatory());
        assert!(
            handshake
                .verify_client_cert(&theirs[0], &[], UnixTime::now())
                .is_ok(),
            "the handshake does not judge the chain"
        );
        assert_eq!(tls.verified(&ours), Some(&ours[0]));
        assert_eq!(tls.verified(&theirs), None);
        assert_eq!(tls.verified(&[]), None);
        let without = source(None).build().unwrap();
        assert!(without.client_ca.is_none());
        assert_eq!(without.verified(&ours), None);
    }
}
