//! The node on the real control plane: bosun registers its Node, reports a status that matches
//! the machine and the runtime, keeps its Lease renewed every ~10 s, writes the status only when
//! it changes, survives a restart without its Lease (or without its Node), and stops on SIGTERM.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bosun_tests::cluster::{audit_len, audit_requests};
use bosun_tests::pod::{Container, PodBuilder, create, running_uid};
use bosun_tests::{ApiServerReplica, ClusterNode, Env, admin_client, bosun_bin, wait_until_async};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::DeleteParams;

/// The Node's Ready condition status, if any.
fn ready(n: &Node) -> Option<&str> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// The Ready condition's lastHeartbeatTime.
fn heartbeat(n: &Node) -> k8s_openapi::jiff::Timestamp {
    let c = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    c.and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.clone())
        .expect("Ready heartbeat")
        .0
}

async fn wait_ready(nodes: &Api<Node>, name: &str, secs: u64) -> Node {
    wait_until_async("node Ready=True", Duration::from_secs(secs), || async {
        let n = nodes.get_opt(name).await.ok()??;
        (ready(&n) == Some("True")).then_some(n)
    })
    .await
}

/// A quantity in bytes (`8141236Ki`, `2Gi`, `1024`).
fn bytes(q: &str) -> u64 {
    let (num, mul) = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ]
    .iter()
    .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
    .unwrap_or((q, 1));
    num.parse::<u64>().expect("integer quantity") * mul
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test]
async fn registers_reports_the_machine_renews_the_lease_and_stops_on_sigterm() {
    let node = ClusterNode::new("node-reg");
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    bosun_bin(); // built before the clock starts
    let started = Instant::now();
    let mut bosun = node.start();
    let n = wait_ready(&nodes, &node.name, 60).await;
    let to_ready = started.elapsed();
    eprintln!("node {} Ready {:?} after start", node.name, to_ready);

    // Labels and the endpoint metrics-server reads.
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("kubernetes.io/hostname"), Some(&node.name));
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert!(labels.contains_key("kubernetes.io/arch"));
    let st = n.status.clone().expect("status");
    assert_eq!(
        st.daemon_endpoints
            .as_ref()
            .and_then(|d| d.kubelet_endpoint.as_ref())
            .map(|e| e.port),
        Some(i32::from(node.server_port()))
    );

    // nodeInfo against /proc, the runtime and `bosun --version`.
    let info = st.node_info.clone().expect("nodeInfo");
    assert_eq!(info.boot_id, read("/proc/sys/kernel/random/boot_id"));
    assert_eq!(info.machine_id, read("/etc/machine-id"));
    assert_eq!(info.kernel_version, read("/proc/sys/kernel/osrelease"));
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    let version = Command::new(bosun_bin())
        .arg("--version")
        .output()
        .expect("bosun --version");
    let version = String::from_utf8_lossy(&version.stdout);
    let version = version
        .trim()
        .strip_prefix("Kubernetes ")
        .expect("Kubernetes vX.Y.Z");
    assert_eq!(info.kubelet_version, version);
    assert_eq!(info.operating_system, "linux");

    // Capacity against the machine.
    let cap: BTreeMap<_, _> = st
        .capacity
        .clone()
        .expect("capacity")
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let nproc = Command::new("nproc").output().expect("nproc");
    assert_eq!(cap["cpu"], String::from_utf8_lossy(&nproc.stdout).trim());
    let mem_total_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    assert_eq!(bytes(&cap["memory"]), mem_total_kb * 1024);
    assert_eq!(cap["pods"], "110");
    assert!(bytes(&cap["ephemeral-storage"]) > 0);
    let alloc: BTreeMap<_, _> = st
        .allocatable
        .clone()
        .expect("allocatable")
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    // The test node's evictionHard (tests/src/cluster.rs): memory.available=100Mi,
    // nodefs.available=1%.
    assert_eq!(bytes(&alloc["memory"]), mem_total_kb * 1024 - (100 << 20));
    let storage = bytes(&cap["ephemeral-storage"]);
    assert_eq!(
        bytes(&alloc["ephemeral-storage"]),
        storage - (storage as f64 * f64::from(0.01f32)) as u64
    );

    // Addresses: the --node-ip, then the hostname.
    let addrs: Vec<(String, String)> = st
        .addresses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        [
            (
                "InternalIP".to_string(),
                Env::cluster().var("NODE_IP").to_string()
            ),
            ("Hostname".to_string(), node.name.clone())
        ]
    );

    // The Lease: held by the node, 40 s, owned by the Node, renewed every ~10 s.
    let audit_from = audit_len();
    let window = Instant::now();
    let uid = n.metadata.uid.clone().expect("uid");
    let mut renewals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    while renewals.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "lease renewTimes seen: {renewals:?}"
        );
        if let Ok(Some(l)) = leases.get_opt(&node.name).await
            && let Some(t) = l.spec.and_then(|s| s.renew_time)
            && renewals.last() != Some(&t.0)
        {
            renewals.push(t.0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lease = leases.get(&node.name).await.expect("lease");
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(node.name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    let owner = &lease.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Node", node.name.as_str(), uid.as_str())
    );
    for pair in renewals.windows(2) {
        let gap = pair[1].duration_since(pair[0]).as_secs_f64();
        eprintln!("lease renewed after {gap:.2} s");
        assert!(
            (8.0..=12.5).contains(&gap),
            "renewal gap {gap} s, want ~10 s"
        );
    }

    // Nothing changed: the status is not written (next write due at the 5-minute report).
    let elapsed = window.elapsed().as_secs_f64();
    let requests = audit_requests(audit_from, &format!("system:node:{}", node.name));
    let per_minute = requests.len() as f64 * 60.0 / elapsed;
    eprintln!(
        "{} API requests in {elapsed:.1} s ({per_minute:.1}/min): {requests:?}",
        requests.len()
    );
    assert!(
        !requests
            .iter()
            .any(|(v, r)| r == "nodes/status" || (r == "nodes" && v != "watch" && v != "list")),
        "node written or polled although nothing changed: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .filter(|(v, r)| v == "update" && r == "leases")
            .count()
            >= 2
    );

    // SIGTERM: bosun exits within seconds.
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    eprintln!("bosun exited {took:?} after SIGTERM with {code:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn restart_without_lease_recreates_it_and_adopts_the_node() {
    let node = ClusterNode::new("node-nolease");
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut bosun = node.start();
    let first = wait_ready(&nodes, &node.name, 60).await;
    wait_until_async("lease", Duration::from_secs(20), || async {
        leases.get_opt(&node.name).await.ok()?
    })
    .await;
    bosun.terminate(Duration::from_secs(10));
    leases
        .delete(&node.name, &DeleteParams::default())
        .await
        .expect("delete lease");

    // Heartbeats have second precision: let the clock pass the first one's second, so a fresh
    // write after the restart is told apart from the one before.
    let first_hb = heartbeat(&first);
    wait_until_async("the next second", Duration::from_secs(2), || async {
        (k8s_openapi::jiff::Timestamp::now().as_second() > first_hb.as_second()).then_some(())
    })
    .await;
    let restarted = Instant::now();
    let _bosun = node.start();
    let lease = wait_until_async("lease recreated", Duration::from_secs(30), || async {
        leases.get_opt(&node.name).await.ok()?
    })
    .await;
    eprintln!("lease recreated {:?} after restart", restarted.elapsed());
    // The adopted node's status is written at once: Ready with a heartbeat after the restart.
    let n = wait_until_async(
        "Ready with a heartbeat after the restart",
        Duration::from_secs(30),
        || async {
            let n = nodes.get_opt(&node.name).await.ok()??;
            (ready(&n) == Some("True") && heartbeat(&n) > first_hb).then_some(n)
        },
    )
    .await;
    eprintln!("status written {:?} after restart", restarted.elapsed());
    assert_eq!(
        n.metadata.uid, first.metadata.uid,
        "the same Node was adopted"
    );
    let owner = &lease.metadata.owner_references.clone().expect("owner")[0];
    assert_eq!(Some(&owner.uid), first.metadata.uid.as_ref());
}

#[tokio::test]
async fn restart_without_node_registers_it_again_and_fixes_the_lease_owner() {
    let node = ClusterNode::new("node-nonode");
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut bosun = node.start();
    let first = wait_ready(&nodes, &node.name, 60).await;
    wait_until_async("lease", Duration::from_secs(20), || async {
        leases.get_opt(&node.name).await.ok()?
    })
    .await;
    bosun.terminate(Duration::from_secs(10));
    nodes
        .delete(&node.name, &DeleteParams::default())
        .await
        .expect("delete node");

    let _bosun = node.start();
    let n = wait_until_async("node registered again", Duration::from_secs(30), || async {
        let n = nodes.get_opt(&node.name).await.ok()??;
        (n.metadata.uid != first.metadata.uid && ready(&n) == Some("True")).then_some(n)
    })
    .await;
    // The old Lease is owned by the deleted Node: the garbage collector removes it and bosun
    // recreates it owned by the new one.
    wait_until_async(
        "lease owned by the new Node",
        Duration::from_secs(90),
        || async {
            let l = leases.get_opt(&node.name).await.ok()??;
            let owner = l.metadata.owner_references.as_ref()?.first()?.uid.clone();
            (Some(owner) == n.metadata.uid).then_some(())
        },
    )
    .await;
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 only once the Node exists, WATCHDOG=1
/// repeatedly while healthy, STOPPING=1 on SIGTERM.
#[tokio::test]
async fn notifies_systemd_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let node = ClusterNode::new("node-notify");
    let nodes: Api<Node> = Api::all(admin_client().await);
    let socket_path = node.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut bosun = node.start_with_env(&[
        ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    let recv = || {
        let mut buf = [0u8; 256];
        let len = socket.recv(&mut buf).expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..len]).into_owned()
    };
    // Watchdog pings may come first (the runtime answers before the node registers).
    let mut watchdogs = 0;
    let first_non_watchdog = loop {
        let msg = recv();
        if msg == "WATCHDOG=1" {
            watchdogs += 1;
        } else {
            break msg;
        }
    };
    assert_eq!(first_non_watchdog, "READY=1");
    assert!(
        nodes.get_opt(&node.name).await.expect("get node").is_some(),
        "READY=1 before the Node was registered"
    );
    while watchdogs < 3 {
        assert_eq!(recv(), "WATCHDOG=1");
        watchdogs += 1;
    }
    let (_, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let mut rest = Vec::new();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    while let Ok(len) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..len]).into_owned());
    }
    assert!(
        rest.iter().any(|m| m == "STOPPING=1"),
        "no STOPPING=1 after SIGTERM: {rest:?}"
    );
}

/// Reasons of the kubelet events recorded about Node `name`, with their counts.
async fn node_events(client: &kube::Client, name: &str) -> BTreeMap<String, i32> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let lp = kube::api::ListParams::default().fields(&format!(
        "involvedObject.kind=Node,involvedObject.name={name}"
    ));
    let mut out = BTreeMap::new();
    for e in events.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        // The node controller writes about the Node too (RegisteredNode).
        if e.source.as_ref().and_then(|s| s.component.as_deref()) != Some("kubelet") {
            continue;
        }
        *out.entry(e.reason.unwrap_or_default()).or_default() += e.count.unwrap_or(1);
    }
    out
}

/// The runtime going away makes the node Ready=False naming the runtime (and NodeNotReady), its
/// return makes it Ready again without restarting bosun; the start and every condition are events.
#[tokio::test]
async fn runtime_down_turns_the_node_not_ready_and_back_with_events() {
    let mut node = ClusterNode::new("node-rtdown");
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let _bosun = node.start();
    wait_ready(&nodes, &node.name, 60).await;
    let start_events = [
        "Starting",
        "NodeHasSufficientMemory",
        "NodeHasNoDiskPressure",
        "NodeHasSufficientPID",
        "NodeReady",
    ];
    wait_until_async("start events", Duration::from_secs(30), || async {
        let seen = node_events(&client, &node.name).await;
        start_events
            .iter()
            .all(|r| seen.contains_key(*r))
            .then_some(())
    })
    .await;

    node.ctd.stop_daemon();
    let down = wait_until_async("Ready=False", Duration::from_secs(120), || async {
        let n = nodes.get_opt(&node.name).await.ok()??;
        let c = n
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.status == "False").then_some(c)
    })
    .await;
    assert_eq!(down.reason.as_deref(), Some("KubeletNotReady"));
    let message = down.message.unwrap_or_default();
    assert!(
        message.contains("container runtime"),
        "Ready=False without naming the runtime: {message}"
    );
    wait_until_async("NodeNotReady event", Duration::from_secs(30), || async {
        node_events(&client, &node.name)
            .await
            .contains_key("NodeNotReady")
            .then_some(())
    })
    .await;

    node.ctd.start_daemon();
    wait_ready(&nodes, &node.name, 120).await;
    wait_until_async("second NodeReady", Duration::from_secs(30), || async {
        (node_events(&client, &node.name).await.get("NodeReady") >= Some(&2)).then_some(())
    })
    .await;
}

/// The (not before, not after) unix seconds of the first certificate in a PEM file.
fn cert_validity(path: &std::path::Path) -> (i64, i64, String) {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, p) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    let cert = p.parse_x509().expect("certificate");
    let v = cert.validity();
    (
        v.not_before.timestamp(),
        v.not_after.timestamp(),
        cert.subject().to_string(),
    )
}

/// With only a bootstrap token: a CSR, the signed client certificate in the cert dir, the
/// kubeconfig written, and a Ready node.
#[tokio::test]
async fn tls_bootstrap_from_a_token_ends_with_a_signed_certificate_and_a_ready_node() {
    let env = Env::cluster();
    let mut node = ClusterNode::new("node-boot");
    let kubeconfig = node.path().join("kubelet.conf");
    let at = node.args.iter().position(|a| a == "--kubeconfig").unwrap();
    node.args[at + 1] = kubeconfig.display().to_string();
    node.args.extend([
        "--bootstrap-kubeconfig".into(),
        env.var("BOOTSTRAP_KUBECONFIG").to_string(),
    ]);
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let _bosun = node.start();
    wait_ready(&nodes, &node.name, 120).await;

    let current = node.path().join("pki/kubelet-client-current.pem");
    let (_, not_after, subject) = cert_validity(&current);
    assert!(
        subject.contains(&format!("CN=system:node:{}", node.name))
            && subject.contains("O=system:nodes"),
        "{subject}"
    );
    assert!(not_after > k8s_openapi::jiff::Timestamp::now().as_second() + 3600);
    let written = std::fs::read_to_string(&kubeconfig).expect("kubeconfig written");
    assert!(written.contains("kubelet-client-current.pem"), "{written}");
    // The CSR went through the kubelet client signer and was approved.
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = Api::all(client);
    let ours: Vec<_> = csrs
        .list(&Default::default())
        .await
        .expect("list CSRs")
        .items
        .into_iter()
        .filter(|c| {
            c.spec
                .username
                .as_deref()
                .is_some_and(|u| u.starts_with("system:bootstrap:"))
                && c.status
                    .as_ref()
                    .and_then(|s| s.certificate.as_ref())
                    .is_some()
                && c.spec.signer_name == "kubernetes.io/kube-apiserver-client-kubelet"
        })
        .collect();
    assert!(!ours.is_empty(), "no signed bootstrap CSR");
}

/// A client certificate close to its end is renewed through a CSR made with itself, stored in the
/// cert dir, and used without restarting: the node stays Ready past the old certificate's end.
#[tokio::test]
async fn client_certificate_is_rotated_before_it_expires() {
    let env = Env::cluster();
    let node = ClusterNode::new("node-rotate");
    let client = admin_client().await;
    bosun_bin(); // built before the short certificate's clock starts
    // A certificate living two minutes (one already gone): rotation due 24-48 s from now.
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(env.var("CLUSTER_CA_KEY")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(env.var("CLUSTER_CA")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{}", node.name),
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::seconds(60);
    params.not_after = now + time::Duration::seconds(60);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let short_end = (now + time::Duration::seconds(60)).unix_timestamp();
    std::fs::write(node.path().join("short.crt"), cert.pem()).unwrap();
    std::fs::write(node.path().join("short.key"), key.serialize_pem()).unwrap();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": env.var("APISERVER"), "certificate-authority": env.var("CLUSTER_CA")}}],
        "users": [{"name": "u", "user": {
            "client-certificate": node.path().join("short.crt"),
            "client-key": node.path().join("short.key")}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    std::fs::write(node.path().join("kubeconfig"), kubeconfig.to_string()).unwrap();
    let config = node.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("rotateCertificates: true\n");
    std::fs::write(&config, text).unwrap();

    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let _bosun = node.start();
    wait_ready(&nodes, &node.name, 50).await;
    let current = node.path().join("pki/kubelet-client-current.pem");
    let renewed = bosun_tests::wait_until("rotated certificate", Duration::from_secs(90), || {
        current
            .exists()
            .then(|| cert_validity(&current))
            .filter(|v| v.1 > short_end + 3600)
    });
    assert!(
        renewed.2.contains(&format!("CN=system:node:{}", node.name)),
        "{}",
        renewed.2
    );
    // Past the old certificate's end the node still renews its Lease and stays Ready.
    wait_until_async(
        "lease renewed after the old certificate expired",
        Duration::from_secs(90),
        || async {
            let l = leases.get_opt(&node.name).await.ok()??;
            let renew = l.spec?.renew_time?.0.as_second();
            (renew > short_end + 5).then_some(())
        },
    )
    .await;
    wait_ready(&nodes, &node.name, 30).await;
}

/// A pod bound to `node` running busybox `sleep`, no token volume.
fn sleeper(node: &str, name: &str) -> k8s_openapi::api::core::v1::Pod {
    PodBuilder::new(name)
        .node(node)
        .container(Container::exec("c", &["sleep", "3600"]))
        .build()
}

/// The API server going away for 30 s does not stop bosun: it keeps retrying, and when the
/// server is back the node is Ready again (also after the node lifecycle controller marked it
/// Unknown meanwhile), the Lease is renewed, and a pod bound during the outage runs; same process.
#[tokio::test]
async fn api_server_outage_of_30_s_then_ready_again_without_restart() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Patch, PatchParams};

    let node = ClusterNode::new("node-apiout");
    let mut replica = ApiServerReplica::start(&node.path().join("apiserver-replica.log")).await;
    replica.point_kubeconfig(&node.kubeconfig);
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut bosun = node.start();
    wait_ready(&nodes, &node.name, 60).await;
    let before = format!("{}-before", node.name);
    create(&pods, &sleeper(&node.name, &before)).await;
    running_uid(&pods, &before, 120).await;

    replica.stop();
    let stopped = k8s_openapi::jiff::Timestamp::now();
    // What the node lifecycle controller does to a node that stopped posting status, and what
    // the scheduler does meanwhile: both go through the shared API server.
    let unknown = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": stopped, "lastTransitionTime": stopped,
    }]}});
    nodes
        .patch_status(
            &node.name,
            &PatchParams::default(),
            &Patch::Strategic(&unknown),
        )
        .await
        .expect("mark the node Unknown");
    let during = format!("{}-during", node.name);
    create(&pods, &sleeper(&node.name, &during)).await;
    // The outage itself: 30 s with the node's API server gone.
    let outage_end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < outage_end {
        assert!(
            bosun.try_exit().is_none(),
            "bosun exited while the API server was away: {}",
            bosun.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let t = Instant::now();
    replica.resume().await;
    eprintln!("replica back after {:?}", t.elapsed());
    let back = k8s_openapi::jiff::Timestamp::now();
    let n = wait_until_async(
        "node Ready=True again after the outage",
        Duration::from_secs(60),
        || async {
            let n = nodes.get_opt(&node.name).await.ok()??;
            (ready(&n) == Some("True") && heartbeat(&n) > stopped).then_some(n)
        },
    )
    .await;
    eprintln!("node Ready after {:?}", t.elapsed());
    assert!(heartbeat(&n) >= stopped, "heartbeat not after the outage");
    wait_until_async(
        "Lease renewed after the outage",
        Duration::from_secs(30),
        || async {
            let l = leases.get_opt(&node.name).await.ok()??;
            (l.spec?.renew_time?.0 > back).then_some(())
        },
    )
    .await;
    eprintln!("lease renewed after {:?}", t.elapsed());
    running_uid(&pods, &during, 120).await;
    eprintln!(
        "pod bound during the outage Running after {:?}",
        t.elapsed()
    );
    running_uid(&pods, &before, 120).await;
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited after the outage: {}",
        bosun.log_text()
    );
    assert!(
        !bosun.log_text().contains("panicked"),
        "bosun panicked: {}",
        bosun.log_text()
    );
}

/// Deletes the service account and its binding of the in-cluster test, whatever happens.
struct InClusterIdentity(String);

impl Drop for InClusterIdentity {
    fn drop(&mut self) {
        for what in [
            vec![
                "delete",
                "clusterrolebinding",
                &self.0,
                "--ignore-not-found",
            ],
            vec![
                "delete",
                "serviceaccount",
                &self.0,
                "-n",
                "default",
                "--ignore-not-found",
            ],
        ] {
            let _ = Command::new(Env::cluster().var("KUBECTL"))
                .args(&what)
                .env("KUBECONFIG", Env::cluster().var("KUBECONFIG"))
                .status();
        }
    }
}

/// Without --kubeconfig but with a service account mounted where a pod has it
/// (/var/run/secrets/kubernetes.io/serviceaccount, here in a private mount namespace) and
/// KUBERNETES_SERVICE_HOST/PORT set, bosun talks to the cluster as that service account.
#[tokio::test]
async fn in_cluster_service_account_registers_the_node() {
    let mut node = ClusterNode::new("node-incluster");
    let i = node
        .args
        .iter()
        .position(|a| a == "--kubeconfig")
        .expect("--kubeconfig");
    node.args.drain(i..i + 2);
    let sa = node.name.clone();
    let _identity = InClusterIdentity(sa.clone());
    bosun_tests::kubectl(&["create", "serviceaccount", &sa, "-n", "default"]);
    let binding = format!("--serviceaccount=default:{sa}");
    bosun_tests::kubectl(&[
        "create",
        "clusterrolebinding",
        &sa,
        "--clusterrole=system:node",
        &binding,
    ]);
    let token = bosun_tests::kubectl(&["create", "token", &sa, "-n", "default", "--duration=1h"]);
    let mounted = node.path().join("serviceaccount");
    std::fs::create_dir_all(&mounted).expect("mkdir");
    std::fs::write(mounted.join("token"), token.trim()).expect("token");
    std::fs::write(mounted.join("namespace"), "default").expect("namespace");
    std::fs::copy(Env::cluster().var("CLUSTER_CA"), mounted.join("ca.crt")).expect("ca.crt");
    // The mount point on the host stays empty; the tmpfs is only in bosun's mount namespace.
    std::fs::create_dir_all("/run/secrets").expect("mkdir /run/secrets");
    let script = format!(
        "mount -t tmpfs tmpfs /run/secrets && \
         mkdir -p /run/secrets/kubernetes.io/serviceaccount && \
         cp {}/* /run/secrets/kubernetes.io/serviceaccount/ && exec \"$@\"",
        mounted.display()
    );
    let audit_from = audit_len();
    let api = Env::cluster().var("APISERVER");
    let port = api.rsplit(':').next().expect("port");
    let _bosun = bosun_tests::Bosun::start_under(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ],
        &node.args,
        &node.path().join("bosun.log"),
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", port),
        ],
    );
    let nodes: Api<Node> = Api::all(admin_client().await);
    let t = Instant::now();
    wait_ready(&nodes, &node.name, 60).await;
    eprintln!("node Ready {:?} after start", t.elapsed());
    let user = format!("system:serviceaccount:default:{sa}");
    let requests = audit_requests(audit_from, &user);
    assert!(
        requests.iter().any(|(v, r)| v == "create" && r == "nodes"),
        "the Node was not created as {user}: {requests:?}"
    );
    assert!(
        !std::path::Path::new("/run/secrets/kubernetes.io").exists(),
        "the service account leaked out of bosun's mount namespace"
    );
}
