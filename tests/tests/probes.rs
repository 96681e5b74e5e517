//! Liveness, readiness and startup probes on a bosun node, through the real containerd and API
//! server: readiness toggled by a file (Ready goes False and back, no restart), a liveness failure
//! restarting the container with the kubelet's events within the probe's own grace period,
//! startup holding liveness off, httpGet against busybox httpd (named port, headers, redirects),
//! tcpSocket, an exec probe timing out, a sidecar's readiness, `/metrics/probes`, and gRPC probes
//! against a real gRPC health server side by side with the upstream kubelet; probing across a
//! Bosun restart (an adopted container's readiness probed again, not assumed).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bosun_tests::BosunNode;
use bosun_tests::pod::{
    Container, PodBuilder, condition, condition_status, container_status, create, init_status,
    is_running, wait_pod,
};
use bosun_tests::{
    Agent, ClusterNode, Env, KubeletClient, admin_client, facts, mint_client_cert, prom,
    wait_until, wait_until_async,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

/// A container running `script` with the host directory `shared` at /shared.
fn sh(name: &str, script: &str) -> Container {
    Container::sh(name, script).mount("shared", "/shared")
}

fn exec(cmd: &str) -> serde_json::Value {
    json!({"exec": {"command": ["sh", "-c", cmd]}, "periodSeconds": 1})
}

fn shared(node: &ClusterNode) -> PathBuf {
    let dir = node.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The pod's events (reason, message, field path), as the API server holds them.
async fn events(api: &Api<Event>, pod: &str) -> Vec<(String, String, String)> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let list = api.list(&lp).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
                e.involved_object.field_path.unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_event(api: &Api<Event>, pod: &str, reason: &str, prefix: &str) -> String {
    wait_until_async(
        &format!("{reason} event starting {prefix:?}"),
        Duration::from_secs(60),
        || async {
            events(api, pod)
                .await
                .into_iter()
                .find(|(r, m, _)| r == reason && m.starts_with(prefix))
                .map(|(_, m, _)| m)
        },
    )
    .await
}

fn restarts(p: &Pod, name: &str) -> i32 {
    container_status(p, name).map_or(-1, |s| s.restart_count)
}

#[tokio::test]
async fn readiness_follows_a_file_and_liveness_restarts_within_the_probes_grace() {
    let bn = BosunNode::start("probe-rl").await;
    let (node, client, api) = (&bn.node, bn.client.clone(), &bn.pods);
    let ev: Api<Event> = Api::namespaced(client, "default");
    let dir = shared(node);
    std::fs::write(dir.join("ready"), "").unwrap();
    let name = format!("{}-p", node.name);
    // A 60 s pod grace period; the liveness probe's own is 2 s, and the container ignores TERM.
    let mut live = exec("if [ -f /shared/kill ]; then echo dead; exit 1; fi");
    live["failureThreshold"] = 2.into();
    live["terminationGracePeriodSeconds"] = 2.into();
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(60)
        .host_dir("shared", &dir)
        .container(
            sh("web", "trap '' TERM; while :; do sleep 1; done")
                .with("readinessProbe", exec("cat /shared/ready")),
        )
        .container(
            sh("live", "trap '' TERM; while :; do sleep 1; done").with("livenessProbe", live),
        )
        .build();
    create(api, &p).await;
    let ready = |want: &'static str| {
        move |p: &Pod| (condition_status(p, "Ready") == Some(want)).then(|| p.clone())
    };
    wait_pod(api, &name, "Ready", 120, ready("True")).await;

    // Readiness: the file goes, Ready goes False (the pod keeps running), the file comes back.
    std::fs::remove_file(dir.join("ready")).unwrap();
    let p = wait_pod(api, &name, "not Ready", 30, ready("False")).await;
    let c = condition(&p, "ContainersReady").unwrap();
    assert_eq!(c.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(
        c.message.as_deref(),
        Some("containers with unready status: [web]")
    );
    let web = container_status(&p, "web").unwrap();
    assert!(
        !web.ready && web.started == Some(true) && is_running(Some(web)),
        "{web:?}"
    );
    let m = wait_event(&ev, &name, "Unhealthy", "Readiness probe failed: ").await;
    assert!(m.contains("No such file"), "{m}");
    std::fs::write(dir.join("ready"), "").unwrap();
    let p = wait_pod(api, &name, "Ready again", 30, ready("True")).await;
    assert_eq!(restarts(&p, "web"), 0, "readiness never restarts");

    // Liveness: two failures, then the kill with the probe's 2 s grace (not the pod's 60 s).
    std::fs::write(dir.join("kill"), "").unwrap();
    let p = wait_pod(api, &name, "live restarted", 45, |p| {
        (restarts(p, "live") >= 1).then(|| p.clone())
    })
    .await;
    std::fs::remove_file(dir.join("kill")).unwrap();
    let live = container_status(&p, "live").unwrap();
    let last = live
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 137, "killed after the grace: {last:?}");
    let unhealthy = wait_event(&ev, &name, "Unhealthy", "Liveness probe failed: ").await;
    assert_eq!(unhealthy, "Liveness probe failed: dead\n");
    let killing = wait_event(&ev, &name, "Killing", "Container live").await;
    assert_eq!(
        killing,
        "Container live failed liveness probe, will be restarted"
    );
    assert_eq!(restarts(&p, "web"), 0);
    let p = wait_pod(api, &name, "Ready after the restart", 60, ready("True")).await;
    assert!(is_running(container_status(&p, "live")));
    bn.finish();
}

/// busybox httpd serving /www on `port`, with CGI scripts: `check` records the request's
/// User-Agent, Accept and X-Probe headers in /shared/seen (one line per request), `away`
/// redirects to another host, `here` to /index.html on the same one.
fn web_script(port: u16) -> String {
    format!(
        r#"mkdir -p /www/cgi-bin && echo hello > /www/index.html
cat > /www/cgi-bin/check <<'EOF'
#!/bin/sh
echo "$HTTP_USER_AGENT|$HTTP_ACCEPT|$HTTP_X_PROBE" >> /shared/seen
printf 'Content-Type: text/plain\r\n\r\nok\n'
EOF
cat > /www/cgi-bin/away <<'EOF'
#!/bin/sh
printf 'HTTP/1.0 302 Found\r\nLocation: http://127.0.0.2:9/elsewhere\r\n\r\nmoved\n'
EOF
cat > /www/cgi-bin/here <<'EOF'
#!/bin/sh
printf 'HTTP/1.0 301 Moved\r\nLocation: /index.html\r\n\r\n'
EOF
chmod +x /www/cgi-bin/*
exec httpd -f -p {port} -h /www"#
    )
}

#[tokio::test]
async fn http_and_tcp_probes_and_their_metrics() {
    let bn = BosunNode::start("probe-http").await;
    let (node, client, api) = (&bn.node, bn.client.clone(), &bn.pods);
    let ev: Api<Event> = Api::namespaced(client, "default");
    let dir = shared(node);
    let name = format!("{}-p", node.name);
    let get = |path: &str| {
        json!({"httpGet": {"path": path, "port": "web",
                           "httpHeaders": [{"name": "X-Probe", "value": "yes"}]},
               "periodSeconds": 1})
    };
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(1)
        .host_dir("shared", &dir)
        .container(
            sh("web", &web_script(8080))
                .with("ports", json!([{"name": "web", "containerPort": 8080}]))
                .with("readinessProbe", get("/cgi-bin/check"))
                .with("livenessProbe", get("/cgi-bin/away"))
                .with("startupProbe", get("/cgi-bin/here")),
        )
        .container(sh("tcp", "while :; do sleep 1; done").with(
            "readinessProbe",
            json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1}),
        ))
        .container(sh("closed", "while :; do sleep 1; done").with(
            "readinessProbe",
            json!({"tcpSocket": {"port": 9999}, "periodSeconds": 1}),
        ))
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "web and tcp ready", 120, |p| {
        let r = |n| container_status(p, n).is_some_and(|s| s.ready);
        (r("web") && r("tcp")).then(|| p.clone())
    })
    .await;
    let uid = p.metadata.uid.clone().unwrap();
    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    // The closed port keeps its container, and so the pod, unready.
    assert!(!container_status(&p, "closed").unwrap().ready);
    assert_eq!(condition_status(&p, "Ready"), Some("False"));
    let m = wait_event(&ev, &name, "Unhealthy", "Readiness probe failed: dial tcp").await;
    assert_eq!(
        m,
        format!("Readiness probe failed: dial tcp {ip}:9999: connect: connection refused")
    );
    // The kubelet's headers and the spec's.
    let seen = std::fs::read_to_string(dir.join("seen")).unwrap();
    let first = seen.lines().next().unwrap();
    assert_eq!(first, "kube-probe/1.37|*/*|yes");
    // A redirect to another host is not followed: success with a warning, no restart.
    let w = wait_event(&ev, &name, "ProbeWarning", "Liveness probe warning").await;
    assert_eq!(
        w,
        "Liveness probe warning: Probe terminated redirects, Response body: moved\n"
    );
    let p = api.get(&name).await.unwrap();
    assert_eq!(restarts(&p, "web"), 0);
    assert_eq!(container_status(&p, "web").unwrap().started, Some(true));

    // /metrics/probes: parsed strictly, counters matching the requests the server saw.
    let ip_node = Env::cluster().var("NODE_IP").parse().expect("NODE_IP");
    let crt = node.path().join("pki/kubelet.crt");
    wait_until("serving certificate", Duration::from_secs(30), || {
        crt.exists().then_some(())
    });
    let addr = SocketAddr::new(ip_node, node.server_port());
    let certs = tempfile::tempdir().unwrap();
    let (a_crt, a_key) = mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let (n_crt, n_key) = mint_client_cert(certs.path(), "bosun-test-nobody", &[]);
    let nobody = KubeletClient::new(addr, &crt, Some((&n_crt, &n_key)));
    let a = nobody.get("/metrics/probes").await.expect("request");
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(
        a.text().contains("subresource(s)=[metrics]"),
        "{}",
        a.text()
    );
    let admin = KubeletClient::new(addr, &crt, Some((&a_crt, &a_key)));
    let a = admin.get("/metrics/probes").await.expect("request");
    assert_eq!(a.status, 200);
    let text = a.text();
    let lines = std::fs::read_to_string(dir.join("seen"))
        .unwrap()
        .lines()
        .count() as f64;
    let e = prom::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
    assert_eq!(
        e.types
            .get("prober_probe_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let count = |kind: &str, container: &str, result: &str| {
        e.named("prober_probe_total")
            .filter(|s| {
                let l = |k: &str| s.labels.get(k).map(String::as_str);
                l("probe_type") == Some(kind)
                    && l("container") == Some(container)
                    && l("result") == Some(result)
                    && l("pod") == Some(name.as_str())
                    && l("namespace") == Some("default")
                    && l("pod_uid") == Some(uid.as_str())
            })
            .map(|s| s.value)
            .sum::<f64>()
    };
    let ok = count("Readiness", "web", "successful");
    assert!(
        ok >= 1.0 && ok <= lines && lines <= ok + 2.0,
        "{ok} vs {lines} requests"
    );
    assert!(count("Readiness", "closed", "failed") >= 1.0, "{text}");
    assert!(count("Liveness", "web", "successful") >= 1.0, "{text}");
    assert!(count("Startup", "web", "successful") == 1.0, "{text}");
    bn.finish();
}

#[tokio::test]
async fn startup_holds_liveness_off_exec_times_out_and_a_sidecar_gates_readiness() {
    let bn = BosunNode::start("probe-su").await;
    let (node, client, api) = (&bn.node, bn.client.clone(), &bn.pods);
    let ev: Api<Event> = Api::namespaced(client, "default");
    let dir = shared(node);
    let name = format!("{}-p", node.name);
    let mut startup = exec("cat /shared/started");
    startup["failureThreshold"] = 600.into();
    let mut hang = exec("sleep 3");
    hang["timeoutSeconds"] = 1.into();
    let mut live = exec("echo nope; exit 1");
    live["terminationGracePeriodSeconds"] = 1.into();
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(1)
        .host_dir("shared", &dir)
        .init_container(
            sh("side", "while :; do sleep 1; done")
                .sidecar()
                .with("readinessProbe", exec("cat /shared/side-ready")),
        )
        .container(
            sh("slow", "while :; do sleep 1; done")
                .with("startupProbe", startup)
                .with("livenessProbe", live),
        )
        .container(sh("hang", "while :; do sleep 1; done").with("readinessProbe", hang))
        .build();
    create(api, &p).await;
    // Probing: the startup probe fails and the exec probe times out, again and again.
    let m = wait_event(&ev, &name, "Unhealthy", "Readiness probe failed: command").await;
    assert_eq!(
        m,
        "Readiness probe failed: command timed out: \"sh -c sleep 3\" timed out after 1s"
    );
    wait_until_async("3 startup failures", Duration::from_secs(60), || async {
        let n = events(&ev, &name).await;
        n.iter()
            .any(|(r, m, _)| r == "Unhealthy" && m.starts_with("Startup probe failed"))
            .then_some(())
    })
    .await;
    let p = api.get(&name).await.unwrap();
    let slow = container_status(&p, "slow").unwrap();
    assert!(
        is_running(Some(slow)) && slow.started == Some(false) && !slow.ready,
        "{slow:?}"
    );
    assert_eq!(slow.restart_count, 0, "liveness held off until started");
    let side = init_status(&p, "side").unwrap();
    assert!(is_running(Some(side)) && !side.ready, "{side:?}");
    assert!(
        !events(&ev, &name)
            .await
            .iter()
            .any(|(_, m, _)| m.starts_with("Liveness")),
        "no liveness probe before the startup probe passed"
    );
    // The sidecar's readiness comes with its file.
    std::fs::write(dir.join("side-ready"), "").unwrap();
    wait_pod(api, &name, "sidecar ready", 30, |p| {
        init_status(p, "side")
            .is_some_and(|s| s.ready)
            .then_some(())
    })
    .await;
    // Started: the failing liveness probe now restarts the container.
    std::fs::write(dir.join("started"), "").unwrap();
    wait_pod(api, &name, "slow restarted", 60, |p| {
        (restarts(p, "slow") >= 1).then_some(())
    })
    .await;
    let k = wait_event(&ev, &name, "Killing", "Container slow").await;
    assert_eq!(k, "Container slow failed liveness probe, will be restarted");
    let p = api.get(&name).await.unwrap();
    assert!(!container_status(&p, "hang").unwrap().ready);
    assert_eq!(condition_status(&p, "Ready"), Some("False"));
    bn.finish();
}

/// Replaces every occurrence of `ip` with `POD_IP`, so two nodes' messages compare.
fn masked(text: &str, ip: &str) -> String {
    text.replace(ip, "POD_IP")
}

/// What gRPC probes did on a node run by `agent`, against the tests' gRPC health server
/// (tests/cluster/grpc-health) in the pod: readiness and liveness on the known services, an
/// unknown service, a closed port, then the server answering NOT_SERVING while a file exists and
/// SERVING again once it is gone. Returns the facts, pod IP masked.
async fn grpc_probe_facts(agent: Agent) -> Vec<(String, String)> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("probe-grpc", Default::default(), &client)
        .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ev: Api<Event> = Api::namespaced(client, "default");
    let dir = shared(&node);
    let bin = PathBuf::from(Env::cluster().var("GRPC_HEALTH_BIN"));
    let grpc = |port: i32, service: Option<&str>| {
        let mut g = json!({"port": port});
        if let Some(s) = service {
            g["service"] = s.into();
        }
        json!({"grpc": g, "periodSeconds": 1})
    };
    let mut live = grpc(8081, Some("bosun"));
    live["failureThreshold"] = 2.into();
    live["terminationGracePeriodSeconds"] = 1.into();
    let idle = |name: &str| sh(name, "while :; do sleep 1; done");
    let name = format!("{}-p", node.name);
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(1)
        .host_dir("shared", &dir)
        .host_dir("grpc", bin.parent().expect("bin dir"))
        .container(
            Container::exec(
                "server",
                &[
                    "/grpc/grpc-health",
                    "-port=8081",
                    "-services=bosun",
                    "-fail-file=/shared/fail",
                ],
            )
            .mount("shared", "/shared")
            .mount("grpc", "/grpc")
            .with("readinessProbe", grpc(8081, None)),
        )
        .container(idle("named").with("readinessProbe", grpc(8081, Some("bosun"))))
        .container(idle("live").with("livenessProbe", live))
        .container(idle("unknown").with("readinessProbe", grpc(8081, Some("nope"))))
        .container(idle("closed").with("readinessProbe", grpc(9999, None)))
        .build();
    create(&api, &p).await;
    let what = format!("server and named ready on {}", agent.name());
    let p = wait_pod(&api, &name, &what, 120, |p| {
        let r = |n| container_status(p, n).is_some_and(|s| s.ready);
        (r("server") && r("named")).then(|| p.clone())
    })
    .await;
    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
    let mut facts = vec![(
        "unready before the fail file".to_string(),
        ["live", "unknown", "closed"]
            .into_iter()
            .filter(|n| !container_status(&p, n).is_some_and(|s| s.ready))
            .collect::<Vec<_>>()
            .join(","),
    )];
    let unknown = wait_event(
        &ev,
        &name,
        "Unhealthy",
        "Readiness probe failed: error: health",
    )
    .await;
    facts.push(("unknown service".into(), unknown));
    let closed = wait_event(&ev, &name, "Unhealthy", "Readiness probe failed: timeout").await;
    facts.push(("closed port".into(), masked(&closed, &ip)));

    // NOT_SERVING: readiness drops, liveness restarts its container.
    std::fs::write(dir.join("fail"), "").unwrap();
    let what = format!("server and named unready on {}", agent.name());
    wait_pod(&api, &name, &what, 60, |p| {
        let r = |n| container_status(p, n).is_some_and(|s| s.ready);
        (!r("server") && !r("named")).then_some(())
    })
    .await;
    let what = format!("live restarted on {}", agent.name());
    wait_pod(&api, &name, &what, 60, |p| {
        (restarts(p, "live") >= 1).then_some(())
    })
    .await;
    let unhealthy = wait_event(&ev, &name, "Unhealthy", "Readiness probe failed: service").await;
    facts.push(("not serving".into(), unhealthy));
    let liveness = wait_event(&ev, &name, "Unhealthy", "Liveness probe failed").await;
    facts.push(("liveness".into(), liveness));
    let killing = wait_event(&ev, &name, "Killing", "Container live").await;
    facts.push(("killing".into(), killing));

    // SERVING again: ready again, and readiness never restarted anything.
    std::fs::remove_file(dir.join("fail")).unwrap();
    let what = format!("server and named ready again on {}", agent.name());
    let p = wait_pod(&api, &name, &what, 60, |p| {
        let r = |n| container_status(p, n).is_some_and(|s| s.ready);
        (r("server") && r("named")).then(|| p.clone())
    })
    .await;
    facts.push((
        "restarts of server, named".into(),
        format!("{} {}", restarts(&p, "server"), restarts(&p, "named")),
    ));
    let _ = api.delete(&name, &Default::default()).await;
    proc.stop();
    facts
}

#[tokio::test]
async fn grpc_probes_as_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(
        grpc_probe_facts(Agent::Bosun),
        grpc_probe_facts(Agent::Kubelet)
    );
    let want = facts(&[
        ("unready before the fail file", "unknown,closed"),
        (
            "unknown service",
            "Readiness probe failed: error: health rpc probe failed: \
             rpc error: code = NotFound desc = unknown service",
        ),
        (
            "closed port",
            "Readiness probe failed: timeout: failed to connect service \"POD_IP:9999\" \
             within 1s: context deadline exceeded",
        ),
        (
            "not serving",
            "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        ),
        (
            "liveness",
            "Liveness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        ),
        (
            "killing",
            "Container live failed liveness probe, will be restarted",
        ),
        ("restarts of server, named", "0 0"),
    ]);
    assert_eq!(kubelet, want, "the kubelet");
    assert_eq!(bosun, want, "bosun");
}

#[tokio::test]
async fn probing_survives_a_bosun_restart_and_readiness_is_probed_again_not_assumed() {
    let node = ClusterNode::new("probe-rs");
    let mut bosun = node.start();
    let client = admin_client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let dir = shared(&node);
    std::fs::write(dir.join("ready"), "").unwrap();
    let name = format!("{}-p", node.name);
    let mut startup = exec("true");
    startup["failureThreshold"] = 3.into();
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(1)
        .host_dir("shared", &dir)
        .container(
            sh("web", "while :; do sleep 1; done")
                .with("readinessProbe", exec("cat /shared/ready"))
                .with("startupProbe", startup),
        )
        .build();
    create(&api, &p).await;
    let ready = |want: &'static str| {
        move |p: &Pod| (condition_status(p, "Ready") == Some(want)).then(|| p.clone())
    };
    let before = wait_pod(&api, &name, "Ready", 120, ready("True")).await;
    let started_at = container_status(&before, "web")
        .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.clone())
        .expect("running since");

    // Adopted after the restart: running since before Bosun's start by more than the kubelet's
    // restart grace (10 s), so its readiness is the pod's until a probe says otherwise.
    let since = started_at.0;
    wait_until_async(
        "the container running for 12 s",
        Duration::from_secs(30),
        || async {
            (k8s_openapi::jiff::Timestamp::now().duration_since(since)
                > k8s_openapi::jiff::SignedDuration::from_secs(12))
            .then_some(())
        },
    )
    .await;

    // Bosun goes away; meanwhile the container stops being ready. The status in the API still
    // says Ready: only a probe after the restart can tell.
    bosun.terminate(Duration::from_secs(10));
    std::fs::remove_file(dir.join("ready")).unwrap();
    let mut bosun = node.start();
    let p = wait_pod(
        &api,
        &name,
        "not Ready after the restart",
        60,
        ready("False"),
    )
    .await;
    let web = container_status(&p, "web").unwrap();
    assert!(
        !web.ready && web.started == Some(true) && web.restart_count == 0,
        "adopted, still started, not restarted: {web:?}"
    );
    let still = web
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref()?.started_at.clone());
    assert_eq!(still, Some(started_at), "the same container instance");

    // And probing goes on: the file back, Ready back.
    std::fs::write(dir.join("ready"), "").unwrap();
    let p = wait_pod(&api, &name, "Ready again", 60, ready("True")).await;
    assert_eq!(restarts(&p, "web"), 0);
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited:\n{}",
        bosun.log_text()
    );
    bosun.terminate(Duration::from_secs(10));
}

/// What a readiness gate did to a pod on a node run by `agent`: Ready before and after another
/// controller set the gate's condition, and that condition kept through the agent's updates.
async fn readiness_gate_facts(agent: Agent) -> Vec<(String, String)> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("probe-gate", Default::default(), &client)
        .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("{}-p", node.name);
    let gate = "example.com/load-balancer";
    let p = PodBuilder::new(&name)
        .node(&node.name)
        .grace(1)
        .spec("readinessGates", json!([{"conditionType": gate}]))
        .container(Container::sh("main", "while :; do sleep 1; done"))
        .build();
    create(&api, &p).await;
    let what = format!("ContainersReady on {}", agent.name());
    let p = wait_pod(&api, &name, &what, 120, |p| {
        (condition_status(p, "ContainersReady") == Some("True")).then(|| p.clone())
    })
    .await;
    let ready = |p: &Pod| {
        condition(p, "Ready")
            .map(|c| {
                format!(
                    "{} {} {}",
                    c.status,
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default()
    };
    let mut facts = vec![("Ready without the condition".to_string(), ready(&p))];
    // Another controller sets the gate's condition, False first, then True.
    for status in ["False", "True"] {
        let patch = json!({"status": {"conditions": [{"type": gate, "status": status}]}});
        api.patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .expect("patch the gate's condition");
        let what = format!("Ready after the gate went {status} on {}", agent.name());
        let want = if status == "True" { "True" } else { "False" };
        let p = wait_pod(&api, &name, &what, 60, |p| {
            let gate_set = condition_status(p, gate) == Some(status);
            let r = condition_status(p, "Ready") == Some(want);
            let message_set = status == "True" || ready(p).contains("is not");
            (gate_set && r && message_set).then(|| p.clone())
        })
        .await;
        facts.push((format!("Ready with the condition {status}"), ready(&p)));
    }
    let _ = api.delete(&name, &Default::default()).await;
    proc.stop();
    facts
}

#[tokio::test]
async fn readiness_gates_hold_ready_as_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(
        readiness_gate_facts(Agent::Bosun),
        readiness_gate_facts(Agent::Kubelet)
    );
    let want = facts(&[
        (
            "Ready without the condition",
            "False ReadinessGatesNotReady corresponding condition of pod readiness gate \
             \"example.com/load-balancer\" does not exist.",
        ),
        (
            "Ready with the condition False",
            "False ReadinessGatesNotReady the status of pod readiness gate \
             \"example.com/load-balancer\" is not \"True\", but False",
        ),
        ("Ready with the condition True", "True  "),
    ]);
    assert_eq!(kubelet, want, "the kubelet");
    assert_eq!(bosun, want, "bosun");
}
