//! Container-level `restartPolicy` and `restartPolicyRules` (the ContainerRestartRules feature,
//! beta and on by default since v1.35) end to end: the same pods run on a Bosun node and on an
//! upstream kubelet node in the same run, and both must show the same restart counts, container
//! states and pod phases. Each container counts its runs in an emptyDir (which outlives container
//! restarts) and exits with the code its script gives that run, so every pod settles in a state
//! that no longer changes: a terminal phase, or a container running after its restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bosun_tests::pod::{create, phase};
use bosun_tests::{Agent, ClusterNode, Container, PodBuilder, admin_client};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use serde_json::{Value, json};

/// A container whose n-th run exits with `codes[n-1]`; runs after the list `exec sleep 3600`.
fn runs(name: &str, codes: &[i32]) -> Container {
    let cases: String = codes
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}) exit {c};; ", i + 1))
        .collect();
    let script = format!(
        "n=$(cat /runs/{name} 2>/dev/null || echo 0); n=$((n+1)); echo $n > /runs/{name}; \
         case $n in {cases}esac; exec sleep 3600"
    );
    Container::sh(name, &script).mount("runs", "/runs")
}

/// A `Restart` rule on exit codes `op` (`In`, `NotIn`) `values`.
fn restart_on(op: &str, values: &[i32]) -> Value {
    json!([{"action": "Restart", "exitCodes": {"operator": op, "values": values}}])
}

/// The pods (name suffix, pod), each one case of the kubelet's ContainerShouldRestart.
fn pods(node: &ClusterNode) -> Vec<(&'static str, Pod)> {
    let p = |suffix: &str, policy: &str| {
        PodBuilder::new(&format!("{}-{suffix}", node.name))
            .node(&node.name)
            .restart_policy(policy)
            .empty_dir("runs")
    };
    vec![
        // The container's Always beats the pod's Never: restarted after its exit 1.
        (
            "always-in-never",
            p("always-in-never", "Never")
                .container(runs("c", &[1]).with("restartPolicy", json!("Always")))
                .build(),
        ),
        // A rule matching 42 restarts a Never container; its exit 0 then ends the pod.
        (
            "rule-in",
            p("rule-in", "Never")
                .container(
                    runs("c", &[42, 0])
                        .with("restartPolicy", json!("Never"))
                        .with("restartPolicyRules", restart_on("In", &[42])),
                )
                .build(),
        ),
        // An exit code no rule matches falls back to the container's Never.
        (
            "rule-unmatched",
            p("rule-unmatched", "Never")
                .container(
                    runs("c", &[3])
                        .with("restartPolicy", json!("Never"))
                        .with("restartPolicyRules", restart_on("In", &[42])),
                )
                .build(),
        ),
        // The container's Never beats the pod's Always: the pod fails.
        (
            "never-in-always",
            p("never-in-always", "Always")
                .container(runs("c", &[3]).with("restartPolicy", json!("Never")))
                .build(),
        ),
        // NotIn [0] restarts on 5; the exit 0 matches no rule and Never keeps it down: the pod
        // (restartPolicy Always) succeeds.
        (
            "notin-in-always",
            p("notin-in-always", "Always")
                .container(
                    runs("c", &[5, 0])
                        .with("restartPolicy", json!("Never"))
                        .with("restartPolicyRules", restart_on("NotIn", &[0])),
                )
                .build(),
        ),
        // An init container's OnFailure under the pod's Never: retried, then the app runs.
        (
            "init-onfailure",
            p("init-onfailure", "Never")
                .init_container(runs("i", &[1, 0]).with("restartPolicy", json!("OnFailure")))
                .container(runs("c", &[0]))
                .build(),
        ),
        // An init container's Never under the pod's Always: its failure fails the pod.
        (
            "init-never-in-always",
            p("init-never-in-always", "Always")
                .init_container(runs("i", &[1]).with("restartPolicy", json!("Never")))
                .container(runs("c", &[0]))
                .build(),
        ),
    ]
}

/// One container status as compared: restart count, state, last state.
fn describe(s: &ContainerStatus) -> String {
    let state = |st: Option<&k8s_openapi::api::core::v1::ContainerState>| -> String {
        let Some(st) = st else {
            return "none".into();
        };
        if st.running.is_some() {
            "running".into()
        } else if let Some(t) = &st.terminated {
            format!(
                "terminated({} {})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("")
            )
        } else if let Some(w) = &st.waiting {
            format!("waiting({})", w.reason.as_deref().unwrap_or(""))
        } else {
            "none".into()
        }
    };
    format!(
        "restarts={} state={} last={}",
        s.restart_count,
        state(s.state.as_ref()),
        state(s.last_state.as_ref())
    )
}

/// True once the pod no longer changes: a terminal phase, or (`ends` false) Running with every app
/// container running after at least one restart (a run that sleeps; an earlier run that exits
/// shows Running with restarts too, for a moment).
fn settled(p: &Pod, ends: bool) -> bool {
    let st = p.status.as_ref();
    match phase(p) {
        "Succeeded" | "Failed" => true,
        "Running" if !ends => st
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().all(|c| {
                    c.restart_count >= 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
            }),
        _ => false,
    }
}

/// Runs the pods on a node of `agent` and returns, per pod, its phase and container statuses.
async fn observe(agent: Agent) -> BTreeMap<String, String> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("rules", Default::default(), &client)
        .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let specs = pods(&node);
    for (_, p) in &specs {
        create(&api, p).await;
    }
    let mut facts = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(150);
    for (short, spec) in &specs {
        let name = spec.metadata.name.clone().unwrap_or_default();
        // A pod that does not settle is recorded as it is, so the comparison shows every case.
        let mut pod = api.get(&name).await.expect("get pod");
        let ends = short != &"always-in-never";
        while !settled(&pod, ends) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            pod = api.get(&name).await.expect("get pod");
        }
        let st = pod.status.clone().unwrap_or_default();
        let unsettled = if settled(&pod, ends) {
            ""
        } else {
            " (not settled)"
        };
        facts.insert(
            format!("{short}.phase"),
            format!("{}{unsettled}", phase(&pod)),
        );
        // PodObservedGenerationTracking: the status and the kubelet's conditions name the spec's
        // generation.
        let generation = pod.metadata.generation.unwrap_or_default();
        let observed = |g: Option<i64>| {
            if g == Some(generation) {
                "spec's"
            } else {
                "other"
            }
        };
        let mut conds: Vec<String> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| format!("{}={}", c.type_, observed(c.observed_generation)))
            .collect();
        conds.sort();
        facts.insert(
            format!("{short}.observedGeneration"),
            format!(
                "status={} {}",
                observed(st.observed_generation),
                conds.join(" ")
            ),
        );
        for (kind, list) in [
            ("init", st.init_container_statuses.as_deref()),
            ("app", st.container_statuses.as_deref()),
        ] {
            for s in list.unwrap_or_default() {
                facts.insert(format!("{short}.{kind}.{}", s.name), describe(s));
            }
        }
    }
    let names: Vec<String> = specs
        .iter()
        .filter_map(|(_, p)| p.metadata.name.clone())
        .collect();
    bosun_tests::pod::delete_and_wait_gone(&api, &names, 120).await;
    proc.stop();
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_restart_rules_as_on_the_kubelet() {
    let started = Instant::now();
    let (bosun, kubelet) = tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    eprintln!(
        "bosun: {bosun:#?}\nkubelet: {kubelet:#?}\n(settled in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let want = [
        ("always-in-never.phase", "Running"),
        (
            "always-in-never.app.c",
            "restarts=1 state=running last=terminated(1 Error)",
        ),
        ("rule-in.phase", "Succeeded"),
        (
            "rule-in.app.c",
            "restarts=1 state=terminated(0 Completed) last=terminated(42 Error)",
        ),
        ("rule-unmatched.phase", "Failed"),
        (
            "rule-unmatched.app.c",
            "restarts=0 state=terminated(3 Error) last=none",
        ),
        ("never-in-always.phase", "Failed"),
        (
            "never-in-always.app.c",
            "restarts=0 state=terminated(3 Error) last=none",
        ),
        ("notin-in-always.phase", "Succeeded"),
        (
            "notin-in-always.app.c",
            "restarts=1 state=terminated(0 Completed) last=terminated(5 Error)",
        ),
        ("init-onfailure.phase", "Succeeded"),
        (
            "init-onfailure.init.i",
            "restarts=1 state=terminated(0 Completed) last=terminated(1 Error)",
        ),
        (
            "init-onfailure.app.c",
            "restarts=0 state=terminated(0 Completed) last=none",
        ),
        ("init-never-in-always.phase", "Failed"),
        (
            "init-never-in-always.init.i",
            "restarts=0 state=terminated(1 Error) last=none",
        ),
    ];
    for (agent, f) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        for (k, v) in want {
            assert_eq!(
                f.get(k).map(String::as_str),
                Some(v),
                "{agent}: {k}\nall: {f:#?}"
            );
        }
    }
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}
