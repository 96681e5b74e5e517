//! Pod status from spec + runtime state, with the kubelet's phases, conditions and reasons.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::pod::plan::{ContainerView, RestartPolicy, RunState, latest};
use crate::resource::qos_class;

/// Why a container is not running, as the worker knows it (pull errors, back-off, config errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Reason: ErrImagePull, ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError, ...
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// Everything status computation reads.
pub struct StatusInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The previous status (for transition times and startTime).
    pub previous: Option<&'a PodStatus>,
    /// Whether the newest sandbox is ready.
    pub sandbox_ready: bool,
    /// Pod IPs of the newest sandbox.
    pub pod_ips: &'a [String],
    /// The node's IP.
    pub host_ip: &'a str,
    /// All container instances, newest first.
    pub containers: &'a [ContainerView],
    /// The newest sandbox's id: only its containers count as current.
    pub sandbox_id: Option<&'a str>,
    /// Worker-known waiting reasons by container name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// Runtime name for container IDs (`containerd`).
    pub runtime_name: &'a str,
    /// Now.
    pub now: Time,
    /// Set when the pod failed admission or is being ended: (phase, reason, message).
    pub terminal: Option<(&'a str, &'a str, &'a str)>,
}

/// Now, at the second precision the API keeps for these times.
pub fn now() -> Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

fn ts(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    let t = k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128).ok()?;
    // The API has second precision for these fields.
    Some(Time(
        k8s_openapi::jiff::Timestamp::from_second(t.as_second()).ok()?,
    ))
}

fn terminated(c: &ContainerView, runtime: &str) -> ContainerStateTerminated {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(reason),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: ts(c.started_at),
        finished_at: ts(c.finished_at),
        container_id: Some(format!("{runtime}://{}", c.id)),
        signal: None,
    }
}

/// A container state holding the termination of instance `c`.
fn terminated_state(c: &ContainerView, runtime: &str) -> ContainerState {
    ContainerState {
        terminated: Some(terminated(c, runtime)),
        ..Default::default()
    }
}

fn container_status(
    input: &StatusInput<'_>,
    name: &str,
    image: &str,
    default_waiting: &str,
) -> ContainerStatus {
    let current = latest(input.containers, name, input.sandbox_id);
    let any = latest(input.containers, name, None);
    let previous = any.and_then(|a| {
        input
            .containers
            .iter()
            .find(|c| c.name == name && c.id != a.id && c.created_at <= a.created_at)
    });
    let waiting = input.waiting.get(name);
    // The instance before the newest, when it has terminated: lastState of a running or
    // terminated container.
    let previous_terminated = previous
        .filter(|p| p.state == RunState::Exited)
        .map(|p| terminated_state(p, input.runtime_name));
    let mut st = ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        image_id: any.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: any.map(|c| format!("{}://{}", input.runtime_name, c.id)),
        restart_count: any.map(|c| c.restart_count as i32).unwrap_or(0),
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    let waiting_state = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    };
    match (current.or(any), waiting) {
        (Some(c), _) if c.state == RunState::Running && current.is_some() => {
            st.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: ts(c.started_at),
                }),
                ..Default::default()
            });
            st.ready = true;
            st.started = Some(true);
            st.last_state = previous_terminated;
        }
        (Some(c), Some(w)) if c.state == RunState::Exited => {
            st.state = Some(waiting_state(&w.reason, Some(w.message.clone())));
            st.last_state = Some(terminated_state(c, input.runtime_name));
        }
        (Some(c), None) if c.state == RunState::Exited => {
            st.state = Some(terminated_state(c, input.runtime_name));
            st.last_state = previous_terminated;
        }
        (_, Some(w)) => {
            st.state = Some(waiting_state(
                &w.reason,
                (!w.message.is_empty()).then(|| w.message.clone()),
            ))
        }
        _ => st.state = Some(waiting_state(default_waiting, None)),
    }
    st
}

fn condition(
    prev: Option<&PodStatus>,
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let last = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone());
    PodCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        last_transition_time: Some(last.unwrap_or_else(|| now.clone())),
        reason: if ok { None } else { reason.map(str::to_string) },
        ..Default::default()
    }
}

/// Computes the pod's status.
pub fn compute(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = RestartPolicy::of(pod);
    let now = &input.now;

    let mut init_statuses = Vec::new();
    let mut initialized = true;
    let mut init_failed = false;
    for ic in spec.init_containers.iter().flatten() {
        let s = container_status(
            input,
            &ic.name,
            ic.image.as_deref().unwrap_or_default(),
            "PodInitializing",
        );
        let done = s
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        if !done {
            initialized = false;
            let failed = s
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
                || s.last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code != 0);
            init_failed |= failed;
        }
        // Init containers that finished are not "ready" in the API sense unless they succeeded.
        let mut s = s;
        s.ready = done;
        init_statuses.push(s);
    }
    let default_app = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            container_status(
                input,
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                default_app,
            )
        })
        .collect();

    // Phase, as the kubelet's getPhase.
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in &statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    let mut phase = if !initialized {
        if init_failed && policy == RestartPolicy::Never {
            "Failed"
        } else {
            "Pending"
        }
    } else if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            RestartPolicy::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            RestartPolicy::OnFailure => "Running",
            RestartPolicy::Never => "Failed",
        }
    } else {
        "Pending"
    };
    let (mut reason, mut message) = (None, None);
    if let Some((p, r, m)) = input.terminal {
        phase = p;
        reason = Some(r.to_string());
        message = Some(m.to_string());
    }
    let terminal = phase == "Succeeded" || phase == "Failed";
    let containers_ready =
        initialized && !statuses.is_empty() && statuses.iter().all(|s| s.ready) && !terminal;
    let not_ready = if terminal {
        Some("PodCompleted")
    } else {
        Some("ContainersNotReady")
    };
    let prev = input.previous;
    let conditions = vec![
        condition(
            prev,
            "PodReadyToStartContainers",
            input.sandbox_ready,
            None,
            now,
        ),
        condition(
            prev,
            "Initialized",
            initialized || terminal,
            if terminal {
                Some("PodCompleted")
            } else {
                Some("ContainersNotInitialized")
            },
            now,
        ),
        condition(prev, "Ready", containers_ready, not_ready, now),
        condition(prev, "ContainersReady", containers_ready, not_ready, now),
        condition(prev, "PodScheduled", true, None, now),
    ];
    let start_time = prev
        .and_then(|p| p.start_time.clone())
        .unwrap_or_else(|| now.clone());
    PodStatus {
        phase: Some(phase.to_string()),
        reason,
        message,
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        pod_ip: input.pod_ips.first().cloned(),
        pod_ips: (!input.pod_ips.is_empty()).then(|| {
            input
                .pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect()
        }),
        host_ip: (!input.host_ip.is_empty()).then(|| input.host_ip.to_string()),
        host_ips: (!input.host_ip.is_empty()).then(|| {
            vec![HostIP {
                ip: input.host_ip.to_string(),
            }]
        }),
        start_time: Some(start_time),
        qos_class: Some(qos_class(pod).as_str().to_string()),
        ..Default::default()
    }
}
