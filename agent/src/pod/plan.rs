//! The pure half of a pod sync: from the pod spec and what the runtime holds, decide what to do
//! (the kubelet's computePodActions). `worker` applies the plan.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;

use super::backoff::Backoff;

/// One container instance as observed, with the details its status needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// CRI id.
    pub id: String,
    /// Spec name.
    pub name: String,
    /// Sandbox it belongs to.
    pub sandbox_id: String,
    /// Lifecycle state.
    pub state: RunState,
    /// Restart count of this instance.
    pub restart_count: u32,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Start time, ns since the epoch (0: never started).
    pub started_at: i64,
    /// Finish time, ns since the epoch.
    pub finished_at: i64,
    /// Runtime's reason for the exit (`OOMKilled`, `Completed`, `Error`).
    pub reason: String,
    /// Runtime's message, or the termination message.
    pub message: String,
    /// The image reference (`sha256:...`).
    pub image_ref: String,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
}

/// The lifecycle state of a container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited (see exit code).
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// The newest sandbox, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxView {
    /// CRI id.
    pub id: String,
    /// Ready (running) or not.
    pub ready: bool,
    /// Attempt number.
    pub attempt: u32,
}

/// A container to (re)start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContainer {
    /// Spec name.
    pub name: String,
    /// Whether it is an init container.
    pub init: bool,
    /// Its restart count (0 on the first run).
    pub restart_count: u32,
}

/// What a sync does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and the sandbox (before a new sandbox, or because the pod is done).
    pub kill_pod: bool,
    /// Run a new sandbox with this attempt number.
    pub create_sandbox: Option<u32>,
    /// Containers to start, in order.
    pub start: Vec<StartContainer>,
    /// Containers waiting out a crash-loop back-off: (name, delay seconds).
    pub backing_off: Vec<(String, u64)>,
}

/// The pod's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restart.
    Always,
    /// Restart on non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The policy of a pod (Always when unset).
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// Newest instance of `name` among `containers` (newest first), optionally within one sandbox.
pub fn latest<'a>(
    containers: &'a [ContainerView],
    name: &str,
    sandbox: Option<&str>,
) -> Option<&'a ContainerView> {
    containers
        .iter()
        .find(|c| c.name == name && sandbox.is_none_or(|s| c.sandbox_id == s))
}

/// True when the pod has finished for good: no container will run again (never for Always).
pub fn pod_is_done(pod: &Pod, containers: &[ContainerView]) -> bool {
    let policy = RestartPolicy::of(pod);
    if policy == RestartPolicy::Always {
        return false;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    // An init container that failed under Never ends the pod.
    if policy == RestartPolicy::Never {
        for ic in spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() != Some("Always"))
        {
            if let Some(c) = latest(containers, &ic.name, None)
                && c.state == RunState::Exited
                && c.exit_code != 0
            {
                return true;
            }
        }
    }
    spec.containers.iter().all(|sc| {
        latest(containers, &sc.name, None)
            .is_some_and(|c| c.state == RunState::Exited && !policy.restarts(c.exit_code))
    })
}

/// Decides the next steps for `pod`. `containers` are all instances of the pod's containers,
/// newest first.
pub fn plan(
    pod: &Pod,
    sandbox: Option<&SandboxView>,
    containers: &[ContainerView],
    backoff: &Backoff,
    now: Instant,
) -> PodActions {
    let mut actions = PodActions::default();
    let Some(spec) = pod.spec.as_ref() else {
        return actions;
    };
    let policy = RestartPolicy::of(pod);
    let next_count = |name: &str| {
        latest(containers, name, None)
            .map(|c| c.restart_count + 1)
            .unwrap_or(0)
    };

    let sandbox = match sandbox {
        Some(s) if s.ready => s,
        other => {
            if other.is_some() && pod_is_done(pod, containers) {
                return actions;
            }
            // Fresh sandbox: everything starts over from the first init container.
            actions.kill_pod = other.is_some();
            actions.create_sandbox = Some(other.map(|s| s.attempt + 1).unwrap_or(0));
            return actions;
        }
    };
    let in_sandbox = |name: &str| latest(containers, name, Some(&sandbox.id));
    let start_or_backoff = |actions: &mut PodActions, name: &str, init: bool, exited: bool| {
        if exited && backoff.in_backoff(name, now) {
            actions
                .backing_off
                .push((name.to_string(), backoff.delay(name).as_secs()));
        } else {
            actions.start.push(StartContainer {
                name: name.to_string(),
                init,
                restart_count: next_count(name),
            });
        }
    };

    // Init containers, one at a time, each to success before the next.
    for ic in spec.init_containers.iter().flatten() {
        match in_sandbox(&ic.name) {
            None => {
                start_or_backoff(&mut actions, &ic.name, true, false);
                return actions;
            }
            Some(c)
                if matches!(
                    c.state,
                    RunState::Running | RunState::Created | RunState::Unknown
                ) =>
            {
                return actions;
            }
            Some(c) if c.exit_code == 0 => continue,
            Some(_) => {
                if policy == RestartPolicy::Never {
                    actions.kill_pod = true;
                } else {
                    start_or_backoff(&mut actions, &ic.name, true, true);
                }
                return actions;
            }
        }
    }

    // App containers.
    let mut all_done = true;
    for c in &spec.containers {
        match in_sandbox(&c.name) {
            None => {
                all_done = false;
                start_or_backoff(&mut actions, &c.name, false, false);
            }
            Some(v) if v.state == RunState::Exited => {
                if policy.restarts(v.exit_code) {
                    all_done = false;
                    start_or_backoff(&mut actions, &c.name, false, true);
                }
            }
            Some(_) => all_done = false,
        }
    }
    if all_done {
        actions.kill_pod = true;
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pod(policy: &str, init: &[&str], apps: &[&str]) -> Pod {
        let c = |n: &&str| serde_json::json!({"name": n, "image": "busybox"});
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy,
                     "initContainers": init.iter().map(c).collect::<Vec<_>>(),
                     "containers": apps.iter().map(c).collect::<Vec<_>>()}
        }))
        .unwrap()
    }

    fn cv(name: &str, state: RunState, code: i32, restarts: u32, created: i64) -> ContainerView {
        ContainerView {
            id: format!("{name}-{created}"),
            name: name.into(),
            sandbox_id: "sb".into(),
            state,
            restart_count: restarts,
            exit_code: code,
            started_at: created,
            finished_at: created + 1,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            created_at: created,
        }
    }

    fn sb(ready: bool) -> SandboxView {
        SandboxView {
            id: "sb".into(),
            ready,
            attempt: 0,
        }
    }

    fn start(name: &str, init: bool, n: u32) -> StartContainer {
        StartContainer {
            name: name.into(),
            init,
            restart_count: n,
        }
    }

    #[test]
    fn plans_like_compute_pod_actions() {
        let now = Instant::now();
        let none = Backoff::default();
        let mut crashed = Backoff::default();
        crashed.next("app", now - Duration::from_secs(1));
        use RunState::*;
        struct Case {
            what: &'static str,
            pod: Pod,
            sandbox: Option<SandboxView>,
            containers: Vec<ContainerView>,
            backoff: &'static str,
            want: PodActions,
        }
        let cases = vec![
            Case {
                what: "new pod gets a sandbox",
                pod: pod("Always", &[], &["app"]),
                sandbox: None,
                containers: vec![],
                backoff: "",
                want: PodActions {
                    create_sandbox: Some(0),
                    ..Default::default()
                },
            },
            Case {
                what: "dead sandbox is replaced with the next attempt",
                pod: pod("Always", &[], &["app"]),
                sandbox: Some(sb(false)),
                containers: vec![cv("app", Exited, 137, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill_pod: true,
                    create_sandbox: Some(1),
                    ..Default::default()
                },
            },
            Case {
                what: "first init container first",
                pod: pod("Always", &["i1", "i2"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![],
                backoff: "",
                want: PodActions {
                    start: vec![start("i1", true, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "second init after the first succeeded",
                pod: pod("Always", &["i1", "i2"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Exited, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("i2", true, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "running init blocks apps",
                pod: pod("Always", &["i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Running, 0, 0, 1)],
                backoff: "",
                want: PodActions::default(),
            },
            Case {
                what: "failed init under Never ends the pod",
                pod: pod("Never", &["i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Exited, 1, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill_pod: true,
                    ..Default::default()
                },
            },
            Case {
                what: "apps after init",
                pod: pod("Always", &["i1"], &["a", "b"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Exited, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("a", false, 0), start("b", false, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "crashed app restarts with the next count",
                pod: pod("Always", &[], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Exited, 1, 2, 5)],
                backoff: "",
                want: PodActions {
                    start: vec![start("app", false, 3)],
                    ..Default::default()
                },
            },
            Case {
                what: "crashed app in back-off waits",
                pod: pod("Always", &[], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Exited, 1, 0, 5)],
                backoff: "crashed",
                want: PodActions {
                    backing_off: vec![("app".into(), 10)],
                    ..Default::default()
                },
            },
            Case {
                what: "OnFailure: success is final and stops the sandbox",
                pod: pod("OnFailure", &[], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Exited, 0, 0, 5)],
                backoff: "",
                want: PodActions {
                    kill_pod: true,
                    ..Default::default()
                },
            },
            Case {
                what: "Never: a finished pod gets no new sandbox",
                pod: pod("Never", &[], &["app"]),
                sandbox: Some(sb(false)),
                containers: vec![cv("app", Exited, 3, 0, 5)],
                backoff: "",
                want: PodActions::default(),
            },
            Case {
                what: "running pod: nothing to do",
                pod: pod("Always", &[], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Running, 0, 0, 5)],
                backoff: "",
                want: PodActions::default(),
            },
        ];
        for c in cases {
            let b = if c.backoff == "crashed" {
                &crashed
            } else {
                &none
            };
            let got = plan(&c.pod, c.sandbox.as_ref(), &c.containers, b, now);
            assert_eq!(got, c.want, "{}", c.what);
        }
    }
}
