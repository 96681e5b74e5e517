//! Pod status from spec + runtime state, with the kubelet's phases, conditions and reasons.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::resource::qos_class;
use crate::runtime::restart::{container_should_restart, is_restartable_init};
use crate::runtime::{ContainerView, RunState, latest};

/// Why a container is not running, as the worker knows it (pull errors, back-off, config errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Reason: ErrImagePull, ImagePullBackOff, CrashLoopBackOff, CreateContainerConfigError, ...
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// What the prober says of a running container: `started` and `ready` in its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeStatus {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none), once started.
    pub ready: bool,
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
    /// Probe results of running containers by name; a running container not here is started
    /// and ready.
    pub probes: &'a HashMap<String, ProbeStatus>,
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
        // As convertToAPIContainerStatuses: the runtime's name for the newest instance's image,
        // the spec's before there is one.
        image: any
            .map(|c| c.image.as_str())
            .filter(|i| !i.is_empty())
            .unwrap_or(image)
            .to_string(),
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
            let probed = input.probes.get(name).copied().unwrap_or(ProbeStatus {
                started: true,
                ready: true,
            });
            st.ready = probed.ready;
            st.started = Some(probed.started);
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
    message: Option<String>,
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
        reason: reason.map(str::to_string),
        message,
        ..Default::default()
    }
}

fn running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|s| s.running.is_some())
}

fn terminated_of(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.state.as_ref()?.terminated.as_ref()
}

fn last_terminated_of(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref()?.terminated.as_ref()
}

/// Names as Go prints a string slice (`[a b]`), as the kubelet's condition messages show them.
fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// The kubelet's getPhase (with ContainerRestartRules on, as by default since v1.35): a stopped
/// container counts as restarting or not by its own restart policy and rules, else the pod's.
/// `has_initialized`: an app container exists in the current sandbox.
fn get_phase(
    spec: &PodSpec,
    inits: &[ContainerStatus],
    apps: &[ContainerStatus],
    has_initialized: bool,
) -> &'static str {
    let (mut pending_regular_init, mut pending_sidecars, mut failed_init_for_good) = (0, 0, 0);
    let (mut running_n, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    let mut stopped_for_good = 0;
    for (ic, s) in spec.init_containers.iter().flatten().zip(inits) {
        if is_restartable_init(ic) {
            // Sidecars count as running while they run; their exits never count.
            if running(s) {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running_n += 1;
            } else if terminated_of(s).is_none() && last_terminated_of(s).is_none() {
                pending_sidecars += 1;
                waiting += 1;
            }
        } else if running(s) {
            pending_regular_init += 1;
        } else if let Some(t) = terminated_of(s).or_else(|| last_terminated_of(s)) {
            if t.exit_code != 0 && !container_should_restart(ic, spec, t.exit_code) {
                failed_init_for_good += 1;
            }
        } else {
            pending_regular_init += 1;
        }
    }
    for (c, s) in spec.containers.iter().zip(apps) {
        if running(s) {
            running_n += 1;
        } else if let Some(t) = terminated_of(s).or_else(|| last_terminated_of(s)) {
            stopped += 1;
            if !container_should_restart(c, spec, t.exit_code) {
                stopped_for_good += 1;
            }
            if terminated_of(s).is_some_and(|t| t.exit_code == 0) {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if failed_init_for_good > 0 {
        return "Failed";
    }
    if pending_regular_init > 0 || (pending_sidecars > 0 && !has_initialized) || waiting > 0 {
        "Pending"
    } else if running_n > 0 {
        "Running"
    } else if stopped > 0 {
        if stopped != stopped_for_good {
            // At least one container is on its way to a restart.
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Pending"
    }
}

/// The kubelet's messages for the pod's readiness gates whose condition is missing or not True.
fn readiness_gates(pod: &Pod) -> Vec<String> {
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_deref());
    gates
        .unwrap_or_default()
        .iter()
        .filter_map(|g| {
            let t = &g.condition_type;
            match conditions.iter().find(|c| &c.type_ == t) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {t:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {t:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect()
}

/// Computes the pod's status.
pub fn compute(input: &StatusInput<'_>) -> PodStatus {
    let pod = input.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let now = &input.now;
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();

    // As the kubelet: with init containers, a container not created yet waits in PodInitializing.
    let default_waiting = if init_specs.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let init_statuses = init_container_statuses(input, init_specs, default_waiting);
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            container_status(
                input,
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                default_waiting,
            )
        })
        .collect();
    let ephemeral_statuses = ephemeral_container_statuses(input, &spec, default_waiting);

    let has_initialized = input.sandbox_id.is_some()
        && spec
            .containers
            .iter()
            .any(|c| latest(input.containers, &c.name, input.sandbox_id).is_some());
    let mut phase = get_phase(&spec, &init_statuses, &statuses, has_initialized);
    let (mut reason, mut message) = (None, None);
    if let Some((p, r, m)) = input.terminal {
        phase = p;
        reason = Some(r.to_string());
        message = Some(m.to_string());
    }
    let prev = input.previous;
    let initialized = initialized_condition(input, phase, init_specs, &init_statuses, &statuses);
    let (pod_ready, containers_ready) =
        ready_conditions(input, phase, &spec, &init_statuses, &statuses);
    let conditions = vec![
        condition(
            prev,
            "PodReadyToStartContainers",
            input.sandbox_ready,
            None,
            None,
            now,
        ),
        initialized,
        pod_ready,
        containers_ready,
        condition(prev, "PodScheduled", true, None, None, now),
    ];
    // PodObservedGenerationTracking (GA, on in v1.37): the status and every condition the
    // kubelet owns carry the generation of the spec they were computed from.
    let generation = pod.metadata.generation;
    let conditions = conditions
        .into_iter()
        .map(|c| PodCondition {
            observed_generation: generation,
            ..c
        })
        .collect();
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
        ephemeral_container_statuses: (!ephemeral_statuses.is_empty())
            .then_some(ephemeral_statuses),
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
        observed_generation: generation,
        ..Default::default()
    }
}

/// The init containers' statuses: a sidecar is ready while it runs and its probes say so; a
/// regular init container once it succeeded.
fn init_container_statuses(
    input: &StatusInput<'_>,
    init_specs: &[Container],
    default_waiting: &str,
) -> Vec<ContainerStatus> {
    init_specs
        .iter()
        .map(|ic| {
            let mut s = container_status(
                input,
                &ic.name,
                ic.image.as_deref().unwrap_or_default(),
                default_waiting,
            );
            s.ready = if is_restartable_init(ic) {
                running(&s) && s.ready
            } else {
                terminated_of(&s).is_some_and(|t| t.exit_code == 0)
            };
            s
        })
        .collect()
}

/// Ephemeral containers (GeneratePodStatus): as app containers, never ready, and with no
/// `started` (the prober sets it for containers and init containers only).
fn ephemeral_container_statuses(
    input: &StatusInput<'_>,
    spec: &PodSpec,
    default_waiting: &str,
) -> Vec<ContainerStatus> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(|ec| {
            let image = ec.image.as_deref().unwrap_or_default();
            let mut s = container_status(input, &ec.name, image, default_waiting);
            s.ready = false;
            s.started = None;
            s
        })
        .collect()
}

/// Initialized (GeneratePodInitializedCondition).
fn initialized_condition(
    input: &StatusInput<'_>,
    phase: &str,
    init_specs: &[Container],
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
) -> PodCondition {
    let (prev, now) = (input.previous, &input.now);
    let incomplete: Vec<&str> = init_specs
        .iter()
        .zip(init_statuses)
        .filter(|(ic, s)| {
            if is_restartable_init(ic) {
                s.started != Some(true)
            } else {
                !s.ready
            }
        })
        .map(|(ic, _)| ic.name.as_str())
        .collect();
    let app_started = statuses
        .iter()
        .any(|s| running(s) || terminated_of(s).is_some());
    if phase == "Succeeded" {
        condition(prev, "Initialized", true, Some("PodCompleted"), None, now)
    } else if app_started || incomplete.is_empty() {
        condition(prev, "Initialized", true, None, None, now)
    } else {
        let msg = format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        );
        condition(
            prev,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(msg),
            now,
        )
    }
}

/// Ready and ContainersReady (GenerateContainersReadyCondition, GeneratePodReadyCondition):
/// sidecars count, and Ready also needs every readiness gate's condition True, as the pod object
/// carries them.
fn ready_conditions(
    input: &StatusInput<'_>,
    phase: &str,
    spec: &PodSpec,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
) -> (PodCondition, PodCondition) {
    let (prev, now) = (input.previous, &input.now);
    let init_specs = spec.init_containers.as_deref().unwrap_or_default();
    let unready: Vec<&str> = init_specs
        .iter()
        .zip(init_statuses)
        .filter(|(ic, _)| is_restartable_init(ic))
        .map(|(ic, s)| (ic.name.as_str(), s))
        .chain(
            spec.containers
                .iter()
                .map(|c| c.name.as_str())
                .zip(statuses),
        )
        .filter(|(_, s)| !s.ready)
        .map(|(name, _)| name)
        .collect();
    let (ready, ready_reason, ready_message) = match phase {
        "Succeeded" => (false, Some("PodCompleted"), None),
        "Failed" => (false, Some("PodFailed"), None),
        _ if unready.is_empty() => (true, None, None),
        _ => (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: {}",
                go_list(&unready)
            )),
        ),
    };
    let gates = readiness_gates(input.pod);
    let (pod_ready, pod_ready_reason, pod_ready_message) = if ready && !gates.is_empty() {
        (
            false,
            Some("ReadinessGatesNotReady"),
            Some(gates.join(", ")),
        )
    } else {
        (ready, ready_reason, ready_message.clone())
    };
    (
        condition(
            prev,
            "Ready",
            pod_ready,
            pod_ready_reason,
            pod_ready_message,
            now,
        ),
        condition(
            prev,
            "ContainersReady",
            ready,
            ready_reason,
            ready_message,
            now,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy,
                     "initContainers": [
                         {"name": "side", "image": "busybox", "restartPolicy": "Always"},
                         {"name": "init", "image": "busybox"}],
                     "containers": [{"name": "app", "image": "busybox"}]}
        }))
        .unwrap()
    }

    fn cv(name: &str, state: RunState, code: i32, created: i64) -> ContainerView {
        ContainerView {
            id: format!("{name}-{created}"),
            name: name.into(),
            sandbox_id: "sb".into(),
            state,
            restart_count: 0,
            exit_code: code,
            started_at: created * 1_000_000_000,
            finished_at: (created + 1) * 1_000_000_000,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            image: String::new(),
            created_at: created,
            spec_hash: None,
        }
    }

    fn status(pod: &Pod, containers: &[ContainerView], waiting: &[(&str, &str)]) -> PodStatus {
        let waiting = waiting
            .iter()
            .map(|(n, r)| {
                let w = Waiting {
                    reason: r.to_string(),
                    message: String::new(),
                };
                (n.to_string(), w)
            })
            .collect();
        compute(&StatusInput {
            pod,
            previous: None,
            sandbox_ready: true,
            pod_ips: &[],
            host_ip: "",
            containers,
            sandbox_id: Some("sb"),
            waiting: &waiting,
            runtime_name: "containerd",
            now: now(),
            terminal: None,
            probes: &HashMap::new(),
        })
    }

    /// (status, reason, message) of condition `kind`.
    fn cond(s: &PodStatus, kind: &str) -> (String, Option<String>, Option<String>) {
        let c = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind)
            .unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn t(
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) -> (String, Option<String>, Option<String>) {
        (
            status.into(),
            reason.map(String::from),
            message.map(String::from),
        )
    }

    /// The kubelet's convertToAPIContainerStatuses: the image the runtime reports for the newest
    /// instance (containerd names an image pulled by digest by its tag), the spec's before one.
    #[test]
    fn the_status_image_is_the_runtimes() {
        let p = pod("Always");
        let s = status(&p, &[], &[]);
        let app = |s: &PodStatus| s.container_statuses.as_ref().unwrap()[0].image.clone();
        assert_eq!(app(&s), "busybox");
        let mut c = cv("app", RunState::Running, 0, 1);
        c.image = "127.0.0.1:5000/busybox:1".into();
        assert_eq!(app(&status(&p, &[c], &[])), "127.0.0.1:5000/busybox:1");
    }

    #[test]
    fn sidecar_statuses_and_conditions_as_the_kubelet() {
        use RunState::*;
        struct Case {
            what: &'static str,
            policy: &'static str,
            containers: Vec<ContainerView>,
            waiting: Vec<(&'static str, &'static str)>,
            phase: &'static str,
            initialized: (String, Option<String>, Option<String>),
            ready: (String, Option<String>, Option<String>),
            side: (bool, bool),
        }
        let cases = vec![
            Case {
                what: "sidecar started, regular init running",
                policy: "Always",
                containers: vec![cv("init", Running, 0, 2), cv("side", Running, 0, 1)],
                waiting: vec![],
                phase: "Pending",
                initialized: t(
                    "False",
                    Some("ContainersNotInitialized"),
                    Some("containers with incomplete status: [init]"),
                ),
                ready: t(
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [app]"),
                ),
                side: (true, true),
            },
            Case {
                what: "sidecar and app running",
                policy: "Always",
                containers: vec![
                    cv("app", Running, 0, 3),
                    cv("init", Exited, 0, 2),
                    cv("side", Running, 0, 1),
                ],
                waiting: vec![],
                phase: "Running",
                initialized: t("True", None, None),
                ready: t("True", None, None),
                side: (true, true),
            },
            Case {
                what: "sidecar crash-looping next to a running app",
                policy: "Always",
                containers: vec![
                    cv("app", Running, 0, 3),
                    cv("init", Exited, 0, 2),
                    cv("side", Exited, 1, 1),
                ],
                waiting: vec![("side", "CrashLoopBackOff")],
                phase: "Running",
                initialized: t("True", None, None),
                ready: t(
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [side]"),
                ),
                side: (false, false),
            },
            Case {
                what: "Never: app done, sidecar still running",
                policy: "Never",
                containers: vec![
                    cv("app", Exited, 0, 3),
                    cv("init", Exited, 0, 2),
                    cv("side", Running, 0, 1),
                ],
                waiting: vec![],
                phase: "Running",
                initialized: t("True", None, None),
                ready: t(
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [app]"),
                ),
                side: (true, true),
            },
            Case {
                what: "Never: app succeeded, sidecar killed: the sidecar's exit does not count",
                policy: "Never",
                containers: vec![
                    cv("app", Exited, 0, 3),
                    cv("init", Exited, 0, 2),
                    cv("side", Exited, 137, 1),
                ],
                waiting: vec![],
                phase: "Succeeded",
                initialized: t("True", Some("PodCompleted"), None),
                ready: t("False", Some("PodCompleted"), None),
                side: (false, false),
            },
            Case {
                what: "Never: app failed",
                policy: "Never",
                containers: vec![
                    cv("app", Exited, 2, 3),
                    cv("init", Exited, 0, 2),
                    cv("side", Exited, 143, 1),
                ],
                waiting: vec![],
                phase: "Failed",
                initialized: t("True", None, None),
                ready: t("False", Some("PodFailed"), None),
                side: (false, false),
            },
            Case {
                what: "nothing created yet: PodInitializing everywhere",
                policy: "Always",
                containers: vec![],
                waiting: vec![],
                phase: "Pending",
                initialized: t(
                    "False",
                    Some("ContainersNotInitialized"),
                    Some("containers with incomplete status: [side init]"),
                ),
                ready: t(
                    "False",
                    Some("ContainersNotReady"),
                    Some("containers with unready status: [side app]"),
                ),
                side: (false, false),
            },
        ];
        for c in cases {
            let s = status(&pod(c.policy), &c.containers, &c.waiting);
            assert_eq!(s.phase.as_deref(), Some(c.phase), "{}", c.what);
            assert_eq!(cond(&s, "Initialized"), c.initialized, "{}", c.what);
            assert_eq!(cond(&s, "ContainersReady"), c.ready, "{}", c.what);
            assert_eq!(cond(&s, "Ready"), c.ready, "{}", c.what);
            let inits = s.init_container_statuses.as_ref().unwrap();
            let side = &inits[0];
            assert_eq!(
                (side.ready, side.started == Some(true)),
                c.side,
                "{}",
                c.what
            );
            // A regular init container is ready once it succeeded, never "started" after.
            let init = &inits[1];
            let done = init
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            assert_eq!(init.ready, done, "{}", c.what);
            if c.containers.is_empty() {
                for st in inits.iter().chain(s.container_statuses.iter().flatten()) {
                    let w = st.state.as_ref().and_then(|s| s.waiting.as_ref()).unwrap();
                    assert_eq!(w.reason.as_deref(), Some("PodInitializing"), "{}", c.what);
                }
            }
        }
    }

    /// The phase with container-level restart policies and rules, as the kubelet's getPhase with
    /// ContainerRestartRules on: a stopped container counts as restarting by its own policy.
    #[test]
    fn phase_follows_container_restart_policies_and_rules() {
        use RunState::*;
        use serde_json::json;
        let rule = |op: &str, codes: &[i32]| json!([{"action": "Restart", "exitCodes": {"operator": op, "values": codes}}]);
        let pod = |policy: &str, init: Option<serde_json::Value>, app: serde_json::Value| -> Pod {
            let mut app = app;
            app["name"] = "app".into();
            let inits: Vec<serde_json::Value> = init
                .into_iter()
                .map(|mut i| {
                    i["name"] = "init".into();
                    i
                })
                .collect();
            serde_json::from_value(json!({
                "metadata": {"name": "p", "uid": "u"},
                "spec": {"restartPolicy": policy, "initContainers": inits, "containers": [app]}
            }))
            .unwrap()
        };
        /// (what, pod, containers, waiting reasons, expected phase)
        type Case = (
            &'static str,
            Pod,
            Vec<ContainerView>,
            Vec<(&'static str, &'static str)>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "container Always beats pod Never: crash-looping is Running",
                pod("Never", None, json!({"restartPolicy": "Always"})),
                vec![cv("app", Exited, 1, 1)],
                vec![("app", "CrashLoopBackOff")],
                "Running",
            ),
            (
                "rule In [42] matched: on its way to a restart",
                pod(
                    "Never",
                    None,
                    json!({"restartPolicy": "Never", "restartPolicyRules": rule("In", &[42])}),
                ),
                vec![cv("app", Exited, 42, 1)],
                vec![],
                "Running",
            ),
            (
                "rule In [42] not matched: the container's Never",
                pod(
                    "Never",
                    None,
                    json!({"restartPolicy": "Never", "restartPolicyRules": rule("In", &[42])}),
                ),
                vec![cv("app", Exited, 3, 1)],
                vec![],
                "Failed",
            ),
            (
                "container Never beats pod Always: failed",
                pod("Always", None, json!({"restartPolicy": "Never"})),
                vec![cv("app", Exited, 3, 1)],
                vec![],
                "Failed",
            ),
            (
                "container OnFailure in a pod Always: success is final",
                pod("Always", None, json!({"restartPolicy": "OnFailure"})),
                vec![cv("app", Exited, 0, 1)],
                vec![],
                "Succeeded",
            ),
            (
                "NotIn [0]: exit 0 matches no rule, Never keeps it down",
                pod(
                    "Always",
                    None,
                    json!({"restartPolicy": "Never", "restartPolicyRules": rule("NotIn", &[0])}),
                ),
                vec![cv("app", Exited, 0, 1)],
                vec![],
                "Succeeded",
            ),
            (
                "pod policy alone, as before: Always restarts",
                pod("Always", None, json!({})),
                vec![cv("app", Exited, 3, 1)],
                vec![],
                "Running",
            ),
            (
                "init OnFailure under pod Never: retried, Pending",
                pod(
                    "Never",
                    Some(json!({"restartPolicy": "OnFailure"})),
                    json!({}),
                ),
                vec![cv("init", Exited, 1, 1)],
                vec![("init", "CrashLoopBackOff")],
                "Pending",
            ),
            (
                "init Never under pod Always: its failure fails the pod",
                pod("Always", Some(json!({"restartPolicy": "Never"})), json!({})),
                vec![cv("init", Exited, 1, 1)],
                vec![],
                "Failed",
            ),
            (
                "init with the pod's Never, as before: Failed",
                pod("Never", Some(json!({})), json!({})),
                vec![cv("init", Exited, 1, 1)],
                vec![],
                "Failed",
            ),
        ];
        for (what, p, containers, waiting, want) in cases {
            let s = status(&p, &containers, &waiting);
            assert_eq!(s.phase.as_deref(), Some(want), "{what}");
        }
    }

    /// PodObservedGenerationTracking: the status and each condition carry the pod's generation.
    #[test]
    fn status_and_conditions_carry_the_generation() {
        let mut p = pod("Always");
        p.metadata.generation = Some(3);
        let s = status(&p, &[cv("app", RunState::Running, 0, 3)], &[]);
        assert_eq!(s.observed_generation, Some(3));
        for c in s.conditions.iter().flatten() {
            assert_eq!(c.observed_generation, Some(3), "{}", c.type_);
        }
    }
}
