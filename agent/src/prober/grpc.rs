//! gRPC probes: `grpc.health.v1.Health/Check` with the probe's `service` on the pod IP, over a
//! connection made for the probe, everything within the timeout; SERVING passes. As the kubelet's
//! blocking dial, a connection that fails is retried until the timeout, whose message it gets.

use std::time::Duration;

use bosun_proto::health_v1::health_check_response::ServingStatus;
use bosun_proto::health_v1::{HealthCheckRequest, health_client::HealthClient};

use super::ProbeResult;
use super::exec::go_duration;
use super::tcp::join_host_port;

/// Calls Check on `host:port` for `service`.
pub async fn probe(host: &str, port: i32, service: &str, timeout: Duration) -> ProbeResult {
    let addr = match u16::try_from(port) {
        Ok(p) if p > 0 => join_host_port(host, p),
        _ => return ProbeResult::Error(format!("invalid port number: {port}")),
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e,
        Err(e) => return ProbeResult::Error(e.to_string()),
    };
    let endpoint = match endpoint.user_agent(super::http::user_agent()) {
        Ok(e) => e.connect_timeout(timeout),
        Err(e) => return ProbeResult::Error(e.to_string()),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let Some(channel) = connect(&endpoint, deadline).await else {
        return ProbeResult::Failure(format!(
            "timeout: failed to connect service {addr:?} within {}: context deadline exceeded",
            go_duration(timeout)
        ));
    };
    let mut client = HealthClient::new(channel);
    let req = HealthCheckRequest {
        service: service.to_string(),
    };
    let timed_out = || {
        ProbeResult::Failure(format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        ))
    };
    let resp = match tokio::time::timeout_at(deadline, client.check(req)).await {
        Err(_) => return timed_out(),
        Ok(Err(s)) if s.code() == tonic::Code::DeadlineExceeded => return timed_out(),
        Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {
            return ProbeResult::Failure(format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                s.message()
            ));
        }
        Ok(Err(s)) => {
            return ProbeResult::Failure(format!(
                "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                s.code(),
                s.message()
            ));
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        ProbeResult::Success("service healthy".into())
    } else {
        ProbeResult::Failure(format!(
            "service unhealthy (responded with {:?})",
            status.as_str_name()
        ))
    }
}

/// grpc-go's connection back-off: the first retry after 1 s, each next one 1.6 times later.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);

/// Connects to `endpoint` as grpc-go's blocking dial (the kubelet's): a failed attempt (refused,
/// unreachable) is retried after grpc's connection back-off until `deadline`; `None` when the
/// deadline passed without a connection.
async fn connect(
    endpoint: &tonic::transport::Endpoint,
    deadline: tokio::time::Instant,
) -> Option<tonic::transport::Channel> {
    let mut delay = RECONNECT_FIRST;
    loop {
        match tokio::time::timeout_at(deadline, endpoint.connect()).await {
            Ok(Ok(c)) => return Some(c),
            Ok(Err(e)) => tracing::debug!(error = %e, "grpc probe: connect failed, retrying"),
            Err(_) => return None,
        }
        let next = tokio::time::Instant::now() + delay;
        if next >= deadline {
            tokio::time::sleep_until(deadline).await;
            return None;
        }
        tokio::time::sleep_until(next).await;
        delay = delay.mul_f64(1.6);
    }
}

#[cfg(test)]
mod tests;
