//! The kubelet port of a bosun node on the real control plane: HTTPS with the self-signed serving
//! certificate, client certificates and bearer tokens (TokenReview) authenticated, requests
//! authorized with SubjectAccessReviews (401 without credentials, 403 without RBAC rights), and
//! `/healthz`, `/pods`, `/stats/summary`, `/metrics/resource`, `/metrics` served to clients and
//! through the API server's node proxy.

use std::net::SocketAddr;
use std::time::Duration;

use bosun_tests::bench::procfs::rss_kib;
use bosun_tests::kubelet::{Answer, mint_ca, mint_client_cert_by, mint_serving_cert};
use bosun_tests::{
    ClusterNode, Env, KubeletClient, kubectl, mint_client_cert, prom, wait_until, wait_until_async,
};

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
    let (addr, crt) = node.serving_endpoint();
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
    let (addr, crt) = node.serving_endpoint();
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

/// How long bosun gives a client to send a request's headers (agent `HEADER_READ_TIMEOUT`).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long bosun gives a client to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connector trusting the node's serving certificate, without a client certificate.
fn tls_connector(crt: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(crt).expect("serving cert") {
        roots.add(c.expect("PEM")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}

/// Reads from `conn` until the server closes it (EOF or an error) or `within` passes; returns
/// how long after `since` it was closed, None if still open.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(
    conn: &mut R,
    since: std::time::Instant,
    within: Duration,
) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::from_std(since + within);
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Hostile clients on the kubelet port while an authorized client keeps asking for /healthz and
/// /pods: TCP connections that never start TLS, TLS connections that stay silent or send a
/// request's headers a byte a second (slowloris), TLS garbage, a 2 MiB header and a huge body.
/// Authorized requests keep being answered promptly, the silent and slow connections are closed
/// after the handshake and header timeouts (the kubelet's Go server would hold them for its 4 h
/// ReadTimeout), the oversized header is refused with 431, and bosun's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_are_cut_off_while_authorized_requests_are_served() {
    use tokio::io::AsyncWriteExt;
    const RAW: usize = 300;
    const SILENT: usize = 100;
    const SLOW: usize = 200;
    const GARBAGE: usize = 50;
    let node = ClusterNode::new("srv-hostile");
    let mut bosun = node.start();
    let (addr, crt) = node.serving_endpoint();
    let certs = tempfile::tempdir().unwrap();
    let (admin_crt, admin_key) =
        mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let admin = std::sync::Arc::new(KubeletClient::new(
        addr,
        &crt,
        Some((&admin_crt, &admin_key)),
    ));
    wait_until_async("kubelet port answers", Duration::from_secs(30), || async {
        admin.get("/healthz").await.ok().filter(|a| a.status == 200)
    })
    .await;
    for _ in 0..20 {
        get_ok(&admin, "/pods").await;
    }
    let pid = bosun.pid();
    let rss_before = rss_kib(pid);

    // The authorized client, all along: a fresh connection per request.
    let stop = tokio_util::sync::CancellationToken::new();
    let prober = {
        let (admin, stop) = (admin.clone(), stop.clone());
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut answered = 0u32;
            while !stop.is_cancelled() {
                for path in ["/healthz", "/pods"] {
                    let t = std::time::Instant::now();
                    let a = admin.get(path).await.expect("authorized request");
                    assert_eq!(a.status, 200, "{path} during the attack: {}", a.text());
                    worst = worst.max(t.elapsed());
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (worst, answered)
        })
    };

    let tls = tls_connector(&crt);
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let attack = std::time::Instant::now();
    // TCP connections that never start the handshake.
    let mut raw = Vec::new();
    for _ in 0..RAW {
        raw.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // TLS connections silent after the handshake.
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        silent.push(tls.connect(name.clone(), tcp).await.expect("handshake"));
    }
    // Slowloris: headers a byte a second, never finished.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let conn = tls.connect(name.clone(), tcp).await.expect("handshake");
        slow.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let (mut r, mut w) = tokio::io::split(conn);
            let writer = async move {
                let head = b"GET /pods HTTP/1.1\r\nHost: x\r\n";
                for b in head.iter().chain(b"X-Slow: ".iter().cycle()) {
                    if w.write_all(&[*b]).await.is_err() || w.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            tokio::select! {
                closed = closed_within(&mut r, started, HEADER_READ_TIMEOUT + Duration::from_secs(20)) => closed,
                _ = writer => closed_within(&mut r, started, HEADER_READ_TIMEOUT + Duration::from_secs(20)).await,
            }
        }));
    }
    // TLS garbage: closed at once.
    for i in 0..GARBAGE {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let garbage: Vec<u8> = (0..4096u32)
            .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i as u32) >> 13) as u8)
            .collect();
        let _ = tcp.write_all(&garbage).await;
        let t = std::time::Instant::now();
        let closed = closed_within(&mut tcp, t, Duration::from_secs(5)).await;
        assert!(closed.is_some(), "TLS garbage connection {i} left open");
    }
    // A 2 MiB header: 431, the connection closed.
    {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut conn = tls.connect(name.clone(), tcp).await.expect("handshake");
        let mut req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 2 << 20));
        req.extend(b"\r\n\r\n");
        let _ = conn.write_all(&req).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "2 MiB header answered {:?}",
            answer.lines().next()
        );
    }
    // A huge body without credentials: 401 while the body is still coming.
    {
        use tokio::io::AsyncReadExt;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let conn = tls.connect(name.clone(), tcp).await.expect("handshake");
        let (mut r, mut w) = tokio::io::split(conn);
        let writer = tokio::spawn(async move {
            let head = b"POST /pods HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n";
            w.write_all(head).await.expect("write");
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..256 {
                if w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), r.read(&mut answer))
            .await
            .expect("an answer to the huge body within 10 s")
            .unwrap_or(0);
        writer.abort();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "huge body answered {answer:?}"
        );
    }
    let opened = attack.elapsed();
    let mut rss_max = rss_kib(pid);

    // The server closes what it must, in time.
    let mut raw_closed = Duration::ZERO;
    for (i, mut c) in raw.into_iter().enumerate() {
        let t = closed_within(&mut c, attack, HANDSHAKE_TIMEOUT + Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("TCP connection {i} without a handshake left open"));
        raw_closed = raw_closed.max(t);
        rss_max = rss_max.max(rss_kib(pid));
    }
    let mut silent_closed = Duration::ZERO;
    for (i, mut c) in silent.into_iter().enumerate() {
        let t = closed_within(
            &mut c,
            attack,
            opened + HEADER_READ_TIMEOUT + Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|| panic!("TLS connection {i} silent after the handshake left open"));
        silent_closed = silent_closed.max(t);
        rss_max = rss_max.max(rss_kib(pid));
    }
    let mut slow_closed = Duration::ZERO;
    for (i, s) in slow.into_iter().enumerate() {
        let t = s
            .await
            .expect("slowloris task")
            .unwrap_or_else(|| panic!("slowloris connection {i} left open"));
        slow_closed = slow_closed.max(t);
    }
    rss_max = rss_max.max(rss_kib(pid));
    stop.cancel();
    let (worst, answered) = prober.await.expect("authorized client");
    let rss_after = rss_kib(pid);
    assert!(
        worst < Duration::from_secs(2),
        "an authorized request took {worst:?} during the attack"
    );
    assert!(
        rss_max <= rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_max} KiB under {} connections",
        RAW + SILENT + SLOW
    );
    get_ok(&admin, "/healthz").await;
    assert!(bosun.try_exit().is_none(), "bosun exited under the attack");
    eprintln!(
        "hostile clients: {RAW} raw TCP closed by {raw_closed:?}, {SILENT} silent TLS by \
         {silent_closed:?}, {SLOW} slowloris by {slow_closed:?} (each from its start); \
         {answered} authorized requests, slowest {worst:?}; RSS {rss_before} KiB before, \
         {rss_max} KiB max, {rss_after} KiB after"
    );
    let (_, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

/// Replaces `path` with `text` at once (written beside it, then renamed over it), as operators'
/// certificate tools do.
fn replace_file(path: &std::path::Path, text: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename over the old file");
}

/// The kubelet port picks up a new serving certificate and a new client CA bundle from disk
/// without a restart (ReloadKubeletServerCertificateFile, ReloadKubeletClientCAFile), and keeps
/// the last good certificate when a broken one is written.
#[tokio::test]
async fn the_serving_certificate_and_client_ca_are_reloaded_from_disk() {
    let mut node = ClusterNode::new("srv-reload");
    // The node's own copy of the cluster CA as its clientCAFile, so the test may change it.
    let ca_file = node.path().join("client-ca.crt");
    let cluster_ca = std::fs::read(Env::cluster().var("CLUSTER_CA")).expect("cluster CA");
    std::fs::write(&ca_file, &cluster_ca).expect("client CA file");
    node.args
        .extend(["--client-ca-file".into(), ca_file.display().to_string()]);
    let mut bosun = node.start();
    let (addr, crt) = node.serving_endpoint();
    let certs = tempfile::tempdir().unwrap();
    let (admin_crt, admin_key) =
        mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let admin = KubeletClient::new(addr, &crt, Some((&admin_crt, &admin_key)));
    wait_until_async("kubelet port answers", Duration::from_secs(30), || async {
        admin.get("/healthz").await.ok().filter(|a| a.status == 200)
    })
    .await;

    // A cluster admin whose certificate another CA signed: anonymous until that CA is trusted.
    let (other_ca, other_key) = mint_ca(certs.path(), "bosun-test-other-ca");
    let (other_crt, other_crt_key) = mint_client_cert_by(
        (&other_ca, &other_key),
        certs.path(),
        "bosun-test-other-admin",
        &["system:masters"],
    );
    let other = || KubeletClient::new(addr, &crt, Some((&other_crt, &other_crt_key)));
    // Before its CA is trusted: an unauthenticated request, answered 401 as the kubelet's
    // (Go's RequestClientCert completes the handshake; the x509 authenticator rejects the chain).
    let a = other().get("/pods").await.expect("the handshake completes");
    assert_eq!(
        (a.status, a.text().as_str()),
        (401, "Unauthorized"),
        "before its CA is trusted"
    );
    let mut bundle = cluster_ca.clone();
    bundle.extend(std::fs::read(&other_ca).expect("other CA"));
    replace_file(&ca_file, &bundle);
    let t0 = std::time::Instant::now();
    wait_until_async(
        "the other CA's client trusted",
        Duration::from_secs(30),
        || async { other().get("/pods").await.ok().filter(|a| a.status == 200) },
    )
    .await;
    eprintln!("client CA reloaded after {:.1?}", t0.elapsed());
    get_ok(&admin, "/pods").await;

    // A new serving certificate: new connections are served with it.
    let first = certs.path().join("first.crt");
    std::fs::copy(&crt, &first).expect("keep the first certificate");
    get_ok(
        &KubeletClient::new(addr, &first, Some((&admin_crt, &admin_key))),
        "/healthz",
    )
    .await;
    let ip = Env::cluster().var("NODE_IP").to_string();
    let new_crt = certs.path().join("serving.crt");
    let new_key = certs.path().join("serving.key");
    mint_serving_cert(&new_crt, &new_key, &node.name, &ip);
    replace_file(
        &node.path().join("pki/kubelet.key"),
        &std::fs::read(&new_key).unwrap(),
    );
    replace_file(
        &node.path().join("pki/kubelet.crt"),
        &std::fs::read(&new_crt).unwrap(),
    );
    let t0 = std::time::Instant::now();
    let trusting_new = || KubeletClient::new(addr, &new_crt, Some((&admin_crt, &admin_key)));
    wait_until_async(
        "the new serving certificate served",
        Duration::from_secs(30),
        || async {
            trusting_new()
                .get("/healthz")
                .await
                .ok()
                .filter(|a| a.status == 200)
        },
    )
    .await;
    eprintln!("serving certificate reloaded after {:.1?}", t0.elapsed());
    assert!(
        KubeletClient::new(addr, &first, Some((&admin_crt, &admin_key)))
            .get("/healthz")
            .await
            .is_err(),
        "a client trusting only the first certificate is refused once it is replaced"
    );

    // A broken certificate file: logged, and the last good one stays.
    replace_file(&node.path().join("pki/kubelet.crt"), b"not a certificate\n");
    wait_until("the broken file logged", Duration::from_secs(30), || {
        bosun
            .log_text()
            .contains("invalid certificate, key or client CA file")
            .then_some(())
    });
    get_ok(&trusting_new(), "/healthz").await;
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited:\n{}",
        bosun.log_text()
    );
    let (_, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

/// One plain-HTTP `GET /healthz` on a new connection, as the kubelet's healthz port is probed
/// (curl, a service manager): true when the answer is `200` with body `ok`.
async fn healthz_once(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: flood\r\n\r\n";
    if conn.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::with_capacity(256);
    if conn.read_to_end(&mut answer).await.is_err() {
        return false;
    }
    answer.starts_with(b"HTTP/1.1 200 ") && answer.ends_with(b"\r\n\r\nok")
}

/// The healthz port (plain HTTP on 127.0.0.1, the kubelet's healthzPort) asked 10,000 times a
/// second, each on a new connection, while 20 pods start on the node: every answer is `200 ok`,
/// every pod runs, and bosun's memory stays bounded. The rate reached is printed (on two cores the
/// client shares the machine with bosun, containerd and the control plane).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_flood_is_answered_while_pods_start() {
    const TARGET_PER_SEC: u64 = 10_000;
    const CLIENTS: u64 = 32;
    const PODS: usize = 20;
    // A free loopback port, given back for bosun to bind.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let node = ClusterNode::with_options(
        "srv-flood",
        &bosun_tests::NodeOptions {
            healthz_port: Some(port),
            ..Default::default()
        },
    );
    let mut bosun = node.start();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until_async("healthz answers ok", Duration::from_secs(60), || async {
        healthz_once(addr).await.then_some(())
    })
    .await;
    let client = bosun_tests::admin_client().await;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        let n = nodes.get_opt(&node.name).await.ok()??;
        bosun_tests::agent::node_ready(&n).then_some(())
    })
    .await;
    let pid = bosun.pid();
    let rss_before = rss_kib(pid);

    let stop = tokio_util::sync::CancellationToken::new();
    let period = Duration::from_micros(1_000_000 * CLIENTS / TARGET_PER_SEC);
    let flood: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let (mut ok, mut failed) = (0u64, 0u64);
                while !stop.is_cancelled() {
                    tick.tick().await;
                    if healthz_once(addr).await {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let rss_max = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.is_cancelled() {
                max = max.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            max
        })
    };

    let started = std::time::Instant::now();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), "default");
    let names: Vec<String> = (0..PODS).map(|i| format!("{}-{i}", node.name)).collect();
    for name in &names {
        let pod = bosun_tests::PodBuilder::new(name)
            .node(&node.name)
            .grace(1)
            .container(bosun_tests::Container::exec(
                "main",
                &["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
            ))
            .build();
        bosun_tests::pod::create(&pods, &pod).await;
    }
    for name in &names {
        bosun_tests::pod::running_uid(&pods, name, 180).await;
    }
    let all_running = started.elapsed();
    // At least 30 s of flood in all.
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(all_running)).await;
    stop.cancel();
    let elapsed = started.elapsed();
    let (mut ok, mut failed) = (0, 0);
    for f in flood {
        let (o, e) = f.await.unwrap();
        ok += o;
        failed += e;
    }
    let rss_max = rss_max.await.unwrap();
    let rss_after = rss_kib(pid);
    eprintln!(
        "healthz flood: {ok} answered ok, {failed} failed in {:.1} s ({:.0}/s, target {TARGET_PER_SEC}/s); \
         {PODS} pods Running after {:.1} s; RSS {rss_before} KiB before, {rss_max} KiB at most, {rss_after} KiB after",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        all_running.as_secs_f64()
    );
    assert!(bosun.try_exit().is_none(), "bosun exited under the flood");
    assert_eq!(failed, 0, "healthz requests not answered 200 ok");
    assert!(ok > 0);
    assert!(
        rss_max < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_max} KiB under the flood"
    );
    bosun_tests::pod::delete_and_wait_gone(&pods, &names, 120).await;
}
