//! Pod security fields end to end, each checked from inside the container or in the pod's
//! status: a restricted-profile pod (runAsNonRoot with a user, drop ALL, seccomp RuntimeDefault,
//! no privilege escalation, read-only root filesystem) and a pod without a security context
//! print what the kernel says of them (uid/gid, CapEff, Seccomp, NoNewPrivs, a root filesystem
//! write, a masked /proc file; the service account token's owner and mode: 0640 under fsGroup,
//! owned by the pods' common runAsUser); a safe sysctl and one allowed by `allowedUnsafeSysctls` are set
//! in the pod; an unsafe sysctl and an AppArmor profile on a host without AppArmor are rejected
//! at admission; runAsNonRoot on a root image is a CreateContainerConfigError; hostUsers: false
//! on a runtime without user namespaces gets no sandbox (FailedCreatePodSandBox);
//! FallbackToLogsOnError fills a failed container's message from its log. The same pods run
//! on a Bosun node and an upstream kubelet node in one run; both must show the same facts.

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_tests::pod::{container_output, create};
use bosun_tests::{
    Agent, ClusterNode, Container, NodeOptions, PodBuilder, admin_client, wait_until_async,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

/// What the running pods print: their identity and confinement as the kernel reports it.
const FACTS: &str = r#"
echo "id=$(id -u):$(id -g):$(id -G)"
grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t '
if touch /rootfs-write 2>/dev/null; then echo rootfs=writable; else echo rootfs=read-only; fi
echo "timer_list=$(cat /proc/timer_list 2>/dev/null | wc -c)"
echo "port_range=$(cat /proc/sys/net/ipv4/ip_local_port_range | tr '\t' ' ')"
echo "msgmax=$(cat /proc/sys/kernel/msgmax)"
if [ -d /data ]; then
  echo "data=$(stat -c '%g %a' /data)"
  echo "data_write=$(touch /data/f 2>&1 && stat -c '%g' /data/f)"
  echo "info=$(stat -L -c '%g %a' /info/name)"
fi
t=/var/run/secrets/kubernetes.io/serviceaccount/token
if [ -e $t ]; then echo "token=$(stat -L -c '%u %g %a' $t)"; fi
echo END
exec sleep 3600
"#;

fn pods(node: &ClusterNode) -> Vec<Pod> {
    let n = |s: &str| format!("{}-{s}", node.name);
    let restricted = PodBuilder::new(&n("restricted"))
        .node(&node.name)
        .grace(1)
        .service_account_token()
        .spec(
            "securityContext",
            json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 3000,
                   "supplementalGroups": [4000], "fsGroup": 2000,
                   "seccompProfile": {"type": "RuntimeDefault"}}),
        )
        .empty_dir("data")
        .volume(json!({"name": "info", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}))
        .container(
            Container::sh("main", FACTS)
                .with(
                    "securityContext",
                    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                           "capabilities": {"drop": ["ALL"]}}),
                )
                .mount("data", "/data")
                .mount("info", "/info"),
        )
        .build();
    let plain = PodBuilder::new(&n("plain"))
        .node(&node.name)
        .grace(1)
        .service_account_token()
        .spec(
            "securityContext",
            json!({"sysctls": [
                {"name": "net.ipv4.ip_local_port_range", "value": "20000 30000"},
                {"name": "kernel.msgmax", "value": "12345"}]}),
        )
        .container(Container::sh("main", FACTS))
        .build();
    let unsafe_sysctl = PodBuilder::new(&n("unsafe"))
        .node(&node.name)
        .grace(1)
        .spec(
            "securityContext",
            json!({"sysctls": [{"name": "kernel.shmmax", "value": "1000000"}]}),
        )
        .container(Container::sh("main", "sleep 3600"))
        .build();
    let apparmor = PodBuilder::new(&n("apparmor"))
        .node(&node.name)
        .grace(1)
        .container(Container::sh("main", "sleep 3600").with(
            "securityContext",
            json!({"appArmorProfile": {"type": "RuntimeDefault"}}),
        ))
        .build();
    let root_image = PodBuilder::new(&n("rootimage"))
        .node(&node.name)
        .grace(1)
        .spec("securityContext", json!({"runAsNonRoot": true}))
        .container(Container::sh("main", "sleep 3600"))
        .build();
    // 100 lines of 40 bytes, then a failure without a termination message.
    let fallback = PodBuilder::new(&n("fallback"))
        .node(&node.name)
        .grace(1)
        .restart_policy("Never")
        .container(
            Container::sh(
                "main",
                "for i in $(seq -w 100); do echo \"line-$i-0123456789012345678901234567890\"; done; exit 3",
            )
            .with("terminationMessagePolicy", json!("FallbackToLogsOnError")),
        )
        .build();
    let userns = PodBuilder::new(&n("userns"))
        .node(&node.name)
        .grace(1)
        .spec("hostUsers", json!(false))
        .container(Container::sh("main", "sleep 3600"))
        .build();
    vec![
        restricted,
        plain,
        unsafe_sysctl,
        apparmor,
        root_image,
        fallback,
        userns,
    ]
}

/// What one agent's node showed, node-specific names masked.
type Facts = BTreeMap<String, String>;

async fn observe(agent: Agent) -> Facts {
    let client = admin_client().await;
    let node = ClusterNode::with_options(
        &format!("sec-{}", agent.name()),
        &NodeOptions {
            extra_config: "allowedUnsafeSysctls: [\"kernel.msg*\"]\n".into(),
            ..Default::default()
        },
    );
    let mut proc = agent.start_ready(&node, &client, 120).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    for p in pods(&node) {
        create(&api, &p).await;
    }
    let mut facts = Facts::new();
    let short = |s: &str| s.rsplit('-').next().unwrap_or_default().to_string();
    for what in ["restricted", "plain"] {
        let name = format!("{}-{what}", node.name);
        let out = wait_until_async(
            &format!("{name} ({}) to print its facts", agent.name()),
            Duration::from_secs(120),
            || async {
                let pod = api.get_opt(&name).await.ok()??;
                let uid = pod.metadata.uid.clone()?;
                let out =
                    container_output(&node.path().join("pods"), "default", &name, &uid, "main");
                out.lines().any(|l| l == "END").then_some(out)
            },
        )
        .await;
        for line in out.lines().filter(|l| *l != "END") {
            let (k, v) = line.split_once(['=', ':']).unwrap_or((line, ""));
            facts.insert(format!("{}.{k}", short(&name)), v.to_string());
        }
    }
    for what in ["unsafe", "apparmor"] {
        let name = format!("{}-{what}", node.name);
        let (reason, message) = wait_until_async(
            &format!("{name} ({}) rejected", agent.name()),
            Duration::from_secs(60),
            || async {
                let st = api.get_opt(&name).await.ok()??.status?;
                (st.phase.as_deref() == Some("Failed")).then(|| {
                    (
                        st.reason.unwrap_or_default(),
                        st.message.unwrap_or_default(),
                    )
                })
            },
        )
        .await;
        facts.insert(format!("{what}.reason"), reason);
        facts.insert(format!("{what}.message"), message);
    }
    let name = format!("{}-rootimage", node.name);
    let (reason, message) = wait_until_async(
        &format!("{name} ({}) waiting with a config error", agent.name()),
        Duration::from_secs(90),
        || async {
            let pod = api.get_opt(&name).await.ok()??;
            let uid = pod.metadata.uid.clone()?;
            let s = bosun_tests::pod::container_status(&pod, "main")?;
            let w = s.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.clone()?;
            (reason == "CreateContainerConfigError").then(|| {
                let m = w.message.clone().unwrap_or_default();
                (reason, m.replace(&uid, "<uid>").replace(&name, "<pod>"))
            })
        },
    )
    .await;
    let name = format!("{}-fallback", node.name);
    let fallback = wait_until_async(
        &format!("{name} ({}) terminated", agent.name()),
        Duration::from_secs(90),
        || async {
            let pod = api.get_opt(&name).await.ok()??;
            let s = bosun_tests::pod::container_status(&pod, "main")?;
            let t = s.state.as_ref()?.terminated.as_ref()?;
            Some(t.message.clone().unwrap_or_default())
        },
    )
    .await;
    facts.insert("fallback.message".into(), fallback);
    // hostUsers: false on a runtime without user namespaces: no sandbox, an event saying why.
    let name = format!("{}-userns", node.name);
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sandbox_failure = loop {
        let list = events.list(&lp).await.map(|l| l.items).unwrap_or_default();
        if let Some(m) = list
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
            .and_then(|e| e.message)
        {
            break m;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("userns") || l.contains("WARN") || l.contains("ERROR"))
                .collect();
            let pod = api.get_opt(&name).await.ok().flatten();
            panic!(
                "{name} ({}): no FailedCreatePodSandBox event in 60 s; pod {:?}; the agent logged:\n{}",
                agent.name(),
                pod.map(|p| (p.spec.map(|s| (s.node_name, s.host_users)), p.status)),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    facts.insert("userns.event".into(), sandbox_failure);
    let pod = api.get(&name).await.expect("userns pod");
    let running = bosun_tests::pod::container_status(&pod, "main")
        .is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
    facts.insert("userns.running".into(), running.to_string());
    facts.insert("rootimage.reason".into(), reason);
    facts.insert("rootimage.message".into(), message);
    if let Some(status) = proc.exited() {
        panic!("{} exited: {status}", agent.name());
    }
    facts
}

#[tokio::test]
async fn security_context_sysctls_and_apparmor_as_on_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    let want: &[(&str, &str)] = &[
        ("restricted.id", "1000:3000:3000 2000 4000"),
        ("restricted.data", "2000 2777"),
        ("restricted.data_write", "2000"),
        ("restricted.info", "2000 644"),
        ("restricted.CapEff", "0000000000000000"),
        ("restricted.Seccomp", "2"),
        ("restricted.NoNewPrivs", "1"),
        ("restricted.rootfs", "read-only"),
        // The token: owned by the pod's one runAsUser, group fsGroup, 0600 made 0640.
        ("restricted.token", "1000 2000 640"),
        ("plain.token", "0 0 644"),
        ("plain.Seccomp", "0"),
        ("plain.NoNewPrivs", "0"),
        ("plain.rootfs", "writable"),
        ("plain.timer_list", "0"),
        ("plain.port_range", "20000 30000"),
        ("plain.msgmax", "12345"),
        ("unsafe.reason", "SysctlForbidden"),
        (
            "unsafe.message",
            "Pod was rejected: forbidden sysctl: \"kernel.shmmax\" not allowlisted",
        ),
        ("apparmor.reason", "AppArmor"),
        (
            "apparmor.message",
            "Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host",
        ),
        (
            "userns.event",
            "Failed to create pod sandbox: can't set `spec.hostUsers: false`, runtime does not support user namespaces",
        ),
        ("userns.running", "false"),
        ("rootimage.reason", "CreateContainerConfigError"),
        (
            "rootimage.message",
            "container has runAsNonRoot and image will run as root (pod: \"<pod>_default(<uid>)\", container: main)",
        ),
    ];
    // FallbackToLogsOnError: the last 80 lines of the log, cut to its last 2048 bytes.
    let tail: String = (21..=100)
        .map(|i| format!("line-{i:03}-0123456789012345678901234567890\n"))
        .collect();
    let want_fallback = &tail[tail.len() - 2048..];
    for (agent, f) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        assert_eq!(
            f.get("fallback.message").map(String::as_str),
            Some(want_fallback),
            "{agent}: the fallback termination message"
        );
        for (k, v) in want {
            assert_eq!(
                f.get(*k).map(String::as_str),
                Some(*v),
                "{agent}: {k}\nall facts: {f:#?}"
            );
        }
    }
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}
