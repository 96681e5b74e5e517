//! A client of a node's kubelet port (bosun's or the kubelet's :10250): HTTPS verified against the
//! node's serving certificate, with an optional client certificate or bearer token; and client
//! certificates minted by the cluster CA for any user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use crate::env::Env;

/// An answer of the kubelet port.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type header.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, panicking with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// A client of one kubelet port.
pub struct KubeletClient {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: Option<String>,
    server_name: Option<String>,
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl KubeletClient {
    /// A client of `addr` trusting `server_ca` (the node's serving certificate, or its CA), with
    /// the client certificate and key `client` if given.
    pub fn new(addr: SocketAddr, server_ca: &Path, client: Option<(&Path, &Path)>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(server_ca) {
            roots.add(c).expect("server CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let tls = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    certs(cert),
                    PrivateKeyDer::from_pem_file(key).expect("client key"),
                )
                .expect("client cert"),
        };
        KubeletClient {
            addr,
            tls: Arc::new(tls),
            token: None,
            server_name: None,
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.trim().to_string());
        self
    }

    /// The same client verifying the server's certificate for DNS name `name` instead of the
    /// address (the upstream kubelet's self-signed certificate names only the node's hostname).
    pub fn with_server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_string());
        self
    }

    /// GET `path`; Err when the connection or TLS handshake fails, or no answer comes in 30 s.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(hyper::Method::GET, path).await
    }

    /// POST `path` with an empty body, as [`KubeletClient::get`].
    pub async fn post(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(hyper::Method::POST, path).await
    }

    /// `method` `path` with an empty body, as [`KubeletClient::get`].
    pub async fn request(&self, method: hyper::Method, path: &str) -> anyhow::Result<Answer> {
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.request_inner(method.clone(), path),
        )
        .await
        .map_err(|_| anyhow::anyhow!("{method} {path}: no answer within 30 s"))?
    }

    async fn request_inner(&self, method: hyper::Method, path: &str) -> anyhow::Result<Answer> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = match &self.server_name {
            Some(n) => ServerName::try_from(n.clone())?,
            None => ServerName::IpAddress(self.addr.ip().into()),
        };
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = send.send_request(req.body(Empty::<Bytes>::new())?).await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}

/// A client certificate for `user` in `groups`, signed by the cluster CA, written to `dir`;
/// returns (cert, key) paths.
pub fn mint_client_cert(dir: &Path, user: &str, groups: &[&str]) -> (PathBuf, PathBuf) {
    let env = Env::cluster();
    let ca = (
        Path::new(env.var("CLUSTER_CA")),
        Path::new(env.var("CLUSTER_CA_KEY")),
    );
    mint_client_cert_by(ca, dir, user, groups)
}

/// Runs openssl with `args`; panics with its stderr when it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new self-signed CA (a day long) written to `dir` as `<name>.crt` and `<name>.key`; returns
/// (cert, key) paths.
pub fn mint_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &crt.display().to_string(),
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    (crt, key)
}

/// Who signs a leaf certificate: itself, or a CA `(cert, key)`.
enum Signer<'a> {
    SelfSigned,
    Ca(&'a Path, &'a Path),
}

/// A leaf certificate (a day long) for `subject` with the X.509 extensions `ext`: a new RSA key
/// written to `key`, its request to `<cert>.csr`, the certificate to `cert`, signed by `signer`.
fn mint_leaf(cert: &Path, key: &Path, subject: &str, ext: &str, signer: Signer<'_>) {
    let csr = cert.with_extension("csr");
    let ext_file = cert.with_extension("ext");
    std::fs::write(&ext_file, ext).expect("write ext");
    let p = |p: &Path| p.display().to_string();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p(key),
        "-out",
        &p(&csr),
        "-subj",
        subject,
    ]);
    let serial = serial();
    let (key_s, ca_s, ca_key_s);
    let signed_by: Vec<&str> = match signer {
        Signer::SelfSigned => {
            key_s = p(key);
            vec!["-signkey", &key_s]
        }
        Signer::Ca(ca, ca_key) => {
            (ca_s, ca_key_s) = (p(ca), p(ca_key));
            vec!["-CA", &ca_s, "-CAkey", &ca_key_s, "-set_serial", &serial]
        }
    };
    let (csr_s, cert_s, ext_s) = (p(&csr), p(cert), p(&ext_file));
    let mut args = vec!["x509", "-req", "-in", &csr_s];
    args.extend(signed_by);
    args.extend(["-days", "1", "-out", &cert_s, "-extfile", &ext_s]);
    openssl(&args);
}

/// A self-signed serving certificate (a day long) for `host` and `ip`, written to `cert` and
/// `key`: an end-entity certificate for server authentication (no CA flag, which `req -x509`'s
/// defaults would add and a verifying client refuses).
pub fn mint_serving_cert(cert: &Path, key: &Path, host: &str, ip: &str) {
    mint_leaf(
        cert,
        key,
        &format!("/CN={host}"),
        &format!(
            "subjectAltName=DNS:{host},IP:{ip}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        ),
        Signer::SelfSigned,
    );
}

/// A client certificate for `user` in `groups`, signed by the CA `(cert, key)`, written to
/// `dir`; returns (cert, key) paths.
pub fn mint_client_cert_by(
    ca: (&Path, &Path),
    dir: &Path,
    user: &str,
    groups: &[&str],
) -> (PathBuf, PathBuf) {
    let base = dir.join(user.replace(':', "_"));
    let (key, crt) = (base.with_extension("key"), base.with_extension("crt"));
    let mut subject = String::new();
    for g in groups {
        subject.push_str(&format!("/O={g}"));
    }
    subject.push_str(&format!("/CN={user}"));
    mint_leaf(
        &crt,
        &key,
        &subject,
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        Signer::Ca(ca.0, ca.1),
    );
    (crt, key)
}

/// A serial number unique enough for test certificates (no serial file next to the shared CA).
fn serial() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}", nanos ^ (u128::from(std::process::id()) << 64))
}
