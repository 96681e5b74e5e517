//! Typed errors of CRI calls: the gRPC status is turned into a domain error once, here.

use std::time::Duration;

/// The gRPC status code of a failed CRI call, kept so callers can branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The call was cancelled.
    Cancelled,
    /// An error the runtime could not classify.
    Unknown,
    /// The request was malformed (bad config, bad id format).
    InvalidArgument,
    /// The runtime's own deadline expired.
    DeadlineExceeded,
    /// The object does not exist (sandbox, container or image already gone).
    NotFound,
    /// The object exists already (e.g. a sandbox name is reserved).
    AlreadyExists,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// The runtime ran out of something.
    ResourceExhausted,
    /// The object is not in a state that allows the call.
    FailedPrecondition,
    /// The call was aborted by a concurrent change.
    Aborted,
    /// A value was out of range.
    OutOfRange,
    /// The runtime does not implement this call.
    Unimplemented,
    /// The runtime failed internally.
    Internal,
    /// The runtime could not be reached.
    Unavailable,
    /// Data was lost.
    DataLoss,
    /// Missing or invalid credentials.
    Unauthenticated,
}

impl From<tonic::Code> for Code {
    fn from(code: tonic::Code) -> Self {
        use tonic::Code as T;
        match code {
            T::Cancelled => Code::Cancelled,
            T::InvalidArgument => Code::InvalidArgument,
            T::DeadlineExceeded => Code::DeadlineExceeded,
            T::NotFound => Code::NotFound,
            T::AlreadyExists => Code::AlreadyExists,
            T::PermissionDenied => Code::PermissionDenied,
            T::ResourceExhausted => Code::ResourceExhausted,
            T::FailedPrecondition => Code::FailedPrecondition,
            T::Aborted => Code::Aborted,
            T::OutOfRange => Code::OutOfRange,
            T::Unimplemented => Code::Unimplemented,
            T::Internal => Code::Internal,
            T::Unavailable => Code::Unavailable,
            T::DataLoss => Code::DataLoss,
            T::Unauthenticated => Code::Unauthenticated,
            T::Ok | T::Unknown => Code::Unknown,
        }
    }
}

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The endpoint string is not `unix:///path`, `/path` or `tcp://host:port`.
    #[error("invalid CRI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The runtime could not be reached (socket absent, connection refused, runtime restarting).
    #[error("CRI runtime at {endpoint} is unavailable ({op}): {message}")]
    Unavailable {
        /// The endpoint dialled.
        endpoint: String,
        /// The CRI method, e.g. `RunPodSandbox`.
        op: &'static str,
        /// The transport's explanation.
        message: String,
    },
    /// The call did not finish within its deadline.
    #[error("CRI {op} at {endpoint} timed out after {after:?}")]
    Timeout {
        /// The endpoint dialled.
        endpoint: String,
        /// The CRI method.
        op: &'static str,
        /// The deadline that expired.
        after: Duration,
    },
    /// The runtime implements a runtime API version other than the kubelet's 0.1.0.
    #[error(
        "CRI runtime at {endpoint} ({runtime}) implements runtime API version {api_version:?}, bosun (as the kubelet) needs 0.1.0"
    )]
    UnsupportedVersion {
        /// The endpoint dialled.
        endpoint: String,
        /// The runtime's name and version.
        runtime: String,
        /// The runtime API version it reported (VersionResponse.version).
        api_version: String,
    },
    /// The runtime does not implement this method (e.g. GetContainerEvents on containerd 1.6).
    #[error("CRI runtime at {endpoint} does not implement {op}: {message}")]
    Unimplemented {
        /// The endpoint dialled.
        endpoint: String,
        /// The CRI method.
        op: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// The runtime answered with an error status.
    #[error("CRI {op} failed: {code:?}: {message}")]
    Status {
        /// The CRI method.
        op: &'static str,
        /// The gRPC code.
        code: Code,
        /// The runtime's message.
        message: String,
    },
}

impl CriError {
    /// The gRPC code of this error, as the runtime or the transport gave it.
    pub fn code(&self) -> Code {
        match self {
            CriError::InvalidEndpoint { .. } => Code::InvalidArgument,
            CriError::Unavailable { .. } => Code::Unavailable,
            CriError::Timeout { .. } => Code::DeadlineExceeded,
            CriError::UnsupportedVersion { .. } => Code::FailedPrecondition,
            CriError::Unimplemented { .. } => Code::Unimplemented,
            CriError::Status { code, .. } => *code,
        }
    }

    /// True when the object is already gone: callers removing it treat this as success.
    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }

    /// True when the runtime could not be reached or did not answer in time.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CriError::Unavailable { .. } | CriError::Timeout { .. }
        )
    }

    /// True when the runtime does not implement the method.
    pub fn is_unimplemented(&self) -> bool {
        self.code() == Code::Unimplemented
    }

    pub(crate) fn from_status(endpoint: &str, op: &'static str, status: tonic::Status) -> Self {
        let message = describe(&status);
        // tonic reports a broken or refused connection as Unknown "transport error".
        let transport = status.code() == tonic::Code::Unknown
            && status.message().starts_with("transport error");
        match status.code() {
            _ if transport => CriError::Unavailable {
                endpoint: endpoint.to_string(),
                op,
                message,
            },
            tonic::Code::Unavailable => CriError::Unavailable {
                endpoint: endpoint.to_string(),
                op,
                message,
            },
            tonic::Code::Unimplemented => CriError::Unimplemented {
                endpoint: endpoint.to_string(),
                op,
                message,
            },
            code => CriError::Status {
                op,
                code: code.into(),
                message,
            },
        }
    }
}

/// The status message followed by its chain of sources (the transport's io error, say).
fn describe(status: &tonic::Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let text = err.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = err.source();
    }
    out
}

/// Result of a CRI call.
pub type Result<T> = std::result::Result<T, CriError>;
