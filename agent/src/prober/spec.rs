//! A container's probe as the prober runs it: its type, its handler and its timing, with the API's
//! defaults filled in (a static pod's manifest may leave them unset).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe: the kubelet's probeType, printed as in its events and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeType {
    /// Gates the container's `ready`.
    Readiness,
    /// Restarts the container when it fails.
    Liveness,
    /// Holds the other probes off until it passes; restarts the container when it fails.
    Startup,
}

impl ProbeType {
    /// Every probe type, in the order a container's probes are registered.
    pub const ALL: [ProbeType; 3] = [
        ProbeType::Startup,
        ProbeType::Liveness,
        ProbeType::Readiness,
    ];

    /// The kubelet's name (`Readiness`, `Liveness`, `Startup`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeType::Readiness => "Readiness",
            ProbeType::Liveness => "Liveness",
            ProbeType::Startup => "Startup",
        }
    }

    /// The container's probe of this type.
    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeType::Readiness => c.readiness_probe.as_ref(),
            ProbeType::Liveness => c.liveness_probe.as_ref(),
            ProbeType::Startup => c.startup_probe.as_ref(),
        }
    }
}

impl fmt::Display for ProbeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq)]
pub enum Handler {
    /// Run a command in the container (CRI ExecSync); `$(VAR)` expanded from static env values.
    Exec(Vec<String>),
    /// GET a URL.
    Http(HTTPGetAction),
    /// Open a TCP connection to (host or the pod IP, port).
    Tcp {
        /// Host; the pod IP when empty.
        host: String,
        /// Port by number or container port name.
        port: IntOrString,
    },
    /// Call grpc.health.v1.Health/Check on the pod IP.
    Grpc {
        /// Port number.
        port: i32,
        /// The `service` of the request.
        service: String,
    },
    /// No handler: the kubelet's "missing probe handler" error.
    Missing,
}

/// One probe of one container, ready to schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// Which probe.
    pub kind: ProbeType,
    /// What it runs.
    pub handler: Handler,
    /// initialDelaySeconds.
    pub initial_delay: Duration,
    /// periodSeconds (default 10).
    pub period: Duration,
    /// timeoutSeconds (default 1).
    pub timeout: Duration,
    /// successThreshold (default 1).
    pub success_threshold: u32,
    /// failureThreshold (default 3).
    pub failure_threshold: u32,
    /// The probe's terminationGracePeriodSeconds, for the kill after a liveness/startup failure.
    pub termination_grace: Option<i64>,
}

fn positive(v: Option<i32>, default: i32) -> i32 {
    v.filter(|v| *v > 0).unwrap_or(default)
}

impl ProbeSpec {
    /// The `kind` probe of `container`, when it has one.
    pub fn of(container: &Container, kind: ProbeType) -> Option<ProbeSpec> {
        let p = kind.of(container)?;
        let handler = if let Some(exec) = &p.exec {
            let env: HashMap<&str, &str> = container
                .env
                .iter()
                .flatten()
                .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
                .collect();
            let cmd = exec.command.iter().flatten();
            Handler::Exec(
                cmd.map(|a| crate::runtime::container::expand(a, &env))
                    .collect(),
            )
        } else if let Some(get) = &p.http_get {
            Handler::Http(get.clone())
        } else if let Some(tcp) = &p.tcp_socket {
            Handler::Tcp {
                host: tcp.host.clone().unwrap_or_default(),
                port: tcp.port.clone(),
            }
        } else if let Some(g) = &p.grpc {
            Handler::Grpc {
                port: g.port,
                service: g.service.clone().unwrap_or_default(),
            }
        } else {
            Handler::Missing
        };
        Some(ProbeSpec {
            kind,
            handler,
            initial_delay: Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64),
            period: Duration::from_secs(positive(p.period_seconds, 10) as u64),
            timeout: Duration::from_secs(positive(p.timeout_seconds, 1) as u64),
            success_threshold: positive(p.success_threshold, 1) as u32,
            failure_threshold: positive(p.failure_threshold, 3) as u32,
            termination_grace: p.termination_grace_period_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_static_env_expansion() {
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "env": [{"name": "F", "value": "/tmp/ok"},
                    {"name": "S", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "livenessProbe": {"exec": {"command": ["cat", "$(F)", "$(S)"]}},
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 2,
                               "initialDelaySeconds": 5, "failureThreshold": 1,
                               "terminationGracePeriodSeconds": 3},
        }))
        .unwrap();
        let l = ProbeSpec::of(&c, ProbeType::Liveness).unwrap();
        assert_eq!(
            l.handler,
            Handler::Exec(vec!["cat".into(), "/tmp/ok".into(), "$(S)".into()])
        );
        assert_eq!(
            (
                l.period,
                l.timeout,
                l.success_threshold,
                l.failure_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 1, 3)
        );
        let r = ProbeSpec::of(&c, ProbeType::Readiness).unwrap();
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!(r.initial_delay, Duration::from_secs(5));
        assert_eq!(r.failure_threshold, 1);
        assert_eq!(r.termination_grace, Some(3));
        assert!(ProbeSpec::of(&c, ProbeType::Startup).is_none());
        assert_eq!(ProbeType::Startup.to_string(), "Startup");
    }
}
