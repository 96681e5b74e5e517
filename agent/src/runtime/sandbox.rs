//! Pod spec -> CRI PodSandboxConfig, with the kubelet's conventions for metadata, hostname, log
//! directory, DNS, host ports, namespaces and cgroup parent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bosun_cri::types::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};
use k8s_openapi::api::core::v1::Pod;

use super::labels;
use crate::resource::{QosClass, qos_class};

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

/// Builds the sandbox config of `pod` for the given attempt.
pub fn sandbox_config(pod: &Pod, attempt: u32, dirs: &PodDirs) -> PodSandboxConfig {
    let key = PodKey::of(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mut hostname = spec.hostname.clone().unwrap_or_else(|| key.name.clone());
    if host_network {
        hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or(hostname);
    }
    hostname.truncate(63);
    let mut annotations: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations.insert(
        labels::POD_TERMINATION_GRACE.into(),
        spec.termination_grace_period_seconds
            .unwrap_or(30)
            .to_string(),
    );
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp as i32,
                Some("SCTP") => Protocol::Sctp as i32,
                _ => Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let mode = |host: bool| {
        if host {
            NamespaceMode::Node as i32
        } else {
            NamespaceMode::Pod as i32
        }
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    PodSandboxConfig {
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
        port_mappings,
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
                namespace_options: Some(NamespaceOption {
                    network: mode(host_network),
                    pid: if spec.host_pid.unwrap_or(false) {
                        NamespaceMode::Node as i32
                    } else if spec.share_process_namespace.unwrap_or(false) {
                        NamespaceMode::Pod as i32
                    } else {
                        NamespaceMode::Container as i32
                    },
                    ipc: mode(spec.host_ipc.unwrap_or(false)),
                    ..Default::default()
                }),
                privileged: spec.containers.iter().any(|c| {
                    c.security_context
                        .as_ref()
                        .and_then(|s| s.privileged)
                        .unwrap_or(false)
                }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
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
        // Default policy, or ClusterFirst without cluster DNS: the host's resolver.
        let (servers, searches, options) = host_resolv(&dirs.resolv_conf);
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
mod tests {
    use super::*;

    fn dirs() -> PodDirs {
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
        let cfg = sandbox_config(&p, 2, &dirs());
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
    fn host_network_pods_use_the_node_namespace() {
        let p = pod(serde_json::json!({"hostNetwork": true, "containers": [{"name": "c"}]}));
        let cfg = sandbox_config(&p, 0, &dirs());
        let ns = cfg
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
    }
}
