//! The kubelet port of a bosun node on the real control plane: HTTPS with the self-signed serving
//! certificate, client certificates and bearer tokens (TokenReview) authenticated, requests
//! authorized with SubjectAccessReviews (401 without credentials, 403 without RBAC rights), and
//! `/healthz`, `/pods`, `/stats/summary`, `/metrics/resource`, `/metrics` served to clients and
//! through the API server's node proxy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bosun_tests::kubelet::Answer;
use bosun_tests::{
    ClusterNode, Env, KubeletClient, kubectl, mint_client_cert, prom, wait_until, wait_until_async,
};

/// The node's kubelet port and the serving certificate to trust (once bosun wrote it).
fn endpoint(node: &ClusterNode) -> (SocketAddr, PathBuf) {
    let ip = Env::cluster().var("NODE_IP").parse().expect("NODE_IP");
    let crt = node.path().join("pki/kubelet.crt");
    wait_until("serving certificate", Duration::from_secs(30), || {
        crt.exists().then_some(())
    });
    (SocketAddr::new(ip, node.server_port()), crt)
}

async fn get_ok(client: &KubeletClient, path: &str) -> Answer {
    let a = client.get(path).await.expect("request");
    assert_eq!(a.status, 200, "{path}: {}", a.text());
    a
}

/// A ServiceAccount bound to a ClusterRole allowing `get nodes/<subresource>`; deleted on drop.
struct TokenUser {
    name: String,
}

impl TokenUser {
    fn new(subresource: &str) -> TokenUser {
        let name = format!("bosun-srv-{}-{subresource}", std::process::id());
        let manifest = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": name, "namespace": "default"}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                 "metadata": {"name": name},
                 "rules": [{"apiGroups": [""], "resources": [format!("nodes/{subresource}")],
                            "verbs": ["get"]}]},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": name},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": name},
                 "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}]},
            ]
        });
        let file = std::env::temp_dir().join(format!("{name}.json"));
        std::fs::write(&file, manifest.to_string()).expect("write manifest");
        kubectl(&["apply", "-f", &file.display().to_string()]);
        let _ = std::fs::remove_file(&file);
        TokenUser { name }
    }

    fn token(&self) -> String {
        kubectl(&["create", "token", &self.name, "-n", "default"])
    }
}

impl Drop for TokenUser {
    fn drop(&mut self) {
        let env = Env::cluster();
        for (kind, ns) in [
            ("serviceaccount", Some("default")),
            ("clusterrole", None),
            ("clusterrolebinding", None),
        ] {
            let mut cmd = std::process::Command::new(env.var("KUBECTL"));
            cmd.args([
                "delete",
                kind,
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ])
            .env("KUBECONFIG", env.var("KUBECONFIG"));
            if let Some(ns) = ns {
                cmd.args(["-n", ns]);
            }
            let _ = cmd.output();
        }
    }
}

#[tokio::test]
async fn unauthenticated_401_unauthorized_403_and_authorized_requests_served() {
    let node = ClusterNode::new("srv-auth");
    let mut bosun = node.start();
    let (addr, crt) = endpoint(&node);
    let certs = tempfile::tempdir().unwrap();
    let (admin_crt, admin_key) =
        mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let (nobody_crt, nobody_key) = mint_client_cert(certs.path(), "bosun-test-nobody", &[]);
    // TLS is verified against the self-signed certificate bosun wrote under its cert dir, for the
    // node IP: the serving certificate carries it.
    let admin = KubeletClient::new(addr, &crt, Some((&admin_crt, &admin_key)));
    wait_until_async("kubelet port answers", Duration::from_secs(30), || async {
        admin.get("/healthz").await.ok().filter(|a| a.status == 200)
    })
    .await;
    assert_eq!(get_ok(&admin, "/healthz").await.text(), "ok");

    // No credentials: 401 everywhere, anonymous authentication is off.
    let anonymous = KubeletClient::new(addr, &crt, None);
    for path in [
        "/pods",
        "/stats/summary",
        "/metrics",
        "/metrics/resource",
        "/healthz",
    ] {
        let a = anonymous.get(path).await.expect("request");
        assert_eq!(
            (a.status, a.text().as_str()),
            (401, "Unauthorized"),
            "{path}"
        );
    }
    // A valid certificate of a user without RBAC rights: 403 naming the attributes checked.
    let nobody = KubeletClient::new(addr, &crt, Some((&nobody_crt, &nobody_key)));
    let a = nobody.get("/pods").await.expect("request");
    assert_eq!(a.status, 403);
    assert_eq!(
        a.text(),
        "Forbidden (user=bosun-test-nobody, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"
    );
    for path in ["/stats/summary", "/metrics", "/metrics/resource"] {
        let a = nobody.get(path).await.expect("request");
        assert_eq!(a.status, 403, "{path}: {}", a.text());
    }

    // Authorized: /pods is a PodList, /metrics parses and carries the kubelet's names.
    let pods = get_ok(&admin, "/pods").await.json();
    assert_eq!(pods["kind"], "PodList");
    assert_eq!(pods["apiVersion"], "v1");
    assert!(pods["items"].is_array());
    let m = get_ok(&admin, "/metrics").await;
    assert!(
        m.content_type.starts_with("text/plain"),
        "{}",
        m.content_type
    );
    let e = prom::parse(&m.text()).unwrap_or_else(|err| panic!("{err}\n{}", m.text()));
    assert_eq!(
        e.types
            .get("kubelet_runtime_operations_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    assert!(
        e.named("kubelet_runtime_operations_total").any(|s| s
            .labels
            .get("operation_type")
            .map(String::as_str)
            == Some("list_podsandbox")),
        "no CRI ListPodSandbox call counted"
    );
    assert!(
        e.named("rest_client_requests_total")
            .any(|s| s.labels.get("code").map(String::as_str) == Some("201")),
        "no API request counted"
    );
    let start = e
        .named("process_start_time_seconds")
        .next()
        .expect("process_start_time_seconds")
        .value;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "start time {start}"
    );

    // Bearer tokens go through TokenReview; RBAC on nodes/metrics allows /metrics only.
    let sa = TokenUser::new("metrics");
    let with_token = KubeletClient::new(addr, &crt, None).with_token(&sa.token());
    get_ok(&with_token, "/metrics").await;
    let a = with_token.get("/pods").await.expect("request");
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(
        a.text()
            .contains(&format!("user=system:serviceaccount:default:{}", sa.name))
    );
    let bogus = KubeletClient::new(addr, &crt, None).with_token("not-a-token");
    assert_eq!(bogus.get("/metrics").await.expect("request").status, 401);

    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn port_in_use_exits_non_zero_with_a_clear_error() {
    let node = ClusterNode::new("srv-port");
    let _taken = std::net::TcpListener::bind(("0.0.0.0", node.server_port())).expect("bind");
    let mut bosun = node.start();
    let status = wait_until("bosun exits", Duration::from_secs(30), || bosun.try_exit());
    assert!(!status.success(), "bosun exited with {status}");
    let log = bosun.log_text();
    assert!(
        log.contains(&format!(
            "failed to listen on 0.0.0.0:{}",
            node.server_port()
        )),
        "{log}"
    );
}

#[tokio::test]
async fn pods_served_directly_and_through_the_api_server_node_proxy() {
    use bosun_tests::pod::{Container, PodBuilder, create, delete_and_wait_gone};
    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    let node = ClusterNode::new("srv-pods");
    let mut bosun = node.start();
    let (addr, crt) = endpoint(&node);
    let certs = tempfile::tempdir().unwrap();
    let (admin_crt, admin_key) =
        mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let admin = KubeletClient::new(addr, &crt, Some((&admin_crt, &admin_key)));
    let name = format!("srv-pod-{}", std::process::id());
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .container(Container::exec("main", &["sleep", "3600"]))
        .build();
    let pods: Api<Pod> = Api::namespaced(bosun_tests::admin_client().await, "default");
    create(&pods, &pod).await;
    // /pods on the kubelet port lists it with its status once it runs.
    let served = wait_until_async("pod Running in /pods", Duration::from_secs(90), || async {
        let list = admin.get("/pods").await.ok()?.json();
        list["items"]
            .as_array()?
            .iter()
            .find(|p| p["metadata"]["name"] == name.as_str() && p["status"]["phase"] == "Running")
            .cloned()
    })
    .await;
    assert_eq!(served["spec"]["nodeName"], node.name.as_str());
    assert_eq!(served["status"]["containerStatuses"][0]["name"], "main");
    // Through the API server: it dials the node's InternalIP at daemonEndpoints' port with its
    // kubelet client certificate, which bosun authenticates and authorizes.
    let path = format!("/api/v1/nodes/{}/proxy/pods", node.name);
    let proxied: serde_json::Value =
        wait_until_async("node proxy /pods", Duration::from_secs(60), || async {
            let env = Env::cluster();
            let out = std::process::Command::new(env.var("KUBECTL"))
                .args(["get", "--raw", &path])
                .env("KUBECONFIG", env.var("KUBECONFIG"))
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| serde_json::from_slice(&out.stdout).ok())
                .flatten()
        })
        .await;
    assert_eq!(proxied["kind"], "PodList");
    assert!(
        proxied["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|p| p["metadata"]["name"] == name.as_str()),
        "{proxied}"
    );
    // /metrics/resource parses as Prometheus text whatever the stats sampler has so far.
    let m = get_ok(&admin, "/metrics/resource").await;
    let e = prom::parse(&m.text()).unwrap_or_else(|err| panic!("{err}\n{}", m.text()));
    assert_eq!(
        e.types.get("resource_scrape_error").map(String::as_str),
        Some("gauge")
    );
    // Once sampled, the running container is in /stats/summary (client cert, over HTTPS) with
    // CPU and memory, and /metrics/resource carries its series.
    let summary = wait_until_async("pod in /stats/summary", Duration::from_secs(90), || async {
        let s = admin.get("/stats/summary").await.ok()?.json();
        let pod = s["pods"]
            .as_array()?
            .iter()
            .find(|p| p["podRef"]["name"] == name.as_str())?
            .clone();
        let c = pod["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "main")?
            .clone();
        (c["cpu"]["usageCoreNanoSeconds"].is_u64() && c["memory"]["workingSetBytes"].is_u64())
            .then_some(s)
    })
    .await;
    assert_eq!(summary["node"]["nodeName"], node.name.as_str());
    let series = wait_until_async(
        "container series in /metrics/resource",
        Duration::from_secs(60),
        || async {
            let text = admin.get("/metrics/resource").await.ok()?.text();
            let e = prom::parse(&text).ok()?;
            let ours = |metric: &str| {
                e.named(metric).any(|s| {
                    s.labels.get("container").map(String::as_str) == Some("main")
                        && s.labels.get("pod") == Some(&name)
                        && s.labels.get("namespace").map(String::as_str) == Some("default")
                })
            };
            (ours("container_cpu_usage_seconds_total")
                && ours("container_memory_working_set_bytes")
                && ours("container_start_time_seconds"))
            .then_some(text)
        },
    )
    .await;
    assert!(series.contains("node_cpu_usage_seconds_total"), "{series}");
    // The Summary through the API server's node proxy too.
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", node.name);
    let env = Env::cluster();
    let out = std::process::Command::new(env.var("KUBECTL"))
        .args(["get", "--raw", &path])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proxied: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert_eq!(proxied["node"]["nodeName"], node.name.as_str());
    delete_and_wait_gone(&pods, &[&name], 60).await;
    bosun.terminate(Duration::from_secs(10));
}
