//! `kubectl exec`, `attach`, `cp` and `port-forward` against a bosun node, through the real API
//! server with the real kubectl (the API server speaks SPDY to the node; bosun proxies it to
//! containerd's streaming server), and `/run` on the node port, with the kubelet's answers for
//! pods and containers that do not exist. Every check runs on a Bosun node and on an upstream
//! kubelet node side by side: both must pass the same assertions.

use std::process::Stdio;
use std::time::Duration;

use bosun_tests::pod::{Container, PodBuilder, condition_status, create, wait_pod};
use bosun_tests::{
    Agent, AgentProcess, ClusterNode, Env, KubeletClient, admin_client, mint_client_cert,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// What a kubectl run printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// kubectl as the cluster admin.
fn kubectl_cmd(args: &[&str]) -> Command {
    let env = Env::cluster();
    let mut c = Command::new(env.var("KUBECTL"));
    c.args(args)
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .kill_on_drop(true);
    c
}

/// Runs `cmd` with `stdin` written to it (then closed), within 60 s.
async fn run(mut cmd: Command, stdin: &[u8]) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("command did not finish within 60 s")
        .expect("wait");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn kubectl(args: &[&str], stdin: &[u8]) -> Run {
    run(kubectl_cmd(args), stdin).await
}

/// A pod with a web server (`web`, busybox httpd on 8080) and a line echoer reading its stdin
/// (`echo`, `stdin: true`), Running and Ready on `node`.
async fn streaming_pod(node: &ClusterNode, api: &Api<Pod>, name: &str) -> Pod {
    let spec = PodBuilder::new(name)
        .node(&node.name)
        .restart_policy("Always")
        .grace(1)
        .container(Container::sh(
            "web",
            "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ))
        .container(
            Container::sh("echo", "while read l; do echo \"got $l\"; done")
                .with("stdin", json!(true)),
        )
        .build();
    create(api, &spec).await;
    wait_pod(api, name, "pod Running and Ready", 90, |p| {
        (condition_status(p, "Ready") == Some("True")).then(|| p.clone())
    })
    .await
}

/// A node of `agent` named `<prefix>-<agent>`, Ready.
async fn node_of(agent: Agent, prefix: &str) -> (ClusterNode, AgentProcess) {
    let node = ClusterNode::new(&format!("{prefix}-{}", agent.name()));
    let proc = agent.start_ready(&node, &admin_client().await, 120).await;
    (node, proc)
}

/// The agent is still running at the end of a test.
fn still_running(agent: Agent, proc: &mut AgentProcess) {
    if let Some(status) = proc.exited() {
        let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
        panic!("{} exited ({status}): {log}", agent.name());
    }
}

#[tokio::test]
async fn exec_attach_cp_and_run_work_as_on_a_kubelet_node() {
    tokio::join!(
        exec_attach_cp_run(Agent::Bosun),
        exec_attach_cp_run(Agent::Kubelet)
    );
}

async fn exec_attach_cp_run(agent: Agent) {
    let (node, mut proc) = node_of(agent, "stream").await;
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-pod", node.name);
    streaming_pod(&node, &api, &name).await;

    // exec: stdout and stderr apart, the exit code back to kubectl.
    let r = kubectl(
        &[
            "exec",
            &name,
            "-c",
            "web",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 7",
        ],
        b"",
    )
    .await;
    assert_eq!(r.stdout, "to-out\n", "stderr: {}", r.stderr);
    assert!(r.stderr.contains("to-err"), "{}", r.stderr);
    assert_eq!(
        r.code,
        Some(7),
        "kubectl exec exits with the command's code"
    );

    // exec -i: stdin reaches the process, its end ends the process.
    let r = kubectl(
        &["exec", "-i", &name, "-c", "web", "--", "wc", "-c"],
        &[b'x'; 100_000],
    )
    .await;
    assert_eq!(r.stdout.trim(), "100000", "stderr: {}", r.stderr);
    assert_eq!(r.code, Some(0));

    // exec -it under a pseudo-terminal: the process gets a TTY, and a resize of the terminal
    // reaches it (kubectl sends each SIGWINCH's size on the resize stream; the terminal is
    // resized every second, as the size sent before containerd has started the process can be
    // lost, on a kubelet node too).
    let env = Env::cluster();
    let wait_size = "tty; for i in $(seq 150); do s=$(stty size 2>/dev/null); \
                     case \"$s\" in \"40 \"*) echo \"size $s\"; exit 0;; esac; sleep 0.1; done; exit 1";
    let line = format!(
        "stty rows 33 cols 77; (for i in $(seq 14); do sleep 1; stty rows 40 cols $((80 + i)) < /dev/tty; done) & \
         {} exec -it {name} -c web -- sh -c '{wait_size}'",
        env.var("KUBECTL")
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &line, "/dev/null"])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .kill_on_drop(true);
    let r = run(script, b"").await;
    assert!(
        r.stdout.contains("/dev/pts/"),
        "{} / {}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stdout.contains("size 40 8"),
        "{} / {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.code, Some(0), "{} / {}", r.stdout, r.stderr);

    // attach -i: lines go to the container's stdin, its answers come back.
    let mut attach = kubectl_cmd(&["attach", "-i", &name, "-c", "echo", "-q"]);
    attach
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = attach.spawn().expect("kubectl attach");
    let mut input = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The attach may take a moment to be wired: say hello until it answers.
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            input.write_all(b"hello\n").await.expect("write");
            if let Ok(Ok(Some(l))) =
                tokio::time::timeout(Duration::from_secs(2), lines.next_line()).await
            {
                return l;
            }
        }
    })
    .await
    .expect("attach: no answer from the container within 30 s");
    assert_eq!(got, "got hello");
    drop(input);
    let _ = child.kill().await;

    // cp both ways (tar through exec).
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let r = kubectl(
        &[
            "cp",
            "-c",
            "web",
            &local.display().to_string(),
            &format!("{name}:/tmp/up.bin"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.code, Some(0), "cp to the pod: {}", r.stderr);
    let back = dir.path().join("down.bin");
    let r = kubectl(
        &[
            "cp",
            "-c",
            "web",
            &format!("{name}:/tmp/up.bin"),
            &back.display().to_string(),
        ],
        b"",
    )
    .await;
    assert_eq!(r.code, Some(0), "cp from the pod: {}", r.stderr);
    assert_eq!(
        std::fs::read(&back).unwrap(),
        data,
        "the file came back intact"
    );

    // The node port itself: /run, and the kubelet's answers for what does not exist.
    let (addr, crt) = node.serving_endpoint();
    let certs = tempfile::tempdir().unwrap();
    let (admin_crt, admin_key) =
        mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
    let admin =
        KubeletClient::new(addr, &crt, Some((&admin_crt, &admin_key))).with_server_name(&node.name);
    let a = admin
        .post(&format!(
            "/run/default/{name}/web?cmd=cat%20/www/index.html"
        ))
        .await
        .expect("run");
    assert_eq!((a.status, a.text().as_str()), (200, "hello-from-pod\n"));
    let a = admin
        .post(&format!("/run/default/{name}/web?cmd=ls%20/nonexistent"))
        .await
        .expect("run");
    assert_eq!(a.status, 500, "{}", a.text());
    assert!(
        a.text()
            .starts_with("command 'ls /nonexistent' exited with 1: "),
        "{}",
        a.text()
    );
    let a = admin
        .get(&format!("/run/default/{name}/web?cmd=true"))
        .await
        .unwrap();
    assert_eq!(a.status, 405, "/run is POST only: {}", a.text());
    let a = admin
        .get("/exec/default/no-such-pod/web?command=true&output=1")
        .await
        .unwrap();
    assert_eq!((a.status, a.text().as_str()), (404, "pod does not exist"));
    let a = admin
        .get(&format!("/exec/default/{name}/nope?command=true&output=1"))
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.text().as_str()),
        (500, "container not found (\"nope\")")
    );
    let a = admin
        .get(&format!("/exec/default/{name}/web?command=true"))
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.text().as_str()),
        (400, "you must specify at least 1 of stdin, stdout, stderr")
    );
    let a = admin
        .get(&format!("/attach/default/{name}/nope?output=1"))
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.text()),
        (
            500,
            format!("container nope not found in pod {name}_default")
        )
    );
    // Without credentials: 401; without nodes/proxy rights: 403 naming it.
    let anonymous = KubeletClient::new(addr, &crt, None).with_server_name(&node.name);
    let a = anonymous
        .get(&format!("/exec/default/{name}/web?command=true&output=1"))
        .await
        .unwrap();
    assert_eq!(a.status, 401);
    let (nobody_crt, nobody_key) = mint_client_cert(certs.path(), "bosun-test-nobody", &[]);
    let nobody = KubeletClient::new(addr, &crt, Some((&nobody_crt, &nobody_key)))
        .with_server_name(&node.name);
    let a = nobody
        .post(&format!("/run/default/{name}/web?cmd=true"))
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.text().as_str()),
        (
            403,
            "Forbidden (user=bosun-test-nobody, verb=create, resource=nodes, subresource(s)=[proxy])\n"
        )
    );
    still_running(agent, &mut proc);
}

#[tokio::test]
async fn port_forward_carries_http_over_concurrent_connections() {
    tokio::join!(port_forward(Agent::Bosun), port_forward(Agent::Kubelet));
}

async fn port_forward(agent: Agent) {
    let (node, mut proc) = node_of(agent, "portfwd").await;
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-pod", node.name);
    streaming_pod(&node, &api, &name).await;

    let mut pf = kubectl_cmd(&["port-forward", &format!("pod/{name}"), ":8080"]);
    pf.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = pf.spawn().expect("kubectl port-forward");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port: u16 = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let l = out
                .next_line()
                .await
                .expect("read")
                .expect("port-forward ended");
            if let Some(rest) = l.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        }
    })
    .await
    .expect("port-forward did not start within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });

    // Ten HTTP exchanges at once, each on its own connection through the tunnel.
    let gets = (0..10).map(|i| async move {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let req = format!("GET /index.html?n={i} HTTP/1.0\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    });
    let answers = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(gets))
        .await
        .expect("HTTP through port-forward within 60 s");
    for a in answers {
        assert!(a.starts_with("HTTP/1.1 200 OK"), "{a}");
        assert!(a.ends_with("hello-from-pod\n"), "{a}");
    }
    let _ = child.kill().await;
    still_running(agent, &mut proc);
}

#[tokio::test]
async fn kubectl_debug_starts_an_ephemeral_container_sharing_the_targets_processes() {
    tokio::join!(debug(Agent::Bosun), debug(Agent::Kubelet));
}

async fn debug(agent: Agent) {
    let (node, mut proc) = node_of(agent, "debug").await;
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-pod", node.name);
    streaming_pod(&node, &api, &name).await;
    let image = Env::runtime().busybox_image();

    // kubectl debug -i: the ephemeral container starts in the web container's process
    // namespace (it sees httpd), and kubectl attaches to its stdin and output (stdin stays open
    // until the container ends, as a user's terminal would).
    let mut debug = kubectl_cmd(&[
        "debug",
        "-i",
        "-q",
        &name,
        &format!("--image={image}"),
        "--target=web",
        "-c",
        "dbg",
        "--",
        "sh",
        "-c",
        // The second's pause: containerd's attach can close on the container's exit before its
        // last output is copied (seen once in CI: "httpd" in the container's log, not in
        // kubectl's output); the exit waits for the output to be read, on both agents.
        "read l; echo \"got $l\"; ps -o comm | grep -x httpd; s=$?; sleep 1; exit $s",
    ]);
    debug
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = debug.spawn().expect("kubectl debug");
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"hello\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl debug did not end within 60 s")
        .unwrap();
    drop(input);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout, "got hello\nhttpd\n", "stderr: {stderr}");

    // Its status: terminated with its exit code, never ready, never restarted; the pod's own
    // containers untouched and the pod still Ready.
    let p = wait_pod(&api, &name, "ephemeral container terminated", 60, |p| {
        let s = p.status.as_ref()?.ephemeral_container_statuses.as_ref()?;
        let st = s.iter().find(|c| c.name == "dbg")?;
        st.state.as_ref()?.terminated.as_ref()?;
        Some(st.clone())
    })
    .await;
    let t = p.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(t.exit_code, 0, "{p:?}");
    assert!(!p.ready && p.restart_count == 0, "{p:?}");
    assert!(
        p.container_id
            .as_deref()
            .unwrap_or("")
            .starts_with("containerd://"),
        "{p:?}"
    );
    let pod = api.get(&name).await.unwrap();
    assert_eq!(condition_status(&pod, "Ready"), Some("True"));
    // Never started again, whatever later syncs see.
    let r = kubectl(&["exec", &name, "-c", "web", "--", "true"], b"").await;
    assert_eq!(r.code, Some(0));
    let pod = api.get(&name).await.unwrap();
    let again = pod
        .status
        .as_ref()
        .unwrap()
        .ephemeral_container_statuses
        .as_ref()
        .unwrap();
    assert_eq!(again[0].container_id, p.container_id);

    still_running(agent, &mut proc);
}
