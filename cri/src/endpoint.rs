//! CRI endpoints (`unix:///run/containerd/containerd.sock`, `tcp://host:port`) and the lazy gRPC channel to them.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};

use crate::error::{CriError, Result};

/// Where a CRI runtime listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, a bare absolute `/path` (as older kubelet flags allowed) or `tcp://host:port`.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: &str| CriError::InvalidEndpoint {
            endpoint: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid(
                    "unix endpoint needs an absolute path: unix:///path",
                ));
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if s.starts_with('/') {
            Ok(Endpoint::Unix(PathBuf::from(s)))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(Endpoint::Tcp(addr.to_string()))
                }
                _ => Err(invalid("tcp endpoint needs host:port")),
            }
        } else if s.is_empty() {
            Err(invalid("empty endpoint"))
        } else {
            Err(invalid("scheme must be unix:// or tcp://"))
        }
    }

    /// A gRPC channel that dials on first use and redials after the runtime restarts.
    pub(crate) fn channel(&self, connect_timeout: Duration) -> Result<Channel> {
        match self {
            Endpoint::Unix(path) => {
                let path = path.clone();
                // The URI is a placeholder: the connector ignores it and dials the socket.
                let ep = TonicEndpoint::from_static("http://cri.invalid")
                    .connect_timeout(connect_timeout);
                Ok(
                    ep.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream =
                                tokio::net::UnixStream::connect(&path).await.map_err(|e| {
                                    std::io::Error::new(
                                        e.kind(),
                                        format!("dial {}: {e}", path.display()),
                                    )
                                })?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    })),
                )
            }
            Endpoint::Tcp(addr) => {
                let ep = TonicEndpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| CriError::InvalidEndpoint {
                        endpoint: self.to_string(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(connect_timeout);
                Ok(ep.connect_lazy())
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_the_kubelet_accepts() {
        let cases: &[(&str, Option<Endpoint>)] = &[
            (
                "unix:///run/containerd/containerd.sock",
                Some(Endpoint::Unix("/run/containerd/containerd.sock".into())),
            ),
            (
                "/run/crio/crio.sock",
                Some(Endpoint::Unix("/run/crio/crio.sock".into())),
            ),
            (
                "tcp://127.0.0.1:3735",
                Some(Endpoint::Tcp("127.0.0.1:3735".into())),
            ),
            (
                "tcp://localhost:80/",
                Some(Endpoint::Tcp("localhost:80".into())),
            ),
            ("unix://relative.sock", None),
            ("tcp://noport", None),
            ("tcp://:80", None),
            ("npipe:////./pipe/x", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = Endpoint::parse(input).ok();
            assert_eq!(&got, want, "{input}");
        }
    }

    #[test]
    fn invalid_endpoint_error_names_it() {
        let err = Endpoint::parse("http://x").unwrap_err();
        assert!(err.to_string().contains("\"http://x\""), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["unix:///a/b.sock", "tcp://h:1"] {
            assert_eq!(Endpoint::parse(s).unwrap().to_string(), s);
        }
    }
}
