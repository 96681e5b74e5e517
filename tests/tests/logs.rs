//! Container logs end to end, through the real API server with the real kubectl: `kubectl logs`
//! plain, `--previous`, `--tail`, `--timestamps`, `--since`/`--since-time`, `--limit-bytes`, `-f`
//! (ends when the container exits), and the kubelet's errors (a container that has not started,
//! no previous instance, an image that cannot be pulled) run on a Bosun node and on an upstream
//! kubelet node side by side, which must answer the same. Then, on Bosun alone: a 100 MiB log
//! followed while it is written (every line, complete and in order, agent memory bounded),
//! hostile paths against `/containerLogs` on the node port, and `/configz` through the API
//! server's node proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bosun_tests::pod::{create, delete_and_wait_gone, wait_pod};
use bosun_tests::{
    Agent, ClusterNode, Container, Env, KubeletClient, PodBuilder, admin_client, mint_client_cert,
    prom, wait_until_async,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

/// What one kubectl run gave: exit code, stdout, stderr.
type Outcome = (i32, String, String);

/// Runs kubectl as the cluster admin, at most `secs`.
async fn kubectl(args: &[&str], secs: u64) -> Outcome {
    let env = Env::cluster();
    let run = tokio::process::Command::new(env.var("KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(secs), run)
        .await
        .unwrap_or_else(|_| panic!("kubectl {} did not end within {secs} s", args.join(" ")))
        .expect("run kubectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces each RFC3339Nano timestamp with nine digits and `Z` at a line start with `<ts>`,
/// panicking on a line whose timestamp has another shape.
fn mask_timestamps(text: &str) -> String {
    text.lines()
        .map(|l| {
            let (ts, rest) = l.split_once(' ').unwrap_or((l, ""));
            let b = ts.as_bytes();
            let shaped = b.len() == 30
                && b[4] == b'-'
                && b[10] == b'T'
                && b[19] == b'.'
                && b[29] == b'Z'
                && b[20..29].iter().all(u8::is_ascii_digit);
            assert!(shaped, "not a kubelet timestamp: {l:?}");
            format!("<ts> {rest}\n")
        })
        .collect()
}

/// The first run writes to both streams and fails; the second (after the crash-loop back-off)
/// writes one line and stays.
const RESTARTS: &str = "\
if [ -f /work/ran ]; then echo second run; exec sleep 3600; fi
touch /work/ran
echo out 1; sleep 0.2; echo err 1 >&2; sleep 0.2; echo out 2; echo out 3
exit 1";

/// The pods of one node: (suffix, pod).
fn pods(node: &ClusterNode) -> Vec<(&'static str, Pod)> {
    let p = |suffix: &str| PodBuilder::new(&format!("{}-{suffix}", node.name)).node(&node.name);
    vec![
        (
            "restarts",
            p("restarts")
                .empty_dir("work")
                .container(Container::sh("main", RESTARTS).mount("work", "/work"))
                .build(),
        ),
        (
            "done",
            p("done")
                .restart_policy("Never")
                .container(Container::sh(
                    "main",
                    "echo hello; sleep 0.2; echo world >&2",
                ))
                .build(),
        ),
        (
            "ticker",
            p("ticker")
                .restart_policy("Never")
                .container(Container::sh(
                    "main",
                    "sleep 4; for i in 1 2 3 4 5; do echo tick $i; sleep 0.3; done",
                ))
                .build(),
        ),
        (
            "nopull",
            p("nopull")
                .container(Container::exec("main", &["true"]).image(&format!(
                    "{}/bosun-no-such-image:1",
                    Env::runtime().registry()
                )))
                .build(),
        ),
    ]
}

/// For each cAdvisor family with a series of pod `pod`: `<family> container=<container label>`
/// -> the label names of those series.
type Shape = BTreeMap<String, BTreeSet<String>>;

/// Scrapes `/metrics/cadvisor` of `node` through the API server's node proxy, strictly parsed.
async fn cadvisor(node: &str) -> prom::Exposition {
    let path = format!("/api/v1/nodes/{node}/proxy/metrics/cadvisor");
    let (code, text, err) = kubectl(&["get", "--raw", &path], 30).await;
    assert_eq!(code, 0, "{path}: {err}");
    prom::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The shape of pod `pod`'s series once every `required` key of it shows and, with `running_id`,
/// container `main`'s series name its running container (60 s at most: the stats are sampled
/// every housekeeping interval, so just after a restart they may still be the exited one's); and,
/// when `main` has series, facts about them: `name` is the runtime's container ID, `id` the
/// cgroup ending in it, `image` the status's, CPU and working set above zero.
async fn cadvisor_of(
    node: &str,
    pod: &Pod,
    required: &[&str],
    running_id: bool,
) -> (Shape, String) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let st = bosun_tests::pod::container_status(pod, "main").expect("main's status");
    let cid = st.container_id.clone().unwrap_or_default();
    let cid = cid
        .split_once("://")
        .map_or(cid.as_str(), |(_, id)| id)
        .to_string();
    let shape_of = |expo: &prom::Exposition| {
        let mut shape = Shape::new();
        for s in expo
            .samples
            .iter()
            .filter(|s| s.labels.get("pod") == Some(&name))
        {
            let c = s.labels.get("container").cloned().unwrap_or_default();
            shape
                .entry(format!("{} container={c}", s.name))
                .or_default()
                .extend(s.labels.keys().cloned());
        }
        shape
    };
    let main = |s: &&prom::Sample| {
        s.labels.get("pod") == Some(&name)
            && s.labels.get("container").map(String::as_str) == Some("main")
    };
    let what = format!("cAdvisor series {required:?} of {name} on {node} (running id {cid})");
    let (expo, shape) = wait_until_async(&what, Duration::from_secs(60), || async {
        let e = cadvisor(node).await;
        let shape = shape_of(&e);
        let current = !running_id
            || e.named("container_cpu_usage_seconds_total")
                .filter(main)
                .any(|s| s.labels.get("name") == Some(&cid));
        (current && required.iter().all(|k| shape.contains_key(*k))).then_some((e, shape))
    })
    .await;
    let value = |family: &str| {
        expo.named(family)
            .filter(main)
            .map(|s| s.value)
            .fold(0.0, f64::max)
    };
    let facts = match expo.named("container_cpu_usage_seconds_total").find(main) {
        None => "no series of container main".to_string(),
        Some(cpu) => format!(
            "name is the container ID: {}, id ends with it: {}, image: {}, cpu > 0: {}, working set > 0: {}, started: {}",
            cpu.labels["name"] == cid,
            cpu.labels["id"].ends_with(&cid),
            cpu.labels["image"] == st.image,
            value("container_cpu_usage_seconds_total") > 0.0,
            value("container_memory_working_set_bytes") > 0.0,
            value("container_start_time_seconds") > 1.7e9,
        ),
    };
    (shape, facts)
}

/// What Bosun's cAdvisor series of a pod must have: dashboards read these.
const BOSUN_CADVISOR: &[&str] = &[
    "container_cpu_usage_seconds_total container=main",
    "container_memory_working_set_bytes container=main",
    "container_memory_usage_bytes container=main",
    "container_memory_rss container=main",
    "container_fs_usage_bytes container=main",
    "container_start_time_seconds container=main",
    "container_cpu_usage_seconds_total container=",
    "container_memory_working_set_bytes container=",
    "container_network_receive_bytes_total container=",
    "container_network_transmit_bytes_total container=",
    "container_start_time_seconds container=",
];

/// What the reference kubelet's cAdvisor has of a pod here: its cAdvisor cannot reach the test's
/// private containerd socket, so it labels the pod cgroup alone (through the kubelet).
const KUBELET_CADVISOR: &[&str] = &[
    "container_memory_working_set_bytes container=",
    "container_start_time_seconds container=",
];

/// Runs the pods on a node of `agent` and returns every kubectl outcome, node names masked, and
/// the shape of the restarting pod's cAdvisor series.
async fn observe(agent: Agent) -> (BTreeMap<String, Outcome>, Shape, serde_json::Value) {
    let client = admin_client().await;
    let node = ClusterNode::new(&format!("logs-{}", agent.name()));
    let mut proc = agent.start_ready(&node, &client, 120).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let specs = pods(&node);
    for (_, p) in &specs {
        create(&api, p).await;
    }
    let name = |suffix: &str| format!("{}-{suffix}", node.name);
    let mut seen = BTreeMap::new();
    let mask = |o: Outcome| -> Outcome {
        let m = |s: String| s.replace(&node.name, "<node>");
        (o.0, m(o.1), m(o.2))
    };

    // -f while the container writes: ends by itself once it exits.
    let ticker = name("ticker");
    wait_pod(&api, &ticker, "ticker running", 120, |p| {
        (bosun_tests::pod::phase(p) == "Running").then_some(())
    })
    .await;
    let started = Instant::now();
    let follow = kubectl(&["logs", "-f", &ticker], 60).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{}: -f ended before the container wrote ({:?})",
        agent.name(),
        follow
    );
    seen.insert("ticker -f".into(), mask(follow));
    seen.insert(
        "ticker -f (exited)".into(),
        mask(kubectl(&["logs", "-f", &ticker], 60).await),
    );

    let done = name("done");
    wait_pod(&api, &done, "done Succeeded", 120, |p| {
        (bosun_tests::pod::phase(p) == "Succeeded").then_some(())
    })
    .await;
    for (what, extra) in [
        ("done", vec![]),
        ("done --previous", vec!["--previous"]),
        ("done -c nope", vec!["-c", "nope"]),
    ] {
        let mut args = vec!["logs", done.as_str()];
        args.extend(extra);
        seen.insert(what.into(), mask(kubectl(&args, 30).await));
    }

    let restarts = name("restarts");
    wait_pod(&api, &restarts, "restarts on its second run", 120, |p| {
        let s = bosun_tests::pod::container_status(p, "main")?;
        (s.restart_count >= 1 && bosun_tests::pod::is_running(Some(s))).then_some(())
    })
    .await;
    let required = match agent {
        Agent::Bosun => BOSUN_CADVISOR,
        Agent::Kubelet => KUBELET_CADVISOR,
    };
    let (shape, facts) = cadvisor_of(
        &node.name,
        &api.get(&restarts).await.expect("pod"),
        required,
        agent == Agent::Bosun,
    )
    .await;
    if agent == Agent::Bosun {
        assert_eq!(
            facts,
            "name is the container ID: true, id ends with it: true, image: true, cpu > 0: true, working set > 0: true, started: true"
        );
    }
    let checks: &[(&str, &[&str])] = &[
        ("restarts", &[]),
        ("restarts --previous", &["--previous"]),
        ("restarts --previous --tail=2", &["--previous", "--tail=2"]),
        ("restarts --previous --tail=0", &["--previous", "--tail=0"]),
        (
            "restarts --previous --limit-bytes=8",
            &["--previous", "--limit-bytes=8"],
        ),
        (
            "restarts --previous --since=1h",
            &["--previous", "--since=1h"],
        ),
        (
            "restarts --previous --since-time=2100",
            &["--previous", "--since-time=2100-01-01T00:00:00Z"],
        ),
        ("restarts --timestamps", &["--timestamps"]),
        (
            "restarts --previous --timestamps --tail=1",
            &["--previous", "--timestamps", "--tail=1"],
        ),
        ("restarts --tail=-1", &["--tail=-1"]),
    ];
    for (what, extra) in checks {
        let mut args = vec!["logs", restarts.as_str()];
        args.extend_from_slice(extra);
        let (code, out, err) = kubectl(&args, 30).await;
        let out = if what.contains("--timestamps") {
            mask_timestamps(&out)
        } else {
            out
        };
        seen.insert(what.to_string(), mask((code, out, err)));
    }

    let nopull = name("nopull");
    wait_pod(&api, &nopull, "nopull in image pull back-off", 120, |p| {
        let s = bosun_tests::pod::container_status(p, "main")?;
        let reason = s.state.as_ref()?.waiting.as_ref()?.reason.as_deref()?;
        (reason == "ImagePullBackOff").then_some(())
    })
    .await;
    // The reason flips between ErrImagePull and ImagePullBackOff: ask until the back-off shows.
    let mut last = None;
    for _ in 0..20 {
        let o = kubectl(&["logs", &nopull], 30).await;
        let backoff = o.2.contains("trying and failing to pull image");
        last = Some(o);
        if backoff {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    seen.insert("nopull".into(), mask(last.expect("one try")));

    let configz = {
        let path = format!("/api/v1/nodes/{}/proxy/configz", node.name);
        let (code, out, err) = kubectl(&["get", "--raw", &path], 30).await;
        assert_eq!(code, 0, "{}: {path}: {err}", agent.name());
        let v: serde_json::Value = serde_json::from_str(&out).expect("configz JSON");
        v["kubeletconfig"].clone()
    };

    // enableDebuggingHandlers: false, the agent restarted on the same node, its pods running.
    proc.stop();
    let config = node.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("enableDebuggingHandlers: false\n");
    std::fs::write(&config, text).expect("config");
    let mut proc = agent.start_ready(&node, &client, 120).await;
    // The Node is still Ready from before: wait for the new process's port to answer.
    let healthz = format!("/api/v1/nodes/{}/proxy/healthz", node.name);
    wait_until_async(
        "the restarted agent's port",
        Duration::from_secs(60),
        || async { (kubectl(&["get", "--raw", &healthz], 30).await.0 == 0).then_some(()) },
    )
    .await;
    seen.insert(
        "debugging off: restarts".into(),
        mask(kubectl(&["logs", &restarts], 30).await),
    );
    let configz_path = format!("/api/v1/nodes/{}/proxy/configz", node.name);
    let (code, _, err) = kubectl(&["get", "--raw", &configz_path], 30).await;
    seen.insert(
        "debugging off: configz".into(),
        mask((code, String::new(), err)),
    );

    let names: Vec<String> = specs
        .iter()
        .filter_map(|(_, p)| p.metadata.name.clone())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    delete_and_wait_gone(&api, &names, 120).await;
    proc.stop();
    (seen, shape, configz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_as_on_the_kubelet() {
    let ((bosun, bosun_shape, bosun_configz), (kubelet, kubelet_shape, kubelet_configz)) =
        tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    // /configz: the same effective configuration, node-specific values aside.
    let node_specific = [
        "cgroupRoot",
        "containerRuntimeEndpoint",
        "podLogsDir",
        "port",
        "resolvConf",
        "staticPodPath",
        "tlsCertFile",
        "tlsPrivateKeyFile",
    ];
    let mut configz = [bosun_configz, kubelet_configz];
    for c in &mut configz {
        let m = c.as_object_mut().expect("configz object");
        for key in node_specific {
            let v = m.remove(key);
            assert!(v.is_some_and(|v| v != json!("")), "configz {key}");
        }
    }
    assert_eq!(
        configz[0], configz[1],
        "configz differs\nbosun: {:#}\nkubelet: {:#}",
        configz[0], configz[1]
    );
    eprintln!("bosun: {bosun:#?}\nkubelet: {kubelet:#?}");
    eprintln!("cAdvisor series, bosun: {bosun_shape:#?}\nkubelet: {kubelet_shape:#?}");
    // The pod's series both serve carry the same labels (the kubelet's container series have no
    // pod labels here: see KUBELET_CADVISOR).
    let mut common = 0;
    for (family, labels) in &bosun_shape {
        if let Some(theirs) = kubelet_shape.get(family) {
            assert_eq!(labels, theirs, "cAdvisor {family}");
            common += 1;
        }
    }
    assert!(
        common >= KUBELET_CADVISOR.len(),
        "too few cAdvisor series in common"
    );
    let ok = |out: &str| (0, out.to_string(), String::new());
    let err = |msg: &str| {
        (
            1,
            String::new(),
            format!("Error from server (BadRequest): {msg}\n"),
        )
    };
    let want: BTreeMap<&str, Outcome> = BTreeMap::from([
        ("ticker -f", ok("tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n")),
        (
            "ticker -f (exited)",
            ok("tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n"),
        ),
        ("done", ok("hello\nworld\n")),
        (
            "done --previous",
            err(r#"previous terminated container "main" in pod "<node>-done" not found"#),
        ),
        ("restarts", ok("second run\n")),
        ("restarts --previous", ok("out 1\nerr 1\nout 2\nout 3\n")),
        ("restarts --previous --tail=2", ok("out 2\nout 3\n")),
        ("restarts --previous --tail=0", ok("")),
        ("restarts --previous --limit-bytes=8", ok("out 1\ner")),
        (
            "restarts --previous --since=1h",
            ok("out 1\nerr 1\nout 2\nout 3\n"),
        ),
        ("restarts --previous --since-time=2100", ok("")),
        ("restarts --timestamps", ok("<ts> second run\n")),
        (
            "restarts --previous --timestamps --tail=1",
            ok("<ts> out 3\n"),
        ),
        ("restarts --tail=-1", ok("second run\n")),
        (
            "debugging off: restarts",
            (
                1,
                String::new(),
                "Error from server (MethodNotAllowed): the server does not allow this method on the requested resource ( pods/log <node>-restarts)\n".into(),
            ),
        ),
        (
            "debugging off: configz",
            (
                1,
                String::new(),
                "Error from server (NotFound): the server could not find the requested resource\n".into(),
            ),
        ),
        (
            "nopull",
            err(
                r#"container "main" in pod "<node>-nopull" is waiting to start: trying and failing to pull image"#,
            ),
        ),
    ]);
    for (agent, seen) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        for (what, want) in &want {
            assert_eq!(seen.get(*what), Some(want), "{agent}: {what}");
        }
        // kubectl's own message for an unknown container (the API server answers it).
        assert_eq!(seen["done -c nope"].0, 1, "{agent}");
    }
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}

/// VmRSS of a process, bytes.
fn rss(pid: u32) -> u64 {
    bosun_tests::bench::procfs::rss_kib(pid) * 1024
}

/// Lines of the 100 MiB log: `<8-digit sequence number> <1000 x>`.
const LINES: u64 = 100_000;
const PAD: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_log_followed_while_written_hostile_paths_and_configz() {
    use tokio::io::AsyncBufReadExt;
    let client = admin_client().await;
    let node = ClusterNode::new("logs-big");
    let mut proc = Agent::Bosun.start_ready(&node, &client, 120).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("{}-big", node.name);
    // Says it is ready, waits (bounded) for the test's go (once the follower has read that),
    // then writes 100 MiB as fast as the shell can.
    let go = tempfile::tempdir().expect("tempdir");
    let script = format!(
        "pad=$(head -c {PAD} /dev/zero | tr '\\0' x); echo ready; \
         for i in $(seq 600); do [ -f /go/go ] && break; sleep 0.1; done; \
         i=0; while [ $i -lt {LINES} ]; do printf '%08d %s\\n' $i $pad; i=$((i+1)); done"
    );
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Never")
        .host_dir("go", go.path())
        .container(Container::sh("main", &script).mount("go", "/go"))
        .build();
    create(&api, &pod).await;
    bosun_tests::pod::running_uid(&api, &name, 120).await;
    let env = Env::cluster();
    let mut follower = tokio::process::Command::new(env.var("KUBECTL"))
        .args(["logs", "-f", &name])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl logs -f");
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert_eq!(
        first.ok().and_then(Result::ok).flatten().as_deref(),
        Some("ready")
    );
    // The follower is attached and at the end of the log: let the writer go.
    std::fs::write(go.path().join("go"), "").expect("go");
    let pad = "x".repeat(PAD);
    let started = Instant::now();
    let base_rss = rss(proc.pid());
    let mut max_rss = base_rss;
    let mut n = 0u64;
    let deadline = Duration::from_secs(600);
    while let Some(line) = tokio::time::timeout(deadline, lines.next_line())
        .await
        .expect("follow stalled")
        .expect("read kubectl's output")
    {
        let want = format!("{n:08} {pad}");
        assert!(
            line == want,
            "line {n}: got {:?}",
            &line[..line.len().min(40)]
        );
        n += 1;
        if n.is_multiple_of(5000) {
            max_rss = max_rss.max(rss(proc.pid()));
        }
    }
    let took = started.elapsed();
    let status = follower.wait().await.expect("kubectl exit");
    assert!(status.success(), "kubectl logs -f: {status}");
    assert_eq!(n, LINES, "every line, once, in order");
    let mib = (LINES * (PAD as u64 + 10)) as f64 / (1 << 20) as f64;
    eprintln!(
        "followed {mib:.0} MiB in {took:?} ({:.1} MiB/s); bosun RSS {} MiB before, {} MiB at most",
        mib / took.as_secs_f64(),
        base_rss >> 20,
        max_rss >> 20
    );
    // Streamed, not buffered: the agent grows by far less than the log.
    assert!(
        max_rss - base_rss < 32 << 20,
        "bosun's RSS grew from {} to {} MiB",
        base_rss >> 20,
        max_rss >> 20
    );

    // Hostile paths on the node port: names never become paths.
    let (addr, crt) = node.serving_endpoint();
    let certs = tempfile::tempdir().unwrap();
    let (admin_crt, admin_key) =
        mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let admin = KubeletClient::new(addr, &crt, Some((&admin_crt, &admin_key)));
    let ok = admin
        .get(&format!("/containerLogs/default/{name}/main?tailLines=1"))
        .await
        .expect("GET");
    assert_eq!(
        (ok.status, ok.text()),
        (200, format!("{:08} {pad}\n", LINES - 1))
    );
    for path in [
        format!("/containerLogs/default/{name}/.."),
        format!("/containerLogs/default/{name}/%2e%2e"),
        format!("/containerLogs/default/{name}/..%2f..%2f..%2f..%2fetc%2fpasswd"),
        format!("/containerLogs/default/{name}/%2Fetc%2Fpasswd"),
        format!("/containerLogs/default/{name}/main%2f0.log"),
        "/containerLogs/default/..%2f..%2fetc/passwd".to_string(),
        "/containerLogs/%2e%2e/%2e%2e/etc%2fpasswd".to_string(),
        "/containerLogs/../../../etc/passwd".to_string(),
        format!("/containerLogs/default/{name}/main/../../../../etc/passwd"),
        "/logs/../../etc/passwd".to_string(),
        "/logs/%2e%2e/%2e%2e/etc/passwd".to_string(),
    ] {
        let a = admin.get(&path).await.expect("GET");
        assert!(
            a.status == 404 && !a.text().contains("root:"),
            "{path}: {} {}",
            a.status,
            a.text()
        );
    }

    // /configz through the API server's node proxy.
    let (code, out, err) = kubectl(
        &[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{}/proxy/configz", node.name),
        ],
        30,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let configz: serde_json::Value = serde_json::from_str(&out).expect("configz JSON");
    let k = &configz["kubeletconfig"];
    assert_eq!(k["kind"], "KubeletConfiguration");
    assert_eq!(k["apiVersion"], "kubelet.config.k8s.io/v1beta1");
    assert_eq!(k["port"], json!(node.server_port()));
    assert_eq!(
        k["podLogsDir"],
        json!(node.path().join("pods").display().to_string())
    );
    assert_eq!(k["enableDebuggingHandlers"], json!(true));
    assert_eq!(k["cgroupDriver"], "cgroupfs");
    delete_and_wait_gone(&api, &[name.as_str()], 120).await;
    proc.stop();
}
