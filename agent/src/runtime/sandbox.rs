//! Pod spec -> CRI PodSandboxConfig, with the kubelet's conventions for metadata, hostname, log
//! directory, DNS, host ports, namespaces and cgroup parent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bosun_cri::types::{
    DnsConfig, Int64Value, LinuxContainerResources, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PortMapping, Protocol, SeLinuxOption, SecurityProfile,
    SupplementalGroupsPolicy, security_profile::ProfileType,
};
use k8s_openapi::api::core::v1::Pod;

use super::hostname::{HostnameError, PodHostname};
use super::labels;
use crate::cgroup::resources::{QUOTA_PERIOD_US, milli_cpu_to_quota, milli_cpu_to_shares};
use crate::resource::{QosClass, parse_quantity, pod_limit, pod_request, qos_class};

/// Where a node keeps pod files, and how it names cgroups and DNS.
#[derive(Debug, Clone)]
pub struct PodDirs {
    /// The kubelet root dir (`/var/lib/kubelet`): pods/<uid>/volumes live there.
    pub root_dir: PathBuf,
    /// Pod log directories go here (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// Symlinks `<pod>_<ns>_<container>-<id>.log` go here (`/var/log/containers`).
    pub container_logs_link_dir: PathBuf,
    /// Cluster DNS servers (`clusterDNS`).
    pub cluster_dns: Vec<String>,
    /// Cluster domain (`clusterDomain`).
    pub cluster_domain: String,
    /// The resolv.conf whose servers and searches `dnsPolicy: Default` pods get.
    pub resolv_conf: PathBuf,
    /// Cgroup names (driver, cgroupRoot, cgroupsPerQOS): where pod sandboxes go.
    pub cgroups: crate::cgroup::Hierarchy,
}

impl PodDirs {
    /// `/var/log/pods/<namespace>_<name>_<uid>`.
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.pod_logs_dir.join(format!("{namespace}_{name}_{uid}"))
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    /// The pod's cgroup parent by QoS class, in the runtime's cgroup driver's syntax.
    pub fn cgroup_parent(&self, qos: QosClass, uid: &str) -> String {
        self.cgroups.cgroup_parent(qos, uid)
    }
}

/// Identity of a pod, taken from its metadata once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (never empty for pods bosun runs).
    pub uid: String,
}

impl PodKey {
    /// The key of a pod; empty strings where the metadata lacks a field.
    pub fn of(pod: &Pod) -> PodKey {
        PodKey {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// Builds the sandbox config of `pod` for the given attempt, as the kubelet's
/// `generatePodSandboxConfig`; an invalid hostname, subdomain or FQDN is an error.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    dirs: &PodDirs,
) -> Result<PodSandboxConfig, HostnameError> {
    let key = PodKey::of(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    // A host-network sandbox shares the node's UTS namespace: it must not name a hostname (the
    // runtime refuses "to set hostname without a private UTS namespace").
    let hostname = if spec.host_network.unwrap_or(false) {
        String::new()
    } else {
        PodHostname::of(pod, &dirs.cluster_domain)?
            .kernel_hostname(spec.set_hostname_as_fqdn.unwrap_or(false))?
    };
    let annotations: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let sc = spec.security_context.clone().unwrap_or_default();
    let sysctls = sc
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let supplemental_groups = sc
        .fs_group
        .into_iter()
        .chain(sc.supplemental_groups.iter().flatten().copied())
        .collect();
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: key.name.clone(),
            uid: key.uid.clone(),
            namespace: key.namespace.clone(),
            attempt,
        }),
        hostname,
        log_directory: dirs
            .pod_log_dir(&key.namespace, &key.name, &key.uid)
            .display()
            .to_string(),
        dns_config: dns_config(pod, dirs),
        port_mappings: port_mappings(&spec),
        labels: labels::sandbox_labels(
            &key.name,
            &key.namespace,
            &key.uid,
            pod.metadata.labels.as_ref(),
        ),
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: dirs.cgroup_parent(qos_class(pod), &key.uid),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                privileged: spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .any(|c| {
                        c.security_context
                            .as_ref()
                            .and_then(|s| s.privileged)
                            .unwrap_or(false)
                    }),
                // The sandbox runs the runtime's default seccomp profile whatever the pod asks,
                // so that least-privileged pod-level profiles stay possible (as the kubelet).
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                run_as_user: sc.run_as_user.map(|value| Int64Value { value }),
                run_as_group: sc.run_as_group.map(|value| Int64Value { value }),
                supplemental_groups,
                supplemental_groups_policy: match sc.supplemental_groups_policy.as_deref() {
                    Some("Strict") => SupplementalGroupsPolicy::Strict as i32,
                    _ => SupplementalGroupsPolicy::Merge as i32,
                },
                selinux_options: sc.se_linux_options.as_ref().map(|o| SeLinuxOption {
                    user: o.user.clone().unwrap_or_default(),
                    role: o.role.clone().unwrap_or_default(),
                    r#type: o.type_.clone().unwrap_or_default(),
                    level: o.level.clone().unwrap_or_default(),
                }),
                ..Default::default()
            }),
            sysctls,
            resources: Some(sandbox_resources(pod)),
            overhead: Some(overhead_resources(&spec)),
        }),
        windows: None,
    })
}

/// The pod's namespaces (the kubelet's `NamespacesForPod`), for the sandbox and every container:
/// the node's network/IPC/PID namespaces when asked for, one PID namespace for the whole pod with
/// `shareProcessNamespace`, else one per container.
pub fn namespace_options(pod: &Pod) -> NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let mode = |host: bool| {
        if host {
            NamespaceMode::Node as i32
        } else {
            NamespaceMode::Pod as i32
        }
    };
    NamespaceOption {
        network: mode(flag(|s| s.host_network)),
        ipc: mode(flag(|s| s.host_ipc)),
        pid: if flag(|s| s.host_pid) {
            NamespaceMode::Node as i32
        } else if flag(|s| s.share_process_namespace) {
            NamespaceMode::Pod as i32
        } else {
            NamespaceMode::Container as i32
        },
        ..Default::default()
    }
}

/// Every declared container port, as the kubelet's `MakePortMappings` lists them (the runtime maps
/// those with a hostPort); a port name used twice in one container counts once.
fn port_mappings(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for c in &spec.containers {
        let mut names = std::collections::HashSet::new();
        for p in c.ports.iter().flatten() {
            let host_ip = p.host_ip.clone().unwrap_or_default();
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            let family = match host_ip.as_str() {
                "" => "any",
                ip if ip.contains(':') => "v6",
                _ => "v4",
            };
            let name = match p.name.as_deref().filter(|n| !n.is_empty()) {
                Some(n) => n.to_string(),
                None => format!(
                    "{family}-{protocol}-{host_ip}:{}:{}",
                    p.container_port,
                    p.host_port.unwrap_or(0)
                ),
            };
            if !names.insert(name) {
                continue;
            }
            out.push(PortMapping {
                protocol: match protocol {
                    "UDP" => Protocol::Udp as i32,
                    "SCTP" => Protocol::Sctp as i32,
                    _ => Protocol::Tcp as i32,
                },
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip,
            });
        }
    }
    out
}

/// The pod's resources without its overhead, as the kubelet's `calculateSandboxResources`: CPU
/// shares from the request (else the limit), CFS quota from the limit, the memory limit.
fn sandbox_resources(pod: &Pod) -> LinuxContainerResources {
    let overhead = |r: &str| {
        pod.spec
            .as_ref()
            .and_then(|s| s.overhead.as_ref())
            .and_then(|o| o.get(r))
            .and_then(|q| parse_quantity(&q.0).ok())
            .map_or(0, |q| q.milli_value() as i128)
    };
    let clamp = |v: i128| i64::try_from(v.max(0)).unwrap_or(i64::MAX);
    let cpu_limit = pod_limit(pod, "cpu").map_or(0, |l| clamp(l.total - overhead("cpu")));
    let cpu_request = clamp(pod_request(pod, "cpu") - overhead("cpu"));
    let memory_limit =
        pod_limit(pod, "memory").map_or(0, |l| clamp((l.total - overhead("memory")) / 1000));
    linux_resources(
        if cpu_request > 0 {
            cpu_request
        } else {
            cpu_limit
        },
        cpu_limit,
        memory_limit,
    )
}

/// The pod overhead as resources (requests = limits), as `convertOverheadToLinuxResources`.
fn overhead_resources(spec: &k8s_openapi::api::core::v1::PodSpec) -> LinuxContainerResources {
    let Some(o) = spec.overhead.as_ref() else {
        return LinuxContainerResources::default();
    };
    let get = |r: &str| {
        o.get(r)
            .and_then(|q| parse_quantity(&q.0).ok())
            .map_or((0, 0), |q| (q.milli_value(), q.value()))
    };
    let cpu = get("cpu").0;
    linux_resources(cpu, cpu, get("memory").1)
}

/// CPU shares, CFS quota/period and memory limit with the kubelet's formulas.
fn linux_resources(
    cpu_request_milli: i64,
    cpu_limit_milli: i64,
    memory: i64,
) -> LinuxContainerResources {
    let quota = milli_cpu_to_quota(cpu_limit_milli, QUOTA_PERIOD_US);
    LinuxContainerResources {
        cpu_shares: milli_cpu_to_shares(cpu_request_milli) as i64,
        cpu_period: QUOTA_PERIOD_US as i64,
        cpu_quota: quota,
        memory_limit_in_bytes: memory,
        ..Default::default()
    }
}

/// The pod's DNS config by dnsPolicy, as the kubelet's dns configurer builds it.
fn dns_config(pod: &Pod, dirs: &PodDirs) -> Option<DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut cfg = if policy == "None" {
        DnsConfig::default()
    } else if cluster && !dirs.cluster_dns.is_empty() {
        let d = &dirs.cluster_domain;
        let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        searches.extend(host_resolv(&dirs.resolv_conf).1);
        DnsConfig {
            servers: dirs.cluster_dns.clone(),
            searches,
            options: vec!["ndots:5".into()],
        }
    } else {
        // Default policy, or ClusterFirst without cluster DNS: the host's resolver. Without a
        // resolvConf (`resolvConf: ""`) the kubelet gives the local resolver and no search path
        // instead of letting the runtime copy the node's file.
        let (servers, searches, options) = if dirs.resolv_conf.as_os_str().is_empty() {
            (vec!["127.0.0.1".into()], vec![".".into()], vec![])
        } else {
            host_resolv(&dirs.resolv_conf)
        };
        DnsConfig {
            servers,
            searches,
            options,
        }
    };
    if let Some(extra) = &spec.dns_config {
        for s in extra.nameservers.iter().flatten() {
            if !cfg.servers.contains(s) {
                cfg.servers.push(s.clone());
            }
        }
        for s in extra.searches.iter().flatten() {
            if !cfg.searches.contains(s) {
                cfg.searches.push(s.clone());
            }
        }
        for o in extra.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = text.split(':').next().unwrap_or_default().to_string();
            cfg.options
                .retain(|x| x.split(':').next() != Some(key.as_str()));
            cfg.options.push(text);
        }
    }
    cfg.searches.truncate(32);
    Some(cfg)
}

/// (nameservers, searches, options) of a resolv.conf; empty when it cannot be read.
fn host_resolv(path: &Path) -> (Vec<String>, Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut servers, mut searches, mut options) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => servers.extend(f.next().map(str::to_string)),
            Some("search") | Some("domain") => searches = f.map(str::to_string).collect(),
            Some("options") => options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    (servers, searches, options)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The kubelet's default directories, cluster DNS 10.96.0.10 in cluster.local, no host
    /// resolv.conf and cgroupfs names: what unit tests build sandbox configs with.
    pub(crate) fn dirs() -> PodDirs {
        PodDirs {
            root_dir: "/var/lib/kubelet".into(),
            pod_logs_dir: "/var/log/pods".into(),
            container_logs_link_dir: "/var/log/containers".into(),
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "/nonexistent".into(),
            cgroups: crate::cgroup::Hierarchy::new(crate::config::CgroupDriver::Cgroupfs, "", true),
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn sandbox_carries_kubelet_conventions() {
        let p = pod(
            serde_json::json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
        );
        let cfg = sandbox_config(&p, 2, &dirs()).unwrap();
        let md = cfg.metadata.as_ref().unwrap();
        assert_eq!(
            (
                md.name.as_str(),
                md.namespace.as_str(),
                md.uid.as_str(),
                md.attempt
            ),
            ("web", "prod", "u-1", 2)
        );
        assert_eq!(cfg.log_directory, "/var/log/pods/prod_web_u-1");
        assert_eq!(cfg.hostname, "web");
        assert_eq!(
            cfg.labels.get(labels::POD_UID).map(String::as_str),
            Some("u-1")
        );
        assert_eq!(cfg.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(cfg.port_mappings.len(), 1);
        assert_eq!(cfg.port_mappings[0].host_port, 8080);
        assert_eq!(
            cfg.linux.unwrap().cgroup_parent,
            "/kubepods/besteffort/podu-1"
        );
        let dns = cfg.dns_config.unwrap();
        assert_eq!(dns.servers, ["10.96.0.10"]);
        assert_eq!(
            dns.searches[..3],
            [
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(dns.options, ["ndots:5"]);
    }

    #[test]
    fn cgroup_parent_by_driver_and_qos() {
        let mut d = dirs();
        assert_eq!(
            d.cgroup_parent(QosClass::Guaranteed, "a-b"),
            "/kubepods/poda-b"
        );
        assert_eq!(
            d.cgroup_parent(QosClass::Burstable, "a-b"),
            "/kubepods/burstable/poda-b"
        );
        d.cgroups.driver = crate::config::CgroupDriver::Systemd;
        assert_eq!(
            d.cgroup_parent(QosClass::BestEffort, "a-b"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda_b.slice"
        );
        assert_eq!(
            d.cgroup_parent(QosClass::Guaranteed, "a-b"),
            "/kubepods.slice/kubepods-poda_b.slice"
        );
    }

    #[test]
    fn host_network_pods_use_the_node_namespace_and_name_no_hostname() {
        let p = pod(serde_json::json!({"hostNetwork": true, "containers": [{"name": "c"}]}));
        let cfg = sandbox_config(&p, 0, &dirs()).unwrap();
        assert_eq!(
            cfg.hostname, "",
            "the runtime refuses a hostname without a UTS namespace"
        );
        let ns = cfg
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, NamespaceMode::Pod as i32);
    }

    #[test]
    fn host_dns_by_policy_and_network() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n",
        )
        .unwrap();
        let mut d = dirs();
        d.resolv_conf = resolv;
        let dns = |spec: serde_json::Value, d: &PodDirs| {
            let c = sandbox_config(&pod(spec), 0, d)
                .unwrap()
                .dns_config
                .unwrap();
            (c.servers, c.searches, c.options)
        };
        let cluster = (
            vec!["10.96.0.10".to_string()],
            [
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
            ]
            .map(String::from)
            .to_vec(),
            vec!["ndots:5".to_string()],
        );
        let host = (
            vec!["10.0.0.2".to_string()],
            vec!["corp.example".to_string()],
            vec!["edns0".to_string()],
        );
        let cases = [
            (serde_json::json!({"containers": []}), &cluster),
            (
                serde_json::json!({"hostNetwork": true, "containers": []}),
                &host,
            ),
            (
                serde_json::json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []}),
                &cluster,
            ),
            (
                serde_json::json!({"dnsPolicy": "Default", "containers": []}),
                &host,
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(&dns(spec.clone(), &d), want, "{spec}");
        }
        d.resolv_conf = PathBuf::new();
        assert_eq!(
            dns(
                serde_json::json!({"dnsPolicy": "Default", "containers": []}),
                &d
            ),
            (vec!["127.0.0.1".to_string()], vec![".".to_string()], vec![])
        );
    }

    #[test]
    fn namespaces_by_pod_flags() {
        let node = NamespaceMode::Node as i32;
        let pod_ns = NamespaceMode::Pod as i32;
        let own = NamespaceMode::Container as i32;
        let cases = [
            (serde_json::json!({}), (pod_ns, pod_ns, own)),
            (
                serde_json::json!({"hostPID": true, "hostIPC": true}),
                (pod_ns, node, node),
            ),
            (
                serde_json::json!({"shareProcessNamespace": true}),
                (pod_ns, pod_ns, pod_ns),
            ),
            (
                serde_json::json!({"hostNetwork": true}),
                (node, pod_ns, own),
            ),
        ];
        for (spec, (net, ipc, pid)) in cases {
            let ns = namespace_options(&pod(spec.clone()));
            assert_eq!((ns.network, ns.ipc, ns.pid), (net, ipc, pid), "{spec}");
        }
    }

    #[test]
    fn every_port_is_listed_once_per_name_as_make_port_mappings() {
        let p = pod(serde_json::json!({"containers": [
            {"name": "a", "ports": [
                {"containerPort": 80},
                {"containerPort": 53, "protocol": "UDP", "hostPort": 5353, "hostIP": "10.0.0.1"},
                {"name": "x", "containerPort": 81},
                {"name": "x", "containerPort": 82},
            ]},
            {"name": "b", "ports": [{"name": "x", "containerPort": 83}]},
        ]}));
        let pm = sandbox_config(&p, 0, &dirs()).unwrap().port_mappings;
        let got: Vec<(i32, i32, i32, &str)> = pm
            .iter()
            .map(|m| {
                (
                    m.container_port,
                    m.host_port,
                    m.protocol,
                    m.host_ip.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (80, 0, Protocol::Tcp as i32, ""),
                (53, 5353, Protocol::Udp as i32, "10.0.0.1"),
                (81, 0, Protocol::Tcp as i32, ""),
                (83, 0, Protocol::Tcp as i32, ""),
            ]
        );
    }

    #[test]
    fn sandbox_security_context_as_the_kubelet() {
        let p = pod(serde_json::json!({
            "securityContext": {
                "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000,
                "supplementalGroups": [4000], "supplementalGroupsPolicy": "Strict",
                "seLinuxOptions": {"level": "s0:c1,c2"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            },
            "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
            "containers": [{"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}],
        }));
        let linux = sandbox_config(&p, 0, &dirs()).unwrap().linux.unwrap();
        let sc = linux.security_context.unwrap();
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
        assert_eq!(sc.run_as_group.map(|v| v.value), Some(3000));
        assert_eq!(sc.supplemental_groups, [2000, 4000]);
        assert_eq!(
            sc.supplemental_groups_policy,
            SupplementalGroupsPolicy::Strict as i32
        );
        assert_eq!(sc.selinux_options.unwrap().level, "s0:c1,c2");
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
        assert!(sc.privileged, "an init container is privileged");
        assert_eq!(
            linux
                .sysctls
                .get("net.ipv4.ip_unprivileged_port_start")
                .map(String::as_str),
            Some("0")
        );
        let r = linux.resources.unwrap();
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.cpu_period),
            (512, 50_000, 100_000)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    }

    #[test]
    fn hostname_from_spec_and_fqdn_when_asked() {
        let p = pod(serde_json::json!({
            "hostname": "db", "subdomain": "s", "setHostnameAsFQDN": true, "containers": []
        }));
        assert_eq!(
            sandbox_config(&p, 0, &dirs()).unwrap().hostname,
            "db.s.prod.svc.cluster.local"
        );
        let bad = pod(serde_json::json!({"hostname": "Not_A_Label", "containers": []}));
        assert!(sandbox_config(&bad, 0, &dirs()).is_err());
    }
}
