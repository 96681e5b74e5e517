//! Host namespaces end to end: hostNetwork (with both DNS policies a host-network pod may have),
//! hostPID and hostIPC, shareProcessNamespace and a hostPort, each checked from inside the
//! container (its hostname, namespaces, interfaces, processes, /etc/hosts, resolv.conf) and from
//! the node (status IPs, the port answering on the node's address, a second pod wanting the same
//! hostPort rejected with NodePorts). The same pods run on a Bosun
//! node and on an upstream kubelet node in the same run, and both must show the same facts.

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_tests::pod::{container_output, create};
use bosun_tests::{Agent, ClusterNode, Container, Env, PodBuilder, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde_json::json;

/// What every test container prints first: its view of the machine, one `key=value` per line,
/// then /etc/hosts and /etc/resolv.conf with a prefix per line (`$$$$` is the shell's `$$` once
/// the agent has expanded the command's `$$` escapes).
const FACTS: &str = r#"
echo "hostname=$(hostname)"
for ns in net uts pid ipc; do echo "$ns=$(readlink /proc/self/ns/$ns)"; done
if ip -o -4 addr show | grep -q " $NODE_IP/"; then echo node_ip_iface=yes; else echo node_ip_iface=no; fi
echo "pod_ip=$POD_IP"
if [ $$$$ = 1 ]; then echo self_pid1=yes; else echo self_pid1=no; fi
echo "test_proc=$(cat /proc/$TEST_PID/comm 2>/dev/null)"
sed 's/^/hosts:/' /etc/hosts
sed 's/^/resolv:/' /etc/resolv.conf
mkdir -p /tmp/www && echo "served by $(hostname)" > /tmp/www/index.html
"#;

/// Facts of one agent's run, with node-specific values (node name, IPs, namespace inodes, ports)
/// replaced by placeholders so that two nodes can be compared.
type Facts = BTreeMap<String, String>;

/// The host's view, against which the containers' views are normalized.
struct Host {
    hostname: String,
    namespaces: BTreeMap<String, String>,
    comm: String,
    etc_hosts: String,
}

impl Host {
    fn read() -> Host {
        let namespaces = ["net", "uts", "pid", "ipc"]
            .iter()
            .map(|ns| {
                let link = std::fs::read_link(format!("/proc/self/ns/{ns}"))
                    .expect("read own namespace link");
                (ns.to_string(), link.display().to_string())
            })
            .collect();
        Host {
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .expect("hostname")
                .trim()
                .to_string(),
            namespaces,
            comm: std::fs::read_to_string("/proc/self/comm")
                .expect("comm")
                .trim()
                .to_string(),
            etc_hosts: std::fs::read_to_string("/etc/hosts").expect("/etc/hosts"),
        }
    }
}

/// A container printing [`FACTS`] and then running `then`.
fn facts_container(name: &str, then: &str) -> Container {
    let env = Env::cluster();
    Container::sh(name, &format!("{FACTS}\n{then}")).with(
        "env",
        json!([
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE_IP", "value": env.var("NODE_IP")},
            {"name": "TEST_PID", "value": std::process::id().to_string()},
        ]),
    )
}

/// The ports this node's pods listen on: (host-network httpd, hostPort), unique per node.
fn ports(node: &ClusterNode) -> (u16, u16) {
    (21000 + node.ctd.slot as u16, 22000 + node.ctd.slot as u16)
}

fn pods(node: &ClusterNode) -> Vec<Pod> {
    let (net_port, host_port) = ports(node);
    let p = |suffix: &str| PodBuilder::new(&format!("{}-{suffix}", node.name)).node(&node.name);
    vec![
        // A CNI agent's shape: host network, cluster DNS, an httpd on a host port.
        p("hostnet")
            .spec("hostNetwork", json!(true))
            .spec("dnsPolicy", json!("ClusterFirstWithHostNet"))
            .spec(
                "hostAliases",
                json!([{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]),
            )
            .container(
                facts_container(
                    "main",
                    &format!("echo END; exec httpd -f -p {net_port} -h /tmp/www"),
                )
                .with(
                    "ports",
                    json!([{"name": "http", "containerPort": net_port}]),
                ),
            )
            .build(),
        // kube-proxy's shape: host network with the default policy (the node's resolver).
        p("hostdns")
            .spec("hostNetwork", json!(true))
            .container(facts_container("main", "echo END; exec sleep 3600"))
            .build(),
        p("hostpid")
            .spec("hostPID", json!(true))
            .spec("hostIPC", json!(true))
            .container(facts_container("main", "echo END; exec sleep 3600"))
            .build(),
        // The second container waits (bounded) for the first one's process to show.
        p("shared")
            .spec("shareProcessNamespace", json!(true))
            .container(Container::exec("a", &["sleep", "3601"]))
            .container(facts_container(
                "b",
                "seen=no; for i in $(seq 120); do \
                 if ps -o args | grep -q '^sleep 3601'; then seen=yes; break; fi; sleep 0.5; done; \
                 echo \"sees_a=$seen\"; echo END; exec sleep 3600",
            ))
            .build(),
        p("hostport")
            .container(
                facts_container("main", "echo END; exec httpd -f -p 80 -h /tmp/www").with(
                    "ports",
                    json!([{"containerPort": 80, "hostPort": host_port}]),
                ),
            )
            .build(),
    ]
}

/// GET http://ip:port/ (HTTP/1.0), retried until it answers or `secs` pass; returns the body.
async fn http_get(ip: &str, port: u16, secs: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let what = format!("http://{ip}:{port}/ to answer");
    wait_until_async(&what, Duration::from_secs(secs), || async {
        let conn = tokio::net::TcpStream::connect((ip, port));
        let mut s = tokio::time::timeout(Duration::from_secs(2), conn)
            .await
            .ok()?
            .ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.").then(|| body.trim().to_string())
    })
    .await
}

/// Runs the pods on a node of `agent` and returns what was seen, normalized.
async fn observe(agent: Agent, host: &Host) -> Facts {
    let env = Env::cluster();
    let node_ip = env.var("NODE_IP").to_string();
    let client = admin_client().await;
    let node = ClusterNode::new(&format!("hostns-{}", agent.name()));
    let mut proc = agent.start_ready(&node, &client, 120).await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let specs = pods(&node);
    for p in &specs {
        create(&api, p).await;
    }
    let subnet_prefix = node
        .ctd
        .subnet
        .rsplit_once('.')
        .map(|(a, _)| format!("{a}."))
        .unwrap_or_default();
    let norm_ip = |ip: &str| -> String {
        if ip == node_ip {
            "<node ip>".into()
        } else if ip.starts_with(&subnet_prefix) {
            "<pod ip>".into()
        } else {
            ip.to_string()
        }
    };
    let mut facts = Facts::new();
    for spec in &specs {
        let name = spec.metadata.name.clone().unwrap_or_default();
        let short = name.rsplit('-').next().unwrap_or_default().to_string();
        let last = spec
            .spec
            .as_ref()
            .unwrap()
            .containers
            .last()
            .unwrap()
            .name
            .clone();
        let what = format!("{name} ({}) to print its facts", agent.name());
        let (pod, out) = wait_until_async(&what, Duration::from_secs(180), || async {
            let pod = api.get_opt(&name).await.ok()??;
            let uid = pod.metadata.uid.clone()?;
            let out = container_output(&node.path().join("pods"), "default", &name, &uid, &last);
            // Printed, and the agent has reported the pod Running and Ready (its IPs with it).
            let ready = pod.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            (ready && out.lines().any(|l| l == "END")).then_some((pod, out))
        })
        .await;
        let st = pod.status.clone().unwrap_or_default();
        let mut put = |k: &str, v: String| {
            facts.insert(format!("{short}.{k}"), v);
        };
        put(
            "status.podIP",
            norm_ip(st.pod_ip.as_deref().unwrap_or_default()),
        );
        put(
            "status.podIPs",
            st.pod_ips
                .iter()
                .flatten()
                .map(|i| norm_ip(&i.ip))
                .collect::<Vec<_>>()
                .join(","),
        );
        put(
            "status.hostIP",
            norm_ip(st.host_ip.as_deref().unwrap_or_default()),
        );
        let ports = pod.spec.as_ref().unwrap().containers[0]
            .ports
            .clone()
            .unwrap_or_default();
        put(
            "spec.hostPortIsContainerPort",
            ports
                .iter()
                .map(|p| (p.host_port == Some(p.container_port)).to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        let pod_ip = st.pod_ip.clone().unwrap_or_default();
        let norm = |v: &str| -> String {
            let mut v = v.replace(&node.name, "<node>");
            if !pod_ip.is_empty() && pod_ip != node_ip {
                v = v.replace(&pod_ip, "<pod ip>");
            }
            v.replace(&node_ip, "<node ip>")
        };
        let (mut hosts, mut resolv) = (String::new(), String::new());
        for line in out.lines() {
            if let Some(l) = line.strip_prefix("hosts:") {
                hosts.push_str(l);
                hosts.push('\n');
            } else if let Some(l) = line.strip_prefix("resolv:") {
                resolv.push_str(l);
                resolv.push('\n');
            } else if let Some((k, v)) = line.split_once('=') {
                let v = match k {
                    "net" | "uts" | "pid" | "ipc"
                        if host.namespaces.get(k).is_some_and(|h| h == v) =>
                    {
                        "host".to_string()
                    }
                    "net" | "uts" | "pid" | "ipc" => "own".to_string(),
                    "hostname" if v == host.hostname => "<host>".to_string(),
                    "test_proc" if v == host.comm => "<test process>".to_string(),
                    _ => norm(v),
                };
                put(k, v);
            }
        }
        put("/etc/hosts", norm(&hosts));
        put("/etc/resolv.conf", norm(&resolv));
    }
    let (net_port, host_port) = ports(&node);
    // A second pod asking for the hostPort the running one holds is rejected at admission.
    let clash = format!("{}-clash", node.name);
    create(
        &api,
        &PodBuilder::new(&clash)
            .node(&node.name)
            .container(Container::exec("main", &["sleep", "3600"]).with(
                "ports",
                json!([{"containerPort": 80, "hostPort": host_port}]),
            ))
            .build(),
    )
    .await;
    let what = format!("{clash} rejected by {}", agent.name());
    let (reason, message) = wait_until_async(&what, Duration::from_secs(60), || async {
        let st = api.get_opt(&clash).await.ok()??.status?;
        (st.phase.as_deref() == Some("Failed")).then_some((st.reason, st.message))
    })
    .await;
    facts.insert("clash.status.reason".into(), reason.unwrap_or_default());
    facts.insert("clash.status.message".into(), message.unwrap_or_default());
    let served = http_get(&node_ip, net_port, 60).await;
    facts.insert(
        "hostnet.node GET hostNetwork port".into(),
        served.replace(&host.hostname, "<host>"),
    );
    let served = http_get(&node_ip, host_port, 60).await;
    facts.insert(
        "hostport.node GET hostPort".into(),
        served.replace(&node.name, "<node>"),
    );
    let names: Vec<String> = specs
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .chain([clash])
        .collect();
    bosun_tests::pod::delete_and_wait_gone(&api, &names, 120).await;
    proc.stop();
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_namespaces_as_on_the_kubelet() {
    let host = Host::read();
    let (bosun, kubelet) =
        tokio::join!(observe(Agent::Bosun, &host), observe(Agent::Kubelet, &host));
    eprintln!("bosun: {bosun:#?}\nkubelet: {kubelet:#?}");
    for (agent, f) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("<missing>");
        let expect = |k: &str, want: &str| {
            assert_eq!(get(k), want, "{agent}: {k}\nall facts: {f:#?}");
        };
        // hostNetwork: the node's network and UTS namespaces, hostname and addresses.
        for pod in ["hostnet", "hostdns"] {
            expect(&format!("{pod}.net"), "host");
            expect(&format!("{pod}.uts"), "host");
            expect(&format!("{pod}.hostname"), "<host>");
            expect(&format!("{pod}.node_ip_iface"), "yes");
            expect(&format!("{pod}.pod_ip"), "<node ip>");
            expect(&format!("{pod}.status.podIP"), "<node ip>");
            expect(&format!("{pod}.status.podIPs"), "<node ip>");
            expect(&format!("{pod}.pid"), "own");
            expect(&format!("{pod}.self_pid1"), "yes");
        }
        expect("hostnet.spec.hostPortIsContainerPort", "true");
        expect("hostnet.node GET hostNetwork port", "served by <host>");
        // The node's hosts file under the kubelet's header, plus the pod's host aliases.
        expect(
            "hostnet./etc/hosts",
            &format!(
                "# Kubernetes-managed hosts file (host network).\n{}\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n",
                host.etc_hosts
            ),
        );
        expect(
            "hostdns./etc/hosts",
            &format!(
                "# Kubernetes-managed hosts file (host network).\n{}",
                host.etc_hosts
            ),
        );
        // ClusterFirstWithHostNet: cluster DNS; ClusterFirst on the host network: the node's.
        let resolv = get("hostnet./etc/resolv.conf");
        assert!(
            resolv.contains("nameserver 10.96.0.10")
                && resolv
                    .contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
            "{agent}: {resolv}"
        );
        expect("hostdns./etc/resolv.conf", "nameserver 127.0.0.1\n");
        // hostPID and hostIPC: the node's processes and IPC namespace, a pod network.
        expect("hostpid.pid", "host");
        expect("hostpid.ipc", "host");
        expect("hostpid.net", "own");
        expect("hostpid.test_proc", "<test process>");
        expect("hostpid.self_pid1", "no");
        expect("hostpid.status.podIP", "<pod ip>");
        // shareProcessNamespace: the sandbox's process is PID 1 and the other container shows.
        expect("shared.pid", "own");
        expect("shared.ipc", "own");
        expect("shared.self_pid1", "no");
        expect("shared.sees_a", "yes");
        expect("shared.test_proc", "");
        // A hostPort on a pod network answers on the node's address.
        expect("hostport.net", "own");
        expect("hostport.self_pid1", "yes");
        expect("hostport.hostname", "<node>-hostport");
        expect("hostport.node GET hostPort", "served by <node>-hostport");
        expect("hostport.status.podIP", "<pod ip>");
        expect("hostport.status.hostIP", "<node ip>");
        expect("clash.status.reason", "NodePorts");
        expect(
            "clash.status.message",
            "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports",
        );
        expect(
            "hostport./etc/hosts",
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n<pod ip>\t<node>-hostport\n",
        );
    }
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}
