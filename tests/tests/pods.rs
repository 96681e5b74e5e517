//! Pods from the API server on a bosun node: bound pods run through the real containerd and
//! their status in the API tells the truth (phase, conditions, container states, reasons).

use std::time::Duration;

use bosun_tests::BosunNode;
use bosun_tests::pod::{
    Container, PodBuilder, condition_status, container_status, create, delete_and_wait_gone, phase,
    wait_gone, wait_pod,
};
use bosun_tests::{ClusterNode, Env, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, PostParams};

/// A pod on `node` with a 3 s grace period.
fn pod(node: &ClusterNode, name: &str, policy: &str) -> PodBuilder {
    PodBuilder::new(name)
        .node(&node.name)
        .restart_policy(policy)
        .grace(3)
}

/// The message of pod `name`'s container `main` once it waits in CreateContainerConfigError
/// (within 60 s).
async fn config_error(api: &Api<Pod>, name: &str) -> String {
    wait_pod(api, name, "CreateContainerConfigError", 60, |p| {
        let w = container_status(p, "main")?
            .state
            .as_ref()?
            .waiting
            .as_ref()?;
        (w.reason.as_deref() == Some("CreateContainerConfigError"))
            .then(|| w.message.clone().unwrap_or_default())
    })
    .await
}

/// Watches the pod and collects the distinct (reason, message) of its first container's waiting
/// state, in order, until `until` appears.
async fn waiting_reasons(
    api: &Api<Pod>,
    name: &str,
    until: &str,
    secs: u64,
) -> Vec<(String, String)> {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api.clone(), cfg).boxed();
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {until}; saw {seen:?}"));
        let pods = match ev {
            Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => vec![p],
            Some(_) => continue,
            None => panic!("watch ended"),
        };
        for p in pods {
            let w = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref()?.waiting.clone());
            if let Some(w) = w {
                let item = (w.reason.unwrap_or_default(), w.message.unwrap_or_default());
                if seen.last().map(|l| &l.0) != Some(&item.0) {
                    seen.push(item.clone());
                }
                if item.0 == until {
                    return seen;
                }
            }
        }
    }
}

#[tokio::test]
async fn bound_pod_runs_and_reports_status_then_is_deleted_gracefully() {
    let bn = BosunNode::start("pods-run").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-web", node.name);
    let spec = pod(node, &name, "Always")
        .container(
            Container::sh(
                "main",
                "trap 'echo got TERM; exit 0' TERM; while :; do sleep 1; done",
            )
            .requests("100m", "16Mi")
            .limits("200m", "32Mi"),
        )
        .build();
    create(api, &spec).await;
    let p = wait_pod(api, &name, "pod Running and Ready", 60, |p| {
        (phase(p) == "Running" && condition_status(p, "Ready") == Some("True")).then(|| p.clone())
    })
    .await;
    let st = p.status.as_ref().unwrap();
    let cs = container_status(&p, "main").expect("container status");
    assert!(
        cs.ready && cs.started == Some(true) && cs.restart_count == 0,
        "{cs:?}"
    );
    assert!(
        cs.state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .is_some()
    );
    assert!(
        cs.container_id
            .as_deref()
            .unwrap_or("")
            .starts_with("containerd://"),
        "{cs:?}"
    );
    // As the kubelet: the runtime's image reference, a repo digest on containerd.
    assert!(cs.image_id.contains("sha256:"), "{}", cs.image_id);
    assert_eq!(cs.image, Env::runtime().busybox_image());
    let ip = st.pod_ip.clone().expect("podIP");
    assert!(
        ip.starts_with(node.ctd.subnet.trim_end_matches("0/24")),
        "pod IP {ip} not on the node's bridge {}",
        node.ctd.subnet
    );
    assert_eq!(st.host_ip.as_deref(), Some(Env::cluster().var("NODE_IP")));
    assert_eq!(st.qos_class.as_deref(), Some("Burstable"));
    assert!(st.start_time.is_some());
    for kind in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert_eq!(condition_status(&p, kind), Some("True"), "{kind}");
    }

    // Graceful deletion: SIGTERM reaches the container (it logs it), then the pod object is gone.
    let uid = api
        .get(&name)
        .await
        .expect("pod")
        .metadata
        .uid
        .expect("uid");
    let pod_dir = node.path().join("root/pods").join(&uid);
    assert!(pod_dir.exists(), "no pod directory {}", pod_dir.display());
    delete_and_wait_gone(api, &[&name], 60).await;
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    assert!(
        cri.list_pod_sandbox(None).await.unwrap().is_empty(),
        "sandbox left behind"
    );
    // Volumes (the service account token's tmpfs included) unmounted and the directory removed.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*pod_dir.to_string_lossy()),
        "mounts left under {}",
        pod_dir.display()
    );
    assert!(
        !pod_dir.exists(),
        "pod directory left: {}",
        pod_dir.display()
    );
    bn.finish();
}

#[tokio::test]
async fn exit_codes_give_succeeded_and_failed() {
    let bn = BosunNode::start("pods-exit").await;
    let (node, api) = (&bn.node, &bn.pods);
    let ok = format!("{}-ok", node.name);
    let bad = format!("{}-bad", node.name);
    let main = |script| Container::sh("main", script);
    create(
        api,
        &pod(node, &ok, "Never").container(main("exit 0")).build(),
    )
    .await;
    create(
        api,
        &pod(node, &bad, "Never")
            .container(main("echo failing >/dev/termination-log; exit 3"))
            .build(),
    )
    .await;
    let p = wait_pod(api, &ok, "pod Succeeded", 60, |p| {
        (phase(p) == "Succeeded").then(|| p.clone())
    })
    .await;
    let t = container_status(&p, "main")
        .and_then(|c| c.state.as_ref()?.terminated.clone())
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(condition_status(&p, "Ready"), Some("False"));
    let p = wait_pod(api, &bad, "pod Failed", 60, |p| {
        (phase(p) == "Failed").then(|| p.clone())
    })
    .await;
    let t = container_status(&p, "main")
        .and_then(|c| c.state.as_ref()?.terminated.clone())
        .expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    assert_eq!(
        t.message.as_deref().map(str::trim),
        Some("failing"),
        "termination message"
    );
    delete_and_wait_gone(api, &[&ok, &bad], 60).await;
    bn.finish();
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_app() {
    let bn = BosunNode::start("pods-init").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-init", node.name);
    let worker = |name, script| Container::sh(name, script).mount("work", "/work");
    let p = pod(node, &name, "Never")
        .empty_dir("work")
        .init_container(worker("first", "sleep 1; echo one >> /work/order"))
        .init_container(worker("second", "echo two >> /work/order"))
        .container(worker(
            "main",
            "test \"$(cat /work/order)\" = \"$(printf 'one\\ntwo')\"",
        ))
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "pod finished", 90, |p| {
        matches!(phase(p), "Succeeded" | "Failed").then(|| p.clone())
    })
    .await;
    assert_eq!(
        phase(&p),
        "Succeeded",
        "the app saw the init containers' writes out of order: {:?}",
        p.status
    );
    let inits = p
        .status
        .as_ref()
        .unwrap()
        .init_container_statuses
        .clone()
        .expect("init statuses");
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["first", "second"]
    );
    for c in &inits {
        let t = c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("init terminated");
        assert_eq!(t.reason.as_deref(), Some("Completed"));
    }
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    bn.finish();
}

#[tokio::test]
async fn missing_image_and_crash_loop_reasons() {
    let bn = BosunNode::start("pods-reasons").await;
    let (node, api) = (&bn.node, &bn.pods);
    let missing = format!("{}-missing", node.name);
    let crash = format!("{}-crash", node.name);
    let image = format!("{}/does-not-exist:1", Env::runtime().registry());
    create(
        api,
        &pod(node, &missing, "Always")
            .container(Container::image_only("main", &image))
            .build(),
    )
    .await;
    create(
        api,
        &pod(node, &crash, "Always")
            .container(Container::sh("main", "exit 1"))
            .build(),
    )
    .await;
    let waiting = |reason: &'static str| {
        move |p: &Pod| {
            let w = container_status(p, "main")?
                .state
                .as_ref()?
                .waiting
                .as_ref()?;
            (w.reason.as_deref() == Some(reason)).then(|| w.message.clone().unwrap_or_default())
        }
    };
    // Every status write is seen through a watch: ErrImagePull first, then ImagePullBackOff.
    let seen = waiting_reasons(api, &missing, "ImagePullBackOff", 60).await;
    let first = seen
        .iter()
        .position(|(r, _)| r == "ErrImagePull")
        .unwrap_or_else(|| panic!("no ErrImagePull in {seen:?}"));
    let backoff = seen
        .iter()
        .position(|(r, _)| r == "ImagePullBackOff")
        .expect("ImagePullBackOff");
    assert!(first < backoff, "{seen:?}");
    assert!(seen[first].1.contains("does-not-exist"), "{seen:?}");
    // The kubelet's events for it: Pulling, Failed (the error, then "Error: ErrImagePull"), BackOff.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(admin_client().await, "default");
    let lp = kube::api::ListParams::default().fields(&format!("involvedObject.name={missing}"));
    let reasons = wait_until_async(
        "Pulling, Failed and BackOff events",
        Duration::from_secs(30),
        || async {
            let list = events.list(&lp).await.ok()?;
            let r: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
            ["Pulling", "Failed", "BackOff"]
                .iter()
                .all(|w| r.iter().any(|x| x == w))
                .then_some(list.items)
        },
    )
    .await;
    let failed = reasons
        .iter()
        .find(|e| e.message.as_deref() == Some("Error: ErrImagePull"))
        .expect("Error: ErrImagePull event");
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(
        failed.involved_object.field_path.as_deref(),
        Some("spec.containers{main}")
    );
    assert_eq!(
        failed.source.as_ref().and_then(|s| s.host.as_deref()),
        Some(node.name.as_str())
    );
    let p = wait_pod(api, &missing, "phase Pending", 5, |p| {
        (phase(p) == "Pending").then(|| p.clone())
    })
    .await;
    assert_eq!(condition_status(&p, "Ready"), Some("False"));

    let msg = wait_pod(
        api,
        &crash,
        "CrashLoopBackOff",
        90,
        waiting("CrashLoopBackOff"),
    )
    .await;
    assert!(msg.contains("back-off 10s"), "{msg}");
    let p = wait_pod(api, &crash, "restartCount >= 2", 90, |p| {
        (container_status(p, "main")?.restart_count >= 2).then(|| p.clone())
    })
    .await;
    let last = container_status(&p, "main")
        .and_then(|c| c.last_state.as_ref()?.terminated.clone())
        .expect("lastState terminated");
    assert_eq!(last.exit_code, 1);
    let msg = wait_pod(api, &crash, "back-off doubled", 90, |p| {
        let w = container_status(p, "main")?
            .state
            .as_ref()?
            .waiting
            .as_ref()?;
        w.message
            .as_deref()
            .filter(|m| m.contains("back-off 20s"))
            .map(str::to_string)
    })
    .await;
    assert!(msg.contains("restarting failed container=main"), "{msg}");
    for n in [&missing, &crash] {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    bn.finish();
}

/// Runs `cmd` in the pod's first container through the node's CRI; returns stdout.
async fn exec(node: &ClusterNode, p: &Pod, cmd: &str) -> String {
    let id = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .expect("container id");
    let id = id.trim_start_matches("containerd://");
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    let out = cri
        .exec_sync(
            id,
            vec!["sh".into(), "-c".into(), cmd.into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn default_pod_gets_its_service_account_token_and_service_env() {
    let bn = BosunNode::start("pods-sa").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-sa", node.name);
    let p = pod(node, &name, "Always")
        .service_account_token()
        .container(Container::sh("main", "exec sleep 3600"))
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "pod Running", 60, |p| {
        (phase(p) == "Running").then(|| p.clone())
    })
    .await;
    let dir = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(
        exec(node, &p, &format!("cat {dir}/namespace")).await,
        "default"
    );
    assert!(
        exec(node, &p, &format!("cat {dir}/ca.crt"))
            .await
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let token = exec(node, &p, &format!("cat {dir}/token")).await;
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    // The token is a real one: the API server accepts it (TokenReview as the admin).
    let review: k8s_openapi::api::authentication::v1::TokenReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}
    })).unwrap();
    let reviews: Api<k8s_openapi::api::authentication::v1::TokenReview> =
        Api::all(admin_client().await);
    let r = reviews
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let st = r.status.expect("review status");
    assert_eq!(st.authenticated, Some(true), "{st:?}");
    assert_eq!(
        st.user.and_then(|u| u.username).as_deref(),
        Some("system:serviceaccount:default:default")
    );
    assert_eq!(
        exec(
            node,
            &p,
            "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
        )
        .await,
        "10.96.0.1:443"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    bn.finish();
}

#[tokio::test]
async fn config_maps_in_env_and_volumes() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let bn = BosunNode::start("pods-cm").await;
    let (node, client, api) = (&bn.node, bn.client.clone(), &bn.pods);
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm_name = format!("{}-cm", node.name);
    let cm: ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": cm_name}, "data": {"greeting": "v1"}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    // A key that does not exist: CreateContainerConfigError with the kubelet's message.
    let bad = format!("{}-badkey", node.name);
    let from_cm =
        |key| serde_json::json!({"valueFrom": {"configMapKeyRef": {"name": cm_name, "key": key}}});
    let p = pod(node, &bad, "Always")
        .container(Container::sh("main", "exec sleep 3600").env("X", from_cm("nope")))
        .build();
    create(api, &p).await;
    let msg = config_error(api, &bad).await;
    assert_eq!(
        msg,
        format!("couldn't find key nope in ConfigMap default/{cm_name}")
    );

    // Env from the key, and a volume whose file follows updates of the ConfigMap.
    let good = format!("{}-good", node.name);
    let p = pod(node, &good, "Always")
        .volume(serde_json::json!({"name": "cfg", "configMap": {"name": cm_name}}))
        .container(
            Container::sh("main", "exec sleep 3600")
                .env("GREETING", from_cm("greeting"))
                .mount("cfg", "/cfg"),
        )
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &good, "pod Running", 60, |p| {
        (phase(p) == "Running").then(|| p.clone())
    })
    .await;
    assert_eq!(exec(node, &p, "echo $GREETING").await, "v1");
    assert_eq!(exec(node, &p, "cat /cfg/greeting").await, "v1");
    let patch = serde_json::json!({"data": {"greeting": "v2"}});
    cms.patch(
        &cm_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    wait_until_async(
        "the mounted file follows the ConfigMap",
        Duration::from_secs(120),
        || async { (exec(node, &p, "cat /cfg/greeting").await == "v2").then_some(()) },
    )
    .await;
    eprintln!(
        "configMap update reached the file after {:?}",
        started.elapsed()
    );
    for n in [&bad, &good] {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    cms.delete(&cm_name, &DeleteParams::default())
        .await
        .unwrap();
    bn.finish();
}

#[tokio::test]
async fn pods_sharing_kube_root_ca_make_no_periodic_configmap_gets() {
    use bosun_tests::bench::audit::{Cursor, requests};
    use k8s_openapi::jiff::Timestamp;
    let audit_log = std::path::PathBuf::from(Env::cluster().var("AUDIT_LOG"));
    let node = ClusterNode::new("pods-cmwatch");
    let user = format!("system:node:{}", node.name);
    let run = Cursor::at_end(&audit_log).unwrap();
    let run_from = Timestamp::now();
    let mut bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    // Three pods with the default token volume: each projects kube-root-ca.crt.
    let names: Vec<String> = (0..3).map(|i| format!("{}-{i}", node.name)).collect();
    for name in &names {
        let p = pod(&node, name, "Always")
            .service_account_token()
            .container(Container::sh("main", "exec sleep 3600"))
            .build();
        api.create(&PostParams::default(), &p).await.unwrap();
    }
    let pods = wait_until_async("3 pods Running", Duration::from_secs(240), || async {
        let mut out = Vec::new();
        for n in &names {
            let p = api.get_opt(n).await.ok()??;
            (phase(&p) == "Running").then_some(())?;
            out.push(p);
        }
        Some(out)
    })
    .await;
    for p in &pods {
        assert!(
            exec(
                &node,
                p,
                "cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
            )
            .await
            .contains("BEGIN CERTIFICATE")
        );
    }
    // A window longer than the volumes' refresh period (60 s): every pod rewrites its token
    // volume once in it, from the watch, with no GET.
    let window = Cursor::at_end(&audit_log).unwrap();
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(75)).await;
    let to = Timestamp::now();
    // Requests received just before `to` may still be writing their ResponseComplete event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let steady = requests(&window.read_since().unwrap(), &user, from, to);
    let whole = requests(&run.read_since().unwrap(), &user, run_from, to);
    eprintln!("steady: {steady:?}\nwhole run: {whole:?}");
    assert_eq!(steady.get("get configmaps"), None, "{steady:?}");
    assert_eq!(whole.get("get configmaps"), None, "{whole:?}");
    // One watch for the object all three pods share.
    assert_eq!(whole.get("list configmaps"), Some(&1), "{whole:?}");
    assert!(whole.contains_key("watch configmaps"), "{whole:?}");
    for n in &names {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn oversized_pods_are_rejected_at_admission() {
    let bn = BosunNode::start("pods-admit").await;
    let (node, api) = (&bn.node, &bn.pods);
    let big_cpu = format!("{}-cpu", node.name);
    let big_mem = format!("{}-mem", node.name);
    let fits = format!("{}-fits", node.name);
    let with = |name: &str, cpu: &str, mem: &str| {
        pod(node, name, "Always")
            .container(Container::exec("main", &["sleep", "3600"]).requests(cpu, mem))
            .build()
    };
    create(api, &with(&big_cpu, "1000", "1Mi")).await;
    create(api, &with(&big_mem, "10m", "100Ti")).await;
    create(api, &with(&fits, "10m", "1Mi")).await;
    for (name, reason, resource) in [
        (&big_cpu, "OutOfcpu", "cpu"),
        (&big_mem, "OutOfmemory", "memory"),
    ] {
        let p = wait_pod(api, name, "pod Failed at admission", 60, |p| {
            (phase(p) == "Failed").then(|| p.clone())
        })
        .await;
        let st = p.status.unwrap();
        assert_eq!(st.reason.as_deref(), Some(reason));
        let msg = st.message.unwrap_or_default();
        assert!(
            msg.starts_with(&format!(
                "Pod was rejected: Node didn't have enough resource: {resource}, requested: "
            )),
            "{msg}"
        );
    }
    wait_pod(api, &fits, "the pod that fits runs", 60, |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    // Nothing of the rejected pods reached the runtime.
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    assert_eq!(cri.list_pod_sandbox(None).await.unwrap().len(), 1);
    for n in [&big_cpu, &big_mem, &fits] {
        api.delete(n, &DeleteParams::default()).await.unwrap();
    }
    bn.finish();
}

#[tokio::test]
async fn node_labels_added_through_the_api_are_admitted() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    let bn = BosunNode::start("pods-admit-label").await;
    let (node, client, api) = (&bn.node, bn.client.clone(), &bn.pods);
    let nodes: Api<Node> = Api::all(client);
    let key = "bosun.test/disk";
    let on = |name: &str, value: &str| {
        pod(node, name, "Always")
            .spec("nodeSelector", serde_json::json!({ key: value }))
            .container(Container::exec("main", &["sleep", "3600"]))
            .build()
    };
    wait_until_async("the Node registered", Duration::from_secs(60), || async {
        nodes.get_opt(&node.name).await.ok()?.map(|_| ())
    })
    .await;
    // As `kubectl label node <node> bosun.test/disk=ssd`: nothing in bosun's flags names it.
    let label = serde_json::json!({"metadata": {"labels": { key: "ssd" }}});
    nodes
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .expect("label the node");
    wait_until_async(
        "bosun saw the new label",
        Duration::from_secs(30),
        || async {
            bn.bosun
                .log_text()
                .lines()
                .any(|l| l.contains("node labels or taints changed") && l.contains(key))
                .then_some(())
        },
    )
    .await;
    let ssd = format!("{}-ssd", node.name);
    let hdd = format!("{}-hdd", node.name);
    create(api, &on(&ssd, "ssd")).await;
    create(api, &on(&hdd, "hdd")).await;
    wait_pod(
        api,
        &ssd,
        "the pod selecting the API's label runs",
        60,
        |p| (phase(p) == "Running").then_some(()),
    )
    .await;
    let p = wait_pod(
        api,
        &hdd,
        "the pod selecting another value fails",
        60,
        |p| (phase(p) == "Failed").then(|| p.clone()),
    )
    .await;
    assert_eq!(p.status.unwrap().reason.as_deref(), Some("NodeAffinity"));
    // As `kubectl taint node <node> bosun.test/drain=yes:NoExecute`: a pod bound to the node
    // without a toleration is rejected as the kubelet does (it checks NoExecute only).
    let taint = serde_json::json!({"spec": {"taints": [
        {"key": "bosun.test/drain", "value": "yes", "effect": "NoExecute"}]}});
    nodes
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .expect("taint the node");
    wait_until_async("bosun saw the taint", Duration::from_secs(30), || async {
        bn.bosun
            .log_text()
            .lines()
            .any(|l| l.contains("node labels or taints changed") && l.contains("bosun.test/drain"))
            .then_some(())
    })
    .await;
    let untolerated = format!("{}-untolerated", node.name);
    create(api, &on(&untolerated, "ssd")).await;
    // The controller-manager's taint eviction deletes such a pod too, possibly before bosun's
    // Failed status lands: bosun's rejection is read from its log.
    wait_until_async("bosun rejected the untolerating pod", Duration::from_secs(60), || async {
        bn.bosun
            .log_text()
            .lines()
            .any(|l| {
                l.contains(&untolerated)
                    && l.contains("Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate")
                    && l.contains("TaintToleration")
            })
            .then_some(())
    })
    .await;
    // The controller-manager's taint eviction may have deleted them already.
    for n in [&ssd, &hdd, &untolerated] {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
    bn.finish();
}

async fn create_many(api: &Api<Pod>, node: &ClusterNode, tag: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{}-{tag}-{i}", node.name)).collect();
    let creates = names.iter().map(|name| {
        let p = pod(node, name, "Always")
            .container(Container::sh("main", "exec sleep 3600"))
            .build();
        async move { create(api, &p).await }
    });
    futures::future::join_all(creates).await;
    names
}

async fn running_container_ids(api: &Api<Pod>, names: &[String]) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    for n in names {
        let p = api.get_opt(n).await.ok()??;
        if phase(&p) != "Running" {
            return None;
        }
        let cs = container_status(&p, "main")?;
        if !cs.ready || cs.restart_count != 0 {
            return None;
        }
        ids.push(cs.container_id.clone()?);
    }
    Some(ids)
}

#[tokio::test]
async fn fifty_pods_at_once_all_run_and_go() {
    let bn = BosunNode::start("pods-burst").await;
    let (node, api) = (&bn.node, &bn.pods);
    let started = std::time::Instant::now();
    let names = create_many(api, node, "b", 50).await;
    wait_until_async(
        "50 pods Running and Ready",
        Duration::from_secs(240),
        || running_container_ids(api, &names),
    )
    .await;
    eprintln!("50 pods Running after {:?}", started.elapsed());
    let dp = DeleteParams::default();
    futures::future::join_all(names.iter().map(|n| api.delete(n, &dp))).await;
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    wait_until_async(
        "50 pods gone from the API and the runtime",
        Duration::from_secs(240),
        || async {
            for n in &names {
                if api.get_opt(n).await.ok()?.is_some() {
                    return None;
                }
            }
            cri.list_pod_sandbox(None)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .await;
    bn.finish();
}

#[tokio::test]
async fn bosun_restart_keeps_twenty_pods_running_untouched() {
    let node = ClusterNode::new("pods-restart");
    let mut bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let names = create_many(&api, &node, "r", 20).await;
    let before = wait_until_async("20 pods Running", Duration::from_secs(180), || {
        running_container_ids(&api, &names)
    })
    .await;
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit after {took:?}");
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        cri.list_containers(None).await.unwrap().len(),
        20,
        "containers changed while bosun was down"
    );

    let mut bosun = node.start();
    // For 15 s after the restart: the same 20 containers, running, restartCount 0, in the API and
    // in the runtime; the pod statuses never leave Running.
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < until {
        let now = running_container_ids(&api, &names)
            .await
            .expect("a pod left Running/Ready after the restart");
        assert_eq!(now, before, "container IDs changed after the restart");
        let cs = cri.list_containers(None).await.unwrap();
        assert_eq!(cs.len(), 20, "the runtime holds {} containers", cs.len());
        assert!(
            cs.iter()
                .all(|c| c.state == bosun_cri::types::ContainerState::ContainerRunning as i32)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(bosun.log_text().contains("container runtime connected"));
    let dp = DeleteParams::default();
    futures::future::join_all(names.iter().map(|n| api.delete(n, &dp))).await;
    wait_until_async("pods gone", Duration::from_secs(120), || async {
        cri.list_pod_sandbox(None)
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    bosun.terminate(Duration::from_secs(10));
}

/// A pod's startTime and each condition's (type, status, lastTransitionTime), as the API holds
/// them.
type Times = (Option<Time>, Vec<(String, String, Option<Time>)>);

/// The [`Times`] of `p`, conditions sorted by type.
fn status_times(p: &Pod) -> Times {
    let st = p.status.clone().unwrap_or_default();
    let mut conds: Vec<_> = st
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status, c.last_transition_time))
        .collect();
    conds.sort_by(|a, b| a.0.cmp(&b.0));
    (st.start_time, conds)
}

#[tokio::test]
async fn bosun_restart_keeps_start_and_transition_times() {
    let node = ClusterNode::new("pods-restart-times");
    let mut bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-t", node.name);
    let p = pod(&node, &name, "Always")
        .container(Container::sh("main", "exec sleep 3600"))
        .build();
    create(&api, &p).await;
    let (uid, before) = wait_pod(&api, &name, "pod Ready", 90, |p| {
        (condition_status(p, "Ready") == Some("True"))
            .then(|| (p.metadata.uid.clone().unwrap_or_default(), status_times(p)))
    })
    .await;
    assert!(before.0.is_some(), "no startTime: {before:?}");
    assert!(before.1.len() >= 4, "conditions: {before:?}");
    // The times have second precision: let the clock pass the newest of them, so that a time
    // the new process sets afresh differs.
    let newest = before
        .1
        .iter()
        .filter_map(|c| c.2.clone())
        .chain(before.0.clone())
        .map(|t| t.0)
        .max()
        .expect("a time");
    wait_until_async(
        "the clock past the pod's times",
        Duration::from_secs(10),
        || async {
            (k8s_openapi::jiff::Timestamp::now() > newest + Duration::from_secs(2)).then_some(())
        },
    )
    .await;
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "exit after {took:?}");

    let mark = std::fs::metadata(&bosun.log).map_or(0, |m| m.len() as usize);
    let mut bosun = node.start();
    // The new process's status writer patches every pod once at start, after its worker computed
    // the status: once it has written this pod's, the API holds what the new process computed.
    wait_until_async(
        "the new bosun wrote the pod's status",
        Duration::from_secs(90),
        || async {
            let log = bosun.log_text();
            log.get(mark..)?
                .lines()
                .any(|l| l.contains("pod status written") && l.contains(&uid))
                .then_some(())
        },
    )
    .await;
    let after = status_times(&api.get(&name).await.expect("get pod"));
    assert_eq!(after, before, "startTime or a transition time changed");
    delete_and_wait_gone(&api, &[&name], 60).await;
    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn active_deadline_fails_the_pod() {
    let bn = BosunNode::start("pods-deadline").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-dl", node.name);
    let p = pod(node, &name, "Always")
        .spec("activeDeadlineSeconds", serde_json::json!(3))
        .container(Container::sh("main", "exec sleep 3600"))
        .build();
    create(api, &p).await;
    wait_pod(api, &name, "pod Running", 60, |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    let p = wait_pod(api, &name, "pod Failed by its deadline", 60, |p| {
        (phase(p) == "Failed").then(|| p.clone())
    })
    .await;
    let st = p.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    wait_until_async(
        "its containers stopped",
        Duration::from_secs(30),
        || async {
            let cs = cri.list_containers(None).await.ok()?;
            cs.iter()
                .all(|c| c.state != bosun_cri::types::ContainerState::ContainerRunning as i32)
                .then_some(())
        },
    )
    .await;
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    bn.finish();
}

#[tokio::test]
async fn deletion_runs_pre_stop_then_sigterm_then_kills_after_the_grace_period() {
    let bn = BosunNode::start("pods-stop").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-stop", node.name);
    let host = node.path().join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let p = pod(node, &name, "Always")
        .grace(4)
        .host_dir("shared", &host)
        .container(
            Container::sh(
                "polite",
                "trap 'echo term >> /shared/log; exit 0' TERM; echo started >> /shared/log; while :; do sleep 1; done",
            )
            .with(
                "lifecycle",
                serde_json::json!({"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /shared/log"]}}}),
            )
            .mount("shared", "/shared"),
        )
        .container(Container::sh(
            "stubborn",
            "trap '' TERM; while :; do sleep 1; done",
        ))
        .build();
    create(api, &p).await;
    wait_pod(api, &name, "pod Running", 60, |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    wait_until_async("the container started", Duration::from_secs(20), || async {
        std::fs::read_to_string(host.join("log"))
            .ok()
            .filter(|t| t.contains("started"))
            .map(|_| ())
    })
    .await;
    let started = std::time::Instant::now();
    delete_and_wait_gone(api, &[&name], 60).await;
    let took = started.elapsed();
    let log = std::fs::read_to_string(host.join("log")).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["started", "prestop", "term"],
        "hook and signal order"
    );
    // The stubborn container ignores SIGTERM: it is killed when the 4 s grace period ends.
    assert!(
        took >= Duration::from_secs(3),
        "deleted after {took:?}, before the grace period ended"
    );
    assert!(took < Duration::from_secs(20), "deletion took {took:?}");
    bn.finish();
}

#[tokio::test]
async fn static_pods_get_mirror_pods_with_their_status() {
    let node = ClusterNode::new("pods-mirror");
    let manifest = node.path().join("manifests/web.yaml");
    let web = PodBuilder::new("web").container(Container::exec("main", &["sleep", "3600"]));
    std::fs::write(&manifest, web.manifest()).unwrap();
    let mut bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("web-{}", node.name);
    let m = wait_pod(&api, &name, "mirror pod Running", 60, |p| {
        (phase(p) == "Running").then(|| p.clone())
    })
    .await;
    let ann = m.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get("kubernetes.io/config.source").map(String::as_str),
        Some("file")
    );
    assert_eq!(
        ann.get("kubernetes.io/config.mirror"),
        ann.get("kubernetes.io/config.hash")
    );
    let owner = m.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].name.as_str()),
        ("Node", node.name.as_str())
    );
    assert_ne!(
        m.metadata.uid,
        ann.get("kubernetes.io/config.hash").cloned(),
        "the mirror has its own UID"
    );
    assert!(container_status(&m, "main").is_some_and(|c| c.ready));
    // The manifest goes: the static pod stops and its mirror pod is deleted.
    std::fs::remove_file(&manifest).unwrap();
    wait_gone(&api, &[&name], 60).await;
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    wait_until_async("static pod stopped", Duration::from_secs(60), || async {
        cri.list_pod_sandbox(None)
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn run_as_non_root_is_verified_against_the_image_user() {
    let bn = BosunNode::start("pods-nonroot").await;
    let (node, api) = (&bn.node, &bn.pods);
    let root = format!("{}-root", node.name);
    let spec = pod(node, &root, "Never")
        .container(Container::sh("main", "sleep 3600"))
        .spec("securityContext", serde_json::json!({"runAsNonRoot": true}))
        .build();
    let created = api.create(&PostParams::default(), &spec).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    // busybox runs as root: refused with the kubelet's reason and message.
    let reasons = waiting_reasons(api, &root, "CreateContainerConfigError", 60).await;
    let (_, message) = reasons.last().unwrap();
    assert_eq!(
        message,
        &format!(
            "container has runAsNonRoot and image will run as root (pod: \"{root}_default({uid})\", container: main)"
        )
    );
    // A numeric non-root runAsUser passes, and the process runs as that user.
    let user = format!("{}-user", node.name);
    let spec = pod(node, &user, "Never")
        .container(Container::sh("main", "id -u; sleep 3600"))
        .spec(
            "securityContext",
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 1234}),
        )
        .build();
    create(api, &spec).await;
    wait_pod(api, &user, "pod Running", 60, |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    // runAsUser 0 under runAsNonRoot: refused.
    let zero = format!("{}-zero", node.name);
    let spec = pod(node, &zero, "Never")
        .container(Container::sh("main", "sleep 3600").with(
            "securityContext",
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 0}),
        ))
        .build();
    let created = api.create(&PostParams::default(), &spec).await.unwrap();
    let uid = created.metadata.uid.unwrap();
    let reasons = waiting_reasons(api, &zero, "CreateContainerConfigError", 60).await;
    assert_eq!(
        reasons.last().unwrap().1,
        format!(
            "container's runAsUser breaks non-root policy (pod: \"{zero}_default({uid})\", container: main)"
        )
    );
    bn.finish();
}

/// A volumeMount's subPathExpr expands from the container's env (here $(POD_NAME) from the
/// downward API): the container writes through the expanded subPath and finds the file under
/// the pod's name in the whole volume; an expression naming an unset variable leaves the
/// container in CreateContainerConfigError with the kubelet's message.
#[tokio::test]
async fn sub_path_expr_expands_from_the_downward_api() {
    use serde_json::json;
    let bn = BosunNode::start("pods-subpath").await;
    let (node, api) = (&bn.node, &bn.pods);
    let pod_name_env = json!({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}});
    let name = format!("{}-expr", node.name);
    let p = pod(node, &name, "Always")
        .empty_dir("data")
        .container(
            Container::sh("main", "echo written > /mine/f && exec sleep 3600")
                .env("POD_NAME", pod_name_env.clone())
                .with(
                    "volumeMounts",
                    json!([
                        {"name": "data", "mountPath": "/mine", "subPathExpr": "$(POD_NAME)"},
                        {"name": "data", "mountPath": "/all"},
                    ]),
                ),
        )
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "pod Running", 60, |p| {
        (phase(p) == "Running").then(|| p.clone())
    })
    .await;
    let path = format!("/all/{name}/f");
    wait_until_async(
        "the file under the pod's name",
        Duration::from_secs(30),
        || async { (exec(node, &p, &format!("cat {path}")).await == "written").then_some(()) },
    )
    .await;
    // The subPath reached the runtime as the kubelet hands it over: bound (through a descriptor
    // opened beneath the volume) at <pod>/volume-subpaths/<volume>/<container>/<index>.
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let pod_dir = node.path().join("root/pods").join(&uid);
    assert_eq!(
        bosun_tests::mounts_under(&pod_dir.join("volume-subpaths")),
        [pod_dir
            .join("volume-subpaths/data/main/0")
            .display()
            .to_string()]
    );

    let bad = format!("{}-unset", node.name);
    let p = pod(node, &bad, "Always")
        .empty_dir("data")
        .container(
            Container::sh("main", "exec sleep 3600")
                .env("POD_NAME", pod_name_env)
                .with(
                    "volumeMounts",
                    json!([{"name": "data", "mountPath": "/mine", "subPathExpr": "$(POD_NAME)/$(NOPE)"}]),
                ),
        )
        .build();
    create(api, &p).await;
    let msg = config_error(api, &bad).await;
    assert_eq!(msg, "missing value for NOPE");
    delete_and_wait_gone(api, &[&name, &bad], 60).await;
    assert_eq!(
        bosun_tests::mounts_under(&pod_dir),
        Vec::<String>::new(),
        "left mounted"
    );
    bn.finish();
}

/// mountPropagation and readOnly as the runtime applies them: with a hostPath that is a shared
/// mount on the node, a mount made on the host after the containers started shows in the
/// HostToContainer container and not in the None one; a privileged Bidirectional container's
/// mount shows on the host; a readOnly volumeMount refuses writes.
#[tokio::test]
async fn mount_propagation_and_read_only_mounts_reach_the_container() {
    use serde_json::json;
    let bn = BosunNode::start("pods-propagation").await;
    let (node, api) = (&bn.node, &bn.pods);
    let shared = node.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let sh = |cmd: &str| {
        let ok = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd}");
    };
    let d = shared.display().to_string();
    sh(&format!("mount --bind {d} {d} && mount --make-shared {d}"));
    let name = format!("{}-prop", node.name);
    let mount = |mode: &str, ro: bool| json!([{"name": "shared", "mountPath": "/host", "mountPropagation": mode, "readOnly": ro}]);
    let p = pod(node, &name, "Always")
        .volume(json!({"name": "shared", "hostPath": {"path": d, "type": "Directory"}}))
        .container(
            Container::sh("main", "exec sleep 3600")
                .with("volumeMounts", mount("HostToContainer", true)),
        )
        .container(
            Container::sh("private", "exec sleep 3600").with("volumeMounts", mount("None", false)),
        )
        .container(
            Container::sh(
                "bidi",
                "mkdir -p /host/fromc && mount -t tmpfs tmpfs /host/fromc && exec sleep 3600",
            )
            .with("volumeMounts", mount("Bidirectional", false))
            .with("securityContext", json!({"privileged": true})),
        )
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "pod Running", 60, |p| {
        (phase(p) == "Running").then(|| p.clone())
    })
    .await;
    // The container's mount, made after it started, on the host (Bidirectional).
    let fromc = shared.join("fromc");
    wait_until_async(
        "the container's mount on the host",
        Duration::from_secs(30),
        || async {
            bosun_tests::mounts_under(&fromc)
                .contains(&fromc.display().to_string())
                .then_some(())
        },
    )
    .await;
    // A host mount made now, in the HostToContainer container only.
    sh(&format!(
        "mkdir -p {d}/late && mount -t tmpfs tmpfs {d}/late && echo hi > {d}/late/hello"
    ));
    let by = |c: &str| {
        let mut p = p.clone();
        if let Some(cs) = p
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            cs.retain(|s| s.name == c);
        }
        p
    };
    wait_until_async(
        "the host's mount in the container",
        Duration::from_secs(30),
        || async { (exec(node, &by("main"), "cat /host/late/hello").await == "hi").then_some(()) },
    )
    .await;
    assert_eq!(
        exec(
            node,
            &by("private"),
            "cat /host/late/hello 2>/dev/null || echo none"
        )
        .await,
        "none"
    );
    assert_eq!(
        exec(
            node,
            &by("main"),
            "touch /host/x 2>/dev/null && echo wrote || echo read-only"
        )
        .await,
        "read-only"
    );
    assert_eq!(
        exec(node, &by("private"), "touch /host/y && echo wrote").await,
        "wrote"
    );
    delete_and_wait_gone(api, &[&name], 60).await;
    sh(&format!(
        "umount -l {d}/late; umount -l {d}/fromc; umount -l {d}"
    ));
    bn.finish();
}
