//! The pure half of a pod sync: from the pod spec and what the runtime holds, decide what to do
//! (the kubelet's computePodActions). `worker` applies the plan.

use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::backoff::KeyedBackoff;
pub use crate::runtime::restart::{
    RestartPolicy, container_should_restart, is_restartable_init, matching_rule,
    restarts_when_killed,
};
pub use crate::runtime::{ContainerView, RunState, SandboxView, latest};

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
    /// Running containers to stop before the starts (their definition changed): (CRI id, the
    /// Killing event's message).
    pub kill: Vec<(String, String)>,
    /// Ephemeral containers (`kubectl debug`) to start before the rest: those that never ran
    /// in any sandbox. They are never restarted.
    pub ephemeral: Vec<String>,
}

/// True when the pod has finished for good: no container will run again (the kubelet's terminal
/// phase). With container-level restart policies and rules (ContainerRestartRules) a pod whose
/// restartPolicy is Always can finish too.
pub fn pod_is_done(pod: &Pod, containers: &[ContainerView]) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    // A regular init container that failed and will not run again ends the pod.
    for ic in spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| !is_restartable_init(c))
    {
        if let Some(c) = latest(containers, &ic.name, None)
            && c.state == RunState::Exited
            && c.exit_code != 0
            && !container_should_restart(ic, spec, c.exit_code)
        {
            return true;
        }
    }
    spec.containers.iter().all(|sc| {
        latest(containers, &sc.name, None).is_some_and(|c| {
            c.state == RunState::Exited && !container_should_restart(sc, spec, c.exit_code)
        })
    })
}

/// Whether the newest instance of app container `c` (in any sandbox) succeeded under an OnFailure
/// policy, its own or the pod's: such a container is not started again in a new sandbox
/// (computePodActions' `runOnce` when it creates one).
fn succeeded_once(c: &Container, spec: &PodSpec, containers: &[ContainerView]) -> bool {
    let on_failure = match c.restart_policy.as_deref() {
        Some(policy) => policy == "OnFailure",
        None => spec.restart_policy.as_deref() == Some("OnFailure"),
    };
    on_failure
        && latest(containers, &c.name, None)
            .is_some_and(|v| v.state == RunState::Exited && v.exit_code == 0)
}

/// Decides the next steps for `pod`. `containers` are all instances of the pod's containers,
/// newest first; `unstarted` the ids of running sidecars whose startup probe has not passed yet.
pub fn plan(
    pod: &Pod,
    sandbox: Option<&SandboxView>,
    containers: &[ContainerView],
    unstarted: &[&str],
    backoff: &KeyedBackoff,
    now: Instant,
) -> PodActions {
    let mut actions = PodActions::default();
    let Some(spec) = pod.spec.as_ref() else {
        return actions;
    };
    let policy = RestartPolicy::of(pod);
    let next_count = |name: &str| latest(containers, name, None).map_or(0, |c| c.restart_count + 1);

    let sandbox = match sandbox {
        Some(s) if s.ready => s,
        other => return sandbox_actions(pod, other, containers, policy),
    };
    // Done for good (the kubelet's terminal phase, then SyncTerminatingPod): stop whatever still
    // runs, sidecars included, and start nothing.
    if pod_is_done(pod, containers) {
        actions.kill_pod = true;
        return actions;
    }
    // Ephemeral containers, as the kubelet's computePodActions: started even while
    // initialization is incomplete, once, whatever becomes of them.
    actions.ephemeral = never_run_ephemeral(spec, containers);
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

    // Init containers (the kubelet's computeInitContainerActions): regular ones one at a time, each
    // to success before the next; sidecars started in order and kept running.
    match init_actions(pod, &in_sandbox, unstarted) {
        InitPlan::KillPod => {
            actions.kill_pod = true;
            actions.ephemeral.clear();
            return actions;
        }
        InitPlan::Start(to_start, initialized, kill) => {
            actions.kill.extend(kill);
            for (name, exited) in to_start {
                let len = actions.backing_off.len();
                start_or_backoff(&mut actions, &name, true, exited);
                // A regular init container that cannot start yet holds everything after it back;
                // a sidecar in back-off does not.
                if actions.backing_off.len() > len && !is_sidecar(spec, &name) {
                    return actions;
                }
            }
            if !initialized {
                return actions;
            }
        }
    }

    // App containers.
    let mut all_done = true;
    for c in &spec.containers {
        match in_sandbox(&c.name) {
            None if succeeded_once(c, spec, containers) => {}
            None => {
                all_done = false;
                start_or_backoff(&mut actions, &c.name, false, false);
            }
            // The kubelet's containerChanged: its hash covers the name and the image, so a
            // running container whose spec now names another image is restarted, whatever the
            // restart policy.
            Some(v) if v.state == RunState::Running && definition_changed(v, c) => {
                all_done = false;
                let message = format!("Container {} definition changed, will be restarted", c.name);
                actions.kill.push((v.id.clone(), message));
                start_or_backoff(&mut actions, &c.name, false, false);
            }
            Some(v) if v.state == RunState::Exited => {
                if container_should_restart(c, spec, v.exit_code) {
                    all_done = false;
                    start_or_backoff(&mut actions, &c.name, false, true);
                }
            }
            // Created but never started (its start failed, or the runtime died during it): a
            // new instance, whatever the restart policy (the kubelet's ShouldContainerBeRestarted).
            Some(v) if v.state == RunState::Created => {
                all_done = false;
                start_or_backoff(&mut actions, &c.name, false, false);
            }
            // Unknown: it may be running, so it is killed before a new instance starts, lest two
            // run (computePodActions).
            Some(v) if v.state == RunState::Unknown => {
                all_done = false;
                actions.kill.push(kill_unknown(v, "Container"));
                start_or_backoff(&mut actions, &c.name, false, false);
            }
            Some(_) => all_done = false,
        }
    }
    if all_done {
        // Every app container is done for good: sidecars must not keep the pod alive.
        actions = PodActions {
            kill_pod: true,
            ..Default::default()
        };
    }
    actions
}

/// The ephemeral containers (`kubectl debug`) that never ran in any sandbox.
fn never_run_ephemeral(spec: &PodSpec, containers: &[ContainerView]) -> Vec<String> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter(|ec| latest(containers, &ec.name, None).is_none())
        .map(|ec| ec.name.clone())
        .collect()
}

/// The kill of container `v` in the unknown state before a new instance starts, with the
/// kubelet's message; `what` is "Container" or "Init container".
fn kill_unknown(v: &ContainerView, what: &str) -> (String, String) {
    let message = format!("{what} is in \"unknown\" state, try killing it before restart");
    (v.id.clone(), message)
}

/// What to do when the pod's newest sandbox is not ready (or there is none): nothing for a pod
/// done for good, stop a restartPolicy Never pod that ran containers, else a fresh sandbox (the
/// old one killed) where everything starts over from the first init container.
fn sandbox_actions(
    pod: &Pod,
    sandbox: Option<&SandboxView>,
    containers: &[ContainerView],
    policy: RestartPolicy,
) -> PodActions {
    let mut actions = PodActions::default();
    if sandbox.is_some() && pod_is_done(pod, containers) {
        return actions;
    }
    // The kubelet never makes a second sandbox for a restartPolicy Never pod that ran
    // containers (computePodActions), whatever its containers' own policies: it stops it.
    if sandbox.is_some() && policy == RestartPolicy::Never && !containers.is_empty() {
        actions.kill_pod = true;
        return actions;
    }
    actions.kill_pod = sandbox.is_some();
    actions.create_sandbox = Some(sandbox.map(|s| s.attempt + 1).unwrap_or(0));
    actions
}

/// True when the pod, started at `start` (its status' startTime, in seconds), has run for its
/// spec.activeDeadlineSeconds by `now`; never without a deadline or a start.
pub fn past_active_deadline(pod: &Pod, start: Option<i64>, now: i64) -> bool {
    let deadline = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    match (deadline, start) {
        (Some(deadline), Some(start)) => now - start >= deadline,
        _ => false,
    }
}

/// The spec of the pod's container (or init container) `name`.
pub fn container_spec<'a>(pod: &'a Pod, name: &str, init: bool) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    if init {
        spec.init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)
    } else {
        spec.containers.iter().find(|c| c.name == name)
    }
}

/// The kubelet's containerChanged: the instance `v` was made from a spec whose hash (the name and
/// the image, runtime::hash) differs from `spec`'s now. Instances whose hash is unknown are left
/// alone.
pub fn definition_changed(v: &ContainerView, spec: &Container) -> bool {
    v.spec_hash
        .as_deref()
        .is_some_and(|h| h != crate::runtime::hash::container_hash_label(spec))
}

/// The pod's ephemeral container `name` as a container spec (the fields it shares), and the
/// container whose process namespace it targets, if any.
pub fn ephemeral_spec(pod: &Pod, name: &str) -> Option<(Container, Option<String>)> {
    let ec = pod
        .spec
        .as_ref()?
        .ephemeral_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)?;
    let mut value = serde_json::to_value(ec).ok()?;
    if let Some(map) = value.as_object_mut() {
        map.remove("targetContainerName");
    }
    let container: Container = serde_json::from_value(value).ok()?;
    let target = ec.target_container_name.clone().filter(|t| !t.is_empty());
    Some((container, target))
}

/// Whether starting the containers `started` lets the pod's initialization go on at once: a
/// sidecar counts as initialized once it runs, so the init container after it (or, for the last,
/// the app containers) may start now. The kubelet starts them on the SyncPod that the sidecar's
/// ContainerStarted event triggers; a worker that just started it plans again instead.
pub fn starts_unblock_init(pod: &Pod, started: &[&str]) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|spec| started.iter().any(|n| is_sidecar(spec, n)))
}

fn is_sidecar(spec: &PodSpec, name: &str) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name && is_restartable_init(c))
}

/// What the init containers need.
enum InitPlan {
    /// A regular init container failed and will not run again (its policy or the pod's): the pod is
    /// done.
    KillPod,
    /// Init containers to start in spec order, (name, an instance exited before); whether the
    /// pod is initialized (the app containers may run); running sidecars to kill first (their
    /// definition changed): (CRI id, the Killing event's message).
    Start(Vec<(String, bool)>, bool, Vec<(String, String)>),
}

/// The kubelet's computeInitContainerActions over the instances in the current sandbox: walk the
/// init containers from the last, so that the newest progress wins; a running sidecar counts as
/// initialized once started (its startup probe passed), and sidecars that exited are restarted
/// whatever the pod's restart policy.
fn init_actions<'a>(
    pod: &Pod,
    in_sandbox: &dyn Fn(&str) -> Option<&'a ContainerView>,
    unstarted: &[&str],
) -> InitPlan {
    let Some(spec) = pod.spec.as_ref() else {
        return InitPlan::Start(vec![], true, vec![]);
    };
    let inits: &[Container] = spec.init_containers.as_deref().unwrap_or_default();
    if inits.is_empty() {
        return InitPlan::Start(vec![], true, vec![]);
    }
    // An app container created or running: initialization happened before (init instances may
    // have been removed since), only sidecars are kept running.
    let mut initialized = spec.containers.iter().any(|c| {
        in_sandbox(&c.name)
            .is_some_and(|v| matches!(v.state, RunState::Created | RunState::Running))
    });
    let mut previously = initialized;
    let mut start: Vec<usize> = Vec::new();
    let mut kill = Vec::new();
    let last = inits.len() - 1;
    for (i, c) in inits.iter().enumerate().rev() {
        let sidecar = is_restartable_init(c);
        let Some(v) = in_sandbox(&c.name) else {
            if previously && sidecar {
                start.push(i);
            }
            continue;
        };
        if previously && !sidecar {
            continue;
        }
        match v.state {
            // Created but never started: the start failed; start a new instance.
            RunState::Created => start.push(i),
            // A sidecar whose startup probe has not passed holds initialization back.
            RunState::Running if sidecar && unstarted.contains(&v.id.as_str()) => {}
            RunState::Running if sidecar => {
                if i == last {
                    initialized = true;
                } else if !previously {
                    start.push(i + 1);
                }
                // A started sidecar whose definition changed: killed and started again.
                if definition_changed(v, c) {
                    let message = format!("Init container {} definition changed", c.name);
                    kill.push((v.id.clone(), message));
                    start.push(i);
                    previously = true;
                    break;
                }
            }
            // A regular init container still running: wait for it.
            RunState::Running => {}
            // Unknown (the runtime lost it mid-create): it may be running, so it is killed before
            // a new instance starts; a regular one that may not restart ends the pod.
            RunState::Unknown => {
                if !sidecar && !restarts_when_killed(pod, c) {
                    return InitPlan::KillPod;
                }
                kill.push(kill_unknown(v, "Init container"));
                start.push(i);
            }
            RunState::Exited if sidecar => start.push(i),
            RunState::Exited if v.exit_code != 0 => {
                if !container_should_restart(c, spec, v.exit_code) {
                    return InitPlan::KillPod;
                }
                start.push(i);
            }
            RunState::Exited => {
                if i == last {
                    initialized = true;
                } else {
                    start.push(i + 1);
                }
            }
        }
        previously = true;
    }
    if !previously {
        start.push(0);
    }
    start.reverse();
    let to_start = start
        .into_iter()
        .map(|i| {
            let name = &inits[i].name;
            let exited = in_sandbox(name).is_some_and(|v| v.state == RunState::Exited);
            (name.clone(), exited)
        })
        .collect();
    InitPlan::Start(to_start, initialized, kill)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::backoff::CRASH_LOOP;
    use std::time::Duration;

    /// Init containers whose name starts with `side` are sidecars (restartPolicy Always).
    fn pod(policy: &str, init: &[&str], apps: &[&str]) -> Pod {
        let c = |n: &&str| {
            if n.starts_with("side") {
                serde_json::json!({"name": n, "image": "busybox", "restartPolicy": "Always"})
            } else {
                serde_json::json!({"name": n, "image": "busybox"})
            }
        };
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
            image: String::new(),
            created_at: created,
            spec_hash: Some(hash_of(name, "busybox")),
        }
    }

    /// The kubelet's hash of a container `name` of `image`.
    fn hash_of(name: &str, image: &str) -> String {
        crate::runtime::hash::container_hash_label(&Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        })
    }

    #[test]
    fn ephemeral_containers_start_once_even_before_initialization() {
        let mut p = pod("Always", &["init"], &["app"]);
        let spec = p.spec.as_mut().unwrap();
        spec.ephemeral_containers = Some(vec![
            serde_json::from_value(serde_json::json!({
                "name": "dbg", "image": "busybox", "targetContainerName": "app"}))
            .unwrap(),
        ]);
        let backoff = KeyedBackoff::new(CRASH_LOOP);
        let now = Instant::now();
        // Initialization still running: the debug container starts anyway.
        let running_init = [cv("init", RunState::Running, 0, 0, 1)];
        let a = plan(&p, Some(&sb(true)), &running_init, &[], &backoff, now);
        assert_eq!(a.ephemeral, vec!["dbg".to_string()]);
        // Once it ran (in this sandbox or an older one, whatever its end), never again.
        for state in [RunState::Running, RunState::Exited] {
            let mut dbg = cv("dbg", state, 1, 0, 2);
            dbg.sandbox_id = "old".into();
            let a = plan(
                &p,
                Some(&sb(true)),
                &[dbg, running_init[0].clone()],
                &[],
                &backoff,
                now,
            );
            assert!(a.ephemeral.is_empty(), "{state:?}: {a:?}");
        }
        // Not without a ready sandbox.
        assert!(
            plan(&p, Some(&sb(false)), &[], &[], &backoff, now)
                .ephemeral
                .is_empty()
        );
        // The spec the runtime gets: the shared fields, and the target apart.
        let (c, target) = ephemeral_spec(&p, "dbg").unwrap();
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("dbg", Some("busybox"))
        );
        assert_eq!(target.as_deref(), Some("app"));
        assert!(ephemeral_spec(&p, "app").is_none());
    }

    #[test]
    fn a_running_container_whose_image_changed_is_restarted_whatever_the_policy() {
        let backoff = KeyedBackoff::new(CRASH_LOOP);
        let now = Instant::now();
        for policy in ["Always", "Never"] {
            let p = pod(policy, &[], &["app"]);
            let mut old = cv("app", RunState::Running, 0, 2, 1);
            old.spec_hash = Some(hash_of("app", "busybox:old"));
            let a = plan(&p, Some(&sb(true)), &[old.clone()], &[], &backoff, now);
            assert_eq!(
                a.kill,
                vec![(
                    old.id.clone(),
                    "Container app definition changed, will be restarted".to_string()
                )],
                "{policy}"
            );
            assert_eq!(a.start, vec![start("app", false, 3)], "{policy}");
            // Same image, or a container whose hash is unknown: left alone.
            for spec_hash in [Some(hash_of("app", "busybox")), None] {
                old.spec_hash = spec_hash;
                let a = plan(&p, Some(&sb(true)), &[old.clone()], &[], &backoff, now);
                assert!(a.kill.is_empty() && a.start.is_empty(), "{a:?}");
            }
        }
    }

    /// The kubelet's computeInitContainerActions: a started sidecar whose image changed is killed
    /// ("Init container side definition changed", no restart wording) and started again; the
    /// walk stops there.
    #[test]
    fn a_running_sidecar_whose_image_changed_is_restarted() {
        let backoff = KeyedBackoff::new(CRASH_LOOP);
        let now = Instant::now();
        let p = pod("Never", &["side"], &["app"]);
        let mut side = cv("side", RunState::Running, 0, 0, 1);
        side.spec_hash = Some(hash_of("side", "busybox:old"));
        let app = cv("app", RunState::Running, 0, 0, 2);
        let a = plan(
            &p,
            Some(&sb(true)),
            &[app.clone(), side.clone()],
            &[],
            &backoff,
            now,
        );
        assert_eq!(
            a.kill,
            vec![(
                side.id.clone(),
                "Init container side definition changed".to_string()
            )]
        );
        assert_eq!(a.start, vec![start("side", true, 1)]);
        // Not before its startup probe passed: it does not count as started yet.
        let a = plan(
            &p,
            Some(&sb(true)),
            &[app, side.clone()],
            &[&side.id],
            &backoff,
            now,
        );
        assert!(a.kill.is_empty(), "{a:?}");
    }

    fn sb(ready: bool) -> SandboxView {
        SandboxView {
            id: "sb".into(),
            ready,
            attempt: 0,
        }
    }

    #[test]
    fn a_sidecar_not_started_by_its_startup_probe_holds_the_next_init_step() {
        let p = pod("Always", &["side", "init"], &["app"]);
        let running = [cv("side", RunState::Running, 0, 0, 1)];
        let b = KeyedBackoff::new(CRASH_LOOP);
        let names = |a: PodActions| a.start.into_iter().map(|s| s.name).collect::<Vec<_>>();
        let held = plan(
            &p,
            Some(&sb(true)),
            &running,
            &["side-1"],
            &b,
            Instant::now(),
        );
        assert_eq!(names(held), Vec::<String>::new());
        let go = plan(&p, Some(&sb(true)), &running, &[], &b, Instant::now());
        assert_eq!(names(go), vec!["init".to_string()]);
    }

    /// The worker's rounds within one sync, against a runtime where a started container runs:
    /// plan, start, and plan again while [`starts_unblock_init`] says a started sidecar lets the
    /// next init step go. A chain of sidecars and the apps all start in one sync; a regular init
    /// container (which must exit first) or an app ends the sync.
    #[test]
    fn started_sidecars_let_one_sync_start_the_next_init_step() {
        let sync = |p: &Pod, running: &mut Vec<ContainerView>| {
            let inits = p
                .spec
                .as_ref()
                .unwrap()
                .init_containers
                .as_ref()
                .map_or(0, Vec::len);
            let mut rounds = Vec::new();
            for _ in 0..2 + inits {
                let a = plan(
                    p,
                    Some(&sb(true)),
                    running,
                    &[],
                    &KeyedBackoff::new(CRASH_LOOP),
                    Instant::now(),
                );
                let names: Vec<String> = a.start.iter().map(|s| s.name.clone()).collect();
                let t = running.len() as i64;
                running.extend(names.iter().map(|n| cv(n, RunState::Running, 0, 0, t)));
                let started: Vec<&str> = names.iter().map(String::as_str).collect();
                let again = starts_unblock_init(p, &started);
                rounds.push(names);
                if !again {
                    break;
                }
            }
            rounds
        };
        let p = pod("Always", &["side1", "side2"], &["app"]);
        let mut running = vec![];
        assert_eq!(
            sync(&p, &mut running),
            [vec!["side1"], vec!["side2"], vec!["app"]],
            "one sync, three rounds"
        );
        // A sidecar restarted next to running apps: one more round, which has nothing to do.
        running.retain(|c| c.name != "side2");
        assert_eq!(sync(&p, &mut running), [vec!["side2"], vec![] as Vec<&str>]);
        // A regular init after the sidecar: the sync ends once it started.
        let p = pod("Always", &["side1", "init"], &["app"]);
        assert_eq!(
            sync(&p, &mut vec![]),
            [vec!["side1"], vec!["init"]],
            "the app waits for the init container to exit"
        );
        assert!(!starts_unblock_init(&p, &["init", "app"]));
        assert!(starts_unblock_init(&p, &["side1"]));
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
                what: "an app container created but never started (the runtime died during \
                       its start) is started again (the kubelet's ShouldContainerBeRestarted)",
                pod: pod("Always", &[], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Created, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("app", false, 1)],
                    ..Default::default()
                },
            },
            Case {
                what: "an app container in the unknown state (the runtime died while creating \
                       it) is killed, then a new instance started",
                pod: pod("Always", &[], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Unknown, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill: vec![(
                        "app-1".into(),
                        "Container is in \"unknown\" state, try killing it before restart".into(),
                    )],
                    start: vec![start("app", false, 1)],
                    ..Default::default()
                },
            },
            Case {
                what: "an init container in the unknown state is killed and run again",
                pod: pod("Always", &["i1", "i2"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Unknown, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill: vec![(
                        "i1-1".into(),
                        "Init container is in \"unknown\" state, try killing it before restart"
                            .into(),
                    )],
                    start: vec![start("i1", true, 1)],
                    ..Default::default()
                },
            },
            Case {
                what: "a sidecar in the unknown state is killed and started again",
                pod: pod("Never", &["side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("side", Unknown, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill: vec![(
                        "side-1".into(),
                        "Init container is in \"unknown\" state, try killing it before restart"
                            .into(),
                    )],
                    start: vec![start("side", true, 1)],
                    ..Default::default()
                },
            },
            Case {
                what: "an init container in the unknown state under restartPolicy Never ends \
                       the pod",
                pod: pod("Never", &["i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Unknown, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill_pod: true,
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
                backoff: "app",
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
                what: "sidecar: started first",
                pod: pod("Always", &["side", "i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![],
                backoff: "",
                want: PodActions {
                    start: vec![start("side", true, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: the next init starts once the sidecar runs, without waiting for it to exit",
                pod: pod("Always", &["side", "i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("side", Running, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("i1", true, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: a regular init running after it blocks the apps",
                pod: pod("Always", &["side", "i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Running, 0, 0, 2), cv("side", Running, 0, 0, 1)],
                backoff: "",
                want: PodActions::default(),
            },
            Case {
                what: "sidecar: apps start after the last regular init succeeded",
                pod: pod("Always", &["side", "i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Exited, 0, 0, 2), cv("side", Running, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("app", false, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: a running last init container is initialized",
                pod: pod("Always", &["i1", "side"], &["a", "b"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("side", Running, 0, 0, 2), cv("i1", Exited, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("a", false, 0), start("b", false, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: restarted whatever the pod's policy, the app keeps running",
                pod: pod("Never", &["side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Running, 0, 0, 2), cv("side", Exited, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("side", true, 1)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: crash-loop back-off without touching the app",
                pod: pod("Always", &["side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Running, 0, 0, 2), cv("side", Exited, 1, 3, 1)],
                backoff: "side",
                want: PodActions {
                    backing_off: vec![("side".into(), 10)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: in back-off before the first start of the next init, which waits",
                pod: pod("OnFailure", &["side", "i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("side", Exited, 1, 0, 1)],
                backoff: "side",
                want: PodActions {
                    backing_off: vec![("side".into(), 10)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: a failed regular init after it is restarted under OnFailure",
                pod: pod("OnFailure", &["side", "i1"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Exited, 1, 0, 2), cv("side", Running, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    start: vec![start("i1", true, 1)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: a regular init in back-off holds back the sidecars after it",
                pod: pod("OnFailure", &["i1", "side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("i1", Exited, 1, 0, 2)],
                backoff: "i1",
                want: PodActions {
                    backing_off: vec![("i1".into(), 10)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: not counted for completion; the pod ends when its apps are done",
                pod: pod("Never", &["side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Exited, 0, 0, 2), cv("side", Running, 0, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill_pod: true,
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: an exited sidecar is not restarted once the apps are done",
                pod: pod("OnFailure", &["side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Exited, 0, 0, 2), cv("side", Exited, 1, 0, 1)],
                backoff: "",
                want: PodActions {
                    kill_pod: true,
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: initialized pod whose instances are gone restarts only the sidecar",
                pod: pod("Always", &["i1", "side"], &["app"]),
                sandbox: Some(sb(true)),
                containers: vec![cv("app", Running, 0, 0, 3)],
                backoff: "",
                want: PodActions {
                    start: vec![start("side", true, 0)],
                    ..Default::default()
                },
            },
            Case {
                what: "sidecar: a finished Never pod with a sidecar gets no new sandbox",
                pod: pod("Never", &["side"], &["app"]),
                sandbox: Some(sb(false)),
                containers: vec![cv("app", Exited, 0, 0, 2), cv("side", Exited, 137, 0, 1)],
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
            // `backoff` names the container that crashed a second ago and waits out its delay.
            let mut b = KeyedBackoff::new(CRASH_LOOP);
            if !c.backoff.is_empty() {
                b.next(c.backoff, now - Duration::from_secs(1));
            }
            let got = plan(&c.pod, c.sandbox.as_ref(), &c.containers, &[], &b, now);
            assert_eq!(got, c.want, "{}", c.what);
        }
    }

    /// A pod of `policy` whose app container `app` (and init container `init`, if given) carry
    /// the given container-level fields.
    fn pod_with(policy: &str, init: Option<serde_json::Value>, app: serde_json::Value) -> Pod {
        let named = |mut c: serde_json::Value, n: &str| {
            c["name"] = n.into();
            c["image"] = "busybox".into();
            c
        };
        let inits: Vec<serde_json::Value> = init.map(|i| named(i, "init")).into_iter().collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy, "initContainers": inits,
                     "containers": [named(app, "app")]}
        }))
        .unwrap()
    }

    fn rules(rules: &[(&str, &str, &[i32])]) -> serde_json::Value {
        rules
            .iter()
            .map(|(action, op, codes)| {
                serde_json::json!({"action": action, "exitCodes": {"operator": op, "values": codes}})
            })
            .collect()
    }

    /// The kubelet's ContainerShouldRestart (pkg/api/v1/pod/util.go) and its table of cases.
    #[test]
    fn container_should_restart_as_the_kubelet() {
        use serde_json::json;
        let cases: Vec<(&str, &str, serde_json::Value, i32, bool)> = vec![
            ("pod Always alone", "Always", json!({}), 0, true),
            (
                "pod OnFailure alone, success",
                "OnFailure",
                json!({}),
                0,
                false,
            ),
            (
                "pod OnFailure alone, failure",
                "OnFailure",
                json!({}),
                1,
                true,
            ),
            ("pod Never alone", "Never", json!({}), 1, false),
            (
                "container Always beats pod Never",
                "Never",
                json!({"restartPolicy": "Always"}),
                0,
                true,
            ),
            (
                "container Never beats pod Always",
                "Always",
                json!({"restartPolicy": "Never"}),
                1,
                false,
            ),
            (
                "container OnFailure, success",
                "Always",
                json!({"restartPolicy": "OnFailure"}),
                0,
                false,
            ),
            (
                "container OnFailure, failure",
                "Never",
                json!({"restartPolicy": "OnFailure"}),
                2,
                true,
            ),
            (
                "rule In matched",
                "Never",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "In", &[42, 43])])}),
                43,
                true,
            ),
            (
                "rule In not matched: the container's policy",
                "Always",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "In", &[42])])}),
                1,
                false,
            ),
            (
                "rule NotIn matched",
                "Never",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "NotIn", &[0])])}),
                7,
                true,
            ),
            (
                "rule NotIn not matched",
                "Never",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "NotIn", &[0])])}),
                0,
                false,
            ),
            (
                "first matching rule wins",
                "Never",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[
                    ("RestartAllContainers", "In", &[1]), ("Restart", "In", &[1])])}),
                1,
                false,
            ),
            (
                "unknown operator matches nothing",
                "Never",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "Between", &[1])])}),
                1,
                false,
            ),
            (
                "rules without a container policy are not read (the API refuses them)",
                "Never",
                json!({"restartPolicyRules": rules(&[("Restart", "In", &[1])])}),
                1,
                false,
            ),
            (
                "a RestartAllContainers rule falls through to the container's policy",
                "Never",
                json!({"restartPolicy": "OnFailure", "restartPolicyRules": rules(&[("RestartAllContainers", "In", &[0])])}),
                0,
                false,
            ),
        ];
        for (what, policy, app, code, want) in cases {
            let p = pod_with(policy, None, app);
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(
                container_should_restart(&spec.containers[0], spec, code),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn restart_policy_on_the_container_when_killed_by_a_probe() {
        use serde_json::json;
        for (policy, app, want) in [
            ("Always", json!({}), true),
            ("Never", json!({}), false),
            ("Never", json!({"restartPolicy": "OnFailure"}), true),
            (
                "Always",
                json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "In", &[137])])}),
                false,
            ),
        ] {
            let p = pod_with(policy, None, app.clone());
            let c = &p.spec.as_ref().unwrap().containers[0];
            assert_eq!(restarts_when_killed(&p, c), want, "{policy} {app}");
        }
    }

    /// computePodActions with container-level restart policies and rules.
    #[test]
    fn plans_with_container_restart_rules() {
        use RunState::*;
        use serde_json::json;
        let now = Instant::now();
        let b = KeyedBackoff::new(CRASH_LOOP);
        let in42 = json!({"restartPolicy": "Never", "restartPolicyRules": rules(&[("Restart", "In", &[42])])});
        let kill = PodActions {
            kill_pod: true,
            ..Default::default()
        };
        let restart = |n| PodActions {
            start: vec![start("app", false, n)],
            ..Default::default()
        };
        /// (what, pod, sandbox, containers, expected actions)
        type Case = (
            &'static str,
            Pod,
            Option<SandboxView>,
            Vec<ContainerView>,
            PodActions,
        );
        let cases: Vec<Case> = vec![
            (
                "container Always in a pod Never: restarted",
                pod_with("Never", None, json!({"restartPolicy": "Always"})),
                Some(sb(true)),
                vec![cv("app", Exited, 1, 0, 1)],
                restart(1),
            ),
            (
                "rule matched: restarted",
                pod_with("Never", None, in42.clone()),
                Some(sb(true)),
                vec![cv("app", Exited, 42, 0, 1)],
                restart(1),
            ),
            (
                "rule not matched: done, the sandbox stops",
                pod_with("Never", None, in42.clone()),
                Some(sb(true)),
                vec![cv("app", Exited, 3, 0, 1)],
                kill.clone(),
            ),
            (
                "container Never in a pod Always: done",
                pod_with("Always", None, json!({"restartPolicy": "Never"})),
                Some(sb(true)),
                vec![cv("app", Exited, 3, 0, 1)],
                kill.clone(),
            ),
            (
                "a done pod Always gets no new sandbox",
                pod_with("Always", None, json!({"restartPolicy": "Never"})),
                Some(sb(false)),
                vec![cv("app", Exited, 3, 0, 1)],
                PodActions::default(),
            ),
            (
                "a pod Never that ran gets no second sandbox, whatever its containers' policies",
                pod_with("Never", None, json!({"restartPolicy": "Always"})),
                Some(sb(false)),
                vec![cv("app", Exited, 137, 0, 1)],
                kill.clone(),
            ),
            (
                "a pod Never whose sandbox never ran a container: a new sandbox",
                pod_with("Never", None, json!({"restartPolicy": "Always"})),
                Some(sb(false)),
                vec![],
                PodActions {
                    kill_pod: true,
                    create_sandbox: Some(1),
                    ..Default::default()
                },
            ),
            (
                "container OnFailure that succeeded in an older sandbox: not started again",
                pod_with("Always", None, json!({"restartPolicy": "OnFailure"})),
                Some(sb(true)),
                vec![{
                    let mut c = cv("app", Exited, 0, 0, 1);
                    c.sandbox_id = "old".into();
                    c
                }],
                kill.clone(),
            ),
            (
                "init OnFailure under pod Never: retried",
                pod_with(
                    "Never",
                    Some(json!({"restartPolicy": "OnFailure"})),
                    json!({}),
                ),
                Some(sb(true)),
                vec![cv("init", Exited, 1, 0, 1)],
                PodActions {
                    start: vec![start("init", true, 1)],
                    ..Default::default()
                },
            ),
            (
                "init Never under pod Always: its failure ends the pod",
                pod_with("Always", Some(json!({"restartPolicy": "Never"})), json!({})),
                Some(sb(true)),
                vec![cv("init", Exited, 1, 0, 1)],
                kill.clone(),
            ),
            (
                "init rule matched under pod Never: retried",
                pod_with("Never", Some(in42.clone()), json!({})),
                Some(sb(true)),
                vec![cv("init", Exited, 42, 0, 1)],
                PodActions {
                    start: vec![start("init", true, 1)],
                    ..Default::default()
                },
            ),
        ];
        for (what, p, sandbox, containers, want) in cases {
            assert_eq!(
                plan(&p, sandbox.as_ref(), &containers, &[], &b, now),
                want,
                "{what}"
            );
        }
        // pod_is_done agrees: the pod ends exactly when nothing will restart.
        let done = |p: &Pod, c: &[ContainerView]| pod_is_done(p, c);
        assert!(!done(
            &pod_with("Never", None, in42.clone()),
            &[cv("app", Exited, 42, 0, 1)]
        ));
        assert!(done(
            &pod_with("Never", None, in42.clone()),
            &[cv("app", Exited, 0, 0, 1)]
        ));
        assert!(done(
            &pod_with("Always", None, json!({"restartPolicy": "Never"})),
            &[cv("app", Exited, 0, 0, 1)]
        ));
        assert!(!done(
            &pod_with("Always", None, json!({})),
            &[cv("app", Exited, 0, 0, 1)]
        ));
        assert!(done(
            &pod_with("Always", Some(json!({"restartPolicy": "Never"})), json!({})),
            &[cv("init", Exited, 1, 0, 1)]
        ));
    }

    #[test]
    fn active_deadline_counts_from_the_start_time() {
        let pod = |deadline: Option<i64>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [], "activeDeadlineSeconds": deadline},
            }))
            .unwrap()
        };
        let cases = [
            ("no deadline", None, Some(0), 1000, false),
            ("not started", Some(5), None, 1000, false),
            ("before", Some(5), Some(100), 104, false),
            ("at the deadline", Some(5), Some(100), 105, true),
            ("after", Some(5), Some(100), 200, true),
        ];
        for (what, deadline, start, now, want) in cases {
            assert_eq!(
                past_active_deadline(&pod(deadline), start, now),
                want,
                "{what}"
            );
        }
    }
}
